"""The summary of an experiment: per-strategy figures over seeds, ratios, the table and the figures.

Works on the episode records of ``search.episode_record`` (each with its carbon ledger, the one source
of its carbon figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.carbon.ledger import POLICIES
from cenas_jax.cluster import search
from cenas_jax.cluster.config import TARGET_KEY, ExperimentConfig
from cenas_jax.cluster.pool import KINDS


def _median(xs) -> float | None:
  xs = [x for x in xs if x is not None]
  return float(np.median(xs)) if xs else None


def _ratio(num, den) -> float | None:
  if num is None or den is None or den <= 0:
    return None
  return float(num / den)


def median_of_ratios(nums, dens) -> float | None:
  """Median over seeds of ``num / den``, the pairs zipped seed by seed; a seed whose figure is
  missing (``None``: the target never reached) or whose denominator is not positive has no ratio,
  and with none left the median is ``None``. The convention of every ratio in ``summary.json``."""
  return _median([_ratio(n, d) for n, d in zip(nums, dens)])


def hv_at_budget(record: dict, curve: np.ndarray, budget_g: float) -> float:
  """HV reached before the cumulative carbon (``curve``, after each hour, plus the hour's
  final-evaluation charge ``record["final_eval_g"]``) exceeds ``budget_g``."""
  hv = np.asarray(record["history"]["hv"])
  extra = np.asarray(record["final_eval_g"])
  ok = np.flatnonzero(curve + extra[1:] <= budget_g)
  return float(hv[0] if len(ok) == 0 else hv[ok[-1] + 1])


def summarize(records: dict[str, list[dict]], config: ExperimentConfig, max_hv: float,
              bounds: list[dict] | None = None) -> dict:
  """The ``summary.json`` body (without provenance).

  ``ratios_vs_vanilla[NAME]``: median over seeds of vanilla's carbon / NAME's (higher is better);
  ``to_target_vs_oracle[NAME]``: median over seeds of NAME's carbon to a target / the oracle's (lower
  is better; 1.25 means 25% more carbon than the best threshold schedule);
  ``bound``: per seed, the clairvoyant lower bound on carbon to ``TARGET_KEY`` of max HV
  (``experiment.clairvoyant_bounds``), and ``to_target_vs_bound[NAME]``: median over seeds of NAME's
  carbon to that target / the bound (>= 1 for every strategy).
  """
  accs = tuple(POLICIES)
  targets = [f"{t:.2f}" for t in config.hv_targets]
  out: dict[str, Any] = {"max_hv": max_hv, "seeds": list(config.seeds),
                         "hv_targets": list(config.hv_targets), "strategies": {},
                         "ratios_vs_vanilla": {}}
  for name, recs in records.items():
    curves = [search.record_carbon_curves(r) for r in recs]
    entry = {
        "final_hv": [r["final_hv"] for r in recs],
        "final_hv_frac": [r["final_hv"] / max_hv for r in recs],
        "n_trained": [r["n_trained"] for r in recs],
        "carbon_g": {a: [r["carbon_g"][a] for r in recs] for a in accs},
        "carbon_to_target_g": {a: {t: [r["carbon_to_target_g"][a][t] for r in recs]
                                   for t in targets} for a in accs},
        "hv_at_budget": {a: {f"{b:g}": [hv_at_budget(r, c[a], b) for r, c in zip(recs, curves)]
                             for b in config.carbon_budgets_g} for a in accs},
        "gpu_hours": {k: [r["gpu_hours"][k] for r in recs] for k in KINDS},
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
        return median_of_ratios([get(van[s]) for s in seeds], [get(by_seed[s]) for s in seeds])

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
          a: {t: median_of_ratios([by_seed[s]["carbon_to_target_g"][a][t] for s in seeds],
                                  [ora[s]["carbon_to_target_g"][a][t] for s in seeds])
              for t in targets} for a in accs}
  if bounds:
    by_seed = {b["seed"]: b for b in bounds}
    out["bound"] = {"hv_target": TARGET_KEY, "per_seed": bounds,
                    "carbon_g_median": _median([b["carbon_g"] for b in bounds])}
    out["to_target_vs_bound"] = {
        name: {a: median_of_ratios(
            [r["carbon_to_target_g"][a][TARGET_KEY] for r in recs if r["seed"] in by_seed],
            [by_seed[r["seed"]]["carbon_g"] for r in recs if r["seed"] in by_seed]) for a in accs}
        for name, recs in records.items()}
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
           "ratio to 0.98 paper / full | to 0.98 vs oracle paper / full | "
           "to 0.98 vs bound paper / full |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  rv = summary.get("ratios_vs_vanilla", {})
  vo = summary.get("to_target_vs_oracle", {})
  vb = summary.get("to_target_vs_bound", {})
  for name, e in summary["strategies"].items():
    r = rv.get(name, {})
    o = vo.get(name, {})
    n_missing = {a: sum(x is None for x in e["carbon_to_target_g"][a][TARGET_KEY]) for a in ("paper", "full")}
    miss = f" [{n_missing['paper']} seeds never]" if n_missing["paper"] else ""
    lines.append(
        f"| {name} | {med(e['final_hv_frac'], '{:.4f}')} | {med(e['n_trained'])} | "
        f"{med(e['carbon_g']['paper'])} | {med(e['carbon_g']['full'])} | "
        f"{med(e['carbon_to_target_g']['paper'][TARGET_KEY])}{miss} | "
        f"{med(e['carbon_to_target_g']['full'][TARGET_KEY])} | "
        f"{num(r.get('total', {}).get('paper'))} / {num(r.get('total', {}).get('full'))} | "
        f"{num(r.get('to_target', {}).get('paper', {}).get(TARGET_KEY))} / "
        f"{num(r.get('to_target', {}).get('full', {}).get(TARGET_KEY))} | "
        f"{num(o.get('paper', {}).get(TARGET_KEY))} / {num(o.get('full', {}).get(TARGET_KEY))} | "
        f"{num(vb.get(name, {}).get('paper'))} / {num(vb.get(name, {}).get('full'))} |")
  return "\n".join(lines) + "\n"


def oracle_pick(candidates: list[dict], accounting: str) -> dict:
  """Best threshold schedule: least carbon to 0.98 of max HV (ties: higher final HV)."""
  def key(r):
    c = r["carbon_to_target_g"][accounting].get(TARGET_KEY)
    return (c is None, c if c is not None else 0.0, -r["final_hv"])
  best = dict(min(candidates, key=key))
  best["chosen"] = best["strategy"]
  best["strategy"] = "oracle"
  return best


def write_results_and_plots(records: dict[str, list[dict]], config: ExperimentConfig, problem,
                            workdir: Path) -> None:
  """``results.jsonl`` (one row per strategy, seed and hour), ``pareto.csv`` and the figures."""
  from cenas_jax import plots, results

  rows = []
  for name, recs in records.items():
    for r in recs:
      h = r["history"]
      curves = search.record_carbon_curves(r)
      cp, cf = curves["paper"], curves["full"]
      for t in range(len(h.get("n_train", []))):
        rows.append({"strategy": name, "seed": r["seed"], "hour": t + 1, "hv": h["hv"][t + 1],
                     "n_train": h["n_train"][t], "n_sample": h["n_sample"][t],
                     "ci_g_per_kwh": h["ci_g_per_kwh"][t], "n_finished": h["n_finished"][t],
                     "carbon_g_paper_cum": float(cp[t]), "carbon_g_full_cum": float(cf[t])})
  results.rewrite_results(workdir, rows)

  max_hv = problem.max_hv
  n_seeds = len(config.seeds)
  band = (f"line: median over {n_seeds} seed{'s' if n_seeds > 1 else ''}; band: 25th-75th percentile "
          "(as summary.md)")
  ylabel = "distance to the best front,\nlog10(max HV - HV) (lower is better)"
  curves_h, curves_c, styles = {}, {}, {}
  for i, (name, recs) in enumerate(records.items()):
    logd = np.array([np.log10(np.maximum(max_hv - np.asarray(r["history"]["hv"]), 1e-3))
                     for r in recs])
    hours = np.arange(logd.shape[1])
    mid, lo, hi = np.median(logd, 0), np.quantile(logd, 0.25, 0), np.quantile(logd, 0.75, 0)
    curves_h[name] = (hours, mid, lo, hi)
    # Both accountings: under the paper's, a one-shot search charges nothing and would look free.
    for acc, dash in (("full", "-"), ("paper", "--")):
      carbon = np.median(np.array([np.concatenate([[0.0], search.record_carbon_curves(r)[acc]])
                                   for r in recs]), 0)
      curves_c[f"{name} ({acc})"] = (carbon, mid, lo, hi)
      styles[f"{name} ({acc})"] = {"color": f"C{i}", "linestyle": dash}
  plots.plot_hv_curves(workdir / "hv_vs_hours.png", curves_h, xlabel="simulated hours of search",
                       ylabel=ylabel, logy=False, band=band,
                       title=f"Search progress over time ({problem.name})")
  plots.plot_hv_curves(workdir / "hv_vs_carbon.png", curves_c,
                       xlabel="cumulative carbon (gCO2eq; solid: full accounting, dashed: paper "
                       "accounting)", ylabel=ylabel, logy=False, band=band, styles=styles,
                       title="Search progress against the carbon it cost (left is cheaper)")
  for name in ("cenas", "heuristic", "oracle"):
    if name in records:
      r = records[name][0]
      h = r["history"]
      what = f" (chose schedule {r['chosen']})" if name == "oracle" and r.get("chosen") else ""
      plots.plot_allocation_vs_ci(workdir / f"allocation_{name}.png",
                                  np.arange(len(h["n_train"])), n_sampling=h["n_sample"],
                                  n_training=h["n_train"], ci_g_per_kwh=h["ci_g_per_kwh"],
                                  title=f"GPU allocation of {name}{what}, seed {r['seed']}")
  # Pareto front of what the first cenas (else first) run trained.
  name = "cenas" if "cenas" in records else next(iter(records))
  r = records[name][0]
  idx = np.asarray(r["evaluated"], dtype=np.int64)
  pos = np.searchsorted(problem.arch_index, idx)
  y = problem.y_true[pos]
  from cenas_jax.data.nasbench import load_nb201_table

  table = load_nb201_table()
  run = f"{name}, seed {r['seed']}" + (f" (schedule {r['chosen']})" if r.get("chosen") else "")
  rows = [{"run": run, "arch_index": int(i), "arch_str": str(table.arch_str[i]),
           "cifar10_test_acc_pct": float(a), "edgegpu_energy_mj": float(-e)}
          for i, (a, e) in zip(idx, y)]
  mask = results.write_pareto_csv(workdir / "pareto.csv", rows,
                                  objectives=("cifar10_test_acc_pct", "edgegpu_energy_mj"),
                                  maximize=(True, False))
  if rows:
    pts = np.array([[row["edgegpu_energy_mj"], row["cifar10_test_acc_pct"]] for row in rows])
    plots.plot_pareto(workdir / "pareto.png", pts, mask,
                      ("edge GPU energy per image (mJ; lower is better)",
                       "CIFAR-10 test accuracy (%; higher is better)"),
                      title=f"Architectures trained by {run}: Pareto front")


SUMMARY_NOTES = """How to read this table:

- Each cell is the median over the seeds, with the smallest and largest value in parentheses; the
  figures' lines are the same medians and their shaded bands the 25th-75th percentiles over seeds.
- final HV / max: hypervolume of the architectures the strategy trained, as a fraction of the best
  possible (1.0 = the whole true Pareto front of the benchmark); higher is better.
- carbon paper (g): the paper's accounting, which charges only GPUs that train architectures.
  Sampling with the supernet, idle held GPUs and role switches cost nothing there, so a one-shot
  search that never trains reads 0 g.
- carbon full (g): every GPU the search holds is charged at its power (training, sampling, idle,
  switching) times the data-centre PUE, at the hour's carbon intensity. This is what the grid sees.
- to 0.98 (g): carbon spent until the trained set first reached 0.98 of the maximal hypervolume
  ("never": not within the simulated hours). Lower is better.
- ratio ... (vs vanilla): vanilla's carbon divided by the strategy's; above 1 the strategy saved carbon.
- to 0.98 vs oracle: the strategy's carbon to 0.98 divided by the oracle's; 1.0 matches the offline
  bound, higher is worse. The oracle is, per seed, the best of the threshold schedules with the whole
  trace known in advance{oracle}.
- to 0.98 vs bound: the strategy's carbon to 0.98 divided by the clairvoyant bound of its seed: the
  cheapest set of architectures (true accuracies known) that reaches 0.98, trained in the window's
  cleanest GPU-hours. No search can reach it (it must first find that set); it says how much room
  is left, under both accountings.{bound}
- A one-shot search is charged for training the architectures it reports (the final-evaluation
  charge, at the window's mean intensity, in both accountings).
"""


def summary_markdown(summary: dict, config: ExperimentConfig) -> str:
  """``summary.md``: the table of ``summary_table`` and what each column means."""
  chosen = summary.get("strategies", {}).get("oracle", {}).get("chosen_schedule")
  oracle = ""
  if chosen:
    counts = {c: chosen.count(c) for c in dict.fromkeys(chosen)}
    oracle = "; its chosen schedules (seeds): " + ", ".join(f"{c} ({n})" for c, n in counts.items())
  head = (f"# CE-NAS on HW-NAS-Bench: {len(summary.get('seeds', []))} seeds, {config.hours} simulated "
          f"hours from {config.start}, {config.trace_path or config.region}\n\n")
  b = summary.get("bound")
  bound = (f" Median bound over seeds: {b['carbon_g_median']:.0f} g (a median "
           f"{np.median([x['n_trained'] for x in b['per_seed']]):.0f} architectures, "
           f"{np.median([x['train_gpu_hours'] for x in b['per_seed']]):.1f} GPU-h)." if b else "")
  return head + summary_table(summary) + "\n" + SUMMARY_NOTES.format(oracle=oracle, bound=bound)
