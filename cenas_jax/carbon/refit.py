"""An operational forecaster: its closed-form parts refitted on the past as data arrives.

The network's weights stay frozen; the linear ridge path and the quantile calibration are refitted
in closed form on every window whose targets end before a cutoff (``windows.windows_before``), so a
refit never reads an hour at or after it. ``frozen_network_windows`` runs the network once over a
series; ``refit_closed_form_parts`` refits at one cutoff; ``rolling_refit_quantiles`` follows a refit
schedule (``windows.refit_cutoffs``) over a rolling-origin evaluation; ``closed_form_quantiles`` and
``with_closed_form_parts`` give the refitted model's forecasts and parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon.calibration import QuantileCalibration, fit_quantile_calibration
from cenas_jax.carbon.model import ForecasterConfig, apply_quantiles
from cenas_jax.carbon.normalization import Normalization, window_loc_scale
from cenas_jax.carbon.training import TrainConfig
from cenas_jax.carbon.windows import make_windows, refit_groups, windows_before


_REFIT_TARGETS = ("residual", "target")


@dataclasses.dataclass(frozen=True)
class FrozenNetworkWindows:
  """What the closed-form parts of a trained forecaster need about every window of one series.

  The network's weights are frozen, so its contribution to every window is computed once; the
  linear path and the quantile calibration can then be refitted in closed form at any cutoff.
  Window ``i`` has its origin at position ``origins[i]`` of the series (history
  ``[o - history_hours, o)``, targets ``[o, o + horizon_hours)``). The model's normalized quantiles
  are ``net_q_z + (skip_features @ kernel + bias) * skip_scale`` for a linear path ``(kernel, bias)``.

  Attributes:
    origins: ``(N,)`` origin positions.
    hist_z: ``(N, L)`` normalized history.
    skip_features: ``(N, D)`` the linear path's input (history as the path reads it, origin calendar).
    skip_loc: ``(N, 1)`` the level the linear path's output is relative to (the window mean for
      ``linear_skip_input='window'`` with ``instance_norm``; else 0), normalized units.
    skip_scale: ``(N, 1)`` the factor the linear path's output is multiplied by (the window's
      standard deviation for ``linear_skip_input='window'`` with ``instance_norm``; else 1).
    net_q_z: ``(N, H, Q)`` the model's normalized quantiles with the linear path set to zero.
    target_z: ``(N, H)`` the normalized values that followed each origin (NaN where the series is).
  """

  origins: np.ndarray
  hist_z: np.ndarray
  skip_features: np.ndarray
  skip_loc: np.ndarray
  skip_scale: np.ndarray
  net_q_z: np.ndarray
  target_z: np.ndarray


@dataclasses.dataclass(frozen=True)
class ClosedFormParts:
  """A refitted linear path (single-region layout) and quantile calibration.

  Attributes:
    kernel: ``(D, H)`` weights of the linear path.
    bias: ``(H,)`` its intercepts.
    l2: ridge penalty picked on the last validation hours before the cutoff.
    calibration: the refitted quantile calibration, or ``None``.
    cutoff: position of the first hour the refit did not see.
    num_windows: windows the linear path was fitted on.
  """

  kernel: np.ndarray
  bias: np.ndarray
  l2: float
  calibration: QuantileCalibration | None
  cutoff: int
  num_windows: int


def _check_refittable(config: ForecasterConfig) -> None:
  if not config.linear_skip or config.num_regions != 1 or config.num_extra_features or config.residual_base != "none":
    raise ValueError("Refitting needs a single-region forecaster (specialize_params) with a linear path, "
                     "residual_base='none' and no extra columns; got "
                     f"linear_skip={config.linear_skip}, num_regions={config.num_regions}, "
                     f"num_extra_features={config.num_extra_features}, residual_base={config.residual_base!r}.")


def frozen_network_windows(params: Any, ci_g_per_kwh: np.ndarray, hours: np.ndarray, *, config: ForecasterConfig,
                           normalization: Normalization, batch_size: int = 1024) -> FrozenNetworkWindows:
  """Runs the frozen network once over every window of a series (all origins, 1 h apart).

  Each window's entries depend only on its own history and targets, so a refit that selects windows
  by origin (``windows.windows_before``) sees nothing after its cutoff.

  Args:
    params: trained single-region parameters.
    ci_g_per_kwh: ``(T,)`` hourly carbon intensity (gCO2eq/kWh) of a contiguous series.
    hours: ``(T,)`` hours since the Unix epoch of each value.
    config: the model's config.
    normalization: the model's normalization (kept fixed: the refit only moves the closed-form parts).
    batch_size: windows per forward pass.

  Returns:
    The ``FrozenNetworkWindows`` of origins ``history_hours .. T - horizon_hours``.
  """
  _check_refittable(config)
  length, horizon = config.history_hours, config.horizon_hours
  values = np.asarray(ci_g_per_kwh, np.float64)
  hours = np.asarray(hours, np.int64)
  if values.ndim != 1 or hours.shape != values.shape:
    raise ValueError(f"Expected (T,) values and hours, got {values.shape} and {hours.shape}.")
  origins = np.arange(length, len(values) - horizon + 1, dtype=np.int64)
  if len(origins) == 0:
    raise ValueError(f"A series of {len(values)} h has no window of {length} + {horizon} h.")
  with np.errstate(invalid="ignore"):
    z = normalization.transform(values)
  hist_z, target_z = make_windows(z, origins, length, horizon)
  zero_skip = {**params, "linear_skip": jax.tree.map(jnp.zeros_like, params["linear_skip"])}
  outs = []
  for i in range(0, len(origins), batch_size):
    sl = slice(i, i + batch_size)
    outs.append(np.asarray(apply_quantiles(zero_skip, hist_z[sl], hours[origins[sl]].astype(np.int32), None,
                                           config)))
  net_q_z = np.concatenate(outs, axis=0)
  hist64 = hist_z.astype(np.float64)
  if config.instance_norm and config.linear_skip_input == "window":
    loc, scale = window_loc_scale(hist64)
    skip_in = (hist64 - loc) / scale
  else:
    loc, scale = np.zeros((len(origins), 1)), np.ones((len(origins), 1))
    skip_in = hist64
  return FrozenNetworkWindows(origins=origins, hist_z=hist_z, skip_features=baselines.linear_ar_features(skip_in, hours[origins]),
                              skip_loc=loc, skip_scale=scale, net_q_z=net_q_z, target_z=target_z)


def closed_form_quantiles(windows: FrozenNetworkWindows, rows: np.ndarray, parts: ClosedFormParts, *,
                          calibrate: bool = True) -> np.ndarray:
  """Normalized ``(n, H, Q)`` quantiles of the windows ``rows`` with the refitted parts.

  Equal to ``predict_quantiles`` (before its inverse normalization) of ``with_closed_form_parts``.
  """
  rows = np.asarray(rows, np.int64)
  linear = windows.skip_features[rows] @ parts.kernel + parts.bias  # (n, H)
  q = windows.net_q_z[rows].astype(np.float64) + (linear * windows.skip_scale[rows])[..., None]
  if calibrate and parts.calibration is not None:
    q = parts.calibration.apply(q, windows.hist_z[rows])
  return q


def with_closed_form_parts(params: Any, parts: ClosedFormParts) -> Any:
  """The single-region parameters with the linear path replaced by the refitted one."""
  return {**params, "linear_skip": {"kernel": jnp.asarray(parts.kernel, jnp.float32),
                                    "bias": jnp.asarray(parts.bias, jnp.float32)}}


def refit_closed_form_parts(windows: FrozenNetworkWindows, *, cutoff: int, config: ForecasterConfig,
                            val_hours: int, l2_grid: Sequence[float] = TrainConfig.ridge_l2_grid,
                            fit_target: str = "residual",
                            calibration_hours: int | None = None) -> ClosedFormParts:
  """Refits the linear path (and optionally the quantile calibration) on the windows before ``cutoff``.

  Only windows whose targets end strictly before ``cutoff`` are read (``windows.past_split``); the
  network stays frozen. The ridge penalty is picked on the windows of the last ``val_hours`` before
  the cutoff (mean absolute error, as at training), then the path is refitted on all of them.

  Args:
    windows: ``frozen_network_windows`` of the series.
    cutoff: position of the first hour the refit must not see (at or before the forecast origin).
    config: the model's config.
    val_hours: hours before ``cutoff`` whose windows pick the penalty.
    l2_grid: ridge penalties to try.
    fit_target: "residual": the path fits what the frozen network leaves unexplained (the
      combined median's squared error is minimized); "target": the path fits the targets on its
      own, as when the model was trained (the network's residual is added on top).
    calibration_hours: refit the calibration on the windows of the last ``calibration_hours``
      hours before the cutoff (with the refitted path); ``None``: no calibration.

  Returns:
    The refitted ``ClosedFormParts``.
  """
  _check_refittable(config)
  if fit_target not in _REFIT_TARGETS:
    raise ValueError(f"fit_target={fit_target!r} must be one of {_REFIT_TARGETS}.")
  horizon = config.horizon_hours
  all_rows = np.flatnonzero(windows_before(windows.origins, cutoff=cutoff, horizon_hours=horizon))
  # Targets are computed for the usable rows only: later rows may hold anything (NaN) and are never read.
  target = np.full(windows.target_z.shape, np.nan)
  base = (windows.net_q_z[all_rows, :, config.median_index] if fit_target == "residual"
          else windows.skip_loc[all_rows])
  target[all_rows] = (windows.target_z[all_rows] - base) / windows.skip_scale[all_rows]
  model, num = baselines.fit_linear_ar_before(
      windows.skip_features, target, windows.origins, cutoff=cutoff, horizon_hours=horizon, val_hours=val_hours,
      l2_grid=l2_grid, score=fm.mean_absolute_error)
  kernel, bias = model.raw_kernel_bias()
  parts = ClosedFormParts(kernel=kernel, bias=bias, l2=model.l2, calibration=None, cutoff=int(cutoff),
                          num_windows=num)
  if calibration_hours is None:
    return parts
  cal_rows = all_rows[windows.origins[all_rows] + horizon > cutoff - calibration_hours]
  q = closed_form_quantiles(windows, cal_rows, parts, calibrate=False)
  calibration = fit_quantile_calibration(q, windows.target_z[cal_rows], windows.hist_z[cal_rows],
                                            config.quantiles)
  return dataclasses.replace(parts, calibration=calibration)


def rolling_refit_quantiles(windows: FrozenNetworkWindows, eval_rows: np.ndarray, cutoffs: np.ndarray, *,
                            config: ForecasterConfig, val_hours: int,
                            l2_grid: Sequence[float] = TrainConfig.ridge_l2_grid, fit_target: str = "residual",
                            calibration_hours: int | None = None) -> tuple[np.ndarray, list[ClosedFormParts]]:
  """Forecasts of the forecaster with its closed-form parts refitted at every distinct cutoff.

  Args:
    windows: ``frozen_network_windows`` of the series.
    eval_rows: ``(M,)`` rows (into ``windows``) of the evaluated origins, in time order.
    cutoffs: ``(M,)`` refit cutoff of each evaluated origin, ``<=`` its origin
      (``windows.refit_cutoffs``).
    config: the model's config.
    val_hours, l2_grid, fit_target, calibration_hours: see ``refit_closed_form_parts``.

  Returns:
    ``(q_z, parts)``: ``(M, H, Q)`` normalized quantiles (calibrated when ``calibration_hours``) and
    the parts of every refit, in time order.
  """
  eval_rows = np.asarray(eval_rows, np.int64)
  q = np.zeros((len(eval_rows), config.horizon_hours, len(config.quantiles)))
  fitted = []
  for cutoff, sel in refit_groups(cutoffs, windows.origins[eval_rows]):
    parts = refit_closed_form_parts(windows, cutoff=cutoff, config=config, val_hours=val_hours,
                                    l2_grid=l2_grid, fit_target=fit_target, calibration_hours=calibration_hours)
    q[sel] = closed_form_quantiles(windows, eval_rows[sel], parts)
    fitted.append(parts)
  return q, fitted
