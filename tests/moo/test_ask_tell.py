"""LaMOOSearch, the ask-and-tell form of LaMOO (small sets: no SVM is fitted below 16 samples)."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.moo import LaMOOSearch, hypervolume


def test_finite_set_is_asked_once_each_and_directions_are_kept():
  x = np.arange(24, dtype=np.float64).reshape(12, 2)
  search = LaMOOSearch(candidates=x, ref_point=[-1.0, 100.0], maximize=[True, False], seed=1)
  seen = []
  while len(seen) < 12:
    xs = search.ask(5)
    assert len(xs) == min(5, 12 - len(seen))
    seen.extend(map(tuple, xs))
    search.tell(xs, [(a, a + b) for a, b in xs])  # maximize a, minimize a + b
  assert len(set(seen)) == 12 and len(search.ask(3)) == 0
  # Maximize a and minimize a + b = 4k + 1 for row k: every row trades one for the other.
  assert search.pareto_mask.all()
  y = search.y
  assert search.hypervolume() == pytest.approx(hypervolume(y * [1, -1], [-1.0, -100.0]))
  assert search.hypervolume() > 0
  search.tell([[0.5, 0.5]], [(0.0, 0.0)])
  with pytest.raises(ValueError, match="not one of the candidates"):
    search.ask(1)


def test_sampler_proposes_fresh_points():
  search = LaMOOSearch(sampler=lambda rng, n: rng.uniform(size=(n, 2)), ref_point=[0.0, 0.0],
                       pool_size=50, seed=0)
  xs = search.ask(4)
  search.tell(xs, xs)
  more = search.ask(4)
  assert more.shape == (4, 2) and not {tuple(r) for r in more} & {tuple(r) for r in xs}
  with pytest.raises(ValueError, match="exactly one of"):
    LaMOOSearch(ref_point=[0.0])
