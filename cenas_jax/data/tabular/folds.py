"""TabZilla-style folds (McElfresh et al., 2023): deterministic k-fold train/validation/test rows.

Fold ``i`` is the test set, fold ``(i + 1) % n_folds`` the validation set, the rest the training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

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
