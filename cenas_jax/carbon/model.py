"""The forecaster's network: a Flax Linen time-series transformer with quantile outputs.

The model maps a history window (default 168 hourly values of carbon intensity, optionally with extra
columns such as generation by source) plus calendar features (hour of day, day of week, day of year)
to a direct forecast of the next ``horizon_hours`` (default 96) hours at several quantile levels
(default P10/P50/P90), all in the normalized space (``normalization.Normalization``).

Design:
- History and future hours are cut into patches of ``patch_hours``; each patch is one token. History
  tokens carry the values, calendar and extra columns; future tokens carry their calendar and three
  seasonal references computed from the history (the same hours yesterday, last week, and the mean
  daily profile of the last 7 days). A pre-LayerNorm transformer encoder mixes all tokens.
- Each window is standardized by its own mean and scale (``instance_norm``), undone on the output.
- The median is a residual over a seasonal reference (``residual_base``) plus an optional linear path
  (``linear_skip``); other quantiles are the median plus/minus cumulative softplus offsets, so
  quantiles are ordered by construction.
- A global model covers several series (``ForecasterConfig.num_regions > 1``): a learned region
  embedding is added to every token and each region has its own linear path. ``specialize_params``
  turns it into the equivalent single-region model (the embedding folds into the token embeddings'
  biases), so saved forecasters always have the single-region layout.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.carbon.normalization import window_loc_scale
from cenas_jax.carbon.windows import calendar_features
from cenas_jax.errors import ConfigError

RESIDUAL_BASES = ("none", "naive24", "naive168", "profile7")
LINEAR_SKIP_INPUTS = ("window", "series")


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
    checks = (
        ("history_hours", self.history_hours < 168 or self.history_hours % 24,
         f"{self.history_hours} must be >= 168 and a multiple of 24"),
        ("patch_hours", self.patch_hours <= 0 or self.history_hours % self.patch_hours
         or self.horizon_hours % self.patch_hours,
         f"{self.patch_hours} must divide history_hours and horizon_hours"),
        ("horizon_hours", not 0 < self.horizon_hours <= 168, f"{self.horizon_hours} must be in 1..168"),
        ("num_heads", self.d_model % self.num_heads, f"{self.num_heads} must divide d_model={self.d_model}"),
        ("quantiles", 0.5 not in self.quantiles or list(self.quantiles) != sorted(set(self.quantiles))
         or not all(0 < q < 1 for q in self.quantiles),
         f"{self.quantiles} must be strictly increasing in (0, 1) and contain 0.5"),
        ("residual_base", self.residual_base not in RESIDUAL_BASES,
         f"{self.residual_base!r} must be one of {RESIDUAL_BASES}"),
        ("dropout_rate", not 0.0 <= self.dropout_rate < 1.0, f"{self.dropout_rate} must be in [0, 1)"),
        ("linear_skip_input", self.linear_skip_input not in LINEAR_SKIP_INPUTS,
         f"{self.linear_skip_input!r} must be 'window' or 'series'"),
        ("linear_skip_input", self.linear_skip_input == "series" and self.residual_base != "none",
         "linear_skip_input='series' needs residual_base='none'"),
        ("num_regions", self.num_regions < 1, f"{self.num_regions} must be >= 1"),
    )
    for field, bad, message in checks:
      if bad:
        raise ConfigError(field, message)

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
    cal_hist = calendar_features(origin_hour[:, None] + jnp.arange(-length, 0), xp=jnp)
    cal_fut = calendar_features(origin_hour[:, None] + jnp.arange(horizon), xp=jnp)
    if cfg.instance_norm:  # Per-window standardization, undone on the output.
      loc, scale = window_loc_scale(hist_z, xp=jnp)
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


@functools.partial(jax.jit, static_argnames=("config",))
def apply_quantiles(params: Any, hist_z: jax.Array, origin_hour: jax.Array, hist_extra: jax.Array | None,
                    config: ForecasterConfig, region: jax.Array | None = None) -> jax.Array:
  """Deterministic forward pass: normalized ``(B, H, Q)`` quantiles (``region``: multi-region models)."""
  return ForecastTransformer(config).apply({"params": params}, hist_z, origin_hour, hist_extra, region)


def count_params(params: Any) -> int:
  """Number of scalar parameters."""
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
