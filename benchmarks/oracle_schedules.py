"""How much of the oracle's lead is foresight of the trace, and how much is choosing per seed.

  python benchmarks/oracle_schedules.py ORACLE_W [NEW/summary.json ...]

``ORACLE_W`` is the workdir of an ``experiments.hwnas_search`` run with the ``oracle`` strategy (its
``episodes/`` hold every threshold schedule's episode per seed). The oracle picks, per seed, the
schedule that reached 0.98 of max HV for the least carbon: a choice made with that seed's outcome
known, which no schedule fixed in advance can make. Prints, per schedule, the median carbon to
0.98 and the median over seeds of schedule / oracle (paper / full accounting), then the best
*single* schedule for all seeds (the least median ratio under the oracle's accounting). For every
strategy of each ``NEW`` summary (same seeds), prints its ratio to that schedule and to the oracle.
A seed that never reaches 0.98 has no ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from benchmarks.compare_hwnas_rows import ACCOUNTINGS, TARGET, fmt, to_target  # noqa: E402
from cenas_jax.cluster.summary import median_of_ratios, oracle_pick  # noqa: E402

_EPISODE = re.compile(r"^(oracle_.+)__seed(\d+)\.json$")


def load_schedules(workdir: Path) -> tuple[dict[str, dict[int, dict]], str]:
  """Episodes of the oracle's schedules, ``{schedule: {seed: record}}``, and its accounting."""
  config = json.loads((workdir / "config.json").read_text())
  out: dict[str, dict[int, dict]] = {}
  for path in sorted((workdir / "episodes").glob("oracle_*__seed*.json")):
    m = _EPISODE.match(path.name)
    if m:
      out.setdefault(m[1], {})[int(m[2])] = json.loads(path.read_text())
  if not out:
    raise ValueError(f"{workdir / 'episodes'} has no oracle schedule episodes; run "
                     "experiments.hwnas_search with --strategies=oracle into it first")
  return out, config["oracle_accounting"]


def _episode_to_target(record: dict, accounting: str) -> float | None:
  """One episode's carbon to the target (None: never reached)."""
  return record["carbon_to_target_g"][accounting].get(TARGET)


def schedule_table(schedules: dict[str, dict[int, dict]], accounting: str
                   ) -> tuple[list[int], dict[str, list], dict[str, dict]]:
  """Seeds every schedule ran, the oracle's per-seed carbon to 0.98 by accounting, and per schedule
  ``{accounting: (median g, median of schedule / oracle)}`` plus the seeds the oracle chose it."""
  seeds = sorted(set.intersection(*(set(by_seed) for by_seed in schedules.values())))
  picks = [oracle_pick([schedules[n][s] for n in schedules], accounting) for s in seeds]
  oracle = {acc: [_episode_to_target(p, acc) for p in picks] for acc in ACCOUNTINGS}
  rows = {}
  for name, by_seed in schedules.items():
    row = {"chosen": sum(p["chosen"] == name for p in picks)}
    for acc in ACCOUNTINGS:
      own = [_episode_to_target(by_seed[s], acc) for s in seeds]
      reached = [g for g in own if g is not None]
      row[acc] = (float(np.median(reached)) if reached else None,
                  median_of_ratios(own, oracle[acc]))
    rows[name] = row
  return seeds, oracle, rows


def best_single(rows: dict[str, dict], accounting: str) -> str:
  """The schedule with the least median ratio to the oracle under ``accounting``."""
  return min(rows, key=lambda n: (rows[n][accounting][1] is None, rows[n][accounting][1] or 0.0))


def compare(new: dict, schedule: dict[int, dict], schedule_name: str, seeds: list[int],
            oracle: dict[str, list]) -> list[str]:
  """One line per strategy of the summary ``new``: its median per-seed ratio to ``schedule`` (one
  schedule's episodes by seed) and to the oracle, both accountings."""
  missing = [s for s in seeds if s not in new["seeds"]]
  if missing:
    raise ValueError(f"has no seeds {missing}")
  lines = []
  for name in new["strategies"]:
    parts = []
    for acc in ACCOUNTINGS:
      own = to_target(new, name, seeds, acc)
      fixed = [_episode_to_target(schedule[s], acc) for s in seeds]
      parts.append(f"{acc}: {name}/{schedule_name} {fmt(median_of_ratios(own, fixed))}, "
                   f"{name}/oracle {fmt(median_of_ratios(own, oracle[acc]))}")
    lines.append("; ".join(parts))
  return lines


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("oracle_workdir", type=Path, help="workdir of a run with --strategies=oracle")
  ap.add_argument("new", nargs="*", help="summary.json of runs whose strategies to set beside them")
  args = ap.parse_args()
  try:
    schedules, accounting = load_schedules(args.oracle_workdir)
  except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
    sys.exit(f"error: {args.oracle_workdir}: {e}")
  seeds, oracle, rows = schedule_table(schedules, accounting)
  print(f"{len(seeds)} seeds; the oracle picks by {accounting} accounting; carbon to {TARGET} of max HV")
  print("| schedule | to 0.98 paper / full (g) | schedule / oracle, paper / full | oracle's pick (seeds) |")
  print("|---|---|---|---|")
  for name, row in sorted(rows.items(), key=lambda kv: kv[1][accounting][1] or np.inf):
    print(f"| {name} | {fmt(row['paper'][0], '{:,.0f}')} / {fmt(row['full'][0], '{:,.0f}')} | "
          f"{fmt(row['paper'][1])} / {fmt(row['full'][1])} | {row['chosen']} |")
  best = best_single(rows, accounting)
  print(f"best single schedule: {best}")
  for path in args.new:
    try:
      lines = compare(json.loads(Path(path).read_text()), schedules[best], best, seeds, oracle)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
      sys.exit(f"error: {path}: {e}")
    print("\n".join(f"{path}: {line}" for line in lines))


if __name__ == "__main__":
  main()
