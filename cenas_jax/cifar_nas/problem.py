"""The DARTS cell space as a problem of the cluster's search loop (``cluster.problem.Problem``).

Candidates are not enumerated: every hour ``expand`` samples fresh genotypes uniformly from the
space (about 10^18 cells pairs), and LaMOO classifies them into its regions and proposes from the
chosen one. The two fidelities of CE-NAS:

- **sampling** (``score``): the supernet's held-out accuracy of the path, BatchNorm recalibrated
  (``training.supernet.Scorer``), with the exact parameter count;
- **evaluation** (``run_segments``): training from scratch with the standalone recipe, advanced in
  the stretches the pool schedules (``pool.Segment``) by jobs a backend runs; a finished training
  reveals the test accuracy.

Objectives (maximized): ``(test accuracy %, -parameters in millions)``, as the paper's CIFAR-10
search, and optionally a third, ``-predicted inference energy`` (mJ per image of the trained
network's evaluation forward at the configured batch, on the search's energy device), priced once
per candidate when it is first scored or trained. HV is normalized by the box from the reference
point to (100 %, 0 parameters[, 0 mJ]), a bound rather than the (unknown) true front's HV.

Time is device time: a candidate's full training lasts ``total_steps x step_time_s``, its step time
predicted for the stated device by ``step_cost(genotype)`` (the kernel energy model on the step's HLO
in ``experiment``), so the schedule, and therefore the search, is the same on any host and a resumed
run repeats it exactly. Everything a resume needs is in ``state_dict()``.

The effects (scoring, costing, running jobs) are injected callables, so tests use fakes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cenas_jax.cluster.pool import Segment
from cenas_jax.moo.hypervolume import hypervolume, hypervolume_2d
from cenas_jax.spaces import darts as space

# The objectives a search may ask for (``objectives`` option) and their maximized names.
OBJECTIVES = ("accuracy", "params", "energy")
_NAMES = {"accuracy": "cifar10_test_acc_pct", "params": "neg_params_m",
          "energy": "neg_inference_energy_mj"}
OBJECTIVE_NAMES = (_NAMES["accuracy"], _NAMES["params"])
# The energy reference point is this factor above the widest cell pair's energy (every edge
# sep_conv_5x5: the most kernels and FLOPs of any op on every edge, so every candidate is below it;
# the margin covers what fusion could add, as a nadir point plus 10 % is the usual HV reference).
ENERGY_REF_MARGIN = 1.1


@dataclasses.dataclass(frozen=True)
class TrainJob:
  """One request to a backend: train ``genotype`` (JSON) from its checkpoint in ``job_dir`` up to
  ``stop_step`` (idempotent: a checkpoint at or past it returns at once)."""

  candidate: int
  genotype: dict
  job_dir: str
  stop_step: int
  seed: int


@dataclasses.dataclass(frozen=True)
class StepCost:
  """Predicted cost of one training step on the device the search is priced for."""

  time_s: float
  energy_j: float
  source: str


@dataclasses.dataclass(frozen=True)
class InferenceCost:
  """Predicted cost of the trained network's inference, per image at ``batch_size`` images a call."""

  energy_mj: float
  time_s: float
  batch_size: int
  source: str


def widest_genotype() -> space.Genotype:
  """The cell pair with every edge ``sep_conv_5x5``: the most parameters (and inference energy)."""
  pairs = [("sep_conv_5x5", i) for _ in range(space.STEPS) for i in (0, 1)]
  return space.Genotype(pairs, (2, 3, 4, 5), pairs, (2, 3, 4, 5))


class _TrainTimes:
  """``train_time_s[c]`` for the pool: the full training's device time, priced on first use."""

  def __init__(self, problem: "CifarProblem"):
    self._p = problem

  def __len__(self) -> int:
    return self._p.n

  def __getitem__(self, c) -> float:
    return self._p.total_steps * self._p.step_cost(int(c)).time_s


class CifarProblem:
  """The open DARTS problem (see the module docstring).

  Args:
    init_channels, layers: shape of the standalone networks (their parameter count is exact).
    total_steps: training steps of one from-scratch training (epochs x steps per epoch).
    candidates_per_hour: genotypes ``expand`` samples per call.
    seed: the search seed (each candidate's training seed derives from it and the candidate).
    jobs_dir: where each candidate's training job keeps its checkpoints (``<jobs_dir>/c<index>``).
    score_fn: genotypes -> supernet accuracies in [0, 1] (one per genotype).
    cost_fn: genotype -> ``StepCost`` of its training step.
    run_jobs: ``TrainJob`` list -> list of results (``{"step", "finished", "test_accuracy"}``), in
      order; jobs of different candidates may run in parallel.
    include: genotypes that are candidates from the start (e.g. published cells), before sampling.
    objectives: ``("accuracy", "params")`` or ``("accuracy", "params", "energy")``.
    energy_fn: genotype -> ``InferenceCost`` (needed with the ``energy`` objective).
  """

  name = "darts-cifar10"
  sampling_source = "supernet-spos-recalibrated-bn"

  def __init__(self, *, init_channels: int, layers: int, total_steps: int, candidates_per_hour: int,
               seed: int, jobs_dir: str, score_fn: Callable[[list[space.Genotype]], np.ndarray],
               cost_fn: Callable[[space.Genotype], StepCost],
               run_jobs: Callable[[list[TrainJob]], list[dict]],
               include: Sequence[space.Genotype] = (),
               objectives: Sequence[str] = ("accuracy", "params"),
               energy_fn: Callable[[space.Genotype], InferenceCost] | None = None):
    objectives = tuple(objectives)
    if objectives not in (OBJECTIVES[:2], OBJECTIVES):
      raise ValueError(f"objectives must be {OBJECTIVES[:2]} or {OBJECTIVES}, got {objectives}")
    if "energy" in objectives and energy_fn is None:
      raise ValueError("the energy objective needs energy_fn")
    self.objectives = objectives
    self.objective_names = tuple(_NAMES[o] for o in objectives)
    self.m = len(objectives)
    self._energy_fn = energy_fn
    self.init_channels, self.layers = init_channels, layers
    self.total_steps = int(total_steps)
    self.candidates_per_hour = int(candidates_per_hour)
    self.seed = int(seed)
    self.jobs_dir = str(jobs_dir)
    self._score_fn, self._cost_fn, self._run_jobs = score_fn, cost_fn, run_jobs
    # The reference point: no accuracy, and the parameters of the largest cell pair (every edge
    # sep_conv_5x5), so every candidate of the space dominates it; with the energy objective, its
    # energy x ENERGY_REF_MARGIN, priced on first use (``energy_ref_mj``).
    widest = widest_genotype()
    self.params_max_m = space.count_params(widest, init_channels, layers) / 1e6
    self._energy_ref_mj: float | None = None
    self.codes = np.zeros((0, space.ENCODING_SIZE), np.int32)
    self._features = np.zeros((0, space.features([widest]).shape[1]), np.float32)
    self.params_m = np.zeros(0)
    self._y_true = np.zeros((0, self.m))
    self._y_pred = np.zeros((0, self.m))
    self.costs: dict[int, StepCost] = {}
    self.inference: dict[int, InferenceCost] = {}  # candidate -> predicted inference cost
    self.progress: dict[int, int] = {}  # candidate -> training steps done
    self.metrics: dict[int, dict] = {}  # candidate -> final training metrics
    self._known: dict[bytes, int] = {}
    self.train_time_s = _TrainTimes(self)
    self._add(list(include))

  # --- the loop's view -----------------------------------------------------------------------
  @property
  def n(self) -> int:
    return len(self.codes)

  @property
  def features(self) -> np.ndarray:
    return self._features

  @property
  def y_true(self) -> np.ndarray:
    return self._y_true

  @property
  def y_pred(self) -> np.ndarray:
    return self._y_pred

  def genotype(self, c: int) -> space.Genotype:
    return space.decode(self.codes[c])

  @property
  def energy_ref_mj(self) -> float:
    """The energy of the reference point (mJ per image): the widest cell pair's x the margin.

    A candidate above it (none is expected: see ``ENERGY_REF_MARGIN``) would not dominate the
    reference point and so add nothing to HV, as any point outside the box; it still counts for
    the Pareto set. Priced once, then kept in ``state_dict`` (a resume does not re-price it)."""
    if self._energy_ref_mj is None:
      self._energy_ref_mj = ENERGY_REF_MARGIN * self._energy_fn(widest_genotype()).energy_mj
    return self._energy_ref_mj

  @property
  def ref_point(self) -> np.ndarray:
    ref = [0.0, -self.params_max_m]
    return np.array(ref + [-self.energy_ref_mj] if "energy" in self.objectives else ref)

  @property
  def max_hv(self) -> float:
    """The box from the reference point to (100 %, 0 parameters[, 0 mJ]): a bound, not the true
    front's HV."""
    box = 100.0 * self.params_max_m
    return box * self.energy_ref_mj if "energy" in self.objectives else box

  def hv(self, positions) -> float:
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
      return 0.0
    if self.m == 2:
      return float(hypervolume_2d(self._y_true[positions], self.ref_point))
    return float(hypervolume(self._y_true[positions], self.ref_point))

  def inference_cost(self, c: int) -> InferenceCost:
    """Candidate ``c``'s predicted inference cost, priced on first use."""
    if c not in self.inference:
      self.inference[c] = self._energy_fn(self.genotype(c))
    return self.inference[c]

  def _objectives(self, positions: np.ndarray, acc_pct: np.ndarray) -> np.ndarray:
    """Rows ``(acc %, -params M[, -energy mJ])`` of ``positions`` given their accuracies."""
    cols = [acc_pct, -self.params_m[positions]]
    if "energy" in self.objectives:
      cols.append(-np.array([self.inference_cost(int(c)).energy_mj for c in positions]))
    return np.stack(cols, axis=1)

  def expand(self, rng: np.random.Generator) -> None:
    self._add(space.sample(rng, self.candidates_per_hour))

  def score(self, positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size:
      acc = np.asarray(self._score_fn([self.genotype(c) for c in positions]), dtype=np.float64)
      self._y_pred[positions] = self._objectives(positions, 100.0 * acc)
    return self._y_pred[positions]

  def step_cost(self, c: int) -> StepCost:
    if c not in self.costs:
      self.costs[c] = self._cost_fn(self.genotype(c))
    return self.costs[c]

  def run_segments(self, segments: Sequence[Segment]) -> None:
    """Advances each candidate to the end of its last stretch (one job per candidate: a candidate
    carried over to a second GPU in the same hour continues where the first stopped)."""
    last: dict[int, Segment] = {}
    for seg in segments:
      last[seg.candidate] = seg
    jobs = []
    for c, seg in last.items():
      step_s = self.step_cost(c).time_s
      stop = self.total_steps if seg.finished else min(self.total_steps, int(round(seg.end_s / step_s)))
      jobs.append(self.job(c, stop))
    if not jobs:
      return
    for job, out in zip(jobs, self._run_jobs(jobs)):
      c = job.candidate
      self.progress[c] = int(out["step"])
      if last[c].finished:
        if not out["finished"]:
          raise RuntimeError(f"training job of candidate {c} stopped at step {out['step']} of "
                             f"{self.total_steps}")
        self.metrics[c] = {k: v for k, v in out.items() if k != "history"}
        acc_pct = np.array([100.0 * float(out["test_accuracy"])])
        self._y_true[c] = self._objectives(np.array([c]), acc_pct)[0]

  def job(self, c: int, stop_step: int | None = None) -> TrainJob:
    """The training job of candidate ``c`` (its own directory and seed), up to ``stop_step``
    (default: the whole training)."""
    return TrainJob(candidate=c, genotype=self.genotype(c).to_json(),
                    job_dir=f"{self.jobs_dir}/c{c:06d}",
                    stop_step=self.total_steps if stop_step is None else int(stop_step),
                    seed=int(np.random.SeedSequence([self.seed, c]).generate_state(1)[0] >> 1))

  # --- state ---------------------------------------------------------------------------------
  def _add(self, genotypes: Sequence[space.Genotype]) -> None:
    fresh = []
    for g in genotypes:
      code = space.encode(g)
      if code.tobytes() not in self._known:
        self._known[code.tobytes()] = self.n + len(fresh)
        fresh.append((g, code))
    if not fresh:
      return
    gs = [g for g, _ in fresh]
    self.codes = np.concatenate([self.codes, np.stack([c for _, c in fresh])])
    self._features = np.concatenate([self._features, space.features(gs)])
    self.params_m = np.concatenate(
        [self.params_m, [space.count_params(g, self.init_channels, self.layers) / 1e6 for g in gs]])
    nan = np.full((len(gs), self.m), np.nan)
    self._y_true = np.concatenate([self._y_true, nan])
    self._y_pred = np.concatenate([self._y_pred, nan])

  def state_dict(self) -> dict[str, Any]:
    """JSON-safe state (the candidates and everything known about them)."""
    def rows(y):
      return [[None if np.isnan(v) else float(v) for v in row] for row in y]

    return {"codes": self.codes.tolist(), "y_true": rows(self._y_true), "y_pred": rows(self._y_pred),
            "costs": {str(c): dataclasses.asdict(v) for c, v in self.costs.items()},
            "progress": {str(c): s for c, s in self.progress.items()},
            "metrics": {str(c): m for c, m in self.metrics.items()},
            "inference": {str(c): dataclasses.asdict(v) for c, v in self.inference.items()},
            "energy_ref_mj": self._energy_ref_mj}

  def load_state_dict(self, d: dict[str, Any]) -> None:
    self.codes = np.zeros((0, space.ENCODING_SIZE), np.int32)
    self._features = self._features[:0]
    self.params_m, self._known = np.zeros(0), {}
    self._y_true, self._y_pred = np.zeros((0, self.m)), np.zeros((0, self.m))
    self._add([space.decode(c) for c in d["codes"]])
    if self.n != len(d["codes"]):
      raise ValueError("saved candidates repeat a genotype")
    self._y_true = np.array(d["y_true"], dtype=np.float64).reshape(-1, self.m)
    self._y_pred = np.array(d["y_pred"], dtype=np.float64).reshape(-1, self.m)
    self.costs = {int(c): StepCost(**v) for c, v in d["costs"].items()}
    self.progress = {int(c): int(s) for c, s in d["progress"].items()}
    self.metrics = {int(c): m for c, m in d["metrics"].items()}
    # States saved before the energy objective existed have neither key.
    self.inference = {int(c): InferenceCost(**v) for c, v in d.get("inference", {}).items()}
    self._energy_ref_mj = d.get("energy_ref_mj")
