"""Puts the strategies of one ``experiments.hwnas_search`` run beside another run's reference
strategies, seed by seed: the section-2 row of a new agent without rerunning vanilla, the heuristic
and the oracle.

  python benchmarks/compare_hwnas_rows.py NEW/summary.json workspace/hwnas_cenas/summary.json

Both runs must share seeds, window and problem (the reference strategies' episodes do not depend on
the agent). Prints, for every strategy of NEW, the median final HV, the median carbon to 0.98 of
max HV (paper / full accounting) and the medians over seeds of the per-seed ratios vanilla / it,
heuristic / it (with the number of seeds where it spends less) and it / oracle; a seed that never
reaches 0.98 has no ratio.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from cenas_jax.cluster.config import TARGET_KEY as TARGET
from cenas_jax.cluster.summary import median_of_ratios

ACCOUNTINGS = ("paper", "full")


def _load(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    sys.exit(f"error: {path}: {e}; pass the summary.json of a finished experiments.hwnas_search run")


def to_target(summary: dict, strategy: str, seeds: list[int], accounting: str) -> list:
  """Carbon to the target per seed of ``seeds`` (None where never reached)."""
  per = summary["strategies"][strategy]["carbon_to_target_g"][accounting][TARGET]
  by_seed = dict(zip(summary["seeds"], per))
  return [by_seed[s] for s in seeds]


def fmt(x: float | None, spec: str = "{:.2f}") -> str:
  """``x`` formatted by ``spec``, or "n/a" for a missing figure."""
  return "n/a" if x is None else spec.format(x)


def compare(new: dict, ref: dict) -> list[str]:
  """One line per strategy of ``new`` against ``ref``'s vanilla, heuristic and oracle."""
  missing = [s for s in new["seeds"] if s not in ref["seeds"]]
  if missing:
    raise ValueError(f"the reference run has no seeds {missing}")
  seeds = new["seeds"]
  lines = []
  for name, rec in new["strategies"].items():
    hv = np.median(rec["final_hv_frac"])
    parts = [f"{name}: final HV {hv:.4f}, trained {np.median(rec['n_trained']):.0f}"]
    for acc in ACCOUNTINGS:
      own = to_target(new, name, seeds, acc)
      reached = [g for g in own if g is not None]
      cols = [f"{acc}: to {TARGET} {np.median(reached):.0f} g" if reached else
              f"{acc}: never to {TARGET}"]
      for other, flip in (("vanilla", False), ("heuristic", False), ("oracle", True)):
        if other not in ref["strategies"]:
          continue
        theirs = to_target(ref, other, seeds, acc)
        r = median_of_ratios(own, theirs) if flip else median_of_ratios(theirs, own)
        label = f"{name}/{other}" if flip else f"{other}/{name}"
        extra = ""
        if other == "heuristic":
          less = sum(o is not None and t is not None and t > o for o, t in zip(own, theirs))
          extra = f" ({less} of {len(seeds)} seeds less)"
        cols.append(f"{label} {fmt(r)}{extra}")
      parts.append(", ".join(cols))
    lines.append("; ".join(parts))
  return lines


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("new", help="summary.json of the run with the strategies to compare")
  ap.add_argument("reference", help="summary.json of the run with vanilla, heuristic and oracle")
  args = ap.parse_args()
  try:
    lines = compare(_load(args.new), _load(args.reference))
  except (KeyError, ValueError) as e:
    sys.exit(f"error: {args.reference}: {e}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
