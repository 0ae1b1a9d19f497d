"""One CE-NAS search episode: init, hour steps, and the final record, on any ``problem.Problem``
(the NB201 table of the HW-NAS-Bench study, or the open DARTS space with real training).

The episode is a loop of pure-ish steps over an explicit ``EpisodeState`` (JSON-serializable apart
from the strategy's pytree), so a runner can checkpoint after every simulated hour and resume:

    state = init_episode(problem, config, seed, strategy)
    while state.hour < config.hours:
      state, _ = step_episode(state, problem, ci, hour0, strategy, optimizer, config)
    record = episode_record(state, problem)

Carbon has one source: the episode's carbon ledger (``EpisodeState.ledger``), one entry per hour and
kind of GPU time charged; totals, curves and the learning strategies' reward all read it.

Randomness is derived from ``(seed, hour)`` (numpy ``SeedSequence`` and ``jax.random.fold_in``), never
carried as mutable state, so a resumed run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Protocol

import numpy as np

from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster.problem import Problem
from cenas_jax.cluster.strategies import Strategy
from cenas_jax.controller.types import Observation, Outcome
from cenas_jax.errors import ConfigError
from cenas_jax.moo import lamoo as lamoo_lib
from cenas_jax.moo.pareto import non_dominated_mask, non_dominated_sort


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Parameters of one episode.

  Attributes:
    hours: simulated hours.
    n_init: random architectures evaluated before the search starts (not charged, as the official
      code).
    pool: the GPU pool.
    history_hours: trailing hours of intensity a strategy may see.
    oneshot_per_gpu_hour: proposals a sampling GPU scores per hour when nothing trains (one-shot NAS).
    reward_accounting: accounting ("paper" or "full") whose carbon enters learning strategies' reward.
    screen_calibration_k: 0 (off) or k: screening corrects each supernet estimate by the mean error
      (true - estimate) of the k trained architectures nearest to it in the objectives both
      fidelities share (on NB201, energy). Why: the supernet's error depends on the cell's size (it
      underrates the largest cells by about 30 points and the mid-size ones by about 25), which
      puts the front's high-accuracy end behind the middle in predicted space (WORKSPACE.md 2.3:
      it lifts the heuristic's final HV to vanilla's, not the agent's; off in the flagfile).
      Each hour it re-scores the trained architectures: a lookup on a table, but a supernet
      evaluation per trained architecture on a problem that scores for real.
  """

  hours: int = 80
  n_init: int = 10
  pool: pool_lib.PoolConfig = pool_lib.PoolConfig()
  history_hours: int = 168
  oneshot_per_gpu_hour: int = 5
  reward_accounting: Literal["paper", "full"] = "paper"
  screen_calibration_k: int = 0

  def __post_init__(self):
    for name in ("hours", "history_hours"):
      if getattr(self, name) < 1:
        raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
    for name in ("n_init", "oneshot_per_gpu_hour", "screen_calibration_k"):
      if getattr(self, name) < 0:
        raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
    if self.reward_accounting not in ledger_lib.POLICIES:
      raise ConfigError("reward_accounting", f"must be one of {list(ledger_lib.POLICIES)}, got "
                        f"{self.reward_accounting!r}")


def calibrated_score(problem: Problem, evaluated: np.ndarray, k: int):
  """``problem.score`` corrected by the mean error of the k nearest trained architectures.

  Inputs of the neighbour search are the objectives on which the two fidelities agree on every
  trained architecture (e.g. a measured energy), standardized over them; the others get
  ``score + mean(y_true - score)`` over the neighbours. Without such an objective the score is
  returned unchanged.
  """
  y_true = problem.y_true[evaluated]
  err = y_true - np.asarray(problem.score(evaluated), dtype=np.float64)
  exact = np.all(np.abs(err) <= 1e-9 * (1.0 + np.abs(y_true)), axis=0)
  if exact.all() or not exact.any():
    return problem.score
  mu, sd = y_true[:, exact].mean(0), y_true[:, exact].std(0) + 1e-12
  keys = (y_true[:, exact] - mu) / sd

  def score(positions: np.ndarray) -> np.ndarray:
    pred = np.array(problem.score(positions), dtype=np.float64)
    q = (pred[:, exact] - mu) / sd
    d = ((q[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    near = np.argsort(d, axis=1, kind="stable")[:, :k]
    pred[:, ~exact] += err[near][:, :, ~exact].mean(1)
    return pred

  return score


class Optimizer(Protocol):
  """Orders fresh candidates for proposal (best region first)."""

  name: str

  def order(self, problem: Problem, sample_pos: np.ndarray, sample_y: np.ndarray,
            exclude: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class RandomOptimizer:
  """Uniform random proposals among fresh candidates (a baseline and a test double)."""

  name: str = "random"

  def order(self, problem, sample_pos, sample_y, exclude, k, rng):
    del problem, sample_pos, sample_y
    free = np.flatnonzero(~exclude)
    return rng.choice(free, size=min(k, len(free)), replace=False) if len(free) else free


@dataclasses.dataclass(frozen=True)
class LaMOOOptimizer:
  """LaMOO proposals (``cenas_jax.moo.lamoo``): tree rebuilt every hour, region chosen by UCB.

  Attributes:
    config: tree settings (``LaMOOConfig.cenas()`` by default).
    cp: UCB exploration constant (CE-NAS default 30).
    mode: "leaf" or "path" selection.
    method: "rejection" (uniform in the region) or "ehvi" (GP expected HV improvement in the region).
    max_tree_samples: when more samples are known (one-shot search scores thousands), the tree is
      built on this many of the best by non-dominated rank (0 = no limit).
  """

  config: lamoo_lib.LaMOOConfig = dataclasses.field(default_factory=lamoo_lib.LaMOOConfig.cenas)
  cp: float = 30.0
  mode: str = "leaf"
  method: str = "rejection"
  max_tree_samples: int = 400
  name: str = "lamoo"

  def order(self, problem, sample_pos, sample_y, exclude, k, rng):
    if k <= 0:
      return np.zeros(0, dtype=np.int64)
    if self.max_tree_samples and len(sample_pos) > self.max_tree_samples:
      ranks = non_dominated_sort(sample_y)
      keep = np.lexsort((rng.random(len(ranks)), ranks))[: self.max_tree_samples]
      sample_pos, sample_y = sample_pos[keep], sample_y[keep]
    state = lamoo_lib.LaMOOState(sample_idx=np.asarray(sample_pos, dtype=np.int64),
                                 y=np.asarray(sample_y, dtype=np.float64))
    return lamoo_lib.lamoo_step(state, problem.features, problem.ref_point, self.config, k, rng,
                                cp=self.cp, mode=self.mode, method=self.method,
                                extra_exclude=exclude)


@dataclasses.dataclass
class EpisodeState:
  """Everything needed to continue an episode.

  Attributes:
    seed: the episode's seed.
    hour: hours simulated so far.
    evaluated: candidate positions whose true objectives are known, in order (first ``n_init`` are
      the initial random ones).
    scored: positions scored by the supernet (one-shot strategies use them as samples).
    pool: queues and GPU roles.
    history: per-hour lists (``hv``, ``n_train``, ``n_sample``, ``ci_g_per_kwh``, ``n_finished``,
      ``n_scored``, ``gpu_s_<kind>``, ``info_<key>``).
    strategy_state: the strategy's pytree (agent parameters and optimizer state, or {}).
    ledger: the carbon ledger: every hour's GPU time charged, per kind.
  """

  seed: int
  hour: int
  evaluated: list[int]
  scored: list[int]
  pool: pool_lib.PoolState
  history: dict[str, list[float]]
  strategy_state: Any
  ledger: ledger_lib.Ledger = dataclasses.field(default_factory=ledger_lib.empty_ledger)

  def to_dict(self) -> dict:
    """JSON-safe part of the state (the strategy state is saved separately)."""
    return {"seed": self.seed, "hour": self.hour, "evaluated": list(map(int, self.evaluated)),
            "scored": list(map(int, self.scored)), "pool": self.pool.to_dict(),
            "history": {k: [float(x) for x in v] for k, v in self.history.items()},
            "ledger": self.ledger.to_dict()}

  @classmethod
  def from_dict(cls, d: dict, strategy_state: Any) -> "EpisodeState":
    return cls(seed=int(d["seed"]), hour=int(d["hour"]), evaluated=list(d["evaluated"]),
               scored=list(d["scored"]), pool=pool_lib.PoolState.from_dict(d["pool"]),
               history={k: list(v) for k, v in d["history"].items()}, strategy_state=strategy_state,
               ledger=ledger_lib.from_dict(d["ledger"]))


def _rng(seed: int, hour: int, stream: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, hour, stream]))


def _jax_key(seed: int, hour: int):
  import jax

  return jax.random.fold_in(jax.random.key(seed), hour)


def current_hv(state: EpisodeState, problem: Problem, trains: bool) -> float:
  """HV of what the strategy would report: its trained architectures, or (for one-shot search) the
  true objectives of the architectures its supernet estimates put on the front."""
  if trains:
    return problem.hv(state.evaluated)
  return problem.hv(oneshot_selection(state, problem))


def oneshot_selection(state: EpisodeState, problem: Problem, n_scored: int | None = None) -> np.ndarray:
  """The architectures a one-shot search reports: the non-dominated set of its estimates (the
  initial random architectures count with their true values); ``n_scored``: only the first that
  many scored ones (what it reported after an earlier hour)."""
  init = np.asarray(state.evaluated, dtype=np.int64)
  scored = np.asarray(state.scored[:n_scored], dtype=np.int64)
  pos = np.concatenate([init, scored])
  y = np.concatenate([problem.y_true[init], problem.y_pred[scored]])
  return pos[non_dominated_mask(y)]


def init_episode(problem: Problem, config: SearchConfig, seed: int,
                 strategy: Strategy) -> EpisodeState:
  """Evaluates ``n_init`` random architectures (uncharged) and initializes the strategy."""
  # Streams: 0 initial samples, 1 hourly proposals, 3 the initial expansion, 4 hourly expansions.
  problem.expand(_rng(seed, 0, 3))
  rng = _rng(seed, 0, 0)
  init = rng.choice(problem.n, size=config.n_init, replace=False)
  problem.run_segments(tuple(
      pool_lib.Segment(int(c), i % config.pool.n_gpus, 0.0, float(problem.train_time_s[c]), True)
      for i, c in enumerate(init)))
  state = EpisodeState(seed=seed, hour=0, evaluated=[int(i) for i in init], scored=[],
                       pool=pool_lib.PoolState(), history={}, strategy_state=None)
  state.strategy_state = strategy.init(_jax_key(seed, 2**30))
  state.history["hv"] = [current_hv(state, problem, True)]
  return state


def observe(state: EpisodeState, problem: Problem, ci_g_per_kwh: np.ndarray, hour0: int,
            config: SearchConfig, trains: bool,
            forecast_fn: Callable[[int], np.ndarray | None] | None = None,
            ci_ref: tuple[float, float] | None = None) -> Observation:
  """The observation at the start of ``state.hour``.

  Args:
    ci_g_per_kwh: the hourly trace, indexed so that ``ci_g_per_kwh[hour0 + h]`` is search hour h; at
      least ``config.history_hours`` hours before ``hour0`` when available.
    hour0: index of search hour 0 in the trace.
    forecast_fn: absolute trace index -> forecast of the following hours, or None.
    ci_ref: reference (min, max) for normalization; default the trailing history's.
  """
  t = hour0 + state.hour
  hist = ci_g_per_kwh[max(0, t - config.history_hours + 1): t + 1]
  lo, hi = ci_ref if ci_ref is not None else (float(hist.min()), float(hist.max()))
  hv = state.history["hv"][-1]
  hv_prev = state.history["hv"][-2] if len(state.history["hv"]) > 1 else hv
  return Observation(
      hour=state.hour, hours_total=config.hours, n_gpus=config.pool.n_gpus,
      ci_g_per_kwh=float(ci_g_per_kwh[t]), ci_history=hist,
      ci_forecast=forecast_fn(t) if forecast_fn is not None else None,
      ci_ref_min=lo, ci_ref_max=hi, hv=hv, hv_prev=hv_prev, hv_init=state.history["hv"][0],
      max_hv=problem.max_hv,
      n_evaluated=len(state.evaluated),
      n_queued=len(state.pool.queue) + len(state.pool.halfwork))


def step_episode(state: EpisodeState, problem: Problem, ci_g_per_kwh: np.ndarray, hour0: int,
                 strategy: Strategy, optimizer: Optimizer, config: SearchConfig,
                 forecast_fn=None, ci_ref=None) -> tuple[EpisodeState, dict]:
  """Simulates one hour: the strategy allocates, the pool works, the strategy learns.

  Returns the new state (the input is not modified) and the hour's info dict.
  """
  trains = strategy.trains
  problem.expand(_rng(state.seed, state.hour, 4))
  obs = observe(state, problem, ci_g_per_kwh, hour0, config, trains, forecast_fn, ci_ref)
  sstate, alloc, info = strategy.act(state.strategy_state, obs, _jax_key(state.seed, state.hour))
  pcfg = config.pool

  # What LaMOO learns from: true objectives of trained archs, or supernet estimates (one-shot).
  evaluated = np.asarray(state.evaluated, dtype=np.int64)
  scored = np.asarray(state.scored, dtype=np.int64)
  if trains:
    sample_pos, sample_y = evaluated, problem.y_true[evaluated]
  else:
    sample_pos = np.concatenate([evaluated, scored])
    sample_y = np.concatenate([problem.y_true[evaluated], problem.y_pred[scored]])
  exclude = np.zeros(problem.n, dtype=bool)
  exclude[evaluated] = True
  exclude[scored] = True
  exclude[np.asarray(pool_lib.queued_candidates(state.pool), dtype=np.int64)] = True

  if trains:
    k_max = pcfg.queue_capacity + 1 + 3 * pcfg.n_gpus + pcfg.screen_per_gpu_hour * alloc.n_sample
  else:
    k_max = config.oneshot_per_gpu_hour * alloc.n_sample
  order = optimizer.order(problem, sample_pos, sample_y, exclude, k_max,
                          _rng(state.seed, state.hour, 1))
  cursor = [0]

  def propose(k: int) -> np.ndarray:
    out = order[cursor[0]: cursor[0] + k]
    cursor[0] += len(out)
    return out

  ci = float(ci_g_per_kwh[hour0 + state.hour])
  if trains:
    predict = problem.score
    if config.screen_calibration_k and len(evaluated) >= config.screen_calibration_k:
      predict = calibrated_score(problem, evaluated, config.screen_calibration_k)
    new_pool, report = pool_lib.run_step(
        state.pool, n_train=alloc.n_train, n_sample=alloc.n_sample, propose=propose,
        predict=predict, train_time_s=problem.train_time_s, config=pcfg,
        n_obj=len(problem.objective_names))
    problem.run_segments(report.segments)
  else:
    # One-shot search: the sampling GPUs score a batch; nothing is queued for training.
    oneshot_cfg = dataclasses.replace(pcfg, screen_per_gpu_hour=config.oneshot_per_gpu_hour)
    _, report = pool_lib.run_step(
        pool_lib.PoolState(roles=state.pool.roles), n_train=0, n_sample=alloc.n_sample,
        propose=propose, predict=problem.score, train_time_s=problem.train_time_s,
        config=oneshot_cfg)
    new_pool = pool_lib.PoolState(roles=[pool_lib.SAMPLE] * alloc.n_sample
                                  + [pool_lib.RELEASED] * (pcfg.n_gpus - alloc.n_sample))
  ledger = pool_lib.charge(state.ledger, report, hour=state.hour, ci_g_per_kwh=ci, config=pcfg)

  new = EpisodeState(seed=state.seed, hour=state.hour + 1,
                     evaluated=state.evaluated + list(report.finished),
                     scored=state.scored + ([] if trains else list(report.scored)),
                     pool=new_pool, history={k: list(v) for k, v in state.history.items()},
                     strategy_state=sstate, ledger=ledger)
  hv = current_hv(new, problem, trains)
  h = new.history
  h["hv"].append(hv)
  for key, val in (("n_train", alloc.n_train), ("n_sample", alloc.n_sample), ("ci_g_per_kwh", ci),
                   ("n_finished", len(report.finished)), ("n_scored", report.n_scored)):
    h.setdefault(key, []).append(float(val))
  for kind in pool_lib.KINDS:
    h.setdefault(f"gpu_s_{kind}", []).append(report.gpu_seconds[kind])
  for key, val in info.items():
    if np.ndim(val) == 0:
      h.setdefault(f"info_{key}", []).append(float(val))

  done = not (new.hour < config.hours and hour0 + new.hour < len(ci_g_per_kwh))
  outcome = Outcome(hv_gain=hv - h["hv"][-2],
                    carbon_g=charged_g(ledger, config.reward_accounting, start=len(state.ledger)),
                    n_finished=len(report.finished), done=done)
  next_obs = None if done else observe(new, problem, ci_g_per_kwh, hour0, config, trains,
                                       forecast_fn, ci_ref)
  new.strategy_state = strategy.learn(sstate, obs, info, outcome, next_obs)
  return new, {"alloc": alloc, "report": report, "hv": hv}


def charged_g(ledger: ledger_lib.Ledger, accounting: str, start: int = 0) -> float:
  """Carbon (g) of the ledger's entries from ``start`` on that ``accounting`` counts, summed in
  entry order (the reward of one hour: ``start`` is the ledger's length before the hour)."""
  mask = ledger_lib.policy_mask(ledger, accounting)[start:]
  return float(sum(ledger.column("carbon_g")[start:][mask]))


def carbon_curve(ledger: ledger_lib.Ledger, accounting: str, hours: int,
                 step_s: float = pool_lib.PoolConfig.step_s) -> np.ndarray:
  """Cumulative carbon (g) after each of ``hours`` hours under ``accounting`` ("paper" or "full")."""
  mask = ledger_lib.policy_mask(ledger, accounting)
  hour = np.round(ledger.column("t_start_s")[mask] / step_s).astype(np.int64)
  # bincount adds each hour's entries in ledger order (the pool's kind order).
  per_hour = np.bincount(hour, weights=ledger.column("carbon_g")[mask], minlength=hours)
  return np.cumsum(per_hour[:hours])


def carbon_to_target(hv: list[float], carbon_curve_g: np.ndarray, target_hv: float,
                     final_eval_g: np.ndarray | None = None) -> float | None:
  """Carbon (g) spent when the HV first reaches ``target_hv`` (None if it never does).

  Args:
    hv: the HV before the first hour, then after each hour.
    carbon_curve_g: cumulative carbon after each hour (``carbon_curve``).
    target_hv: the HV to reach.
    final_eval_g: the final-evaluation charge before the first hour, then after each hour
      (``final_eval_charge_g``): what training the reported but untrained architectures would cost.
      None: nothing reported is untrained.
  """
  hv = np.asarray(hv, dtype=np.float64)
  extra = np.zeros(len(hv)) if final_eval_g is None else np.asarray(final_eval_g, dtype=np.float64)
  if hv[0] >= target_hv:
    return float(extra[0])
  hit = np.flatnonzero(hv[1:] >= target_hv)
  if len(hit) == 0:
    return None
  return float(carbon_curve_g[hit[0]] + extra[hit[0] + 1])


def final_eval_charge_g(state: EpisodeState, problem: Problem,
                        pool: pool_lib.PoolConfig) -> tuple[np.ndarray, float, float]:
  """What training the architectures a search reports, but has not trained, would cost.

  A one-shot search reports architectures whose accuracy only training reveals; charging that
  training makes it comparable with strategies that trained what they report. Training strategies
  report what they trained (already in the ledger), so their charge is 0. The initial ``n_init``
  architectures stay uncharged for every strategy (as the official code).

  The charge after hour h is ``sum_i t_i P_train PUE CI_mean / 3.6e6`` (g) over the untrained
  architectures i reported then, with ``t_i`` their training time (s), ``P_train`` the training
  power (W) and ``CI_mean`` the window's mean intensity (gCO2eq/kWh): the search does not say when
  that training would run, so it is charged at the window's average rather than at a chosen hour.

  Returns:
    ``(charge_g, train_s_final, ci_mean)``: the charge before the first hour and after each hour
    (length ``state.hour + 1``), the final reported set's untrained training seconds, and ``CI_mean``.
  """
  h = state.history
  ci_mean = float(np.mean(h["ci_g_per_kwh"])) if h.get("ci_g_per_kwh") else 0.0
  g_per_s = pool.train_power_w * pool.pue * ci_mean / 3.6e6
  train_s = np.zeros(state.hour + 1)
  if state.scored:
    n_scored = np.concatenate([[0], np.cumsum(h["n_scored"]).astype(np.int64)])
    assert n_scored[-1] == len(state.scored), "history n_scored disagrees with the scored list"
    trained = set(state.evaluated)
    for t, n in enumerate(n_scored):
      untrained = [p for p in oneshot_selection(state, problem, int(n)) if int(p) not in trained]
      train_s[t] = float(np.sum(problem.train_time_s[np.asarray(untrained, dtype=np.int64)]))
  return train_s * g_per_s, float(train_s[-1]), ci_mean


def record_carbon_curves(record: dict) -> dict[str, np.ndarray]:
  """Cumulative carbon after each hour per accounting, from an ``episode_record``'s ledger."""
  led = ledger_lib.from_dict(record["ledger"])
  step_s = record.get("step_s", pool_lib.PoolConfig.step_s)  # episodes stored before it was recorded
  return {acc: carbon_curve(led, acc, record["hours"], step_s)
          for acc in ledger_lib.POLICIES}


def episode_record(state: EpisodeState, problem: Problem, hv_targets=(0.95, 0.97, 0.98, 0.99),
                   pool: pool_lib.PoolConfig = pool_lib.PoolConfig()) -> dict:
  """The per-episode summary that ``summary.json`` aggregates, with the episode's carbon ledger
  (``ledger``, as ``Ledger.to_dict``): carbon totals and curves come from it.

  The ledger of the record adds the final-evaluation charge (``final_eval_charge_g``) as one
  ``training`` entry tagged ``final_eval`` after the last hour, so totals include it under both
  accountings while the hourly curves stop at the last hour; carbon-to-target adds the charge of
  the hour the target is reached (``final_eval_g``, before the first hour and after each hour).
  """
  h = state.history
  step_s = pool.step_s
  final_eval_g, final_train_s, ci_mean = final_eval_charge_g(state, problem, pool)
  led = state.ledger
  if final_train_s > 0:
    led = ledger_lib.ledger_add(led, t_start_s=state.hour * step_s, duration_s=final_train_s,
                                kind=ledger_lib.TRAINING, ci_g_per_kwh=ci_mean, n_gpus=1,
                                power_w=pool.train_power_w, pue=pool.pue, tag="final_eval")
  curves = {acc: carbon_curve(led, acc, state.hour, step_s) for acc in ledger_lib.POLICIES}
  facility_j = led.column("energy_j") * led.column("pue")
  kinds = led.kinds
  return {
      "seed": state.seed,
      "hours": state.hour,
      "step_s": step_s,
      "final_hv": h["hv"][-1],
      "n_trained": len(state.evaluated),
      "n_scored": len(state.scored),
      "carbon_g": {acc: float(ledger_lib.totals(led, acc).carbon_g) for acc in ledger_lib.POLICIES},
      "final_eval_g": [float(x) for x in final_eval_g],
      "carbon_to_target_g": {
          acc: {f"{t:.2f}": carbon_to_target(h["hv"], curves[acc], t * problem.max_hv, final_eval_g)
                for t in hv_targets}
          for acc in ledger_lib.POLICIES},
      "gpu_hours": {k: float(np.sum(h.get(f"gpu_s_{k}", [0.0])) / 3600.0) for k in pool_lib.KINDS},
      "final_eval_gpu_hours": final_train_s / 3600.0,
      "energy_kwh": {k: float(np.sum(facility_j[(kinds == k) & (led.tags != "final_eval")]) / 3.6e6)
                     for k in pool_lib.KINDS},
      "ledger": led.to_dict(),
  }
