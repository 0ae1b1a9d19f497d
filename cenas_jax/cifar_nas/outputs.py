"""The outputs of a CIFAR-10 search: ``summary.json`` / ``summary.md`` (the Pareto set with where
every number comes from), ``results.jsonl`` (one line per trace hour), ``pareto.csv``, the figures,
and every Pareto architecture exported under ``architectures/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cenas_jax import plots, results
from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.cifar_nas import jobs as jobs_lib
from cenas_jax.cifar_nas.problem import ENERGY_REF_MARGIN, CifarProblem
from cenas_jax.cluster import search
from cenas_jax.cluster.pool import PoolConfig
from cenas_jax.fileio import atomic_write_text, sha256_file
from cenas_jax.config_tree import flat_config

LBS_PER_G = 1.0 / 453.59237

def write_outputs(config, workdir: Path, state, problem: CifarProblem, per_arch, inputs, prices,
                   pool: PoolConfig, backend, wall_s: float) -> dict:
  from cenas_jax.moo.pareto import non_dominated_mask

  record = search.episode_record(state, problem, (0.25, 0.5, 0.75), pool)
  evaluated = np.asarray(state.evaluated, dtype=np.int64)
  y = problem.y_true[evaluated]
  front = evaluated[non_dominated_mask(y)]
  recipe = config.network.recipe()
  energy = "energy" in problem.objectives
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
        **({"inference_energy_mj": problem.inference_cost(int(c)).energy_mj} if energy else {}),
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
      **({"objectives": list(problem.objectives),
          "hv_reference": {"cifar10_test_acc_pct": 0.0, "params_m": problem.params_max_m,
                           "inference_energy_mj": problem.energy_ref_mj}} if energy else {}),
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
          **({"inference_energy_mj": _inference_provenance(problem, evaluated, config)}
             if energy else {}),
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
                           objectives=("cifar10_test_acc_pct", "params_m")
                           + (("inference_energy_mj",) if energy else ()),
                           maximize=(True, False) + ((False,) if energy else ()))
  source = inputs.split.source
  results.write_summary(workdir, summary, dict(
      seed=config.seed, config=flat_config(config), trace=inputs.trace_info,
      energy_source=prices["source"], ci_source=inputs.trace_info.get("source"),
      data_hashes={"trace": inputs.trace_info.get("sha256"),
                   "cifar10": sha256_file(source) if Path(source).is_file() else None},
      data=inputs.split.source))
  _plots(workdir, config, state, problem, rows, curves)
  atomic_write_text(workdir / "summary.md", summary_markdown(summary))
  return summary


def _inference_provenance(problem: CifarProblem, evaluated, config) -> str:
  sources = sorted({problem.inference_cost(int(c)).source for c in evaluated})
  return (f"{', '.join(sources)}: the kernel model on the trained network's evaluation forward "
          f"(training.cifar.inference_energy) at {config.inference_batch} image(s) per call on "
          f"{config.energy_device}, per image (a prediction, not a measurement); HV reference "
          f"{problem.energy_ref_mj:.4g} mJ (the widest cell pair's energy x "
          f"{ENERGY_REF_MARGIN:g})")


def _export(workdir: Path, problem: CifarProblem, front, config, recipe, backend) -> dict[int, str]:
  """Every Pareto architecture's genotype and trained parameters under ``architectures/``
  (``training.export.load_network`` loads one), from its training job's last checkpoint."""
  data_spec = jobs_lib.resolve(config.data)
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
  energy = "energy" in problem.objectives
  plots.plot_pareto(workdir / "pareto.png", pts, mask,
                    ("parameters (millions; lower is better)", "CIFAR-10 test accuracy (%; higher is better)"),
                    title="Architectures trained by the search: Pareto front" + (
                        f"\n(colour: predicted inference energy on {config.energy_device})"
                        if energy else ""),
                    color=[r["inference_energy_mj"] for r in rows] if energy else None,
                    color_label=f"mJ per image (batch {config.inference_batch})")


def summary_markdown(summary: dict) -> str:
  energy = "inference_energy_mj" in summary.get("hv_reference", {})
  lines = [f"# CE-NAS on CIFAR-10: {summary['strategy']}, seed {summary['seed']}, "
           f"{summary['hours']} trace hours, {summary['n_gpus']} GPUs\n",
           f"Trained {summary['n_trained']} architectures, scored {summary['n_scored']} with the "
           f"supernet, out of {summary['n_candidates']} sampled candidates. Final HV "
           f"{summary['final_hv_of_bound']:.4f} of the bound (100 % accuracy at 0 parameters"
           f"{' and 0 inference energy' if energy else ''}).\n",
           "| accounting | carbon (g) | carbon (lbs) | energy (kWh) |", "|---|---|---|---|"]
  for acc in ("paper", "full"):
    lines.append(f"| {acc} | {summary['carbon_g'][acc]:.4g} | {summary['carbon_lbs'][acc]:.4g} | "
                 f"{summary['energy_kwh'][acc]:.4g} |")
  lines += ["", "Pareto set:", "", "| candidate | test acc (%) | params (M) | "
            + ("inference energy (mJ/image) | " if energy else "") + "supernet acc (%) | "
            "train energy (kWh) | carbon (g) | exported |", "|---|---|---|" + "---|" * energy
            + "---|---|---|---|"]
  for r in summary["pareto"]:
    sup = "-" if r["supernet_acc_pct"] is None else f"{r['supernet_acc_pct']:.1f}"
    carbon = "uncharged (initial)" if r["carbon_g"] is None else f"{r['carbon_g']:.3g}"
    inf = f"{r['inference_energy_mj']:.4g} | " if energy else ""
    lines.append(f"| {r['candidate']} | {r['cifar10_test_acc_pct']:.2f} | {r['params_m']:.4f} | {inf}{sup} "
                 f"| {r['train_energy_kwh']:.3g} | {carbon} | {r['exported']} |")
  lines += ["", "Where each number comes from:", ""]
  lines += [f"- {k}: {v}" for k, v in summary["provenance_of_numbers"].items()]
  return "\n".join(lines) + "\n"
