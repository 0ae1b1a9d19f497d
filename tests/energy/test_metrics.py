"""The one regression-metrics function and the one train/test split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cenas_jax.energy.metrics import regression_metrics, train_mask


def test_regression_metrics_known_values():
  y = np.array([1.0, 2.0, 4.0, 8.0])
  m = regression_metrics(predicted=np.array([1.05, 2.4, 4.0, 7.0]), measured=y)
  rel = np.array([0.05, 0.2, 0.0, -0.125])
  assert m["n"] == 4
  assert m["rmspe"] == pytest.approx(np.sqrt(np.mean(rel**2)))
  assert m["mape"] == pytest.approx(np.mean(np.abs(rel)))
  assert m["acc10"] == pytest.approx(0.5)
  assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)


def test_regression_metrics_order_cannot_be_swapped_and_bad_values_raise():
  with pytest.raises(TypeError):
    regression_metrics(np.ones(3), np.ones(3))  # pylint: disable=too-many-function-args
  with pytest.raises(ValueError):
    regression_metrics(predicted=np.ones(3), measured=np.array([1.0, 0.0, 1.0]))
  with pytest.raises(ValueError):
    regression_metrics(predicted=np.ones(3), measured=np.ones(2))
  # Relative to the measurement: over-predicting 1 by 100 % is not under-predicting 2 by 50 %.
  assert regression_metrics(predicted=np.array([2.0]), measured=np.array([1.0]))["rmspe"] == 1.0
  assert regression_metrics(predicted=np.array([1.0]), measured=np.array([2.0]))["rmspe"] == 0.5


def test_rank_correlations_need_three_values():
  m = regression_metrics(predicted=np.array([1.0, 2.0]), measured=np.array([1.0, 3.0]))
  assert math.isnan(m["spearman"]) and math.isnan(m["kendall"]) and m["acc10"] == 0.5


def test_train_mask_is_seeded_and_keeps_both_parts():
  a = train_mask(10, train_fraction=0.7, seed=0)
  assert a.sum() == 7 and (a == train_mask(10, train_fraction=0.7, seed=0)).all()
  assert not (a == train_mask(10, train_fraction=0.7, seed=1)).all()
  perm = np.random.default_rng(0).permutation(10)
  assert set(np.flatnonzero(a)) == set(perm[:7].tolist())
  assert train_mask(3, train_fraction=0.01, seed=0).sum() == 1
  assert train_mask(3, train_fraction=0.99, seed=0).sum() == 2
  with pytest.raises(ValueError):
    train_mask(1, train_fraction=0.5, seed=0)
  with pytest.raises(ValueError):
    train_mask(5, train_fraction=1.0, seed=0)
