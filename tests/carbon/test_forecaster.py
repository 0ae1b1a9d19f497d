"""Tests of the carbon-intensity forecaster, its baselines and its metrics (tiny configs, real trace)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import forecaster as fc
from cenas_jax.data import carbon_traces
from cenas_jax.errors import DataError, DataUnavailableError

TINY = fc.ForecasterConfig(history_hours=168, horizon_hours=48, patch_hours=24, d_model=16, num_layers=1,
                           num_heads=2, mlp_dim=32, dropout_rate=0.0)
TINY_TRAIN = fc.TrainConfig(batch_size=32, learning_rate=3e-3, max_epochs=3, patience=10, warmup_steps=5,
                            train_stride_hours=2, val_stride_hours=12, val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def ciso(shared_data) -> pd.Series:
  """900 hours of real US-CAL-CISO life-cycle carbon intensity (gCO2eq/kWh)."""
  trace = carbon_traces.region_trace("US-CAL-CISO", root=shared_data, start="2021-03-01T00:00Z",
                                     end="2021-04-08T12:00Z")
  return trace.ci_g_per_kwh


@pytest.fixture(scope="module")
def trained(ciso) -> fc.TrainResult:
  cfg = TINY
  return fc.train_forecaster(ciso, config=cfg, train_config=TINY_TRAIN)


# ----------------------------------------------------------------------------------------------
# Features, metrics and baselines.
# ----------------------------------------------------------------------------------------------
def test_calendar_features_known_values():
  t = pd.DatetimeIndex(["2023-01-01 00:00", "2023-01-01 06:00", "2023-01-02 00:00"], tz="UTC")
  f = fm.calendar_features(fm.hours_since_epoch(t))
  assert f.shape == (3, fm.NUM_CALENDAR_FEATURES) and f.dtype == np.float32
  np.testing.assert_allclose(f[0, :2], [0.0, 1.0], atol=1e-6)  # Midnight.
  np.testing.assert_allclose(f[1, :2], [1.0, 0.0], atol=1e-6)  # 06:00 is a quarter day.
  # 2023-01-01 was a Sunday (6 with Monday = 0), 2023-01-02 a Monday (0).
  np.testing.assert_allclose(f[0, 2:4], [np.sin(2 * np.pi * 6 / 7), np.cos(2 * np.pi * 6 / 7)], atol=1e-5)
  np.testing.assert_allclose(f[2, 2:4], [0.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(np.asarray(fm.calendar_features(jnp.asarray(fm.hours_since_epoch(t)), xp=jnp)),
                             f, atol=1e-5)


def test_metrics_on_known_numbers():
  actual = np.full((2, 48), 100.0)
  pred = np.concatenate([np.full((2, 24), 110.0), np.full((2, 24), 80.0)], axis=1)
  assert fm.mape_by_day(actual, pred) == pytest.approx([0.10, 0.20])
  assert fm.interval_coverage(actual, pred - 15, pred + 15) == pytest.approx(0.5)
  assert fm.ape_quantile(actual, pred, 0.9) == pytest.approx(0.20)
  with pytest.raises(ValueError, match="> 0"):
    fm.mape_by_day(np.zeros((1, 24)), np.ones((1, 24)))


def test_seasonal_naive_and_rolling_origins():
  hist = np.arange(168.0)[None]
  n24 = baselines.seasonal_naive(hist, 96, 24)
  n168 = baselines.seasonal_naive(hist, 96, 168)
  np.testing.assert_array_equal(n24[0, :24], np.arange(144, 168))
  np.testing.assert_array_equal(n24[0, 24:48], np.arange(144, 168))
  np.testing.assert_array_equal(n168[0], np.arange(96))
  index = pd.date_range("2023-01-01", periods=24 * 20, freq="h", tz="UTC")
  origins = fm.rolling_origins(index, start=index[0], end=index[-1], history_hours=168, horizon_hours=96)
  # The first origin with a full history is 7 days in (on the same midnight phase); the last one
  # leaves 96 h.
  assert origins[0] == 168 and np.all(np.diff(origins) == 24) and origins[-1] + 96 <= len(index)
  hist_w, fut_w = fm.make_windows(np.arange(len(index)), origins, 168, 96)
  assert hist_w.shape == (len(origins), 168) and fut_w[0, 0] == 168 and hist_w[0, -1] == 167


def test_linear_ar_recovers_a_linear_map():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 5))
  w = rng.normal(size=(5, 3))
  y = x @ w + 0.5
  model = baselines.fit_linear_ar(x, y, l2=1e-6)
  np.testing.assert_allclose(model.predict(x), y, atol=1e-4)


def test_check_hourly_names_the_gap(ciso):
  gappy = ciso.drop(ciso.index[10])
  with pytest.raises(ValueError, match="not a contiguous hourly series"):
    fm.check_hourly(gappy, name="my.csv")


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------
def test_config_validation():
  with pytest.raises(ValueError, match="contain 0.5"):
    fc.ForecasterConfig(quantiles=(0.1, 0.9))
  with pytest.raises(ValueError, match="history_hours"):
    fc.ForecasterConfig(history_hours=100)
  with pytest.raises(ValueError, match="num_heads"):
    fc.ForecasterConfig(d_model=30, num_heads=4)


def test_shapes_and_quantiles_ordered_for_any_params():
  cfg = fc.ForecasterConfig(history_hours=168, horizon_hours=48, patch_hours=24, d_model=16, num_layers=1,
                            num_heads=2, mlp_dim=16, quantiles=(0.05, 0.1, 0.5, 0.9, 0.95))
  params = fc.init_params(jax.random.key(0), cfg)
  # Scramble every parameter (the head is zero-initialized) so ordering cannot come from init.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = tree.unflatten([3.0 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  hist = jax.random.normal(jax.random.key(2), (7, 168))
  origin = jnp.arange(7, dtype=jnp.int32) * 24 + 460_000
  q = fc.apply_quantiles(params, hist, origin, None, cfg)
  assert q.shape == (7, 48, 5)
  assert bool(jnp.all(jnp.isfinite(q)))
  assert bool(jnp.all(jnp.diff(q, axis=-1) > 0))


def test_pinball_loss_is_minimized_by_the_quantile():
  y = jnp.asarray(np.random.default_rng(0).normal(size=(4000, 1)))
  losses = [float(fc.pinball_loss(jnp.full((4000, 1, 1), c), y, (0.9,))) for c in (0.0, 1.28, 2.5)]
  assert losses[1] < losses[0] and losses[1] < losses[2]


def test_training_lowers_the_loss(trained):
  hist = trained.history
  assert hist[0]["epoch"] == 0 and len(hist) == TINY_TRAIN.max_epochs + 1
  assert hist[-1]["train_loss"] < hist[1]["train_loss"]
  assert min(r["val_loss"] for r in hist[1:]) < hist[0]["val_loss"]
  assert trained.best_epoch == int(np.argmin([r["val_mape"] for r in hist]))


def test_normalization_never_sees_validation_or_test_data(ciso):
  # Make everything after the training slice absurd: the normalization must not move.
  n = len(ciso)
  val_pos = int(round(n * (1 - TINY_TRAIN.val_fraction)))
  poisoned = ciso.copy()
  poisoned.iloc[val_pos:] *= 1000.0
  cfg = TINY
  tc = dataclasses.replace(TINY_TRAIN, max_epochs=0)
  result = fc.train_forecaster(poisoned, config=cfg, train_config=tc)
  expected = fm.fit_normalization(ciso.iloc[:val_pos])
  assert result.normalization.ci_mean == pytest.approx(expected.ci_mean)
  assert result.normalization.ci_std == pytest.approx(expected.ci_std)
  assert pd.Timestamp(result.normalization.fitted_end) < pd.Timestamp(result.val_start)


def test_ridge_init_starts_from_the_linear_model(ciso):
  """With training frozen at epoch 0, the model's median equals a ridge fitted on its inputs."""
  tc = dataclasses.replace(TINY_TRAIN, max_epochs=0)
  result = fc.train_forecaster(ciso, config=TINY, train_config=tc)
  assert result.best_epoch == 0 and result.history[0]["ridge_l2"] in tc.ridge_l2_grid
  # A ridge that knows the history forecasts far better than a constant.
  origins = fm.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, fut = fm.make_windows(ciso.to_numpy(), origins, 168, 48)
  q = fc.predict_quantiles(result.params, hist, fm.hours_since_epoch(ciso.index)[origins], config=TINY,
                           normalization=result.normalization)
  mape = np.mean(fm.mape_by_day(fut, q[..., 1]))
  const = np.mean(fm.mape_by_day(fut, np.full_like(fut, np.mean(hist))))
  assert mape < 0.8 * const


def test_forecast_dataframe(trained, ciso):
  history = ciso.iloc[:400]
  out = fc.forecast(trained.params, history, config=TINY, normalization=trained.normalization)
  assert list(out.columns) == ["p10", "p50", "p90"]
  assert len(out) == 48 and out.index[0] == history.index[-1] + pd.Timedelta(hours=1)
  assert out.index.freqstr == "h"
  assert np.all(out["p10"] < out["p50"]) and np.all(out["p50"] < out["p90"])
  assert np.all((out["p50"] > 20) & (out["p50"] < 1000))  # gCO2eq/kWh, not normalized units.
  with pytest.raises(ValueError, match="at least 168 hours"):
    fc.forecast(trained.params, history.iloc[:100], config=TINY, normalization=trained.normalization)


def test_save_restore_roundtrip(trained, ciso, tmp_path):
  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization,
                            metadata={"region": "US-CAL-CISO"})
  restored = fc.restore_forecaster(path)
  assert restored.config == TINY and restored.normalization == trained.normalization
  assert restored.metadata == {"region": "US-CAL-CISO"}
  history = ciso.iloc[:300]
  a = fc.forecast(trained.params, history, config=TINY, normalization=trained.normalization)
  pd.testing.assert_frame_equal(a, restored.forecast(history))
  with pytest.raises(FileExistsError):
    fc.save_forecaster(path, trained.params, config=TINY, normalization=trained.normalization)


def test_restore_errors(trained, tmp_path):
  with pytest.raises(DataUnavailableError, match="No saved forecaster"):
    fc.restore_forecaster(tmp_path / "missing")
  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization)
  meta = json.loads((path / "forecaster.json").read_text())
  meta["config"]["d_model"] = 32  # Params no longer match the config.
  (path / "forecaster.json").write_text(json.dumps(meta))
  with pytest.raises(DataError, match="cannot restore"):
    fc.restore_forecaster(path)
  (path / "forecaster.json").write_text("{not json")
  with pytest.raises(DataError, match="not a valid forecaster"):
    fc.restore_forecaster(path)
