"""The JAX SMO polynomial SVM against scikit-learn's SVC(kernel="poly", degree=4)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.svm import SVC

from cenas_jax.moo import svm
from cenas_jax.moo.lamoo import LaMOOConfig, split_labels

_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _agreement(ours, ref, x):
  return float(np.mean(svm.predict(ours, x) == ref.predict(x).astype(bool)))


@pytest.fixture(scope="module")
def nb201(shared_data):
  """One-hot NB201 encodings (15,625 x 30) and CIFAR-10 test accuracy (%)."""
  table = pd.read_csv(shared_data / "nas_bench_201" / "nats_tss_test_acc_200ep.csv.gz",
                      usecols=["CIFAR10TestAccuracy200Epochs", "ArchitectureString"])
  x = np.zeros((len(table), 30), np.float32)
  for row, arch in enumerate(table["ArchitectureString"]):
    for edge, op in enumerate(re.findall(r"\|([a-z_0-9]+)~\d", arch)):
      x[row, edge * 5 + _OPS.index(op)] = 1.0
  return x, table["CIFAR10TestAccuracy200Epochs"].to_numpy()


@pytest.mark.parametrize("n", [30, 120])
def test_matches_sklearn_on_nb201_dominance_labels(nb201, n):
  x, acc = nb201
  rng = np.random.default_rng(n)
  idx = rng.choice(x.shape[0], n, replace=False)
  energy = x[idx] @ rng.random(30)  # any second objective: labels come from 2-D dominance
  labels = split_labels(np.stack([acc[idx], -energy], 1), LaMOOConfig.cenas())
  ours = svm.fit_svm(x[idx], labels)
  ref = SVC(kernel="poly", degree=4, gamma="scale").fit(x[idx], labels)
  held_out = np.setdiff1d(np.arange(x.shape[0]), idx)
  assert ours.converged
  assert _agreement(ours, ref, x[held_out]) >= 0.98
  assert ours.gamma == pytest.approx(ref._gamma)  # pylint: disable=protected-access
  assert ours.rho == pytest.approx(-float(ref.intercept_[0]) * (1 if ref.classes_[1] else -1),
                                   abs=5e-3)


@pytest.mark.parametrize("coef0,c", [(0.0, 1.0), (1.0, 0.5)])
def test_matches_sklearn_on_continuous_inputs(coef0, c):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(90, 6))  # negative inner products: the integer power must keep signs
  labels = (x[:, 0] * x[:, 1] + 0.3 * rng.normal(size=90)) > 0
  ours = svm.fit_svm(x, labels, coef0=coef0, c=c)
  ref = SVC(kernel="poly", degree=4, gamma="scale", coef0=coef0, C=c).fit(x, labels)
  x_test = rng.normal(size=(2000, 6))
  assert _agreement(ours, ref, x_test) >= 0.98
  ref_dec = ref.decision_function(x_test) * (1 if ref.classes_[1] else -1)
  corr = np.corrcoef(svm.decision_function(ours, x_test), ref_dec)[0, 1]
  assert corr > 0.999


def test_poly_kernel_matches_direct_formula():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  for degree in (1, 2, 3, 4, 7):
    np.testing.assert_allclose(svm.poly_kernel(a, b, 0.3, degree, 0.5),
                               (0.3 * a @ b.T + 0.5) ** degree, rtol=1e-12)


def test_padding_does_not_change_the_fit(monkeypatch):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(40, 4))
  labels = x[:, 0] + 0.5 * rng.normal(size=40) > 0
  assert svm.padded_size(40) == 64 and svm.padded_size(3) == 16
  small = svm.fit_svm(x, labels)
  again = svm.fit_svm(x, labels)
  np.testing.assert_array_equal(small.dual_coef, again.dual_coef)  # deterministic
  monkeypatch.setattr(svm, "_MIN_PAD", 256)
  assert svm.padded_size(40) == 256
  big = svm.fit_svm(x, labels)  # 216 masked rows
  np.testing.assert_allclose(big.dual_coef, small.dual_coef, atol=1e-5)
  assert big.rho == pytest.approx(small.rho, abs=1e-5)
  x_test = rng.normal(size=(500, 4))
  np.testing.assert_array_equal(svm.predict(big, x_test), svm.predict(small, x_test))


def test_bad_inputs():
  x = np.zeros((4, 2))
  with pytest.raises(ValueError, match="both classes"):
    svm.fit_svm(x, np.ones(4, bool))
  with pytest.raises(ValueError, match="labels of shape"):
    svm.fit_svm(x, np.ones(3, bool))
  with pytest.raises(ValueError, match="degree"):
    svm.fit_svm(np.eye(4), np.array([1, 0, 1, 0]), degree=2.5)
  with pytest.raises(ValueError, match="gamma"):
    svm.fit_svm(np.eye(4), np.array([1, 0, 1, 0]), gamma="wide")
