"""Training of the carbon-intensity forecaster (``model.ForecastTransformer``).

- Values are normalized with a ``Normalization`` fitted on training data only (log + standardize by
  default, so the loss is close to a relative error).
- Training minimizes the pinball (quantile) loss with AdamW and early stopping on a validation slice
  at the end of the training period; epoch 0 scores the initial parameters.
- With a linear path (``ForecasterConfig.linear_skip``) the path starts from the closed-form ridge
  regression on the training windows (``TrainConfig.ridge_init``) and stays frozen by default.
- A global model can be trained on several series at once: each series keeps its own normalization
  and its own ridge-initialized linear path, and the transformer is shared.
- Early stopping also picks a weight ``w`` of the network's median residual on the validation slice
  (median = linear path + ``w`` x residual, ``TrainConfig.residual_weight_grid``), a combination of
  the ridge forecast and the network that damps the network's variance.
- The non-median quantiles can be recalibrated per horizon hour on the validation windows
  (``calibration.QuantileCalibration``); the calibration is returned with the parameters.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import windows
from cenas_jax.carbon.calibration import QuantileCalibration, fit_quantile_calibration
from cenas_jax.carbon.model import ForecasterConfig, ForecastTransformer, init_params, scale_median_residual
from cenas_jax.carbon.normalization import Normalization, fit_normalization, window_loc_scale


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
    calibrate_quantiles: after training, fit a ``calibration.QuantileCalibration`` of the
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
  normalization: Normalization
  history: tuple[dict[str, float], ...]
  best_epoch: int
  num_train_windows: int
  num_val_windows: int
  val_start: str
  stopped_because: str
  normalizations: tuple[Normalization, ...] = ()
  region_names: tuple[str, ...] = ()
  calibration: QuantileCalibration | None = None
  residual_weight: float = 1.0
  config: ForecasterConfig | None = None

  def forecaster(self, metadata: dict[str, Any] | None = None):
    """This result as one ``TrainedForecaster`` (params, config, normalization and calibration
    together), e.g. to call ``.forecast(history)`` or to save it. A multi-region result is
    returned as it is (``specialize_params`` it to one region first)."""
    from cenas_jax.carbon.forecaster_io import TrainedForecaster  # pylint: disable=g-import-not-at-top

    return TrainedForecaster(params=self.params, config=self.config, normalization=self.normalization,
                             metadata=dict(metadata or {}), calibration=self.calibration)

  def forecast(self, history: Any, history_extra: Any = None, *, last_hour: Any = None):
    """``self.forecaster().forecast(history, ...)``: the next ``horizon_hours`` in gCO2eq/kWh."""
    return self.forecaster().forecast(history, history_extra, last_hour=last_hour)


def _gather(series: jax.Array, origins: jax.Array, start: int, stop: int) -> jax.Array:
  """``series[origins + k]`` for ``k`` in ``[start, stop)``: ``(B, stop - start, ...)``."""
  return series[origins[:, None] + jnp.arange(start, stop)[None, :]]


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
  length, horizon = config.history_hours, config.horizon_hours
  if config.residual_base != "none":
    raise ValueError("ridge_init needs residual_base='none' (the ridge is the base).")

  def data(origins):
    hist, fut = windows.make_windows(z, origins, length, horizon)
    hist = hist.astype(np.float64)
    fut = fut.astype(np.float64)
    if config.instance_norm and config.linear_skip_input == "window":
      loc, scale = window_loc_scale(hist)
      hist, fut = (hist - loc) / scale, (fut - loc) / scale
    return baselines.linear_ar_features(hist, hours[origins]), fut

  model = baselines.fit_linear_ar_with_validation(
      data(train_origins), data(val_origins), l2_grid=l2_grid, score=fm.mean_absolute_error)
  kernel, bias = model.raw_kernel_bias()
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
    return fm.pinball_loss(pred, target, config.quantiles, xp=jnp)

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
    return fm.pinball_loss(pred, target, config.quantiles, xp=jnp), pred, target, hist

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
    windows.check_hourly(ci, name=label)
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
    norm = fit_normalization(ci.iloc[:val_pos], None if extra_df is None else extra_df.iloc[:val_pos],
                                log_target=log_target)
    z = norm.transform(ci.to_numpy())
    hours = windows.hours_since_epoch(ci.index)
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
    val_actual.append(windows.make_windows(ci.to_numpy(), v_o, length, horizon)[1])
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
      region_mape[w] = [fm.mape(a, n.inverse(p)) for a, n, p in zip(val_actual, norms, blend)]
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
    calibration = fit_quantile_calibration(
        np.asarray(cal_q), np.asarray(cal_target), np.asarray(cal_hist), config.quantiles,
        fitted_start=cal_index[cal_o[0]].isoformat(),
        fitted_end=cal_index[cal_o[-1] + horizon - 1].isoformat())
  return TrainResult(params=best_params, normalization=norms[0], history=tuple(history), best_epoch=best[2],
                     num_train_windows=len(train_origins), num_val_windows=int(sum(val_counts)),
                     val_start=val_start, stopped_because=stopped, normalizations=tuple(norms),
                     region_names=tuple(names), calibration=calibration, residual_weight=best[3],
                     config=config)
