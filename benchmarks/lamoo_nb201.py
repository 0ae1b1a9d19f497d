"""LaMOO's NAS-Bench-201 sample-efficiency claim on our table: samples to an HV target, 20 seeds.

Problem: the 12,554 NB201 cells with HW-NAS-Bench data (``cluster.problem.hwnas_problem``: one-hot
encodings, maximize CIFAR-10 test accuracy % and -edgegpu energy mJ, HV reference (0, -50)); the
true objectives of a cell are revealed when it is sampled (no supernet, no GPU pool, no carbon).
Methods (``cenas_jax.moo.sample_efficiency``): ``random``, ``lamoo`` (uniform in the UCB region),
``lamoo_ehvi`` (GP/EHVI in the region) and ``ehvi`` (the same GP/EHVI over the whole table). Every
method of a seed starts from the same ``n_init`` random cells.

Writes, through ``cenas_jax.results`` and ``cenas_jax.plots``: ``summary.json`` (samples to each
target per method: per seed, median, IQR, never-reached count; the ratios random/method and
ehvi/lamoo_ehvi), ``samples_to_target.csv``, ``hv_regret.csv`` (median and IQR of 1 - HV/max HV per
sample count), ``hv_vs_samples.png``, ``summary.md``, and one ``results.jsonl`` record per run.

  nice python benchmarks/lamoo_nb201.py --workdir=workspace/lamoo_nb201   # 20 seeds, 2 workers
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from cenas_jax.moo import sample_efficiency as se

KIND = "lamoo_nb201"
_PROBLEM = None  # one load per worker process


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The study: optimizer settings, seeds, methods, targets, worker processes.

  Attributes:
    optimizer: budget, batch size and LaMOO settings shared by every method.
    num_seeds: seeds ``first_seed .. first_seed + num_seeds - 1``.
    first_seed: the first seed.
    methods: a subset of ``sample_efficiency.METHODS``.
    targets: HV targets as fractions of the table's max HV.
    workers: worker processes (1: in-process).
  """

  optimizer: se.OptimizerSettings = dataclasses.field(default_factory=se.OptimizerSettings)
  num_seeds: int = 20
  first_seed: int = 0
  methods: tuple[str, ...] = se.METHODS
  targets: tuple[float, ...] = (0.95, 0.97, 0.99, 0.995)
  workers: int = 2

  def __post_init__(self):
    if self.num_seeds < 1:
      raise ValueError(f"num_seeds must be >= 1; got {self.num_seeds}.")
    bad = [m for m in self.methods if m not in se.METHODS]
    if bad or not self.methods:
      raise ValueError(f"methods must be a non-empty subset of {se.METHODS}; got {self.methods}.")
    if not all(0 < t <= 1 for t in self.targets):
      raise ValueError(f"targets must be in (0, 1]; got {self.targets}.")

  @property
  def seeds(self) -> range:
    return range(self.first_seed, self.first_seed + self.num_seeds)


def load_problem():
  """The CE-NAS HW-NAS-Bench problem and the table's provenance (cached per process)."""
  global _PROBLEM
  if _PROBLEM is None:
    from cenas_jax.cluster.problem import hwnas_problem
    from cenas_jax.data.nasbench import load_nb201_table

    table = load_nb201_table()
    _PROBLEM = (hwnas_problem(table), table.provenance())
  return _PROBLEM


def run_one(job: tuple[str, int, se.OptimizerSettings]) -> tuple[se.Trace, float]:
  """One (method, seed) run; the initial cells depend on the seed only, not on the method."""
  method, seed, settings = job
  problem, _ = load_problem()
  init = se.initial_samples(problem.n, settings.n_init,
                            np.random.default_rng(np.random.SeedSequence([seed, 0])))
  t0 = time.perf_counter()
  trace = se.run_optimizer(method, problem.features, problem.y_true, problem.ref_point, init,
                           settings, np.random.default_rng(np.random.SeedSequence([seed, 1])))
  return trace, time.perf_counter() - t0


def _fmt(v, digits=0) -> str:
  return "never" if v is None else f"{v:.{digits}f}"


def summary_markdown(summary: dict, config: StudyConfig) -> str:
  """The samples-to-target table and ratios as markdown."""
  o = config.optimizer
  lines = [f"# LaMOO sample efficiency on NB201 x HW-NAS-Bench ({config.num_seeds} seeds)", "",
           f"Budget {o.budget} samples ({o.n_init} initial, batches of {o.batch_size}), LaMOO preset "
           f"{o.lamoo_preset}, Cp {o.cp:g}, {o.mode} selection. Samples counted at batch ends, "
           "initial ones included; median [25th-75th percentile] over seeds ('never': the quantile "
           "needs a run that never reached the target).", "",
           "| target | " + " | ".join(config.methods) + " | " +
           " | ".join(f"{a}/{b}" for a, b in se.RATIO_PAIRS
                      if a in config.methods and b in config.methods) + " |",
           "|---" * (1 + len(config.methods) + sum(a in config.methods and b in config.methods
                                                   for a, b in se.RATIO_PAIRS)) + "|"]
  for t, row in summary["targets"].items():
    cells = []
    for m in config.methods:
      s = row["methods"][m]
      cells.append(f"{_fmt(s['median'])} [{_fmt(s['q25'])}-{_fmt(s['q75'])}], "
                   f"{s['never_reached']} never")
    for r in row["ratios"].values():
      cells.append(f"{r['ratio']:.2f}" if r["ratio"] is not None else
                   f">= {r['lower_bound']:.2f}" if r["lower_bound"] is not None else "n/a")
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
  lines += ["", "Final HV / max HV at the budget, median [IQR]: " + "; ".join(
      f"{m} {v['median']:.4f} [{v['q25']:.4f}-{v['q75']:.4f}]"
      for m, v in summary["final_hv_frac"].items()), ""]
  return "\n".join(lines)


def run(config: StudyConfig, workdir: str | os.PathLike[str]) -> dict:
  """Runs every (method, seed), writes the outputs into ``workdir``; returns the summary."""
  from cenas_jax import plots, results
  from cenas_jax.fileio import atomic_write_text

  wd = results.prepare_workdir(workdir, config, kind=KIND, may_change=("workers",))
  if wd.finished:
    print(f"{wd.path} holds this study, finished with these settings: nothing to run.")
    done = results.load_summary(wd.path)
    done.pop("provenance", None)
    return done
  problem, table_prov = load_problem()
  wd.claim()
  workdir = Path(wd.path)
  jobs = [(m, s, config.optimizer) for m in config.methods for s in config.seeds]
  t0 = time.time()
  if config.workers > 1:
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(config.workers) as pool:
      outs = pool.map(run_one, jobs, chunksize=1)
  else:
    outs = [run_one(j) for j in jobs]
  wall_s = time.time() - t0
  traces = {m: [] for m in config.methods}
  seconds = {m: [] for m in config.methods}
  for (m, _, _), (trace, sec) in zip(jobs, outs):
    traces[m].append(trace)
    seconds[m].append(sec)
  o = config.optimizer
  summary = se.summarize(traces, problem.max_hv, config.targets, o.budget)
  summary.update(problem=problem.name, n_candidates=problem.n, max_hv=problem.max_hv,
                 ref_point=problem.ref_point, wall_s=wall_s,
                 run_s_median={m: float(np.median(v)) for m, v in seconds.items()})
  results.write_summary(workdir, summary, dict(
      seed=list(config.seeds), config=results.to_json_safe(dataclasses.asdict(config)),
      energy_source="table-hw-nas-bench-edgegpu_energy (objective)", ci_source=None,
      data_hashes={k: v.get("sha256") for k, v in table_prov.get("files", {}).items()},
      nb201_table=table_prov))
  ends = o.batch_ends()
  results.rewrite_results(workdir, [
      {"method": m, "seed": s, "init_idx": tr.sample_idx[:o.n_init], "batch_ends": ends,
       "hv_at_batch_ends": np.round(tr.hv[ends - 1], 4), "run_s": sec,
       "samples_to_target": {f"{t:g}": se.samples_to_target(tr, t * problem.max_hv)
                             for t in config.targets}}
      for (m, s, _), (tr, sec) in zip(jobs, outs)])
  rows = []
  for t, row in summary["targets"].items():
    for m in config.methods:
      s = row["methods"][m]
      r = row["ratios"].get(f"random/{m}", {})
      rows.append({"target": t, "method": m, "median": s["median"], "q25": s["q25"],
                   "q75": s["q75"], "never_reached": s["never_reached"],
                   "n_seeds": config.num_seeds, "random_over_method": r.get("ratio"),
                   "random_over_method_lower_bound": r.get("lower_bound")})
    r = row["ratios"].get("ehvi/lamoo_ehvi")
    if r is not None:
      rows.append({"target": t, "method": "ehvi/lamoo_ehvi", "ehvi_over_lamoo_ehvi": r["ratio"],
                   "ehvi_over_lamoo_ehvi_lower_bound": r["lower_bound"]})
  results.write_csv(workdir / "samples_to_target.csv", rows)
  x = np.arange(1, o.budget + 1)
  curves, regret_rows = {}, []
  for m in config.methods:
    mid, lo, hi = se.hv_curve_quantiles(traces[m], problem.max_hv)
    curves[m] = (x, mid, lo, hi)
    regret_rows += [{"method": m, "samples": int(n), "regret_median": a, "regret_q25": b,
                     "regret_q75": c} for n, a, b, c in zip(x, mid, lo, hi)]
  results.write_csv(workdir / "hv_regret.csv", regret_rows)
  positive = all(np.all(np.stack(c[1:]) > 0) for c in curves.values())  # log axis needs regret > 0
  plots.plot_hv_curves(
      workdir / "hv_vs_samples.png", curves, "samples evaluated (true objectives)",
      "1 - HV / max HV (lower is better)", logy=bool(positive),
      title=f"NB201 x HW-NAS-Bench: LaMOO vs random vs EHVI ({config.num_seeds} seeds)",
      band=f"line: median over {config.num_seeds} seeds; band: 25th-75th percentile")
  atomic_write_text(workdir / "summary.md", summary_markdown(summary, config))
  wd.finish()
  return summary


def _parse(argv=None) -> tuple[StudyConfig, str]:
  d = StudyConfig()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--num_seeds", type=int, default=d.num_seeds)
  p.add_argument("--first_seed", type=int, default=d.first_seed)
  p.add_argument("--methods", default=",".join(d.methods))
  p.add_argument("--targets", default=",".join(f"{t:g}" for t in d.targets))
  p.add_argument("--workers", type=int, default=d.workers)
  for f in dataclasses.fields(se.OptimizerSettings):
    default = getattr(d.optimizer, f.name)
    p.add_argument(f"--{f.name}", type=type(default), default=default)
  a = p.parse_args(argv)
  opt = se.OptimizerSettings(**{f.name: getattr(a, f.name)
                                for f in dataclasses.fields(se.OptimizerSettings)})
  config = StudyConfig(optimizer=opt, num_seeds=a.num_seeds, first_seed=a.first_seed,
                       methods=tuple(a.methods.split(",")),
                       targets=tuple(float(t) for t in a.targets.split(",")), workers=a.workers)
  return config, a.workdir


def main(argv=None) -> None:
  config, workdir = _parse(argv)
  summary = run(config, workdir)
  print(summary_markdown(summary, config))
  print(f"wall {summary['wall_s']:.0f} s; median seconds per run: "
        + ", ".join(f"{m} {v:.1f}" for m, v in summary["run_s_median"].items()))


if __name__ == "__main__":
  main()
