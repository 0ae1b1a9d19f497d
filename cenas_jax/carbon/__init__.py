"""Carbon: accounting, a carbon tracker for JAX work, ledgers and the carbon-intensity forecaster.

Start here::

  from cenas_jax import carbon
  carbon.carbon_g(energy_j=3.6e6, ci_g_per_kwh=250.0)          # 250.0 g for 1 kWh
  tracker = carbon.CarbonTracker(carbon.ConstantIntensity(250.0), device="a100-sxm4-40gb")
  forecaster = carbon.restore_forecaster("runs/forecaster/forecaster")
  forecaster.forecast(history)                                   # next hours' p10/p50/p90, gCO2eq/kWh

Accounting (not part of the forecaster): ``accounting`` (energy -> gCO2eq) and ``ledger``.
``tracker``: ``CarbonTracker``, a context manager / decorator that meters a block of JAX work (NVML
or the kernel model's prediction, labelled) and charges it at a trace's, a live or a given
intensity, appending to a CodeCarbon-compatible ``emissions.csv``.

The forecaster, one module per job:

- ``windows``: hours since the epoch, calendar features, hourly checks, rolling-origin windows and
  the refit schedule (NumPy).
- ``normalization``: ``Normalization`` of a series (fitted on training data only) and the per-window
  scale ``window_loc_scale``.
- ``calibration``: ``QuantileCalibration`` of the non-median quantiles.
- ``forecast_metrics``: metrics only (MAPE by day, coverage, pinball loss, ...).
- ``baselines``: seasonal naive and the linear autoregressive (ridge) forecaster.
- ``model``: ``ForecasterConfig`` and the Flax ``ForecastTransformer``.
- ``training``: ``TrainConfig`` and ``train_forecaster``.
- ``predict``: ``predict_quantiles`` and ``forecast`` in gCO2eq/kWh.
- ``refit``: the operational forecaster, its closed-form parts refitted on the past.
- ``forecaster_io``: ``save_forecaster`` / ``restore_forecaster`` (``TrainedForecaster``: one object
  with ``forecast(history)``, history a pandas Series or an array with ``last_hour``; a
  ``TrainResult`` gives it with ``.forecaster()``).
- ``evaluate``: the rolling-origin evaluation against the baselines, and ``run`` of
  ``experiments.train_forecaster``.

The names below are also importable from the package itself (``from cenas_jax.carbon import
restore_forecaster``); they are loaded on first use, so importing the package (e.g. for ``ledger``)
does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "accounting": ("carbon_g", "energy_j", "j_to_kwh", "kwh_to_j", "integrate_carbon_g"),
    "tracker": ("CarbonTracker", "Emission", "TraceIntensity", "LiveIntensity", "ConstantIntensity",
                "default_intensity", "TrackerError"),
    "windows": ("NUM_CALENDAR_FEATURES", "hours_since_epoch", "calendar_features", "check_hourly",
                "rolling_origins", "make_windows", "refit_cutoffs", "refit_groups", "windows_before",
                "past_split"),
    "normalization": ("Normalization", "fit_normalization", "window_loc_scale"),
    "calibration": ("QuantileCalibration", "fit_quantile_calibration", "order_quantiles"),
    "model": ("ForecasterConfig", "ForecastTransformer", "init_params", "apply_quantiles",
              "scale_median_residual", "specialize_params", "count_params"),
    "training": ("TrainConfig", "TrainResult", "train_forecaster"),
    "predict": ("predict_quantiles", "forecast"),
    "refit": ("FrozenNetworkWindows", "ClosedFormParts", "frozen_network_windows", "closed_form_quantiles",
              "with_closed_form_parts", "refit_closed_form_parts", "rolling_refit_quantiles"),
    "forecaster_io": ("TrainedForecaster", "save_forecaster", "restore_forecaster", "remove_unfinished_save"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
  if name in _WHERE:
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
