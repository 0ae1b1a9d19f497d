"""Typing raw string columns into a ``TabularDataset`` (shared by the CSV, UCI and ARFF readers).

A reader turns a file into columns of strings and a ``row_label`` (``i -> "line 12"``) for error
messages; these functions parse them into numeric or categorical :class:`Column` s, resolve the target
and the task, and assemble the dataset. Every DataError names the file, the row and the column.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cenas_jax.data.tabular.dataset import TASKS, SourceFile, TabularDataset
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file

# Cells that mean "missing" in CSV files (compared after stripping surrounding whitespace).
DEFAULT_MISSING_VALUES = frozenset({"", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})

# A numeric target with integer values and at most this many distinct values is taken as class labels
# when ``task`` is not given.
MAX_AUTO_CLASSES = 20


def read_text(path: Path) -> str:
  """Reads a text file, gunzipping it when it is gzip-compressed; DataError on corrupt content."""
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise DataUnavailableError(f"{path} not found.") from None
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(
          f"{path}: the gzip stream is corrupt or truncated ({e}). Download the file again.") from e
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e}).") from e
  if not text.strip():
    raise DataError(f"{path}: the file is empty.")
  return text


def source_of(path: Path) -> SourceFile:
  return SourceFile(location=str(path), sha256=sha256_file(path))


def find_file(directory: Path, names: Sequence[str], *, what: str, url: str) -> Path:
  for name in names:
    if (directory / name).is_file():
      return directory / name
  raise DataUnavailableError(
      f"{what} not found: expected {' or '.join(names)} in {directory}. Download it from {url} "
      f"and put it there (or pass the folder that holds it).")


def _natural_key(s: str) -> tuple[int, float, str]:
  """Sorts numeric-looking labels by value, before the others, which sort as strings."""
  try:
    v = float(s)
  except ValueError:
    return (1, 0.0, s)
  return (0, v, s) if math.isfinite(v) else (1, 0.0, s)


def _missing_mask(stripped: np.ndarray, missing: Callable[[str], bool]) -> np.ndarray:
  """Evaluates ``missing`` once per distinct value of a string array."""
  if stripped.size == 0:
    return np.zeros(0, dtype=bool)
  uniq, inverse = np.unique(stripped, return_inverse=True)
  return np.array([missing(str(u)) for u in uniq], dtype=bool)[inverse.reshape(-1)]


def parse_floats(values: Sequence[str], missing: Callable[[str], bool], *, file: object,
                  column: str, row_label: Callable[[int], str]) -> np.ndarray:
  """Parses strings to float64 (missing -> NaN); DataError naming file, column and row otherwise."""
  stripped = np.array([v.strip() for v in values], dtype=str)
  is_missing = _missing_mask(stripped, missing)
  try:  # Fast path; any problem falls through to the per-value loop, which names the bad row.
    fast = np.where(is_missing, "nan", stripped).astype(np.float64)
    if np.isfinite(fast[~is_missing]).all():
      return fast
  except ValueError:
    pass
  out = np.empty(len(values), dtype=np.float64)
  for i, v in enumerate(values):
    if is_missing[i]:
      out[i] = np.nan
      continue
    try:
      x = float(v.strip())
    except ValueError:
      x = None
    if x is None or not math.isfinite(x):
      raise DataError(
          f"{file}: {row_label(i)}: column {column!r} must be numeric but holds {v!r}. Fix the "
          f"value, mark it missing, or declare the column categorical.")
    out[i] = x
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class Column:
  """One typed column before assembly: numeric (float64, NaN missing) or categorical (codes, -1)."""

  name: str
  numeric: np.ndarray | None = None
  codes: np.ndarray | None = None
  categories: tuple[str, ...] = ()


def categorical_column(name: str, values: Sequence[str], missing: Callable[[str], bool],
                        categories: Sequence[str] | None = None, *, file: object = None,
                        row_label: Callable[[int], str] = str) -> Column:
  """Encodes string values as codes; with ``categories`` given, an unlisted value is a DataError."""
  stripped = np.array([v.strip() for v in values], dtype=str)
  if stripped.size == 0:
    return Column(name=name, codes=np.zeros(0, np.int32), categories=tuple(categories or ()))
  uniq, inverse = np.unique(stripped, return_inverse=True)
  uniq = [str(u) for u in uniq]
  uniq_missing = [missing(u) for u in uniq]
  if categories is None:
    categories = sorted((u for u, m in zip(uniq, uniq_missing) if not m), key=_natural_key)
  lookup = {c: k for k, c in enumerate(categories)}
  uniq_codes = np.array([-1 if m else lookup.get(u, -2) for u, m in zip(uniq, uniq_missing)],
                        dtype=np.int32)
  codes = uniq_codes[inverse.reshape(-1)]
  bad = np.flatnonzero(codes == -2)
  if bad.size:
    i = int(bad[0])
    raise DataError(
        f"{file}: {row_label(i)}: column {name!r} holds {str(stripped[i])!r}, which is not one of its "
        f"categories {list(categories)}.")
  return Column(name=name, codes=codes, categories=tuple(categories))


def auto_column(name: str, values: Sequence[str], missing: Callable[[str], bool], *, file: object,
                 row_label: Callable[[int], str]) -> Column:
  """Numeric when every present value parses as a number, categorical otherwise.

  A column in which at least 90 % of at least 10 present values are numbers is taken as a numeric
  column with a bad value, and raises a DataError naming the first bad row.
  """
  present = bad = 0
  first_bad = -1
  for i, v in enumerate(values):
    s = v.strip()
    if missing(s):
      continue
    present += 1
    try:
      ok = math.isfinite(float(s))
    except ValueError:
      ok = False
    if not ok:
      bad += 1
      if first_bad < 0:
        first_bad = i
  if present and bad == 0:
    return Column(name=name, numeric=parse_floats(values, missing, file=file, column=name,
                                                    row_label=row_label))
  if present >= 10 and bad <= 0.1 * present:
    raise DataError(
        f"{file}: {row_label(first_bad)}: column {name!r} looks numeric ({present - bad} of "
        f"{present} values are numbers) but holds {values[first_bad]!r}. Fix the value, or list the "
        f"column in categorical= to treat it as categories.")
  return categorical_column(name, values, missing)


def _target(column: Column, task: str | None, *, file: object,
            row_label: Callable[[int], str]) -> tuple[str, np.ndarray, tuple[str, ...]]:
  """Returns (task, y, class_names) for a typed target column."""
  if task is not None and task not in TASKS:
    raise ValueError(f"task must be one of {TASKS} or None, got {task!r}.")
  if column.codes is not None:
    codes = column.codes
    bad = np.flatnonzero(codes < 0)
    if bad.size:
      raise DataError(f"{file}: {row_label(int(bad[0]))}: the target {column.name!r} is missing. "
                      "Drop the row or fill in the target.")
    if task == "regression":
      try:
        values = np.array([float(c) for c in column.categories])[codes]
      except ValueError:
        raise DataError(f"{file}: target {column.name!r} has non-numeric labels "
                        f"{list(column.categories)[:5]} and cannot be a regression target.") from None
      return "regression", values, ()
    names = column.categories
  else:
    values = column.numeric
    bad = np.flatnonzero(np.isnan(values))
    if bad.size:
      raise DataError(f"{file}: {row_label(int(bad[0]))}: the target {column.name!r} is missing. "
                      "Drop the row or fill in the target.")
    uniq = np.unique(values)
    if task == "regression" or (task is None and not (
        np.all(uniq == np.round(uniq)) and len(uniq) <= MAX_AUTO_CLASSES)):
      return "regression", values, ()
    names = tuple(str(int(u)) if u == round(u) else repr(float(u)) for u in uniq)
    codes = np.searchsorted(uniq, values).astype(np.int32)
  n_classes = len(names)
  if n_classes < 2:
    raise DataError(f"{file}: target {column.name!r} has {n_classes} class(es); need at least 2.")
  resolved = "binclass" if n_classes == 2 else "multiclass"
  if task is not None and task != resolved:
    raise DataError(f"{file}: task {task!r} was requested but target {column.name!r} has "
                    f"{n_classes} classes (that is {resolved!r}).")
  return resolved, codes, tuple(names)


def assemble(*, name: str, features: Sequence[Column], target: Column, task: str | None,
              source: tuple[SourceFile, ...], file: object, row_label: Callable[[int], str],
              original_split: Mapping[str, np.ndarray] | None = None) -> TabularDataset:
  n = len(target.numeric if target.numeric is not None else target.codes)
  task, y, class_names = _target(target, task, file=file, row_label=row_label)
  num = [c for c in features if c.numeric is not None]
  cat = [c for c in features if c.codes is not None]
  x_num = np.stack([c.numeric for c in num], axis=1) if num else np.zeros((n, 0))
  x_cat = np.stack([c.codes for c in cat], axis=1) if cat else np.zeros((n, 0), np.int32)
  return TabularDataset(
      name=name, task=task, x_num=x_num, x_cat=x_cat,
      cat_cardinalities=tuple(len(c.categories) for c in cat), y=y,
      feature_names=tuple(c.name for c in features), num_names=tuple(c.name for c in num),
      cat_names=tuple(c.name for c in cat), source=source,
      cat_categories=tuple(c.categories for c in cat), target_name=target.name,
      class_names=class_names, original_split=original_split)
