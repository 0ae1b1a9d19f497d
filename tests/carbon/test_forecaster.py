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


# ----------------------------------------------------------------------------------------------
# Quantile calibration.
# ----------------------------------------------------------------------------------------------
def test_calibration_restores_coverage_and_keeps_the_median():
  rng = np.random.default_rng(0)
  n, h = 4000, 24
  hist = rng.normal(size=(n, 168))
  median = rng.normal(size=(n, h))
  target = median + rng.normal(scale=1.0, size=(n, h))
  # Far too narrow: +-0.1 around the median.
  q = np.stack([median - 0.1, median, median + 0.1], axis=-1)
  assert fm.interval_coverage(target, q[..., 0], q[..., 2]) < 0.2
  cal = fm.fit_quantile_calibration(q[:2000], target[:2000], hist[:2000], (0.1, 0.5, 0.9))
  out = cal.apply(q[2000:], hist[2000:])
  np.testing.assert_array_equal(out[..., 1], q[2000:, :, 1])
  assert fm.interval_coverage(target[2000:], out[..., 0], out[..., 2]) == pytest.approx(0.8, abs=0.03)
  assert np.mean(target[2000:] < out[..., 0]) == pytest.approx(0.1, abs=0.02)
  assert len(cal.shift) == 3 and all(len(s) == h for s in cal.shift) and set(cal.shift[1]) == {0.0}
  assert fm.QuantileCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_calibrated_quantiles_stay_ordered():
  rng = np.random.default_rng(1)
  q = np.sort(rng.normal(size=(50, 24, 5)), axis=-1)
  hist = rng.normal(size=(50, 168))
  # Shifts that would cross the median and each other.
  shift = ((3.0,) * 24, (2.0,) * 24, (0.0,) * 24, (-2.0,) * 24, (-3.0,) * 24)
  cal = fm.QuantileCalibration(quantiles=(0.05, 0.1, 0.5, 0.9, 0.95), shift=shift, per_window_scale=True,
                               num_windows=50)
  out = cal.apply(q, hist)
  assert np.all(np.diff(out, axis=-1) > 0)
  np.testing.assert_array_equal(out[..., 2], q[..., 2])
  with pytest.raises(ValueError, match="at least 20"):
    fm.fit_quantile_calibration(q[:5], q[:5, :, 2], hist[:5], cal.quantiles)


def test_calibration_is_fitted_on_validation_windows_only(trained):
  cal = trained.calibration
  assert cal is not None and cal.quantiles == TINY.quantiles
  assert pd.Timestamp(cal.fitted_start) >= pd.Timestamp(trained.val_start)
  assert cal.num_windows > 20
  assert len(cal.shift[0]) == TINY.horizon_hours


def test_calibrated_spreads_round_trip_through_save_restore(trained, ciso, tmp_path):
  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization,
                            calibration=trained.calibration)
  restored = fc.restore_forecaster(path)
  assert restored.calibration == trained.calibration
  history = ciso.iloc[:300]
  cal = fc.forecast(trained.params, history, config=TINY, normalization=trained.normalization,
                    calibration=trained.calibration)
  raw = fc.forecast(trained.params, history, config=TINY, normalization=trained.normalization)
  pd.testing.assert_frame_equal(cal, restored.forecast(history))
  pd.testing.assert_series_equal(cal["p50"], raw["p50"])
  assert not np.allclose(cal["p90"], raw["p90"])  # The spreads really changed.
  assert np.all(cal["p10"] <= cal["p50"]) and np.all(cal["p50"] <= cal["p90"])
  # A forecaster saved without calibration restores without one (older files have none).
  plain = fc.restore_forecaster(fc.save_forecaster(tmp_path / "g", trained.params, config=TINY,
                                                   normalization=trained.normalization))
  assert plain.calibration is None
  pd.testing.assert_frame_equal(raw, plain.forecast(history))


# ----------------------------------------------------------------------------------------------
# Global (multi-region) training.
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pjm(shared_data) -> pd.Series:
  """600 hours of real US-MIDA-PJM life-cycle carbon intensity (gCO2eq/kWh)."""
  trace = carbon_traces.region_trace("US-MIDA-PJM", root=shared_data, start="2021-03-01T00:00Z",
                                     end="2021-03-26T00:00Z")
  return trace.ci_g_per_kwh


GLOBAL = dataclasses.replace(TINY, num_regions=2)


@pytest.fixture(scope="module")
def trained_global(ciso, pjm) -> fc.TrainResult:
  return fc.train_forecaster({"US-CAL-CISO": ciso, "US-MIDA-PJM": pjm}, config=GLOBAL,
                             train_config=dataclasses.replace(TINY_TRAIN, max_epochs=2))


def test_global_training_path(trained_global, ciso, pjm):
  res = trained_global
  assert res.region_names == ("US-CAL-CISO", "US-MIDA-PJM") and len(res.normalizations) == 2
  assert res.normalization == res.normalizations[0]
  # Each series has its own normalization, fitted on its own training slice.
  for series, norm in zip((ciso, pjm), res.normalizations):
    val_pos = int(round(len(series) * (1 - TINY_TRAIN.val_fraction)))
    assert norm.ci_mean == pytest.approx(fm.fit_normalization(series.iloc[:val_pos]).ci_mean)
  assert set(res.history[0]["val_mape_by_region"]) == {"US-CAL-CISO", "US-MIDA-PJM"}
  assert res.history[0]["val_mape"] == res.history[0]["val_mape_by_region"]["US-CAL-CISO"]
  assert len(res.history[0]["ridge_l2"]) == 2
  assert res.params["linear_skip"]["kernel"].shape == (2, 168 + fm.NUM_CALENDAR_FEATURES, 48)
  assert res.history[2]["train_loss"] < res.history[1]["train_loss"]
  assert res.calibration is not None


def test_specialize_params_equals_the_global_model(trained_global, pjm):
  res = trained_global
  origins = fm.rolling_origins(pjm.index, start=pjm.index[168], end=pjm.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = fm.make_windows(pjm.to_numpy(), origins, 168, 48)
  hours = fm.hours_since_epoch(pjm.index)[origins]
  norm = res.normalizations[1]
  q_global = fc.predict_quantiles(res.params, hist, hours, config=GLOBAL, normalization=norm, region_index=1)
  params, cfg = fc.specialize_params(res.params, GLOBAL, 1)
  assert cfg.num_regions == 1 and "region_embedding" not in params
  q_single = fc.predict_quantiles(params, hist, hours, config=cfg, normalization=norm)
  np.testing.assert_allclose(q_single, q_global, rtol=1e-5)
  # The two regions' models differ (own linear path and embedding).
  q_other = fc.predict_quantiles(res.params, hist, hours, config=GLOBAL, normalization=norm, region_index=0)
  assert not np.allclose(q_other, q_global)
  with pytest.raises(ValueError, match="region_index"):
    fc.predict_quantiles(res.params, hist, hours, config=GLOBAL, normalization=norm)


def test_global_training_checks_its_inputs(ciso, pjm):
  with pytest.raises(ValueError, match="num_regions=1 but 2 training series"):
    fc.train_forecaster({"a": ciso, "b": pjm}, config=TINY, train_config=TINY_TRAIN)
  with pytest.raises(ValueError, match="outside"):
    fc.specialize_params(fc.init_params(jax.random.key(0), GLOBAL), GLOBAL, 2)


def test_global_normalization_never_sees_validation_data(ciso, pjm):
  poisoned = pjm.copy()
  val_pos = int(round(len(pjm) * (1 - TINY_TRAIN.val_fraction)))
  poisoned.iloc[val_pos:] *= 1000.0
  res = fc.train_forecaster({"US-CAL-CISO": ciso, "US-MIDA-PJM": poisoned}, config=GLOBAL,
                            train_config=dataclasses.replace(TINY_TRAIN, max_epochs=0, calibrate_quantiles=False))
  expected = fm.fit_normalization(pjm.iloc[:val_pos])
  assert res.normalizations[1].ci_mean == pytest.approx(expected.ci_mean)
  assert res.normalizations[1].ci_std == pytest.approx(expected.ci_std)


# ----------------------------------------------------------------------------------------------
# Generation-by-source columns.
# ----------------------------------------------------------------------------------------------
def test_generation_columns_as_extra_history(shared_data):
  trace = carbon_traces.region_trace("US-CAL-CISO", dataset="benchmark", root=shared_data,
                                     start="2020-04-01T00:00Z", end="2020-05-08T00:00Z")
  gen = trace.generation_mwh
  assert gen is not None and gen.shape[1] >= 5
  cfg = dataclasses.replace(TINY, num_extra_features=gen.shape[1])
  res = fc.train_forecaster(trace.ci_g_per_kwh, config=cfg, train_extra=gen,
                            train_config=dataclasses.replace(TINY_TRAIN, max_epochs=1))
  assert res.normalization.extra_names == tuple(gen.columns)
  val_pos = int(round(len(gen) * (1 - TINY_TRAIN.val_fraction)))
  np.testing.assert_allclose(res.normalization.extra_mean, gen.iloc[:val_pos].mean().to_numpy())
  out = fc.forecast(res.params, trace.ci_g_per_kwh.iloc[:400], config=cfg, normalization=res.normalization,
                    history_extra=gen.iloc[:400], calibration=res.calibration)
  assert out.shape == (48, 3) and np.all(np.isfinite(out.to_numpy()))
  assert np.all(out["p10"] <= out["p50"]) and np.all(out["p50"] <= out["p90"])
  with pytest.raises(ValueError, match="history_extra"):
    fc.forecast(res.params, trace.ci_g_per_kwh.iloc[:400], config=cfg, normalization=res.normalization)


def test_scale_median_residual_blends_linear_path_and_network(trained, ciso):
  """Weight w gives linear + w * residual for the median; w = 0 is the ridge path alone."""
  origins = fm.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = fm.make_windows(ciso.to_numpy(), origins, 168, 48)
  hist_z = trained.normalization.transform(hist)
  hours = jnp.asarray(fm.hours_since_epoch(ciso.index)[origins], jnp.int32)
  params = jax.tree.map(lambda x: x + 0.01, trained.params)  # A non-zero residual for sure.
  ridge_only = fc.scale_median_residual(params, TINY, 0.0)
  full = np.asarray(fc.apply_quantiles(params, hist_z, hours, None, TINY))
  base = np.asarray(fc.apply_quantiles(ridge_only, hist_z, hours, None, TINY))
  half = np.asarray(fc.apply_quantiles(fc.scale_median_residual(params, TINY, 0.5), hist_z, hours, None, TINY))
  np.testing.assert_allclose(half[..., 1], base[..., 1] + 0.5 * (full[..., 1] - base[..., 1]), atol=1e-5)
  # The quantile offsets around the median do not change.
  np.testing.assert_allclose(half[..., 2] - half[..., 1], full[..., 2] - full[..., 1], atol=1e-5)
  assert trained.residual_weight in TINY_TRAIN.residual_weight_grid
  assert all(r["residual_weight"] in TINY_TRAIN.residual_weight_grid for r in trained.history)


def test_series_linear_path_keeps_the_network_level_blind():
  """linear_skip_input='series': a level shift of the history moves the forecast only through the linear path."""
  cfg = dataclasses.replace(TINY, instance_norm=True, linear_skip_input="series")
  params = fc.init_params(jax.random.key(0), cfg)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = tree.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  hist = jax.random.normal(jax.random.key(2), (5, 168))
  origin = jnp.arange(5, dtype=jnp.int32) * 24 + 460_000
  shift = 0.7
  q0 = np.asarray(fc.apply_quantiles(params, hist, origin, None, cfg))
  q1 = np.asarray(fc.apply_quantiles(params, hist + shift, origin, None, cfg))
  linear_response = shift * np.asarray(params["linear_skip"]["kernel"][:168].sum(axis=0))  # (H,)
  np.testing.assert_allclose(q1 - q0, np.broadcast_to(linear_response[None, :, None], q0.shape), atol=2e-4)
  assert np.all(np.diff(q0, axis=-1) > 0)
  with pytest.raises(ValueError, match="linear_skip_input"):
    fc.ForecasterConfig(linear_skip_input="series", residual_base="naive24")


def test_series_linear_path_starts_from_the_plain_ridge(ciso):
  cfg = dataclasses.replace(TINY, instance_norm=True, linear_skip_input="series")
  res = fc.train_forecaster(ciso, config=cfg, train_config=dataclasses.replace(TINY_TRAIN, max_epochs=0))
  origins = fm.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = fm.make_windows(ciso.to_numpy(), origins, 168, 48)
  hours = fm.hours_since_epoch(ciso.index)[origins]
  q = fc.predict_quantiles(res.params, hist, hours, config=cfg, normalization=res.normalization)
  hist_z = res.normalization.transform(hist)
  skip = res.params["linear_skip"]
  x = np.concatenate([hist_z, fm.calendar_features(hours)], axis=-1)
  ridge = res.normalization.inverse(x @ np.asarray(skip["kernel"]) + np.asarray(skip["bias"]))
  np.testing.assert_allclose(q[..., 1], ridge, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Refitting the closed-form parts on the past.
# ----------------------------------------------------------------------------------------------
def test_refit_cutoffs_follow_the_schedule_and_never_pass_the_origin():
  origins = np.arange(500, 500 + 24 * 40, 24)
  cutoffs = fm.refit_cutoffs(origins, 168)
  assert np.all(cutoffs <= origins) and cutoffs[0] == origins[0]
  assert np.all((cutoffs - origins[0]) % 168 == 0)
  assert np.all(origins - cutoffs < 168)
  assert len(np.unique(cutoffs)) == int(np.ceil((origins[-1] - origins[0] + 1) / 168))
  np.testing.assert_array_equal(fm.refit_cutoffs(origins, 24), origins)
  with pytest.raises(ValueError, match="every_hours"):
    fm.refit_cutoffs(origins, 0)


def test_linear_ar_grid_matches_single_fits():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 3))
  for model in baselines.fit_linear_ar_grid(x, y, (0.1, 10.0)):
    np.testing.assert_allclose(model.weights, baselines.fit_linear_ar(x, y, l2=model.l2).weights, rtol=1e-12)


def _linear_ar_windows(values: np.ndarray, hours: np.ndarray, length: int, horizon: int):
  z = np.log(values)
  origins = np.arange(length, len(values) - horizon + 1)
  hist, fut = fm.make_windows(z, origins, length, horizon)
  return baselines.linear_ar_features(hist, hours[origins]), fut, origins


def test_linear_ar_refit_reads_nothing_at_or_after_the_cutoff(ciso):
  """Poisoning every hour from the cutoff on (NaN) leaves the refitted ridge unchanged."""
  values, hours = ciso.to_numpy(), fm.hours_since_epoch(ciso.index)
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
  all_rows, fit_rows, val_rows = baselines.past_split(origins, cutoff=cutoff, horizon_hours=48, val_hours=120)
  assert origins[all_rows].max() + 48 <= cutoff and origins[fit_rows].max() + 48 <= cutoff - 120
  assert origins[val_rows].min() >= cutoff - 120


@pytest.fixture(scope="module")
def series_model(ciso):
  cfg = dataclasses.replace(TINY, instance_norm=True, linear_skip_input="series")
  res = fc.train_forecaster(ciso.iloc[:600], config=cfg, train_config=dataclasses.replace(TINY_TRAIN, max_epochs=1))
  return cfg, res


@pytest.mark.parametrize("skip_input", ["series", "window"])
def test_closed_form_parts_equal_the_model_with_the_refitted_path(ciso, trained, series_model, skip_input):
  cfg, params, norm = ((series_model[0], series_model[1].params, series_model[1].normalization)
                       if skip_input == "series" else (TINY, trained.params, trained.normalization))
  values, hours = ciso.to_numpy(), fm.hours_since_epoch(ciso.index)
  windows = fc.frozen_network_windows(params, values, hours, config=cfg, normalization=norm)
  parts = fc.refit_closed_form_parts(windows, cutoff=800, config=cfg, val_hours=120, calibration_hours=200)
  assert parts.calibration is not None and parts.num_windows == 800 - 48 - 168 + 1
  rows = np.arange(len(windows.origins) - 20, len(windows.origins))
  origins = windows.origins[rows]
  hist, _ = fm.make_windows(values, origins, 168, 48)
  expect = fc.predict_quantiles(fc.with_closed_form_parts(params, parts), hist, hours[origins], config=cfg,
                                normalization=norm, calibration=parts.calibration)
  got = norm.inverse(fc.closed_form_quantiles(windows, rows, parts))
  np.testing.assert_allclose(got, expect, rtol=2e-4)
  # With the linear path zeroed out, the windows hold the network alone.
  zero = fc.ClosedFormParts(kernel=np.zeros_like(parts.kernel), bias=np.zeros_like(parts.bias), l2=0.0,
                            calibration=None, cutoff=0, num_windows=0)
  np.testing.assert_allclose(fc.closed_form_quantiles(windows, rows, zero), windows.net_q_z[rows], rtol=1e-6)


@pytest.mark.parametrize("fit_target", ["residual", "target"])
def test_rolling_refit_never_sees_data_at_or_after_the_origin(ciso, series_model, fit_target):
  """Each forecast (model and linear AR) is unchanged when every hour from its origin on is NaN."""
  cfg, res = series_model
  values, hours = ciso.to_numpy(), fm.hours_since_epoch(ciso.index)
  origins = fm.rolling_origins(ciso.index, start=ciso.index[600], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48, step_hours=24)
  cutoffs = fm.refit_cutoffs(origins, 48)
  assert len(np.unique(cutoffs)) > 1

  def run(v, count):  # The rolling evaluation of the first ``count`` origins on the series ``v``.
    windows = fc.frozen_network_windows(res.params, v, hours, config=cfg, normalization=res.normalization)
    rows = origins[:count] - windows.origins[0]
    q, parts = fc.rolling_refit_quantiles(windows, rows, cutoffs[:count], config=cfg, val_hours=96,
                                          fit_target=fit_target, calibration_hours=120)
    x, y, w_origins = _linear_ar_windows(v, hours, 168, 48)
    lin, refits = baselines.rolling_refit_linear_ar(x, y, w_origins, rows, cutoffs[:count], horizon_hours=48,
                                                    val_hours=96, l2_grid=(0.1, 1.0, 10.0))
    return q, lin, parts, refits

  q, lin, parts, refits = run(values, len(origins))
  assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=-1) >= 0)
  assert [p.cutoff for p in parts] == [r["cutoff"] for r in refits] == sorted(set(cutoffs.tolist()))
  # A later refit has seen more windows than an earlier one.
  assert all(a.num_windows < b.num_windows for a, b in zip(parts, parts[1:]))
  # Origins right at a refit (cutoff == origin) and between refits are both checked.
  assert np.any(cutoffs == origins) and np.any(cutoffs < origins)
  for k in range(len(origins)):
    poisoned = values.copy()
    poisoned[origins[k]:] = np.nan
    q_k, lin_k, _, _ = run(poisoned, k + 1)
    # Equal up to BLAS rounding (the batches differ in size); any read of a poisoned hour gives NaN.
    np.testing.assert_allclose(q_k[k], q[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lin_k[k], lin[k], rtol=1e-10, atol=1e-12)
  # The check has teeth: poisoning the last history hour of an origin changes its forecasts; and a
  # schedule whose cutoff passes its origin is refused.
  k = int(np.flatnonzero(cutoffs < origins)[0])
  poisoned = values.copy()
  poisoned[origins[k] - 1:] = np.nan
  q_k, lin_k, _, _ = run(poisoned, k + 1)
  assert not np.any(np.isfinite(q_k[k])) and not np.any(np.isfinite(lin_k[k]))
  with pytest.raises(ValueError, match="after the origin"):
    windows = fc.frozen_network_windows(res.params, values, hours, config=cfg, normalization=res.normalization)
    fc.rolling_refit_quantiles(windows, origins - windows.origins[0], cutoffs + 25, config=cfg, val_hours=96)


def test_refit_refuses_models_it_cannot_refit(trained_global, ciso):
  with pytest.raises(ValueError, match="single-region"):
    fc.frozen_network_windows(trained_global.params, ciso.to_numpy(), fm.hours_since_epoch(ciso.index),
                              config=GLOBAL, normalization=trained_global.normalization)
