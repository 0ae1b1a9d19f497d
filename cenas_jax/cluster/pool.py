"""The simulated GPU pool of CE-NAS: one hour of sampling and evaluation work.

The semantics follow the official CE-NAS simulator (``cake-lab/CE-NAS``, ``main_loop``), described in
``reference/cenas_lamoo.md`` section 2.3:

- time advances in steps of one hour (``PoolConfig.step_s``); every GPU has that much budget per step;
- ``n_train`` GPUs *evaluate* (train from scratch), ``n_sample`` GPUs *sample* (propose architectures
  and score them with the one-shot supernet), the rest of the pool is *released* (not held, no power);
- sampling fills the evaluation queue up to ``queue_capacity`` (10); each proposal costs
  ``sample_time_s`` of one sampling GPU's budget;
- each training GPU with budget left takes a job: first from the *halfwork* queue (jobs carried over
  from an earlier hour, which have priority), else from the fresh queue; within a queue the job with the
  fewest dominators (on the one-shot *predicted* objectives) goes first;
- a job longer than the GPU's remaining budget trains for that budget and is carried over with its
  remainder; a finished job reveals its true objectives;
- the whole hour is charged at the carbon intensity of that hour.

What the official code leaves out is here as switches (``PoolConfig``): power per job type and idle
power, PUE, a switching overhead when a GPU changes role, and ``screen_per_gpu_hour``: sampling GPUs
that score more proposals than the queue can hold and keep the least dominated ones (the official
code scores exactly as many as the queue has room for).

Everything is plain numpy and Python lists, so the state is trivially checkpointed as JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from cenas_jax.carbon.accounting import carbon_g as _carbon_g
from cenas_jax.moo.pareto import dominance_counts

# Kinds of GPU-seconds recorded per hour; "paper" accounting charges only TRAIN.
TRAIN, SAMPLE, IDLE, SWITCH = "training", "sampling", "idle", "switch"
KINDS = (TRAIN, SAMPLE, IDLE, SWITCH)
ACCOUNTING = {"paper": (TRAIN,), "full": KINDS}
# Stand-in objective of unscored jobs: dominated by every scored job.
_UNSCORED = -np.finfo(np.float64).max


@dataclasses.dataclass(frozen=True)
class PoolConfig:
  """Parameters of the simulated pool.

  Attributes:
    n_gpus: GPUs the search may hold.
    step_s: length of one step (s); the official code uses one hour.
    queue_capacity: the fresh-job queue is refilled while it holds at most this many jobs.
    sample_time_s: GPU time (s) to score one proposal with the one-shot supernet.
    train_power_w: power of a GPU training an architecture (W).
    sample_power_w: power of a GPU scoring proposals (W).
    idle_power_w: power of a held but idle GPU (W).
    pue: data-centre power usage effectiveness (multiplies every energy).
    switch_overhead_s: budget a GPU loses when its role changes between steps (charged as "switch").
    screen_per_gpu_hour: 0 for the official behaviour (score only what the queue has room for); N > 0
      lets each sampling GPU score up to N proposals per hour (bounded by its budget), keeping the
      ``queue_capacity + 1`` least-dominated ones in the queue.
  """

  n_gpus: int = 8
  step_s: float = 3600.0
  queue_capacity: int = 10
  sample_time_s: float = 60.0
  train_power_w: float = 300.0
  sample_power_w: float = 250.0
  idle_power_w: float = 60.0
  pue: float = 1.0
  switch_overhead_s: float = 0.0
  screen_per_gpu_hour: int = 0

  def __post_init__(self):
    if self.n_gpus < 1 or self.queue_capacity < 0 or self.step_s <= 0 or self.sample_time_s <= 0:
      raise ValueError(f"invalid PoolConfig: {self}")
    for name in ("train_power_w", "sample_power_w", "idle_power_w", "switch_overhead_s"):
      if getattr(self, name) < 0:
        raise ValueError(f"PoolConfig.{name} must be >= 0, got {getattr(self, name)}")
    if self.pue < 1.0:
      raise ValueError(f"PoolConfig.pue must be >= 1, got {self.pue}")

  def power_w(self, kind: str) -> float:
    return {TRAIN: self.train_power_w, SAMPLE: self.sample_power_w, IDLE: self.idle_power_w,
            SWITCH: self.sample_power_w}[kind]


@dataclasses.dataclass
class PoolState:
  """Mutable-by-copy state of the pool between steps (all JSON-serializable once ``to_dict``'ed).

  Attributes:
    queue: fresh jobs, each ``[candidate, pred_obj_0, pred_obj_1, ...]`` (NaN when not scored).
    halfwork: carried-over jobs, each ``[candidate, remaining_s, pred_obj_0, ...]``.
    roles: role of each of the ``n_gpus`` GPUs in the last step ("training", "sampling", "released").
  """

  queue: list[list[float]] = dataclasses.field(default_factory=list)
  halfwork: list[list[float]] = dataclasses.field(default_factory=list)
  roles: list[str] = dataclasses.field(default_factory=list)

  def to_dict(self) -> dict:
    """JSON-safe form (NaN predictions become null)."""
    enc = lambda job: [None if np.isnan(x) else float(x) for x in job]
    return {"queue": [enc(q) for q in self.queue], "halfwork": [enc(h) for h in self.halfwork],
            "roles": list(self.roles)}

  @classmethod
  def from_dict(cls, d: dict) -> "PoolState":
    dec = lambda job: [np.nan if x is None else float(x) for x in job]
    return cls(queue=[dec(q) for q in d["queue"]], halfwork=[dec(h) for h in d["halfwork"]],
               roles=list(d["roles"]))


@dataclasses.dataclass(frozen=True)
class HourReport:
  """What happened in one step.

  Attributes:
    finished: candidate indices whose training finished this step, in order.
    gpu_seconds: GPU-seconds per kind (``KINDS``).
    energy_j: energy per kind (J), PUE included.
    carbon_g: carbon per kind (g CO2eq), PUE included.
    n_scored: proposals scored by the sampling GPUs this step.
    scored: the candidates scored this step (each also entered or competed for the queue).
  """

  finished: tuple[int, ...]
  gpu_seconds: dict[str, float]
  energy_j: dict[str, float]
  carbon_g: dict[str, float]
  n_scored: int
  scored: tuple[int, ...]

  def carbon_under(self, accounting: str) -> float:
    return float(sum(self.carbon_g[k] for k in ACCOUNTING[accounting]))


# A proposer returns up to k fresh candidate indices (never ones already excluded), best region first.
ProposeFn = Callable[[int], np.ndarray]


def _pop_least_dominated(jobs: list[list[float]], obj_start: int) -> list[float]:
  """Pops the job with the fewest weak dominators on its predicted objectives.

  Unscored jobs (NaN predictions: proposed in an hour without sampling GPUs) count as dominated by
  every scored job and tie among themselves, so they go after scored ones, first in first out.
  """
  if len(jobs) == 1:
    return jobs.pop(0)
  y = np.array([j[obj_start:] for j in jobs], dtype=np.float64)
  y[np.isnan(y)] = _UNSCORED
  counts = dominance_counts(y, weak=True)
  return jobs.pop(int(np.argmin(counts)))  # argmin takes the first (oldest) among ties


def run_step(
    state: PoolState,
    *,
    n_train: int,
    n_sample: int,
    ci_g_per_kwh: float,
    propose: ProposeFn,
    predict: Callable[[np.ndarray], np.ndarray] | None,
    train_time_s: np.ndarray,
    config: PoolConfig,
    n_obj: int = 2,
) -> tuple[PoolState, HourReport]:
  """Simulates one step of the pool.

  Args:
    state: the pool state after the previous step (not modified).
    n_train: GPUs training this step.
    n_sample: GPUs sampling this step. ``n_train + n_sample <= config.n_gpus``; the rest is released.
      With ``n_sample == 0`` proposals come straight from the optimizer at no GPU cost and are queued
      first-in first-out (vanilla NAS).
    ci_g_per_kwh: carbon intensity charged for the whole step (gCO2eq/kWh).
    propose: ``propose(k)`` returns up to ``k`` new candidate indices (no repeats across calls).
    predict: maps candidate indices to predicted (one-shot) objectives, shape (k, m), maximized.
      ``None`` with ``n_sample == 0``.
    train_time_s: full training time of every candidate (s).
    config: pool parameters.
    n_obj: number of objectives (unscored jobs carry NaN predictions).

  Returns:
    The new state and the step's report.
  """
  if n_train < 0 or n_sample < 0 or n_train + n_sample > config.n_gpus:
    raise ValueError(
        f"allocation n_train={n_train}, n_sample={n_sample} does not fit {config.n_gpus} GPUs")
  step_s, cap = config.step_s, config.queue_capacity
  roles = [TRAIN] * n_train + [SAMPLE] * n_sample + ["released"] * (config.n_gpus - n_train - n_sample)
  switched = [bool(state.roles) and state.roles[i] != r and r != "released"
              for i, r in enumerate(roles)]
  switch_s = config.switch_overhead_s
  budgets = [step_s - (switch_s if switched[i] else 0.0) for i in range(n_train)]
  sample_budget_s = sum(step_s - (switch_s if switched[n_train + i] else 0.0)
                        for i in range(n_sample))
  queue = [list(q) for q in state.queue]
  halfwork = [list(h) for h in state.halfwork]
  sample_busy_s = 0.0
  scored: list[int] = []
  screen = config.screen_per_gpu_hour > 0 and n_sample > 0

  def score(k: int) -> int:
    """Proposes and scores up to k candidates, appending them to the queue; returns how many."""
    nonlocal sample_busy_s
    if n_sample > 0:
      k = min(k, int((sample_budget_s - sample_busy_s + 1e-9) // config.sample_time_s))
    if k <= 0:
      return 0
    idx = np.asarray(propose(k), dtype=np.int64)
    if len(idx) == 0:
      return 0
    if n_sample > 0:
      sample_busy_s += len(idx) * config.sample_time_s
      preds = np.asarray(predict(idx), dtype=np.float64)
      queue.extend([float(i), *map(float, p)] for i, p in zip(idx, preds))
    else:
      queue.extend([float(i), *([np.nan] * n_obj)] for i in idx)
    scored.extend(int(i) for i in idx)
    return len(idx)

  if screen:
    # Scoring beyond the queue's room: sampling GPUs screen a batch, the queue keeps the best.
    score(config.screen_per_gpu_hour * n_sample)
    if len(queue) > cap + 1:
      y = np.array([q[1:] for q in queue], dtype=np.float64)
      y[np.isnan(y)] = _UNSCORED
      counts = dominance_counts(y, weak=True)
      keep = np.sort(np.argsort(counts, kind="stable")[: cap + 1])
      queue = [queue[i] for i in keep]

  def refill() -> None:
    if len(queue) <= cap:
      score(cap + 1 - len(queue))

  finished: list[int] = []
  train_busy_s = 0.0
  progress = True
  while progress and any(b > 0 for b in budgets):
    progress = False
    for g in range(n_train):
      if budgets[g] <= 0:
        continue
      if halfwork:
        job = _pop_least_dominated(halfwork, 2)
        cand, remaining, pred = int(job[0]), job[1], job[2:]
      else:
        refill()
        if not queue:
          continue
        job = _pop_least_dominated(queue, 1)
        cand, remaining, pred = int(job[0]), float(train_time_s[int(job[0])]), job[1:]
      progress = True
      if remaining > budgets[g]:
        train_busy_s += budgets[g]
        halfwork.append([float(cand), remaining - budgets[g], *pred])
        budgets[g] = 0.0
      else:
        train_busy_s += remaining
        budgets[g] -= remaining
        finished.append(cand)
  if n_sample > 0 and not screen:
    refill()  # sampling keeps the queue full for the next step while it has budget

  switch_busy_s = switch_s * sum(switched)
  held_s = step_s * (n_train + n_sample)
  gpu_seconds = {TRAIN: train_busy_s, SAMPLE: sample_busy_s, SWITCH: switch_busy_s,
                 IDLE: max(0.0, held_s - train_busy_s - sample_busy_s - switch_busy_s)}
  energy_j = {k: gpu_seconds[k] * config.power_w(k) * config.pue for k in KINDS}
  carbon = {k: float(_carbon_g(energy_j[k], ci_g_per_kwh)) for k in KINDS}
  new_state = PoolState(queue=queue, halfwork=halfwork, roles=roles)
  report = HourReport(finished=tuple(finished), gpu_seconds=gpu_seconds, energy_j=energy_j,
                      carbon_g=carbon, n_scored=len(scored), scored=tuple(scored))
  return new_state, report


def queued_candidates(state: PoolState) -> Sequence[int]:
  """Candidates waiting in either queue (they must not be proposed again)."""
  return [int(q[0]) for q in state.queue] + [int(h[0]) for h in state.halfwork]
