"""Retrains the two winners of every seed of a finished ``experiments.tabular_search`` workdir to
convergence (up to ``--max_epochs`` full passes, early stopping with ``--patience``), with the run's
own dataset, fold, space, seeds, batch size and learning rate; one JSON line per network.

  python benchmarks/retrain_tabular_winners.py WORKDIR [--max_epochs 100] [--patience 10]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cenas_jax.spaces.tabular import make_space
from cenas_jax.tabular_nas import data as data_lib
from cenas_jax.tabular_nas import retrain
from cenas_jax.training import mesh as mesh_lib


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdir")
  ap.add_argument("--max_epochs", type=int, default=100)
  ap.add_argument("--patience", type=int, default=10)
  args = ap.parse_args()
  with open(f"{args.workdir}/summary.json", encoding="utf-8") as f:
    cfg = json.load(f)["config"]
  split = data_lib.prepare(data_lib.load_dataset(cfg["dataset"], cfg["target"], cfg["task"]),
                           fold=cfg["fold"])
  space = make_space(cfg["space"], split.d_in, split.d_out, depths=tuple(cfg["depths"]),
                     widths=tuple(cfg["widths"]), hidden_widths=tuple(cfg["hidden_widths"]),
                     dropouts=tuple(cfg["dropouts"]), heads=tuple(cfg["heads"]),
                     ffn_ratios=tuple(cfg["ffn_ratios"]), cat_cardinalities=split.cat_cardinalities)
  mesh = mesh_lib.make_data_mesh()
  n = mesh_lib.data_size(mesh)
  batch = -(-cfg["batch_size"] // n) * n  # as the search's retraining
  for seed in cfg["seeds"]:
    with open(f"{args.workdir}/seeds/seed_{seed}.json", encoding="utf-8") as f:
      winners = json.load(f)["winners"]
    for method in ("accuracy_only", "energy_aware"):
      w = winners[method]
      r = retrain.retrain(space, split, np.asarray(w["arch"]), mesh=mesh, seed=seed,
                          batch_size=batch, lr=cfg["lr"], max_epochs=args.max_epochs,
                          patience=args.patience, max_steps_per_epoch=0)
      print(json.dumps({"seed": seed, "method": method, "arch": w["arch_desc"], "test": r["test"],
                        "best_epoch": r["best_epoch"], "epochs": r["epochs"],
                        "train_s": round(r["train_s"], 1), "flagfile_budget_test": w["test"]}),
            flush=True)


if __name__ == "__main__":
  main()
