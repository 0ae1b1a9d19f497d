"""How well the DARTS supernet ranks architectures: Kendall tau of supernet scores against the
accuracy of the same architectures trained from scratch (a quality benchmark, CPU-sized).

1. SPOS-trains the supernet on the first ``--train_images`` CIFAR-10 training images.
2. Scores ``--archs`` architectures (the published cells, then uniform samples) on held-out training
   images (the last ``--val_images``) with BatchNorm recalibrated per path.
3. Trains each architecture from scratch on the same training images and tests it on the test set.
4. Prints both accuracies per architecture and Kendall's tau, and writes them to ``--out`` (JSON).

  python benchmarks/supernet_ranking.py --cifar ../shared/data/cifar10_subset/cifar-10-python-subset.tar.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
from scipy import stats

from cenas_jax.data.cifar10 import load_cifar10
from cenas_jax.spaces import darts as space
from cenas_jax.supernets import darts as sn
from cenas_jax.training import cifar, supernet


@dataclasses.dataclass
class _Split:
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cifar", required=True, help="CIFAR-10 archive or folder")
  parser.add_argument("--channels", type=int, default=4)
  parser.add_argument("--layers", type=int, default=5)
  parser.add_argument("--train_images", type=int, default=4000)
  parser.add_argument("--val_images", type=int, default=1000)
  parser.add_argument("--supernet_epochs", type=int, default=3)
  parser.add_argument("--standalone_epochs", type=int, default=2)
  parser.add_argument("--archs", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="supernet_ranking.json")
  args = parser.parse_args()
  t0 = time.perf_counter()
  data = load_cifar10(args.cifar)
  n, v = args.train_images, args.val_images
  train = _Split(data.x_train[:n], data.y_train[:n], data.x_test, data.y_test)
  x_val, y_val = data.x_train[-v:], data.y_train[-v:]
  recipe = dataclasses.replace(supernet.SMOKE_SEARCH_RECIPE, epochs=args.supernet_epochs,
                               init_channels=args.channels, layers=args.layers)
  net = supernet.train_supernet(train, recipe, seed=args.seed, log=print)
  scorer = supernet.Scorer(recipe, train.x_train, x_val, y_val, calib_batches=4)
  genotypes = [space.GENOTYPES[k] for k in sorted(space.GENOTYPES)]
  genotypes += space.sample(np.random.default_rng(args.seed), max(0, args.archs - len(genotypes)))
  genotypes = genotypes[:args.archs]
  scores = scorer.score_many(net, [sn.arch_of(g) for g in genotypes])
  print(f"supernet trained and {len(genotypes)} paths scored in {time.perf_counter() - t0:.0f} s")
  standalone_recipe = dataclasses.replace(cifar.SMOKE_RECIPE, epochs=args.standalone_epochs,
                                          init_channels=args.channels, layers=args.layers)
  rows = []
  for i, (g, score) in enumerate(zip(genotypes, scores)):
    result = cifar.train_network(g, train, standalone_recipe, seed=args.seed, log=None)
    rows.append({"genotype": g.to_json(), "supernet_val_accuracy": float(score),
                 "standalone_test_accuracy": result.test_accuracy,
                 "params": space.count_params(g, args.channels, args.layers)})
    print(f"arch {i + 1}/{len(genotypes)}: supernet {score:.4f}  standalone {result.test_accuracy:.4f}  "
          f"({time.perf_counter() - t0:.0f} s)")
  tau = stats.kendalltau([r["supernet_val_accuracy"] for r in rows],
                         [r["standalone_test_accuracy"] for r in rows])
  out = {"kendall_tau": float(tau.statistic), "p_value": float(tau.pvalue), "args": vars(args),
         "supernet_history": list(net.history), "rows": rows, "seconds": time.perf_counter() - t0}
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"Kendall tau {tau.statistic:.3f} (p = {tau.pvalue:.3f}) over {len(rows)} architectures")


if __name__ == "__main__":
  main()
