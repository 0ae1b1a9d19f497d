"""Exact GP and closed-form 2-D EHVI (checked against Monte Carlo)."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.moo import gp
from cenas_jax.moo.hypervolume import hypervolume_2d


def _mc_ehvi(mean, std, front, ref, n_draws, rng):
  """Monte-Carlo EHVI: average exact HV improvement over Gaussian draws."""
  base = hypervolume_2d(front, ref)
  out = []
  for mu, sd in zip(mean, std):
    draws = mu + sd * rng.standard_normal((n_draws, 2))
    out.append(np.mean([hypervolume_2d(np.vstack([front, d]), ref) - base for d in draws]))
  return np.array(out)


def test_ehvi_matches_monte_carlo():
  rng = np.random.default_rng(0)
  ref = np.array([0.0, -50.0])
  front = np.array([[80.0, -30.0], [90.0, -35.0], [93.0, -45.0], [70.0, -60.0], [60.0, -20.0]])
  mean = np.array([[85.0, -28.0], [95.0, -40.0], [50.0, -10.0], [91.0, -34.0]])
  std = np.array([[3.0, 4.0], [1.0, 2.0], [10.0, 5.0], [0.5, 0.5]])
  exact = gp.expected_hypervolume_improvement_2d(mean, std, front, ref)
  mc = _mc_ehvi(mean, std, front, ref, 2000, rng)
  # MC standard error with 2,000 draws is a few percent of the value.
  np.testing.assert_allclose(exact, mc, rtol=0.08, atol=0.5)
  assert np.all(exact >= 0)


def test_ehvi_deterministic_limit_and_empty_front():
  ref = np.array([0.0, 0.0])
  front = np.array([[1.0, 3.0], [3.0, 1.0]])
  mean = np.array([[2.0, 2.0], [0.5, 0.5], [4.0, 4.0]])
  std = np.zeros_like(mean)
  got = gp.expected_hypervolume_improvement_2d(mean, std, front, ref)
  base = hypervolume_2d(front, ref)
  expected = [hypervolume_2d(np.vstack([front, m]), ref) - base for m in mean]
  np.testing.assert_allclose(got, expected, atol=1e-12)
  # Empty front: E[(Y0 - r0)+] * E[(Y1 - r1)+]; deterministic -> the box volume.
  np.testing.assert_allclose(
      gp.expected_hypervolume_improvement_2d(mean, std, np.zeros((0, 2)), ref), [4.0, 0.25, 16.0])


def test_gp_interpolates_and_is_uncertain_far_away():
  rng = np.random.default_rng(0)
  x = rng.random((40, 3))
  y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2
  model = gp.fit_gp(x, y)
  mean, std = gp.gp_predict(model, x)
  assert np.max(np.abs(mean - y)) < 0.1 * np.std(y)
  far_mean, far_std = gp.gp_predict(model, x[:5] + 10.0)
  assert np.all(far_std > 5 * np.max(std))
  np.testing.assert_allclose(far_mean, np.mean(y), atol=1e-6)  # reverts to the prior mean
  x_test = rng.random((200, 3))
  pred, _ = gp.gp_predict(model, x_test)
  truth = np.sin(4 * x_test[:, 0]) + x_test[:, 1] ** 2
  assert np.corrcoef(pred, truth)[0, 1] > 0.95


def test_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    gp.fit_gp(np.zeros((3, 2)), np.zeros(4))
  with pytest.raises(ValueError, match="non-negative"):
    gp.expected_hypervolume_improvement_2d(np.zeros((1, 2)), -np.ones((1, 2)), np.zeros((0, 2)),
                                           np.zeros(2))
