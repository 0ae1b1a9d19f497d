"""Baseline carbon-intensity forecasters: seasonal naive and a linear autoregressive model.

All work on batches of history windows ``(N, history_hours)`` and return ``(N, horizon_hours)`` point
forecasts. The linear model sees the same inputs as the transformer (normalized history plus the
calendar features of the forecast origin) and predicts every horizon directly (one ridge regression
per output hour, solved jointly in closed form with NumPy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from cenas_jax.carbon import forecast_metrics as fm


def seasonal_naive(history: np.ndarray, horizon_hours: int, season_hours: int) -> np.ndarray:
  """Repeats the last ``season_hours`` of each history window over the horizon.

  Hour ``h`` (0-based) after the origin is forecast as the value ``season_hours * k`` hours before it,
  with the smallest ``k`` that lands in the history.

  Args:
    history: ``(N, L)`` values (any unit), oldest first; ``L >= season_hours``.
    horizon_hours: forecast horizon H (h).
    season_hours: season length (24: yesterday; 168: last week).

  Returns:
    ``(N, H)`` forecasts in the unit of ``history``.
  """
  history = np.asarray(history)
  length = history.shape[-1]
  if length < season_hours:
    raise ValueError(f"History of {length} h is shorter than the season of {season_hours} h.")
  h = np.arange(horizon_hours)
  return history[..., length - season_hours + (h % season_hours)]


def linear_ar_features(hist_z: np.ndarray, origin_hours: np.ndarray,
                       hist_extra_z: np.ndarray | None = None) -> np.ndarray:
  """Features of the linear model: normalized history, origin calendar, optional last extra values.

  Args:
    hist_z: ``(N, L)`` normalized history.
    origin_hours: ``(N,)`` hours since the Unix epoch of the first forecast hour.
    hist_extra_z: optional ``(N, L, E)`` normalized extra columns (only the last hour is used).

  Returns:
    ``(N, L + 6 [+ E])`` float64 features.
  """
  parts = [np.asarray(hist_z, np.float64), fm.calendar_features(origin_hours).astype(np.float64)]
  if hist_extra_z is not None:
    parts.append(np.asarray(hist_extra_z, np.float64)[:, -1, :])
  return np.concatenate(parts, axis=-1)


@dataclasses.dataclass(frozen=True)
class LinearAR:
  """A fitted direct multi-horizon ridge regression in normalized space.

  Attributes:
    weights: ``(D, H)`` coefficients on standardized features.
    bias: ``(H,)`` intercepts.
    feature_mean: ``(D,)`` feature means used to standardize.
    feature_std: ``(D,)`` feature standard deviations used to standardize.
    l2: ridge penalty that was used.
  """

  weights: np.ndarray
  bias: np.ndarray
  feature_mean: np.ndarray
  feature_std: np.ndarray
  l2: float

  def predict(self, features: np.ndarray) -> np.ndarray:
    """``(N, D)`` features -> ``(N, H)`` normalized forecasts."""
    x = (np.asarray(features, np.float64) - self.feature_mean) / self.feature_std
    return x @ self.weights + self.bias


def fit_linear_ar(features: np.ndarray, targets: np.ndarray, *, l2: float = 1.0) -> LinearAR:
  """Fits ridge regression ``targets ~ features`` in closed form.

  Args:
    features: ``(N, D)`` inputs (see ``linear_ar_features``).
    targets: ``(N, H)`` normalized future values.
    l2: ridge penalty on standardized features (the intercept is not penalized).

  Returns:
    The fitted ``LinearAR``.
  """
  x = np.asarray(features, np.float64)
  y = np.asarray(targets, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"Expected (N, D) features and (N, H) targets, got {x.shape} and {y.shape}.")
  if x.shape[0] == 0:
    raise ValueError("No training windows for the linear model.")
  mean = x.mean(axis=0)
  std = x.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  xs = (x - mean) / std
  y_mean = y.mean(axis=0)
  gram = xs.T @ xs + l2 * np.eye(xs.shape[1])
  weights = np.linalg.solve(gram, xs.T @ (y - y_mean))
  return LinearAR(weights=weights, bias=y_mean, feature_mean=mean, feature_std=std, l2=float(l2))


def fit_linear_ar_with_validation(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                                  *, l2_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
                                  score: Any = None) -> LinearAR:
  """Picks the ridge penalty on a validation set, then returns the model fitted on ``train``.

  Args:
    train: ``(features, targets)`` of the training windows.
    val: ``(features, targets)`` of the validation windows.
    l2_grid: penalties to try.
    score: ``score(pred, target) -> float`` to minimize (default: mean squared error).

  Returns:
    The ``LinearAR`` with the best validation score.
  """
  score = score or (lambda p, t: float(np.mean((p - t) ** 2)))
  best, best_score = None, np.inf
  for l2 in l2_grid:
    model = fit_linear_ar(*train, l2=l2)
    s = score(model.predict(val[0]), val[1])
    if s < best_score:
      best, best_score = model, s
  assert best is not None
  return best
