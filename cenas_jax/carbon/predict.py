"""Forecasts of a trained forecaster, in gCO2eq/kWh: batches of windows or the hours after a series."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import windows
from cenas_jax.carbon.calibration import QuantileCalibration
from cenas_jax.carbon.model import ForecasterConfig, apply_quantiles
from cenas_jax.carbon.normalization import Normalization


def predict_quantiles(params: Any, hist_ci_g_per_kwh: np.ndarray, origin_hours: np.ndarray, *,
                      config: ForecasterConfig, normalization: Normalization,
                      hist_extra: np.ndarray | None = None, batch_size: int = 512,
                      calibration: QuantileCalibration | None = None,
                      region_index: int | None = None) -> np.ndarray:
  """Quantile forecasts for a batch of history windows.

  Args:
    params: trained parameters.
    hist_ci_g_per_kwh: ``(N, history_hours)`` carbon intensity (gCO2eq/kWh), oldest first.
    origin_hours: ``(N,)`` hours since the Unix epoch of each first forecast hour (the hour right
      after the window's last value).
    config: the model's config.
    normalization: the normalization the model was trained with.
    hist_extra: ``(N, history_hours, E)`` extra columns in their original units, when the model uses them.
    batch_size: windows per forward pass.
    calibration: recalibrates the non-median quantiles (see ``QuantileCalibration``); ``None``:
      the model's own quantiles.
    region_index: the region of every window, for a multi-region model (``config.num_regions > 1``).

  Returns:
    ``(N, horizon_hours, Q)`` carbon intensity (gCO2eq/kWh), non-decreasing along Q.
  """
  hist = np.asarray(hist_ci_g_per_kwh, np.float64)
  if hist.ndim != 2 or hist.shape[1] != config.history_hours:
    raise ValueError(f"Expected history of shape (N, {config.history_hours}), got {hist.shape}.")
  if not np.all(np.isfinite(hist)) or np.any(hist <= 0):
    raise ValueError("History carbon intensity must be finite and > 0 gCO2eq/kWh.")
  hist_z = normalization.transform(hist)
  extra_z = None
  if config.num_extra_features:
    if hist_extra is None:
      raise ValueError(f"This forecaster needs {config.num_extra_features} extra columns "
                       f"{normalization.extra_names}.")
    extra_z = normalization.transform_extra(hist_extra)
  region = None
  if config.num_regions > 1:
    if region_index is None or not 0 <= region_index < config.num_regions:
      raise ValueError(f"This forecaster covers {config.num_regions} regions: pass region_index in "
                       f"[0, {config.num_regions}) (or specialize_params it to one region).")
    region = np.full(hist.shape[0], region_index, np.int32)
  origin_hours = np.asarray(origin_hours, np.int32)
  outs = []
  for i in range(0, hist.shape[0], batch_size):
    sl = slice(i, i + batch_size)
    outs.append(np.asarray(apply_quantiles(params, hist_z[sl], origin_hours[sl],
                                           None if extra_z is None else extra_z[sl], config,
                                           None if region is None else region[sl])))
  out = np.concatenate(outs, axis=0) if outs else np.zeros((0, config.horizon_hours, len(config.quantiles)))
  if calibration is not None:
    if tuple(calibration.quantiles) != tuple(config.quantiles):
      raise ValueError(f"The calibration is for quantiles {calibration.quantiles}, the model predicts "
                       f"{config.quantiles}.")
    out = calibration.apply(out, hist_z)
  return normalization.inverse(out)


def _as_series(history: Any, last_hour: Any) -> pd.Series:
  """``history`` as an hourly Series on a UTC index (an array needs the time of its last value)."""
  if isinstance(history, pd.Series):
    return history
  values = np.asarray(history, dtype=np.float64)
  if values.ndim != 1:
    raise ValueError(f"forecast() history must be 1-D (hours, oldest first), got shape {values.shape}.")
  if last_hour is None:
    raise ValueError("an array history has no times, and the forecast depends on the hour of day and "
                     "the weekday: pass last_hour= (the UTC time of its last value) or a pandas Series "
                     "on a UTC index.")
  end = pd.Timestamp(last_hour)
  end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
  if end != end.floor("h"):
    raise ValueError(f"last_hour={last_hour!r} is not on the hour.")
  return pd.Series(values, index=pd.date_range(end=end, periods=len(values), freq="h"))


def forecast(params: Any, history: pd.Series | np.ndarray, *, config: ForecasterConfig,
             normalization: Normalization, history_extra: pd.DataFrame | None = None,
             calibration: QuantileCalibration | None = None, last_hour: Any = None) -> pd.DataFrame:
  """Forecasts the hours after the end of ``history``.

  Args:
    params: trained parameters.
    history: hourly carbon intensity (gCO2eq/kWh) on a UTC index; its last ``history_hours`` values
      are used and must be contiguous. A 1-D array (or list) is taken with ``last_hour``.
    config: the model's config.
    normalization: the normalization the model was trained with.
    history_extra: extra columns on ``history``'s index, when the model uses them.
    calibration: the forecaster's quantile calibration (``None``: the model's own quantiles).
    last_hour: UTC time of the last value of an array ``history`` (ignored for a Series).

  Returns:
    A DataFrame indexed by the next ``horizon_hours`` hourly UTC timestamps with one column per
    quantile (``p10``, ``p50``, ``p90`` by default), in gCO2eq/kWh.
  """
  history = _as_series(history, last_hour)
  if len(history) < config.history_hours:
    raise ValueError(f"forecast() needs at least {config.history_hours} hours of history, got {len(history)}.")
  window = history.iloc[-config.history_hours:]
  windows.check_hourly(window, name="forecast history")
  extra = None
  if config.num_extra_features:
    if history_extra is None:
      raise ValueError(f"This forecaster needs history_extra with columns {normalization.extra_names}.")
    extra = history_extra.loc[window.index].to_numpy()[None]
  origin = window.index[-1] + pd.Timedelta(hours=1)
  q = predict_quantiles(params, window.to_numpy()[None], windows.hours_since_epoch(pd.DatetimeIndex([origin])),
                        config=config, normalization=normalization, hist_extra=extra,
                        calibration=calibration)[0]
  index = pd.date_range(origin, periods=config.horizon_hours, freq="h")
  return pd.DataFrame(q, index=index, columns=fm.quantile_names(config.quantiles))


class ForecastCache:
  """P50 forecasts (gCO2eq/kWh, next 24 h) of a saved forecaster for every origin of one trace,
  computed on demand in blocks of ``block`` consecutive origins and kept.

  ``cache(t)`` is the forecast made at trace hour ``t`` from the ``history_hours`` before it: what an
  allocation agent reads as its view of the coming day.
  """

  def __init__(self, forecaster_dir: str, ci_g_per_kwh: np.ndarray, trace_start: Any, block: int = 128):
    from cenas_jax.carbon.forecaster_io import restore_forecaster  # pylint: disable=g-import-not-at-top

    self._tf = restore_forecaster(forecaster_dir)
    self._ci = ci_g_per_kwh
    self._t0 = int(windows.hours_since_epoch(pd.DatetimeIndex([pd.Timestamp(trace_start)]))[0])
    self._block = block
    self._cache: dict[int, np.ndarray] = {}
    self._p50 = list(self._tf.config.quantiles).index(0.5)
    self._hist = self._tf.config.history_hours

  def __call__(self, t: int) -> np.ndarray:
    if t not in self._cache:
      if t < self._hist:
        raise ValueError(f"a forecast at trace hour {t} needs {self._hist} hours of history")
      origins = np.arange(t, min(t + self._block, len(self._ci) + 1))
      hist = np.stack([self._ci[o - self._hist: o] for o in origins])
      q = predict_quantiles(self._tf.params, hist, origins + self._t0, config=self._tf.config,
                            normalization=self._tf.normalization)
      for o, f in zip(origins, q[:, :24, self._p50]):
        self._cache[int(o)] = f
    return self._cache[t]
