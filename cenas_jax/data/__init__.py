"""Real data for the searches, each behind a strict loader that names the file and row of a problem.

Modules (import the one you need; nothing is imported eagerly, so ``import cenas_jax.data`` is cheap):

- ``paths``: where data lives (``cache_dir()`` for downloads, ``shared_data_dir()`` for the shared
  real data) and the one download routine every loader uses.
- ``carbon_traces``: hourly grid carbon-intensity traces (``CarbonTrace``, gCO2eq/kWh, UTC).
- ``nasbench``: the NAS-Bench-201 / HW-NAS-Bench lookup table of all 15,625 NB201 cells.
- ``cifar10``: CIFAR-10 in its original python format (safe extraction, restricted unpickling).
- ``tabular``: tabular datasets (UCI Adult, German credit, California housing, CSV/parquet, ARFF,
  OpenML), preprocessing fitted on training rows, and TabZilla folds.
- ``live_intensity``: a zone's carbon intensity right now from the Electricity Maps API.

The names below are importable from the package (``from cenas_jax.data import region_trace``) and
load their module on first use::

  trace = region_trace("DE")                 # the shared trace of a region (gCO2eq/kWh, hourly, UTC)
  table = load_nb201_table()                 # all 15,625 NB201 cells with accuracy and hardware costs
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("carbon_traces", "cifar10", "live_intensity", "nasbench", "paths", "tabular")
_PUBLIC = {
    "carbon_traces": ("CarbonTrace", "KNOWN_REGIONS", "load_trace", "region_trace", "sniff_format"),
    "nasbench": ("NB201Table", "load_nb201_table"),
    "paths": ("shared_data_dir", "cache_dir"),
    "live_intensity": ("ElectricityMapsClient", "LiveIntensity"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted([*_MODULES, *_WHERE])


def __getattr__(name: str) -> Any:
  if name in _MODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _WHERE:
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
