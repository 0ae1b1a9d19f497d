"""CE-NAS on CIFAR-10: ``run(config, workdir)`` behind ``python -m experiments.cifar_search``.

One search episode of the cluster's loop (``cluster.search``, the same loop as the HW-NAS-Bench
study) on the open DARTS problem (``cifar_nas.problem``):

1. price the devices: the predicted time and energy of a training step of the standalone recipe and
   of the supernet (kernel energy model on the steps' HLO, ``energy_device``), which give the pool's
   power per role and the time to score a proposal;
2. train the supernet (SPOS; few-shot split as an option), checkpointed, charged as sampling work
   at the first hour's intensity;
3. hour by hour: the strategy splits ``n_gpus`` between sampling (LaMOO proposals scored by the
   supernet) and evaluation (training from scratch, run as jobs on the backend), the ledger charges
   every device-second at the hour's intensity; a checkpoint after every hour;
4. outputs: ``summary.json`` (the Pareto set with genotype, parameters, accuracy, energy, carbon,
   GPU-hours and where each number comes from), ``results.jsonl``, ``pareto.csv``, figures, and
   every Pareto architecture exported (``training.export.load_network`` loads it in one call).

Kill the process at any moment and rerun the same command: it continues from the last hour (the
supernet, the candidates and their scores, the queue, the running trainings from their own
checkpoints, the agent and the ledger) and, with the replay clock, ends with the same
``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import results
from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.cifar_nas import jobs as jobs_lib
from cenas_jax.cifar_nas import multihost, outputs, sampling
from cenas_jax.cifar_nas.config import CifarSearchConfig
from cenas_jax.cifar_nas.problem import CifarProblem
from cenas_jax.cluster import clock as clock_lib
from cenas_jax.cluster import experiment as hw_experiment
from cenas_jax.cluster import search
from cenas_jax.cluster.config import ExperimentConfig
from cenas_jax.cluster.pool import PoolConfig
from cenas_jax.errors import ConfigError
from cenas_jax.fileio import atomic_write_json
from cenas_jax.config_tree import flat_config
from cenas_jax.spaces import darts as space

KIND = "cifar_search"
# Settings a resume may change: where the jobs run does not change what they compute.
RESUMABLE_CHANGES = ("backend", "ray_address", "n_devices", "devices_per_job", "pace_wall_s",
                     "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Inputs:
  ci_g_per_kwh: np.ndarray
  trace_start: Any
  hour0: int
  trace_info: dict
  split: jobs_lib.Split
  include: tuple[space.Genotype, ...]


def _genotype(name: str) -> space.Genotype:
  if name in space.GENOTYPES:
    return space.GENOTYPES[name]
  path = Path(name).expanduser()
  if path.suffix == ".json" and path.is_file():
    return space.Genotype.from_json(path.read_text(encoding="utf-8"))
  raise ConfigError("include_genotypes", f"{name!r} is neither a published cell "
                    f"({', '.join(sorted(space.GENOTYPES))}) nor a genotype JSON file")


def load_inputs(config: CifarSearchConfig) -> Inputs:
  """Everything that can fail on bad input, before the first write."""
  include = tuple(_genotype(n) for n in config.include_genotypes)
  if config.live_zone:
    from cenas_jax.data.live_intensity import TOKEN_ENV, ElectricityMapsClient

    if not ElectricityMapsClient(config.live_zone).available:
      raise ConfigError("live_zone", f"needs an Electricity Maps token in {TOKEN_ENV}")
    # Filled hour by hour from the live readings (the history a strategy sees starts at hour 0).
    ci, trace_start, hour0 = np.full(config.hours, np.nan), config.start, 0
    info = {"source": f"electricitymaps-live:{config.live_zone}"}
  else:
    ci, trace_start, hour0, info = hw_experiment.trace_window(config)
  try:
    split = jobs_lib.load_split(jobs_lib.resolve(config.data))
  except ValueError as e:
    raise ConfigError("train_images", str(e)) from None
  recipe = config.network.recipe()
  if len(split.train.x_train) < recipe.batch_size:
    raise ConfigError("train_images", f"{len(split.train.x_train)} images are fewer than one batch "
                      f"of --batch_size={recipe.batch_size}")
  need = config.supernet.calib_batches * config.supernet.supernet_batch_size
  if len(split.x_valid) < 1 or len(split.train.x_train) < need:
    raise ConfigError("valid_images", "the supernet's scores need held-out images (--valid_images "
                      f">= 1) and {need} training images for BatchNorm recalibration")
  return Inputs(ci, trace_start, hour0, info, split, include)


def _experiment_config(config: CifarSearchConfig, pool: PoolConfig) -> ExperimentConfig:
  """The HW-NAS-Bench study's config with this search's settings: its strategies, agent and
  pre-training are reused as they are."""
  scfg = search.SearchConfig(hours=config.hours, n_init=config.n_init, pool=pool,
                             history_hours=config.history_hours,
                             reward_accounting=config.reward_accounting)
  return ExperimentConfig(strategies=(config.strategy,), seeds=(config.seed,), region=config.region,
                          trace_dataset=config.trace_dataset, ci_column=config.ci_column,
                          trace_path=config.trace_path, start=config.start, search=scfg,
                          lamoo=config.lamoo, agent=config.agent, pretrain=config.pretrain)


# ---------------------------------------------------------------------------------------------
# The run


def run(config: CifarSearchConfig, workdir: str | os.PathLike[str], *, backend=None,
        score_fn=None, clock=None, live=None, log=print) -> dict | None:
  """Runs (or resumes) the search and writes its outputs; returns the summary.

  ``backend``, ``score_fn``, ``clock`` and ``live`` (an ``ElectricityMapsClient``) replace the
  configured backend, the supernet's scores, the clock and the live intensity source (tests).
  On many hosts (``config.coordinator_address``) process 0 runs the search and returns the
  summary; the others train and score the supernet with it and return ``None``
  (``cifar_nas.multihost``).
  """
  from cenas_jax.training import mesh as mesh_lib

  multihost.join(config.coordinator_address, config.num_processes, config.process_id)
  if mesh_lib.process_count() == 1:
    return _run(config, workdir, backend, score_fn, clock, live, log, channel=None)
  if not mesh_lib.is_main_process():
    multihost.follow(config, workdir, log)
    return None
  channel = multihost.Channel()
  try:
    summary = _run(config, workdir, backend, score_fn, clock, live, log, channel=channel)
  except BaseException as e:
    channel.post("stop", error=f"{type(e).__name__}: {e}")  # the followers exit instead of waiting
    raise
  channel.post("stop")
  return summary


def _run(config: CifarSearchConfig, workdir, backend, score_fn, clock, live, log, *,
         channel: multihost.Channel | None) -> dict:
  from cenas_jax.cluster import backends as backends_lib

  wd = results.prepare_workdir(workdir, config, kind=KIND, may_change=RESUMABLE_CHANGES)
  workdir = wd.path
  inputs = load_inputs(config)
  if config.clock == "wall" and not wd.resumed and clock is None and time.time() - unix_time(config.start) > 3600:
    raise ConfigError("start", f"{config.start} is past: --clock=wall runs in real time from --start "
                      "(give the coming hour, or use --clock=replay to replay a trace)")
  if wd.finished:
    log(f"{workdir} holds this search, finished with these settings: nothing to run (use a new "
        "--workdir to run it again).")
    done = results.load_summary(workdir)
    done.pop("provenance", None)
    return done
  sampling.supernet_mesh(config)  # a device count the machine lacks fails here, before the first write
  own_backend = backend is None
  if own_backend:
    # With Ray, --n_devices only sizes the local supernet's mesh; Ray places the jobs.
    local_n = config.n_devices or None if config.backend == "local" else None
    backend = backends_lib.make_backend(config.backend, n_devices=local_n,
                                        ray_address=config.ray_address,
                                        devices_per_job=config.devices_per_job)
  try:
    wd.claim()
    atomic_write_json(workdir / "config.json", flat_config(config))
    if config.live_zone and live is None:
      from cenas_jax.data.live_intensity import ElectricityMapsClient

      live = ElectricityMapsClient(config.live_zone)
    summary = _search(config, workdir, inputs, backend, score_fn, clock, live, log, channel)
  finally:
    if own_backend:
      backend.close()
  wd.finish()
  return summary


def _search(config, workdir: Path, inputs: Inputs, backend, score_fn, clock, live, log,
            channel: multihost.Channel | None = None) -> dict:
  from jax.flatten_util import ravel_pytree

  from cenas_jax.training.checkpoint import Checkpointer

  t0 = time.time()
  recipe = config.network.recipe()
  prices = sampling.device_prices(config, workdir)
  if clock is None:
    clock = (clock_lib.ReplayClock(config.hour_s, config.pace_wall_s) if config.clock == "replay"
             else clock_lib.WallClock(start_unix=unix_time(config.start)))
  pool = PoolConfig(n_gpus=config.n_gpus, step_s=clock.hour_s, queue_capacity=config.queue_capacity,
                    sample_time_s=prices["score_time_s"], train_power_w=prices["train_power_w"],
                    sample_power_w=prices["sample_power_w"], idle_power_w=config.idle_power_w,
                    pue=config.pue, switch_overhead_s=config.switch_overhead_s,
                    screen_per_gpu_hour=config.screen_per_gpu_hour)
  exp_cfg = _experiment_config(config, pool)
  log(f"prices ({prices['source']}): training step {prices['train_step']['time_s'] * 1e3:.2f} ms "
      f"at {pool.train_power_w:.0f} W, scoring a proposal {pool.sample_time_s * 1e3:.1f} ms; "
      f"one trace hour = {clock.hour_s:g} device-seconds ({clock.name} clock)")

  supernet_steps = 0
  if score_fn is None:
    mesh = sampling.supernet_mesh(config)
    if channel is not None:
      channel.post("supernet")  # the other processes train and score it with this one
    nets, supernet_steps = sampling.train_supernets(config, inputs.split, workdir, mesh, log)
    score_fn = multihost.leading(channel, sampling.make_score_fn(config, inputs.split, nets, mesh))
  data_spec = jobs_lib.resolve(config.data)
  steps_per_epoch = len(inputs.split.train.x_train) // recipe.batch_size

  def run_jobs(jobs):
    futures = [backend.submit(jobs_lib.train_job, job, data_spec, recipe) for job in jobs]
    return [f.result() for f in futures]

  problem = CifarProblem(
      init_channels=recipe.init_channels, layers=recipe.layers,
      total_steps=recipe.epochs * steps_per_epoch, candidates_per_hour=config.candidates_per_hour,
      seed=config.seed, jobs_dir=str(workdir / "jobs"), score_fn=score_fn,
      cost_fn=functools.partial(sampling.step_cost, recipe=recipe, device=config.energy_device),
      run_jobs=run_jobs, include=inputs.include, objectives=config.objectives,
      energy_fn=functools.partial(sampling.inference_cost, recipe=recipe,
                                  batch_size=config.inference_batch, device=config.energy_device))

  pretrained = None
  if config.strategy == "cenas" and config.pretrain.pretrain_episodes > 0:
    pretrained = _pretrained_agent(exp_cfg, workdir, inputs, log)
  hw_inputs = hw_experiment.Inputs(problem=problem, ci_g_per_kwh=inputs.ci_g_per_kwh,
                                   trace_start=inputs.trace_start, hour0=inputs.hour0,
                                   trace_info=inputs.trace_info, table_provenance={})
  strategy = hw_experiment.make_strategy(config.strategy, exp_cfg, hw_inputs, pretrained)
  optimizer = config.lamoo.optimizer()
  fc = hw_experiment.forecast_fn_for(exp_cfg, inputs.ci_g_per_kwh, inputs.trace_start)
  ci_ref = hw_experiment.ci_reference(exp_cfg, config.strategy, hw_inputs)
  scfg = exp_cfg.search
  ci = inputs.ci_g_per_kwh

  with Checkpointer(workdir / "checkpoints", max_to_keep=2) as ckpt:
    learns = strategy.learns
    if ckpt.latest_step() is None:
      state = search.init_episode(problem, scfg, config.seed, strategy)
      if live is not None:
        ci[0] = live.latest().ci_g_per_kwh
      # The supernet's training is sampling work, charged at the first hour's intensity.
      if supernet_steps:
        state.ledger = ledger_lib.ledger_add(
            state.ledger, t_start_s=0.0, duration_s=supernet_steps * prices["supernet_step"]["time_s"],
            kind=ledger_lib.SAMPLING, ci_g_per_kwh=float(ci[inputs.hour0]), n_gpus=1,
            power_w=pool.sample_power_w, pue=pool.pue, tag="supernet")
      per_arch = {}
      _save(ckpt, state, problem, per_arch, learns)
    # A new run saved its initial state above and continues from it exactly as a resumed run does.
    flat0, unravel = (ravel_pytree(strategy.init(_key0()))[0:2] if learns else (None, None))
    restored = ckpt.restore(target={"flat": flat0} if learns else {})
    side = restored.side_state
    problem.load_state_dict(side["problem"])
    per_arch = {int(k): v for k, v in side["per_arch"].items()}
    sstate = unravel(restored.state["flat"]) if learns else strategy.init(_key0())
    state = search.EpisodeState.from_dict(side["episode"], sstate)
    if live is not None:  # the readings of the hours done are in the history
      ci[:state.hour] = state.history.get("ci_g_per_kwh", [])[:state.hour]
    if state.hour:
      log(f"resumed after hour {state.hour} from {workdir / 'checkpoints'}")
    started, hour_at_start, t_loop = clock.now(), state.hour, time.time()
    while state.hour < scfg.hours:
      clock.wait_until(state.hour, hour_at_start, started)
      hour = state.hour
      if live is not None and np.isnan(ci[hour]):
        ci[hour] = live.latest().ci_g_per_kwh
      state, info = search.step_episode(state, problem, ci, inputs.hour0, strategy, optimizer, scfg,
                                        forecast_fn=fc, ci_ref=ci_ref)
      _charge_archs(per_arch, info["report"], hour, float(ci[inputs.hour0 + hour]), pool)
      _save(ckpt, state, problem, per_arch, learns)
      _progress(log, state, info, config, problem, inputs, t_loop, hour_at_start)
  return outputs.write_outputs(config, workdir, state, problem, per_arch, inputs, prices, pool,
                               backend, time.time() - t0)


def _key0():
  import jax

  return jax.random.key(0)


def unix_time(iso: str) -> float:
  """Seconds since the epoch of an ISO 8601 time with an offset (``--start``)."""
  import datetime as dt

  return dt.datetime.fromisoformat(iso).timestamp()


def _save(ckpt, state, problem, per_arch, learns) -> None:
  from jax.flatten_util import ravel_pytree

  saved = {"flat": ravel_pytree(state.strategy_state)[0]} if learns else {}
  ckpt.save(state.hour, saved, {"episode": state.to_dict(), "problem": problem.state_dict(),
                                "per_arch": {str(k): v for k, v in per_arch.items()}}, force=True)


def _charge_archs(per_arch: dict, report, hour: int, ci_g_per_kwh: float, pool: PoolConfig) -> None:
  """Each candidate's own training energy and carbon: its stretches at the hours they ran."""
  for seg in report.segments:
    rec = per_arch.setdefault(seg.candidate, {"train_s": 0.0, "energy_j": 0.0, "carbon_g": 0.0})
    e_j = (seg.end_s - seg.start_s) * pool.train_power_w * pool.pue
    rec["train_s"] += seg.end_s - seg.start_s
    rec["energy_j"] += e_j
    rec["carbon_g"] += e_j / 3.6e6 * ci_g_per_kwh


def _progress(log, state, info, config, problem, inputs, t_loop, hour0) -> None:
  import pandas as pd

  h = state.history
  alloc = info["alloc"]
  done = state.hour - hour0
  el = time.time() - t_loop
  eta = el / max(done, 1) * (config.hours - state.hour)
  when = pd.Timestamp(inputs.trace_start) + pd.Timedelta(hours=inputs.hour0 + state.hour - 1)
  full = search.charged_g(state.ledger, "full")
  log(f"hour {state.hour}/{config.hours} [{when:%Y-%m-%d %H:%M} UTC, {h['ci_g_per_kwh'][-1]:.0f} "
      f"g/kWh]: {alloc.n_train} train, {alloc.n_sample} sample, "
      f"{config.n_gpus - alloc.n_train - alloc.n_sample} released; queue "
      f"{len(state.pool.queue) + len(state.pool.halfwork)}; trained {len(state.evaluated)}; HV "
      f"{h['hv'][-1] / problem.max_hv:.4f} of the bound; carbon {full:.3g} g (full); "
      f"elapsed {el:.0f} s, ETA {eta:.0f} s")


def _pretrained_agent(exp_cfg: ExperimentConfig, workdir: Path, inputs: Inputs, log):
  """The ``cenas`` agent pre-trained on the HW-NAS-Bench simulator (the pool's dynamics with the
  NB201 table, real traces before ``pretrain_end``), as the HW-NAS-Bench study does; the simulator
  counts time in real seconds, so its hour is 3600 s whatever this search's clock."""
  from cenas_jax.cluster.problem import hwnas_problem
  from cenas_jax.data.nasbench import load_nb201_table

  pool = dataclasses.replace(exp_cfg.pool, step_s=3600.0, sample_time_s=60.0)
  sim_cfg = dataclasses.replace(exp_cfg, search=dataclasses.replace(exp_cfg.search, pool=pool))
  table_problem = hwnas_problem(load_nb201_table(), sampling="fewshot")
  sim_inputs = hw_experiment.Inputs(problem=table_problem, ci_g_per_kwh=inputs.ci_g_per_kwh,
                                    trace_start=inputs.trace_start, hour0=inputs.hour0,
                                    trace_info=inputs.trace_info, table_provenance={})
  log(f"pre-training the allocation agent on {exp_cfg.pretrain.pretrain_episodes} simulated "
      "HW-NAS-Bench episodes")
  path = hw_experiment.pretrain(sim_cfg, sim_inputs, workdir)
  return hw_experiment._load_pretrained(path, sim_cfg, sim_inputs)  # pylint: disable=protected-access
