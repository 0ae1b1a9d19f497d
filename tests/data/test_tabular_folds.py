"""Tests for cenas_jax.data.tabular.folds: TabZilla folds against scikit-learn's KFold splits."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.data.tabular import folds as tabular_folds


def _check_partition(folds, n):
  tests = np.concatenate([te for _, _, te in folds])
  np.testing.assert_array_equal(np.sort(tests), np.arange(n))  # test folds partition the rows
  for i, (train, val, test) in enumerate(folds):
    np.testing.assert_array_equal(val, folds[(i + 1) % len(folds)][2])  # val = next fold's test
    assert not np.intersect1d(train, val).size and not np.intersect1d(train, test).size
    assert not np.intersect1d(val, test).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(n))


def test_tabzilla_folds_stratified_deterministic_partition(adult):
  folds = tabular_folds.tabzilla_folds(adult.y)
  again = tabular_folds.tabzilla_folds(adult.y)
  assert len(folds) == 10
  for a, b in zip(folds, again):
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)
  _check_partition(folds, adult.n_rows)
  rate = adult.y.mean()
  for _, _, test in folds:
    assert abs(len(test) - adult.n_rows / 10) <= 1
    assert abs(adult.y[test].mean() - rate) < 1e-3  # stratified
  other = tabular_folds.tabzilla_folds(adult.y, seed=1)
  assert not np.array_equal(other[0][2], folds[0][2])


def test_tabzilla_folds_match_sklearn_kfold_splits(housing):
  from sklearn.model_selection import KFold, StratifiedKFold  # pylint: disable=g-import-not-at-top
  y_cls = np.random.default_rng(3).integers(0, 4, size=503)
  ref = [np.sort(te) for _, te in StratifiedKFold(10, shuffle=True, random_state=0).split(
      y_cls, y_cls)]
  ours = tabular_folds.tabzilla_folds(y_cls)
  for r, (_, _, te) in zip(ref, ours):
    np.testing.assert_array_equal(te, r)
  reg = tabular_folds.tabzilla_folds(housing.y, seed=0)  # float target -> plain KFold
  _check_partition(reg, housing.n_rows)
  ref = [np.sort(te) for _, te in KFold(10, shuffle=True, random_state=0).split(housing.y)]
  for r, (_, _, te) in zip(ref, reg):
    np.testing.assert_array_equal(te, r)


def test_tabzilla_folds_bad_arguments():
  with pytest.raises(ValueError, match="n_folds"):
    tabular_folds.tabzilla_folds(np.arange(5), n_folds=10)
  with pytest.raises(ValueError, match="n_folds"):
    tabular_folds.tabzilla_folds(np.arange(50), n_folds=2)
  with pytest.raises(ValueError, match="1-D"):
    tabular_folds.tabzilla_folds(np.zeros((4, 4), np.int32))
