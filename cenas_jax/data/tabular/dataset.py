"""The tabular dataset container: numeric and categorical features, labels, provenance.

Missing values are kept as such: ``NaN`` in ``x_num`` and code ``-1`` in ``x_cat``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from cenas_jax.errors import CenasError

TASKS = ("binclass", "multiclass", "regression")
Task = Literal["binclass", "multiclass", "regression"]


class MissingDependencyError(CenasError, ImportError):
  """An optional package needed to read a file (e.g. a parquet engine) is not installed."""


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
