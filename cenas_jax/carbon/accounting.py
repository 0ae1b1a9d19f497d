"""Carbon accounting: energy (J) x grid carbon intensity (gCO2eq/kWh) x PUE -> grams of CO2eq.

Conventions:
- Energy is in joules at the boundaries; 1 kWh = 3.6e6 J.
- ``pue`` (power usage effectiveness, >= 1 in a real data centre) scales the IT energy up to the
  facility energy that the grid supplies: ``carbon_g = energy_j * pue / 3.6e6 * ci_g_per_kwh``.
- An hourly carbon trace value ``ci[i]`` holds for the half-open hour ``[i, i + 1)`` counted from the
  trace's first timestamp. A job that runs over ``[start, end)`` is charged each hour's intensity
  weighted by the seconds it overlaps that hour (time-weighted, constant power over the interval).

The scalar helpers are plain arithmetic, so they accept Python floats, NumPy arrays and JAX arrays
alike. Integration over a trace uses NumPy (it runs in simulators, outside jitted code).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import numpy as np

GRAMS_PER_LB = 453.59237  # International avoirdupois pound, exact by definition.
LBS_PER_GRAM = 1.0 / GRAMS_PER_LB
J_PER_KWH = 3.6e6
SECONDS_PER_HOUR = 3600.0


def kwh_to_j(energy_kwh: Any) -> Any:
  """Converts kilowatt-hours to joules."""
  return energy_kwh * J_PER_KWH


def j_to_kwh(energy_j: Any) -> Any:
  """Converts joules to kilowatt-hours."""
  return energy_j / J_PER_KWH


def grams_to_lbs(carbon_g: Any) -> Any:
  """Converts grams to pounds (avoirdupois, 453.59237 g per lb)."""
  return carbon_g * LBS_PER_GRAM


def lbs_to_grams(carbon_lbs: Any) -> Any:
  """Converts pounds (avoirdupois) to grams."""
  return carbon_lbs * GRAMS_PER_LB


def energy_j(power_w: Any, seconds: Any) -> Any:
  """Energy in joules of a constant ``power_w`` (W) drawn for ``seconds`` (s)."""
  return power_w * seconds


def carbon_g(energy_j: Any, ci_g_per_kwh: Any, pue: Any = 1.0) -> Any:
  """Grams of CO2eq emitted for ``energy_j`` of IT energy.

  Args:
    energy_j: IT energy in joules (what the accelerators and hosts drew).
    ci_g_per_kwh: grid carbon intensity in gCO2eq/kWh.
    pue: power usage effectiveness (facility energy / IT energy), dimensionless.

  Returns:
    ``energy_j * pue / 3.6e6 * ci_g_per_kwh`` in grams CO2eq (same array type as the inputs).
  """
  return energy_j * pue / J_PER_KWH * ci_g_per_kwh


def _check_scalar(name: str, value: float, *, minimum: float = 0.0) -> float:
  value = float(value)
  if not math.isfinite(value) or value < minimum:
    raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}.")
  return value


@dataclasses.dataclass(frozen=True, eq=False)
class HourlyCarbonIntegrator:
  """Time-weighted integrals over an hourly carbon-intensity array, prepared once for many queries.

  Building one validates the trace and stores its running sum, so each query costs O(1) per interval
  (``np.searchsorted``-free: hours are unit-spaced). Simulators build one per trace and call
  :meth:`carbon_g` with arrays of intervals.

  Attributes:
    ci_g_per_kwh: the hourly intensities (gCO2eq/kWh), read-only float64 array of shape ``(n_hours,)``.
    cum_g_h_per_kwh: running sum ``[0, ci[0], ci[0] + ci[1], ...]`` of shape ``(n_hours + 1,)``
      (unit gCO2eq/kWh x hours).
  """

  ci_g_per_kwh: np.ndarray
  cum_g_h_per_kwh: np.ndarray

  @classmethod
  def from_array(cls, ci_hourly: Any) -> "HourlyCarbonIntegrator":
    """Builds an integrator from hourly intensities (gCO2eq/kWh), checked finite and >= 0."""
    ci = np.array(ci_hourly, dtype=np.float64)
    if ci.ndim != 1 or ci.size == 0:
      raise ValueError(
          f"ci_hourly must be a non-empty 1-D array of hourly gCO2eq/kWh values, got shape {ci.shape}.")
    bad = ~np.isfinite(ci) | (ci < 0)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise ValueError(
          f"ci_hourly has {int(bad.sum())} invalid value(s) (NaN, inf or negative); first at hour {i}: "
          f"{ci[i]!r}. Clean or fill the trace before integrating.")
    cum = np.concatenate([[0.0], np.cumsum(ci)])
    ci.setflags(write=False)
    cum.setflags(write=False)
    return cls(ci_g_per_kwh=ci, cum_g_h_per_kwh=cum)

  @property
  def n_hours(self) -> int:
    return int(self.ci_g_per_kwh.shape[0])

  def _cum_at(self, hours: np.ndarray) -> np.ndarray:
    idx = np.minimum(np.floor(hours).astype(np.int64), self.n_hours - 1)
    return self.cum_g_h_per_kwh[idx] + self.ci_g_per_kwh[idx] * (hours - idx)

  def _check_intervals(self, start_h: Any, end_h: Any) -> tuple[np.ndarray, np.ndarray]:
    s, e = np.broadcast_arrays(np.asarray(start_h, np.float64), np.asarray(end_h, np.float64))
    bad = ~(np.isfinite(s) & np.isfinite(e))
    if bad.any():
      raise ValueError("start_h/end_h must be finite hour offsets; got NaN or inf.")
    if (e < s).any():
      i = int(np.flatnonzero((e < s).ravel())[0])
      raise ValueError(
          f"end_h must be >= start_h; interval {i} is [{s.ravel()[i]}, {e.ravel()[i]}] hours.")
    outside = (s < 0) | (e > self.n_hours)
    if outside.any():
      i = int(np.flatnonzero(outside.ravel())[0])
      raise ValueError(
          f"Interval {i} [{s.ravel()[i]}, {e.ravel()[i]}] hours leaves the carbon trace, which covers "
          f"[0, {self.n_hours}] hours. Use a longer trace or shorten the run.")
    return s, e

  def ci_hours(self, start_h: Any, end_h: Any) -> np.ndarray:
    """Integral of intensity over ``[start_h, end_h]``, in gCO2eq/kWh x hours (vectorized)."""
    s, e = self._check_intervals(start_h, end_h)
    return self._cum_at(e) - self._cum_at(s)

  def mean_ci_g_per_kwh(self, start_h: Any, end_h: Any) -> np.ndarray:
    """Time-weighted mean intensity over each interval (the hour's own value for empty intervals)."""
    s, e = self._check_intervals(start_h, end_h)
    width = e - s
    point = self.ci_g_per_kwh[np.minimum(np.floor(s).astype(np.int64), self.n_hours - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = (self._cum_at(e) - self._cum_at(s)) / width
    return np.where(width > 0, mean, point)

  def carbon_g(self, start_h: Any, end_h: Any, power_w: Any, pue: Any = 1.0) -> np.ndarray:
    """Grams CO2eq of constant ``power_w`` (W) drawn over each ``[start_h, end_h]`` (hour offsets).

    Args:
      start_h: interval starts, hours since the trace's first timestamp (array or scalar).
      end_h: interval ends, same unit; broadcast against ``start_h``.
      power_w: IT power in watts (array broadcastable to the intervals, >= 0).
      pue: power usage effectiveness (>= 0; usually >= 1).

    Returns:
      float64 array of grams: ``power_w * pue * 3600 s/h * integral(ci dh) / 3.6e6``.

    Raises:
      ValueError: an interval is reversed, non-finite or leaves the trace; power or PUE is negative.
    """
    p = np.asarray(power_w, np.float64)
    if (~np.isfinite(p) | (p < 0)).any():
      raise ValueError(f"power_w must be finite and >= 0, got {power_w!r}.")
    q = np.asarray(pue, np.float64)
    if (~np.isfinite(q) | (q < 0)).any():
      raise ValueError(f"pue must be finite and >= 0, got {pue!r}.")
    return p * q * SECONDS_PER_HOUR / J_PER_KWH * self.ci_hours(start_h, end_h)


def integrate_carbon_g_batch(ci_hourly: Any, start_h: Any, end_h: Any, power_w: Any,
                             pue: Any = 1.0) -> np.ndarray:
  """Vectorized time-weighted carbon (g) of many intervals over one hourly NumPy trace.

  For repeated calls over the same trace build a :class:`HourlyCarbonIntegrator` once instead.

  Args:
    ci_hourly: hourly intensities in gCO2eq/kWh, shape ``(n_hours,)``; ``ci[i]`` holds over ``[i, i+1)``.
    start_h: interval starts in hours since the trace start.
    end_h: interval ends in hours since the trace start.
    power_w: IT power (W) per interval or one value.
    pue: power usage effectiveness.

  Returns:
    float64 array of grams CO2eq with the broadcast shape of the inputs.
  """
  return HourlyCarbonIntegrator.from_array(ci_hourly).carbon_g(start_h, end_h, power_w, pue)


def _to_utc_timestamp(name: str, value: Any):
  import pandas as pd  # pylint: disable=g-import-not-at-top

  ts = pd.Timestamp(value)
  if ts.tzinfo is None:
    raise ValueError(
        f"{name}={value!r} is a naive timestamp; pass a timezone-aware one (e.g. tz='UTC') or an hour "
        "offset as a float.")
  return ts.tz_convert("UTC")


def _hours_since(name: str, value: Any, origin) -> float:
  if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
    return float(value)
  if isinstance(value, (str, dt.datetime, np.datetime64)) or hasattr(value, "tz_convert"):
    if origin is None:
      raise ValueError(
          f"{name} is a timestamp but ci_hourly is a plain array; pass trace_start (the UTC timestamp of "
          "ci_hourly[0]) or give hour offsets as floats.")
    return (_to_utc_timestamp(name, value) - origin).total_seconds() / SECONDS_PER_HOUR
  raise TypeError(f"{name} must be a tz-aware timestamp or a float hour offset, got {type(value).__name__}.")


def _series_values_and_origin(series: Any):
  import pandas as pd  # pylint: disable=g-import-not-at-top

  idx = series.index
  if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
    raise ValueError("ci_hourly Series must have a tz-aware DatetimeIndex (hourly, UTC).")
  if len(idx) > 1:
    deltas = idx[1:] - idx[:-1]
    irregular = deltas != pd.Timedelta(hours=1)
    if irregular.any():
      bad = int(np.flatnonzero(irregular)[0])
      raise ValueError(
          f"ci_hourly Series is not regular hourly: step {bad} goes from {idx[bad]} to {idx[bad + 1]}. "
          "Resample or fill the gap first.")
  return series.to_numpy(dtype=np.float64), idx[0].tz_convert("UTC")


def integrate_carbon_g(ci_hourly: Any, start: Any, end: Any, power_w: float, pue: float = 1.0, *,
                       trace_start: Any = None) -> float:
  """Time-weighted carbon (g) of a job drawing constant ``power_w`` over ``[start, end]``.

  Each hour's intensity is weighted by the seconds the interval overlaps that hour, so a job from
  10:30 to 12:15 gets 30 min of hour 10, 60 min of hour 11 and 15 min of hour 12.

  Args:
    ci_hourly: hourly intensity in gCO2eq/kWh: a pandas Series with an hourly tz-aware DatetimeIndex
      (as ``CarbonTrace.ci_g_per_kwh``), or a 1-D NumPy array.
    start: tz-aware timestamp, or hours since the trace's first hour (float).
    end: same form as ``start``; ``end >= start``.
    power_w: constant IT power in watts.
    pue: power usage effectiveness.
    trace_start: tz-aware timestamp of ``ci_hourly[0]``; only needed for a NumPy trace with timestamp
      ``start``/``end``.

  Returns:
    Grams CO2eq (float): ``power_w * (end - start)[s] * pue / 3.6e6 * mean_ci``.

  Raises:
    ValueError: the interval is reversed or leaves the trace, the trace is irregular or invalid,
      timestamps are naive, or power/PUE are negative.
  """
  if hasattr(ci_hourly, "index") and hasattr(ci_hourly, "to_numpy"):
    values, origin = _series_values_and_origin(ci_hourly)
    if trace_start is not None:
      raise ValueError("trace_start is taken from the Series index; do not pass it with a Series.")
  else:
    values = ci_hourly
    origin = None if trace_start is None else _to_utc_timestamp("trace_start", trace_start)
  start_h = _hours_since("start", start, origin)
  end_h = _hours_since("end", end, origin)
  _check_scalar("power_w", power_w)
  _check_scalar("pue", pue)
  integrator = HourlyCarbonIntegrator.from_array(values)
  return float(integrator.carbon_g(start_h, end_h, power_w, pue))
