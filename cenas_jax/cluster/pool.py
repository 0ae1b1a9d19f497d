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
- the whole hour is charged at the carbon intensity of that hour (``charge`` enters the hour's
  GPU-seconds into the carbon ledger, which computes energy and carbon).

What the official code leaves out is here as switches (``PoolConfig``): power per job type and idle
power, PUE, a switching overhead when a GPU changes role, and ``screen_per_gpu_hour``: sampling GPUs
that score more proposals than the queue can hold and keep the least dominated ones (the official
code scores exactly as many as the queue has room for).

Everything is plain numpy and Python lists, so the state is trivially checkpointed as JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import numpy as np

from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.carbon.ledger import IDLE, KINDS, SWITCH
from cenas_jax.carbon.ledger import SAMPLING as SAMPLE
from cenas_jax.carbon.ledger import TRAINING as TRAIN
from cenas_jax.errors import ConfigError
from cenas_jax.moo.pareto import dominance_counts

RELEASED = "released"  # the role of a GPU the search does not hold (charged nothing)
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
    screen_explore_every: 0 (off) or k: with screening, every k-th job a GPU starts is an
      *exploration* job, the optimizer's first proposal of an hour kept whatever the supernet
      predicts for it. Why: a supernet's blind spots are systematic (on NB201 the few-shot table
      rates the large, most accurate cells at 58-64% against 68% for mid-size ones), so screening
      alone never trains the front's high-accuracy end, while the optimizer's own ranking learns
      from the true accuracies of what was trained.
    screen_explore_after: exploration starts once this many jobs have started (0: from the first).
      Why: the supernet's ranking is good enough for the front's cheap and middle part, which is
      where the carbon to a moderate HV goes; its blind spot is the high-accuracy end, which only
      matters once that part is covered. Exploring late keeps the early carbon of pure screening
      (measured in WORKSPACE.md 2.3: it helps the heuristic, not the agent; off in the flagfile).
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
  screen_explore_every: int = 0
  screen_explore_after: int = 0

  def __post_init__(self):
    for name in ("n_gpus", "step_s", "sample_time_s"):
      if not getattr(self, name) >= (1 if name == "n_gpus" else 1e-12):
        raise ConfigError(name, f"must be {'>= 1' if name == 'n_gpus' else '> 0'}, got "
                          f"{getattr(self, name)}")
    for name in ("queue_capacity", "screen_per_gpu_hour", "screen_explore_every",
                 "screen_explore_after", "train_power_w", "sample_power_w",
                 "idle_power_w", "switch_overhead_s"):
      if getattr(self, name) < 0:
        raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
    if self.pue < 1.0:
      raise ConfigError("pue", f"must be >= 1, got {self.pue}")

  def power_w(self, kind: str) -> float:
    return {TRAIN: self.train_power_w, SAMPLE: self.sample_power_w, IDLE: self.idle_power_w,
            SWITCH: self.sample_power_w}[kind]


class Job(NamedTuple):
  """A candidate waiting for a training GPU.

  Attributes:
    candidate: the candidate's position in the problem.
    pred: its predicted (supernet) objectives, maximized; NaN when it was not scored.
    remaining_s: training seconds left for a job carried over from an earlier hour; None for a
      fresh job (it needs the candidate's full training time).
    explore: kept for exploration whatever its prediction (``PoolConfig.screen_explore_every``).
  """

  candidate: int
  pred: tuple[float, ...]
  remaining_s: float | None = None
  explore: bool = False

  def to_dict(self) -> dict:
    """JSON-safe form (NaN predictions become null)."""
    return {"candidate": self.candidate, "pred": [None if np.isnan(x) else x for x in self.pred],
            "remaining_s": self.remaining_s, "explore": self.explore}

  @classmethod
  def from_dict(cls, d: dict) -> "Job":
    return cls(int(d["candidate"]), tuple(np.nan if x is None else float(x) for x in d["pred"]),
               None if d["remaining_s"] is None else float(d["remaining_s"]), bool(d["explore"]))


@dataclasses.dataclass
class PoolState:
  """Mutable-by-copy state of the pool between steps (all JSON-serializable once ``to_dict``'ed).

  Attributes:
    queue: fresh jobs (``remaining_s`` None), oldest first.
    halfwork: carried-over jobs (``remaining_s`` set), oldest first.
    roles: role of each of the ``n_gpus`` GPUs in the last step (``TRAIN``, ``SAMPLE``, ``RELEASED``).
    n_started: fresh jobs started so far (the exploration rule counts them).
  """

  queue: list[Job] = dataclasses.field(default_factory=list)
  halfwork: list[Job] = dataclasses.field(default_factory=list)
  roles: list[str] = dataclasses.field(default_factory=list)
  n_started: int = 0

  def to_dict(self) -> dict:
    """JSON-safe form (NaN predictions become null)."""
    return {"queue": [j.to_dict() for j in self.queue],
            "halfwork": [j.to_dict() for j in self.halfwork], "roles": list(self.roles),
            "n_started": self.n_started}

  @classmethod
  def from_dict(cls, d: dict) -> "PoolState":
    return cls(queue=[Job.from_dict(j) for j in d["queue"]],
               halfwork=[Job.from_dict(j) for j in d["halfwork"]], roles=list(d["roles"]),
               n_started=int(d["n_started"]))


class Segment(NamedTuple):
  """A stretch of one candidate's training done in one step: what a real backend has to run.

  Attributes:
    candidate: the candidate's position in the problem.
    gpu: the training GPU (0 .. n_train-1) that ran it.
    start_s, end_s: the stretch in the candidate's own training time (s): from ``start_s`` seconds
      into its full training to ``end_s``.
    finished: the stretch ends the training (``end_s`` is the full training time).
  """

  candidate: int
  gpu: int
  start_s: float
  end_s: float
  finished: bool


@dataclasses.dataclass(frozen=True)
class HourReport:
  """What happened in one step (``charge`` turns its GPU-seconds into ledger entries).

  Attributes:
    finished: candidate indices whose training finished this step, in order.
    gpu_seconds: GPU-seconds per kind (``KINDS``).
    n_scored: proposals scored by the sampling GPUs this step.
    scored: the candidates scored this step (each also entered or competed for the queue).
    segments: the training stretches of the step, in the order the pool ran them (a candidate
      carried over may appear twice: it continues on the next free GPU, as in the official code).
  """

  finished: tuple[int, ...]
  gpu_seconds: dict[str, float]
  n_scored: int
  scored: tuple[int, ...]
  segments: tuple[Segment, ...] = ()


# A proposer returns up to k fresh candidate indices (never ones already excluded), best region first.
ProposeFn = Callable[[int], np.ndarray]


def _dominance_counts(jobs: list[Job]) -> np.ndarray:
  """Weak dominators of each job on its predicted objectives.

  Unscored jobs (NaN predictions: proposed in an hour without sampling GPUs) count as dominated by
  every scored job and tie among themselves.
  """
  y = np.array([j.pred for j in jobs], dtype=np.float64)
  y[np.isnan(y)] = _UNSCORED
  return dominance_counts(y, weak=True)


def _pop_least_dominated(jobs: list[Job]) -> Job:
  """Pops the job with the fewest weak dominators (unscored ones after scored ones, oldest first)."""
  if len(jobs) == 1:
    return jobs.pop(0)
  return jobs.pop(int(np.argmin(_dominance_counts(jobs))))  # argmin: the oldest among ties


def run_step(
    state: PoolState,
    *,
    n_train: int,
    n_sample: int,
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
  roles = [TRAIN] * n_train + [SAMPLE] * n_sample + [RELEASED] * (config.n_gpus - n_train - n_sample)
  switched = [bool(state.roles) and state.roles[i] != r and r != RELEASED
              for i, r in enumerate(roles)]
  switch_s = config.switch_overhead_s
  budgets = [step_s - (switch_s if switched[i] else 0.0) for i in range(n_train)]
  sample_budget_s = sum(step_s - (switch_s if switched[n_train + i] else 0.0)
                        for i in range(n_sample))
  queue = list(state.queue)
  halfwork = list(state.halfwork)
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
      queue.extend(Job(int(i), tuple(map(float, p))) for i, p in zip(idx, preds))
    else:
      queue.extend(Job(int(i), (np.nan,) * n_obj) for i in idx)
    scored.extend(int(i) for i in idx)
    return len(idx)

  explore_every = (config.screen_explore_every
                   if screen and state.n_started >= config.screen_explore_after else 0)
  n_started = state.n_started
  if screen:
    # Scoring beyond the queue's room: sampling GPUs screen a batch, the queue keeps the best.
    n_old = len(queue)
    score(config.screen_per_gpu_hour * n_sample)
    if explore_every and len(queue) > n_old:
      # The optimizer's first proposal of the hour stays, as an exploration job (the newest two
      # are kept: exploration follows the optimizer's current region).
      queue[n_old] = queue[n_old]._replace(explore=True)
      kept = [i for i, j in enumerate(queue) if j.explore][-2:]
      queue = [j for i, j in enumerate(queue) if not j.explore or i in kept]
    plain = [i for i, j in enumerate(queue) if not j.explore]
    if len(plain) > cap + 1:
      counts = _dominance_counts([queue[i] for i in plain])
      dropped = {plain[k] for k in np.argsort(counts, kind="stable")[cap + 1:]}
      queue = [j for i, j in enumerate(queue) if i not in dropped]

  def refill() -> None:
    if len(queue) <= cap:
      score(cap + 1 - len(queue))

  finished: list[int] = []
  segments: list[Segment] = []
  train_busy_s = 0.0
  progress = True
  while progress and any(b > 0 for b in budgets):
    progress = False
    for g in range(n_train):
      if budgets[g] <= 0:
        continue
      if halfwork:
        job = _pop_least_dominated(halfwork)
        remaining = job.remaining_s
      else:
        refill()
        if not queue:
          continue
        n_started += 1
        explore = [i for i, j in enumerate(queue) if j.explore]
        plain = [j for j in queue if not j.explore]
        take_explore = bool(explore) and (not plain or (explore_every > 0
                                                        and n_started % explore_every == 0))
        if take_explore:
          job = queue.pop(explore[0])
        elif explore:
          job = _pop_least_dominated(plain)
          queue.remove(job)
        else:
          job = _pop_least_dominated(queue)
        remaining = float(train_time_s[job.candidate])
      progress = True
      start_s = float(train_time_s[job.candidate]) - remaining
      if remaining > budgets[g]:
        train_busy_s += budgets[g]
        halfwork.append(job._replace(remaining_s=remaining - budgets[g]))
        segments.append(Segment(job.candidate, g, start_s, start_s + budgets[g], False))
        budgets[g] = 0.0
      else:
        train_busy_s += remaining
        budgets[g] -= remaining
        finished.append(job.candidate)
        segments.append(Segment(job.candidate, g, start_s, start_s + remaining, True))
  if n_sample > 0 and not screen:
    refill()  # sampling keeps the queue full for the next step while it has budget

  switch_busy_s = switch_s * sum(switched)
  held_s = step_s * (n_train + n_sample)
  gpu_seconds = {TRAIN: train_busy_s, SAMPLE: sample_busy_s, SWITCH: switch_busy_s,
                 IDLE: max(0.0, held_s - train_busy_s - sample_busy_s - switch_busy_s)}
  new_state = PoolState(queue=queue, halfwork=halfwork, roles=roles, n_started=n_started)
  report = HourReport(finished=tuple(finished), gpu_seconds=gpu_seconds, n_scored=len(scored),
                      scored=tuple(scored), segments=tuple(segments))
  return new_state, report


def charge(ledger: ledger_lib.Ledger, report: HourReport, *, hour: int, ci_g_per_kwh: float,
           config: PoolConfig) -> ledger_lib.Ledger:
  """The ledger with the hour's GPU-seconds charged: one entry per kind used, in ``KINDS`` order.

  Args:
    ledger: the episode's ledger so far.
    report: the hour's report.
    hour: the hour's index in the episode (entries start at ``hour * config.step_s``).
    ci_g_per_kwh: carbon intensity charged for the whole hour (gCO2eq/kWh).
    config: the pool (power per kind, PUE).
  """
  for kind in KINDS:
    gpu_s = float(report.gpu_seconds[kind])
    if gpu_s > 0:
      ledger = ledger_lib.ledger_add(
          ledger, t_start_s=hour * config.step_s, duration_s=gpu_s, kind=kind,
          ci_g_per_kwh=ci_g_per_kwh, n_gpus=1, power_w=config.power_w(kind), pue=config.pue,
          tag=f"hour{hour}")
  return ledger


def queued_candidates(state: PoolState) -> Sequence[int]:
  """Candidates waiting in either queue (they must not be proposed again)."""
  return [j.candidate for j in state.queue] + [j.candidate for j in state.halfwork]
