"""Preprocessing fitted on training rows only: a pair of pure functions and their state.

``fit_preprocessor`` / ``apply_preprocessor``: numeric imputation with the training mean (plus an
optional missing indicator), standard or quantile normalization, and categorical codes with reserved
codes for "missing" and for categories never seen in training.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Literal

import numpy as np

from cenas_jax.data.tabular.dataset import TabularDataset
from cenas_jax.errors import DataError

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
