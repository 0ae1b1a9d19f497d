"""Pareto dominance, dominance counts and non-dominated sorting.

Convention for the whole ``cenas_jax.moo`` package: every objective is **maximized** (callers negate
costs such as energy or latency), and a set of objective vectors is an ``(n, m)`` float array, one
row per point.

Dominance: ``a`` dominates ``b`` (strict Pareto dominance) iff ``a >= b`` in every objective and
``a > b`` in at least one. ``a`` weakly dominates ``b`` iff ``a >= b`` in every objective (so equal
points weakly dominate each other).
"""

from __future__ import annotations

import numpy as np

# Rows per block in the O(n^2) comparisons, so that large sets (e.g. 15,625 architectures) stay in a
# few tens of MiB of memory.
_BLOCK_ROWS = 1024


def as_objectives(y: np.ndarray, name: str = "Y") -> np.ndarray:
  """Validates and returns objectives as a finite ``(n, m)`` float64 array.

  Args:
    y: objective vectors, shape ``(n, m)`` (maximized).
    name: name of the argument, used in error messages.

  Returns:
    ``y`` as a float64 array.

  Raises:
    ValueError: when ``y`` is not 2-D, has no objective column, or holds NaN/inf.
  """
  arr = np.asarray(y, dtype=np.float64)
  if arr.ndim != 2 or arr.shape[1] < 1:
    raise ValueError(f"{name} must be an (n, m) array of objective vectors with m >= 1; got shape "
                     f"{arr.shape}.")
  if not np.all(np.isfinite(arr)):
    bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
    raise ValueError(f"{name} holds a non-finite value (first at row {bad}); objectives must be "
                     "finite numbers.")
  return arr


def dominates(a: np.ndarray, b: np.ndarray, *, weak: bool = False) -> bool:
  """Whether objective vector ``a`` (strictly, or weakly) dominates ``b`` (maximization)."""
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"dominates() needs two 1-D vectors of the same length; got {a.shape} and "
                     f"{b.shape}.")
  geq = bool(np.all(a >= b))
  return geq if weak else geq and bool(np.any(a > b))


def _dominated_by_block(y: np.ndarray, rows: np.ndarray, *, weak: bool) -> np.ndarray:
  """``out[a, j]``: does point ``j`` (weakly) dominate point ``rows[a]``? Diagonal left as computed."""
  blk = y[rows]
  geq = np.ones((rows.shape[0], y.shape[0]), dtype=bool)
  gt = np.zeros_like(geq)
  for k in range(y.shape[1]):
    col = y[None, :, k]
    mine = blk[:, k, None]
    geq &= col >= mine
    if not weak:
      gt |= col > mine
  return geq if weak else geq & gt


def dominance_matrix(y: np.ndarray, *, weak: bool = False) -> np.ndarray:
  """Pairwise dominance: ``D[i, j]`` is True iff point ``i`` dominates point ``j``.

  The diagonal is False (a point is not counted as dominating itself, even weakly).

  Args:
    y: objectives, shape ``(n, m)``, maximized.
    weak: use weak dominance (``>=`` everywhere) instead of strict Pareto dominance.

  Returns:
    Bool array of shape ``(n, n)``.
  """
  y = as_objectives(y)
  n = y.shape[0]
  out = np.empty((n, n), dtype=bool)
  for start in range(0, n, _BLOCK_ROWS):
    rows = np.arange(start, min(n, start + _BLOCK_ROWS))
    out[:, rows] = _dominated_by_block(y, rows, weak=weak).T
  np.fill_diagonal(out, False)
  return out


def dominance_counts(y: np.ndarray, *, weak: bool = False) -> np.ndarray:
  """Dominance number of each point: how many *other* points dominate it.

  Args:
    y: objectives, shape ``(n, m)``, maximized.
    weak: count points that weakly dominate (CE-NAS's ``dominance_number``; duplicates count each
      other) instead of strictly dominating ones (LaMOO / pygmo's domination count).

  Returns:
    Int64 array of shape ``(n,)``; 0 for points on the (weakly) non-dominated front.
  """
  y = as_objectives(y)
  n = y.shape[0]
  counts = np.zeros(n, dtype=np.int64)
  for start in range(0, n, _BLOCK_ROWS):
    rows = np.arange(start, min(n, start + _BLOCK_ROWS))
    dom = _dominated_by_block(y, rows, weak=weak)
    dom[np.arange(rows.shape[0]), rows] = False
    counts[rows] = dom.sum(axis=1)
  return counts


def non_dominated_mask(y: np.ndarray) -> np.ndarray:
  """Bool mask of the points that no other point strictly dominates (duplicates are all kept).

  Scans the points in descending lexicographic order against the front found so far (a dominator
  always comes first in that order), so the cost is O(n log n + n * front size).
  """
  y = as_objectives(y)
  n = y.shape[0]
  order = np.lexsort(tuple(-y[:, k] for k in reversed(range(y.shape[1]))))
  mask = np.zeros(n, dtype=bool)
  front = np.empty((0, y.shape[1]))
  chunk: list[int] = []
  for i in order:
    p = y[i]
    if front.shape[0] and np.any(np.all(front >= p, axis=1) & np.any(front > p, axis=1)):
      continue
    if chunk and np.any(np.all(y[chunk] >= p, axis=1) & np.any(y[chunk] > p, axis=1)):
      continue
    mask[i] = True
    chunk.append(int(i))
    if len(chunk) >= 64:
      front = np.vstack([front, y[chunk]])
      chunk = []
  return mask


def non_dominated_sort(y: np.ndarray) -> np.ndarray:
  """Non-dominated sorting: the front index (rank) of every point.

  Rank 0 is the non-dominated front; rank ``r`` holds the points that are non-dominated once ranks
  ``< r`` are removed (Deb et al.'s fast non-dominated sort, vectorized).

  Args:
    y: objectives, shape ``(n, m)``, maximized.

  Returns:
    Int64 array of shape ``(n,)`` with ranks ``0, 1, ...``.
  """
  dom = dominance_matrix(y, weak=False)
  n = dom.shape[0]
  remaining_counts = dom.sum(axis=0).astype(np.int64)
  ranks = np.full(n, -1, dtype=np.int64)
  current = np.flatnonzero(remaining_counts == 0)
  rank = 0
  while current.size:
    ranks[current] = rank
    remaining_counts -= dom[current].sum(axis=0)
    remaining_counts[ranks >= 0] = -1
    current = np.flatnonzero(remaining_counts == 0)
    rank += 1
  return ranks
