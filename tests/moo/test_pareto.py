"""Dominance counts, non-dominated mask and sorting against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.moo import pareto


def _brute_dominates(a, b, weak):
  if weak:
    return all(x >= y for x, y in zip(a, b))
  return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _random_sets():
  rng = np.random.default_rng(0)
  for m in (2, 3, 4):
    for n in (1, 5, 30):
      # Small integer grid -> many ties and duplicates.
      yield rng.integers(0, 4, size=(n, m)).astype(float)
      yield rng.normal(size=(n, m))


@pytest.mark.parametrize("weak", [False, True])
def test_dominance_counts_match_brute_force(weak):
  for y in _random_sets():
    n = y.shape[0]
    expected = [sum(_brute_dominates(y[j], y[i], weak) for j in range(n) if j != i)
                for i in range(n)]
    np.testing.assert_array_equal(pareto.dominance_counts(y, weak=weak), expected)
    dom = pareto.dominance_matrix(y, weak=weak)
    np.testing.assert_array_equal(dom.sum(axis=0), expected)
    assert not dom.diagonal().any()


def test_non_dominated_mask_matches_brute_force_with_duplicates():
  for y in _random_sets():
    n = y.shape[0]
    expected = [not any(_brute_dominates(y[j], y[i], False) for j in range(n) if j != i)
                for i in range(n)]
    np.testing.assert_array_equal(pareto.non_dominated_mask(y), expected)
  dup = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
  np.testing.assert_array_equal(pareto.non_dominated_mask(dup), [True, True, False])


def test_non_dominated_sort_matches_peeling():
  for y in _random_sets():
    ranks = pareto.non_dominated_sort(y)
    remaining = np.arange(y.shape[0])
    rank = 0
    while remaining.size:
      front = remaining[pareto.non_dominated_mask(y[remaining])]
      np.testing.assert_array_equal(np.sort(np.flatnonzero(ranks == rank)), np.sort(front))
      remaining = np.setdiff1d(remaining, front)
      rank += 1
    assert ranks.max() == rank - 1


def test_dominates_and_validation():
  assert pareto.dominates(np.array([2.0, 1.0]), np.array([1.0, 1.0]))
  assert not pareto.dominates(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
  assert pareto.dominates(np.array([1.0, 1.0]), np.array([1.0, 1.0]), weak=True)
  with pytest.raises(ValueError, match="non-finite"):
    pareto.dominance_counts(np.array([[1.0, np.nan]]))
  with pytest.raises(ValueError, match=r"\(n, m\)"):
    pareto.non_dominated_mask(np.array([1.0, 2.0]))
