"""Saving and restoring a trained forecaster: one directory per forecaster.

A forecaster directory holds ``params/`` (the network's parameters, a step-0 checkpoint of
``training.checkpoint.Checkpointer``, the project's one orbax wrapper) and ``forecaster.json`` (config,
normalization, quantile calibration and free-form metadata). The JSON file is written last, so a
directory without it is an unfinished save (``remove_unfinished_save``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from cenas_jax.carbon.calibration import QuantileCalibration
from cenas_jax.carbon.model import ForecasterConfig, init_params
from cenas_jax.carbon.normalization import Normalization
from cenas_jax.carbon.predict import forecast, predict_quantiles
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import atomic_write_json

FORMAT_VERSION = 2  # 2: parameters written by training.checkpoint (1: a bare orbax checkpoint).
META_FILE = "forecaster.json"
PARAMS_DIR = "params"


@dataclasses.dataclass(frozen=True)
class TrainedForecaster:
  """A restored forecaster: parameters, config, normalization, metadata and quantile calibration."""

  params: Any
  config: ForecasterConfig
  normalization: Normalization
  metadata: dict[str, Any]
  calibration: QuantileCalibration | None = None

  def forecast(self, history: pd.Series | np.ndarray, history_extra: pd.DataFrame | None = None, *,
               last_hour: Any = None) -> pd.DataFrame:
    """The next ``horizon_hours`` of carbon intensity after ``history``, in gCO2eq/kWh.

    Args:
      history: hourly gCO2eq/kWh, oldest first, at least ``config.history_hours`` long: a pandas
        Series on a UTC index, or a 1-D array (or list) with ``last_hour``.
      history_extra: extra columns on ``history``'s index, for a model that uses them.
      last_hour: UTC time of the last value of an array ``history`` (ignored for a Series).

    Returns:
      A DataFrame on the next hours' UTC index, one column per quantile (``p10``, ``p50``, ``p90``).
    """
    return forecast(self.params, history, config=self.config, normalization=self.normalization,
                    history_extra=history_extra, calibration=self.calibration, last_hour=last_hour)

  def predict_quantiles(self, hist_ci_g_per_kwh: np.ndarray, origin_hours: np.ndarray,
                        hist_extra: np.ndarray | None = None) -> np.ndarray:
    """``predict_quantiles`` with this forecaster's params, config, normalization and calibration."""
    return predict_quantiles(self.params, hist_ci_g_per_kwh, origin_hours, config=self.config,
                             normalization=self.normalization, hist_extra=hist_extra,
                             calibration=self.calibration)


def save_forecaster(directory: str | Path, params: Any, *, config: ForecasterConfig,
                    normalization: Normalization, metadata: dict[str, Any] | None = None,
                    calibration: QuantileCalibration | None = None) -> Path:
  """Saves parameters (checkpoint) plus config, normalization, calibration and metadata (JSON).

  Multi-region models are saved as they are; ``specialize_params`` them first to save the model of
  one region.

  Args:
    directory: the forecaster's directory; must not exist yet (a forecaster is never overwritten).
    params: parameters of ``ForecastTransformer(config)``.
    config: the model's config.
    normalization: the normalization it was trained with.
    metadata: JSON-safe facts to keep with it (training trace, timings, ...).
    calibration: its quantile calibration, if any.

  Returns:
    The directory (absolute).
  """
  from cenas_jax.training.checkpoint import Checkpointer  # orbax is slow to import.

  directory = Path(directory).expanduser().resolve()
  if directory.exists():
    raise FileExistsError(f"{directory} already exists; choose a new directory for the forecaster.")
  directory.mkdir(parents=True)
  with Checkpointer(directory / PARAMS_DIR, max_to_keep=1) as ckpt:
    ckpt.save(0, params, force=True)
  atomic_write_json(directory / META_FILE, {
      "format_version": FORMAT_VERSION, "config": config.to_dict(),
      "normalization": normalization.to_dict(), "metadata": metadata or {},
      "calibration": None if calibration is None else calibration.to_dict()})
  return directory


def restore_forecaster(directory: str | Path) -> TrainedForecaster:
  """Restores a forecaster saved by ``save_forecaster``.

  Raises:
    DataUnavailableError: the directory or its files are missing.
    DataError: the files are corrupt or do not match the stored config.
  """
  from cenas_jax.training.checkpoint import CheckpointError, Checkpointer  # orbax is slow to import.

  directory = Path(directory).expanduser().resolve()
  meta_path = directory / META_FILE
  if not meta_path.is_file() or not (directory / PARAMS_DIR).is_dir():
    raise DataUnavailableError(
        f"No saved forecaster at {directory} (expected {META_FILE} and {PARAMS_DIR}/); give the "
        "'forecaster' folder of a finished `python -m experiments.train_forecaster` workdir.")
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"format_version {meta.get('format_version')} != {FORMAT_VERSION}; retrain it "
                       "with this version")
    config = ForecasterConfig.from_dict(meta["config"])
    norm = Normalization.from_dict(meta["normalization"])
    cal = meta.get("calibration")
    calibration = None if cal is None else QuantileCalibration.from_dict(cal)
    if calibration is not None and (
        calibration.quantiles != config.quantiles
        or any(len(s) != config.horizon_hours for s in calibration.shift)):
      raise ValueError("the calibration does not match the config's quantiles and horizon")
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise DataError(f"{meta_path}: not a valid forecaster description ({e}).") from e
  abstract = jax.eval_shape(lambda: init_params(jax.random.key(0), config))
  try:
    with Checkpointer(directory / PARAMS_DIR, max_to_keep=1) as ckpt:
      params = ckpt.restore(0, target=abstract).state
  except CheckpointError as e:
    raise DataError(f"{directory / PARAMS_DIR}: cannot restore the forecaster's parameters ({e}). "
                    "The checkpoint is corrupt or was written with another config.") from e
  return TrainedForecaster(params=params, config=config, normalization=norm, metadata=meta.get("metadata", {}),
                          calibration=calibration)


def remove_unfinished_save(directory: str | Path) -> bool:
  """Deletes ``directory`` if it holds an unfinished save (params without ``forecaster.json``).

  Returns:
    Whether something was removed.
  """
  directory = Path(directory)
  if directory.is_dir() and not (directory / META_FILE).exists():
    shutil.rmtree(directory)
    return True
  return False
