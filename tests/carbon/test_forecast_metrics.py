"""Tests of ``carbon.forecast_metrics`` on known numbers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.carbon import forecast_metrics as fm


def test_metrics_on_known_numbers():
  actual = np.full((2, 48), 100.0)
  pred = np.concatenate([np.full((2, 24), 110.0), np.full((2, 24), 80.0)], axis=1)
  assert fm.mape_by_day(actual, pred) == pytest.approx([0.10, 0.20])
  assert fm.interval_coverage(actual, pred - 15, pred + 15) == pytest.approx(0.5)
  assert fm.ape_quantile(actual, pred, 0.9) == pytest.approx(0.20)
  with pytest.raises(ValueError, match="> 0"):
    fm.mape_by_day(np.zeros((1, 24)), np.ones((1, 24)))


def test_pinball_loss_is_minimized_by_the_quantile():
  y = jnp.asarray(np.random.default_rng(0).normal(size=(4000, 1)))
  losses = [float(fm.pinball_loss(jnp.full((4000, 1, 1), c), y, (0.9,), xp=jnp)) for c in (0.0, 1.28, 2.5)]
  assert losses[1] < losses[0] and losses[1] < losses[2]


def test_pinball_loss_is_the_same_in_numpy_and_jax():
  rng = np.random.default_rng(1)
  q = np.sort(rng.normal(size=(30, 24, 3)), axis=-1)
  y = rng.normal(size=(30, 24))
  tau = (0.1, 0.5, 0.9)
  diff = y[..., None] - q
  expect = np.mean(np.maximum(np.asarray(tau) * diff, (np.asarray(tau) - 1) * diff))
  assert float(fm.pinball_loss(q, y, tau)) == expect
  assert float(fm.pinball_loss(jnp.asarray(q, jnp.float32), jnp.asarray(y, jnp.float32), tau, xp=jnp)) == (
      pytest.approx(expect, rel=1e-5))


def test_quantile_metrics():
  actual = np.full((2, 48), 100.0)
  q = np.stack([np.full((2, 48), 90.0), np.full((2, 48), 110.0), np.full((2, 48), 120.0)], axis=-1)
  m = fm.quantile_metrics(actual, q, (0.1, 0.5, 0.9))
  assert m["mape_by_day"] == pytest.approx([0.1, 0.1]) and m["coverage_p10_p90"] == 1.0
  assert m["p10_le_p50_le_p90"] and m["pinball_loss_g_per_kwh"] == pytest.approx((1.0 + 5.0 + 2.0) / 3)
  assert fm.mape(actual, q[..., 1]) == pytest.approx(0.1)
  assert fm.mean_absolute_error(actual, q[..., 0]) == pytest.approx(10.0)
  assert fm.mean_squared_error(actual, q[..., 0]) == pytest.approx(100.0)
  assert fm.quantile_names((0.05, 0.5, 0.9)) == ["p05", "p50", "p90"]
