r"""Trains and evaluates the carbon-intensity forecaster on one region.

Trains the transformer on one trace period (default 2021-2022 of the CarbonX forecasting-data file of
``--region``), early-stopping on the last slice of it, then evaluates it with a rolling origin every
24 h over a test period (default 2023) next to three baselines (seasonal naive 24 h and 168 h, and a
linear autoregressive model on the same inputs).

  python -m experiments.train_forecaster --flagfile=experiments/flags/forecaster_US-CAL-CISO.flags \
      --workdir=/tmp/forecaster/US-CAL-CISO

Writes into ``--workdir``:
  metrics.json               MAPE (fractions) for days 1-4 ahead per model, P10-P90 coverage (with
                             and without the quantile calibration), APE P90, ratios to the best
                             seasonal naive, the forecaster's own linear path alone (``ablation``),
                             provenance.
  forecaster/                the trained forecaster (orbax params + forecaster.json).
  train_log.jsonl            one line per epoch.
  forecast_test_week.png     day-ahead P10/P50/P90 vs actual over one test week.
  forecast_test_week.csv     the numbers behind the plot.

``--train_regions=A,B`` trains one global model on the training period of ``--region`` and of these
regions together (their CarbonX forecasting-data files; each keeps its own normalization and linear
path, early stopping and quantile calibration look at ``--region`` only) and saves the model of
``--region``.

``--restore_from=DIR`` evaluates an already trained forecaster (a ``forecaster/`` folder) on any
trace without retraining; a workdir that already holds a finished ``forecaster/`` is evaluated again
the same way (rerunning a finished job never retrains).

``--refit_every_hours=N`` evaluates the forecaster as an operational one: at the first test origin and
then every N hours of test time, the closed-form parts of the model (its linear ridge path and, when
the model is calibrated, its P10/P90 calibration) are refitted on all hours strictly before that
time (training period + the test hours already past), with the network's weights frozen; the linear
AR baseline is refitted on the same schedule and data. ``models`` then holds the refitted forecasts
and ``models_without_refit`` the frozen ones; ``refit`` in metrics.json records the mode. The test
trace must continue the training trace (same series, no gap).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np
import pandas as pd

import cenas_jax
from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import forecaster as fc
from cenas_jax.data import carbon_traces
from cenas_jax.errors import DataError
from cenas_jax.fileio import atomic_write_json, atomic_write_text

_REGION = flags.DEFINE_string("region", "US-CAL-CISO", "Grid region; picks the default trace file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_COLUMN = flags.DEFINE_enum("column", "lifecycle", ["lifecycle", "direct"],
                            "Carbon-intensity column of Electricity Maps files.")
_TRAIN_TRACE = flags.DEFINE_string("train_trace", None, "Training trace file (default: the region's "
                                   "CarbonX forecasting-data file).")
_TEST_TRACE = flags.DEFINE_string("test_trace", None, "Test trace file (default: the region's file).")
_TRAIN_START = flags.DEFINE_string("train_start", "2021-01-01T00:00Z", "First training hour (UTC).")
_TRAIN_END = flags.DEFINE_string("train_end", "2023-01-01T00:00Z", "End of training (UTC, exclusive).")
_TEST_START = flags.DEFINE_string("test_start", "2023-01-01T00:00Z",
                                  "First forecast origin of the test (UTC); history before it is read.")
_TEST_END = flags.DEFINE_string("test_end", "2024-01-01T00:00Z", "End of the test (UTC, exclusive).")
_RESTORE_FROM = flags.DEFINE_string("restore_from", None, "Evaluate this saved forecaster folder "
                                    "instead of training.")
_USE_GENERATION = flags.DEFINE_bool("use_generation", False, "Feed the generation-by-source columns "
                                    "(CarbonX benchmark files only) to the model and to the linear "
                                    "baseline.")
_TRAIN_REGIONS = flags.DEFINE_list("train_regions", [], "Other regions whose forecasting-data files "
                                   "(same --train_start/--train_end) are added to the training windows "
                                   "of one global model (empty: train on --region only).")
_EVAL_STEP_HOURS = flags.DEFINE_integer("eval_step_hours", 24, "Hours between rolling test origins.")
_REFIT_EVERY_HOURS = flags.DEFINE_integer(
    "refit_every_hours", 0, "Refit the model's closed-form parts (linear path, P10/P90 calibration; the "
    "network frozen) and the linear AR baseline every this many hours of test time, on all data before "
    "the refit time (0: never refit, the models stay as trained).", lower_bound=0)
_REFIT_TARGET = flags.DEFINE_enum(
    "refit_target", "residual", ["residual", "target"], "What the refitted linear path fits: what the "
    "frozen network leaves unexplained (residual) or the targets on its own, as at training (target).")
_PLOT_WEEK_START = flags.DEFINE_string("plot_week_start", None, "Start (UTC) of the plotted test week "
                                       "(default: the first test origin).")
# Model.
_HISTORY_HOURS = flags.DEFINE_integer("history_hours", 168, "History window (h).")
_PATCH_HOURS = flags.DEFINE_integer("patch_hours", 24, "Hours per token.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Token width.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 2, "Transformer blocks.")
_NUM_HEADS = flags.DEFINE_integer("num_heads", 4, "Attention heads.")
_MLP_DIM = flags.DEFINE_integer("mlp_dim", 128, "MLP width.")
_DROPOUT = flags.DEFINE_float("dropout", 0.2, "Dropout rate.")
_RESIDUAL_BASE = flags.DEFINE_enum("residual_base", "none", ["none", "naive24", "naive168", "profile7"],
                                   "Seasonal reference the median forecast is a residual over.")
_LINEAR_SKIP_INPUT = flags.DEFINE_enum("linear_skip_input", "window", ["window", "series"],
                                       "History the model's linear path reads: after the per-window "
                                       "normalization (window) or as normalized for the whole series "
                                       "(series: the plain ridge; the network stays level-blind).")
_INSTANCE_NORM = flags.DEFINE_bool("instance_norm", True, "Standardize each history window by its own "
                                   "mean and standard deviation inside the model.")
# Training.
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Windows per step.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 1e-4, "AdamW weight decay.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 30, "Maximum epochs.")
_PATIENCE = flags.DEFINE_integer("patience", 4, "Early-stopping patience (epochs).")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "Fraction at the end of training for validation.")
_TRAIN_STRIDE_HOURS = flags.DEFINE_integer("train_stride_hours", 1, "Hours between training origins.")
_MAX_TRAIN_MINUTES = flags.DEFINE_float("max_train_minutes", 9.0, "Training wall-clock budget (min).")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 200, "Linear learning-rate warmup (steps).")
_CALIBRATE = flags.DEFINE_bool("calibrate_quantiles", True, "Recalibrate P10/P90 per horizon hour on "
                               "the validation slice (saved with the forecaster).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


_LINEAR_L2_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


# ----------------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------------
def _utc(value: str, flag: str) -> pd.Timestamp:
  try:
    ts = pd.Timestamp(value)
  except ValueError as e:
    raise app.UsageError(f"--{flag}={value!r} is not a time ({e}).") from e
  return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _load(path: str | None, start: pd.Timestamp, end: pd.Timestamp, flag: str) -> carbon_traces.CarbonTrace:
  """Loads ``[start, end)`` of a trace file, or of the region's default file when ``path`` is None."""
  column = _COLUMN.value
  if path is None:
    return carbon_traces.region_trace(_REGION.value, dataset="forecasting", column=column,
                                      start=start, end=end)
  fmt = carbon_traces.sniff_format(path)
  return carbon_traces.load_trace(path, column=column if fmt == "electricitymaps" else None,
                                  start=start, end=end)


def _extra(trace: carbon_traces.CarbonTrace, flag: str) -> pd.DataFrame | None:
  if not _USE_GENERATION.value:
    return None
  if trace.generation_mwh is None:
    raise app.UsageError(f"--use_generation needs generation-by-source columns, but {trace.path} "
                         f"(--{flag}) has none; use a CarbonX benchmark-data file.")
  return trace.generation_mwh


def _configs() -> tuple[fc.ForecasterConfig, fc.TrainConfig]:
  model = fc.ForecasterConfig(
      history_hours=_HISTORY_HOURS.value, horizon_hours=96, patch_hours=_PATCH_HOURS.value,
      d_model=_D_MODEL.value, num_layers=_NUM_LAYERS.value, num_heads=_NUM_HEADS.value,
      mlp_dim=_MLP_DIM.value, dropout_rate=_DROPOUT.value, residual_base=_RESIDUAL_BASE.value,
      instance_norm=_INSTANCE_NORM.value, linear_skip_input=_LINEAR_SKIP_INPUT.value,
      num_extra_features=0)  # Set from the data below when --use_generation.
  train = fc.TrainConfig(
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      weight_decay=_WEIGHT_DECAY.value, max_epochs=_MAX_EPOCHS.value, patience=_PATIENCE.value,
      val_fraction=_VAL_FRACTION.value, train_stride_hours=_TRAIN_STRIDE_HOURS.value,
      seed=_SEED.value, max_train_s=_MAX_TRAIN_MINUTES.value * 60.0, warmup_steps=_WARMUP_STEPS.value,
      calibrate_quantiles=_CALIBRATE.value)
  return model, train


def _train_regions(region: str) -> list[str]:
  """The other regions of a global model (``--train_regions`` without ``--region``), validated."""
  others = [r for r in dict.fromkeys(_TRAIN_REGIONS.value) if r != region]
  if not others:
    return []
  unknown = [r for r in others if r not in carbon_traces.KNOWN_REGIONS]
  if unknown:
    raise app.UsageError(f"--train_regions: unknown regions {unknown}; known: "
                         f"{', '.join(carbon_traces.KNOWN_REGIONS)}.")
  if _USE_GENERATION.value:
    raise app.UsageError("--train_regions reads the regions' forecasting-data files, which have no "
                         "generation columns: drop --train_regions or --use_generation.")
  return others


# ----------------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------------
def _train(trace: carbon_traces.CarbonTrace, workdir: Path) -> tuple[fc.TrainedForecaster, dict[str, Any]]:
  model_cfg, train_cfg = _configs()
  extra = _extra(trace, "train_trace")
  if extra is not None:
    model_cfg = dataclasses.replace(model_cfg, num_extra_features=extra.shape[1])
  region = trace.region or _REGION.value
  others = _train_regions(region)
  series: dict[str, Any] = {region: trace.ci_g_per_kwh}
  other_traces = []
  for r in others:
    t = carbon_traces.region_trace(r, dataset="forecasting", column=_COLUMN.value,
                                   start=_utc(_TRAIN_START.value, "train_start"),
                                   end=_utc(_TRAIN_END.value, "train_end"))
    series[r] = t.ci_g_per_kwh
    other_traces.append(t.to_dict())
  model_cfg = dataclasses.replace(model_cfg, num_regions=len(series))
  log_path = workdir / "train_log.jsonl"
  lines: list[str] = []
  t_start = time.perf_counter()

  def progress(row: dict[str, Any]) -> None:
    lines.append(json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                             for k, v in row.items()}))
    atomic_write_text(log_path, "\n".join(lines) + "\n")
    elapsed = time.perf_counter() - t_start
    eta = row["epoch_s"] * (train_cfg.max_epochs - row["epoch"])
    others_mape = "".join(f"  {k} {100 * v:.2f}%" for k, v in row.get("val_mape_by_region", {}).items()
                          if k != region)
    if row["epoch"] == 0:
      logging.info("epoch 0 (initial parameters%s): val %.4f  val MAPE %.2f%%%s",
                   f", ridge l2={row['ridge_l2']}" if row.get("ridge_l2") is not None else "",
                   row["val_loss"], 100 * row["val_mape"], others_mape)
      return
    logging.info("epoch %d/%d  train %.4f  val %.4f  val MAPE %.2f%% (residual weight %.2f)  best epoch %d  "
                 "%.1f s/epoch  elapsed %.0f s  ETA <= %.0f s%s", row["epoch"], train_cfg.max_epochs,
                 row["train_loss"], row["val_loss"], 100 * row["val_mape"], row["residual_weight"],
                 row["best_epoch"], row["epoch_s"], elapsed, eta, others_mape)

  logging.info("Training on %s [%s, %s): %d h%s.", trace.path, trace.start, trace.end, len(trace),
               f", plus {', '.join(others)} (one global model)" if others else "")
  result = fc.train_forecaster(series, config=model_cfg, train_config=train_cfg,
                               train_extra=None if extra is None else {region: extra}, progress=progress)
  train_s = time.perf_counter() - t_start
  epoch_s = [r["epoch_s"] for r in result.history]
  info = {
      "train_s": train_s, "epochs": len(result.history), "best_epoch": result.best_epoch,
      "stopped_because": result.stopped_because,
      "epoch_s_median": float(np.median(epoch_s[2:] if len(epoch_s) > 2 else epoch_s[-1:])),
      "num_train_windows": result.num_train_windows, "num_val_windows": result.num_val_windows,
      "val_start": result.val_start, "num_params": fc.count_params(result.params),
      "val_mape_epoch0": result.history[0]["val_mape"],
      "val_mape_best": result.history[result.best_epoch]["val_mape"],
      "residual_weight": result.residual_weight,
      "train_regions": list(series), "train_config": dataclasses.asdict(train_cfg),
  }
  meta = {"region": trace.region, "train_trace": trace.to_dict(), "other_train_traces": other_traces, **info}
  out = workdir / "forecaster"
  fc.remove_unfinished_save(out)
  params, saved_cfg = fc.specialize_params(result.params, model_cfg, 0)
  fc.save_forecaster(out, params, config=saved_cfg, normalization=result.normalization,
                     metadata=meta, calibration=result.calibration)
  logging.info("Trained in %.0f s (%d epochs, best %d, %s); saved to %s.", train_s, len(result.history),
               result.best_epoch, result.stopped_because, out)
  return fc.restore_forecaster(out), info


def _fit_linear(trace: carbon_traces.CarbonTrace, length: int, horizon: int,
                val_fraction: float) -> tuple[baselines.LinearAR, fm.Normalization]:
  """The linear AR baseline, fitted on the same training split as the transformer.

  With ``--use_generation`` it also reads the last hour of the generation columns.
  """
  ci = trace.ci_g_per_kwh
  total = len(ci)
  val_pos = int(round(total * (1.0 - val_fraction)))
  extra = _extra(trace, "train_trace")
  norm = fm.fit_normalization(ci.iloc[:val_pos], None if extra is None else extra.iloc[:val_pos],
                              log_target=True)
  z = norm.transform(ci.to_numpy())
  extra_z = None if extra is None else norm.transform_extra(extra.to_numpy())
  hours = fm.hours_since_epoch(ci.index)
  train_o = np.arange(length, val_pos - horizon + 1)
  val_o = np.arange(max(val_pos, length), total - horizon + 1, 6)

  def data(origins):
    hist, fut = fm.make_windows(z, origins, length, horizon)
    hist_extra = None if extra_z is None else fm.make_windows(extra_z, origins, length, horizon)[0]
    return baselines.linear_ar_features(hist, hours[origins], hist_extra), fut

  model = baselines.fit_linear_ar_with_validation(data(train_o), data(val_o), l2_grid=_LINEAR_L2_GRID)
  logging.info("Linear AR: ridge l2=%g chosen on the validation slice.", model.l2)
  return model, norm


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------
def _plot(path: Path, t: pd.DatetimeIndex, actual, p10, p50, p90, title: str) -> None:
  try:
    from cenas_jax import plots  # Written alongside; use it when present.
    if hasattr(plots, "plot_forecast"):
      plots.plot_forecast(path, t, actual, p10, p50, p90)
      return
  except ImportError:
    pass
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(10, 4))
  ax.fill_between(t, p10, p90, alpha=0.3, label="P10-P90")
  ax.plot(t, p50, label="P50 forecast")
  ax.plot(t, actual, color="k", lw=1, label="actual")
  ax.set_ylabel("carbon intensity (gCO2eq/kWh)")
  ax.set_title(title)
  ax.legend()
  fig.autofmt_xdate()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _refit_series(train: carbon_traces.CarbonTrace, test: carbon_traces.CarbonTrace) -> pd.Series:
  """The training trace continued by the test trace: what the refits may read (before each cutoff)."""
  a, b = train.ci_g_per_kwh, test.ci_g_per_kwh
  overlap = b.index[b.index <= a.index[-1]]
  if len(overlap) and not np.allclose(a.reindex(overlap).to_numpy(), b.loc[overlap].to_numpy(), rtol=1e-9):
    raise app.UsageError(f"--refit_every_hours: the test trace {test.path} disagrees with the training trace "
                         f"{train.path} on the hours they share; refitting needs one series. Use the same "
                         "file for --train_trace and --test_trace, or --refit_every_hours=0.")
  series = pd.concat([a, b[b.index > a.index[-1]]])
  try:
    fm.check_hourly(series, name="training + test trace")
  except ValueError as e:
    raise app.UsageError(f"--refit_every_hours needs a test trace that continues the training trace "
                         f"without a gap ({e}); set --train_end to --test_start or use "
                         "--refit_every_hours=0.") from e
  return series


def _refit_forecasts(model: fc.TrainedForecaster, linear_norm: fm.Normalization, series: pd.Series,
                     origin_times: pd.DatetimeIndex, val_hours: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """Forecasts of the transformer and of the linear AR with their closed-form parts refitted on a schedule.

  Returns:
    ``(q, linear_pred, info)``: ``(M, H, Q)`` and ``(M, H)`` forecasts (gCO2eq/kWh) at ``origin_times``
    and what the refits did.
  """
  cfg = model.config
  horizon = cfg.horizon_hours
  t0 = time.perf_counter()
  values = series.to_numpy()
  hours = fm.hours_since_epoch(series.index)
  windows = fc.frozen_network_windows(model.params, values, hours, config=cfg, normalization=model.normalization)
  positions = series.index.get_indexer(origin_times)
  eval_rows = positions - windows.origins[0]
  cutoffs = fm.refit_cutoffs(positions, _REFIT_EVERY_HOURS.value)
  calibrate = model.calibration is not None
  q_z, parts = fc.rolling_refit_quantiles(windows, eval_rows, cutoffs, config=cfg, val_hours=val_hours,
                                          fit_target=_REFIT_TARGET.value,
                                          calibration_hours=val_hours if calibrate else None)
  # The linear AR baseline: same windows, same cutoffs, same penalty rule as its first fit.
  lin_z = linear_norm.transform(values)
  hist, fut = fm.make_windows(lin_z, windows.origins, cfg.history_hours, horizon)
  features = baselines.linear_ar_features(hist, hours[windows.origins])
  lin_pred, lin_refits = baselines.rolling_refit_linear_ar(
      features, fut, windows.origins, eval_rows, cutoffs, horizon_hours=horizon, val_hours=val_hours,
      l2_grid=_LINEAR_L2_GRID)
  refit_s = time.perf_counter() - t0
  info = {
      "mode": "rolling", "every_hours": _REFIT_EVERY_HOURS.value, "fit_target": _REFIT_TARGET.value,
      "parts": ["linear_skip"] + (["quantile_calibration"] if calibrate else []),
      "network": "frozen", "val_hours": val_hours, "num_refits": len(parts), "refit_s": refit_s,
      "data": "all hours strictly before each refit time (training period + test hours already past)",
      "refits": [{"cutoff": series.index[p.cutoff].isoformat(), "transformer_l2": p.l2,
                  "linear_ar_l2": r["l2"], "num_windows": p.num_windows}
                 for p, r in zip(parts, lin_refits)],
  }
  logging.info("Refitted %d times (every %d h) in %.1f s.", len(parts), _REFIT_EVERY_HOURS.value, refit_s)
  return model.normalization.inverse(q_z), linear_norm.inverse(lin_pred), info


def _targets(tr: list[float], lin: list[float], best_naive: np.ndarray) -> dict[str, Any]:
  day1 = tr[0] / best_naive[0]
  days2to4 = float(np.mean(tr[1:]) / np.mean(best_naive[1:]))
  return {"day1_ratio_to_best_naive": float(day1), "days2to4_ratio_to_best_naive": days2to4,
          "day1_target_met": bool(day1 <= 0.8), "days2to4_target_met": bool(days2to4 <= 0.9),
          "beats_linear_every_day": bool(all(a < b for a, b in zip(tr, lin)))}


def _quantile_metrics(actual: np.ndarray, q: np.ndarray, model: fc.TrainedForecaster) -> dict[str, Any]:
  """Point metrics of the median plus interval coverage, ordering and pinball loss of ``(N, H, Q)``
  quantile forecasts (gCO2eq/kWh) against ``(N, H)`` actual values."""
  tau = np.asarray(model.config.quantiles)
  diff = actual[..., None] - q
  return {**fm.point_metrics(actual, q[..., model.config.median_index]),
          "coverage_p10_p90": fm.interval_coverage(actual, q[..., 0], q[..., -1]),
          "quantiles_calibrated": model.calibration is not None,
          "p10_le_p50_le_p90": bool(np.all(np.diff(q, axis=-1) >= 0)),
          "pinball_loss_g_per_kwh": float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))}


def evaluate(model: fc.TrainedForecaster, linear: baselines.LinearAR, linear_norm: fm.Normalization,
             trace: carbon_traces.CarbonTrace, test_start: pd.Timestamp, workdir: Path,
             refit_series: pd.Series | None = None, refit_val_hours: int = 0) -> dict[str, Any]:
  """Rolling-origin metrics of the transformer and the baselines on ``trace`` from ``test_start``.

  With ``refit_series`` (the training trace continued by ``trace``), the transformer's closed-form
  parts and the linear AR are refitted every ``--refit_every_hours`` on the hours of ``refit_series``
  before each refit time; the frozen models' metrics go to ``models_without_refit``.
  """
  cfg = model.config
  length, horizon = cfg.history_hours, cfg.horizon_hours
  ci = trace.ci_g_per_kwh
  fm.check_hourly(ci, name=trace.path)
  origins = fm.rolling_origins(ci.index, start=test_start, end=ci.index[-1], history_hours=length,
                               horizon_hours=horizon, step_hours=_EVAL_STEP_HOURS.value)
  if len(origins) == 0:
    raise app.UsageError(f"{trace.path}: no test origin with {length} h of history and {horizon} h "
                         f"ahead in [{test_start}, {trace.end}). Widen --test_start/--test_end.")
  values = ci.to_numpy()
  hist, actual = fm.make_windows(values, origins, length, horizon)
  origin_hours = fm.hours_since_epoch(ci.index)[origins]
  extra = _extra(trace, "test_trace")
  hist_extra = None if extra is None else fm.make_windows(extra.to_numpy(), origins, length, horizon)[0]
  q = model.predict_quantiles(hist, origin_hours, hist_extra)
  q_raw = fc.predict_quantiles(model.params, hist, origin_hours, config=cfg,
                               normalization=model.normalization, hist_extra=hist_extra)
  mid = cfg.median_index
  lin_extra = None if hist_extra is None else linear_norm.transform_extra(hist_extra)
  preds = {
      "seasonal_naive_24h": baselines.seasonal_naive(hist, horizon, 24),
      "seasonal_naive_168h": baselines.seasonal_naive(hist, horizon, 168),
      "linear_ar": linear_norm.inverse(linear.predict(
          baselines.linear_ar_features(linear_norm.transform(hist), origin_hours, lin_extra))),
  }
  models: dict[str, Any] = {"transformer": _quantile_metrics(actual, q, model)}
  models["transformer"]["coverage_p10_p90_uncalibrated"] = fm.interval_coverage(actual, q_raw[..., 0],
                                                                                q_raw[..., -1])
  # Ablation: the forecaster as trained with the network's median residual removed (its ridge path
  # alone; never refitted).
  linear_path = fc.predict_quantiles(fc.scale_median_residual(model.params, cfg, 0.0), hist, origin_hours,
                                     config=cfg, normalization=model.normalization, hist_extra=hist_extra)
  ablation = {"transformer_linear_path_only": fm.point_metrics(actual, linear_path[..., mid])}
  ablation["beats_linear_path_every_day"] = bool(all(
      a < b for a, b in zip(models["transformer"]["mape_by_day"],
                            ablation["transformer_linear_path_only"]["mape_by_day"])))
  for name, p in preds.items():
    models[name] = fm.point_metrics(actual, p)
  best_naive = np.minimum(models["seasonal_naive_24h"]["mape_by_day"],
                          models["seasonal_naive_168h"]["mape_by_day"])
  refit_out: dict[str, Any] = {"refit": {"mode": "off", "every_hours": 0}}
  if refit_series is not None:
    frozen = {name: models[name] for name in ("transformer", "linear_ar")}
    refit_out["models_without_refit"] = frozen
    refit_out["targets_without_refit"] = _targets(frozen["transformer"]["mape_by_day"],
                                              frozen["linear_ar"]["mape_by_day"], best_naive)
    q, lin_pred, refit_out["refit"] = _refit_forecasts(model, linear_norm, refit_series, ci.index[origins],
                                                   refit_val_hours)
    models["transformer"] = _quantile_metrics(actual, q, model)
    models["linear_ar"] = fm.point_metrics(actual, lin_pred)
  ratios = {name: [float(a / b) for a, b in zip(models[name]["mape_by_day"], best_naive)]
            for name in ("transformer", "linear_ar")}
  targets = _targets(models["transformer"]["mape_by_day"], models["linear_ar"]["mape_by_day"], best_naive)

  # A test week: day-ahead forecasts (hours 1-24 of seven consecutive daily origins).
  week0 = _utc(_PLOT_WEEK_START.value, "plot_week_start") if _PLOT_WEEK_START.value else ci.index[origins[0]]
  pos = int(np.searchsorted(origins, ci.index.get_loc(week0)))
  sel = slice(pos, pos + max(1, 168 // _EVAL_STEP_HOURS.value))
  day = min(24, _EVAL_STEP_HOURS.value)
  t = pd.DatetimeIndex(np.concatenate([ci.index[o:o + day] for o in origins[sel]]))
  cols = {name: q[sel, :day, i].reshape(-1) for i, name in enumerate(fm.quantile_names(cfg.quantiles))}
  week = pd.DataFrame({"actual_g_per_kwh": actual[sel, :day].reshape(-1), **cols}, index=t)
  week.index.name = "time_utc"
  atomic_write_text(workdir / "forecast_test_week.csv", week.to_csv())
  names = fm.quantile_names(cfg.quantiles)
  _plot(workdir / "forecast_test_week.png", t, week["actual_g_per_kwh"].to_numpy(), week[names[0]].to_numpy(),
        week[names[mid]].to_numpy(), week[names[-1]].to_numpy(),
        f"{trace.region or trace.path}: day-ahead forecast vs actual, week of {t[0]:%Y-%m-%d}")
  return {"models": models, "ratio_to_best_seasonal_naive": ratios, "targets": targets, "ablation": ablation,
          **refit_out, "num_test_origins": int(len(origins)),
          "first_origin": ci.index[origins[0]].isoformat(), "last_origin": ci.index[origins[-1]].isoformat()}


def _period(start: pd.Timestamp, end: pd.Timestamp) -> str:
  return f"{start:%Y-%m-%dT%H:%MZ}/{end:%Y-%m-%dT%H:%MZ}"


def run(workdir: Path) -> dict[str, Any]:
  """Trains (or restores) the forecaster, evaluates it and the baselines, writes metrics.json."""
  workdir.mkdir(parents=True, exist_ok=True)
  train_start, train_end = _utc(_TRAIN_START.value, "train_start"), _utc(_TRAIN_END.value, "train_end")
  test_start, test_end = _utc(_TEST_START.value, "test_start"), _utc(_TEST_END.value, "test_end")
  train_trace = _load(_TRAIN_TRACE.value, train_start, train_end, "train_trace")

  # Forecaster: restore (explicitly, or a finished one in the workdir) or train.
  restore = _RESTORE_FROM.value
  if restore is None and (workdir / "forecaster" / "forecaster.json").exists():
    restore = str(workdir / "forecaster")
    logging.warning("%s already holds a trained forecaster; evaluating it without retraining.", workdir)
  if restore is not None:
    model = fc.restore_forecaster(restore)
    train_info = {"restored_from": str(Path(restore).resolve()), **{
        k: model.metadata.get(k) for k in ("train_s", "epochs", "best_epoch", "epoch_s_median",
                                           "train_regions", "residual_weight")}}
    logging.info("Restored forecaster from %s (trained on %s).", restore,
                 model.metadata.get("train_trace", {}).get("path"))
  else:
    model, train_info = _train(train_trace, workdir)
  cfg = model.config
  linear, linear_norm = _fit_linear(train_trace, cfg.history_hours, cfg.horizon_hours, _VAL_FRACTION.value)

  # Test: read the history before the first origin too, as far as the file allows.
  want_start = test_start - pd.Timedelta(hours=cfg.history_hours)
  try:
    test_trace = _load(_TEST_TRACE.value, want_start, test_end, "test_trace")
  except DataError:
    logging.warning("The test trace has no %d h of history before --test_start; the first origins "
                    "move later.", cfg.history_hours)
    test_trace = _load(_TEST_TRACE.value, test_start, test_end, "test_trace")
  refit_series = None
  refit_val_hours = 0
  if _REFIT_EVERY_HOURS.value:
    if _USE_GENERATION.value:
      raise app.UsageError("--refit_every_hours refits models without extra columns; drop --use_generation.")
    refit_series = _refit_series(train_trace, test_trace)
    # The refits pick their ridge penalty (and fit the calibration) on as many hours as the
    # training's validation slice.
    refit_val_hours = len(train_trace) - int(round(len(train_trace) * (1.0 - _VAL_FRACTION.value)))
  results = evaluate(model, linear, linear_norm, test_trace, test_start, workdir, refit_series, refit_val_hours)

  metrics = {
      "region": _REGION.value if _TEST_TRACE.value is None else (test_trace.region or _REGION.value),
      "target": f"{_COLUMN.value} carbon intensity (gCO2eq/kWh)" if test_trace.source.startswith(
          "electricitymaps") else f"{test_trace.column} (gCO2eq/kWh)",
      "train_period": _period(train_start, train_end),
      "test_period": _period(test_start, test_end),
      **results,
      "metric_notes": ("Fractions, not percent. mape_by_day: hours 1-24, 25-48, 49-72, 73-96 after "
                       "each origin; origins every eval_step_hours over the test period. ape_p90: 90th "
                       "percentile of the absolute percentage error over all origins and hours. With "
                       "refit.mode 'rolling', models.transformer and models.linear_ar are refitted on the "
                       "past every refit.every_hours (models_without_refit: as trained)."),
      "eval_step_hours": _EVAL_STEP_HOURS.value,
      "forecaster": {"config": cfg.to_dict(), "normalization": model.normalization.to_dict(), **train_info},
      "linear_ar_l2": linear.l2,
      "provenance": {
          "train_trace": train_trace.to_dict(), "test_trace": test_trace.to_dict(),
          "ci_source": test_trace.source, "seed": _SEED.value, "package_version": cenas_jax.__version__,
          "python": platform.python_version(),
      },
  }
  atomic_write_json(workdir / "metrics.json", metrics)
  for name, m in {**results["models"], "transformer_linear_path_only":
                  results["ablation"]["transformer_linear_path_only"]}.items():
    logging.info("%-20s MAPE days 1-4: %s", name, " ".join(f"{100 * v:5.2f}%" for v in m["mape_by_day"]))
  for name, m in results.get("models_without_refit", {}).items():
    logging.info("%-20s MAPE days 1-4: %s (without refit)", name,
                 " ".join(f"{100 * v:5.2f}%" for v in m["mape_by_day"]))
  logging.info("Targets: %s", json.dumps(results["targets"]))
  return metrics


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax
  logging.info("JAX devices: %s", jax.devices())
  run(Path(_WORKDIR.value).expanduser())


if __name__ == "__main__":
  app.run(main)
