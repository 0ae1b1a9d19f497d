"""Tests for cenas_jax.carbon.accounting (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cenas_jax.carbon import accounting as acc


def _series(values, start="2021-07-02 06:00"):
  idx = pd.date_range(start, periods=len(values), freq="h", tz="UTC")
  return pd.Series(np.asarray(values, float), index=idx)


def test_unit_conversions():
  assert acc.kwh_to_j(1.0) == 3.6e6
  assert acc.j_to_kwh(7.2e6) == 2.0
  assert acc.grams_to_lbs(453.59237) == pytest.approx(1.0, rel=1e-15)
  assert acc.lbs_to_grams(38.53) == pytest.approx(17476.914, rel=1e-6)
  assert acc.LBS_PER_GRAM * acc.GRAMS_PER_LB == pytest.approx(1.0)
  assert acc.energy_j(250.0, 3600.0) == 900_000.0


def test_carbon_g_scalar_array_and_pue():
  # 1 kWh at 200 g/kWh = 200 g; with PUE 1.5 = 300 g.
  assert acc.carbon_g(3.6e6, 200.0) == pytest.approx(200.0)
  assert acc.carbon_g(3.6e6, 200.0, pue=1.5) == pytest.approx(300.0)
  out = acc.carbon_g(np.array([3.6e6, 1.8e6]), np.array([100.0, 400.0]))
  np.testing.assert_allclose(out, [100.0, 200.0])


def test_carbon_g_works_on_jax_arrays():
  import jax.numpy as jnp
  out = acc.carbon_g(jnp.array([3.6e6]), jnp.array([250.0]), 1.2)
  np.testing.assert_allclose(np.asarray(out), [300.0], rtol=1e-6)


def test_integrate_within_one_hour():
  ci = _series([100.0, 300.0, 500.0])
  # 1000 W for 30 min inside hour 1 (300 g/kWh): 0.5 kWh * 300 = 150 g.
  start = ci.index[1] + pd.Timedelta(minutes=10)
  end = start + pd.Timedelta(minutes=30)
  assert acc.integrate_carbon_g(ci, start, end, power_w=1000.0) == pytest.approx(150.0)
  assert acc.integrate_carbon_g(ci.to_numpy(), 1 + 10 / 60, 1 + 40 / 60, 1000.0) == pytest.approx(150.0)


def test_integrate_across_three_hours_partial():
  ci = _series([100.0, 300.0, 500.0, 700.0])
  # 2000 W from 00:30 to 02:15: 0.5 h @100 + 1 h @300 + 0.25 h @500 = 50 + 300 + 125 = 475 g/kWh*h
  # energy per hour 2 kWh -> 2 * 475 = 950 g.
  start = ci.index[0] + pd.Timedelta(minutes=30)
  end = ci.index[2] + pd.Timedelta(minutes=15)
  assert acc.integrate_carbon_g(ci, start, end, 2000.0) == pytest.approx(950.0)
  # PUE multiplies.
  assert acc.integrate_carbon_g(ci, start, end, 2000.0, pue=1.1) == pytest.approx(1045.0)
  # Same interval as float hour offsets, and via a NumPy trace + trace_start.
  assert acc.integrate_carbon_g(ci, 0.5, 2.25, 2000.0) == pytest.approx(950.0)
  assert acc.integrate_carbon_g(ci.to_numpy(), start, end, 2000.0,
                                trace_start=ci.index[0]) == pytest.approx(950.0)


def test_integrate_other_timezone_and_full_trace():
  ci = _series([100.0, 300.0])
  start = ci.index[0].tz_convert("US/Pacific")
  end = ci.index[1].tz_convert("US/Pacific") + pd.Timedelta(hours=1)  # exactly the trace end
  assert acc.integrate_carbon_g(ci, start, end, 1000.0) == pytest.approx(400.0)
  assert acc.integrate_carbon_g(ci, 1.0, 1.0, 1000.0) == 0.0


def test_integrate_errors():
  ci = _series([100.0, 300.0])
  with pytest.raises(ValueError, match="leaves the carbon trace"):
    acc.integrate_carbon_g(ci, 1.5, 2.5, 100.0)
  with pytest.raises(ValueError, match="leaves the carbon trace"):
    acc.integrate_carbon_g(ci, ci.index[0] - pd.Timedelta(minutes=1), ci.index[0], 100.0)
  with pytest.raises(ValueError, match="end_h must be >= start_h"):
    acc.integrate_carbon_g(ci, 1.0, 0.5, 100.0)
  with pytest.raises(ValueError, match="naive"):
    acc.integrate_carbon_g(ci, pd.Timestamp("2021-07-02 06:00"), 1.0, 100.0)
  with pytest.raises(ValueError, match="trace_start"):
    acc.integrate_carbon_g(ci.to_numpy(), ci.index[0], 1.0, 100.0)
  with pytest.raises(ValueError, match="power_w"):
    acc.integrate_carbon_g(ci, 0.0, 1.0, -5.0)
  with pytest.raises(ValueError, match="invalid value"):
    acc.integrate_carbon_g(np.array([1.0, np.nan]), 0.0, 1.0, 5.0)
  gappy = ci.drop(ci.index[1]).reindex(ci.index[:1].append(ci.index[:1] + pd.Timedelta(hours=3)))
  with pytest.raises(ValueError, match="not regular hourly"):
    acc.integrate_carbon_g(gappy.fillna(1.0), 0.0, 1.0, 5.0)


def test_batch_matches_scalar_and_hand_values():
  rng = np.random.default_rng(0)
  ci = rng.uniform(50, 400, size=48)
  starts = rng.uniform(0, 40, size=200)
  ends = starts + rng.uniform(0, 8, size=200)
  power = rng.uniform(0, 400, size=200)
  batch = acc.integrate_carbon_g_batch(ci, starts, ends, power, pue=1.3)
  # Reference: explicit per-hour overlap loop.
  ref = []
  for s, e, p in zip(starts, ends, power):
    total = 0.0
    for h in range(48):
      overlap_h = max(0.0, min(e, h + 1) - max(s, h))
      total += overlap_h * ci[h]
    ref.append(p * 1.3 * total / 1000.0)
  np.testing.assert_allclose(batch, ref, rtol=1e-10, atol=1e-9)
  scalar = [acc.integrate_carbon_g(ci, s, e, p, 1.3) for s, e, p in zip(starts[:5], ends[:5], power[:5])]
  np.testing.assert_allclose(batch[:5], scalar, rtol=1e-12)


def test_integrator_mean_ci_and_read_only():
  integ = acc.HourlyCarbonIntegrator.from_array([100.0, 300.0, 500.0])
  np.testing.assert_allclose(integ.mean_ci_g_per_kwh([0.5, 1.2, 2.0], [1.5, 1.2, 3.0]),
                             [200.0, 300.0, 500.0])
  np.testing.assert_allclose(integ.ci_hours(0.0, 3.0), 900.0)
  with pytest.raises(ValueError):
    integ.ci_g_per_kwh[0] = 1.0
  with pytest.raises(ValueError, match="leaves the carbon trace"):
    integ.carbon_g(np.array([0.0, 2.5]), np.array([1.0, 3.5]), 100.0)
