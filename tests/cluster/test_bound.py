"""The clairvoyant bound: exact against brute force, and the cleanest-hours carbon floor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cenas_jax.cluster import bound
from cenas_jax.moo.hypervolume import hypervolume_2d


@pytest.mark.parametrize("seed", range(6))
def test_min_train_time_equals_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = 13
  a = rng.uniform(1.0, 10.0, n)
  y = np.column_stack([a, -(a + rng.normal(0, 2.0, n))])  # a trade-off with noise
  train_s = rng.uniform(1.0, 5.0, n)
  free = np.zeros(n, bool)
  free[rng.choice(n, 2, replace=False)] = True
  ref = np.array([0.0, -20.0])
  max_hv = hypervolume_2d(y, ref)
  for frac in (0.6, 0.9, 1.0):
    target = frac * max_hv
    best = np.inf
    paid = np.flatnonzero(~free)
    for r in range(len(paid) + 1):
      for sub in itertools.combinations(paid, r):
        chosen = np.concatenate([np.flatnonzero(free), np.asarray(sub, dtype=np.int64)])
        if hypervolume_2d(y[chosen], ref) >= target - 1e-9:
          best = min(best, float(train_s[list(sub)].sum()))
    got = bound.min_train_time(y, train_s, free, ref, target - 1e-9)
    assert got.train_s == pytest.approx(best)
    # The plan attains the bound and reaches the target.
    plan_cost = float(np.where(free, 0.0, train_s)[got.plan].sum())
    assert plan_cost == pytest.approx(best)
    assert hypervolume_2d(y[np.concatenate([got.plan, np.flatnonzero(free)])], ref) >= target - 1e-6


def test_an_unreachable_target_and_a_free_one():
  y = np.array([[1.0, -1.0], [2.0, -2.0]])
  ref = np.array([0.0, -3.0])
  got = bound.min_train_time(y, np.ones(2), np.zeros(2, bool), ref, 1e9)
  assert got.train_s == np.inf and len(got.plan) == 0
  free = bound.min_train_time(y, np.ones(2), np.ones(2, bool), ref, 1.0)
  assert free.train_s == 0.0


def test_carbon_floor_fills_the_cleanest_gpu_hours_first():
  ci = np.array([300.0, 100.0, 200.0])
  # 2 GPUs x 3600 s per hour at 1000 W, PUE 1: a GPU-second costs CI / 3600 g.
  g = bound.carbon_floor_g(9000.0, ci, n_gpus=2, power_w=1000.0, pue=1.0)
  assert g == pytest.approx((7200 * 100 + 1800 * 200) / 3600)
  assert bound.carbon_floor_g(0.0, ci, 2, 1000.0, 1.0) == 0.0
  assert bound.carbon_floor_g(3 * 7200.0, ci, 2, 1000.0, 1.0) == pytest.approx(7200 * 600 / 3600)
  assert bound.carbon_floor_g(3 * 7200 + 1.0, ci, 2, 1000.0, 1.0) == np.inf  # more than the window
  assert bound.carbon_floor_g(np.inf, ci, 2, 1000.0, 1.0) == np.inf
