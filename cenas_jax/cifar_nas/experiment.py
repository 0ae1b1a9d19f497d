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
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import plots, results
from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.cifar_nas import jobs as jobs_lib
from cenas_jax.cifar_nas.config import CifarSearchConfig
from cenas_jax.cifar_nas.problem import CifarProblem, StepCost
from cenas_jax.cluster import clock as clock_lib
from cenas_jax.cluster import experiment as hw_experiment
from cenas_jax.cluster import search
from cenas_jax.cluster.config import ExperimentConfig
from cenas_jax.cluster.pool import PoolConfig
from cenas_jax.errors import CenasError, ConfigError, DataError
from cenas_jax.fileio import atomic_write_json, atomic_write_text
from cenas_jax.spaces import darts as space

KIND = "cifar_search"
# Settings a resume may change: where the jobs run does not change what they compute.
RESUMABLE_CHANGES = ("backend", "ray_address", "n_devices", "devices_per_job", "pace_wall_s")
LBS_PER_G = 1.0 / 453.59237


@dataclasses.dataclass(frozen=True)
class Inputs:
  ci_g_per_kwh: np.ndarray
  trace_start: Any
  hour0: int
  trace_info: dict
  split: jobs_lib.Split
  include: tuple[space.Genotype, ...]


def _resolve_data(config: CifarSearchConfig) -> jobs_lib.DataSpec:
  spec = config.data
  if spec.path.startswith("shared:"):
    from cenas_jax.data.paths import shared_data_dir

    spec = dataclasses.replace(spec, path=str(shared_data_dir() / spec.path[len("shared:"):]))
  return spec


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
    split = jobs_lib.load_split(_resolve_data(config))
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
# Device prices


def _step_cost(genotype: space.Genotype, recipe, device: str) -> StepCost:
  from cenas_jax.training import cifar

  e = cifar.train_step_energy(genotype, recipe, device)
  return StepCost(time_s=float(e["time_s"]), energy_j=float(e["energy_j"]), source=e["energy_source"])


def device_prices(config: CifarSearchConfig, workdir: Path) -> dict:
  """Predicted step costs of the reference cell (DARTS_V2) under the standalone and the supernet
  recipes on ``energy_device``, and what the pool derives from them (cached in ``prices.json``).

  A supernet path costs about what the same cell costs standalone at the supernet's shape (one path
  runs per step); scoring a proposal runs forward passes over ``calib_batches`` batches and the
  held-out images, priced at a third of a training step per image (forward only; an estimate).
  """
  path = workdir / "prices.json"
  if path.exists():
    return json.loads(path.read_text())
  ref = space.GENOTYPES["DARTS_V2"]
  train = _step_cost(ref, config.network.recipe(), config.energy_device)
  srec = config.supernet.recipe()
  sup = _step_cost(ref, srec, config.energy_device)
  images = config.supernet.calib_batches * srec.batch_size + config.valid_images
  score_s = images / srec.batch_size * sup.time_s / 3.0
  out = {"device": config.energy_device, "source": train.source,
         "train_step": dataclasses.asdict(train), "supernet_step": dataclasses.asdict(sup),
         "train_power_w": train.energy_j / train.time_s, "sample_power_w": sup.energy_j / sup.time_s,
         "score_time_s": score_s}
  atomic_write_json(path, out)
  return out


# ---------------------------------------------------------------------------------------------
# The sampling side


def supernet_mesh(config: CifarSearchConfig):
  """The devices the supernet trains and scores on, data-parallel: the first ``n_devices`` local
  devices (all when 0)."""
  import jax

  from cenas_jax.training import mesh as mesh_lib

  devices = jax.local_devices()
  n = config.n_devices or len(devices)
  if n > len(devices):
    raise ConfigError("n_devices", f"{n} devices asked, this machine has {len(devices)} "
                      f"({devices[0].platform})")
  if config.supernet.supernet_batch_size % n:
    raise ConfigError("supernet_batch_size", f"{config.supernet.supernet_batch_size} is not a "
                      f"multiple of the {n} devices the supernet is data-parallel over")
  return mesh_lib.make_data_mesh(devices=devices[:n])


def _supernet_recipe(config: CifarSearchConfig, mesh):
  n = mesh.devices.size
  per_batch = min(500, config.valid_images)
  return dataclasses.replace(config.supernet.recipe(), eval_batch_size=-(-per_batch // n) * n)


def _train_supernets(config: CifarSearchConfig, split: jobs_lib.Split, workdir: Path, mesh, log):
  from cenas_jax.training import supernet as sup

  recipe = _supernet_recipe(config, mesh)
  data = split.train
  one = sup.train_supernet(data, recipe, seed=config.seed, workdir=workdir / "supernet", mesh=mesh,
                           log=lambda line: log(f"  supernet {line}"))
  nets = [one]
  if config.supernet.few_shot:
    nets = sup.train_few_shot(data, one, recipe, seed=config.seed, workdir=workdir / "supernet_split",
                              mesh=mesh, log=lambda line: log(f"  few-shot {line}"))
  from cenas_jax.supernets.darts import N_OPS

  per_net = recipe.epochs * (len(data.x_train) // recipe.batch_size)
  return nets, per_net * (1 + (N_OPS if config.supernet.few_shot else 0))


def make_score_fn(config: CifarSearchConfig, split: jobs_lib.Split, nets, mesh):
  from cenas_jax.supernets import darts as sn
  from cenas_jax.training import supernet as sup

  scorer = sup.Scorer(_supernet_recipe(config, mesh), split.train.x_train, split.x_valid,
                      split.y_valid, calib_batches=config.supernet.calib_batches, mesh=mesh)

  def score_fn(genotypes):
    return scorer.score_many(nets if len(nets) > 1 else nets[0], [sn.arch_of(g) for g in genotypes])

  return score_fn


# ---------------------------------------------------------------------------------------------
# The run


def run(config: CifarSearchConfig, workdir: str | os.PathLike[str], *, backend=None,
        score_fn=None, clock=None, live=None, log=print) -> dict:
  """Runs (or resumes) the search and writes its outputs; returns the summary.

  ``backend``, ``score_fn``, ``clock`` and ``live`` (an ``ElectricityMapsClient``) replace the
  configured backend, the supernet's scores, the clock and the live intensity source (tests).
  """
  from cenas_jax.cluster import backends as backends_lib

  wd = results.prepare_workdir(workdir, config, kind=KIND, may_change=RESUMABLE_CHANGES)
  workdir = wd.path
  inputs = load_inputs(config)
  if config.clock == "wall" and not wd.resumed and clock is None and time.time() - _start_unix(config) > 3600:
    raise ConfigError("start", f"{config.start} is past: --clock=wall runs in real time from --start "
                      "(give the coming hour, or use --clock=replay to replay a trace)")
  if wd.finished:
    log(f"{workdir} holds this search, finished with these settings: nothing to run (use a new "
        "--workdir to run it again).")
    done = results.load_summary(workdir)
    done.pop("provenance", None)
    return done
  supernet_mesh(config)  # a device count the machine lacks fails here, before the first write
  own_backend = backend is None
  if own_backend:
    # With Ray, --n_devices only sizes the local supernet's mesh; Ray places the jobs.
    local_n = config.n_devices or None if config.backend == "local" else None
    backend = backends_lib.make_backend(config.backend, n_devices=local_n,
                                        ray_address=config.ray_address,
                                        devices_per_job=config.devices_per_job)
  try:
    wd.claim()
    atomic_write_json(workdir / "config.json", workdir_config(config))
    if config.live_zone and live is None:
      from cenas_jax.data.live_intensity import ElectricityMapsClient

      live = ElectricityMapsClient(config.live_zone)
    summary = _search(config, workdir, inputs, backend, score_fn, clock, live, log)
  finally:
    if own_backend:
      backend.close()
  wd.finish()
  return summary


def workdir_config(config: CifarSearchConfig) -> dict:
  from cenas_jax.workdir import flat_config

  return flat_config(config)


def _search(config, workdir: Path, inputs: Inputs, backend, score_fn, clock, live, log) -> dict:
  from jax.flatten_util import ravel_pytree

  from cenas_jax.training.checkpoint import Checkpointer

  t0 = time.time()
  recipe = config.network.recipe()
  prices = device_prices(config, workdir)
  if clock is None:
    clock = (clock_lib.ReplayClock(config.hour_s, config.pace_wall_s) if config.clock == "replay"
             else clock_lib.WallClock(start_unix=_start_unix(config)))
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
    mesh = supernet_mesh(config)
    nets, supernet_steps = _train_supernets(config, inputs.split, workdir, mesh, log)
    score_fn = make_score_fn(config, inputs.split, nets, mesh)
  data_spec = _resolve_data(config)
  steps_per_epoch = len(inputs.split.train.x_train) // recipe.batch_size

  def run_jobs(jobs):
    futures = [backend.submit(jobs_lib.train_job, job, data_spec, recipe) for job in jobs]
    return [f.result() for f in futures]

  problem = CifarProblem(
      init_channels=recipe.init_channels, layers=recipe.layers,
      total_steps=recipe.epochs * steps_per_epoch, candidates_per_hour=config.candidates_per_hour,
      seed=config.seed, jobs_dir=str(workdir / "jobs"), score_fn=score_fn,
      cost_fn=functools.partial(_step_cost, recipe=recipe, device=config.energy_device),
      run_jobs=run_jobs, include=inputs.include)

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
  return _write_outputs(config, workdir, state, problem, per_arch, inputs, prices, pool, backend,
                        time.time() - t0)


def _key0():
  import jax

  return jax.random.key(0)


def _start_unix(config) -> float:
  return dt_timestamp(config.start)


def dt_timestamp(iso: str) -> float:
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


# ---------------------------------------------------------------------------------------------
# Outputs


def _write_outputs(config, workdir: Path, state, problem: CifarProblem, per_arch, inputs, prices,
                   pool: PoolConfig, backend, wall_s: float) -> dict:
  from cenas_jax.moo.pareto import non_dominated_mask

  record = search.episode_record(state, problem, (0.25, 0.5, 0.75), pool.step_s)
  evaluated = np.asarray(state.evaluated, dtype=np.int64)
  y = problem.y_true[evaluated]
  front = evaluated[non_dominated_mask(y)]
  recipe = config.network.recipe()
  rows = []
  for c in evaluated:
    cost = problem.step_cost(int(c))
    arch = per_arch.get(int(c), {})
    train_energy_j = problem.total_steps * cost.energy_j
    rows.append({
        "candidate": int(c), "pareto": bool(c in front),
        "initial": bool(c in evaluated[:config.n_init]),
        "cifar10_test_acc_pct": float(problem.y_true[c, 0]),
        "params_m": float(problem.params_m[c]),
        "supernet_acc_pct": None if np.isnan(problem.y_pred[c, 0]) else float(problem.y_pred[c, 0]),
        "train_energy_kwh": train_energy_j / 3.6e6,
        "train_gpu_hours": problem.total_steps * cost.time_s / 3600.0,
        "carbon_g": arch.get("carbon_g"),
        "carbon_lbs": None if arch.get("carbon_g") is None else arch["carbon_g"] * LBS_PER_G,
        "genotype": problem.genotype(int(c)).to_json(),
    })
  exported = _export(workdir, problem, front, config, recipe, backend)
  totals = {acc: ledger_lib.totals(state.ledger, acc) for acc in ledger_lib.POLICIES}
  summary = {
      "problem": problem.name, "strategy": config.strategy, "seed": config.seed,
      "hours": state.hour, "n_gpus": config.n_gpus, "clock": config.clock,
      "device_seconds_per_hour": pool.step_s,
      "n_trained": len(evaluated), "n_scored": int(np.sum(~np.isnan(problem.y_pred[:, 0]))),
      "n_candidates": problem.n,
      "final_hv_of_bound": record["final_hv"] / problem.max_hv,
      "carbon_g": {acc: float(t.carbon_g) for acc, t in totals.items()},
      "carbon_lbs": {acc: float(t.carbon_g) * LBS_PER_G for acc, t in totals.items()},
      "energy_kwh": {acc: float(t.energy_j) / 3.6e6 for acc, t in totals.items()},
      "gpu_hours": record["gpu_hours"],
      "pareto": [dict(r, exported=exported.get(r["candidate"])) for r in rows if r["pareto"]],
      "provenance_of_numbers": {
          "cifar10_test_acc_pct": f"trained from scratch ({recipe.epochs} epochs, {recipe.init_channels} "
                                  f"channels, {recipe.layers} cells) on {len(inputs.split.train.x_train)} "
                                  f"training images of {inputs.split.source}, tested on "
                                  f"{len(inputs.split.train.x_test)} test images; backend "
                                  f"{backend.name}",
          "params_m": "exact count of the standalone network (spaces.darts.count_params)",
          "supernet_acc_pct": "supernet path accuracy on held-out training images, BatchNorm "
                              "recalibrated",
          "energy_kwh": f"{prices['source']}: step energy of the kernel model on the step's HLO "
                        "(a prediction, not a measurement)",
          "gpu_hours": f"{prices['source']}: predicted device time",
          "carbon_g": "predicted energy x PUE x the hour's intensity of "
                      f"{inputs.trace_info.get('source', inputs.trace_info.get('path'))}",
      },
  }
  rows_h = []
  h = state.history
  curves = search.record_carbon_curves(record)
  for t in range(len(h["n_train"])):
    rows_h.append({"hour": t + 1, "hv_of_bound": h["hv"][t + 1] / problem.max_hv,
                   "n_train": h["n_train"][t], "n_sample": h["n_sample"][t],
                   "ci_g_per_kwh": h["ci_g_per_kwh"][t], "n_finished": h["n_finished"][t],
                   "n_scored": h["n_scored"][t],
                   "carbon_g_paper_cum": float(curves["paper"][t]),
                   "carbon_g_full_cum": float(curves["full"][t])})
  results.rewrite_results(workdir, rows_h)
  results.write_pareto_csv(workdir / "pareto.csv",
                           [{k: v for k, v in r.items() if k not in ("genotype", "pareto")} for r in rows],
                           objectives=("cifar10_test_acc_pct", "params_m"), maximize=(True, False))
  results.write_summary(workdir, summary, dict(
      seed=config.seed, config=workdir_config(config), trace=inputs.trace_info,
      energy_source=prices["source"], ci_source=inputs.trace_info.get("source"),
      data_hashes={"trace": inputs.trace_info.get("sha256"), "cifar10": _sha256(inputs.split.source)},
      data=inputs.split.source))
  _plots(workdir, config, state, problem, rows, curves)
  atomic_write_text(workdir / "summary.md", summary_markdown(summary))
  return summary


def _sha256(path: str) -> str | None:
  import hashlib

  p = Path(path)
  if not p.is_file():
    return None
  h = hashlib.sha256()
  with p.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _export(workdir: Path, problem: CifarProblem, front, config, recipe, backend) -> dict[int, str]:
  """Every Pareto architecture's genotype and trained parameters under ``architectures/``
  (``training.export.load_network`` loads one), from its training job's last checkpoint."""
  data_spec = _resolve_data(config)
  todo, out = [], {}
  for c in front:
    path = workdir / "architectures" / f"c{int(c):06d}"
    if not (path / "metrics.json").exists():  # written last: its presence means complete
      todo.append(backend.submit(jobs_lib.export_job, problem.job(int(c)), data_spec, recipe, str(path)))
    out[int(c)] = str(path.relative_to(workdir))
  for f in todo:
    f.result()
  return out


def _plots(workdir: Path, config, state, problem: CifarProblem, rows, curves) -> None:
  h = state.history
  hv = np.asarray(h["hv"]) / problem.max_hv
  hours = np.arange(len(hv))
  one = {config.strategy: (hours, hv, hv, hv)}
  band = "one search (no band)"
  plots.plot_hv_curves(workdir / "hv_vs_hours.png", one, xlabel="trace hours of search",
                       ylabel="HV of the trained set / bound (higher is better)", band=band,
                       title="CIFAR-10 search progress over time")
  carbon = {f"{config.strategy} ({acc})": (np.concatenate([[0.0], curves[acc]]), hv, hv, hv)
            for acc in ("full", "paper")}
  plots.plot_hv_curves(workdir / "hv_vs_carbon.png", carbon,
                       xlabel="cumulative carbon (gCO2eq; full and paper accounting)",
                       ylabel="HV of the trained set / bound (higher is better)", band=band,
                       title="CIFAR-10 search progress against its carbon (left is cheaper)")
  plots.plot_allocation_vs_ci(workdir / "allocation.png", np.arange(len(h["n_train"])),
                              n_sampling=h["n_sample"], n_training=h["n_train"],
                              ci_g_per_kwh=h["ci_g_per_kwh"],
                              title=f"GPU allocation of {config.strategy}, seed {config.seed}")
  pts = np.array([[r["params_m"], r["cifar10_test_acc_pct"]] for r in rows])
  mask = np.array([r["pareto"] for r in rows])
  plots.plot_pareto(workdir / "pareto.png", pts, mask,
                    ("parameters (millions; lower is better)", "CIFAR-10 test accuracy (%; higher is better)"),
                    title="Architectures trained by the search: Pareto front")


def summary_markdown(summary: dict) -> str:
  lines = [f"# CE-NAS on CIFAR-10: {summary['strategy']}, seed {summary['seed']}, "
           f"{summary['hours']} trace hours, {summary['n_gpus']} GPUs\n",
           f"Trained {summary['n_trained']} architectures, scored {summary['n_scored']} with the "
           f"supernet, out of {summary['n_candidates']} sampled candidates. Final HV "
           f"{summary['final_hv_of_bound']:.4f} of the bound (100 % accuracy at 0 parameters).\n",
           "| accounting | carbon (g) | carbon (lbs) | energy (kWh) |", "|---|---|---|---|"]
  for acc in ("paper", "full"):
    lines.append(f"| {acc} | {summary['carbon_g'][acc]:.4g} | {summary['carbon_lbs'][acc]:.4g} | "
                 f"{summary['energy_kwh'][acc]:.4g} |")
  lines += ["", "Pareto set:", "", "| candidate | test acc (%) | params (M) | supernet acc (%) | "
            "train energy (kWh) | carbon (g) | exported |", "|---|---|---|---|---|---|---|"]
  for r in summary["pareto"]:
    sup = "-" if r["supernet_acc_pct"] is None else f"{r['supernet_acc_pct']:.1f}"
    carbon = "uncharged (initial)" if r["carbon_g"] is None else f"{r['carbon_g']:.3g}"
    lines.append(f"| {r['candidate']} | {r['cifar10_test_acc_pct']:.2f} | {r['params_m']:.4f} | {sup} "
                 f"| {r['train_energy_kwh']:.3g} | {carbon} | {r['exported']} |")
  lines += ["", "Where each number comes from:", ""]
  lines += [f"- {k}: {v}" for k, v in summary["provenance_of_numbers"].items()]
  return "\n".join(lines) + "\n"
