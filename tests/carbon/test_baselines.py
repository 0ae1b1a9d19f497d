"""Tests of ``carbon.baselines``: seasonal naive and the (refitted) linear autoregressive model."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.carbon import baselines
from cenas_jax.carbon import windows as win
from cenas_jax.data import carbon_traces


@pytest.fixture(scope="module")
def ciso(shared_data):
  """900 hours of real US-CAL-CISO life-cycle carbon intensity (gCO2eq/kWh)."""
  return carbon_traces.region_trace("US-CAL-CISO", root=shared_data, start="2021-03-01T00:00Z",
                                    end="2021-04-08T12:00Z").ci_g_per_kwh


def test_seasonal_naive():
  hist = np.arange(168.0)[None]
  n24 = baselines.seasonal_naive(hist, 96, 24)
  n168 = baselines.seasonal_naive(hist, 96, 168)
  np.testing.assert_array_equal(n24[0, :24], np.arange(144, 168))
  np.testing.assert_array_equal(n24[0, 24:48], np.arange(144, 168))
  np.testing.assert_array_equal(n168[0], np.arange(96))


def test_linear_ar_recovers_a_linear_map():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 5))
  w = rng.normal(size=(5, 3))
  y = x @ w + 0.5
  model = baselines.fit_linear_ar(x, y, l2=1e-6)
  np.testing.assert_allclose(model.predict(x), y, atol=1e-4)
  # The same model as a dense layer on raw features (the forecaster's linear path).
  kernel, bias = model.raw_kernel_bias()
  np.testing.assert_allclose(x @ kernel + bias, model.predict(x), atol=1e-12)


def test_linear_ar_grid_matches_single_fits():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 3))
  for model in baselines.fit_linear_ar_grid(x, y, (0.1, 10.0)):
    np.testing.assert_allclose(model.weights, baselines.fit_linear_ar(x, y, l2=model.l2).weights, rtol=1e-12)


def _linear_ar_windows(values: np.ndarray, hours: np.ndarray, length: int, horizon: int):
  z = np.log(values)
  origins = np.arange(length, len(values) - horizon + 1)
  hist, fut = win.make_windows(z, origins, length, horizon)
  return baselines.linear_ar_features(hist, hours[origins]), fut, origins


def test_linear_ar_refit_reads_nothing_at_or_after_the_cutoff(ciso):
  """Poisoning every hour from the cutoff on (NaN) leaves the refitted ridge unchanged."""
  values, hours = ciso.to_numpy(), win.hours_since_epoch(ciso.index)
  cutoff = 700
  poisoned = values.copy()
  poisoned[cutoff:] = np.nan
  fits = []
  for v in (values, poisoned):
    x, y, origins = _linear_ar_windows(v, hours, 168, 48)
    fits.append(baselines.fit_linear_ar_before(x, y, origins, cutoff=cutoff, horizon_hours=48, val_hours=120,
                                               l2_grid=(0.1, 1.0, 10.0)))
  (clean, n), (dirty, n2) = fits
  assert n == n2 == cutoff - 48 - 168 + 1 and np.all(np.isfinite(dirty.weights))
  np.testing.assert_array_equal(clean.weights, dirty.weights)
  assert clean.l2 == dirty.l2
  all_rows, fit_rows, val_rows = win.past_split(origins, cutoff=cutoff, horizon_hours=48, val_hours=120)
  assert origins[all_rows].max() + 48 <= cutoff and origins[fit_rows].max() + 48 <= cutoff - 120
  assert origins[val_rows].min() >= cutoff - 120
