"""Front-finding by a ladder of energy budgets, and the retrained-front referee's pieces."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.controller import arch_policy
from cenas_jax.spaces.tabular import make_space
from cenas_jax.tabular_nas import experiment, search
from cenas_jax.tabular_nas.data import Split


class _FakeNet:
  """A supernet stand-in: quality grows with width and depth, scores are exact (no batch noise)."""

  def __init__(self, space, k=4):
    self.space, self.k, self.trained = space, k, []
    self.split = Split("toy", "binclass", np.zeros((8, 2), np.float32), np.zeros(8, np.int32),
                       np.arange(4), np.arange(4, 6), np.arange(6, 8), 2, 0.0, 1.0, {})

  def train(self, arch):
    self.trained.append(np.asarray(arch).copy())
    return 0.0

  def score(self, archs, rows=None):
    assert archs.shape[0] == self.k
    return 0.5 + 0.04 * archs[:, 0] + 0.02 * archs[:, 1]


def _energy(archs):
  archs = np.atleast_2d(archs)
  return 1.0 + archs[:, 0] * 4.0 + archs[:, 1]


def _space():
  return make_space("mlp", 3, 2, depths=(1, 2, 3), widths=(4, 8, 16, 32), dropouts=(0.0, 0.1))


def test_ladder_splits_steps_tightest_budget_first_and_carries_state():
  calls = []

  def fake_search(net, obj, config, steps, seed, *, method, progress, state):
    calls.append((obj.e0_j, steps, state))
    recs = [{"method": method, "step": t, "arch": [0, 0, 0, 0, 0], "quality": 0.5,
             "energy_j": obj.e0_j} for t in range(steps)]
    return np.array([len(calls)]), recs, {"rung": len(calls)}

  objs = [search.Objective("tabnas", _energy, e0) for e0 in (9.0, 3.0, 6.0)]
  archs, recs = search.run_ladder(fake_search, None, objs, arch_policy.PolicyConfig(), 10, 0,
                                  method="m")
  assert [c[0] for c in calls] == [3.0, 6.0, 9.0]
  assert [c[1] for c in calls] == [3, 4, 3] and sum(c[1] for c in calls) == 10
  assert [c[2] for c in calls] == [None, {"rung": 1}, {"rung": 2}]
  # Winners come back in the order of the objectives given; steps are numbered across the ladder.
  assert [int(a[0]) for a in archs] == [3, 1, 2]
  assert [r["step"] for r in recs] == list(range(10))


@pytest.mark.parametrize("fn", [search.run_controller, search.run_evolution])
def test_ladder_of_a_real_method_keeps_every_rung_within_its_budget(fn):
  space = _space()
  net = _FakeNet(space)
  e_all = _energy(np.array([space.from_flat_index(i) for i in range(int(np.prod(space.n_choices)))]))
  objs = [search.Objective("tabnas", _energy, float(np.quantile(e_all, q))) for q in (0.3, 0.7)]
  archs, recs = search.run_ladder(fn, net, objs, arch_policy.PolicyConfig(lr=0.2), 12, 0,
                                  method="ladder")
  assert len(recs) == 12 * net.k and len(net.trained) == 12
  assert {r["method"] for r in recs} == {"ladder"}
  for a, o in zip(archs, objs):
    assert _energy(a)[0] <= o.e0_j
  if fn is search.run_controller:  # rejection sampling: every candidate of a rung is feasible
    first = [r for r in recs if r["step"] < 6]
    assert max(r["energy_j"] for r in first) <= objs[0].e0_j


def test_evolution_restarts_from_a_population_refitted_to_the_new_budget():
  space = _space()
  net = _FakeNet(space)
  loose = search.Objective("tabnas", _energy, 100.0)
  tight = search.Objective("tabnas", _energy, 4.0)
  config = arch_policy.PolicyConfig()
  _, _, state = search.run_evolution(net, loose, config, 6, 0, population=8)
  assert len(state["members"]) == 8
  _, recs, _ = search.run_evolution(net, tight, config, 4, 1, population=8, state=state)
  # A full population means no uniform refill: every child is a one-decision mutant of a member.
  members = {tuple(m[0]) for m in state["members"]}
  for r in recs[:net.k]:
    assert min(np.sum(np.array(r["arch"]) != np.array(m)) for m in members) <= 1


def test_score_on_val_chunks_any_number_of_architectures():
  space = _space()
  net = _FakeNet(space, k=3)
  archs = space.sample(np.random.default_rng(0), 7)
  np.testing.assert_allclose(search.score_on_val(net, archs),
                             0.5 + 0.04 * archs[:, 0] + 0.02 * archs[:, 1])
  assert search.score_on_val(net, archs[:0]).shape == (0,)


def test_search_front_keeps_the_non_dominated_records_once_per_architecture():
  space = _space()
  recs = [{"arch": [0, 0, 0, 0, 0], "quality": 0.70, "energy_j": 1.0},
          {"arch": [0, 0, 0, 1, 1], "quality": 0.60, "energy_j": 1.0},  # same network, dropped
          {"arch": [1, 1, 0, 0, 0], "quality": 0.65, "energy_j": 2.0},  # dominated
          {"arch": [2, 3, 0, 0, 0], "quality": 0.90, "energy_j": 9.0}]
  front = experiment._search_front(space, recs)
  assert [r["quality"] for r in front] == [0.70, 0.90]


def test_hypervolume_reference_is_the_constant_prediction():
  y = np.array([0, 0, 0, 1, 1, 0, 1, 1], np.int32)
  split = Split("t", "binclass", np.zeros((8, 1), np.float32), y, np.arange(5), np.arange(5, 6),
                np.arange(6, 8), 2, 0.0, 1.0, {})
  assert experiment._constant_quality(split) == 0.0  # training majority 0, test rows are 1s
  yr = np.array([1, -1, 1, -1, 3, 0, 2, -2], np.float32)
  split = Split("t", "regression", np.zeros((8, 1), np.float32), yr, np.arange(4), np.arange(4, 5),
                np.arange(6, 8), 1, 0.0, 1.0, {})
  assert experiment._constant_quality(split) == pytest.approx(1 - 2.0)
  assert experiment._test_quality(split, {"rmse": 0.5}) == pytest.approx(0.5)
