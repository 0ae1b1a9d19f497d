"""NAS-Bench-201 / HW-NAS-Bench lookup table for all 15,625 NB201 cells.

``load_nb201_table()`` joins three real sources (under ``shared_data_dir()`` by default) into one
``NB201Table``, whose row i is NB201 arch index i:

- ``nas_bench_201/nats_tss_test_acc_200ep.csv.gz``: NATS-Bench / NB201 test accuracy (%, 200 epochs,
  mean over seeds) on CIFAR-10, CIFAR-100 and ImageNet16-120, and the arch string of each index;
- ``nb201_supernet_acc/{nasbench201,one-shot-supernet,few-shot-supernet}.json``: CIFAR-10 accuracy
  (%) from the few-shot-NAS repository (ground truth, one-shot supernet estimate, few-shot supernet
  estimate), keyed by genotype string and mapped here to the arch index;
- ``hw_nas_bench/hwnasbench_nb201_cifar10_subset.csv.gz``: HW-NAS-Bench hardware costs on CIFAR-10
  inputs for 12,554 of the 15,625 cells (latency ms, energy mJ) and FLOPs (millions). The other
  rows are NaN and ``has_hw`` is False there; ``edgetpu_latency == -1`` (not measured) is NaN too.
  Missing values are never zeros.

Alternatively ``load_nb201_table(hw_pickle=PATH)`` takes the hardware costs of all cells from the
official HW-NAS-Bench pickle, read through ``third_party.hw_nas_bench.reader`` (restricted
unpickler, converted once into a ``.npz`` cache). FLOPs still come from the CSV.

Every file's header and values are checked; the arch string of every HW row must equal the NATS arch
string at the same index. Bad content raises ``DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.data import paths
from cenas_jax.errors import DataError
from cenas_jax.fileio import sha256_file
from cenas_jax.spaces import nb201

NUM_ARCHS = nb201.NUM_ARCHS

NATS_CSV = ("nas_bench_201", "nats_tss_test_acc_200ep.csv.gz")
HW_CSV = ("hw_nas_bench", "hwnasbench_nb201_cifar10_subset.csv.gz")
ACC_JSONS: dict[str, tuple[str, str]] = {
    "nb201_json_acc": ("nb201_supernet_acc", "nasbench201.json"),
    "oneshot_acc": ("nb201_supernet_acc", "one-shot-supernet.json"),
    "fewshot_acc": ("nb201_supernet_acc", "few-shot-supernet.json"),
}

NATS_HEADER = (
    "CIFAR10TestAccuracy200Epochs",
    "CIFAR100TestAccuracy200Epochs",
    "ImageNetTestAccuracy200Epochs",
    "ArchitectureString",
    "UniqueString",
)

HW_METRIC_FIELDS: dict[str, str] = {
    "edgegpu_latency": "edgegpu_latency_ms",
    "edgegpu_energy": "edgegpu_energy_mj",
    "raspi4_latency": "raspi4_latency_ms",
    "edgetpu_latency": "edgetpu_latency_ms",
    "pixel3_latency": "pixel3_latency_ms",
    "eyeriss_latency": "eyeriss_latency_ms",
    "eyeriss_energy": "eyeriss_energy_mj",
    "eyeriss_arithmetic_intensity": "eyeriss_arithmetic_intensity",
    "fpga_latency": "fpga_latency_ms",
    "fpga_energy": "fpga_energy_mj",
}
"""HW-NAS-Bench metric name -> ``NB201Table`` field (unit in the name; intensity is unitless)."""

HW_HEADER = (
    ("arch_index", "arch_str") + tuple(HW_METRIC_FIELDS) + ("flops_M", "test_acc_cifar10_single")
)

ACC_FIELDS = (
    "test_acc_cifar10", "test_acc_cifar100", "test_acc_imagenet16_120",
    "nb201_json_acc", "oneshot_acc", "fewshot_acc",
)
METRIC_FIELDS = ACC_FIELDS + tuple(HW_METRIC_FIELDS.values()) + ("flops_m",)
"""All float columns of ``NB201Table``."""

MISSING_MARKER = -1.0
"""HW-NAS-Bench writes -1 for a measurement it does not have (edgetpu_latency); read as NaN."""


class ArchIndex(int):
  """An NB201 arch index (what ``NB201Table.index_of`` returns): a cell's id in 0..15624, which is a
  row position only in the full table."""


class ArchIndices(np.ndarray):
  """NB201 arch indices (what ``NB201Table.indices_of`` returns); see ``ArchIndex``."""


class RowColumn(np.ndarray):
  """A column of a ``subset`` table: positions are its rows, not NB201 arch indices. Indexing it
  with what ``index_of`` / ``indices_of`` returned raises instead of silently reading another
  cell's value; use ``table.value(arch, column)`` or ``column[table.rows_of(indices)]``."""

  def __getitem__(self, key):
    if isinstance(key, (ArchIndex, ArchIndices)):
      raise IndexError(
          "this column belongs to a subset of the NB201 table: its positions are rows, not the NB201 "
          "arch indices that index_of/indices_of return. Use table.value(arch, column) or "
          "column[table.rows_of(indices)].")
    return super().__getitem__(key)


@dataclasses.dataclass(frozen=True, eq=False)
class NB201Table:
  """NB201 cells with accuracies and hardware costs, as parallel read-only numpy arrays.

  The full table (``load_nb201_table()``) has 15,625 rows and row i is NB201 arch index i
  (``index == arange(15625)``). ``subset`` keeps the NB201 index of each row in ``index``; all
  methods take and return NB201 indices, not row positions.

  Attributes:
    index: int64 ``(n,)`` NB201 arch index of each row.
    arch_str: object ``(n,)`` NB201 arch strings.
    ops: int8 ``(n, 6)`` op indices in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 (op order
      ``nb201.OPS``).
    test_acc_cifar10: float64 ``(n,)`` CIFAR-10 test accuracy, %, 200 epochs (NATS-Bench CSV).
    test_acc_cifar100: float64, CIFAR-100 test accuracy, %.
    test_acc_imagenet16_120: float64, ImageNet16-120 test accuracy, %.
    nb201_json_acc: float64, CIFAR-10 test accuracy, % (few-shot-NAS ``nasbench201.json``).
    oneshot_acc: float64, one-shot supernet estimate of CIFAR-10 accuracy, %.
    fewshot_acc: float64, few-shot supernet estimate of CIFAR-10 accuracy, %.
    has_hw: bool ``(n,)``, whether the hardware source has the cell (some metrics may still be NaN,
      e.g. ``edgetpu_latency_ms``).
    edgegpu_latency_ms .. fpga_energy_mj: float64 HW-NAS-Bench costs on CIFAR-10 inputs (latency
      ms, energy mJ, arithmetic intensity unitless); NaN where unknown.
    flops_m: float64, millions of FLOPs (CIFAR-10 network); NaN where unknown.
    hw_source: ``"csv"`` or ``"pickle"``, where the hardware columns came from.
    sources: ``(name, path, sha256)`` of every file read.
  """

  index: np.ndarray
  arch_str: np.ndarray
  ops: np.ndarray
  test_acc_cifar10: np.ndarray
  test_acc_cifar100: np.ndarray
  test_acc_imagenet16_120: np.ndarray
  nb201_json_acc: np.ndarray
  oneshot_acc: np.ndarray
  fewshot_acc: np.ndarray
  has_hw: np.ndarray
  edgegpu_latency_ms: np.ndarray
  edgegpu_energy_mj: np.ndarray
  raspi4_latency_ms: np.ndarray
  edgetpu_latency_ms: np.ndarray
  pixel3_latency_ms: np.ndarray
  eyeriss_latency_ms: np.ndarray
  eyeriss_energy_mj: np.ndarray
  eyeriss_arithmetic_intensity: np.ndarray
  fpga_latency_ms: np.ndarray
  fpga_energy_mj: np.ndarray
  flops_m: np.ndarray
  hw_source: str = "csv"
  sources: tuple[tuple[str, str, str], ...] = ()

  def __post_init__(self) -> None:
    n = self.index.shape[0]
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if not isinstance(value, np.ndarray):
        continue
      want = (n, nb201.NUM_EDGES) if f.name == "ops" else (n,)
      if value.shape != want:
        raise ValueError(f"NB201Table.{f.name} has shape {value.shape}; expected {want}.")
      value.flags.writeable = False

  def __len__(self) -> int:
    return int(self.index.shape[0])

  # -- Lookups ------------------------------------------------------------------------------------

  @functools.cached_property
  def _row_of_index(self) -> np.ndarray:
    rows = np.full(NUM_ARCHS, -1, dtype=np.int64)
    rows[self.index] = np.arange(len(self))
    return rows

  @functools.cached_property
  def _index_of_str(self) -> dict[str, int]:
    return {s: int(i) for s, i in zip(self.arch_str.tolist(), self.index.tolist())}

  @functools.cached_property
  def _index_of_code(self) -> np.ndarray:
    out = np.full(NUM_ARCHS, -1, dtype=np.int64)
    out[nb201.ops_to_code(self.ops)] = self.index
    return out

  def rows_of(self, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """Row positions of NB201 arch indices in this table (int64, same shape as ``indices``).

    Raises:
      ValueError: an index is out of range or not in this table.
    """
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"NB201 arch indices must be integers, got dtype {idx.dtype}.")
    idx = idx.astype(np.int64)
    bad = (idx < 0) | (idx >= NUM_ARCHS)
    if np.any(bad):
      raise ValueError(
          f"NB201 arch index {int(idx[bad].flat[0])} is out of range [0, {NUM_ARCHS}).")
    rows = self._row_of_index[idx]
    if np.any(rows < 0):
      missing = idx[rows < 0]
      raise ValueError(
          f"NB201 arch index {int(missing.flat[0])} is not in this table ({missing.size} of the "
          f"requested indices are missing; the table has {len(self)} rows).")
    return rows

  def index_of(self, arch_str: str) -> int:
    """NB201 arch index of an arch string.

    Raises:
      ValueError: the string is malformed (the message says why and gives the expected format), or
        well-formed but not in this table.
    """
    try:
      return ArchIndex(self._index_of_str[arch_str])
    except (KeyError, TypeError):
      pass
    nb201.arch_str_to_ops(arch_str)  # Raises ValueError with the reason if malformed.
    raise ValueError(
        f"NB201 arch string {arch_str!r} is well-formed but not in this table ({len(self)} rows).")

  def indices_of(self, arch_strs: Iterable[str]) -> np.ndarray:
    """NB201 arch indices (int64) of many arch strings; see ``index_of``."""
    return np.fromiter((self.index_of(s) for s in arch_strs), dtype=np.int64).view(ArchIndices)

  def indices_of_ops(self, ops: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
    """NB201 arch indices of op-index cells: ``(6,)`` -> ``()``, ``(n, 6)`` -> ``(n,)`` int64.

    Raises:
      ValueError: malformed ops, or a cell not in this table.
    """
    out = self._index_of_code[nb201.ops_to_code(ops)]
    if np.any(out < 0):
      raise ValueError(
          f"{int(np.sum(out < 0))} of the requested NB201 cells are not in this table "
          f"({len(self)} rows).")
    return out

  def arch_of(self, index: int) -> str:
    """Arch string of an NB201 arch index (ValueError if not in this table)."""
    return str(self.arch_str[int(self.rows_of(int(index)))])

  def value(self, arch: str | int, column: str) -> float:
    """The value of ``column`` (``METRIC_FIELDS``) for one cell, by arch string or NB201 arch index;
    right on a ``subset`` too, where row positions are not arch indices."""
    index = self.index_of(arch) if isinstance(arch, str) else int(arch)
    return float(np.asarray(self.column(column))[int(self.rows_of(index))])

  def column(self, name: str) -> np.ndarray:
    """A float column by field name (one of ``METRIC_FIELDS``)."""
    if name not in METRIC_FIELDS:
      raise ValueError(f"Unknown NB201Table column {name!r}; expected one of {METRIC_FIELDS}.")
    return getattr(self, name)

  # -- Views --------------------------------------------------------------------------------------

  def subset(self, mask_or_indices: np.ndarray | Sequence[int] | Sequence[bool]) -> NB201Table:
    """A table with only some rows.

    Args:
      mask_or_indices: a bool mask over this table's rows (length ``len(self)``), or NB201 arch
        indices (distinct; kept in the given order).

    Returns:
      The subset. Its columns are indexed by row (0..len-1), not by NB201 arch index: read a cell
      with ``value(arch, column)`` or ``column[rows_of(indices)]``; indexing a column with what
      ``index_of`` returned raises ``IndexError`` instead of returning another cell's value.

    Raises:
      ValueError: a mask of the wrong length, repeated indices, or indices not in the table.
    """
    sel = np.asarray(mask_or_indices)
    if sel.dtype == bool:
      if sel.shape != (len(self),):
        raise ValueError(f"Subset mask has shape {sel.shape}; expected ({len(self)},).")
      rows = np.flatnonzero(sel)
    else:
      if sel.ndim != 1:
        raise ValueError(f"Subset indices must be 1-D, got shape {sel.shape}.")
      rows = self.rows_of(sel) if sel.size else np.zeros(0, dtype=np.int64)
      if np.unique(rows).size != rows.size:
        raise ValueError("Subset indices contain repeated NB201 arch indices.")
    # Rows of a subset are no longer NB201 arch indices: its columns refuse index_of's results.
    keyed = not np.array_equal(self.index[rows], np.arange(rows.size))
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, np.ndarray):
        value = np.asarray(value)[rows].copy()
        updates[f.name] = value.view(RowColumn) if keyed else value
    return dataclasses.replace(self, **updates)

  def hw_indices(self) -> np.ndarray:
    """NB201 arch indices (int64, ascending) of the rows with hardware data (``has_hw``)."""
    return np.sort(self.index[self.has_hw])

  def objectives(
      self,
      indices: int | Sequence[int] | np.ndarray,
      metrics: Sequence[str] = ("test_acc_cifar10", "edgegpu_energy_mj"),
      maximize: Sequence[bool] = (True, False),
  ) -> np.ndarray:
    """Objective vectors to maximize, e.g. CE-NAS's ``[acc %, -edgegpu_energy mJ]`` (the default).

    Args:
      indices: NB201 arch indices, shape ``(n,)`` (or a scalar).
      metrics: column names (``METRIC_FIELDS``).
      maximize: per metric, True to keep it, False to negate it (so every column is maximized).

    Returns:
      float64 ``(n, len(metrics))`` (``(len(metrics),)`` for a scalar index).

    Raises:
      ValueError: unknown metric, lengths differ, an index is not in the table, or a requested value
        is unknown (NaN; e.g. hardware costs of a cell without ``has_hw``).
    """
    if len(metrics) != len(maximize):
      raise ValueError(f"metrics {tuple(metrics)} and maximize {tuple(maximize)} differ in length.")
    scalar = np.ndim(indices) == 0
    idx = np.atleast_1d(np.asarray(indices))
    rows = self.rows_of(idx)
    cols = []
    for name, up in zip(metrics, maximize):
      values = self.column(name)[rows]
      bad = np.isnan(values)
      if np.any(bad):
        raise ValueError(
            f"{name} is unknown (NaN) for {int(bad.sum())} of the requested cells, e.g. NB201 "
            f"index {int(idx[bad][0])}; restrict the indices (e.g. to hw_indices()) first.")
      cols.append(values if up else -values)
    out = np.stack(cols, axis=-1) if cols else np.zeros((idx.size, 0))
    return out[0] if scalar else out

  def provenance(self) -> dict[str, Any]:
    """Where the numbers came from.

    Returns:
      ``{"hw_source": str, "num_rows": int, "files": {name: {"path": str, "sha256": str}}}``.
    """
    return {
        "hw_source": self.hw_source,
        "num_rows": len(self),
        "files": {name: {"path": path, "sha256": digest} for name, path, digest in self.sources},
    }


# ------------------------------------------------------------------------------------------------
# Loading.


def _open_csv_rows(path: Path) -> tuple[list[str], Iterable[list[str]], Any]:
  f = gzip.open(path, "rt", newline="", encoding="utf-8") if path.suffix == ".gz" else open(
      path, newline="", encoding="utf-8")
  reader = csv.reader(f)
  try:
    header = next(reader)
  except StopIteration:
    f.close()
    raise DataError(f"{path}: empty file (no header).") from None
  except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
    f.close()
    raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}).") from e
  return header, reader, f


def _check_header(path: Path, header: list[str], expected: Sequence[str]) -> None:
  if tuple(header) != tuple(expected):
    raise DataError(
        f"{path}: unexpected header {header}; expected exactly {list(expected)}. Is this the right "
        "file (see the PROVENANCE.md next to it)?")


def _float(path: Path, line: int, column: str, text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise DataError(f"{path}, line {line}: {column}={text!r} is not a number.") from None
  if not math.isfinite(value):
    raise DataError(f"{path}, line {line}: {column}={text!r} is not finite.")
  return value


def _check_accuracy(path: Path, where: str, column: str, value: float) -> None:
  if not 0.0 <= value <= 100.0:
    raise DataError(f"{path}, {where}: {column}={value} is not an accuracy in [0, 100] %.")


def _read_nats_csv(path: Path) -> dict[str, np.ndarray]:
  header, reader, f = _open_csv_rows(path)
  acc = np.empty((NUM_ARCHS, 3))
  arch_strs: list[str] = []
  try:
    _check_header(path, header, NATS_HEADER)
    try:
      for row_i, row in enumerate(reader):
        line = row_i + 2
        if row_i >= NUM_ARCHS:
          raise DataError(f"{path}, line {line}: more than {NUM_ARCHS} data rows.")
        if len(row) != len(NATS_HEADER):
          raise DataError(
              f"{path}, line {line}: {len(row)} fields; expected {len(NATS_HEADER)}.")
        for j in range(3):
          value = _float(path, line, NATS_HEADER[j], row[j])
          _check_accuracy(path, f"line {line}", NATS_HEADER[j], value)
          acc[row_i, j] = value
        arch_strs.append(row[3])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
      raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}).") from e
  finally:
    f.close()
  if len(arch_strs) != NUM_ARCHS:
    raise DataError(
        f"{path}: {len(arch_strs)} data rows; expected {NUM_ARCHS} (one per NB201 cell).")
  ops = np.empty((NUM_ARCHS, nb201.NUM_EDGES), dtype=np.int8)
  for i, s in enumerate(arch_strs):
    try:
      ops[i] = nb201.arch_str_to_ops(s)
    except ValueError as e:
      raise DataError(f"{path}, line {i + 2}: {e}") from None
  codes = nb201.ops_to_code(ops)
  first_row = np.full(NUM_ARCHS, -1, dtype=np.int64)
  for i, c in enumerate(codes.tolist()):
    if first_row[c] >= 0:
      raise DataError(f"{path}, line {i + 2}: arch string {arch_strs[i]!r} repeats line "
                      f"{first_row[c] + 2}; every NB201 cell must appear exactly once.")
    first_row[c] = i
  return {
      "arch_str": np.array(arch_strs, dtype=object),
      "ops": ops,
      "test_acc_cifar10": acc[:, 0].copy(),
      "test_acc_cifar100": acc[:, 1].copy(),
      "test_acc_imagenet16_120": acc[:, 2].copy(),
      "index_of_code": np.argsort(codes).astype(np.int64),  # code -> NB201 index (a permutation)
  }


def _read_hw_csv(path: Path, arch_str: np.ndarray) -> dict[str, np.ndarray]:
  header, reader, f = _open_csv_rows(path)
  names = list(HW_METRIC_FIELDS.values()) + ["flops_m"]
  cols = {name: np.full(NUM_ARCHS, np.nan) for name in names}
  has_hw = np.zeros(NUM_ARCHS, dtype=bool)
  metric_cols = [(HW_HEADER.index(m), m, field) for m, field in HW_METRIC_FIELDS.items()]
  flops_col = HW_HEADER.index("flops_M")
  prev = -1
  try:
    _check_header(path, header, HW_HEADER)
    try:
      for row_i, row in enumerate(reader):
        line = row_i + 2
        if len(row) != len(HW_HEADER):
          raise DataError(f"{path}, line {line}: {len(row)} fields; expected {len(HW_HEADER)}.")
        try:
          idx = int(row[0])
        except ValueError:
          raise DataError(
              f"{path}, line {line}: arch_index={row[0]!r} is not an integer.") from None
        if not 0 <= idx < NUM_ARCHS:
          raise DataError(
              f"{path}, line {line}: arch_index={idx} is outside [0, {NUM_ARCHS}).")
        if idx <= prev:
          raise DataError(f"{path}, line {line}: arch_index={idx} is not above the previous row's "
                          f"{prev} (rows must be sorted by arch_index, without repeats).")
        prev = idx
        if row[1] != arch_str[idx]:
          raise DataError(
              f"{path}, line {line}: arch_str {row[1]!r} differs from the NAS-Bench-201 arch "
              f"string of index {idx} ({arch_str[idx]!r}); the files do not use the same index "
              "order.")
        for j, metric, field in metric_cols:
          value = _float(path, line, metric, row[j])
          if value == MISSING_MARKER:
            value = math.nan
          elif value < 0:
            raise DataError(f"{path}, line {line}: {metric}={value} is negative.")
          cols[field][idx] = value
        flops = _float(path, line, "flops_M", row[flops_col])
        if flops < 0:
          raise DataError(f"{path}, line {line}: flops_M={flops} is negative.")
        cols["flops_m"][idx] = flops
        has_hw[idx] = True
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
      raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}).") from e
  finally:
    f.close()
  if prev < 0:
    raise DataError(f"{path}: no data rows.")
  cols["has_hw"] = has_hw
  return cols


def _hw_from_pickle(pickle_path: Path, arch_str: np.ndarray) -> tuple[dict[str, np.ndarray], Path,
                                                                        str]:
  from third_party.hw_nas_bench import reader  # Local import: only needed for this option.

  arrays, meta, cache = reader.cached_nb201_arrays(pickle_path)
  cols: dict[str, np.ndarray] = {}
  for metric, field in HW_METRIC_FIELDS.items():
    values = arrays[f"cifar10__{metric}"].astype(np.float64, copy=True)
    values[values == MISSING_MARKER] = np.nan
    if np.any(values < 0):
      i = int(np.flatnonzero(values < 0)[0])
      raise DataError(f"{cache} (from {pickle_path}): cifar10 {metric} of index {i} is negative "
                      f"({values[i]}).")
    cols[field] = values
  if "cifar10__arch_str" in arrays:
    pickled = arrays["cifar10__arch_str"]
    known = pickled != ""
    bad = np.flatnonzero(known & (pickled != arch_str.astype(str)))
    if bad.size:
      i = int(bad[0])
      raise DataError(
          f"{pickle_path}: the config arch_str of index {i} ({pickled[i]!r}) differs from the "
          f"NAS-Bench-201 arch string ({arch_str[i]!r}); {bad.size} indices disagree.")
  cols["has_hw"] = np.any(
      np.stack([~np.isnan(cols[f]) for f in HW_METRIC_FIELDS.values()]), axis=0)
  return cols, cache, str(meta.get("source_sha256", ""))


def _read_acc_json(path: Path, index_of_code: np.ndarray) -> np.ndarray:
  def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
      if k in out:
        raise DataError(f"{path}: key {k!r} appears twice.")
      out[k] = v
    return out

  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f, object_pairs_hook=pairs_hook)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e}).") from e
  if not isinstance(data, dict):
    raise DataError(f"{path}: expected a JSON object {{genotype string: accuracy %}}.")
  if len(data) != NUM_ARCHS:
    raise DataError(f"{path}: {len(data)} entries; expected {NUM_ARCHS} (one per NB201 cell).")
  keys = list(data)
  ops = np.empty((len(keys), nb201.NUM_EDGES), dtype=np.int8)
  values = np.empty(len(keys))
  for i, key in enumerate(keys):
    try:
      ops[i] = nb201.genotype_str_to_ops(key)
    except ValueError as e:
      raise DataError(f"{path}: {e}") from None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise DataError(f"{path}: value {value!r} of key {key!r} is not a finite number.")
    _check_accuracy(path, f"key {key!r}", "accuracy", float(value))
    values[i] = value
  idx = index_of_code[nb201.ops_to_code(ops)]
  seen = np.full(NUM_ARCHS, -1, dtype=np.int64)
  for i, j in enumerate(idx.tolist()):
    if seen[j] >= 0:
      raise DataError(f"{path}: keys {keys[seen[j]]!r} and {keys[i]!r} name the same cell (NB201 "
                      f"index {j}).")
    seen[j] = i
  acc = np.empty(NUM_ARCHS)
  acc[idx] = values
  return acc


def _file_source(name: str, path: Path) -> tuple[str, str, str]:
  return (name, str(path), sha256_file(path))


def _resolve(root: Path, parts: tuple[str, str]) -> Path:
  return paths.require_file(
      root.joinpath(*parts),
      what=f"{parts[1]} (shared NAS-Bench data; set CENAS_SHARED_DATA or pass root=)")


@functools.lru_cache(maxsize=4)
def _load_cached(root: str, hw_pickle: str | None) -> NB201Table:
  root_path = Path(root)
  nats_path = _resolve(root_path, NATS_CSV)
  hw_csv_path = _resolve(root_path, HW_CSV)
  json_paths = {name: _resolve(root_path, parts) for name, parts in ACC_JSONS.items()}

  nats = _read_nats_csv(nats_path)
  index_of_code = nats.pop("index_of_code")
  hw = _read_hw_csv(hw_csv_path, nats["arch_str"])
  sources = [_file_source("nas_bench_201", nats_path),
             _file_source("hw_nas_bench_csv", hw_csv_path)]
  accs = {}
  for name, path in json_paths.items():
    accs[name] = _read_acc_json(path, index_of_code)
    sources.append(_file_source(name, path))

  hw_source = "csv"
  if hw_pickle is not None:
    flops = hw["flops_m"]
    hw, cache, pickle_sha = _hw_from_pickle(Path(hw_pickle), nats["arch_str"])
    hw["flops_m"] = flops
    sources.append(("hw_nas_bench_pickle", hw_pickle, pickle_sha))
    if Path(hw_pickle).suffix != ".npz":
      sources.append(("hw_nas_bench_cache", str(cache), sha256_file(cache)))
    hw_source = "pickle"

  return NB201Table(
      index=np.arange(NUM_ARCHS, dtype=np.int64),
      **nats, **accs, **hw,
      hw_source=hw_source,
      sources=tuple(sources),
  )


def load_nb201_table(root: str | os.PathLike[str] | None = None,
                     hw_pickle: str | os.PathLike[str] | None = None) -> NB201Table:
  """Loads the joined NB201 table (15,625 rows, row i = NB201 arch index i).

  Results are cached in-process per ``(root, hw_pickle)`` (files are not re-read if they change;
  call ``clear_cache()``). The returned arrays are read-only.

  Args:
    root: folder holding ``nas_bench_201/``, ``hw_nas_bench/`` and ``nb201_supernet_acc/``;
      defaults to ``cenas_jax.data.paths.shared_data_dir()``.
    hw_pickle: optional path to the official ``HW-NAS-Bench-v1_0.pickle`` (or to a ``.npz`` cache
      made from it); its CIFAR-10 hardware costs replace the CSV's. The pickle is read with a
      restricted unpickler and converted once into ``$CENAS_DATA_DIR/hw_nas_bench/``.

  Raises:
    DataUnavailableError: a file is missing (the message names it).
    DataError: a file's header or content is invalid (the message names the file and line).
  """
  root_path = Path(root).expanduser() if root is not None else paths.shared_data_dir()
  pickle_str = str(Path(hw_pickle).expanduser().resolve()) if hw_pickle is not None else None
  return _load_cached(str(root_path.resolve()), pickle_str)


def clear_cache() -> None:
  """Forgets tables loaded by ``load_nb201_table`` in this process."""
  _load_cached.cache_clear()
