"""Trains (or restores) the forecaster on one region and evaluates it with a rolling origin.

``run(config, workdir)`` is the library side of ``experiments.train_forecaster``: it trains the
transformer on one trace period (default 2021-2022 of the CarbonX forecasting-data file of
``config.region``), early-stopping on the last slice of it, then evaluates it with a rolling origin
every ``eval_step_hours`` over a test period (default 2023) next to three baselines (seasonal naive
24 h and 168 h, and a linear autoregressive model on the same inputs).

Writes into ``workdir``:
  metrics.json               MAPE (fractions) for days 1-4 ahead per model, P10-P90 coverage (with
                             and without the quantile calibration), APE P90, ratios to the best
                             seasonal naive, the forecaster's own linear path alone (``ablation``),
                             provenance.
  forecaster/                the trained forecaster (``forecaster_io``).
  train_log.jsonl            one line per epoch.
  forecast_test_week.png     day-ahead P10/P50/P90 vs actual over one test week.
  forecast_test_week.csv     the numbers behind the plot.

``train_regions`` trains one global model on the training period of ``region`` and of these regions
together (each keeps its own normalization and linear path; early stopping and quantile calibration
look at ``region`` only) and saves the model of ``region``. ``restore_from`` evaluates an already
trained forecaster without retraining; a workdir that already holds a finished ``forecaster/`` is
evaluated again the same way (rerunning a finished job never retrains).

``refit_every_hours = N`` evaluates the forecaster as an operational one (``refit``): at the first
test origin and then every N hours of test time, its closed-form parts (the linear ridge path and,
when calibrated, the P10/P90 calibration) are refitted on all hours strictly before that time, the
network frozen; the linear AR baseline is refitted on the same schedule and data. ``models`` then
holds the refitted forecasts and ``models_without_refit`` the frozen ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

import cenas_jax
from cenas_jax import plots, results
from cenas_jax.carbon import baselines
from cenas_jax.carbon import forecast_metrics as fm
from cenas_jax.carbon import forecaster_io, refit, windows
from cenas_jax.carbon.model import ForecasterConfig, count_params, scale_median_residual, specialize_params
from cenas_jax.carbon.normalization import Normalization, fit_normalization
from cenas_jax.carbon.predict import predict_quantiles
from cenas_jax.carbon.training import TrainConfig, train_forecaster
from cenas_jax.data import carbon_traces
from cenas_jax.errors import CenasError, ConfigError, DataError
from cenas_jax.fileio import atomic_write_json

HORIZON_HOURS = 96
LINEAR_L2_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
_LINEAR_VAL_STRIDE_HOURS = 6


# ----------------------------------------------------------------------------------------------
# Configuration (field names are the binary's flag names).
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """The architecture settings a run exposes; ``forecaster_config`` adds what the data decides."""

  history_hours: int = 168
  patch_hours: int = 24
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.2
  residual_base: Literal["none", "naive24", "naive168", "profile7"] = "none"
  linear_skip_input: Literal["window", "series"] = "window"
  instance_norm: bool = True

  def __post_init__(self):
    self.forecaster_config()  # Validates, naming the setting.

  def forecaster_config(self, num_extra_features: int = 0, num_regions: int = 1) -> ForecasterConfig:
    try:
      return ForecasterConfig(
          history_hours=self.history_hours, horizon_hours=HORIZON_HOURS, patch_hours=self.patch_hours,
          d_model=self.d_model, num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
          dropout_rate=self.dropout, residual_base=self.residual_base, instance_norm=self.instance_norm,
          linear_skip_input=self.linear_skip_input, num_extra_features=num_extra_features,
          num_regions=num_regions)
    except ConfigError as e:
      raise ConfigError({"dropout_rate": "dropout"}.get(e.field, e.field), e.message) from None


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The optimization settings a run exposes; ``train_config`` fills in the rest of ``TrainConfig``."""

  batch_size: int = 256
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  max_epochs: int = 30
  patience: int = 4
  val_fraction: float = 0.1
  train_stride_hours: int = 1
  max_train_minutes: float = 9.0
  warmup_steps: int = 200
  calibrate_quantiles: bool = True
  seed: int = 0

  def __post_init__(self):
    for field, bad, message in (
        ("batch_size", self.batch_size < 1, "must be >= 1"),
        ("max_epochs", self.max_epochs < 0, "must be >= 0"),
        ("patience", self.patience < 1, "must be >= 1"),
        ("val_fraction", not 0.0 < self.val_fraction < 1.0, "must be in (0, 1)"),
        ("train_stride_hours", self.train_stride_hours < 1, "must be >= 1"),
        ("max_train_minutes", not self.max_train_minutes > 0, "must be > 0"),
        ("warmup_steps", self.warmup_steps < 0, "must be >= 0")):
      if bad:
        raise ConfigError(field, f"{getattr(self, field)} {message}")

  def train_config(self) -> TrainConfig:
    return TrainConfig(
        batch_size=self.batch_size, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
        max_epochs=self.max_epochs, patience=self.patience, val_fraction=self.val_fraction,
        train_stride_hours=self.train_stride_hours, seed=self.seed, max_train_s=self.max_train_minutes * 60.0,
        warmup_steps=self.warmup_steps, calibrate_quantiles=self.calibrate_quantiles)


@dataclasses.dataclass(frozen=True)
class ForecastRunConfig:
  """One training + rolling-origin evaluation run. Empty strings mean "not given".

  Attributes:
    region: grid region; picks the default trace files.
    column: carbon-intensity column of Electricity Maps files.
    train_trace: training trace file ("": the region's CarbonX forecasting-data file).
    test_trace: test trace file ("": the region's file).
    train_start, train_end: training period (UTC; end exclusive).
    test_start, test_end: first forecast origin and end of the test (UTC; end exclusive); history
      before ``test_start`` is read.
    restore_from: evaluate this saved forecaster folder instead of training.
    use_generation: feed the generation-by-source columns (CarbonX benchmark files) to the model and
      to the linear baseline.
    train_regions: other regions whose forecasting-data files join the training windows of one
      global model (empty: ``region`` only).
    eval_step_hours: hours between rolling test origins.
    refit_every_hours: refit the closed-form parts and the linear AR every this many hours of test
      time on all data before the refit time (0: never).
    refit_target: what the refitted linear path fits ("residual" of the frozen network, or the
      "target" on its own, as at training).
    plot_week_start: start (UTC) of the plotted test week ("": the first test origin).
    model: architecture settings.
    train: optimization settings.
  """

  region: str = "US-CAL-CISO"
  column: Literal["lifecycle", "direct"] = "lifecycle"
  train_trace: str = ""
  test_trace: str = ""
  train_start: str = "2021-01-01T00:00Z"
  train_end: str = "2023-01-01T00:00Z"
  test_start: str = "2023-01-01T00:00Z"
  test_end: str = "2024-01-01T00:00Z"
  restore_from: str = ""
  use_generation: bool = False
  train_regions: tuple[str, ...] = ()
  eval_step_hours: int = 24
  refit_every_hours: int = 0
  refit_target: Literal["residual", "target"] = "residual"
  plot_week_start: str = ""
  model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
  train: TrainSettings = dataclasses.field(default_factory=TrainSettings)

  def __post_init__(self):
    object.__setattr__(self, "train_regions", tuple(self.train_regions))
    for field in ("train_start", "train_end", "test_start", "test_end", "plot_week_start"):
      if getattr(self, field) or field != "plot_week_start":
        self.utc(field)
    for start, end in (("train_start", "train_end"), ("test_start", "test_end")):
      if self.utc(start) >= self.utc(end):
        raise ConfigError(start, f"{getattr(self, start)} is not before --{end}={getattr(self, end)}.")
    if self.region not in carbon_traces.KNOWN_REGIONS and not (self.train_trace and self.test_trace):
      raise ConfigError("region", f"{self.region!r} has no default trace; known regions: "
                        f"{', '.join(carbon_traces.KNOWN_REGIONS)} (or pass --train_trace and --test_trace).")
    if self.eval_step_hours < 1:
      raise ConfigError("eval_step_hours", f"{self.eval_step_hours} must be >= 1")
    if self.refit_every_hours < 0:
      raise ConfigError("refit_every_hours", f"{self.refit_every_hours} must be >= 0 (0: never refit)")
    others = self.other_regions(self.region)
    unknown = [r for r in others if r not in carbon_traces.KNOWN_REGIONS]
    if unknown:
      raise ConfigError("train_regions", f"unknown regions {unknown}; known: "
                        f"{', '.join(carbon_traces.KNOWN_REGIONS)}.")
    if others and self.use_generation:
      raise ConfigError("train_regions", "reads the regions' forecasting-data files, which have no "
                        "generation columns: drop --train_regions or --use_generation.")
    if self.refit_every_hours and self.use_generation:
      raise ConfigError("refit_every_hours", "refits models without extra columns; drop --use_generation.")

  def utc(self, field: str) -> pd.Timestamp:
    """The time setting ``field`` as a UTC timestamp."""
    value = getattr(self, field)
    try:
      ts = pd.Timestamp(value)
    except ValueError as e:
      raise ConfigError(field, f"{value!r} is not a time ({e}).") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

  def other_regions(self, region: str) -> list[str]:
    """The other regions of a global model trained for ``region``, in order, without repeats."""
    return [r for r in dict.fromkeys(self.train_regions) if r != region]


# ----------------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------------
def _load(config: ForecastRunConfig, path: str, start: pd.Timestamp, end: pd.Timestamp) -> carbon_traces.CarbonTrace:
  """Loads ``[start, end)`` of a trace file, or of the region's default file when ``path`` is empty."""
  if not path:
    return carbon_traces.region_trace(config.region, dataset="forecasting", column=config.column,
                                      start=start, end=end)
  fmt = carbon_traces.sniff_format(path)
  return carbon_traces.load_trace(path, column=config.column if fmt == "electricitymaps" else None,
                                  start=start, end=end)


def _extra(config: ForecastRunConfig, trace: carbon_traces.CarbonTrace, field: str) -> pd.DataFrame | None:
  if not config.use_generation:
    return None
  if trace.generation_mwh is None:
    raise ConfigError("use_generation", f"needs generation-by-source columns, but {trace.path} "
                      f"(--{field}) has none; use a CarbonX benchmark-data file.")
  return trace.generation_mwh


# ----------------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------------
def _train(config: ForecastRunConfig, trace: carbon_traces.CarbonTrace,
           workdir: Path) -> tuple[forecaster_io.TrainedForecaster, dict[str, Any]]:
  train_cfg = config.train.train_config()
  extra = _extra(config, trace, "train_trace")
  region = trace.region or config.region
  others = config.other_regions(region)
  series: dict[str, Any] = {region: trace.ci_g_per_kwh}
  other_traces = []
  for r in others:
    t = carbon_traces.region_trace(r, dataset="forecasting", column=config.column,
                                   start=config.utc("train_start"), end=config.utc("train_end"))
    series[r] = t.ci_g_per_kwh
    other_traces.append(t.to_dict())
  model_cfg = config.model.forecaster_config(0 if extra is None else extra.shape[1], len(series))
  log_rows: list[dict[str, Any]] = []
  t_start = time.perf_counter()

  def progress(row: dict[str, Any]) -> None:
    log_rows.append(row)
    results.rewrite_results(workdir / "train_log.jsonl", log_rows)
    elapsed = time.perf_counter() - t_start
    eta = row["epoch_s"] * (train_cfg.max_epochs - row["epoch"])
    others_mape = "".join(f"  {k} {100 * v:.2f}%" for k, v in row.get("val_mape_by_region", {}).items()
                          if k != region)
    if row["epoch"] == 0:
      l2 = f", ridge l2={row['ridge_l2']}" if row.get("ridge_l2") is not None else ""
      print(f"epoch 0 (initial parameters{l2}): val {row['val_loss']:.4f}  val MAPE "
            f"{100 * row['val_mape']:.2f}%{others_mape}", flush=True)
      return
    print(f"epoch {row['epoch']}/{train_cfg.max_epochs}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  "
          f"val MAPE {100 * row['val_mape']:.2f}% (residual weight {row['residual_weight']:.2f})  best epoch "
          f"{row['best_epoch']}  {row['epoch_s']:.1f} s/epoch  elapsed {elapsed:.0f} s  ETA <= {eta:.0f} s"
          f"{others_mape}", flush=True)

  print(f"Training on {trace.path} [{trace.start}, {trace.end}): {len(trace)} h"
        f"{', plus ' + ', '.join(others) + ' (one global model)' if others else ''}.", flush=True)
  result = train_forecaster(series, config=model_cfg, train_config=train_cfg,
                            train_extra=None if extra is None else {region: extra}, progress=progress)
  train_s = time.perf_counter() - t_start
  epoch_s = [r["epoch_s"] for r in result.history]
  info = {
      "train_s": train_s, "epochs": len(result.history), "best_epoch": result.best_epoch,
      "stopped_because": result.stopped_because,
      "epoch_s_median": float(np.median(epoch_s[2:] if len(epoch_s) > 2 else epoch_s[-1:])),
      "num_train_windows": result.num_train_windows, "num_val_windows": result.num_val_windows,
      "val_start": result.val_start, "num_params": count_params(result.params),
      "val_mape_epoch0": result.history[0]["val_mape"],
      "val_mape_best": result.history[result.best_epoch]["val_mape"],
      "residual_weight": result.residual_weight,
      "train_regions": list(series), "train_config": dataclasses.asdict(train_cfg),
  }
  meta = {"region": trace.region, "train_trace": trace.to_dict(), "other_train_traces": other_traces, **info}
  out = workdir / "forecaster"
  forecaster_io.remove_unfinished_save(out)
  params, saved_cfg = specialize_params(result.params, model_cfg, 0)
  forecaster_io.save_forecaster(out, params, config=saved_cfg, normalization=result.normalization,
                                metadata=meta, calibration=result.calibration)
  print(f"Trained in {train_s:.0f} s ({len(result.history)} epochs, best {result.best_epoch}, "
        f"{result.stopped_because}); saved to {out}.", flush=True)
  return forecaster_io.restore_forecaster(out), info


def _fit_linear(config: ForecastRunConfig, trace: carbon_traces.CarbonTrace, length: int,
                horizon: int) -> tuple[baselines.LinearAR, Normalization]:
  """The linear AR baseline, fitted on the same training split as the transformer.

  With ``use_generation`` it also reads the last hour of the generation columns.
  """
  ci = trace.ci_g_per_kwh
  total = len(ci)
  val_pos = int(round(total * (1.0 - config.train.val_fraction)))
  extra = _extra(config, trace, "train_trace")
  norm = fit_normalization(ci.iloc[:val_pos], None if extra is None else extra.iloc[:val_pos], log_target=True)
  z = norm.transform(ci.to_numpy())
  extra_z = None if extra is None else norm.transform_extra(extra.to_numpy())
  hours = windows.hours_since_epoch(ci.index)
  train_o = np.arange(length, val_pos - horizon + 1)
  val_o = np.arange(max(val_pos, length), total - horizon + 1, _LINEAR_VAL_STRIDE_HOURS)

  def data(origins):
    hist, fut = windows.make_windows(z, origins, length, horizon)
    hist_extra = None if extra_z is None else windows.make_windows(extra_z, origins, length, horizon)[0]
    return baselines.linear_ar_features(hist, hours[origins], hist_extra), fut

  model = baselines.fit_linear_ar_with_validation(data(train_o), data(val_o), l2_grid=LINEAR_L2_GRID)
  print(f"Linear AR: ridge l2={model.l2:g} chosen on the validation slice.", flush=True)
  return model, norm


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------
def _refit_series(train: carbon_traces.CarbonTrace, test: carbon_traces.CarbonTrace) -> pd.Series:
  """The training trace continued by the test trace: what the refits may read (before each cutoff)."""
  a, b = train.ci_g_per_kwh, test.ci_g_per_kwh
  overlap = b.index[b.index <= a.index[-1]]
  if len(overlap) and not np.allclose(a.reindex(overlap).to_numpy(), b.loc[overlap].to_numpy(), rtol=1e-9):
    raise ConfigError("refit_every_hours", f"the test trace {test.path} disagrees with the training trace "
                      f"{train.path} on the hours they share; refitting needs one series. Use the same "
                      "file for --train_trace and --test_trace, or --refit_every_hours=0.")
  series = pd.concat([a, b[b.index > a.index[-1]]])
  try:
    windows.check_hourly(series, name="training + test trace")
  except ValueError as e:
    raise ConfigError("refit_every_hours", f"needs a test trace that continues the training trace without "
                      f"a gap ({e}); set --train_end to --test_start or use --refit_every_hours=0.") from None
  return series


def _refit_forecasts(config: ForecastRunConfig, model: forecaster_io.TrainedForecaster, linear_norm: Normalization,
                     series: pd.Series, origin_times: pd.DatetimeIndex,
                     val_hours: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """Forecasts of the transformer and of the linear AR with their closed-form parts refitted on a schedule.

  Returns:
    ``(q, linear_pred, info)``: ``(M, H, Q)`` and ``(M, H)`` forecasts (gCO2eq/kWh) at ``origin_times``
    and what the refits did.
  """
  cfg = model.config
  horizon = cfg.horizon_hours
  every = config.refit_every_hours
  t0 = time.perf_counter()
  values = series.to_numpy()
  hours = windows.hours_since_epoch(series.index)
  frozen = refit.frozen_network_windows(model.params, values, hours, config=cfg, normalization=model.normalization)
  positions = series.index.get_indexer(origin_times)
  eval_rows = positions - frozen.origins[0]
  cutoffs = windows.refit_cutoffs(positions, every)
  calibrate = model.calibration is not None
  q_z, parts = refit.rolling_refit_quantiles(frozen, eval_rows, cutoffs, config=cfg, val_hours=val_hours,
                                             fit_target=config.refit_target,
                                             calibration_hours=val_hours if calibrate else None)
  # The linear AR baseline: same windows, same cutoffs, same penalty rule as its first fit.
  lin_z = linear_norm.transform(values)
  hist, fut = windows.make_windows(lin_z, frozen.origins, cfg.history_hours, horizon)
  features = baselines.linear_ar_features(hist, hours[frozen.origins])
  lin_pred, lin_refits = baselines.rolling_refit_linear_ar(
      features, fut, frozen.origins, eval_rows, cutoffs, horizon_hours=horizon, val_hours=val_hours,
      l2_grid=LINEAR_L2_GRID)
  refit_s = time.perf_counter() - t0
  info = {
      "mode": "rolling", "every_hours": every, "fit_target": config.refit_target,
      "parts": ["linear_skip"] + (["quantile_calibration"] if calibrate else []),
      "network": "frozen", "val_hours": val_hours, "num_refits": len(parts), "refit_s": refit_s,
      "data": "all hours strictly before each refit time (training period + test hours already past)",
      "refits": [{"cutoff": series.index[p.cutoff].isoformat(), "transformer_l2": p.l2,
                  "linear_ar_l2": r["l2"], "num_windows": p.num_windows}
                 for p, r in zip(parts, lin_refits)],
  }
  print(f"Refitted {len(parts)} times (every {every} h) in {refit_s:.1f} s.", flush=True)
  return model.normalization.inverse(q_z), linear_norm.inverse(lin_pred), info


def _targets(tr: list[float], lin: list[float], best_naive: np.ndarray) -> dict[str, Any]:
  day1 = tr[0] / best_naive[0]
  days2to4 = float(np.mean(tr[1:]) / np.mean(best_naive[1:]))
  return {"day1_ratio_to_best_naive": float(day1), "days2to4_ratio_to_best_naive": days2to4,
          "day1_target_met": bool(day1 <= 0.8), "days2to4_target_met": bool(days2to4 <= 0.9),
          "beats_linear_every_day": bool(all(a < b for a, b in zip(tr, lin)))}


def _quantile_metrics(actual: np.ndarray, q: np.ndarray, model: forecaster_io.TrainedForecaster) -> dict[str, Any]:
  return {**fm.quantile_metrics(actual, q, model.config.quantiles),
          "quantiles_calibrated": model.calibration is not None}


def _write_test_week(config: ForecastRunConfig, workdir: Path, trace: carbon_traces.CarbonTrace,
                     origins: np.ndarray, actual: np.ndarray, q: np.ndarray, quantiles: tuple[float, ...]) -> None:
  """Day-ahead forecasts (hours 1-24 of seven consecutive daily origins): CSV and plot."""
  ci = trace.ci_g_per_kwh
  week0 = config.utc("plot_week_start") if config.plot_week_start else ci.index[origins[0]]
  pos = int(np.searchsorted(origins, ci.index.get_loc(week0)))
  sel = slice(pos, pos + max(1, 168 // config.eval_step_hours))
  day = min(24, config.eval_step_hours)
  t = pd.DatetimeIndex(np.concatenate([ci.index[o:o + day] for o in origins[sel]]))
  names = fm.quantile_names(quantiles)
  cols = {"actual_g_per_kwh": actual[sel, :day].reshape(-1),
          **{name: q[sel, :day, i].reshape(-1) for i, name in enumerate(names)}}
  rows = [{"time_utc": str(ts), **{k: float(v[i]) for k, v in cols.items()}} for i, ts in enumerate(t)]
  results.write_csv(workdir / "forecast_test_week.csv", rows, columns=["time_utc", *cols])
  mid = list(quantiles).index(0.5)
  plots.plot_forecast(workdir / "forecast_test_week.png", t, cols["actual_g_per_kwh"], cols[names[0]],
                      cols[names[mid]], cols[names[-1]], xlabel="time (UTC)",
                      ylabel=f"{trace.column} carbon intensity (gCO2eq/kWh)",
                      title=f"Day-ahead forecasts, {trace.region or config.region}, week of {t[0]:%Y-%m-%d} "
                      f"(each day forecast at 00:00 UTC of that day)")


def evaluate(config: ForecastRunConfig, model: forecaster_io.TrainedForecaster, linear: baselines.LinearAR,
             linear_norm: Normalization, trace: carbon_traces.CarbonTrace, workdir: Path,
             refit_series: pd.Series | None = None, refit_val_hours: int = 0) -> dict[str, Any]:
  """Rolling-origin metrics of the transformer and the baselines on ``trace`` from ``config.test_start``.

  With ``refit_series`` (the training trace continued by ``trace``), the transformer's closed-form
  parts and the linear AR are refitted every ``config.refit_every_hours`` on the hours of
  ``refit_series`` before each refit time; the frozen models' metrics go to ``models_without_refit``.
  """
  cfg = model.config
  length, horizon = cfg.history_hours, cfg.horizon_hours
  ci = trace.ci_g_per_kwh
  windows.check_hourly(ci, name=trace.path)
  test_start = config.utc("test_start")
  origins = windows.rolling_origins(ci.index, start=test_start, end=ci.index[-1], history_hours=length,
                                    horizon_hours=horizon, step_hours=config.eval_step_hours)
  if len(origins) == 0:
    raise ConfigError("test_start", f"{trace.path}: no test origin with {length} h of history and {horizon} h "
                      f"ahead in [{test_start}, {trace.end}). Widen --test_start/--test_end.")
  values = ci.to_numpy()
  hist, actual = windows.make_windows(values, origins, length, horizon)
  origin_hours = windows.hours_since_epoch(ci.index)[origins]
  extra = _extra(config, trace, "test_trace")
  hist_extra = None if extra is None else windows.make_windows(extra.to_numpy(), origins, length, horizon)[0]
  q = model.predict_quantiles(hist, origin_hours, hist_extra)
  q_raw = predict_quantiles(model.params, hist, origin_hours, config=cfg, normalization=model.normalization,
                            hist_extra=hist_extra)
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
  linear_path = predict_quantiles(scale_median_residual(model.params, cfg, 0.0), hist, origin_hours,
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
    q, lin_pred, refit_out["refit"] = _refit_forecasts(config, model, linear_norm, refit_series,
                                                       ci.index[origins], refit_val_hours)
    models["transformer"] = _quantile_metrics(actual, q, model)
    models["linear_ar"] = fm.point_metrics(actual, lin_pred)
  ratios = {name: [float(a / b) for a, b in zip(models[name]["mape_by_day"], best_naive)]
            for name in ("transformer", "linear_ar")}
  targets = _targets(models["transformer"]["mape_by_day"], models["linear_ar"]["mape_by_day"], best_naive)
  _write_test_week(config, workdir, trace, origins, actual, q, cfg.quantiles)
  return {"models": models, "ratio_to_best_seasonal_naive": ratios, "targets": targets, "ablation": ablation,
          **refit_out, "num_test_origins": int(len(origins)),
          "first_origin": ci.index[origins[0]].isoformat(), "last_origin": ci.index[origins[-1]].isoformat()}


def _period(start: pd.Timestamp, end: pd.Timestamp) -> str:
  return f"{start:%Y-%m-%dT%H:%MZ}/{end:%Y-%m-%dT%H:%MZ}"


@contextlib.contextmanager
def _window_flags(start: str, end: str):
  """A window outside a trace file is refused naming the flags, not the loader's start=/end=."""
  try:
    yield
  except DataError as e:
    if _LOADER_HINT not in str(e):
      raise
    raise ConfigError(start, str(e).replace(_LOADER_HINT, f"Pick --{start}/--{end} inside it.")) from None


_LOADER_HINT = "Pick start=/end= inside it."


# Settings a rerun in a finished workdir may change: they only select and score the test, which is
# redone with the trained forecaster; every other setting defines that forecaster.
EVALUATION_SETTINGS = ("test_trace", "test_start", "test_end", "restore_from", "eval_step_hours",
                       "refit_every_hours", "refit_target", "plot_week_start")


def run(config: ForecastRunConfig, workdir: str | Path) -> dict[str, Any]:
  """Trains (or restores) the forecaster, evaluates it and the baselines, writes ``metrics.json``.

  Returns:
    The metrics, as written to ``metrics.json`` (JSON types).
  """
  workdir = Path(workdir).expanduser()
  train_start, train_end = config.utc("train_start"), config.utc("train_end")
  test_start, test_end = config.utc("test_start"), config.utc("test_end")
  # Everything that can fail on a setting or an input is checked before the first write.
  wd = results.prepare_workdir(workdir, config, kind="train_forecaster", may_change=EVALUATION_SETTINGS)
  with _window_flags("train_start", "train_end"):
    train_trace = _load(config, config.train_trace, train_start, train_end)
  with _window_flags("test_start", "test_end"):
    _load(config, config.test_trace, test_start, test_end)  # a bad test window fails before any write

  # Forecaster: restore (explicitly, or a finished one in the workdir) or train.
  restore = config.restore_from
  if not restore and (workdir / "forecaster" / forecaster_io.META_FILE).exists():
    restore = str(workdir / "forecaster")
    print(f"{workdir} already holds a trained forecaster; evaluating it without retraining.", flush=True)
  model = None
  if restore:
    try:
      model = forecaster_io.restore_forecaster(restore)
    except CenasError as e:
      if not config.restore_from:
        raise  # the workdir's own forecaster: the message names its files
      raise ConfigError("restore_from", str(e)) from None
  wd.claim()
  if restore:
    train_info = {"restored_from": str(Path(restore).resolve()), **{
        k: model.metadata.get(k) for k in ("train_s", "epochs", "best_epoch", "epoch_s_median",
                                           "train_regions", "residual_weight")}}
    print(f"Restored forecaster from {restore} (trained on "
          f"{model.metadata.get('train_trace', {}).get('path')}).", flush=True)
  else:
    model, train_info = _train(config, train_trace, workdir)
  cfg = model.config
  linear, linear_norm = _fit_linear(config, train_trace, cfg.history_hours, cfg.horizon_hours)

  # Test: read the history before the first origin too, as far as the file allows.
  try:
    test_trace = _load(config, config.test_trace, test_start - pd.Timedelta(hours=cfg.history_hours), test_end)
  except DataError:
    print(f"The test trace has no {cfg.history_hours} h of history before --test_start; the first origins "
          "move later.", flush=True)
    test_trace = _load(config, config.test_trace, test_start, test_end)
  refit_series = None
  refit_val_hours = 0
  if config.refit_every_hours:
    refit_series = _refit_series(train_trace, test_trace)
    # The refits pick their ridge penalty (and fit the calibration) on as many hours as the
    # training's validation slice.
    refit_val_hours = len(train_trace) - int(round(len(train_trace) * (1.0 - config.train.val_fraction)))
  evaluation = evaluate(config, model, linear, linear_norm, test_trace, workdir, refit_series, refit_val_hours)

  metrics = {
      "region": config.region if not config.test_trace else (test_trace.region or config.region),
      "target": f"{config.column} carbon intensity (gCO2eq/kWh)" if test_trace.source.startswith(
          "electricitymaps") else f"{test_trace.column} (gCO2eq/kWh)",
      "train_period": _period(train_start, train_end),
      "test_period": _period(test_start, test_end),
      **evaluation,
      "metric_notes": ("Fractions, not percent. mape_by_day: hours 1-24, 25-48, 49-72, 73-96 after "
                       "each origin; origins every eval_step_hours over the test period. ape_p90: 90th "
                       "percentile of the absolute percentage error over all origins and hours. With "
                       "refit.mode 'rolling', models.transformer and models.linear_ar are refitted on the "
                       "past every refit.every_hours (models_without_refit: as trained)."),
      "eval_step_hours": config.eval_step_hours,
      "forecaster": {"config": cfg.to_dict(), "normalization": model.normalization.to_dict(), **train_info},
      "linear_ar_l2": linear.l2,
      "provenance": {
          "train_trace": train_trace.to_dict(), "test_trace": test_trace.to_dict(),
          "ci_source": test_trace.source, "seed": config.train.seed, "package_version": cenas_jax.__version__,
          "python": platform.python_version(),
      },
  }
  metrics = results.to_json_safe(metrics)  # As written: JSON types only.
  atomic_write_json(workdir / "metrics.json", metrics)
  wd.finish()
  for name, m in {**evaluation["models"], "transformer_linear_path_only":
                  evaluation["ablation"]["transformer_linear_path_only"]}.items():
    print(f"{name:<20} MAPE days 1-4: {' '.join(f'{100 * v:5.2f}%' for v in m['mape_by_day'])}")
  for name, m in evaluation.get("models_without_refit", {}).items():
    print(f"{name:<20} MAPE days 1-4: {' '.join(f'{100 * v:5.2f}%' for v in m['mape_by_day'])} (without refit)")
  print(f"Targets: {evaluation['targets']}", flush=True)
  return metrics
