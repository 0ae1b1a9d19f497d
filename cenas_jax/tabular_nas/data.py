"""Datasets for the tabular search: loading by name, checks, TabZilla folds, model-ready arrays.

Every network reads numeric features (standardized with training statistics, missing values imputed
with the training mean) and one-hot categorical codes (with the preprocessor's reserved "missing"
and "unseen" codes), concatenated in that order; ``Split.cat_cardinalities`` gives the width of
each categorical column's one-hot block, so the FT-Transformer embeds each categorical column as
one token (its one-hot block times an embedding table, the table lookup). Regression targets are standardized with training statistics
(RMSE is reported in the target's own units).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cenas_jax.data import tabular
from cenas_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """Model-ready arrays of one TabZilla split.

  Attributes:
    name: dataset name.
    task: ``binclass``, ``multiclass`` or ``regression``.
    x: float32 (n, d_in) features of every row.
    y: int32 labels or float32 standardized targets of every row.
    train, val, test: row indices.
    d_out: classes (classification) or 1.
    y_mean, y_std: the regression target's training mean and std (0, 1 for classification).
    data_hashes: ``{file: sha256}`` of the files read.
    cat_cardinalities: one-hot width of each categorical column (the last columns of ``x``).
  """

  name: str
  task: str
  x: np.ndarray
  y: np.ndarray
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray
  d_out: int
  y_mean: float
  y_std: float
  data_hashes: dict
  cat_cardinalities: tuple[int, ...] = ()

  @property
  def d_in(self) -> int:
    return int(self.x.shape[1])


def load_dataset(spec: str, target: str = "", task: str = "auto") -> tabular.TabularDataset:
  """``adult``, ``german_credit``, ``california_housing``, ``csv:PATH`` (needs ``target``) or
  ``openml:ID``; ``task`` (``auto`` infers it) applies to CSV files.

  Raises:
    ConfigError: unknown dataset, missing ``--target``, or a target that does not fit the task.
  """
  if spec == "adult":
    ds = tabular.load_adult()
  elif spec == "german_credit":
    ds = tabular.load_german_credit()
  elif spec == "california_housing":
    ds = tabular.load_california_housing()
  elif spec.startswith("csv:"):
    if not target:
      raise ConfigError("target", "a CSV dataset needs --target=<column name>.")
    try:
      ds = tabular.load_csv_dataset(Path(spec[4:]), target=target,
                                    task=None if task == "auto" else task)
    except DataError as e:
      if "target" in str(e).lower() and target in str(e):
        raise ConfigError("target", str(e)) from None
      raise
  elif spec.startswith("openml:") and spec[7:].isdigit():
    ds = tabular.load_openml(int(spec[7:]), target=target or None)
  else:
    raise ConfigError("dataset", f"unknown dataset {spec!r}; use adult, german_credit, "
                      "california_housing, csv:PATH (with --target) or openml:ID.")
  check_dataset(ds)
  return ds


def check_dataset(ds: tabular.TabularDataset) -> None:
  """Refuses data a search cannot use, naming the column.

  Raises:
    ConfigError: a one-class target, or a column with no present value.
  """
  if ds.task != "regression" and len(np.unique(ds.y)) < 2:
    raise ConfigError("target", f"column {ds.target_name!r} of {ds.name!r} has a single class; "
                      "a classifier needs at least two.")
  empty = [n for j, n in enumerate(ds.num_names) if np.isnan(ds.x_num[:, j]).all()]
  empty += [n for j, n in enumerate(ds.cat_names) if (ds.x_cat[:, j] < 0).all()]
  if empty:
    raise ConfigError("dataset", f"column {empty[0]!r} of {ds.name!r} holds only missing values; "
                      "drop it from the file.")


def prepare(ds: tabular.TabularDataset, fold: int = 0, n_folds: int = 10,
            fold_seed: int = 0) -> Split:
  """Split ``fold`` of the TabZilla folds, preprocessed on its training rows only."""
  stratify = ds.task != "regression"
  train, val, test = tabular.tabzilla_folds(ds.y, n_folds=n_folds, seed=fold_seed,
                                            stratify=stratify)[fold]
  prep = tabular.fit_preprocessor(ds, train, numeric="standard")
  arrays = tabular.apply_preprocessor(prep, ds)
  parts = [arrays.x_num]
  for j, card in enumerate(arrays.cat_cardinalities):
    parts.append(np.eye(card, dtype=np.float32)[arrays.x_cat[:, j]])
  x = np.concatenate(parts, axis=1).astype(np.float32)
  if ds.task == "regression":
    y_mean, y_std = float(ds.y[train].mean()), float(ds.y[train].std() or 1.0)
    y = ((ds.y - y_mean) / y_std).astype(np.float32)
    d_out = 1
  else:
    y_mean, y_std, y, d_out = 0.0, 1.0, ds.y.astype(np.int32), ds.n_classes
  return Split(name=ds.name, task=ds.task, x=x, y=y, train=train, val=val, test=test, d_out=d_out,
               y_mean=y_mean, y_std=y_std,
               data_hashes={s.location: s.sha256 for s in ds.source},
               cat_cardinalities=tuple(int(c) for c in arrays.cat_cardinalities))
