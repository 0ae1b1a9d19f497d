"""Tests of ``carbon.calibration`` (split-conformal quantile recalibration) and the per-window scale."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.carbon import calibration as cal_lib
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon.normalization import window_loc_scale


def test_calibration_restores_coverage_and_keeps_the_median():
  rng = np.random.default_rng(0)
  n, h = 4000, 24
  hist = rng.normal(size=(n, 168))
  median = rng.normal(size=(n, h))
  target = median + rng.normal(scale=1.0, size=(n, h))
  # Far too narrow: +-0.1 around the median.
  q = np.stack([median - 0.1, median, median + 0.1], axis=-1)
  assert fm.interval_coverage(target, q[..., 0], q[..., 2]) < 0.2
  cal = cal_lib.fit_quantile_calibration(q[:2000], target[:2000], hist[:2000], (0.1, 0.5, 0.9))
  out = cal.apply(q[2000:], hist[2000:])
  np.testing.assert_array_equal(out[..., 1], q[2000:, :, 1])
  assert fm.interval_coverage(target[2000:], out[..., 0], out[..., 2]) == pytest.approx(0.8, abs=0.03)
  assert np.mean(target[2000:] < out[..., 0]) == pytest.approx(0.1, abs=0.02)
  assert len(cal.shift) == 3 and all(len(s) == h for s in cal.shift) and set(cal.shift[1]) == {0.0}
  assert cal_lib.QuantileCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_calibrated_quantiles_stay_ordered():
  rng = np.random.default_rng(1)
  q = np.sort(rng.normal(size=(50, 24, 5)), axis=-1)
  hist = rng.normal(size=(50, 168))
  # Shifts that would cross the median and each other.
  shift = ((3.0,) * 24, (2.0,) * 24, (0.0,) * 24, (-2.0,) * 24, (-3.0,) * 24)
  cal = cal_lib.QuantileCalibration(quantiles=(0.05, 0.1, 0.5, 0.9, 0.95), shift=shift, per_window_scale=True,
                               num_windows=50)
  out = cal.apply(q, hist)
  assert np.all(np.diff(out, axis=-1) > 0)
  np.testing.assert_array_equal(out[..., 2], q[..., 2])
  with pytest.raises(ValueError, match="at least 20"):
    cal_lib.fit_quantile_calibration(q[:5], q[:5, :, 2], hist[:5], cal.quantiles)


def test_window_scale_is_the_same_in_numpy_and_jax():
  hist = np.random.default_rng(2).normal(size=(6, 168)).astype(np.float32)
  hist[0] = 1.0  # A flat window: its scale is floored.
  loc, scale = window_loc_scale(hist.astype(np.float64))
  loc_j, scale_j = window_loc_scale(jnp.asarray(hist), xp=jnp)
  assert scale[0, 0] == 0.05 and loc.shape == scale.shape == (6, 1)
  np.testing.assert_allclose(np.asarray(scale_j), scale, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(loc_j), loc, atol=1e-6)
