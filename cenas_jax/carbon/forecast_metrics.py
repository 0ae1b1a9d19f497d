"""Metrics of carbon-intensity forecasts (fractions, not percent; NumPy, or ``jax.numpy`` via ``xp``).

Point forecasts: ``absolute_percentage_errors``, ``mape``, ``mape_by_day``, ``ape_quantile``,
``mean_absolute_error``, ``mean_squared_error`` and ``point_metrics`` (the day-by-day summary the forecaster is judged on).
Quantile forecasts: ``pinball_loss`` (also the training loss), ``interval_coverage`` and
``quantile_metrics``; ``quantile_names`` names their columns (``p10``, ``p50``, ...).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def absolute_percentage_errors(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  """``|predicted - actual| / actual`` elementwise (a fraction); ``actual`` must be > 0."""
  actual = np.asarray(actual, dtype=np.float64)
  predicted = np.asarray(predicted, dtype=np.float64)
  if actual.shape != predicted.shape:
    raise ValueError(f"Shapes differ: actual {actual.shape} vs predicted {predicted.shape}.")
  if np.any(actual <= 0):
    raise ValueError("APE needs actual values > 0.")
  return np.abs(predicted - actual) / actual


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
  """Mean absolute percentage error (fraction) over all forecasts and hours."""
  return float(np.mean(absolute_percentage_errors(actual, predicted)))


def mean_absolute_error(actual: np.ndarray, predicted: np.ndarray) -> float:
  """Mean of ``|predicted - actual|`` (unit of the inputs); the ridge paths' penalty-selection score."""
  return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def mean_squared_error(actual: np.ndarray, predicted: np.ndarray) -> float:
  """Mean of ``(predicted - actual) ** 2`` (unit of the inputs, squared)."""
  return float(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2))


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


def pinball_loss(pred_q: Any, target: Any, quantiles: Sequence[float], xp: Any = np) -> Any:
  """Mean pinball (quantile) loss of ``(..., H, Q)`` quantile forecasts for ``(..., H)`` targets.

  Args:
    pred_q: quantile forecasts, one level per entry of ``quantiles`` along the last axis.
    target: what happened, same unit.
    quantiles: the ``Q`` levels.
    xp: the array module (``numpy``, or ``jax.numpy`` inside a jitted loss).

  Returns:
    A scalar in the unit of the inputs (a float for NumPy inputs).
  """
  tau = xp.asarray(quantiles, dtype=pred_q.dtype)
  diff = target[..., None] - pred_q
  return xp.mean(xp.maximum(tau * diff, (tau - 1.0) * diff))


def quantile_metrics(actual: np.ndarray, q: np.ndarray, quantiles: Sequence[float]) -> dict[str, Any]:
  """``point_metrics`` of the median plus the interval coverage, ordering and pinball loss.

  Args:
    actual: ``(N, H)`` what happened (gCO2eq/kWh).
    q: ``(N, H, Q)`` quantile forecasts (gCO2eq/kWh), levels ``quantiles`` (containing 0.5).
    quantiles: the ``Q`` levels, increasing.

  Returns:
    ``point_metrics`` keys, ``coverage_p10_p90`` (between the lowest and highest level),
    ``p10_le_p50_le_p90`` (levels never cross) and ``pinball_loss_g_per_kwh``.
  """
  actual = np.asarray(actual, np.float64)
  q = np.asarray(q, np.float64)
  return {**point_metrics(actual, q[..., list(quantiles).index(0.5)]),
          "coverage_p10_p90": interval_coverage(actual, q[..., 0], q[..., -1]),
          "p10_le_p50_le_p90": bool(np.all(np.diff(q, axis=-1) >= 0)),
          "pinball_loss_g_per_kwh": float(pinball_loss(q, actual, quantiles))}
