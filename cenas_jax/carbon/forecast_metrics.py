"""Rolling-origin evaluation of hourly carbon-intensity forecasts.

Holds what the transformer forecaster, the baselines and the experiment binary share, with no JAX:

- ``Normalization``: log + standardization of carbon intensity (and optional extra columns), fitted on
  training data only and stored next to a trained model.
- ``calendar_features``: hour of day, day of week and day of year as sin/cos pairs, computed from
  integer hours since the Unix epoch (works on NumPy and ``jax.numpy`` arrays alike).
- Window helpers: ``hours_since_epoch``, ``check_hourly``, ``rolling_origins``, ``make_windows``,
  ``refit_cutoffs`` (the refit schedule of an operational, refitted forecaster).
- ``QuantileCalibration``: per-horizon-hour shifts of the non-median quantiles, fitted on validation
  windows (split-conformal style) so that each quantile level's empirical frequency matches it.
- Metrics (fractions, not percent): ``mape_by_day``, ``interval_coverage``, ``ape_quantile``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import pandas as pd

NUM_CALENDAR_FEATURES = 6
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_DAYS_PER_YEAR = 365.2425


# ----------------------------------------------------------------------------------------------
# Time handling.
# ----------------------------------------------------------------------------------------------
def hours_since_epoch(index: pd.DatetimeIndex) -> np.ndarray:
  """Whole hours since 1970-01-01 00:00 UTC of each timestamp (int64)."""
  if index.tz is None:
    raise ValueError("Timestamps must be timezone-aware UTC (got a naive DatetimeIndex).")
  return np.asarray((index.tz_convert("UTC") - _EPOCH) // pd.Timedelta(hours=1), dtype=np.int64)


def calendar_features(hours: Any, xp: Any = np) -> Any:
  """Calendar features of hourly timestamps given as integer hours since the Unix epoch.

  Args:
    hours: integer array of any shape, hours since 1970-01-01 00:00 UTC.
    xp: the array module (``numpy`` or ``jax.numpy``).

  Returns:
    float32 array of shape ``hours.shape + (6,)``: sin/cos of hour of day (period 24 h), of day of
    week (period 7 days) and of day of year (period 365.2425 days).
  """
  hours = xp.asarray(hours)
  hour_of_day = (hours % 24).astype(xp.float32)
  day = hours // 24
  day_of_week = ((day + 3) % 7).astype(xp.float32)  # 1970-01-01 was a Thursday (Monday = 0).
  day_of_year = (day % 146097).astype(xp.float32) % _DAYS_PER_YEAR  # 146097 days = 400 years.
  two_pi = 2.0 * np.pi
  phases = [two_pi * hour_of_day / 24.0, two_pi * day_of_week / 7.0, two_pi * day_of_year / _DAYS_PER_YEAR]
  feats = []
  for p in phases:
    feats += [xp.sin(p), xp.cos(p)]
  return xp.stack(feats, axis=-1).astype(xp.float32)


def check_hourly(ci_g_per_kwh: pd.Series, *, name: str = "trace") -> None:
  """Raises ``ValueError`` unless the series is a gap-free hourly UTC series of positive numbers.

  Args:
    ci_g_per_kwh: carbon intensity in gCO2eq/kWh on a UTC ``DatetimeIndex``.
    name: what to call the series in the error (a file name, a flag).
  """
  if not isinstance(ci_g_per_kwh, pd.Series) or not isinstance(ci_g_per_kwh.index, pd.DatetimeIndex):
    raise ValueError(f"{name}: expected a pandas Series on a DatetimeIndex, got {type(ci_g_per_kwh).__name__}.")
  if ci_g_per_kwh.index.tz is None:
    raise ValueError(f"{name}: the index must be timezone-aware UTC.")
  if len(ci_g_per_kwh) < 2:
    raise ValueError(f"{name}: needs at least 2 hourly values, got {len(ci_g_per_kwh)}.")
  steps = np.diff(hours_since_epoch(ci_g_per_kwh.index))
  if np.any(steps != 1):
    bad = int(np.argmax(steps != 1))
    raise ValueError(
        f"{name}: not a contiguous hourly series: {ci_g_per_kwh.index[bad]} is followed by "
        f"{ci_g_per_kwh.index[bad + 1]}. Fill or cut the gap before forecasting.")
  values = ci_g_per_kwh.to_numpy(dtype=np.float64)
  if not np.all(np.isfinite(values)):
    bad = int(np.argmax(~np.isfinite(values)))
    raise ValueError(f"{name}: non-finite carbon intensity at {ci_g_per_kwh.index[bad]}.")
  if np.any(values <= 0):
    bad = int(np.argmax(values <= 0))
    raise ValueError(f"{name}: carbon intensity must be > 0 gCO2eq/kWh; got {values[bad]} at "
                     f"{ci_g_per_kwh.index[bad]}.")


# ----------------------------------------------------------------------------------------------
# Normalization.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Normalization:
  """Maps carbon intensity (gCO2eq/kWh) to the model's scale and back.

  ``z = (log(ci) - ci_mean) / ci_std`` when ``log_target`` (errors then are relative errors), else
  ``z = (ci - ci_mean) / ci_std``. Extra columns (e.g. generation by source, MWh) are standardized.

  Attributes:
    log_target: whether the log of the carbon intensity is modelled.
    ci_mean: mean of (log) carbon intensity over the fitting data.
    ci_std: standard deviation of (log) carbon intensity over the fitting data.
    extra_mean: per-column mean of the extra columns (empty when there are none).
    extra_std: per-column standard deviation of the extra columns.
    extra_names: names of the extra columns, in order.
    fitted_start: first timestamp (ISO, UTC) of the data the statistics were fitted on.
    fitted_end: last timestamp (ISO, UTC) of the data the statistics were fitted on.
  """

  log_target: bool
  ci_mean: float
  ci_std: float
  extra_mean: tuple[float, ...] = ()
  extra_std: tuple[float, ...] = ()
  extra_names: tuple[str, ...] = ()
  fitted_start: str = ""
  fitted_end: str = ""

  @property
  def num_extra(self) -> int:
    return len(self.extra_mean)

  def transform(self, ci_g_per_kwh: Any) -> np.ndarray:
    """gCO2eq/kWh -> normalized float32 values."""
    x = np.asarray(ci_g_per_kwh, dtype=np.float64)
    if self.log_target:
      x = np.log(x)
    return ((x - self.ci_mean) / self.ci_std).astype(np.float32)

  def inverse(self, z: Any) -> np.ndarray:
    """Normalized values -> gCO2eq/kWh (float64)."""
    x = np.asarray(z, dtype=np.float64) * self.ci_std + self.ci_mean
    return np.exp(x) if self.log_target else x

  def transform_extra(self, extra: Any) -> np.ndarray:
    """Extra columns ``(..., num_extra)`` -> standardized float32."""
    x = np.asarray(extra, dtype=np.float64)
    if x.shape[-1] != self.num_extra:
      raise ValueError(f"Expected {self.num_extra} extra columns {self.extra_names}, got {x.shape[-1]}.")
    return ((x - np.asarray(self.extra_mean)) / np.asarray(self.extra_std)).astype(np.float32)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Normalization":
    d = dict(d)
    for k in ("extra_mean", "extra_std", "extra_names"):
      d[k] = tuple(d.get(k, ()))
    return cls(**d)


def fit_normalization(ci_g_per_kwh: pd.Series, extra: pd.DataFrame | None = None, *,
                      log_target: bool = True) -> Normalization:
  """Fits a ``Normalization`` on the given (training) data only.

  Args:
    ci_g_per_kwh: training carbon intensity, gCO2eq/kWh, hourly UTC series.
    extra: optional extra columns on the same index (e.g. generation by source, MWh).
    log_target: model log carbon intensity.

  Returns:
    The fitted normalization; ``fitted_start``/``fitted_end`` record the data it saw.
  """
  check_hourly(ci_g_per_kwh, name="training series")
  x = ci_g_per_kwh.to_numpy(dtype=np.float64)
  if log_target:
    x = np.log(x)
  std = float(np.std(x))
  extra_mean: tuple[float, ...] = ()
  extra_std: tuple[float, ...] = ()
  names: tuple[str, ...] = ()
  if extra is not None:
    if not extra.index.equals(ci_g_per_kwh.index):
      raise ValueError("The extra columns must share the carbon-intensity series' index.")
    e = extra.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(e)):
      raise ValueError("The extra columns contain non-finite values.")
    extra_mean = tuple(float(v) for v in e.mean(axis=0))
    extra_std = tuple(float(v) if v > 0 else 1.0 for v in e.std(axis=0))
    names = tuple(str(c) for c in extra.columns)
  return Normalization(
      log_target=log_target, ci_mean=float(np.mean(x)), ci_std=std if std > 0 else 1.0,
      extra_mean=extra_mean, extra_std=extra_std, extra_names=names,
      fitted_start=ci_g_per_kwh.index[0].isoformat(), fitted_end=ci_g_per_kwh.index[-1].isoformat())


# ----------------------------------------------------------------------------------------------
# Quantile calibration.
# ----------------------------------------------------------------------------------------------
def order_quantiles(q_z: np.ndarray, median_index: int, min_gap: float = 1e-4) -> np.ndarray:
  """Makes quantiles non-decreasing along the last axis without moving the median.

  Levels below the median are capped at the next level up minus ``min_gap``, levels above it are
  floored at the next level down plus ``min_gap`` (both walking outwards from the median).

  Args:
    q_z: ``(..., Q)`` quantile forecasts (any unit).
    median_index: position of the median along the last axis.
    min_gap: smallest gap kept between neighbouring levels (same unit as ``q_z``).

  Returns:
    A copy of ``q_z`` with ``q[..., j] < q[..., j + 1]`` everywhere.
  """
  out = np.array(q_z, dtype=np.float64, copy=True)
  for j in range(median_index - 1, -1, -1):
    out[..., j] = np.minimum(out[..., j], out[..., j + 1] - min_gap)
  for j in range(median_index + 1, out.shape[-1]):
    out[..., j] = np.maximum(out[..., j], out[..., j - 1] + min_gap)
  return out


@dataclasses.dataclass(frozen=True)
class QuantileCalibration:
  """Per-horizon-hour shifts of the non-median quantiles, fitted on held-out windows.

  For each quantile level ``tau`` other than 0.5 and each horizon hour ``h``, ``shift[j][h]`` is the
  ``tau`` quantile of ``(y - q_tau) / s`` over the calibration windows, where ``y`` and ``q_tau`` are
  the actual value and the model's ``tau`` quantile in the normalized space and ``s`` is the window's
  own standard deviation of its normalized history (or 1 when ``per_window_scale`` is off). Adding
  ``shift * s`` to ``q_tau`` makes exactly a fraction ``tau`` of the calibration values fall below it
  (split-conformal quantile recalibration). The median is never moved, and the result is reordered
  with ``order_quantiles`` so that P10 <= P50 <= P90 always holds.

  Attributes:
    quantiles: the quantile levels, as in the model's config.
    shift: ``Q`` tuples of ``H`` shifts (0 for the median), normalized units per window scale.
    per_window_scale: whether shifts are multiplied by each window's history standard deviation.
    num_windows: calibration windows the shifts were fitted on.
    fitted_start: first forecast hour (ISO, UTC) of the calibration windows.
    fitted_end: last forecast hour (ISO, UTC) of the calibration windows.
  """

  quantiles: tuple[float, ...]
  shift: tuple[tuple[float, ...], ...]
  per_window_scale: bool
  num_windows: int
  fitted_start: str = ""
  fitted_end: str = ""

  @property
  def median_index(self) -> int:
    return list(self.quantiles).index(0.5)

  def apply(self, q_z: np.ndarray, hist_z: np.ndarray) -> np.ndarray:
    """Calibrated, ordered ``(N, H, Q)`` quantiles from the model's ``(N, H, Q)`` normalized ones.

    Args:
      q_z: the model's quantiles in the normalized space.
      hist_z: ``(N, L)`` the normalized history windows they were forecast from.
    """
    q_z = np.asarray(q_z, np.float64)
    shift = np.asarray(self.shift, np.float64).T  # (H, Q)
    if q_z.shape[-2:] != shift.shape:
      raise ValueError(f"Calibration is for (horizon, quantiles) {shift.shape}, forecasts are "
                       f"{q_z.shape[-2:]}.")
    scale = _window_scale(hist_z) if self.per_window_scale else np.ones((q_z.shape[0], 1))
    return order_quantiles(q_z + shift[None] * scale[:, :, None], self.median_index)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["quantiles"] = list(self.quantiles)
    d["shift"] = [list(s) for s in self.shift]
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "QuantileCalibration":
    return cls(**{**d, "quantiles": tuple(float(q) for q in d["quantiles"]),
                  "shift": tuple(tuple(float(v) for v in s) for s in d["shift"])})


def _window_scale(hist_z: np.ndarray) -> np.ndarray:
  """``(N, 1)`` standard deviation of each normalized history window (floored at 0.05)."""
  return np.maximum(np.asarray(hist_z, np.float64).std(axis=-1, keepdims=True), 0.05)


def fit_quantile_calibration(q_z: np.ndarray, target_z: np.ndarray, hist_z: np.ndarray,
                             quantiles: Sequence[float], *, per_window_scale: bool = True,
                             fitted_start: str = "", fitted_end: str = "") -> QuantileCalibration:
  """Fits a ``QuantileCalibration`` on held-out windows (never the training windows).

  Args:
    q_z: ``(N, H, Q)`` the model's quantile forecasts, normalized space.
    target_z: ``(N, H)`` what happened, normalized space.
    hist_z: ``(N, L)`` the normalized history windows.
    quantiles: the ``Q`` quantile levels (must contain 0.5).
    per_window_scale: scale residuals by each window's history standard deviation.
    fitted_start: first forecast hour of the windows (ISO, UTC), for the record.
    fitted_end: last forecast hour of the windows (ISO, UTC), for the record.

  Returns:
    The calibration.
  """
  q_z = np.asarray(q_z, np.float64)
  target_z = np.asarray(target_z, np.float64)
  quantiles = tuple(float(q) for q in quantiles)
  if q_z.ndim != 3 or q_z.shape[:2] != target_z.shape or q_z.shape[-1] != len(quantiles):
    raise ValueError(f"Expected (N, H, {len(quantiles)}) forecasts and (N, H) targets, got {q_z.shape} "
                     f"and {target_z.shape}.")
  if q_z.shape[0] < 20:
    raise ValueError(f"Quantile calibration needs at least 20 held-out windows, got {q_z.shape[0]}; "
                     "lengthen the validation slice (val_fraction).")
  scale = _window_scale(hist_z) if per_window_scale else np.ones((q_z.shape[0], 1))
  resid = (target_z[..., None] - q_z) / scale[:, :, None]  # (N, H, Q)
  shift = np.stack([np.zeros(q_z.shape[1]) if q == 0.5 else np.quantile(resid[..., j], q, axis=0)
                    for j, q in enumerate(quantiles)])  # (Q, H)
  return QuantileCalibration(quantiles=quantiles, shift=tuple(tuple(float(v) for v in s) for s in shift),
                             per_window_scale=per_window_scale, num_windows=int(q_z.shape[0]),
                             fitted_start=fitted_start, fitted_end=fitted_end)


# ----------------------------------------------------------------------------------------------
# Rolling-origin windows.
# ----------------------------------------------------------------------------------------------
def rolling_origins(index: pd.DatetimeIndex, *, start: pd.Timestamp, end: pd.Timestamp,
                    history_hours: int, horizon_hours: int, step_hours: int = 24) -> np.ndarray:
  """Positions (into ``index``) of forecast origins for a rolling-origin evaluation.

  An origin ``o`` is the first forecast hour: history is ``[o - history_hours, o)`` and the forecast
  covers ``[o, o + horizon_hours)``. Origins start at ``start`` (or at the first hour with a full
  history, stepping on from ``start`` in ``step_hours``) and the last forecast hour must be <= ``end``.

  Args:
    index: the hourly index of the whole series (history included).
    start: first origin considered (inclusive, UTC).
    end: last hour a forecast may cover (inclusive, UTC).
    history_hours: length of the history window (h).
    horizon_hours: forecast horizon (h).
    step_hours: hours between consecutive origins.

  Returns:
    int64 array of origin positions (possibly empty).
  """
  hours = hours_since_epoch(index)
  start_h = int(hours_since_epoch(pd.DatetimeIndex([start]))[0])
  end_h = int(hours_since_epoch(pd.DatetimeIndex([end]))[0])
  first_h = int(hours[0]) + history_hours
  if start_h < first_h:  # Keep the origins' phase (e.g. midnight) while skipping short histories.
    start_h += -(-(first_h - start_h) // step_hours) * step_hours
  last_h = min(end_h, int(hours[-1])) - horizon_hours + 1
  if last_h < start_h:
    return np.zeros((0,), np.int64)
  return np.arange(start_h, last_h + 1, step_hours, dtype=np.int64) - int(hours[0])


def refit_cutoffs(origins: np.ndarray, every_hours: int) -> np.ndarray:
  """The refit each origin of a rolling evaluation forecasts with, as a cutoff position.

  Refits happen at the first origin and then every ``every_hours`` hours of test time; an origin
  uses the latest refit at or before it. A refit at cutoff ``c`` may only read hours before ``c``
  (windows whose targets end before ``c``), so no forecast ever depends on data at or after its origin.

  Args:
    origins: ``(N,)`` increasing origin positions (hours into the series).
    every_hours: hours between refits (> 0).

  Returns:
    ``(N,)`` int64 cutoff positions, each ``<=`` its origin.
  """
  origins = np.asarray(origins, np.int64)
  if every_hours <= 0:
    raise ValueError(f"every_hours={every_hours} must be > 0 (refitting off needs no cutoffs).")
  if origins.size == 0:
    return origins.copy()
  if np.any(np.diff(origins) <= 0):
    raise ValueError("Origins must be strictly increasing.")
  first = int(origins[0])
  return first + (origins - first) // int(every_hours) * int(every_hours)


def refit_groups(cutoffs: np.ndarray, eval_origins: np.ndarray) -> list[tuple[int, np.ndarray]]:
  """``(cutoff, mask)`` per distinct refit cutoff, in time order: the evaluated origins it serves.

  Raises:
    ValueError: a cutoff lies after the origin it forecasts from (the refit would see the future).
  """
  cutoffs = np.asarray(cutoffs, np.int64)
  if np.any(cutoffs > np.asarray(eval_origins, np.int64)):
    raise ValueError("A refit cutoff lies after the origin it forecasts from.")
  return [(int(c), cutoffs == c) for c in np.unique(cutoffs)]


def make_windows(values: np.ndarray, origins: np.ndarray, history_hours: int,
                 horizon_hours: int) -> tuple[np.ndarray, np.ndarray]:
  """Gathers ``(history, future)`` windows of ``values`` (first axis is time) at ``origins``.

  Returns:
    ``history`` of shape ``(N, history_hours, ...)`` and ``future`` ``(N, horizon_hours, ...)``.
  """
  values = np.asarray(values)
  origins = np.asarray(origins, dtype=np.int64)
  hist_idx = origins[:, None] + np.arange(-history_hours, 0)[None, :]
  fut_idx = origins[:, None] + np.arange(horizon_hours)[None, :]
  if origins.size and (hist_idx.min() < 0 or fut_idx.max() >= values.shape[0]):
    raise ValueError("A window reaches outside the series; compute origins with rolling_origins().")
  return values[hist_idx], values[fut_idx]


# ----------------------------------------------------------------------------------------------
# Metrics (fractions, not percent).
# ----------------------------------------------------------------------------------------------
def absolute_percentage_errors(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  """``|predicted - actual| / actual`` elementwise (a fraction); ``actual`` must be > 0."""
  actual = np.asarray(actual, dtype=np.float64)
  predicted = np.asarray(predicted, dtype=np.float64)
  if actual.shape != predicted.shape:
    raise ValueError(f"Shapes differ: actual {actual.shape} vs predicted {predicted.shape}.")
  if np.any(actual <= 0):
    raise ValueError("APE needs actual values > 0.")
  return np.abs(predicted - actual) / actual


def mape_by_day(actual: np.ndarray, predicted: np.ndarray, *, hours_per_bucket: int = 24) -> list[float]:
  """MAPE (fraction) per horizon bucket: hours 1-24, 25-48, ... of ``(N, H)`` forecasts."""
  ape = absolute_percentage_errors(actual, predicted)
  horizon = ape.shape[-1]
  if horizon % hours_per_bucket:
    raise ValueError(f"Horizon {horizon} h is not a multiple of {hours_per_bucket} h.")
  return [float(ape[..., b:b + hours_per_bucket].mean()) for b in range(0, horizon, hours_per_bucket)]


def interval_coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
  """Fraction of actual values inside ``[lower, upper]``."""
  actual = np.asarray(actual)
  return float(np.mean((actual >= np.asarray(lower)) & (actual <= np.asarray(upper))))


def ape_quantile(actual: np.ndarray, predicted: np.ndarray, q: float = 0.9) -> float:
  """The ``q`` quantile of the absolute percentage errors over all forecasts and hours (fraction)."""
  return float(np.quantile(absolute_percentage_errors(actual, predicted), q))


def point_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
  """``mape_by_day`` (4 x 24 h buckets for a 96 h horizon), ``mape_mean`` and ``ape_p90``."""
  by_day = mape_by_day(actual, predicted)
  return {"mape_by_day": by_day, "mape_mean": float(np.mean(by_day)),
          "ape_p90": ape_quantile(actual, predicted, 0.9)}


def quantile_names(quantiles: Sequence[float]) -> list[str]:
  """Column names ``p10``, ``p50``, ... for quantile levels."""
  return [f"p{round(q * 100):02d}" for q in quantiles]
