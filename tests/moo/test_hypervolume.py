"""Exact hypervolume (2-D sweep and HSO slicing) against a brute-force grid volume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cenas_jax.moo.hypervolume import hypervolume, hypervolume_2d, hypervolume_contributions


def _brute_force_hv(y: np.ndarray, ref: np.ndarray) -> float:
  """Sums the grid cells (on all distinct coordinates) that some point dominates."""
  y = y[np.all(y > ref, axis=1)]
  if y.shape[0] == 0:
    return 0.0
  axes = [np.unique(np.concatenate(([ref[k]], y[:, k]))) for k in range(y.shape[1])]
  total = 0.0
  for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
    upper = np.array([axes[k][c + 1] for k, c in enumerate(cell)])
    if np.any(np.all(y >= upper, axis=1)):
      total += float(np.prod([axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell)]))
  return total


@pytest.mark.parametrize("m,n", [(2, 1), (2, 8), (2, 25), (3, 6), (3, 12), (4, 6), (4, 9)])
def test_hypervolume_matches_brute_force(m, n):
  rng = np.random.default_rng(100 * m + n)
  ref = -np.ones(m)
  for trial in range(4):
    if trial % 2:
      y = rng.integers(-2, 3, size=(n, m)).astype(float)  # ties, duplicates, points beyond ref
    else:
      y = rng.normal(size=(n, m))
    expected = _brute_force_hv(y, ref)
    assert hypervolume(y, ref) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    if m == 2:
      assert hypervolume_2d(y, ref) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_hypervolume_invariances():
  rng = np.random.default_rng(1)
  y = rng.random((12, 3))
  ref = np.zeros(3)
  base = hypervolume(y, ref)
  assert hypervolume(y[rng.permutation(12)], ref) == pytest.approx(base)
  dominated = y * 0.5  # every row is dominated by its original
  assert hypervolume(np.vstack([y, dominated]), ref) == pytest.approx(base)
  # Points that only weakly reach the reference point add nothing.
  assert hypervolume(np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), ref) == pytest.approx(1.0)
  assert hypervolume(np.zeros((0, 3)), ref) == 0.0
  assert hypervolume_2d(np.array([[-1.0, 5.0]]), np.zeros(2)) == 0.0


def test_hypervolume_simple_values():
  ref = np.array([0.0, 0.0])
  y = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
  assert hypervolume_2d(y, ref) == pytest.approx(6.0)
  assert hypervolume(np.array([[2.0, 3.0, 4.0]]), np.zeros(3)) == pytest.approx(24.0)


def test_contributions_match_leave_one_out_brute_force():
  rng = np.random.default_rng(7)
  for m in (2, 3):
    y = rng.random((7, m))
    y = np.vstack([y, y[:1]])  # a duplicate contributes nothing (exclusively)
    ref = np.zeros(m)
    contrib = hypervolume_contributions(y, ref)
    total = _brute_force_hv(y, ref)
    for i in range(y.shape[0]):
      expected = total - _brute_force_hv(np.delete(y, i, axis=0), ref)
      assert contrib[i] == pytest.approx(max(expected, 0.0), abs=1e-12)
    assert contrib[0] == 0.0 and contrib[-1] == 0.0


def test_bad_reference_point():
  with pytest.raises(ValueError, match="ref_point"):
    hypervolume(np.ones((2, 3)), np.zeros(2))
  with pytest.raises(ValueError, match="2 objectives"):
    hypervolume_2d(np.ones((2, 3)), np.zeros(3))


def test_minimized_objectives_and_the_direction_trap():
  """Regression: minimization-direction data (costs, ref above them) silently gave 0.0."""
  costs = np.array([[1.0, 3.0], [2.0, 1.0]])
  ref = np.array([4.0, 4.0])
  with pytest.warns(RuntimeWarning, match="minimize=True"):
    assert hypervolume_2d(costs, ref) == 0.0
  with pytest.warns(RuntimeWarning, match="minimize=True"):
    assert hypervolume(costs, ref) == 0.0
  # [1,3] covers 3x1, [2,1] covers 2x3; overlap 2x1: 3 + 6 - 2 = 7.
  assert hypervolume_2d(costs, ref, minimize=True) == pytest.approx(7.0)
  assert hypervolume(costs, ref, minimize=True) == pytest.approx(7.0)
  assert hypervolume(-costs, -ref) == pytest.approx(7.0)
