"""Split-conformal recalibration of a forecaster's non-median quantiles.

``QuantileCalibration`` holds per-horizon-hour shifts of the non-median quantiles, fitted on held-out
(validation) windows by ``fit_quantile_calibration`` so that each quantile level's empirical
frequency matches it; ``order_quantiles`` keeps the levels ordered around the median.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from cenas_jax.carbon.normalization import window_loc_scale


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
  """``(N, 1)`` scale of each normalized history window (float64), as the model standardizes it."""
  return window_loc_scale(np.asarray(hist_z, np.float64))[1]


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
