"""Exact hypervolume (maximization) w.r.t. a reference point.

The hypervolume of a set ``Y`` is the Lebesgue measure of the union of the boxes ``[ref, y]`` over
the points ``y`` that **strictly** dominate ``ref`` (``y > ref`` in every objective); the other
points contribute nothing and are dropped, as BoTorch's ``Hypervolume`` does. Units are the product
of the objectives' units (e.g. % x mJ for accuracy vs energy).

- ``hypervolume_2d``: sort-and-sweep, O(n log n), any number of points.
- ``hypervolume``: exact for any number of objectives by HSO-style slicing along the last objective
  down to the 2-D sweep: O(n^(m-1) log n); meant for the small sets of LaMOO nodes (hundreds of
  points for m = 3, tens for m >= 4).

Costs to minimize (energy, latency, error) are passed with ``minimize=True`` (the reference point
is then a worst point, above every objective), or negated together with the reference point. Data
that looks like the other direction (every point strictly worse than the reference point in every
objective, so the hypervolume is 0) raises a warning instead of passing silently.
"""

from __future__ import annotations

import warnings

import numpy as np

from cenas_jax.moo.pareto import as_objectives


def _as_ref(ref_point: np.ndarray, m: int) -> np.ndarray:
  ref = np.asarray(ref_point, dtype=np.float64)
  if ref.shape != (m,) or not np.all(np.isfinite(ref)):
    raise ValueError(f"ref_point must be a finite vector of length {m} (one entry per objective); "
                     f"got {np.asarray(ref_point).tolist()}.")
  return ref


def _strictly_dominating(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
  return y[np.all(y > ref, axis=1)]


def _oriented(y, ref_point, minimize: bool) -> tuple[np.ndarray, np.ndarray]:
  """(y, ref) as maximized objectives; warns when the data looks like the other direction."""
  y = as_objectives(y)
  ref = _as_ref(ref_point, y.shape[1])
  if minimize:
    y, ref = -y, -ref
  if y.shape[0] and np.all(y < ref):
    kind = "minimized" if not minimize else "maximized"
    warnings.warn(
        f"hypervolume: every point is worse than ref_point in every objective, so the hypervolume is "
        f"0. If the objectives are {kind} (e.g. energy, latency), pass minimize={not minimize} with "
        "a reference point on the worse side of every point.", RuntimeWarning, stacklevel=3)
  return y, ref


def _hv2d_sorted_free(y: np.ndarray, ref: np.ndarray) -> float:
  """2-D sweep on points that already strictly dominate ``ref``."""
  if y.shape[0] == 0:
    return 0.0
  # Descending by objective 0 (ties: descending objective 1); each new record in objective 1 adds
  # the rectangle [ref0, y0] x [previous record, y1].
  order = np.lexsort((-y[:, 1], -y[:, 0]))
  y0 = y[order, 0]
  best1 = np.maximum.accumulate(y[order, 1])
  prev = np.concatenate(([ref[1]], best1[:-1]))
  return float(np.sum((y0 - ref[0]) * (best1 - prev)))


def hypervolume_2d(y: np.ndarray, ref_point: np.ndarray, *, minimize: bool = False) -> float:
  """Exact 2-D hypervolume by a sorted sweep.

  Args:
    y: objectives, shape ``(n, 2)``, maximized (or minimized with ``minimize=True``).
    ref_point: reference point, shape ``(2,)``; only points strictly better than it in both
      objectives count.
    minimize: both objectives are costs to minimize; ``ref_point`` is then above every point.

  Returns:
    The hypervolume (0.0 when no point strictly dominates ``ref_point``; a ``RuntimeWarning`` when
    every point is worse than it in both objectives, the sign of data of the other direction).
  """
  if as_objectives(y).shape[1] != 2:
    raise ValueError(f"hypervolume_2d needs 2 objectives; got {as_objectives(y).shape[1]}. Use hypervolume().")
  y, ref = _oriented(y, ref_point, minimize)
  return _hv2d_sorted_free(_strictly_dominating(y, ref), ref)


def _hv_recursive(y: np.ndarray, ref: np.ndarray) -> float:
  """HSO slicing on points that strictly dominate ``ref``; ``y`` has ``m >= 1`` columns."""
  n, m = y.shape
  if n == 0:
    return 0.0
  if m == 1:
    return float(np.max(y[:, 0]) - ref[0])
  if m == 2:
    return _hv2d_sorted_free(y, ref)
  # Slice along the last objective: between consecutive distinct levels, the covered (m-1)-D cross
  # section is the hypervolume of the points whose last objective reaches the upper level.
  last = y[:, -1]
  order = np.argsort(-last, kind="stable")
  y = y[order]
  last = last[order]
  levels = np.unique(last)[::-1]  # descending
  total = 0.0
  for idx, upper in enumerate(levels):
    lower = levels[idx + 1] if idx + 1 < len(levels) else ref[-1]
    active = y[last >= upper, :-1]
    total += _hv_recursive(_prune(active), ref[:-1]) * (upper - lower)
  return total


def _prune(y: np.ndarray) -> np.ndarray:
  """Drops duplicates and points weakly dominated by another one (keeps the HV unchanged)."""
  if y.shape[0] <= 1:
    return y
  y = np.unique(y, axis=0)
  geq = np.all(y[:, None, :] >= y[None, :, :], axis=-1)
  np.fill_diagonal(geq, False)
  return y[~np.any(geq, axis=0)]


def hypervolume(y: np.ndarray, ref_point: np.ndarray, *, minimize: bool = False) -> float:
  """Exact hypervolume for any number of objectives.

  Uses the 2-D sweep for ``m = 2`` and HSO slicing along the last objective for ``m >= 3``
  (cost grows as ``n^(m-1)``: keep sets small for ``m >= 4``).

  Args:
    y: objectives, shape ``(n, m)``, maximized (or minimized with ``minimize=True``).
    ref_point: reference point, shape ``(m,)``; only points strictly dominating it count.
    minimize: every objective is a cost to minimize; ``ref_point`` is then above every point.

  Returns:
    The hypervolume (0.0 when no point strictly dominates ``ref_point``; a ``RuntimeWarning`` when
    every point is worse than it in every objective, the sign of data of the other direction).
  """
  y, ref = _oriented(y, ref_point, minimize)
  y = _strictly_dominating(y, ref)
  if y.shape[1] >= 3:
    y = _prune(y)
  return _hv_recursive(y, ref)


def hypervolume_contributions(y: np.ndarray, ref_point: np.ndarray) -> np.ndarray:
  """Exclusive contribution of each point: ``HV(Y) - HV(Y without that point)``.

  Dominated points, duplicated points and points not strictly dominating ``ref_point`` get 0.

  Args:
    y: objectives, shape ``(n, m)``, maximized.
    ref_point: reference point, shape ``(m,)``.

  Returns:
    Float64 array of shape ``(n,)``.
  """
  y = as_objectives(y)
  total = hypervolume(y, ref_point)
  keep = np.ones(y.shape[0], dtype=bool)
  out = np.empty(y.shape[0], dtype=np.float64)
  for i in range(y.shape[0]):
    keep[i] = False
    out[i] = total - hypervolume(y[keep], ref_point)
    keep[i] = True
  return np.maximum(out, 0.0)
