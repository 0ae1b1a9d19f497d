"""A Flax Linen time-series transformer that forecasts hourly carbon intensity with quantiles.

The model maps a history window (default 168 hourly values of carbon intensity, optionally with extra
columns such as generation by source) plus calendar features (hour of day, day of week, day of year)
to a direct forecast of the next ``horizon_hours`` (default 96) hours at several quantile levels
(default P10/P50/P90).

Design:
- Values are normalized with a ``Normalization`` fitted on training data only (log + standardize by
  default, so the loss is close to a relative error).
- History and future hours are cut into patches of ``patch_hours``; each patch is one token. History
  tokens carry the values, calendar and extra columns; future tokens carry their calendar and three
  seasonal references computed from the history (the same hours yesterday, last week, and the mean
  daily profile of the last 7 days). A pre-LayerNorm transformer encoder mixes all tokens.
- The median is a residual over a seasonal reference (``residual_base``, default the 7-day mean daily
  profile); other quantiles are the median plus/minus cumulative softplus offsets, so quantiles are
  ordered by construction.
- Training minimizes the pinball (quantile) loss with AdamW and early stopping on a validation slice
  at the end of the training period.
- A global model can be trained on several series at once (``ForecasterConfig.num_regions > 1``):
  each series keeps its own normalization and its own ridge-initialized linear path, a learned
  region embedding is added to every token, and the transformer is shared. ``specialize_params``
  turns such a model into an ordinary single-region one (the embedding folds into the token
  embeddings' biases), so saved forecasters always have the single-region layout.
- Early stopping also picks a weight ``w`` of the network's median residual on the validation slice
  (median = linear path + ``w`` x residual, ``TrainConfig.residual_weight_grid``), a combination of
  the ridge forecast and the network that damps the network's variance.
- The non-median quantiles can be recalibrated per horizon hour on the validation windows
  (``forecast_metrics.QuantileCalibration``, split-conformal style); the calibration is saved with
  the forecaster and applied by ``predict_quantiles`` and ``forecast``.

Public API: ``ForecasterConfig``, ``TrainConfig``, ``ForecastTransformer``, ``init_params``,
``apply_quantiles``, ``pinball_loss``, ``train_forecaster``, ``specialize_params``, ``scale_median_residual``,
``predict_quantiles``, ``forecast``, ``save_forecaster``, ``restore_forecaster``; for an operational
forecaster that refits its closed-form parts (linear path, quantile calibration) on the past as data
arrives, with the network frozen: ``frozen_network_windows``, ``refit_closed_form_parts``,
``rolling_refit_quantiles``, ``closed_form_quantiles``, ``with_closed_form_parts``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import atomic_write_json

_RESIDUAL_BASES = ("none", "naive24", "naive168", "profile7")
_FORMAT_VERSION = 1
_META_FILE = "forecaster.json"
_PARAMS_DIR = "params"


# ----------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ForecasterConfig:
  """Architecture of the forecaster.

  Attributes:
    history_hours: hours of history the model reads (>= 168, a multiple of 24 and ``patch_hours``).
    horizon_hours: hours forecast after the origin (<= 168, a multiple of ``patch_hours``).
    patch_hours: hours per token.
    d_model: token width.
    num_layers: transformer blocks.
    num_heads: attention heads (divides ``d_model``).
    mlp_dim: hidden width of each block's MLP.
    dropout_rate: dropout in training.
    quantiles: increasing quantile levels in (0, 1); must contain 0.5.
    num_extra_features: extra history columns per hour (0: carbon intensity only).
    residual_base: the seasonal reference the median is a residual over ("none", "naive24",
      "naive168", "profile7").
    instance_norm: standardize each history window by its own mean and standard deviation (in the
      normalized space) and undo it on the output, so the network sees shapes, not levels.
    linear_skip: add a linear map of the (instance-normalized) history and origin calendar to the
      median, so the model contains a linear autoregressive forecaster.
    linear_skip_input: what the linear path reads: "window" (the history after the per-window
      normalization when ``instance_norm``; its output is denormalized with the network's) or
      "series" (the history as normalized for the whole series, i.e. the plain ridge forecaster;
      the network's residual is then scaled by the window's standard deviation and added to it,
      so the network stays blind to levels while the linear path keeps them). Without
      ``instance_norm`` both are the same.
    num_regions: series the model is trained on jointly (1: one series). With more than one, the
      model takes a region index per window, adds a learned region embedding to every token and
      keeps one linear path per region.
  """

  history_hours: int = 168
  horizon_hours: int = 96
  patch_hours: int = 24
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout_rate: float = 0.2
  quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
  num_extra_features: int = 0
  residual_base: str = "none"
  instance_norm: bool = True
  linear_skip: bool = True
  linear_skip_input: str = "window"
  num_regions: int = 1

  def __post_init__(self):
    object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
    errs = []
    if self.history_hours < 168 or self.history_hours % 24:
      errs.append(f"history_hours={self.history_hours} must be >= 168 and a multiple of 24")
    if self.patch_hours <= 0 or self.history_hours % self.patch_hours or self.horizon_hours % self.patch_hours:
      errs.append(f"patch_hours={self.patch_hours} must divide history_hours and horizon_hours")
    if not 0 < self.horizon_hours <= 168:
      errs.append(f"horizon_hours={self.horizon_hours} must be in 1..168")
    if self.d_model % self.num_heads:
      errs.append(f"num_heads={self.num_heads} must divide d_model={self.d_model}")
    qs = self.quantiles
    if 0.5 not in qs or list(qs) != sorted(set(qs)) or not all(0 < q < 1 for q in qs):
      errs.append(f"quantiles={qs} must be strictly increasing in (0, 1) and contain 0.5")
    if self.residual_base not in _RESIDUAL_BASES:
      errs.append(f"residual_base={self.residual_base!r} must be one of {_RESIDUAL_BASES}")
    if not 0.0 <= self.dropout_rate < 1.0:
      errs.append(f"dropout_rate={self.dropout_rate} must be in [0, 1)")
    if self.linear_skip_input not in ("window", "series"):
      errs.append(f"linear_skip_input={self.linear_skip_input!r} must be 'window' or 'series'")
    elif self.linear_skip_input == "series" and self.residual_base != "none":
      errs.append("linear_skip_input='series' needs residual_base='none'")
    if self.num_regions < 1:
      errs.append(f"num_regions={self.num_regions} must be >= 1")
    if errs:
      raise ValueError("Invalid ForecasterConfig: " + "; ".join(errs) + ".")

  @property
  def median_index(self) -> int:
    return self.quantiles.index(0.5)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["quantiles"] = list(self.quantiles)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ForecasterConfig":
    return cls(**{**d, "quantiles": tuple(d["quantiles"])})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimization settings of ``train_forecaster``.

  Attributes:
    batch_size: windows per step.
    learning_rate: peak AdamW learning rate (warmup, then cosine decay to 5 % over ``max_epochs``).
    weight_decay: AdamW weight decay.
    max_epochs: upper bound on passes over the training windows.
    patience: stop after this many epochs without a better validation loss.
    warmup_steps: linear warmup steps.
    train_stride_hours: hours between consecutive training origins.
    val_stride_hours: hours between consecutive validation origins.
    val_fraction: fraction of the training period (at its end) held out for early stopping.
    grad_clip_norm: global gradient-norm clip.
    seed: seeds initialization, shuffling and dropout.
    max_train_s: wall-clock budget for training (s); ``None``: no budget.
    ridge_init: with ``ForecasterConfig.linear_skip``, start the linear path from the closed-form
      ridge regression on the training windows (penalty picked on the validation slice), so training
      starts from a linear autoregressive forecaster and the transformer learns its residual.
    ridge_l2_grid: ridge penalties tried for ``ridge_init``.
    early_stopping_metric: "val_mape" (MAPE of the median forecast over the validation windows, what
      the forecaster is judged on) or "val_loss" (pinball loss over all quantiles).
    train_linear_skip: keep training the linear path (else it stays at its initial value and only
      the transformer and the quantile offsets are trained).
    residual_weight_grid: weights ``w`` of the network's median residual tried at every epoch on the
      validation windows (median = linear path + w * residual; ``w = 1`` is the network as trained);
      the best (epoch, w) pair is kept and ``w`` is folded into the head (``scale_median_residual``).
      Shrinking the residual towards the ridge forecast is a two-model combination that damps
      the network's variance. Only used with a frozen linear path and ``early_stopping_metric =
      "val_mape"``; otherwise ``w = 1``.
    calibrate_quantiles: after training, fit a ``forecast_metrics.QuantileCalibration`` of the
      non-median quantiles on the validation windows of the first series (``TrainResult.calibration``).
    calibration_stride_hours: hours between the origins of the calibration windows.
  """

  batch_size: int = 128
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  max_epochs: int = 40
  patience: int = 6
  warmup_steps: int = 200
  train_stride_hours: int = 1
  val_stride_hours: int = 6
  val_fraction: float = 0.1
  grad_clip_norm: float = 1.0
  seed: int = 0
  max_train_s: float | None = None
  ridge_init: bool = True
  ridge_l2_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
  train_linear_skip: bool = False
  early_stopping_metric: str = "val_mape"
  residual_weight_grid: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
  calibrate_quantiles: bool = True
  calibration_stride_hours: int = 1


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------
def seasonal_references(hist_z: jax.Array, horizon_hours: int) -> jax.Array:
  """Seasonal references for every future hour, from a normalized history.

  Args:
    hist_z: ``(B, L)`` normalized history, L >= 168.
    horizon_hours: H.

  Returns:
    ``(B, H, 4)``: same hour yesterday (repeated), same hour last week, the mean over the last 7
    days of the same hour of day, and the last value (persistence).
  """
  length = hist_z.shape[-1]
  h = jnp.arange(horizon_hours)
  naive24 = hist_z[:, length - 24 + (h % 24)]
  naive168 = hist_z[:, length - 168 + (h % 168)]
  days = jnp.arange(1, 8)
  idx = length - 24 * days[None, :] + (h % 24)[:, None]  # (H, 7)
  profile7 = hist_z[:, idx].mean(axis=-1)
  last = jnp.broadcast_to(hist_z[:, -1:], naive24.shape)
  return jnp.stack([naive24, naive168, profile7, last], axis=-1)


class _Block(nn.Module):
  """Pre-LayerNorm transformer encoder block."""

  num_heads: int
  mlp_dim: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.dropout_rate, deterministic=deterministic)(y, y)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = nn.LayerNorm()(x)
    y = nn.Dense(self.mlp_dim)(y)
    y = nn.gelu(y)
    y = nn.Dense(x.shape[-1])(y)
    return x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class _RegionDense(nn.Module):
  """A dense layer with one kernel and bias per region: ``x[b] @ kernel[region[b]] + bias[region[b]]``."""

  features: int
  num_regions: int

  @nn.compact
  def __call__(self, x: jax.Array, region: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.zeros, (self.num_regions, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.num_regions, self.features))
    return jnp.einsum("bd,bdh->bh", x, kernel[region]) + bias[region]


class ForecastTransformer(nn.Module):
  """Direct multi-horizon quantile forecaster (normalized space in and out).

  Call with ``hist_z`` ``(B, L)``, ``origin_hour`` ``(B,)`` (int hours since the Unix epoch of the
  first forecast hour), optional ``hist_extra`` ``(B, L, E)`` and, when ``config.num_regions > 1``,
  ``region`` ``(B,)`` ints in ``[0, num_regions)``; returns ``(B, H, Q)`` normalized quantiles,
  non-decreasing along Q.
  """

  config: ForecasterConfig

  @nn.compact
  def __call__(self, hist_z: jax.Array, origin_hour: jax.Array, hist_extra: jax.Array | None = None,
               region: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
    cfg = self.config
    batch, length = hist_z.shape
    if length != cfg.history_hours:
      raise ValueError(f"Expected {cfg.history_hours} history hours, got {length}.")
    multi = cfg.num_regions > 1
    if multi:
      if region is None:
        raise ValueError(f"This forecaster covers {cfg.num_regions} regions: pass region (B,) ints.")
      region = region.astype(jnp.int32)
    horizon, patch, num_q = cfg.horizon_hours, cfg.patch_hours, len(cfg.quantiles)
    origin_hour = origin_hour.astype(jnp.int32)
    cal_hist = fm.calendar_features(origin_hour[:, None] + jnp.arange(-length, 0), xp=jnp)
    cal_fut = fm.calendar_features(origin_hour[:, None] + jnp.arange(horizon), xp=jnp)
    if cfg.instance_norm:  # Per-window standardization, undone on the output.
      loc = hist_z.mean(axis=1, keepdims=True)
      scale = jnp.maximum(hist_z.std(axis=1, keepdims=True), 0.05)
    else:
      loc, scale = jnp.zeros((batch, 1), hist_z.dtype), jnp.ones((batch, 1), hist_z.dtype)
    series_z = hist_z
    hist_z = (hist_z - loc) / scale
    refs = seasonal_references(hist_z, horizon)  # (B, H, 4)

    # Tokens: one per patch of history, one per patch of the horizon.
    hist_parts = [hist_z[..., None], cal_hist]
    if cfg.num_extra_features:
      if hist_extra is None or hist_extra.shape[-1] != cfg.num_extra_features:
        raise ValueError(f"Expected hist_extra with {cfg.num_extra_features} columns.")
      hist_parts.append(hist_extra)
    hist_feats = jnp.concatenate(hist_parts, axis=-1)
    hist_tokens = hist_feats.reshape(batch, length // patch, -1)
    fut_feats = jnp.concatenate([refs, cal_fut], axis=-1)
    fut_tokens = fut_feats.reshape(batch, horizon // patch, -1)
    x = jnp.concatenate([nn.Dense(cfg.d_model, name="embed_history")(hist_tokens),
                         nn.Dense(cfg.d_model, name="embed_future")(fut_tokens)], axis=1)
    if multi:  # Same vector on every token: folds into the embeddings' biases (specialize_params).
      table = self.param("region_embedding", nn.initializers.zeros, (cfg.num_regions, cfg.d_model))
      x = x + table[region][:, None, :]
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], cfg.d_model))
    x = nn.Dropout(cfg.dropout_rate)(x + pos, deterministic=deterministic)
    for i in range(cfg.num_layers):
      x = _Block(cfg.num_heads, cfg.mlp_dim, cfg.dropout_rate, name=f"block_{i}")(x, deterministic)
    x = nn.LayerNorm(name="final_norm")(x[:, length // patch:])
    out = nn.Dense(patch * num_q, kernel_init=nn.initializers.zeros, name="head")(x)
    out = out.reshape(batch, horizon, num_q)

    # Median = seasonal reference + residual; other quantiles = cumulative softplus offsets.
    m = cfg.median_index
    base = 0.0
    if cfg.residual_base != "none":
      base = refs[..., ("naive24", "naive168", "profile7").index(cfg.residual_base)]
    median = base + out[..., m]
    linear = None
    if cfg.linear_skip:
      on_series = cfg.linear_skip_input == "series"
      skip_in = jnp.concatenate([series_z if on_series else hist_z, cal_fut[:, 0]], axis=-1)
      if multi:
        linear = _RegionDense(horizon, cfg.num_regions, name="linear_skip")(skip_in, region)
      else:
        linear = nn.Dense(horizon, kernel_init=nn.initializers.zeros, name="linear_skip")(skip_in)
      if not on_series:
        median, linear = median + linear, None
    offsets = jax.nn.softplus(out + 0.5) * 0.3 + 1e-4  # Positive, roughly +-1/3 std at init.
    above = median[..., None] + jnp.cumsum(offsets[..., m + 1:], axis=-1)
    below = median[..., None] - jnp.cumsum(offsets[..., :m][..., ::-1], axis=-1)[..., ::-1]
    quantiles = jnp.concatenate([below, median[..., None], above], axis=-1)
    if linear is not None:  # Series-space linear path plus the window-scaled network residual.
      return linear[..., None] + quantiles * scale[..., None]
    return quantiles * scale[..., None] + loc[..., None]


def init_params(rng: jax.Array, config: ForecasterConfig) -> Any:
  """Initial parameters of ``ForecastTransformer(config)``."""
  model = ForecastTransformer(config)
  hist = jnp.zeros((1, config.history_hours), jnp.float32)
  extra = (jnp.zeros((1, config.history_hours, config.num_extra_features), jnp.float32)
           if config.num_extra_features else None)
  region = jnp.zeros((1,), jnp.int32) if config.num_regions > 1 else None
  return model.init({"params": rng}, hist, jnp.zeros((1,), jnp.int32), extra, region)["params"]


def scale_median_residual(params: Any, config: ForecasterConfig, weight: float) -> Any:
  """Multiplies the network's median residual by ``weight`` (in the head's weights).

  The linear path, the seasonal base and the quantile offsets are untouched, so the median becomes
  ``base + linear + weight * residual`` and the other quantiles move with it.
  """
  num_q = len(config.quantiles)
  mask = (np.arange(config.patch_hours * num_q) % num_q) == config.median_index
  factor = jnp.asarray(np.where(mask, weight, 1.0), jnp.float32)
  head = params["head"]
  return {**params, "head": {"kernel": head["kernel"] * factor, "bias": head["bias"] * factor}}


def specialize_params(params: Any, config: ForecasterConfig, region_index: int) -> tuple[Any, ForecasterConfig]:
  """Turns a multi-region model into the equivalent single-region model of one region.

  The region embedding is added to every token, so it folds into the biases of the history and
  future token embeddings; the region's own linear path becomes the ordinary ``linear_skip``.
  ``apply_quantiles`` of the result equals that of the multi-region model with ``region`` set to
  ``region_index`` for every window.

  Args:
    params: parameters of ``ForecastTransformer(config)``.
    config: its config.
    region_index: the region to keep, in ``[0, config.num_regions)``.

  Returns:
    ``(params, config)`` with ``config.num_regions == 1``.
  """
  if not 0 <= region_index < config.num_regions:
    raise ValueError(f"region_index={region_index} is outside [0, {config.num_regions}).")
  if config.num_regions == 1:
    return params, config
  p = dict(params)
  emb = p.pop("region_embedding")[region_index]
  for name in ("embed_history", "embed_future"):
    p[name] = {**p[name], "bias": p[name]["bias"] + emb}
  if config.linear_skip:
    p["linear_skip"] = {"kernel": p["linear_skip"]["kernel"][region_index],
                        "bias": p["linear_skip"]["bias"][region_index]}
  return p, dataclasses.replace(config, num_regions=1)


def pinball_loss(pred_q: jax.Array, target: jax.Array, quantiles: Sequence[float]) -> jax.Array:
  """Mean pinball (quantile) loss of ``(B, H, Q)`` predictions for ``(B, H)`` targets."""
  tau = jnp.asarray(quantiles, pred_q.dtype)
  diff = target[..., None] - pred_q
  return jnp.mean(jnp.maximum(tau * diff, (tau - 1.0) * diff))


@functools.partial(jax.jit, static_argnames=("config",))
def apply_quantiles(params: Any, hist_z: jax.Array, origin_hour: jax.Array, hist_extra: jax.Array | None,
                    config: ForecasterConfig, region: jax.Array | None = None) -> jax.Array:
  """Deterministic forward pass: normalized ``(B, H, Q)`` quantiles (``region``: multi-region models)."""
  return ForecastTransformer(config).apply({"params": params}, hist_z, origin_hour, hist_extra, region)


# ----------------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What ``train_forecaster`` returns.

  Attributes:
    params: the parameters with the best validation score (multi-region layout when trained on
      several series; see ``specialize_params``).
    normalization: statistics fitted on the training slice of the first series (never its
      validation slice).
    history: one dict per epoch (epoch, train_loss, val_loss, val_mape, residual_weight, epoch_s, and
      with several series val_mape_by_region, at the largest residual weight); epoch 0 scores the initial parameters (train_loss
      NaN); val_mape is that of the best residual weight of the epoch.
    residual_weight: the median-residual weight kept (already folded into ``params``).
    best_epoch: epoch whose parameters were kept (0: the initial parameters).
    num_train_windows: training windows per epoch (all series).
    num_val_windows: validation windows (all series).
    val_start: first hour of the first series' validation slice (ISO, UTC).
    stopped_because: "patience", "max_epochs" or "time_budget".
    normalizations: one per series, in the order of ``region_names``.
    region_names: the series' names (``("",)`` for a single unnamed series).
    calibration: quantile calibration fitted on the first series' validation windows, or ``None``.
  """

  params: Any
  normalization: fm.Normalization
  history: tuple[dict[str, float], ...]
  best_epoch: int
  num_train_windows: int
  num_val_windows: int
  val_start: str
  stopped_because: str
  normalizations: tuple[fm.Normalization, ...] = ()
  region_names: tuple[str, ...] = ()
  calibration: fm.QuantileCalibration | None = None
  residual_weight: float = 1.0


def _gather(series: jax.Array, origins: jax.Array, start: int, stop: int) -> jax.Array:
  """``series[origins + k]`` for ``k`` in ``[start, stop)``: ``(B, stop - start, ...)``."""
  return series[origins[:, None] + jnp.arange(start, stop)[None, :]]


def _instance_normalize(hist_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """NumPy twin of the model's per-window standardization: ``(loc, scale)`` of shape ``(N, 1)``."""
  loc = hist_z.mean(axis=1, keepdims=True)
  scale = np.maximum(hist_z.std(axis=1, keepdims=True), 0.05)
  return loc, scale


def _ridge_skip_params(z: np.ndarray, train_origins: np.ndarray, val_origins: np.ndarray, hours: np.ndarray,
                       config: ForecasterConfig, l2_grid: Sequence[float]) -> tuple[dict[str, Any], float]:
  """Closed-form ridge weights for one series' ``linear_skip`` layer (in the model's own input space).

  Args:
    z: ``(T,)`` normalized series.
    train_origins: positions of the training origins in ``z``.
    val_origins: positions of the validation origins (picks the penalty).
    hours: ``(T,)`` hours since the Unix epoch of each position.
    config: the model's config.
    l2_grid: ridge penalties to try.
  """
  from cenas_jax.carbon import baselines  # NumPy only.

  length, horizon = config.history_hours, config.horizon_hours
  if config.residual_base != "none":
    raise ValueError("ridge_init needs residual_base='none' (the ridge is the base).")

  def data(origins):
    hist, fut = fm.make_windows(z, origins, length, horizon)
    hist = hist.astype(np.float64)
    fut = fut.astype(np.float64)
    if config.instance_norm and config.linear_skip_input == "window":
      loc, scale = _instance_normalize(hist)
      hist, fut = (hist - loc) / scale, (fut - loc) / scale
    return np.concatenate([hist, fm.calendar_features(hours[origins]).astype(np.float64)], axis=-1), fut

  model = baselines.fit_linear_ar_with_validation(
      data(train_origins), data(val_origins), l2_grid=l2_grid,
      score=lambda p, t: float(np.mean(np.abs(p - t))))
  kernel = model.weights / model.feature_std[:, None]
  bias = model.bias - (model.feature_mean / model.feature_std) @ model.weights
  return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}, model.l2


def _make_steps(config: ForecasterConfig, optimizer: optax.GradientTransformation):
  """Jitted epoch (``lax.scan`` over steps) and evaluation functions over device-resident series.

  ``data`` is ``(z, extra, hours, regions)``: the normalized values, extra columns, hours since the
  epoch and region index of every position of the (concatenated) training series.
  """
  model = ForecastTransformer(config)
  length, horizon = config.history_hours, config.horizon_hours

  def batch_inputs(data, origins):
    z, extra, hours, regions = data
    hist = _gather(z, origins, -length, 0)
    target = _gather(z, origins, 0, horizon)
    hist_extra = _gather(extra, origins, -length, 0) if config.num_extra_features else None
    region = regions[origins] if config.num_regions > 1 else None
    return hist, target, hist_extra, hours[origins], region

  def loss_fn(params, data, origins, rng):
    hist, target, hist_extra, origin_hour, region = batch_inputs(data, origins)
    pred = model.apply({"params": params}, hist, origin_hour, hist_extra, region, deterministic=False,
                       rngs={"dropout": rng})
    return pinball_loss(pred, target, config.quantiles)

  @jax.jit
  def train_epoch(params, opt_state, data, origin_batches, rng):
    def step(carry, xs):
      params, opt_state = carry
      origins, i = xs
      loss, grads = jax.value_and_grad(loss_fn)(params, data, origins, jax.random.fold_in(rng, i))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    steps = jnp.arange(origin_batches.shape[0])
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (origin_batches, steps))
    return params, opt_state, losses.mean()

  @jax.jit
  def evaluate(params, data, origins):
    """Pinball loss, all quantiles ``(N, H, Q)``, targets and histories (normalized space)."""
    hist, target, hist_extra, origin_hour, region = batch_inputs(data, origins)
    pred = model.apply({"params": params}, hist, origin_hour, hist_extra, region)
    return pinball_loss(pred, target, config.quantiles), pred, target, hist

  return train_epoch, evaluate


def _as_named(value: Any, what: str) -> dict[str, Any]:
  """A Series/DataFrame (one unnamed series) or a mapping name -> Series/DataFrame, as a dict."""
  if isinstance(value, (pd.Series, pd.DataFrame)):
    return {"": value}
  if isinstance(value, Mapping) and value:
    return dict(value)
  raise ValueError(f"{what} must be a pandas Series or a non-empty mapping name -> Series, got "
                   f"{type(value).__name__}.")


def train_forecaster(train_ci_g_per_kwh: pd.Series | Mapping[str, pd.Series], *,
                     config: ForecasterConfig = ForecasterConfig(), train_config: TrainConfig = TrainConfig(),
                     train_extra: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None,
                     log_target: bool = True,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
  """Trains a forecaster on one or several contiguous hourly series, early-stopping on validation.

  The last ``train_config.val_fraction`` of each series is its validation slice: the series'
  normalization is fitted on the hours before it, training windows end (history and target) before
  it, and validation windows forecast hours inside it.

  Several series (a mapping name -> series, e.g. one per grid region) train one global model: each
  keeps its own normalization and ridge-initialized linear path, windows of all series are shuffled
  together, and ``config.num_regions`` must equal the number of series. Early stopping and the
  quantile calibration look at the *first* series only (the region the model is for); the others
  only add training windows.

  The parameters kept are those of the epoch with the best ``train_config.early_stopping_metric``
  on the validation windows; epoch 0 (the initial parameters) is a candidate.

  Args:
    train_ci_g_per_kwh: hourly carbon intensity (gCO2eq/kWh) on a UTC index, no gaps; or a mapping
      name -> such series.
    config: the architecture.
    train_config: optimization settings.
    train_extra: optional extra columns on the same index (``config.num_extra_features`` of them);
      a mapping with the same keys when several series are given.
    log_target: model log carbon intensity (recommended: the loss becomes a relative error).
    progress: called after each epoch with a dict (epoch, train_loss, val_loss, val_mape, epoch_s).

  Returns:
    A ``TrainResult`` holding the best parameters, the normalizations and the calibration.
  """
  tc = train_config
  if tc.early_stopping_metric not in ("val_mape", "val_loss"):
    raise ValueError(f"early_stopping_metric must be 'val_mape' or 'val_loss', got {tc.early_stopping_metric!r}.")
  series = _as_named(train_ci_g_per_kwh, "train_ci_g_per_kwh")
  names = list(series)
  extras = ({name: None for name in names} if train_extra is None
            else _as_named(train_extra, "train_extra"))
  if set(extras) != set(names):
    raise ValueError(f"train_extra covers {sorted(extras)} but the series are {names}.")
  if config.num_regions != len(names):
    raise ValueError(f"config.num_regions={config.num_regions} but {len(names)} training series were "
                     f"given ({names}); set num_regions to the number of series.")
  length, horizon = config.history_hours, config.horizon_hours

  # Per series: validation split, normalization (training slice only), windows.
  zs, ex, hrs, regs = [], [], [], []
  train_o, val_o, norms, val_actual = [], [], [], []
  ridge_parts, ridge_l2s = [], []
  offset = 0
  for r, name in enumerate(names):
    ci = series[name]
    label = f"training series {name!r}" if name else "training series"
    fm.check_hourly(ci, name=label)
    extra_df = extras[name]
    num_extra = 0 if extra_df is None else extra_df.shape[1]
    if num_extra != config.num_extra_features:
      raise ValueError(f"config.num_extra_features={config.num_extra_features} but {num_extra} extra "
                       f"columns were given for {label}.")
    total = len(ci)
    val_pos = int(round(total * (1.0 - tc.val_fraction)))
    t_o = np.arange(length, val_pos - horizon + 1, tc.train_stride_hours)
    v_o = np.arange(max(val_pos, length), total - horizon + 1, tc.val_stride_hours)
    if len(t_o) == 0 or len(v_o) == 0 or (r == 0 and len(t_o) < tc.batch_size):
      raise ValueError(
          f"{label} of {total} h is too short for history {length} h + horizon {horizon} h, "
          f"val_fraction {tc.val_fraction} and batch {tc.batch_size}: {len(t_o)} training and "
          f"{len(v_o)} validation windows.")
    norm = fm.fit_normalization(ci.iloc[:val_pos], None if extra_df is None else extra_df.iloc[:val_pos],
                                log_target=log_target)
    z = norm.transform(ci.to_numpy())
    hours = fm.hours_since_epoch(ci.index)
    if tc.ridge_init and config.linear_skip:
      skip, l2 = _ridge_skip_params(z, t_o, v_o, hours, config, tc.ridge_l2_grid)
      ridge_parts.append(skip)
      ridge_l2s.append(l2)
    zs.append(z)
    ex.append(norm.transform_extra(extra_df.to_numpy()) if num_extra else np.zeros((total, 0), np.float32))
    hrs.append(hours.astype(np.int32))
    regs.append(np.full(total, r, np.int32))
    train_o.append(t_o + offset)
    val_o.append(v_o + offset)
    norms.append(norm)
    val_actual.append(fm.make_windows(ci.to_numpy(), v_o, length, horizon)[1])
    offset += total
    if r == 0:
      val_start = ci.index[val_pos].isoformat()
      cal_o = np.arange(max(val_pos, length), total - horizon + 1, tc.calibration_stride_hours)
      cal_index = ci.index
  data = (jnp.asarray(np.concatenate(zs)), jnp.asarray(np.concatenate(ex)), jnp.asarray(np.concatenate(hrs)),
          jnp.asarray(np.concatenate(regs)))
  train_origins = np.concatenate(train_o)
  val_counts = [len(v) for v in val_o]
  val_origins_j = jnp.asarray(np.concatenate(val_o), jnp.int32)

  steps_per_epoch = len(train_origins) // tc.batch_size
  total_steps = max(steps_per_epoch * tc.max_epochs, tc.warmup_steps + 1)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, tc.learning_rate, tc.warmup_steps, total_steps, end_value=0.05 * tc.learning_rate)
  optimizer = optax.chain(optax.clip_by_global_norm(tc.grad_clip_norm),
                          optax.adamw(schedule, weight_decay=tc.weight_decay))
  if config.linear_skip and not tc.train_linear_skip:
    labels = lambda p: {k: jax.tree.map(lambda _: "frozen" if k == "linear_skip" else "train", v)
                        for k, v in p.items()}
    optimizer = optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)
  train_epoch, evaluate = _make_steps(config, optimizer)

  rng = jax.random.key(tc.seed)
  init_rng, shuffle_rng, dropout_rng = jax.random.split(rng, 3)
  params = init_params(init_rng, config)
  ridge_l2 = None
  if ridge_parts:
    if config.num_regions > 1:
      skip = jax.tree.map(lambda *xs: jnp.stack(xs), *ridge_parts)
      ridge_l2 = ridge_l2s
    else:
      skip, ridge_l2 = ridge_parts[0], ridge_l2s[0]
    params = {**params, "linear_skip": skip}
  opt_state = optimizer.init(params)
  # The median is linear in the residual weight (the linear path is frozen), so every weight is
  # scored from two forward passes: the initial parameters (residual 0) and the current ones.
  weights = (tuple(tc.residual_weight_grid) if not tc.train_linear_skip and tc.early_stopping_metric == "val_mape"
             else (1.0,))
  if not weights or any(not 0.0 < w <= 1.0 for w in weights):
    raise ValueError(f"residual_weight_grid={tc.residual_weight_grid} must hold weights in (0, 1].")
  val_p50_init = None
  best = (np.inf, params, 0, 1.0)
  history: list[dict[str, Any]] = []
  stopped = "max_epochs"
  start_s = time.perf_counter()
  # Epoch 0 scores the initial parameters (the ridge forecaster when ridge_init), so early stopping
  # never returns something worse on validation than where training started.
  for epoch in range(0, tc.max_epochs + 1):
    t_epoch = time.perf_counter()
    train_loss = jnp.nan
    if epoch > 0:
      perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_rng, epoch), len(train_origins)))
      batches = train_origins[perm[:steps_per_epoch * tc.batch_size]].reshape(steps_per_epoch, tc.batch_size)
      params, opt_state, train_loss = train_epoch(params, opt_state, data, jnp.asarray(batches, jnp.int32),
                                                  jax.random.fold_in(dropout_rng, epoch))
    val_loss, val_q_z, _, _ = evaluate(params, data, val_origins_j)
    val_p50 = np.asarray(val_q_z[..., config.median_index], np.float64)
    if val_p50_init is None:
      val_p50_init = val_p50
    region_mape = {}
    for w in weights:
      blend = np.split(val_p50_init + w * (val_p50 - val_p50_init), np.cumsum(val_counts)[:-1])
      region_mape[w] = [float(np.mean(fm.absolute_percentage_errors(a, n.inverse(p))))
                        for a, n, p in zip(val_actual, norms, blend)]
    weight = min(weights, key=lambda w: (region_mape[w][0], -w))
    row: dict[str, Any] = {"epoch": epoch, "train_loss": float(train_loss), "val_loss": float(val_loss),
                           "val_mape": region_mape[weight][0], "residual_weight": weight,
                           "epoch_s": time.perf_counter() - t_epoch}
    if len(names) > 1:  # Every region with the network as trained (the largest weight).
      row["val_mape_by_region"] = dict(zip(names, region_mape[max(weights)]))
    if epoch == 0:
      row["ridge_l2"] = ridge_l2
    history.append(row)
    score = row[tc.early_stopping_metric]
    if score < best[0]:
      best = (score, params, epoch, weight)
    if progress is not None:
      progress({**row, "best_epoch": best[2], "steps": steps_per_epoch})
    if epoch - best[2] >= tc.patience:
      stopped = "patience"
      break
    if tc.max_train_s is not None and time.perf_counter() - start_s > tc.max_train_s:
      stopped = "time_budget"
      break

  best_params = scale_median_residual(best[1], config, best[3]) if best[3] != 1.0 else best[1]
  calibration = None
  if tc.calibrate_quantiles:
    _, cal_q, cal_target, cal_hist = evaluate(best_params, data, jnp.asarray(cal_o, jnp.int32))
    calibration = fm.fit_quantile_calibration(
        np.asarray(cal_q), np.asarray(cal_target), np.asarray(cal_hist), config.quantiles,
        fitted_start=cal_index[cal_o[0]].isoformat(),
        fitted_end=cal_index[cal_o[-1] + horizon - 1].isoformat())
  return TrainResult(params=best_params, normalization=norms[0], history=tuple(history), best_epoch=best[2],
                     num_train_windows=len(train_origins), num_val_windows=int(sum(val_counts)),
                     val_start=val_start, stopped_because=stopped, normalizations=tuple(norms),
                     region_names=tuple(names), calibration=calibration, residual_weight=best[3])


# ----------------------------------------------------------------------------------------------
# Inference.
# ----------------------------------------------------------------------------------------------
def predict_quantiles(params: Any, hist_ci_g_per_kwh: np.ndarray, origin_hours: np.ndarray, *,
                      config: ForecasterConfig, normalization: fm.Normalization,
                      hist_extra: np.ndarray | None = None, batch_size: int = 512,
                      calibration: fm.QuantileCalibration | None = None,
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
    calibration: recalibrates the non-median quantiles (see ``fm.QuantileCalibration``); ``None``:
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


def forecast(params: Any, history: pd.Series, *, config: ForecasterConfig,
             normalization: fm.Normalization, history_extra: pd.DataFrame | None = None,
             calibration: fm.QuantileCalibration | None = None) -> pd.DataFrame:
  """Forecasts the hours after the end of ``history``.

  Args:
    params: trained parameters.
    history: hourly carbon intensity (gCO2eq/kWh) on a UTC index; its last ``history_hours`` values
      are used and must be contiguous.
    config: the model's config.
    normalization: the normalization the model was trained with.
    history_extra: extra columns on ``history``'s index, when the model uses them.
    calibration: the forecaster's quantile calibration (``None``: the model's own quantiles).

  Returns:
    A DataFrame indexed by the next ``horizon_hours`` hourly UTC timestamps with one column per
    quantile (``p10``, ``p50``, ``p90`` by default), in gCO2eq/kWh.
  """
  if len(history) < config.history_hours:
    raise ValueError(f"forecast() needs at least {config.history_hours} hours of history, got {len(history)}.")
  window = history.iloc[-config.history_hours:]
  fm.check_hourly(window, name="forecast history")
  extra = None
  if config.num_extra_features:
    if history_extra is None:
      raise ValueError(f"This forecaster needs history_extra with columns {normalization.extra_names}.")
    extra = history_extra.loc[window.index].to_numpy()[None]
  origin = window.index[-1] + pd.Timedelta(hours=1)
  q = predict_quantiles(params, window.to_numpy()[None], fm.hours_since_epoch(pd.DatetimeIndex([origin])),
                        config=config, normalization=normalization, hist_extra=extra,
                        calibration=calibration)[0]
  index = pd.date_range(origin, periods=config.horizon_hours, freq="h")
  return pd.DataFrame(q, index=index, columns=fm.quantile_names(config.quantiles))


# ----------------------------------------------------------------------------------------------
# Refitting the closed-form parts on the past (the network frozen).
# ----------------------------------------------------------------------------------------------
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
  calibration: fm.QuantileCalibration | None
  cutoff: int
  num_windows: int


def _check_refittable(config: ForecasterConfig) -> None:
  if not config.linear_skip or config.num_regions != 1 or config.num_extra_features or config.residual_base != "none":
    raise ValueError("Refitting needs a single-region forecaster (specialize_params) with a linear path, "
                     "residual_base='none' and no extra columns; got "
                     f"linear_skip={config.linear_skip}, num_regions={config.num_regions}, "
                     f"num_extra_features={config.num_extra_features}, residual_base={config.residual_base!r}.")


def frozen_network_windows(params: Any, ci_g_per_kwh: np.ndarray, hours: np.ndarray, *, config: ForecasterConfig,
                           normalization: fm.Normalization, batch_size: int = 1024) -> FrozenNetworkWindows:
  """Runs the frozen network once over every window of a series (all origins, 1 h apart).

  Each window's entries depend only on its own history and targets, so a refit that selects windows
  by origin (``baselines.windows_before``) sees nothing after its cutoff.

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
  hist_z, target_z = fm.make_windows(z, origins, length, horizon)
  zero_skip = {**params, "linear_skip": jax.tree.map(jnp.zeros_like, params["linear_skip"])}
  outs = []
  for i in range(0, len(origins), batch_size):
    sl = slice(i, i + batch_size)
    outs.append(np.asarray(apply_quantiles(zero_skip, hist_z[sl], hours[origins[sl]].astype(np.int32), None,
                                           config)))
  net_q_z = np.concatenate(outs, axis=0)
  cal = fm.calendar_features(hours[origins]).astype(np.float64)
  hist64 = hist_z.astype(np.float64)
  if config.instance_norm and config.linear_skip_input == "window":
    loc, scale = _instance_normalize(hist64)
    skip_in = (hist64 - loc) / scale
  else:
    loc, scale = np.zeros((len(origins), 1)), np.ones((len(origins), 1))
    skip_in = hist64
  return FrozenNetworkWindows(origins=origins, hist_z=hist_z, skip_features=np.concatenate([skip_in, cal], axis=-1),
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

  Only windows whose targets end strictly before ``cutoff`` are read (``baselines.past_split``); the
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
  from cenas_jax.carbon import baselines  # NumPy only.

  _check_refittable(config)
  if fit_target not in _REFIT_TARGETS:
    raise ValueError(f"fit_target={fit_target!r} must be one of {_REFIT_TARGETS}.")
  horizon = config.horizon_hours
  all_rows = np.flatnonzero(baselines.windows_before(windows.origins, cutoff=cutoff, horizon_hours=horizon))
  # Targets are computed for the usable rows only: later rows may hold anything (NaN) and are never read.
  target = np.full(windows.target_z.shape, np.nan)
  base = (windows.net_q_z[all_rows, :, config.median_index] if fit_target == "residual"
          else windows.skip_loc[all_rows])
  target[all_rows] = (windows.target_z[all_rows] - base) / windows.skip_scale[all_rows]
  model, num = baselines.fit_linear_ar_before(
      windows.skip_features, target, windows.origins, cutoff=cutoff, horizon_hours=horizon, val_hours=val_hours,
      l2_grid=l2_grid, score=lambda p, t: float(np.mean(np.abs(p - t))))
  kernel = model.weights / model.feature_std[:, None]
  bias = model.bias - (model.feature_mean / model.feature_std) @ model.weights
  parts = ClosedFormParts(kernel=kernel, bias=bias, l2=model.l2, calibration=None, cutoff=int(cutoff),
                          num_windows=num)
  if calibration_hours is None:
    return parts
  cal_rows = all_rows[windows.origins[all_rows] + horizon > cutoff - calibration_hours]
  q = closed_form_quantiles(windows, cal_rows, parts, calibrate=False)
  calibration = fm.fit_quantile_calibration(q, windows.target_z[cal_rows], windows.hist_z[cal_rows],
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
      (``forecast_metrics.refit_cutoffs``).
    config: the model's config.
    val_hours, l2_grid, fit_target, calibration_hours: see ``refit_closed_form_parts``.

  Returns:
    ``(q_z, parts)``: ``(M, H, Q)`` normalized quantiles (calibrated when ``calibration_hours``) and
    the parts of every refit, in time order.
  """
  eval_rows = np.asarray(eval_rows, np.int64)
  q = np.zeros((len(eval_rows), config.horizon_hours, len(config.quantiles)))
  fitted = []
  for cutoff, sel in fm.refit_groups(cutoffs, windows.origins[eval_rows]):
    parts = refit_closed_form_parts(windows, cutoff=cutoff, config=config, val_hours=val_hours,
                                    l2_grid=l2_grid, fit_target=fit_target, calibration_hours=calibration_hours)
    q[sel] = closed_form_quantiles(windows, eval_rows[sel], parts)
    fitted.append(parts)
  return q, fitted


# ----------------------------------------------------------------------------------------------
# Checkpoints.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainedForecaster:
  """A restored forecaster: parameters, config, normalization, metadata and quantile calibration."""

  params: Any
  config: ForecasterConfig
  normalization: fm.Normalization
  metadata: dict[str, Any]
  calibration: fm.QuantileCalibration | None = None

  def forecast(self, history: pd.Series, history_extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """``forecast(self.params, history, ...)`` with this forecaster's config, normalization and calibration."""
    return forecast(self.params, history, config=self.config, normalization=self.normalization,
                    history_extra=history_extra, calibration=self.calibration)

  def predict_quantiles(self, hist_ci_g_per_kwh: np.ndarray, origin_hours: np.ndarray,
                        hist_extra: np.ndarray | None = None) -> np.ndarray:
    """``predict_quantiles`` with this forecaster's params, config, normalization and calibration."""
    return predict_quantiles(self.params, hist_ci_g_per_kwh, origin_hours, config=self.config,
                             normalization=self.normalization, hist_extra=hist_extra,
                             calibration=self.calibration)


def save_forecaster(directory: str | Path, params: Any, *, config: ForecasterConfig,
                    normalization: fm.Normalization, metadata: dict[str, Any] | None = None,
                    calibration: fm.QuantileCalibration | None = None) -> Path:
  """Saves parameters (orbax) plus config, normalization, calibration and metadata (JSON) under ``directory``.

  Multi-region models are saved as they are; ``specialize_params`` them first to save the model of
  one region.

  The directory must not exist yet (an existing forecaster is never overwritten). The JSON file is
  written last, so a directory without it is an unfinished save.

  Returns:
    The directory.
  """
  import orbax.checkpoint as ocp  # Imported here: orbax is slow to import.

  directory = Path(directory).expanduser().resolve()
  if directory.exists():
    raise FileExistsError(f"{directory} already exists; choose a new directory for the forecaster.")
  directory.mkdir(parents=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(directory / _PARAMS_DIR, params)
    ckptr.wait_until_finished()
  atomic_write_json(directory / _META_FILE, {
      "format_version": _FORMAT_VERSION, "config": config.to_dict(),
      "normalization": normalization.to_dict(), "metadata": metadata or {},
      "calibration": None if calibration is None else calibration.to_dict()})
  return directory


def restore_forecaster(directory: str | Path) -> TrainedForecaster:
  """Restores a forecaster saved by ``save_forecaster``.

  Raises:
    DataUnavailableError: the directory or its files are missing.
    DataError: the files are corrupt or do not match the stored config.
  """
  import orbax.checkpoint as ocp

  directory = Path(directory).expanduser().resolve()
  meta_path = directory / _META_FILE
  if not meta_path.is_file() or not (directory / _PARAMS_DIR).is_dir():
    raise DataUnavailableError(
        f"No saved forecaster at {directory} (expected {_META_FILE} and {_PARAMS_DIR}/). Point "
        "--restore_from at the 'forecaster' folder of a finished train_forecaster workdir.")
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != _FORMAT_VERSION:
      raise ValueError(f"format_version {meta.get('format_version')} != {_FORMAT_VERSION}")
    config = ForecasterConfig.from_dict(meta["config"])
    norm = fm.Normalization.from_dict(meta["normalization"])
    cal = meta.get("calibration")
    calibration = None if cal is None else fm.QuantileCalibration.from_dict(cal)
    if calibration is not None and (
        calibration.quantiles != config.quantiles
        or any(len(s) != config.horizon_hours for s in calibration.shift)):
      raise ValueError("the calibration does not match the config's quantiles and horizon")
  except (ValueError, KeyError, TypeError) as e:
    raise DataError(f"{meta_path}: not a valid forecaster description ({e}).") from e
  abstract = jax.eval_shape(lambda: init_params(jax.random.key(0), config))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      params = ckptr.restore(directory / _PARAMS_DIR, abstract)
  except Exception as e:  # orbax raises many types for corrupt or mismatched checkpoints.
    raise DataError(f"{directory / _PARAMS_DIR}: cannot restore the forecaster's parameters ({e}). "
                    "The checkpoint is corrupt or was written with another config.") from e
  return TrainedForecaster(params=params, config=config, normalization=norm, metadata=meta.get("metadata", {}),
                          calibration=calibration)


def count_params(params: Any) -> int:
  """Number of scalar parameters."""
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def remove_unfinished_save(directory: str | Path) -> bool:
  """Deletes ``directory`` if it holds an unfinished save (params without ``forecaster.json``).

  Returns:
    Whether something was removed.
  """
  directory = Path(directory)
  if directory.is_dir() and not (directory / _META_FILE).exists():
    shutil.rmtree(directory)
    return True
  return False
