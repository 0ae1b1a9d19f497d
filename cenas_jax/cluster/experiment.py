"""The HW-NAS-Bench CE-NAS experiment: strategies x seeds on the simulated pool, resumable.

``run(config, workdir)`` runs every (strategy, seed) episode, checkpointing after every
simulated hour (``<workdir>/checkpoints/<episode>/``), storing each finished episode in
``<workdir>/episodes/<episode>.json``, and finally writing ``summary.json``, ``results.jsonl``,
``pareto.csv`` and the plots. Killing the process at any point and running the same command again
resumes from the last completed hour and ends with the same ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.cluster import search
from cenas_jax.cluster import strategies as strat_lib
from cenas_jax.cluster import summary as summary_lib
from cenas_jax.cluster.config import STRATEGIES, ExperimentConfig, OracleSchedule  # noqa: F401
from cenas_jax.cluster.config import REPORTED_TARGET, TARGET_KEY
from cenas_jax.cluster.problem import SearchProblem, hwnas_problem
from cenas_jax.errors import CenasError, ConfigError, DataError
from cenas_jax.fileio import atomic_write_json, atomic_write_text

# A strategy to run: its name, or one of the oracle's threshold schedules.
StrategySpec = str | OracleSchedule

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


def region_trace(config: ExperimentConfig, region: str, when: Any):
  """The shared trace of ``region`` for ``config.trace_dataset``; for ``electricitymaps``, which holds
  one file per year, the file of ``when``'s year."""
  import pandas as pd

  from cenas_jax.data import carbon_traces

  year = pd.Timestamp(when).year if config.trace_dataset == "electricitymaps" else None
  return carbon_traces.region_trace(region, dataset=config.trace_dataset, column=config.ci_column,
                                    year=year)


def trace_window(config) -> tuple[np.ndarray, Any, int, dict]:
  """The trace of ``config`` (``trace_path``, else ``region``'s shared trace) and the index of the
  window's first hour: ``(values g/kWh, trace start, hour0, trace info)``.

  Raises:
    ConfigError: ``start`` without a UTC offset, or a window of ``config.hours`` hours from
      ``start`` that the trace does not cover.
  """
  import pandas as pd

  from cenas_jax.data import carbon_traces

  if config.trace_path:
    # --ci_column picks a column of Electricity Maps files; other formats have one intensity column.
    fmt = carbon_traces.sniff_format(config.trace_path)
    trace = carbon_traces.load_trace(config.trace_path,
                                     column=config.ci_column if fmt == "electricitymaps" else None)
  else:
    trace = region_trace(config, config.region, config.start)
  start = pd.Timestamp(config.start)
  if start.tzinfo is None:
    raise ConfigError("start", f"{config.start!r} needs a UTC offset, e.g. 2021-07-02T06:00:00+00:00")
  hour0 = int((start - trace.start) / pd.Timedelta(hours=1))
  if hour0 < 0 or hour0 + config.hours > len(trace):
    raise ConfigError(
        "start", f"{config.start} with --hours={config.hours} is outside the trace {trace.path} "
        f"({trace.start} .. {trace.end})")
  return trace.values.astype(np.float64), trace.start, hour0, trace.to_dict()


@functools.lru_cache(maxsize=2)
def load_inputs(config: ExperimentConfig) -> Inputs:
  """The problem and trace for ``config`` (cached per process: workers run many episodes)."""
  from cenas_jax.data.nasbench import load_nb201_table

  table = load_nb201_table()
  problem = hwnas_problem(table, sampling=config.sampling, train_time_model=config.train_time_model)
  ci, trace_start, hour0, trace_info = trace_window(config)
  prov = table.provenance() if hasattr(table, "provenance") else {}
  return Inputs(problem=problem, ci_g_per_kwh=ci, trace_start=trace_start, hour0=hour0,
                trace_info=trace_info, table_provenance=prov)


def forecast_fn_for(config: ExperimentConfig, ci: np.ndarray, trace_start=None):
  """The next-24 h intensity a strategy sees from trace index t on.

  ``actual``: none (the agent sees only the current value, as the official code); ``perfect``: the
  true next 24 h; ``forecast``: the P50 of the trained forecaster in ``config.agent.forecaster_dir``,
  made from the 168 h before t (computed in batches and cached).
  """
  if config.agent.agent_ci_input == "perfect":
    return lambda t: ci[t: t + 24]
  if config.agent.agent_ci_input != "forecast":
    return None
  from cenas_jax.carbon.predict import ForecastCache

  return ForecastCache(config.agent.forecaster_dir, ci, trace_start)


# ---------------------------------------------------------------------------------------------
# Strategies


def _agent_config(config: ExperimentConfig, faithful: bool, frozen: bool = False):
  from cenas_jax.controller.allocation_agent import AgentConfig

  pool, agent = config.pool, config.agent
  # The official reward counts carbon in GPU-hours x gCO2/kWh; dividing our grams by the training
  # power (kW) and the PUE gives back that unit.
  power_kw = pool.train_power_w / 1000.0 * pool.pue
  if faithful:
    return AgentConfig(mode="faithful", n_gpus=pool.n_gpus, reward_gpu_power_kw=power_kw)
  if agent.agent_mode == "faithful":
    return AgentConfig(mode="faithful", n_gpus=pool.n_gpus, reward_gpu_power_kw=power_kw,
                       frozen=frozen, greedy=frozen and agent.agent_greedy)
  return AgentConfig(mode=agent.agent_mode, n_gpus=pool.n_gpus, release=agent.agent_release,
                     use_forecast=agent.agent_ci_input != "actual", frozen=frozen,
                     greedy=frozen and agent.agent_greedy,
                     entropy_weight=agent.agent_entropy_weight, beta_scale=agent.agent_beta_scale,
                     reward_gpu_power_kw=power_kw, reward_mode=agent.agent_reward,
                     action_mode=agent.agent_action, residual_base=agent.agent_residual_base,
                     carbon_price=agent.agent_carbon_price, n_step=agent.agent_n_step)


def spec_name(spec: StrategySpec) -> str:
  return spec.name if isinstance(spec, OracleSchedule) else spec


def make_strategy(spec: StrategySpec, config: ExperimentConfig, inputs: Inputs, pretrained=None):
  """Builds a strategy by name, or the oracle's threshold schedule ``spec``: it trains on
  ``n_clean`` GPUs in hours at or below the window's ``quantile`` of intensity and on ``n_dirty``
  otherwise (one GPU keeps sampling, the rest is released)."""
  n_gpus = config.pool.n_gpus
  if isinstance(spec, OracleSchedule):
    window = inputs.ci_g_per_kwh[inputs.hour0: inputs.hour0 + config.hours]
    return strat_lib.Threshold(float(np.quantile(window, spec.quantile)),
                               n_hi=min(spec.n_clean, n_gpus), n_lo=min(spec.n_dirty, n_gpus),
                               name=spec.name)
  name = spec
  if name == "vanilla":
    return strat_lib.Vanilla()
  if name == "oneshot":
    return strat_lib.OneShot()
  if name == "heuristic":
    return strat_lib.Heuristic(max_train=n_gpus - 1)
  if name == "fixed":
    return strat_lib.Fixed(1, n_gpus - 1)
  if name == "online_threshold":
    return strat_lib.OnlineThreshold()
  from cenas_jax.cluster.agent_strategy import AgentStrategy

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


def run_episode(spec: StrategySpec, seed: int, config: ExperimentConfig, inputs: Inputs,
                workdir: Path, pretrained=None, progress: bool = True) -> dict:
  """Runs (or resumes, or loads) one episode; returns its record with the hourly history."""
  from jax.flatten_util import ravel_pytree

  from cenas_jax.training.checkpoint import Checkpointer

  name = spec_name(spec)
  ep = episode_name(name, seed)
  done_path = workdir / "episodes" / f"{ep}.json"
  if done_path.exists():
    try:
      done = json.loads(done_path.read_text())
    except json.JSONDecodeError as e:
      raise DataError(f"{done_path}: damaged ({e}); delete it to rerun that episode.") from None
    if "final_eval_g" not in done:
      raise DataError(f"{done_path}: stored before the final-evaluation charge existed, so its carbon "
                      "figures are not comparable; use a new --workdir (or delete the episodes).")
    return {**done, "_loaded": True}
  strategy = make_strategy(spec, config, inputs, pretrained)
  scfg = config.search
  optimizer = config.lamoo.optimizer()
  fc = forecast_fn_for(config, inputs.ci_g_per_kwh, inputs.trace_start)
  ci_ref = ci_reference(config, name, inputs)
  ckpt_dir = workdir / "checkpoints" / ep
  t0 = time.time()
  with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
    state = search.init_episode(inputs.problem, scfg, seed, strategy)
    # Only a strategy that learns has a state worth saving every hour; it is saved as one flat
    # vector (one array is far cheaper for orbax than a few dozen small leaves).
    learns = strategy.learns
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


def oracle_names(config: ExperimentConfig) -> list[str]:
  """The names of the threshold schedules the oracle chooses from (with the whole trace known)."""
  return [s.name for s in config.oracle.schedules]


def _episode_jobs(config: ExperimentConfig) -> list[tuple[StrategySpec, int]]:
  jobs: list[tuple[StrategySpec, int]] = []
  for name in config.strategies:
    specs = config.oracle.schedules if name == "oracle" else (name,)
    jobs += [(spec, s) for s in config.seeds for spec in specs]
  return jobs


# Settings a finished study may change on a rerun: more seeds run only the new episodes (each
# episode is stored on its own), and the number of worker processes does not change results.
RESUMABLE_CHANGES = ("seeds", "workers")


def _write_config(workdir: Path, config: ExperimentConfig) -> None:
  new = config.to_json()
  new.pop("workers")
  atomic_write_json(workdir / "config.json", new)


def _worker(args):
  name, seed, config, workdir, pretrained_dir = args
  inputs = load_inputs(config)
  pretrained = _load_pretrained(pretrained_dir, config, inputs) if name == "cenas" else None
  return run_episode(name, seed, config, inputs, Path(workdir), pretrained)


def run(config: ExperimentConfig, workdir: str | os.PathLike[str]) -> dict:
  """Runs (or resumes) the experiment and writes its outputs; returns the summary."""
  from cenas_jax import results

  # Check the workdir and every input before the first write: a start that fails writes nothing.
  wd = results.prepare_workdir(workdir, config, kind="hwnas_search", may_change=RESUMABLE_CHANGES)
  workdir = wd.path
  inputs = load_inputs(config)
  if config.agent.agent_ci_input == "forecast" and "cenas" in config.strategies:
    from cenas_jax.carbon.forecaster_io import restore_forecaster

    try:  # a missing or corrupt forecaster fails here, not after the first episodes
      restore_forecaster(config.agent.forecaster_dir)
    except CenasError as e:
      raise ConfigError("forecaster_dir", str(e)) from None
  if wd.finished:
    print(f"{workdir} holds this study, finished with these settings: nothing to run. Its summary.json "
          "and plots are unchanged (use a new --workdir to run it again, or add --seeds to extend it).",
          flush=True)
    done = results.load_summary(workdir)
    done.pop("provenance", None)
    return done
  wd.claim()
  _write_config(workdir, config)
  print(f"problem {inputs.problem.name}: {inputs.problem.n} candidates, max HV "
        f"{inputs.problem.max_hv:.2f}; trace {inputs.trace_info.get('source')} from {config.start}, "
        f"{config.hours} h", flush=True)
  pretrained_dir = None
  if "cenas" in config.strategies and config.pretrain.pretrain_episodes > 0:
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
      what = ("finished earlier (loaded)" if outs[-1].get("_loaded") else
              f"final HV {outs[-1]['final_hv'] / inputs.problem.max_hv:.4f}; elapsed {el:.0f}s, "
              f"ETA {el / (i + 1) * (len(jobs) - i - 1):.0f}s")
      print(f"[{i + 1}/{len(jobs)}] {episode_name(spec_name(n), s)} {what}", flush=True)
  for r in outs:
    r.pop("_loaded", None)
  by_job = {(r["strategy"], r["seed"]): r for r in outs}
  records: dict[str, list[dict]] = {}
  for name in config.strategies:
    if name == "oracle":
      records[name] = [summary_lib.oracle_pick([by_job[(n, s)] for n in oracle_names(config)],
                                               config.oracle.oracle_accounting)
                       for s in config.seeds]
    else:
      records[name] = [by_job[(name, s)] for s in config.seeds]
  summary = summary_lib.summarize(records, config, inputs.problem.max_hv,
                                  bounds=clairvoyant_bounds(records, config, inputs))
  results.write_summary(workdir, summary, dict(
      seed=list(config.seeds), config=config.to_json(),
      data_hashes={"trace": inputs.trace_info.get("sha256"), **{
          k: v.get("sha256") for k, v in inputs.table_provenance.get("files", {}).items()}}, trace=inputs.trace_info,
      nb201_table=inputs.table_provenance, energy_source="table-hw-nas-bench-edgegpu_energy (objective); "
      "GPU power model for carbon (PoolConfig)", ci_source=inputs.trace_info.get("source"),
      sampling_source=inputs.problem.sampling_source))
  summary_lib.write_results_and_plots(records, config, inputs.problem, workdir)
  atomic_write_text(workdir / "summary.md", summary_lib.summary_markdown(summary, config))
  wd.finish()
  return summary


def clairvoyant_bounds(records: dict[str, list[dict]], config: ExperimentConfig,
                       inputs: Inputs) -> list[dict]:
  """Per seed, the least carbon any strategy could spend to reach ``TARGET_KEY`` of max HV
  (``cluster.bound``): the cheapest set to train beyond that seed's free initial architectures,
  trained in the window's cleanest GPU-hours."""
  from cenas_jax.cluster import bound
  from cenas_jax.cluster.config import TARGET_KEY

  problem, pool = inputs.problem, config.pool
  window = inputs.ci_g_per_kwh[inputs.hour0: inputs.hour0 + config.hours]
  first = next(iter(records.values()))
  out = []
  for rec in first:
    free = np.zeros(problem.n, dtype=bool)
    init = np.asarray(rec["evaluated"][: config.search.n_init], dtype=np.int64)
    free[np.searchsorted(problem.arch_index, init)] = True
    b = bound.min_train_time(problem.y_true, problem.train_time_s, free, problem.ref_point,
                             float(TARGET_KEY) * problem.max_hv)
    out.append({"seed": rec["seed"], "train_gpu_hours": b.train_s / 3600.0,
                "n_trained": int(np.sum(~free[b.plan])),
                "carbon_g": bound.carbon_floor_g(b.train_s, window, pool.n_gpus,
                                                 pool.train_power_w, pool.pue, pool.step_s)})
  return out


# ---------------------------------------------------------------------------------------------
# Agent pre-training across simulated episodes


def _pretrain_traces(config: ExperimentConfig) -> list[tuple[str, np.ndarray, int]]:
  """Per pre-training region: its trace of the year before ``pretrain_end`` and the index of
  ``pretrain_end`` in it (windows must end before it)."""
  import pandas as pd

  end_ts = pd.Timestamp(config.pretrain.pretrain_end)
  traces = []
  for region in config.pretrain.pretrain_regions:
    tr = region_trace(config, region, end_ts - pd.Timedelta(hours=1))  # the year of the hour before
    end = int((end_ts - tr.start) / pd.Timedelta(hours=1))
    traces.append((region, tr.values.astype(np.float64), end))
  return traces


def _pretrain_episode(config: ExperimentConfig, inputs: Inputs, strategy, optimizer, traces, rng,
                      seed: int):
  """One episode of ``strategy`` on a random pre-training window (region and start from ``rng``);
  returns the final episode state and the region."""
  region, ci, end = traces[rng.integers(len(traces))]
  hour0 = int(rng.integers(config.hours // 2 + 168, end - config.hours))
  fc = (lambda t: ci[t: t + 24]) if strategy.config.use_forecast else None
  state = search.init_episode(inputs.problem, config.search, seed, strategy)
  while state.hour < config.search.hours:
    state, _ = search.step_episode(state, inputs.problem, ci, hour0, strategy, optimizer,
                                   config.search, forecast_fn=fc)
  return state, region


def _pretrain_optimizer(config: ExperimentConfig):
  return (config.lamoo.optimizer() if config.pretrain.pretrain_optimizer == "lamoo"
          else search.RandomOptimizer())


def _train_draw(config: ExperimentConfig, inputs: Inputs, traces, seed: int, label: str):
  """Pre-trains one agent from ``seed`` (its windows and initial weights); returns its state."""
  import jax

  from cenas_jax.cluster.agent_strategy import AgentStrategy
  from cenas_jax.controller.allocation_agent import init_agent

  acfg = _agent_config(config, faithful=False)
  strategy = AgentStrategy(config=acfg, name="cenas")
  n_episodes = config.pretrain.pretrain_episodes
  rng = np.random.default_rng(seed)
  agent = init_agent(acfg, jax.random.key(seed))
  w0, w1 = acfg.entropy_weight, config.pretrain.pretrain_entropy_final
  optimizer = _pretrain_optimizer(config)
  t0 = time.time()
  for ep in range(n_episodes):
    ent = None if w1 < 0 else float(w0 + (w1 - w0) * ep / max(n_episodes - 1, 1))
    strat = dataclasses.replace(strategy, init_params=agent, entropy_weight=ent)
    state, region = _pretrain_episode(config, inputs, strat, optimizer, traces, rng, 10_000 + ep)
    agent = state.strategy_state
    if (ep + 1) % 5 == 0 or ep + 1 == n_episodes:
      h = state.history
      print(f"  pretrain{label} episode {ep + 1}/{n_episodes} ({region}): mean n_train "
            f"{np.mean(h['n_train']):.2f}, final HV {h['hv'][-1] / inputs.problem.max_hv:.4f}, "
            f"paper carbon {search.charged_g(state.ledger, 'paper'):.0f} g; "
            f"{time.time() - t0:.0f}s, ETA {(time.time() - t0) / (ep + 1) * (n_episodes - ep - 1):.0f}s",
            flush=True)
  return agent


def _validation_score_g(config: ExperimentConfig, inputs: Inputs, traces, agent) -> dict:
  """The deployed (frozen) agent on ``pretrain_validation_episodes`` pre-training windows, the same
  windows and episode seeds for every draw: per episode the carbon to the reported HV target under
  paper and full accounting, and the score, the median over episodes of their geometric mean (g;
  infinite for an episode that never reaches the target)."""
  from cenas_jax.cluster.agent_strategy import AgentStrategy

  strategy = AgentStrategy(config=_agent_config(config, False, frozen=True), init_params=agent,
                           name="cenas")
  rng = np.random.default_rng([config.pretrain.pretrain_seed, 1])  # apart from every draw's stream
  optimizer = _pretrain_optimizer(config)
  per_episode = []
  for i in range(config.pretrain.pretrain_validation_episodes):
    state, region = _pretrain_episode(config, inputs, strategy, optimizer, traces, rng, 20_000 + i)
    to = search.episode_record(state, inputs.problem, (REPORTED_TARGET,),
                               config.search.pool)["carbon_to_target_g"]
    per_episode.append({"region": region, **{acc: to[acc][TARGET_KEY] for acc in to}})
  gm = [np.inf if e["paper"] is None or e["full"] is None else float(np.sqrt(e["paper"] * e["full"]))
        for e in per_episode]
  return {"score_g": float(np.median(gm)), "episodes": per_episode}


def _best_draw(config: ExperimentConfig, inputs: Inputs, traces, workdir: Path):
  """Pre-trains ``pretrain_draws`` agents (seeds ``pretrain_seed`` on), validates each, writes the
  scores to ``pretrain_validation.json`` and returns the agent with the lowest score (ties: the
  first)."""
  pcfg = config.pretrain
  agents, report = [], []
  for d in range(pcfg.pretrain_draws):
    seed = pcfg.pretrain_seed + d
    label = f" (draw {d + 1}/{pcfg.pretrain_draws}, seed {seed})"
    agents.append(_train_draw(config, inputs, traces, seed, label))
    val = _validation_score_g(config, inputs, traces, agents[-1])
    print(f"  pretrain{label}: validation {val['score_g']:.0f} g (median over "
          f"{len(val['episodes'])} episodes of carbon to {TARGET_KEY}, paper x full, sqrt)",
          flush=True)
    report.append({"seed": seed, **val})
  best = int(np.argmin([r["score_g"] for r in report]))
  for r in report:  # JSON has no infinity: a draw that never reached the target scores null
    r["score_g"] = r["score_g"] if np.isfinite(r["score_g"]) else None
  atomic_write_json(workdir / "pretrain_validation.json",
                    {"deployed_seed": report[best]["seed"], "draws": report})
  return agents[best]


def pretrain(config: ExperimentConfig, inputs: Inputs, workdir: Path) -> str:
  """Trains the ``cenas`` agent over random trace windows and regions before the search window;
  returns the directory of the trained parameters (reused on resume).

  Proposals are uniform random (``pretrain_optimizer="random"``: the agent learns the pool's
  dynamics only) or the search's own LaMOO; an agent that reads forecast features is trained on the
  true next 24 h; at deployment ``--agent_ci_input`` decides whether it sees the truth or the trained
  forecaster's P50. With ``pretrain_draws`` = k > 1, k agents are trained (seeds ``pretrain_seed``
  .. + k - 1) and the one with the lowest validation score (``_validation_score_g``, windows of
  the pre-training period only, never the search window) is deployed; the scores are written to
  ``pretrain_validation.json``.
  """
  from cenas_jax.training.checkpoint import Checkpointer

  out = workdir / "agent_pretrained"
  with Checkpointer(out, max_to_keep=1) as ckpt:
    if ckpt.latest_step() == config.pretrain.pretrain_episodes:
      return str(out)
  pcfg = config.pretrain
  traces = _pretrain_traces(config)
  agent = (_train_draw(config, inputs, traces, pcfg.pretrain_seed, "") if pcfg.pretrain_draws == 1
           else _best_draw(config, inputs, traces, workdir))
  with Checkpointer(out, max_to_keep=1) as ckpt:
    ckpt.save(pcfg.pretrain_episodes, agent, {"episodes": pcfg.pretrain_episodes}, force=True)
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
