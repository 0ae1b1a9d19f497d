"""Baseline carbon-intensity forecasters: seasonal naive and a linear autoregressive model.

All work on batches of history windows ``(N, history_hours)`` and return ``(N, horizon_hours)`` point
forecasts. The linear model sees the same inputs as the transformer (normalized history plus the
calendar features of the forecast origin) and predicts every horizon directly (one ridge regression
per output hour, solved jointly in closed form with NumPy).

For an operational (refitted) forecaster, ``fit_linear_ar_before`` refits the ridge on the windows
whose targets end strictly before a cutoff hour and ``rolling_refit_linear_ar`` runs that refit on a
schedule over a rolling-origin evaluation (see ``windows.refit_cutoffs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon.windows import calendar_features, past_split, refit_groups


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
  parts = [np.asarray(hist_z, np.float64), calendar_features(origin_hours).astype(np.float64)]
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

  def raw_kernel_bias(self) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, bias)`` acting on the raw features: ``features @ kernel + bias`` is ``predict``.

    This is the layout of the forecaster's linear path (a dense layer on unstandardized inputs).
    """
    kernel = self.weights / self.feature_std[:, None]
    return kernel, self.bias - (self.feature_mean / self.feature_std) @ self.weights


def fit_linear_ar(features: np.ndarray, targets: np.ndarray, *, l2: float = 1.0) -> LinearAR:
  """Fits ridge regression ``targets ~ features`` in closed form.

  Args:
    features: ``(N, D)`` inputs (see ``linear_ar_features``).
    targets: ``(N, H)`` normalized future values.
    l2: ridge penalty on standardized features (the intercept is not penalized).

  Returns:
    The fitted ``LinearAR``.
  """
  return fit_linear_ar_grid(features, targets, (l2,))[0]


def fit_linear_ar_grid(features: np.ndarray, targets: np.ndarray, l2_grid: Sequence[float]) -> list[LinearAR]:
  """``fit_linear_ar`` for every penalty of ``l2_grid``, sharing one Gram matrix.

  Args:
    features: ``(N, D)`` inputs (see ``linear_ar_features``).
    targets: ``(N, H)`` normalized future values.
    l2_grid: ridge penalties on standardized features.

  Returns:
    One fitted ``LinearAR`` per penalty, in the order of ``l2_grid``.
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
  gram = xs.T @ xs
  rhs = xs.T @ (y - y_mean)
  eye = np.eye(xs.shape[1])
  return [LinearAR(weights=np.linalg.solve(gram + l2 * eye, rhs), bias=y_mean, feature_mean=mean,
                   feature_std=std, l2=float(l2)) for l2 in l2_grid]


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
  score = score or fm.mean_squared_error
  best, best_score = None, np.inf
  for model in fit_linear_ar_grid(*train, l2_grid):
    s = score(model.predict(val[0]), val[1])
    if s < best_score:
      best, best_score = model, s
  assert best is not None
  return best


# ----------------------------------------------------------------------------------------------
# Refitting on the past only.
# ----------------------------------------------------------------------------------------------
def fit_linear_ar_before(features: np.ndarray, targets: np.ndarray, origins: np.ndarray, *, cutoff: int,
                         horizon_hours: int, val_hours: int, l2_grid: Sequence[float],
                         score: Any = None) -> tuple[LinearAR, int]:
  """Refits the ridge on every window whose targets end strictly before ``cutoff``.

  The penalty is picked on the windows of the last ``val_hours`` before ``cutoff`` (fitting on the
  windows whose targets end before them), then the ridge is refitted with it on all usable windows.
  Rows of ``features``/``targets`` at or after the cutoff are never read (they may hold NaN).

  Args:
    features: ``(N, D)`` features of every window (see ``linear_ar_features``).
    targets: ``(N, H)`` normalized future values of every window.
    origins: ``(N,)`` origin positions of the windows.
    cutoff: position of the first hour the fit must not see (the forecast origin, or earlier).
    horizon_hours: H.
    val_hours: hours before ``cutoff`` whose windows pick the penalty.
    l2_grid: penalties to try (one penalty: no selection).
    score: ``score(pred, target) -> float`` to minimize (default: mean squared error).

  Returns:
    ``(model, num_windows)``: the refitted ridge and the number of windows it was fitted on.
  """
  all_rows, fit_rows, val_rows = past_split(origins, cutoff=cutoff, horizon_hours=horizon_hours,
                                            val_hours=val_hours)
  if len(l2_grid) > 1 and (len(fit_rows) == 0 or len(val_rows) == 0):
    raise ValueError(f"Refit at position {cutoff}: {len(fit_rows)} fitting and {len(val_rows)} validation "
                     f"windows before it (val_hours={val_hours}); start the refits later or shorten val_hours.")
  if len(all_rows) == 0:
    raise ValueError(f"Refit at position {cutoff}: no window ends before it.")
  features = np.asarray(features)
  targets = np.asarray(targets)
  l2 = float(l2_grid[0])
  if len(l2_grid) > 1:
    l2 = fit_linear_ar_with_validation((features[fit_rows], targets[fit_rows]),
                                       (features[val_rows], targets[val_rows]), l2_grid=l2_grid,
                                       score=score).l2
  return fit_linear_ar(features[all_rows], targets[all_rows], l2=l2), int(len(all_rows))


def rolling_refit_linear_ar(features: np.ndarray, targets: np.ndarray, origins: np.ndarray,
                            eval_rows: np.ndarray, cutoffs: np.ndarray, *, horizon_hours: int, val_hours: int,
                            l2_grid: Sequence[float],
                            score: Any = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """Forecasts of a linear AR model refitted at every distinct cutoff of a rolling evaluation.

  Args:
    features: ``(N, D)`` features of every window of the series.
    targets: ``(N, H)`` normalized targets of every window (read only before each cutoff).
    origins: ``(N,)`` origin positions of the windows.
    eval_rows: ``(M,)`` rows of the evaluated origins, in time order.
    cutoffs: ``(M,)`` refit cutoff of each evaluated origin (``<=`` its origin; see
      ``windows.refit_cutoffs``).
    horizon_hours: H.
    val_hours: see ``fit_linear_ar_before``.
    l2_grid: see ``fit_linear_ar_before``.
    score: see ``fit_linear_ar_before``.

  Returns:
    ``(pred, refits)``: ``(M, H)`` normalized forecasts and one dict per refit (cutoff, l2, windows).
  """
  eval_rows = np.asarray(eval_rows, np.int64)
  origins = np.asarray(origins, np.int64)
  pred = np.zeros((len(eval_rows), np.asarray(targets).shape[1]))
  refits = []
  for cutoff, sel in refit_groups(cutoffs, origins[eval_rows]):
    model, n = fit_linear_ar_before(features, targets, origins, cutoff=cutoff, horizon_hours=horizon_hours,
                                    val_hours=val_hours, l2_grid=l2_grid, score=score)
    pred[sel] = model.predict(np.asarray(features)[eval_rows[sel]])
    refits.append({"cutoff": int(cutoff), "l2": model.l2, "num_windows": n})
  return pred, refits
