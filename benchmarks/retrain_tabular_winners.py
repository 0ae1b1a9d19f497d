"""Retrains the two winners of every seed of a finished ``experiments.tabular_search`` workdir to
convergence (up to ``--max_epochs`` full passes, early stopping with ``--patience``), with the run's
own dataset, fold, space, seeds, batch size and learning rate; one JSON line per network.

  python benchmarks/retrain_tabular_winners.py WORKDIR [--max_epochs 100] [--patience 10] [--folds 0-9] [--seeds 0,2]

WORKDIR needs only the run's summary.json (``workspace/tabular_*`` keep those of WORKSPACE.md).

``--folds`` retrains each winner on several TabZilla folds (fold f tests, f + 1 validates) and ends
with one line per seed pooling the test rows of all those folds. Why: German credit's test fold is
100 rows, so one fold resolves accuracy to 1 point, coarser than a 0.5-point target; 10 folds test
every row once (0.1 point). The architectures were searched on the run's fold, whose validation and
training rows are other folds' test rows: the pooled figure compares two fixed architectures
retrained from scratch, not a nested cross-validation of the search.

``--dropout RATE`` retrains the winners with every dropout decision set to RATE (one of the space's
rates): the search cannot see dropout unless it scores with ``--score_dropout``, so this separates
what a winner's dropouts cost from what its shape costs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cenas_jax.config_tree import build_config
from cenas_jax.tabular_nas import data as data_lib
from cenas_jax.tabular_nas import retrain
from cenas_jax.tabular_nas.experiment import TabularSearchConfig
from cenas_jax.training import mesh as mesh_lib


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdir")
  ap.add_argument("--max_epochs", type=int, default=100)
  ap.add_argument("--patience", type=int, default=10)
  ap.add_argument("--folds", default="", help="TabZilla folds to retrain on, e.g. 0-9 or 0,3 "
                  "(default: the run's own fold)")
  ap.add_argument("--seeds", default="", help="seeds of the run to retrain, e.g. 1 or 0,2 "
                  "(default: all)")
  ap.add_argument("--dropout", type=float, default=None,
                  help="retrain with every dropout decision at this rate (default: as found)")
  args = ap.parse_args()
  summary = Path(args.workdir) / "summary.json"
  if not summary.is_file():
    sys.exit(f"error: WORKDIR: {summary} does not exist; pass the workdir of a finished "
             "experiments.tabular_search run")
  run = json.loads(summary.read_text(encoding="utf-8"))
  cfg = run["config"]
  # The summary carries every seed's winners, so a committed summary alone can be retrained.
  winners_of = {s["seed"]: s["winners"] for s in run["seeds"]}
  config = build_config(TabularSearchConfig,
                        {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
  try:
    folds = _parse_folds(args.folds) if args.folds else [config.fold]
  except ValueError:
    folds = []
  if not folds or any(not 0 <= f < 10 for f in folds):
    sys.exit(f"error: --folds: {args.folds!r} is not a set of TabZilla folds; use e.g. 0-9 or 0,3,5")
  ds = data_lib.load_dataset(config.dataset, config.target, config.task)
  splits = {f: data_lib.prepare(ds, fold=f) for f in folds}
  spaces = {f: config.space_for(split) for f, split in splits.items()}  # one-hot widths per fold
  mesh = mesh_lib.make_data_mesh()
  n = mesh_lib.data_size(mesh)
  batch = -(-config.batch_size // n) * n  # as the search's retraining
  seeds = _parse_seeds(args.seeds, winners_of) if args.seeds else config.seeds
  space = spaces[folds[0]]  # the folds' spaces differ only in one-hot widths, not in decisions
  if args.dropout is not None:
    try:
      space.with_dropout(space.sample(np.random.default_rng(0)), args.dropout)
    except ValueError as e:
      sys.exit(f"error: --dropout: {e}")
  for seed in seeds:
    winners = winners_of[seed]
    pooled = {}
    for method in ("accuracy_only", "energy_aware"):
      w = winners[method]
      arch = np.asarray(w["arch"])
      if args.dropout is not None:
        arch = space.with_dropout(arch, args.dropout)
      outs = []
      for fold, fsplit in splits.items():
        r = retrain.retrain(spaces[fold], fsplit, arch, mesh=mesh, seed=seed,
                            batch_size=batch, lr=config.lr, max_epochs=args.max_epochs,
                            patience=args.patience, max_steps_per_epoch=0, return_outputs=True)
        outs.append((fsplit, r.pop("test_outputs")))
        print(json.dumps({"seed": seed, "method": method, "fold": fold,
                          "arch": spaces[fold].describe(arch), "dropout": args.dropout,
                          "test": r["test"], "best_epoch": r["best_epoch"], "epochs": r["epochs"],
                          "train_s": round(r["train_s"], 1), "flagfile_budget_test": w["test"]}),
              flush=True)
      if len(folds) > 1:
        pooled[method] = retrain.pooled_metrics(outs)
    if pooled:
      delta = {k: pooled["energy_aware"][k] - pooled["accuracy_only"][k] for k in pooled["energy_aware"]}
      n_rows = sum(len(fsplit.test) for fsplit in splits.values())
      print(json.dumps({"seed": seed, "folds": folds, "test_rows": n_rows,
                        "pooled_test": pooled, "energy_aware_minus_accuracy_only": delta}), flush=True)


def _parse_seeds(text: str, winners_of: dict) -> list[int]:
  """``"0,2"`` as a list of the run's seeds; exits with one line on anything else."""
  parts = text.split(",")
  if not all(p.strip().isdigit() and int(p) in winners_of for p in parts):
    sys.exit(f"error: --seeds: {text!r} is not a subset of the run's seeds {sorted(winners_of)}")
  return [int(p) for p in parts]


def _parse_folds(text: str) -> list[int]:
  """``"0-9"`` or ``"0,3,5"`` as a list of fold indices."""
  if "-" in text:
    lo, hi = map(int, text.split("-"))
    return list(range(lo, hi + 1))
  return [int(f) for f in text.split(",")]


if __name__ == "__main__":
  main()
