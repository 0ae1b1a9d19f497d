"""The HW-NAS-Bench CE-NAS experiment: strategies x seeds on the simulated pool, resumable.

``run_experiment(config, workdir)`` runs every (strategy, seed) episode, checkpointing after every
simulated hour (``<workdir>/checkpoints/<episode>/``), storing each finished episode in
``<workdir>/episodes/<episode>.json``, and finally writing ``summary.json``, ``results.jsonl``,
``pareto.csv`` and the plots. Killing the process at any point and running the same command again
resumes from the last completed hour and ends with the same ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster import search
from cenas_jax.cluster import strategies as strat_lib
from cenas_jax.cluster.problem import SearchProblem, hwnas_problem
from cenas_jax.errors import CenasError
from cenas_jax.fileio import atomic_write_json

STRATEGIES = ("vanilla", "oneshot", "heuristic", "cenas", "cenas_faithful", "oracle", "fixed")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines an experiment (saved as ``config.json``; a resume must match it)."""

  strategies: tuple[str, ...] = ("vanilla", "oneshot", "heuristic", "cenas", "oracle")
  seeds: tuple[int, ...] = tuple(range(20))
  region: str = "US-CAL-CISO"
  trace_dataset: str = "forecasting"
  ci_column: str = "lifecycle"
  trace_path: str = ""  # overrides region/dataset when set
  start: str = "2021-07-02T06:00:00+00:00"
  hours: int = 80
  # The simulated pool (``pool_lib.PoolConfig``'s fields and defaults, flat for the flags).
  n_gpus: int = pool_lib.PoolConfig.n_gpus
  queue_capacity: int = pool_lib.PoolConfig.queue_capacity
  sample_time_s: float = pool_lib.PoolConfig.sample_time_s
  train_power_w: float = pool_lib.PoolConfig.train_power_w
  sample_power_w: float = pool_lib.PoolConfig.sample_power_w
  idle_power_w: float = pool_lib.PoolConfig.idle_power_w
  pue: float = pool_lib.PoolConfig.pue
  switch_overhead_s: float = pool_lib.PoolConfig.switch_overhead_s
  screen_per_gpu_hour: int = pool_lib.PoolConfig.screen_per_gpu_hour
  oneshot_per_gpu_hour: int = 5
  sampling: str = "oneshot"  # supernet table for sampling-fidelity scores: oneshot | fewshot
  train_time_model: str = "flops_affine"
  proposal: str = "rejection"  # rejection | ehvi
  cp: float = 30.0
  lamoo_preset: str = "cenas"
  max_tree_samples: int = 400
  n_init: int = 10
  agent_mode: str = "fixed"  # for "cenas"; "cenas_faithful" is always the official agent
  agent_ci_input: str = "perfect"  # actual | perfect (true next 24 h) | forecast
  agent_release: bool = True
  agent_entropy_weight: float = 0.5  # entropy bonus of the fixed-mode agent (official: 0.5)
  agent_greedy: bool = False  # a pre-trained, frozen agent acts by its most probable action
  agent_beta_scale: float = 2.0  # weight of carbon in the fixed-mode reward (official: 2 / CI_max)
  forecaster_dir: str = ""
  reward_accounting: str = "paper"
  pretrain_episodes: int = 0
  pretrain_regions: tuple[str, ...] = ("US-CAL-CISO", "DE", "US-MIDA-PJM")
  pretrain_end: str = "2021-06-25T00:00:00+00:00"
  oracle_quantiles: tuple[float, ...] = (0.35, 0.7)
  oracle_splits: tuple[str, ...] = ("1:0", "2:0", "2:1", "8:1")  # n_train in clean:dirty hours
  oracle_accounting: str = "full"
  hv_targets: tuple[float, ...] = (0.95, 0.97, 0.98, 0.99)
  carbon_budgets_g: tuple[float, ...] = (5000.0, 10000.0, 30000.0, 50000.0)
  workers: int = 1

  def __post_init__(self):
    bad = [s for s in self.strategies if s not in STRATEGIES]
    if bad:
      raise ValueError(f"--strategies: unknown {bad}; choose from {list(STRATEGIES)}")
    if self.agent_ci_input not in ("actual", "perfect", "forecast"):
      raise ValueError(f"--agent_ci_input must be actual, perfect or forecast, got {self.agent_ci_input!r}")
    if self.agent_ci_input == "forecast" and not self.forecaster_dir:
      raise ValueError("--agent_ci_input=forecast needs --forecaster_dir (the 'forecaster' folder of "
                       "a finished `python -m experiments.train_forecaster` workdir)")
    for split in self.oracle_splits:
      parts = split.split(":")
      if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--oracle_splits: {split!r} is not 'N_CLEAN:N_DIRTY' (e.g. 2:0)")
    if self.hours < 1 or not self.seeds:
      raise ValueError("--hours must be >= 1 and --seeds non-empty")

  def pool(self) -> pool_lib.PoolConfig:
    """The pool of this experiment: every ``PoolConfig`` field it has (``step_s`` keeps its default)."""
    return pool_lib.PoolConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(pool_lib.PoolConfig)
                                  if hasattr(self, f.name)})

  def search(self) -> search.SearchConfig:
    return search.SearchConfig(hours=self.hours, n_init=self.n_init, pool=self.pool(),
                               oneshot_per_gpu_hour=self.oneshot_per_gpu_hour,
                               reward_accounting=self.reward_accounting)

  def to_json(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------------------------------------
# Inputs: problem and trace


@dataclasses.dataclass(frozen=True)
class Inputs:
  problem: SearchProblem
  ci_g_per_kwh: np.ndarray  # the whole trace (gCO2eq/kWh)
  trace_start: Any  # UTC timestamp of ci_g_per_kwh[0]
  hour0: int  # index of search hour 0
  trace_info: dict
  table_provenance: dict


@functools.lru_cache(maxsize=2)
def load_inputs(config: ExperimentConfig) -> Inputs:
  """The problem and trace for ``config`` (cached per process: workers run many episodes)."""
  import pandas as pd

  from cenas_jax.data import carbon_traces
  from cenas_jax.data.nasbench import load_nb201_table

  table = load_nb201_table()
  problem = hwnas_problem(table, sampling=config.sampling, train_time_model=config.train_time_model)
  if config.trace_path:
    trace = carbon_traces.load_trace(config.trace_path, column=config.ci_column)
  else:
    trace = carbon_traces.region_trace(config.region, dataset=config.trace_dataset,
                                       column=config.ci_column)
  start = pd.Timestamp(config.start)
  if start.tzinfo is None:
    raise ValueError(f"--start={config.start!r} needs a UTC offset, e.g. 2021-07-02T06:00:00+00:00")
  hour0 = int((start - trace.start) / pd.Timedelta(hours=1))
  if hour0 < 0 or hour0 + config.hours > len(trace):
    raise ValueError(
        f"--start={config.start} with --hours={config.hours} is outside the trace {trace.path} "
        f"({trace.start} .. {trace.end})")
  prov = table.provenance() if hasattr(table, "provenance") else {}
  return Inputs(problem=problem, ci_g_per_kwh=trace.values.astype(np.float64),
                trace_start=trace.start, hour0=hour0,
                trace_info=trace.to_dict(), table_provenance=prov)


def forecast_fn_for(config: ExperimentConfig, ci: np.ndarray, trace_start=None):
  """The next-24 h intensity a strategy sees from trace index t on.

  ``actual``: none (the agent sees only the current value, as the official code); ``perfect``: the
  true next 24 h; ``forecast``: the P50 of the trained forecaster in ``config.forecaster_dir``, made
  from the 168 h before t (computed in batches and cached).
  """
  if config.agent_ci_input == "perfect":
    return lambda t: ci[t: t + 24]
  if config.agent_ci_input != "forecast":
    return None
  return ForecastCache(config.forecaster_dir, ci, trace_start)


class ForecastCache:
  """P50 forecasts of a trained forecaster for every origin of a trace, computed on demand."""

  def __init__(self, forecaster_dir: str, ci: np.ndarray, trace_start, block: int = 128):
    import pandas as pd

    from cenas_jax.carbon import forecast_metrics as fm
    from cenas_jax.carbon.forecaster import restore_forecaster

    self._tf = restore_forecaster(forecaster_dir)
    self._ci = ci
    self._t0 = int(fm.hours_since_epoch(pd.DatetimeIndex([pd.Timestamp(trace_start)]))[0])
    self._block = block
    self._cache: dict[int, np.ndarray] = {}
    self._p50 = list(self._tf.config.quantiles).index(0.5)
    self._hist = self._tf.config.history_hours

  def __call__(self, t: int) -> np.ndarray:
    if t not in self._cache:
      from cenas_jax.carbon.forecaster import predict_quantiles

      if t < self._hist:
        raise ValueError(f"a forecast at trace hour {t} needs {self._hist} hours of history")
      origins = np.arange(t, min(t + self._block, len(self._ci) + 1))
      hist = np.stack([self._ci[o - self._hist: o] for o in origins])
      q = predict_quantiles(self._tf.params, hist, origins + self._t0, config=self._tf.config,
                            normalization=self._tf.normalization)
      for o, f in zip(origins, q[:, :24, self._p50]):
        self._cache[int(o)] = f
    return self._cache[t]


# ---------------------------------------------------------------------------------------------
# Strategies


def _optimizer(config: ExperimentConfig) -> search.Optimizer:
  from cenas_jax.moo.lamoo import LaMOOConfig

  preset = {"cenas": LaMOOConfig.cenas, "lamoo": LaMOOConfig.lamoo}[config.lamoo_preset]()
  return search.LaMOOOptimizer(config=preset, cp=config.cp, method=config.proposal,
                               max_tree_samples=config.max_tree_samples)


def _agent_config(config: ExperimentConfig, faithful: bool, frozen: bool = False):
  from cenas_jax.controller.allocation_agent import AgentConfig

  # The official reward counts carbon in GPU-hours x gCO2/kWh; dividing our grams by the training
  # power (kW) and the PUE gives back that unit.
  power_kw = config.train_power_w / 1000.0 * config.pue
  if faithful:
    return AgentConfig(mode="faithful", n_gpus=config.n_gpus, reward_gpu_power_kw=power_kw)
  if config.agent_mode == "faithful":
    return AgentConfig(mode="faithful", n_gpus=config.n_gpus, reward_gpu_power_kw=power_kw,
                       frozen=frozen, greedy=frozen and config.agent_greedy)
  return AgentConfig(mode=config.agent_mode, n_gpus=config.n_gpus, release=config.agent_release,
                     use_forecast=config.agent_ci_input != "actual", frozen=frozen,
                     greedy=frozen and config.agent_greedy,
                     entropy_weight=config.agent_entropy_weight, beta_scale=config.agent_beta_scale,
                     reward_gpu_power_kw=power_kw)


def make_strategy(name: str, config: ExperimentConfig, inputs: Inputs, pretrained=None):
  """Builds a strategy by name.

  ``oracle_q0.35_2:0`` is the threshold schedule that trains on 2 GPUs in hours at or below the
  window's 0.35 intensity quantile and on 0 otherwise (one GPU keeps sampling, the rest is released).
  """
  if name == "vanilla":
    return strat_lib.Vanilla()
  if name == "oneshot":
    return strat_lib.OneShot()
  if name == "heuristic":
    return strat_lib.Heuristic(max_train=config.n_gpus - 1)
  if name == "fixed":
    return strat_lib.Fixed(1, config.n_gpus - 1)
  if name.startswith("oracle_q"):
    window = inputs.ci_g_per_kwh[inputs.hour0: inputs.hour0 + config.hours]
    q, split = name[len("oracle_q"):].split("_")
    n_hi, n_lo = (min(int(x), config.n_gpus) for x in split.split(":"))
    return strat_lib.Threshold(float(np.quantile(window, float(q))), n_hi=n_hi, n_lo=n_lo,
                               name=name)
  from cenas_jax.controller.allocation_agent import AgentStrategy

  if name == "cenas_faithful":
    return AgentStrategy(config=_agent_config(config, faithful=True), name=name)
  if name == "cenas":
    return AgentStrategy(config=_agent_config(config, False, frozen=pretrained is not None),
                         init_params=pretrained, name=name)
  raise ValueError(f"unknown strategy {name!r}")


def ci_reference(config: ExperimentConfig, name: str, inputs: Inputs):
  """Normalization range: the official agent uses the min/max over the rest of the trace."""
  if name == "cenas_faithful":
    rest = inputs.ci_g_per_kwh[inputs.hour0:]
    return float(rest.min()), float(rest.max())
  return None


# ---------------------------------------------------------------------------------------------
# Episodes with per-hour checkpoints


def episode_name(strategy: str, seed: int) -> str:
  return f"{strategy}__seed{seed}"


def run_episode(name: str, seed: int, config: ExperimentConfig, inputs: Inputs, workdir: Path,
                pretrained=None, progress: bool = True) -> dict:
  """Runs (or resumes, or loads) one episode; returns its record with the hourly history."""
  from jax.flatten_util import ravel_pytree

  from cenas_jax.training.checkpoint import Checkpointer

  ep = episode_name(name, seed)
  done_path = workdir / "episodes" / f"{ep}.json"
  if done_path.exists():
    return json.loads(done_path.read_text())
  strategy = make_strategy(name, config, inputs, pretrained)
  scfg = config.search()
  optimizer = _optimizer(config)
  fc = forecast_fn_for(config, inputs.ci_g_per_kwh, inputs.trace_start)
  ci_ref = ci_reference(config, name, inputs)
  ckpt_dir = workdir / "checkpoints" / ep
  t0 = time.time()
  with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
    state = search.init_episode(inputs.problem, scfg, seed, strategy)
    # Only a strategy that learns has a state worth saving every hour; it is saved as one flat
    # vector (one array is far cheaper for orbax than a few dozen small leaves).
    learns = bool(getattr(strategy, "learns", False))
    flat0, unravel = ravel_pytree(state.strategy_state) if learns else (None, None)
    if ckpt.latest_step() is not None:
      restored = ckpt.restore(target={"flat": flat0} if learns else {})
      sstate = unravel(restored.state["flat"]) if learns else state.strategy_state
      state = search.EpisodeState.from_dict(restored.side_state["episode"], sstate)
      print(f"  {ep}: resumed at hour {state.hour} from {ckpt_dir}", flush=True)
    while state.hour < scfg.hours:
      state, _ = search.step_episode(state, inputs.problem, inputs.ci_g_per_kwh, inputs.hour0,
                                     strategy, optimizer, scfg, forecast_fn=fc, ci_ref=ci_ref)
      saved = {"flat": ravel_pytree(state.strategy_state)[0]} if learns else {}
      ckpt.save(state.hour, saved, {"episode": state.to_dict()}, force=True)
      if progress and (state.hour % 10 == 0 or state.hour == scfg.hours):
        el = time.time() - t0
        print(f"  {ep}: hour {state.hour}/{scfg.hours}  HV {state.history['hv'][-1]:.1f} "
              f"({state.history['hv'][-1] / inputs.problem.max_hv:.4f} of max)  "
              f"trained {len(state.evaluated)}  {el:.1f}s", flush=True)
  record = search.episode_record(state, inputs.problem, config.hv_targets, scfg.pool)
  record.update(strategy=name, wall_s=time.time() - t0, history=state.history,
                evaluated=[int(inputs.problem.arch_index[p]) for p in state.evaluated])
  atomic_write_json(done_path, record)
  shutil.rmtree(ckpt_dir, ignore_errors=True)
  return record


# ---------------------------------------------------------------------------------------------
# Aggregation


def _median(xs) -> float | None:
  xs = [x for x in xs if x is not None]
  return float(np.median(xs)) if xs else None


def _ratio(num, den) -> float | None:
  if num is None or den is None or den <= 0:
    return None
  return float(num / den)


def hv_at_budget(record: dict, accounting: str, budget_g: float) -> float:
  """HV reached before the cumulative carbon exceeds ``budget_g``."""
  curve = search.carbon_curve(record["history"], accounting)
  hv = np.asarray(record["history"]["hv"])
  ok = np.flatnonzero(curve <= budget_g)
  return float(hv[0] if len(ok) == 0 else hv[ok[-1] + 1])


def summarize(records: dict[str, list[dict]], config: ExperimentConfig, max_hv: float) -> dict:
  """The ``summary.json`` body (without provenance).

  ``ratios_vs_vanilla[NAME]``: median over seeds of vanilla's carbon / NAME's (higher is better);
  ``to_target_vs_oracle[NAME]``: median over seeds of NAME's carbon to a target / the oracle's (lower
  is better; 1.25 means 25% more carbon than the offline bound).
  """
  accs = tuple(pool_lib.ACCOUNTING)
  targets = [f"{t:.2f}" for t in config.hv_targets]
  out: dict[str, Any] = {"max_hv": max_hv, "seeds": list(config.seeds),
                         "hv_targets": list(config.hv_targets), "strategies": {},
                         "ratios_vs_vanilla": {}}
  for name, recs in records.items():
    entry = {
        "final_hv": [r["final_hv"] for r in recs],
        "final_hv_frac": [r["final_hv"] / max_hv for r in recs],
        "n_trained": [r["n_trained"] for r in recs],
        "carbon_g": {a: [r["carbon_g"][a] for r in recs] for a in accs},
        "carbon_to_target_g": {a: {t: [r["carbon_to_target_g"][a][t] for r in recs]
                                   for t in targets} for a in accs},
        "hv_at_budget": {a: {f"{b:g}": [hv_at_budget(r, a, b) for r in recs]
                             for b in config.carbon_budgets_g} for a in accs},
        "gpu_hours": {k: [r["gpu_hours"][k] for r in recs] for k in pool_lib.KINDS},
    }
    if name == "oracle":
      entry["chosen_schedule"] = [r.get("chosen") for r in recs]
    out["strategies"][name] = entry
  if "vanilla" in records:
    van = {r["seed"]: r for r in records["vanilla"]}
    for name, recs in records.items():
      by_seed = {r["seed"]: r for r in recs}
      seeds = [s for s in config.seeds if s in van and s in by_seed]

      def ratios(get):
        return _median([_ratio(get(van[s]), get(by_seed[s])) for s in seeds])

      out["ratios_vs_vanilla"][name] = {
          "total": {a: ratios(lambda r, a=a: r["carbon_g"][a]) for a in accs},
          "to_target": {a: {t: ratios(lambda r, a=a, t=t: r["carbon_to_target_g"][a][t])
                            for t in targets} for a in accs},
      }
  if "oracle" in records:
    ora = {r["seed"]: r for r in records["oracle"]}
    out["to_target_vs_oracle"] = {}
    for name, recs in records.items():
      by_seed = {r["seed"]: r for r in recs}
      seeds = [s for s in config.seeds if s in ora and s in by_seed]
      out["to_target_vs_oracle"][name] = {
          a: {t: _median([_ratio(by_seed[s]["carbon_to_target_g"][a][t],
                                 ora[s]["carbon_to_target_g"][a][t]) for s in seeds])
              for t in targets} for a in accs}
  return out


def summary_table(summary: dict) -> str:
  """A Markdown table of a ``summary.json``: medians over seeds, with the spread (min-max)."""
  def med(xs, fmt="{:.0f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
      return "never"
    return f"{fmt.format(np.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"

  def num(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)

  lines = ["| strategy | final HV / max | trained | carbon paper (g) | carbon full (g) | "
           "to 0.98 paper (g) | to 0.98 full (g) | ratio total paper / full | "
           "ratio to 0.98 paper / full | to 0.98 vs oracle paper / full |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  rv = summary.get("ratios_vs_vanilla", {})
  vo = summary.get("to_target_vs_oracle", {})
  for name, e in summary["strategies"].items():
    r = rv.get(name, {})
    o = vo.get(name, {})
    n_missing = {a: sum(x is None for x in e["carbon_to_target_g"][a]["0.98"]) for a in ("paper", "full")}
    miss = f" [{n_missing['paper']} seeds never]" if n_missing["paper"] else ""
    lines.append(
        f"| {name} | {med(e['final_hv_frac'], '{:.4f}')} | {med(e['n_trained'])} | "
        f"{med(e['carbon_g']['paper'])} | {med(e['carbon_g']['full'])} | "
        f"{med(e['carbon_to_target_g']['paper']['0.98'])}{miss} | "
        f"{med(e['carbon_to_target_g']['full']['0.98'])} | "
        f"{num(r.get('total', {}).get('paper'))} / {num(r.get('total', {}).get('full'))} | "
        f"{num(r.get('to_target', {}).get('paper', {}).get('0.98'))} / "
        f"{num(r.get('to_target', {}).get('full', {}).get('0.98'))} | "
        f"{num(o.get('paper', {}).get('0.98'))} / {num(o.get('full', {}).get('0.98'))} |")
  return "\n".join(lines) + "\n"


def _oracle_pick(candidates: list[dict], accounting: str) -> dict:
  """Best threshold schedule: least carbon to 0.98 of max HV (ties: higher final HV)."""
  def key(r):
    c = r["carbon_to_target_g"][accounting].get("0.98")
    return (c is None, c if c is not None else 0.0, -r["final_hv"])
  best = dict(min(candidates, key=key))
  best["chosen"] = best["strategy"]
  best["strategy"] = "oracle"
  return best


def oracle_names(config: ExperimentConfig) -> list[str]:
  """The threshold schedules the oracle chooses from (with the whole trace known)."""
  return [f"oracle_q{q:.2f}_{split}" for split in config.oracle_splits
          for q in config.oracle_quantiles]


def _episode_jobs(config: ExperimentConfig) -> list[tuple[str, int]]:
  jobs = []
  for name in config.strategies:
    names = oracle_names(config) if name == "oracle" else [name]
    jobs += [(n, s) for s in config.seeds for n in names]
  return jobs


def _check_config(workdir: Path, config: ExperimentConfig) -> None:
  path = workdir / "config.json"
  new = config.to_json()
  new.pop("workers")
  if path.exists():
    old = json.loads(path.read_text())
    old.pop("workers", None)
    # Settings added after the run was started count as their defaults.
    defaults = ExperimentConfig().to_json()
    for k in set(new) - set(old):
      old[k] = defaults[k]
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
      raise CenasError(
          f"{workdir} holds a run with other settings ({', '.join(f'--{k}' for k in diff)} differ: "
          f"saved {[old.get(k) for k in diff]}, now {[new.get(k) for k in diff]}). Use a new "
          "--workdir, or the saved settings to resume.")
  else:
    atomic_write_json(path, new)


def _worker(args):
  name, seed, config, workdir, pretrained_dir = args
  inputs = load_inputs(config)
  pretrained = _load_pretrained(pretrained_dir, config, inputs) if name == "cenas" else None
  return run_episode(name, seed, config, inputs, Path(workdir), pretrained)


def run_experiment(config: ExperimentConfig, workdir: str | os.PathLike[str]) -> dict:
  """Runs (or resumes) the experiment and writes its outputs; returns the summary."""
  from cenas_jax import plots, results

  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _check_config(workdir, config)
  inputs = load_inputs(config)
  print(f"problem {inputs.problem.name}: {inputs.problem.n} candidates, max HV "
        f"{inputs.problem.max_hv:.2f}; trace {inputs.trace_info.get('source')} from {config.start}, "
        f"{config.hours} h", flush=True)
  pretrained_dir = None
  if "cenas" in config.strategies and config.pretrain_episodes > 0:
    pretrained_dir = pretrain(config, inputs, workdir)
  jobs = _episode_jobs(config)
  t0 = time.time()
  if config.workers > 1:
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(config.workers) as p:
      outs = p.map(_worker, [(n, s, config, str(workdir), pretrained_dir) for n, s in jobs],
                   chunksize=1)
  else:
    pretrained = _load_pretrained(pretrained_dir, config, inputs) if pretrained_dir else None
    outs = []
    for i, (n, s) in enumerate(jobs):
      outs.append(run_episode(n, s, config, inputs, workdir, pretrained if n == "cenas" else None))
      el = time.time() - t0
      print(f"[{i + 1}/{len(jobs)}] {episode_name(n, s)} final HV "
            f"{outs[-1]['final_hv'] / inputs.problem.max_hv:.4f}; elapsed {el:.0f}s, "
            f"ETA {el / (i + 1) * (len(jobs) - i - 1):.0f}s", flush=True)
  by_job = {(r["strategy"], r["seed"]): r for r in outs}
  records: dict[str, list[dict]] = {}
  for name in config.strategies:
    if name == "oracle":
      records[name] = [_oracle_pick([by_job[(n, s)] for n in oracle_names(config)],
                                    config.oracle_accounting) for s in config.seeds]
    else:
      records[name] = [by_job[(name, s)] for s in config.seeds]
  summary = summarize(records, config, inputs.problem.max_hv)
  results.write_summary(workdir, summary, results.collect_provenance(
      seed=list(config.seeds), config=config.to_json(),
      data_hashes={"trace": inputs.trace_info.get("sha256"), **{
          k: v.get("sha256") for k, v in inputs.table_provenance.get("files", {}).items()}}, trace=inputs.trace_info,
      nb201_table=inputs.table_provenance, energy_source="table-hw-nas-bench-edgegpu_energy (objective); "
      "GPU power model for carbon (PoolConfig)", ci_source=inputs.trace_info.get("source"),
      sampling_source=inputs.problem.sampling_source))
  _write_results_and_plots(records, config, inputs, workdir)
  from cenas_jax.fileio import atomic_write_text

  atomic_write_text(workdir / "summary.md", summary_table(summary))
  return summary


def _write_results_and_plots(records, config, inputs, workdir: Path) -> None:
  from cenas_jax import plots, results

  rows = []
  for name, recs in records.items():
    for r in recs:
      h = r["history"]
      cp, cf = (search.carbon_curve(h, a) for a in ("paper", "full"))
      for t in range(len(h.get("n_train", []))):
        rows.append({"strategy": name, "seed": r["seed"], "hour": t + 1, "hv": h["hv"][t + 1],
                     "n_train": h["n_train"][t], "n_sample": h["n_sample"][t],
                     "ci_g_per_kwh": h["ci_g_per_kwh"][t], "n_finished": h["n_finished"][t],
                     "carbon_g_paper_cum": float(cp[t]), "carbon_g_full_cum": float(cf[t])})
  results.rewrite_results(workdir, rows)

  max_hv = inputs.problem.max_hv
  curves_h, curves_c = {}, {}
  for name, recs in records.items():
    logd = np.array([np.log10(np.maximum(max_hv - np.asarray(r["history"]["hv"]), 1e-3))
                     for r in recs])
    hours = np.arange(logd.shape[1])
    curves_h[name] = (hours, np.median(logd, 0), np.quantile(logd, 0.25, 0), np.quantile(logd, 0.75, 0))
    carbon = np.median(np.array([np.concatenate([[0.0], search.carbon_curve(r["history"], "paper")])
                                 for r in recs]), 0)
    curves_c[name] = (carbon, np.median(logd, 0), np.quantile(logd, 0.25, 0),
                      np.quantile(logd, 0.75, 0))
  plots.plot_hv_curves(workdir / "hv_vs_hours.png", curves_h, xlabel="simulated hours",
                       ylabel="log10(max HV - HV)", logy=False)
  plots.plot_hv_curves(workdir / "hv_vs_carbon.png", curves_c,
                       xlabel="cumulative carbon, paper accounting (g)",
                       ylabel="log10(max HV - HV)", logy=False)
  for name in ("cenas", "heuristic", "oracle"):
    if name in records:
      r = records[name][0]
      h = r["history"]
      plots.plot_allocation_vs_ci(workdir / f"allocation_{name}.png",
                                  np.arange(len(h["n_train"])), n_sampling=h["n_sample"],
                                  n_training=h["n_train"], ci_g_per_kwh=h["ci_g_per_kwh"])
  # Pareto front of what the first cenas (else first) run trained.
  name = "cenas" if "cenas" in records else next(iter(records))
  r = records[name][0]
  idx = np.asarray(r["evaluated"], dtype=np.int64)
  pos = np.searchsorted(inputs.problem.arch_index, idx)
  y = inputs.problem.y_true[pos]
  from cenas_jax.data.nasbench import load_nb201_table

  table = load_nb201_table()
  rows = [{"arch_index": int(i), "arch_str": str(table.arch_str[i]), "cifar10_test_acc_pct": float(a),
           "edgegpu_energy_mj": float(-e)} for i, (a, e) in zip(idx, y)]
  results.write_pareto_csv(workdir / "pareto.csv", rows,
                           objectives=("cifar10_test_acc_pct", "edgegpu_energy_mj"),
                           maximize=(True, False))


# ---------------------------------------------------------------------------------------------
# Agent pre-training across simulated episodes


def pretrain(config: ExperimentConfig, inputs: Inputs, workdir: Path) -> str:
  """Trains the ``cenas`` agent over random trace windows and regions before the search window;
  returns the directory of the trained parameters (reused on resume).

  Proposals are uniform random here (the agent learns the pool's dynamics, not LaMOO's), and an
  agent that reads forecast features is trained on the true next 24 h; at deployment
  ``--agent_ci_input`` decides whether it sees the truth or the trained forecaster's P50.
  """
  import jax
  import pandas as pd

  from cenas_jax.controller.allocation_agent import AgentStrategy, init_agent
  from cenas_jax.data import carbon_traces
  from cenas_jax.training.checkpoint import Checkpointer

  out = workdir / "agent_pretrained"
  with Checkpointer(out, max_to_keep=1) as ckpt:
    if ckpt.latest_step() == config.pretrain_episodes:
      return str(out)
  acfg = _agent_config(config, faithful=False)
  strategy = AgentStrategy(config=acfg, name="cenas")
  traces = []
  for region in config.pretrain_regions:
    tr = carbon_traces.region_trace(region, dataset=config.trace_dataset, column=config.ci_column)
    end = int((pd.Timestamp(config.pretrain_end) - tr.start) / pd.Timedelta(hours=1))
    traces.append((region, tr.values.astype(np.float64), end))
  scfg = config.search()
  rng = np.random.default_rng(12345)
  agent = init_agent(acfg, jax.random.key(12345))
  optimizer = search.RandomOptimizer()  # allocation dynamics only; LaMOO is not needed to learn them
  t0 = time.time()
  for ep in range(config.pretrain_episodes):
    region, ci, end = traces[rng.integers(len(traces))]
    hour0 = int(rng.integers(config.hours // 2 + 168, end - config.hours))
    strat = dataclasses.replace(strategy, init_params=agent)
    state = search.init_episode(inputs.problem, scfg, 10_000 + ep, strat)
    fc = (lambda t, ci=ci: ci[t: t + 24]) if acfg.use_forecast else None
    while state.hour < scfg.hours:
      state, _ = search.step_episode(state, inputs.problem, ci, hour0, strat, optimizer, scfg,
                                     forecast_fn=fc)
    agent = state.strategy_state
    if (ep + 1) % 5 == 0 or ep + 1 == config.pretrain_episodes:
      h = state.history
      print(f"  pretrain episode {ep + 1}/{config.pretrain_episodes} ({region}): mean n_train "
            f"{np.mean(h['n_train']):.2f}, final HV {h['hv'][-1] / inputs.problem.max_hv:.4f}, "
            f"paper carbon {search.carbon_curve(h, 'paper')[-1]:.0f} g; {time.time() - t0:.0f}s",
            flush=True)
  with Checkpointer(out, max_to_keep=1) as ckpt:
    ckpt.save(config.pretrain_episodes, agent, {"episodes": config.pretrain_episodes}, force=True)
  return str(out)


def _load_pretrained(pretrained_dir, config: ExperimentConfig, inputs: Inputs):
  if not pretrained_dir:
    return None
  import jax

  from cenas_jax.controller.allocation_agent import init_agent
  from cenas_jax.training.checkpoint import Checkpointer

  acfg = _agent_config(config, faithful=False)
  with Checkpointer(pretrained_dir, max_to_keep=1) as ckpt:
    return ckpt.restore(target=init_agent(acfg, jax.random.key(0))).state
