"""Tests of the carbon-intensity forecaster: model, training, prediction, save/restore and refits (tiny configs, real trace)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cenas_jax import carbon as fc
from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import windows as win
from cenas_jax.data import carbon_traces
from cenas_jax.errors import CenasError, DataError, DataUnavailableError

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
  expected = fc.fit_normalization(ciso.iloc[:val_pos])
  assert result.normalization.ci_mean == pytest.approx(expected.ci_mean)
  assert result.normalization.ci_std == pytest.approx(expected.ci_std)
  assert pd.Timestamp(result.normalization.fitted_end) < pd.Timestamp(result.val_start)


def test_ridge_init_starts_from_the_linear_model(ciso):
  """With training frozen at epoch 0, the model's median equals a ridge fitted on its inputs."""
  tc = dataclasses.replace(TINY_TRAIN, max_epochs=0)
  result = fc.train_forecaster(ciso, config=TINY, train_config=tc)
  assert result.best_epoch == 0 and result.history[0]["ridge_l2"] in tc.ridge_l2_grid
  # A ridge that knows the history forecasts far better than a constant.
  origins = win.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, fut = win.make_windows(ciso.to_numpy(), origins, 168, 48)
  q = fc.predict_quantiles(result.params, hist, win.hours_since_epoch(ciso.index)[origins], config=TINY,
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


def test_one_forecaster_object_takes_numpy_or_pandas(trained, ciso):
  """Regression: forecast() needed four pieces and failed on a numpy history with 'iloc'."""
  forecaster = trained.forecaster()
  history = ciso.iloc[:400]
  expected = forecaster.forecast(history)
  pd.testing.assert_frame_equal(expected, fc.forecast(trained.params, history, config=TINY,
                                                      normalization=trained.normalization,
                                                      calibration=trained.calibration))
  pd.testing.assert_frame_equal(expected, forecaster.forecast(history.to_numpy(), last_hour=history.index[-1]))
  pd.testing.assert_frame_equal(expected, trained.forecast(list(history), last_hour=str(history.index[-1])))
  with pytest.raises(ValueError, match="last_hour"):
    forecaster.forecast(history.to_numpy())


def test_save_restore_roundtrip(trained, ciso, tmp_path):
  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization,
                            metadata={"region": "US-CAL-CISO"})
  restored = fc.restore_forecaster(path)
  assert restored.config == TINY and restored.normalization == trained.normalization
  assert restored.metadata == {"region": "US-CAL-CISO"}
  # Every parameter comes back bit for bit, with the same structure and dtype.
  assert jax.tree.structure(restored.params) == jax.tree.structure(trained.params)
  for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(restored.params)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
  history = ciso.iloc[:300]
  a = fc.forecast(trained.params, history, config=TINY, normalization=trained.normalization)
  pd.testing.assert_frame_equal(a, restored.forecast(history))
  with pytest.raises(FileExistsError):
    fc.save_forecaster(path, trained.params, config=TINY, normalization=trained.normalization)


def test_forecast_cache_serves_each_origins_p50(trained, ciso, tmp_path):
  from cenas_jax.carbon.predict import ForecastCache

  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization)
  ci = ciso.to_numpy()
  cache = ForecastCache(str(path), ci, ciso.index[0], block=8)
  for t in (168, 175, 300):  # first origin, the end of the first block, another block
    direct = fc.forecast(trained.params, ciso.iloc[t - 168:t], config=TINY, normalization=trained.normalization)
    np.testing.assert_allclose(cache(t), direct["p50"].to_numpy()[:24], rtol=1e-5)
  with pytest.raises(ValueError, match="168 hours of history"):
    cache(10)


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


# Orbax's reader leaves a callback on its closed event loop when an array fails to read (as in
# tests/training/test_checkpoint.py).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_or_missing_parameters_give_one_clear_error(trained, tmp_path):
  path = fc.save_forecaster(tmp_path / "f", trained.params, config=TINY, normalization=trained.normalization)
  arrays = [f for f in (path / "params").rglob("*") if f.is_file() and "extra" not in f.parts
            and f.name not in ("_CHECKPOINT_METADATA", "_METADATA")]
  assert arrays
  for f in arrays:  # Damage the stored arrays.
    f.write_bytes(b"\0garbage")
  with pytest.raises(CenasError, match="cannot restore the forecaster's parameters") as err:
    fc.restore_forecaster(path)
  assert isinstance(err.value, DataError) and str(path / "params") in str(err.value)
  shutil.rmtree(path / "params" / "0")  # The step is gone: still one clear error.
  with pytest.raises(DataError, match="cannot restore"):
    fc.restore_forecaster(path)


# ----------------------------------------------------------------------------------------------
# Quantile calibration.
# ----------------------------------------------------------------------------------------------
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
    assert norm.ci_mean == pytest.approx(fc.fit_normalization(series.iloc[:val_pos]).ci_mean)
  assert set(res.history[0]["val_mape_by_region"]) == {"US-CAL-CISO", "US-MIDA-PJM"}
  assert res.history[0]["val_mape"] == res.history[0]["val_mape_by_region"]["US-CAL-CISO"]
  assert len(res.history[0]["ridge_l2"]) == 2
  assert res.params["linear_skip"]["kernel"].shape == (2, 168 + win.NUM_CALENDAR_FEATURES, 48)
  assert res.history[2]["train_loss"] < res.history[1]["train_loss"]
  assert res.calibration is not None


def test_specialize_params_equals_the_global_model(trained_global, pjm):
  res = trained_global
  origins = win.rolling_origins(pjm.index, start=pjm.index[168], end=pjm.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = win.make_windows(pjm.to_numpy(), origins, 168, 48)
  hours = win.hours_since_epoch(pjm.index)[origins]
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
  expected = fc.fit_normalization(pjm.iloc[:val_pos])
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
  origins = win.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = win.make_windows(ciso.to_numpy(), origins, 168, 48)
  hist_z = trained.normalization.transform(hist)
  hours = jnp.asarray(win.hours_since_epoch(ciso.index)[origins], jnp.int32)
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
  origins = win.rolling_origins(ciso.index, start=ciso.index[168], end=ciso.index[-1], history_hours=168,
                               horizon_hours=48)
  hist, _ = win.make_windows(ciso.to_numpy(), origins, 168, 48)
  hours = win.hours_since_epoch(ciso.index)[origins]
  q = fc.predict_quantiles(res.params, hist, hours, config=cfg, normalization=res.normalization)
  hist_z = res.normalization.transform(hist)
  skip = res.params["linear_skip"]
  x = np.concatenate([hist_z, win.calendar_features(hours)], axis=-1)
  ridge = res.normalization.inverse(x @ np.asarray(skip["kernel"]) + np.asarray(skip["bias"]))
  np.testing.assert_allclose(q[..., 1], ridge, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Refitting the closed-form parts on the past.
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def series_model(ciso):
  cfg = dataclasses.replace(TINY, instance_norm=True, linear_skip_input="series")
  res = fc.train_forecaster(ciso.iloc[:600], config=cfg, train_config=dataclasses.replace(TINY_TRAIN, max_epochs=1))
  return cfg, res


@pytest.mark.parametrize("skip_input", ["series", "window"])
def test_closed_form_parts_equal_the_model_with_the_refitted_path(ciso, trained, series_model, skip_input):
  cfg, params, norm = ((series_model[0], series_model[1].params, series_model[1].normalization)
                       if skip_input == "series" else (TINY, trained.params, trained.normalization))
  values, hours = ciso.to_numpy(), win.hours_since_epoch(ciso.index)
  windows = fc.frozen_network_windows(params, values, hours, config=cfg, normalization=norm)
  parts = fc.refit_closed_form_parts(windows, cutoff=800, config=cfg, val_hours=120, calibration_hours=200)
  assert parts.calibration is not None and parts.num_windows == 800 - 48 - 168 + 1
  rows = np.arange(len(windows.origins) - 20, len(windows.origins))
  origins = windows.origins[rows]
  hist, _ = win.make_windows(values, origins, 168, 48)
  expect = fc.predict_quantiles(fc.with_closed_form_parts(params, parts), hist, hours[origins], config=cfg,
                                normalization=norm, calibration=parts.calibration)
  got = norm.inverse(fc.closed_form_quantiles(windows, rows, parts))
  np.testing.assert_allclose(got, expect, rtol=2e-4)
  # With the linear path zeroed out, the windows hold the network alone.
  zero = fc.ClosedFormParts(kernel=np.zeros_like(parts.kernel), bias=np.zeros_like(parts.bias), l2=0.0,
                            calibration=None, cutoff=0, num_windows=0)
  np.testing.assert_allclose(fc.closed_form_quantiles(windows, rows, zero), windows.net_q_z[rows], rtol=1e-6)


def _linear_ar_windows(values: np.ndarray, hours: np.ndarray, length: int, horizon: int):
  z = np.log(values)
  origins = np.arange(length, len(values) - horizon + 1)
  hist, fut = win.make_windows(z, origins, length, horizon)
  return baselines.linear_ar_features(hist, hours[origins]), fut, origins


@pytest.mark.parametrize("fit_target", ["residual", "target"])
def test_rolling_refit_never_sees_data_at_or_after_the_origin(ciso, series_model, fit_target):
  """Each forecast (model and linear AR) is unchanged when every hour from its origin on is NaN.

  The rolling evaluation runs once on the clean series. Then, once per origin, the series is
  poisoned from that origin on and only what that origin's forecast reads is recomputed: the frozen
  network's windows and the one refit at the origin's cutoff. Linear in the number of origins; any
  read of a poisoned hour gives NaN.
  """
  cfg, res = series_model
  values, hours = ciso.to_numpy(), win.hours_since_epoch(ciso.index)
  origins = win.rolling_origins(ciso.index, start=ciso.index[600], end=ciso.index[-1], history_hours=168,
                                horizon_hours=48, step_hours=24)
  cutoffs = win.refit_cutoffs(origins, 48)
  # Origins right at a refit (cutoff == origin) and between refits are both checked.
  assert len(np.unique(cutoffs)) > 1 and np.any(cutoffs == origins) and np.any(cutoffs < origins)
  refit_kw = dict(config=cfg, val_hours=96, fit_target=fit_target, calibration_hours=120)
  lin_kw = dict(horizon_hours=48, val_hours=96, l2_grid=(0.1, 1.0, 10.0))

  def windows_of(v):
    frozen = fc.frozen_network_windows(res.params, v, hours, config=cfg, normalization=res.normalization)
    return frozen, _linear_ar_windows(v, hours, 168, 48)

  frozen, (x, y, w_origins) = windows_of(values)
  rows = origins - frozen.origins[0]
  q, parts = fc.rolling_refit_quantiles(frozen, rows, cutoffs, **refit_kw)
  lin, refits = baselines.rolling_refit_linear_ar(x, y, w_origins, rows, cutoffs, **lin_kw)
  assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=-1) >= 0)
  assert [p.cutoff for p in parts] == [r["cutoff"] for r in refits] == sorted(set(cutoffs.tolist()))
  # A later refit has seen more windows than an earlier one.
  assert all(a.num_windows < b.num_windows for a, b in zip(parts, parts[1:]))

  def forecast_at(k, poison_from):  # Origin k's forecasts with every hour from ``poison_from`` on NaN.
    v = values.copy()
    v[poison_from:] = np.nan
    frozen_v, (x_v, y_v, o_v) = windows_of(v)
    p = fc.refit_closed_form_parts(frozen_v, cutoff=int(cutoffs[k]), **refit_kw)
    ridge, _ = baselines.fit_linear_ar_before(x_v, y_v, o_v, cutoff=int(cutoffs[k]), **lin_kw)
    return fc.closed_form_quantiles(frozen_v, rows[k:k + 1], p)[0], ridge.predict(x_v[rows[k:k + 1]])[0]

  for k, origin in enumerate(origins):
    q_k, lin_k = forecast_at(k, origin)
    # Equal up to BLAS rounding (the design matrices differ in their unread rows only).
    np.testing.assert_allclose(q_k, q[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lin_k, lin[k], rtol=1e-10, atol=1e-12)
  # The check has teeth: poisoning the last history hour of an origin changes its forecasts; and a
  # schedule whose cutoff passes its origin is refused.
  k = int(np.flatnonzero(cutoffs < origins)[0])
  q_k, lin_k = forecast_at(k, origins[k] - 1)
  assert not np.any(np.isfinite(q_k)) and not np.any(np.isfinite(lin_k))
  with pytest.raises(ValueError, match="after the origin"):
    fc.rolling_refit_quantiles(frozen, rows, cutoffs + 25, config=cfg, val_hours=96)


def test_refit_refuses_models_it_cannot_refit(trained_global, ciso):
  with pytest.raises(ValueError, match="single-region"):
    fc.frozen_network_windows(trained_global.params, ciso.to_numpy(), win.hours_since_epoch(ciso.index),
                              config=GLOBAL, normalization=trained_global.normalization)
