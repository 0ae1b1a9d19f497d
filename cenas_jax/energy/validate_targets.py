"""The per-cell measurements the NB201 validation fits and scores: from the table or a CSV."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.errors import ConfigError, DataError

ALL_TABLE_TARGETS = {
    "edgegpu_energy": "edgegpu_energy_mj", "edgegpu_latency": "edgegpu_latency_ms",
    "raspi4_latency": "raspi4_latency_ms", "edgetpu_latency": "edgetpu_latency_ms",
    "pixel3_latency": "pixel3_latency_ms", "eyeriss_latency": "eyeriss_latency_ms",
    "eyeriss_energy": "eyeriss_energy_mj", "fpga_latency": "fpga_latency_ms",
    "fpga_energy": "fpga_energy_mj"}
"""Every HW-NAS-Bench cost target of the table: name -> ``NB201Table`` field."""
TABLE_TARGETS = {k: ALL_TABLE_TARGETS[k] for k in ("edgegpu_energy", "edgegpu_latency")}
"""Default targets (the Jetson TX2 edge GPU)."""

SCALE = {"J": 1.0, "mJ": 1e-3, "s": 1.0, "ms": 1e-3, "us": 1e-6}
"""Unit -> factor to SI (J or s)."""


@dataclasses.dataclass(frozen=True)
class Target:
  """One per-cell measurement to fit and validate against.

  Attributes:
    name: key in metrics.json.
    kind: ``energy`` (fitted with ``fit_energy_model``) or ``latency`` (time model).
    arch_index: int64 ``(n,)`` NB201 indices of the cells that have a value.
    value_si: float64 ``(n,)`` values in J or s.
    unit: unit of the source column.
    source: where the values came from.
  """

  name: str
  kind: str
  arch_index: np.ndarray
  value_si: np.ndarray
  unit: str
  source: str


def infer_kind_unit(column: str, unit: str) -> tuple[str, str]:
  """``(kind, unit)`` of a column: ``unit`` unless ``auto``, then from a suffix or the name.

  Raises:
    ConfigError: ``auto`` and the name says nothing (field ``target_unit``).
  """
  low = column.lower()
  suffix_units = (("_mj", "mJ"), ("_us", "us"), ("_ms", "ms"), ("_j", "J"), ("_s", "s"))
  if unit == "auto":
    unit = next((u for suf, u in suffix_units if low.endswith(suf)), "")
    if not unit and ("energy" in low or "latency" in low):
      unit = "mJ" if "energy" in low else "ms"  # HW-NAS-Bench convention
    if not unit:
      raise ConfigError("target_unit", f"cannot tell the unit of --target_column={column!r}; "
                        "pass --target_unit")
  kind = "energy" if unit in ("J", "mJ") else "latency"
  return kind, unit


def read_targets_csv(path: str, column: str, unit: str, table: Any) -> Target:
  """Reads one target column of a CSV keyed by ``arch_index`` or ``arch_str`` (strict).

  Empty / ``nan`` / ``na`` / ``none`` cells are skipped (a cell without a measurement).

  Raises:
    DataUnavailableError: the file is missing.
    DataError: no such column or key column, a bad value (names the line), a cell given twice,
      fewer than 10 cells.
    ConfigError: the unit cannot be told.
  """
  from cenas_jax.data.paths import require_file  # pylint: disable=g-import-not-at-top

  p = require_file(Path(path), what=f"--targets_csv {path}")
  idx, vals = [], []
  with open(p, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    if column not in header:
      raise DataError(f"{p}: no column {column!r} (columns: {header}); pass --target_column")
    key = "arch_index" if "arch_index" in header else "arch_str" if "arch_str" in header else None
    if key is None:
      raise DataError(f"{p}: needs an 'arch_index' or 'arch_str' column to identify cells")
    kind, unit = infer_kind_unit(column, unit)
    for line, row in enumerate(reader, start=2):
      text = (row.get(column) or "").strip()
      if text == "" or text.lower() in ("nan", "na", "none"):
        continue  # missing measurement: skipped, counted below
      try:
        value = float(text)
        i = int(row[key]) if key == "arch_index" else table.index_of(row[key].strip())
      except (ValueError, KeyError) as e:
        raise DataError(f"{p} line {line}: bad {key!r} or {column!r} value ({e})") from None
      if not math.isfinite(value) or value <= 0:
        raise DataError(f"{p} line {line}: {column}={text!r} must be a positive number")
      if not 0 <= i < len(table.index):
        raise DataError(f"{p} line {line}: arch_index {i} outside 0..{len(table.index) - 1}")
      idx.append(i)
      vals.append(value * SCALE[unit])
  if len(set(idx)) != len(idx):
    raise DataError(f"{p}: some cells appear more than once")
  if len(idx) < 10:
    raise DataError(f"{p}: only {len(idx)} cells have a {column!r} value; need at least 10")
  return Target(column, kind, np.array(idx, np.int64), np.array(vals), unit, str(p))


def table_targets(table: Any, names: Any = tuple(TABLE_TARGETS)) -> list[Target]:
  """The targets ``names`` (``ALL_TABLE_TARGETS`` keys) of the cells with hardware data
  (``NB201Table``) and a positive value (Edge TPU's missing cells, -1 in the source, are
  dropped), in SI units."""
  out = []
  for name in names:
    field = ALL_TABLE_TARGETS[name]
    v = np.asarray(getattr(table, field), np.float64)
    ok = table.has_hw & np.isfinite(v) & (v > 0)
    kind, unit = infer_kind_unit(field, "auto")
    out.append(Target(name, kind, table.index[ok].astype(np.int64), v[ok] * SCALE[unit], unit,
                      f"HW-NAS-Bench {name} (cifar10) via load_nb201_table"))
  return out
