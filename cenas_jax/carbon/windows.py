"""Hourly time handling and rolling-origin windows of carbon-intensity series (NumPy, no JAX).

- ``hours_since_epoch``, ``calendar_features``, ``check_hourly``: timestamps as integer hours since
  the Unix epoch, their calendar features, and the check that a series is gap-free hourly UTC.
- ``rolling_origins``, ``make_windows``: forecast origins of a rolling-origin evaluation and the
  ``(history, future)`` windows around them.
- ``refit_cutoffs``, ``refit_groups``, ``windows_before``, ``past_split``: the refit schedule of an
  operational (refitted) forecaster and which windows a refit at a cutoff may read.

An origin ``o`` (a position in the series) is the first forecast hour: its window reads history
``[o - history_hours, o)`` and targets ``[o, o + horizon_hours)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NUM_CALENDAR_FEATURES = 6
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_DAYS_PER_YEAR = 365.2425


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



def windows_before(origins: np.ndarray, *, cutoff: int, horizon_hours: int) -> np.ndarray:
  """Mask of the windows whose targets end strictly before ``cutoff``.

  A window at origin position ``o`` reads history ``[o - L, o)`` and targets ``[o, o + H)``; it is
  usable for a fit at ``cutoff`` when ``o + H <= cutoff``, so it touches no hour at or after ``cutoff``.

  Args:
    origins: ``(N,)`` origin positions (hours into the series).
    cutoff: position of the first hour the fit must not see.
    horizon_hours: H.
  """
  return np.asarray(origins, np.int64) + int(horizon_hours) <= int(cutoff)


def past_split(origins: np.ndarray, *, cutoff: int, horizon_hours: int,
               val_hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Row indices of the windows a refit at ``cutoff`` may use, and their time-ordered split.

  Args:
    origins: ``(N,)`` origin positions.
    cutoff: position of the first hour the refit must not see.
    horizon_hours: H.
    val_hours: length of the validation slice, the last ``val_hours`` hours before ``cutoff``.

  Returns:
    ``(all_rows, fit_rows, val_rows)``: every window with targets before ``cutoff``; those with
    targets before the validation slice; those with origins inside it.
  """
  origins = np.asarray(origins, np.int64)
  val_start = int(cutoff) - int(val_hours)
  all_rows = np.flatnonzero(windows_before(origins, cutoff=cutoff, horizon_hours=horizon_hours))
  fit_rows = all_rows[origins[all_rows] + horizon_hours <= val_start]
  val_rows = all_rows[origins[all_rows] >= val_start]
  return all_rows, fit_rows, val_rows
