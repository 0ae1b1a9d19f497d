"""Tests of ``carbon.windows``: time handling, rolling-origin windows and the refit schedule."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cenas_jax.carbon import windows as win
from cenas_jax.data import carbon_traces


def test_calendar_features_known_values():
  t = pd.DatetimeIndex(["2023-01-01 00:00", "2023-01-01 06:00", "2023-01-02 00:00"], tz="UTC")
  f = win.calendar_features(win.hours_since_epoch(t))
  assert f.shape == (3, win.NUM_CALENDAR_FEATURES) and f.dtype == np.float32
  np.testing.assert_allclose(f[0, :2], [0.0, 1.0], atol=1e-6)  # Midnight.
  np.testing.assert_allclose(f[1, :2], [1.0, 0.0], atol=1e-6)  # 06:00 is a quarter day.
  # 2023-01-01 was a Sunday (6 with Monday = 0), 2023-01-02 a Monday (0).
  np.testing.assert_allclose(f[0, 2:4], [np.sin(2 * np.pi * 6 / 7), np.cos(2 * np.pi * 6 / 7)], atol=1e-5)
  np.testing.assert_allclose(f[2, 2:4], [0.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(np.asarray(win.calendar_features(jnp.asarray(win.hours_since_epoch(t)), xp=jnp)),
                             f, atol=1e-5)


def test_rolling_origins_and_windows():
  index = pd.date_range("2023-01-01", periods=24 * 20, freq="h", tz="UTC")
  origins = win.rolling_origins(index, start=index[0], end=index[-1], history_hours=168, horizon_hours=96)
  # The first origin with a full history is 7 days in (on the same midnight phase); the last one
  # leaves 96 h.
  assert origins[0] == 168 and np.all(np.diff(origins) == 24) and origins[-1] + 96 <= len(index)
  hist_w, fut_w = win.make_windows(np.arange(len(index)), origins, 168, 96)
  assert hist_w.shape == (len(origins), 168) and fut_w[0, 0] == 168 and hist_w[0, -1] == 167


def test_check_hourly_names_the_gap(shared_data):
  ciso = carbon_traces.region_trace("US-CAL-CISO", root=shared_data, start="2021-03-01T00:00Z",
                                    end="2021-03-03T00:00Z").ci_g_per_kwh
  gappy = ciso.drop(ciso.index[10])
  with pytest.raises(ValueError, match="not a contiguous hourly series"):
    win.check_hourly(gappy, name="my.csv")


def test_refit_cutoffs_follow_the_schedule_and_never_pass_the_origin():
  origins = np.arange(500, 500 + 24 * 40, 24)
  cutoffs = win.refit_cutoffs(origins, 168)
  assert np.all(cutoffs <= origins) and cutoffs[0] == origins[0]
  assert np.all((cutoffs - origins[0]) % 168 == 0)
  assert np.all(origins - cutoffs < 168)
  assert len(np.unique(cutoffs)) == int(np.ceil((origins[-1] - origins[0] + 1) / 168))
  np.testing.assert_array_equal(win.refit_cutoffs(origins, 24), origins)
  with pytest.raises(ValueError, match="every_hours"):
    win.refit_cutoffs(origins, 0)


def test_windows_before_and_past_split():
  origins = np.arange(100, 400)
  assert np.array_equal(win.windows_before(origins, cutoff=300, horizon_hours=48), origins + 48 <= 300)
  all_rows, fit_rows, val_rows = win.past_split(origins, cutoff=300, horizon_hours=48, val_hours=80)
  assert origins[all_rows].max() == 252 and origins[fit_rows].max() == 172 and origins[val_rows].min() == 220
  assert set(fit_rows) | set(val_rows) <= set(all_rows) and not set(fit_rows) & set(val_rows)


def test_refit_groups_refuse_a_cutoff_after_its_origin():
  origins = np.array([10, 34, 58])
  groups = win.refit_groups(np.array([10, 10, 58]), origins)
  assert [c for c, _ in groups] == [10, 58] and groups[0][1].tolist() == [True, True, False]
  with pytest.raises(ValueError, match="after the origin"):
    win.refit_groups(origins + 1, origins)
