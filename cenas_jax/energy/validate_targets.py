"""The per-cell measurements the NB201 validation fits and scores: from the table or a CSV.

A CSV may hold one column per batch size of a device (``--target_column=COL@1,COL2@256``,
``parse_batch_columns``): ``read_targets_csv_batches`` turns it into one ``Target`` whose rows are
(cell, batch) pairs, named after the columns' common stem (``batch_target_name``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
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
    batch_size: int64 ``(n,)`` images per call of each row when the rows are (cell, batch) pairs
      (``read_targets_csv_batches``; a cell then appears once per batch); ``None``: every row was
      measured at the run's ``batch_size``.
  """

  name: str
  kind: str
  arch_index: np.ndarray
  value_si: np.ndarray
  unit: str
  source: str
  batch_size: np.ndarray | None = None


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
  """Reads one target column of a CSV keyed by ``arch_index`` or ``arch_str`` (strict): one row per
  cell, measured at the run's batch size (``read_targets_csv_batches`` with one column).

  Empty / ``nan`` / ``na`` / ``none`` cells are skipped (a cell without a measurement).
  """
  return _read_csv(path, [(column, None)], unit, table)


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


def parse_batch_columns(text: str) -> list[tuple[str, int]] | None:
  """``[(column, batch), ...]`` of ``--target_column=COL@B[,COL@B...]``; ``None`` without ``@``
  (one column, measured at ``--batch_size``).

  Raises:
    ConfigError: (field ``target_column``) an entry without ``@<batch>``, a batch that is not a
      positive integer, or a column or batch given twice.
  """
  if "@" not in text:
    return None
  out: list[tuple[str, int]] = []
  for entry in text.split(","):
    column, sep, batch = entry.strip().rpartition("@")
    if not sep or not column.strip():
      raise ConfigError("target_column", f"entry {entry.strip()!r}: every entry must be "
                        "COLUMN@BATCH when one has a batch (e.g. time_b1_ms@1,time_b256_ms@256)")
    try:
      b = int(batch.strip())
    except ValueError:
      b = 0
    if b < 1 or batch.strip() != str(b):
      raise ConfigError("target_column", f"entry {entry.strip()!r}: the batch after '@' must be a "
                        f"positive integer, got {batch.strip()!r}")
    out.append((column.strip(), b))
  columns, batches = [c for c, _ in out], [b for _, b in out]
  if len(set(columns)) != len(columns) or len(set(batches)) != len(batches):
    raise ConfigError("target_column", f"{text!r}: each column and each batch may appear once")
  return out


def batch_target_name(columns: list[str]) -> str:
  """The name of a per-batch target: the columns' common prefix, cut back to its last ``_``, ``-``
  or ``.`` unless it is a whole column name or ends at one (``time_b1_ms``, ``time_b256_ms`` ->
  ``time``; ``energy_j_b1``, ``energy_j_b256`` -> ``energy_j``); the first column when they share
  nothing."""
  prefix = os.path.commonprefix(columns)
  if prefix and not all(c == prefix or c[len(prefix)] in "_-." for c in columns):
    cut = max(prefix.rfind(ch) for ch in "_-.")
    prefix = prefix[:cut] if cut > 0 else prefix
  prefix = prefix.rstrip("_-.@ ")
  return prefix or columns[0]


def read_targets_csv_batches(path: str, entries: list[tuple[str, int]], unit: str,
                             table: Any) -> Target:
  """Reads the per-batch columns ``entries`` (``parse_batch_columns``) of a CSV keyed by
  ``arch_index`` or ``arch_str`` into one ``Target`` of (cell, batch) rows (strict).

  Rows are in CSV line order, each line's batches in the order of ``entries``; an empty / ``nan``
  value skips that (cell, batch) pair only. Every column must have the same unit (``unit``, or the
  one each column's name says).
  """
  return _read_csv(path, entries, unit, table)


def _read_csv(path: str, entries: list[tuple[str, int | None]], unit: str, table: Any) -> Target:
  """The one reader of a targets CSV: ``entries`` are ``(column, batch)``, with ``batch`` ``None``
  for a single column measured at the run's batch size.

  Raises:
    DataUnavailableError: the file is missing.
    ConfigError: (field ``target_column``) a column the file does not have, or columns whose units
      differ; (``target_unit``) a unit that cannot be told.
    DataError: no key column, a bad value (names the line), a cell given twice, fewer than 10
      values.
  """
  from cenas_jax.data.paths import require_file  # pylint: disable=g-import-not-at-top

  p = require_file(Path(path), what=f"--targets_csv {path}")
  columns = [c for c, _ in entries]
  idx, batch, vals, cells = [], [], [], []
  with open(p, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
      raise ConfigError("target_column", f"{p} has no column {', '.join(map(repr, missing))} "
                        f"(columns: {header})")
    kinds_units = {c: infer_kind_unit(c, unit) for c in columns}
    if len({u for _, u in kinds_units.values()}) > 1:
      raise ConfigError("target_column", "the columns have different units (" + ", ".join(
          f"{c}: {u}" for c, (_, u) in kinds_units.items()) + "); give columns of one quantity "
          "in one unit, or pass --target_unit")
    kind, unit = kinds_units[columns[0]]
    key = "arch_index" if "arch_index" in header else "arch_str" if "arch_str" in header else None
    if key is None:
      raise DataError(f"{p}: needs an 'arch_index' or 'arch_str' column to identify cells")
    for line, row in enumerate(reader, start=2):
      texts = [(row.get(c) or "").strip() for c in columns]
      present = [t != "" and t.lower() not in ("nan", "na", "none") for t in texts]
      if not any(present):
        continue  # a cell without a measurement: skipped, counted below
      try:
        i = int(row[key]) if key == "arch_index" else table.index_of(row[key].strip())
      except (ValueError, KeyError) as e:
        raise DataError(f"{p} line {line}: bad {key!r} value ({e})") from None
      if not 0 <= i < len(table.index):
        raise DataError(f"{p} line {line}: arch_index {i} outside 0..{len(table.index) - 1}")
      cells.append(i)
      for (column, b), text, ok in zip(entries, texts, present):
        if not ok:
          continue
        try:
          value = float(text)
        except ValueError:
          raise DataError(f"{p} line {line}: bad {column!r} value {text!r}") from None
        if not math.isfinite(value) or value <= 0:
          raise DataError(f"{p} line {line}: {column}={text!r} must be a positive number")
        idx.append(i)
        batch.append(b)
        vals.append(value * SCALE[unit])
  if len(set(cells)) != len(cells):
    raise DataError(f"{p}: some cells appear more than once")
  if len(idx) < 10:
    raise DataError(f"{p}: only {len(idx)} values in {', '.join(columns)}; need at least 10")
  single = entries[0][1] is None
  return Target(columns[0] if single else batch_target_name(columns), kind,
                np.array(idx, np.int64), np.array(vals), unit, str(p),
                None if single else np.array(batch, np.int64))
