"""Normalization of carbon intensity: for a whole series, and per history window.

- ``Normalization`` / ``fit_normalization``: log + standardization of carbon intensity (and optional
  extra columns), fitted on training data only and stored next to a trained model.
- ``window_loc_scale``: each history window's own mean and (floored) standard deviation in the
  normalized space; the model's per-window standardization, the linear path's input and the
  quantile calibration's residual scale all use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from cenas_jax.carbon import windows

MIN_WINDOW_SCALE = 0.05  # Floor of a window's standard deviation (normalized units): flat windows.


def window_loc_scale(hist_z: Any, xp: Any = np) -> tuple[Any, Any]:
  """Per-window standardization statistics of normalized history windows.

  Args:
    hist_z: ``(N, L)`` normalized history windows (NumPy or JAX; the result keeps its dtype).
    xp: the array module (``numpy`` or ``jax.numpy``).

  Returns:
    ``(loc, scale)``, each ``(N, 1)``: the window's mean and its standard deviation floored at
    ``MIN_WINDOW_SCALE``.
  """
  loc = hist_z.mean(axis=-1, keepdims=True)
  scale = xp.maximum(hist_z.std(axis=-1, keepdims=True), MIN_WINDOW_SCALE)
  return loc, scale


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
  windows.check_hourly(ci_g_per_kwh, name="training series")
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
