"""Speed of one LaMOO "propose" step on NB201 x HW-NAS-Bench (12,554 candidates), and where it goes.

Prints, for several numbers of evaluated samples, the median time per propose call split into tree
build (SVM fits vs the rest: dominance labels, node hypervolumes), path selection, classification of
all candidates along the path, and sampling; and the ratio against a reference measured in the same
run: uniform random sampling of unseen candidates (what "random search" costs per call).
Also prints the one-off JIT compile time and, when scikit-learn is installed, the SVM fit time of
``sklearn.svm.SVC(kernel="poly", degree=4)`` on the same root node.

Run: ``python benchmarks/bench_lamoo.py`` (reads $CENAS_SHARED_DATA, default ../shared/data).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from cenas_jax.moo import lamoo
from cenas_jax.moo import svm as svm_lib

_REF = np.array([0.0, -50.0])
_CP = 30.0
_REPEATS = 15


def load_problem() -> tuple[np.ndarray, np.ndarray]:
  """One-hot encodings (12,554 x 30) and objectives (acc %, -edgegpu_energy mJ)."""
  from cenas_jax.data.nasbench import load_nb201_table
  from cenas_jax.spaces import nb201

  table = load_nb201_table()
  keep = np.flatnonzero(table.has_hw)
  x = nb201.one_hot(table.ops[keep]).astype(np.float32)
  y = np.stack([table.test_acc_cifar10[keep], -table.edgegpu_energy_mj[keep]], 1)
  return x, y


class _SvmTimer:
  """Wraps ``svm_lib.fit_svm`` to accumulate its wall time."""

  def __init__(self):
    self.total_s = 0.0
    self.calls = 0
    self._orig = svm_lib.fit_svm

  def __enter__(self):
    def timed(*args, **kwargs):
      t0 = time.perf_counter()
      out = self._orig(*args, **kwargs)
      self.total_s += time.perf_counter() - t0
      self.calls += 1
      return out
    svm_lib.fit_svm = timed
    return self

  def __exit__(self, *exc):
    svm_lib.fit_svm = self._orig


def main() -> None:
  x, y = load_problem()
  n_cand = x.shape[0]
  config = lamoo.LaMOOConfig.cenas()
  print(f"candidates: {n_cand}, encoding dims: {x.shape[1]}, config: cenas (height<=3, >10 samples)")

  # One-off compile cost (first fit of each padded size compiles once per process).
  t0 = time.perf_counter()
  rng = np.random.default_rng(0)
  for n in (16, 32, 64, 128, 256, 512):
    idx = rng.choice(n_cand, n, replace=False)
    lab = lamoo.split_labels(y[idx], config)
    svm_lib.fit_svm(x[idx], lab)
  print(f"JIT compile + first fits for padded sizes 16..512: {time.perf_counter() - t0:.2f} s "
        "(once per process)")

  header = (f"{'n':>5} {'propose_ms':>10} {'tree_ms':>8} {'svm_fit_ms':>10} {'n_svm':>5} "
            f"{'select_ms':>9} {'classify_ms':>11} {'sample_ms':>9} {'ehvi_ms':>8} "
            f"{'random_ms':>9} {'ratio':>7}")
  print(header)
  for n in (50, 100, 200, 400):
    rows = {k: [] for k in ("tree", "svm", "nsvm", "select", "classify", "sample", "ehvi",
                            "random", "total")}
    for rep in range(-2, _REPEATS):  # reps -2 and -1 warm up (compiles of new padded shapes)
      rng = np.random.default_rng(rep + 2)
      samples = rng.choice(n_cand, n, replace=False)
      exclude = np.zeros(n_cand, bool)
      exclude[samples] = True
      # Reference: uniform random proposal among unseen candidates.
      t0 = time.perf_counter()
      rng.choice(np.flatnonzero(~exclude), 5, replace=False)
      rows["random"].append(time.perf_counter() - t0)
      t_start = time.perf_counter()
      with _SvmTimer() as timer:
        tree = lamoo.build_tree(x[samples], y[samples], _REF, config)
      t1 = time.perf_counter()
      path = lamoo.select_path(tree, _CP, rng, "leaf")
      t2 = time.perf_counter()
      region = lamoo.region_candidates(tree, path, x, exclude, min_count=5)
      t3 = time.perf_counter()
      rng.choice(region.indices, min(5, region.indices.size), replace=False)
      t4 = time.perf_counter()
      if rep < 0:
        continue
      rows["tree"].append(t1 - t_start)
      rows["svm"].append(timer.total_s)
      rows["nsvm"].append(timer.calls)
      rows["select"].append(t2 - t1)
      rows["classify"].append(t3 - t2)
      rows["sample"].append(t4 - t3)
      rows["total"].append(t4 - t_start)
      if rep < 3:  # EHVI is slow at large n: 3 reps
        t5 = time.perf_counter()
        lamoo.ehvi_select(tree, x[region.indices], 5)
        rows["ehvi"].append(time.perf_counter() - t5)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{n:>5} {1e3 * med['total']:>10.1f} {1e3 * med['tree']:>8.1f} {1e3 * med['svm']:>10.1f} "
          f"{med['nsvm']:>5.0f} {1e3 * med['select']:>9.2f} {1e3 * med['classify']:>11.1f} "
          f"{1e3 * med['sample']:>9.2f} {1e3 * med['ehvi']:>8.1f} {1e3 * med['random']:>9.2f} "
          f"{med['total'] / med['random']:>7.0f}x")
  print("propose_ms = tree + select + classify + sample (rejection mode, k=5); ehvi_ms is the extra "
        "cost of method='ehvi' (2 GP fits + greedy EHVI over the region); ratio = propose / random.")

  try:
    from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("scikit-learn not installed: skipping the SVC comparison.")
    return
  for n in (100, 400):
    rng = np.random.default_rng(0)
    idx = rng.choice(n_cand, n, replace=False)
    lab = lamoo.split_labels(y[idx], config)
    t_ours, t_sk = [], []
    for _ in range(_REPEATS):
      t0 = time.perf_counter()
      ours = svm_lib.fit_svm(x[idx], lab)
      t_ours.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      ref = SVC(kernel="poly", degree=4, gamma="scale").fit(x[idx], lab)
      t_sk.append(time.perf_counter() - t0)
    agree = np.mean(svm_lib.predict(ours, x) == ref.predict(x).astype(bool))
    print(f"SVM fit on {n} samples: jax-smo {1e3 * statistics.median(t_ours):.1f} ms "
          f"({ours.n_iter} iterations), sklearn SVC {1e3 * statistics.median(t_sk):.1f} ms; "
          f"prediction agreement on all {n_cand} candidates {100 * agree:.2f}%")


if __name__ == "__main__":
  main()
