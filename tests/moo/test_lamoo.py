"""LaMOO partition tree, region selection and proposals; end to end on NB201 x HW-NAS-Bench."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from cenas_jax.moo import lamoo
from cenas_jax.moo import svm
from cenas_jax.moo.hypervolume import hypervolume_2d
from cenas_jax.moo.pareto import dominance_counts

_REF = np.array([0.0, -50.0])


@pytest.fixture(scope="module")
def toy():
  """A finite space of 5^4 = 625 one-hot cells and two conflicting objectives (acc-like, -cost)."""
  ops = np.array(list(itertools.product(range(5), repeat=4)))
  x = np.zeros((ops.shape[0], 20), np.float32)
  for edge in range(4):
    x[np.arange(ops.shape[0]), edge * 5 + ops[:, edge]] = 1.0
  quality = np.array([0.0, 4.0, 7.0, 10.0, 5.0])
  cost = np.array([0.0, 1.0, 4.0, 9.0, 2.0])
  acc = 50.0 + 2.0 * quality[ops].sum(1) + 3.0 * (ops[:, 0] == ops[:, 1])
  energy = 5.0 + cost[ops].sum(1)
  return x, np.stack([acc, -energy], 1)


def _samples(toy, n, seed):
  x, y = toy
  idx = np.random.default_rng(seed).choice(x.shape[0], n, replace=False)
  return idx, x[idx], y[idx]


def test_presets():
  c = lamoo.LaMOOConfig.cenas()
  assert (c.min_samples_to_split, c.max_height, c.max_nodes, c.weak_dominance, c.extra_good) == (
      10, 3, None, True, 0)
  l = lamoo.LaMOOConfig.lamoo()
  assert (l.min_samples_to_split, l.max_height, l.max_nodes, l.weak_dominance, l.extra_good) == (
      15, None, 50, False, 1)
  assert (c.svm_degree, c.svm_gamma, c.svm_c) == (4, "scale", 1.0)
  assert lamoo.LaMOOConfig.preset("lamoo") == l
  with pytest.raises(ValueError, match="preset"):
    lamoo.LaMOOConfig.preset("nope")


@pytest.mark.parametrize("preset", ["cenas", "lamoo"])
def test_split_labels_take_best_half_by_dominance(toy, preset):
  config = lamoo.LaMOOConfig.preset(preset)
  _, _, y = _samples(toy, 41, 0)
  labels = lamoo.split_labels(y, config)
  assert labels.sum() == 41 // 2 + config.extra_good
  counts = dominance_counts(y, weak=config.weak_dominance)
  assert counts[labels].max() <= counts[~labels].min()


@pytest.mark.parametrize("preset", ["cenas", "lamoo"])
def test_tree_respects_split_rules(toy, preset):
  config = lamoo.LaMOOConfig.preset(preset)
  _, xs, ys = _samples(toy, 160, 1)
  tree = lamoo.build_tree(xs, ys, _REF, config)
  assert len(tree.nodes) > 1
  if config.max_height is not None:
    assert tree.height <= config.max_height
  if config.max_nodes is not None:
    assert len(tree.nodes) <= config.max_nodes
  for node in tree.nodes:
    assert node.hv == pytest.approx(hypervolume_2d(ys[node.sample_idx], _REF))
    if node.is_leaf:
      continue
    assert node.n_samples > config.min_samples_to_split
    good, bad = tree.nodes[node.good_child], tree.nodes[node.bad_child]
    assert good.parent == bad.parent == node.node_id and good.depth == node.depth + 1
    # Children partition the parent's samples by label (not by SVM prediction).
    np.testing.assert_array_equal(np.sort(np.concatenate([good.sample_idx, bad.sample_idx])),
                                  np.sort(node.sample_idx))
    labels = lamoo.split_labels(ys[node.sample_idx], config)
    np.testing.assert_array_equal(good.sample_idx, node.sample_idx[labels])
    pred = svm.predict(node.svm, xs[node.sample_idx])
    assert pred.any() and not pred.all()


def test_small_node_is_not_split(toy):
  _, xs, ys = _samples(toy, 10, 2)
  tree = lamoo.build_tree(xs, ys, _REF, lamoo.LaMOOConfig.cenas())
  assert len(tree.nodes) == 1 and tree.leaves == (0,)
  assert lamoo.select_path(tree, 30.0, np.random.default_rng(0)) == (0,)


def test_ucb_and_selection_modes(toy):
  _, xs, ys = _samples(toy, 120, 3)
  tree = lamoo.build_tree(xs, ys, _REF, lamoo.LaMOOConfig.cenas())
  rng = np.random.default_rng(0)
  node = tree.nodes[1]
  expected = node.hv + 2 * 5.0 * math.sqrt(2 * math.log(tree.nodes[0].n_samples) / node.n_samples)
  assert lamoo.node_ucb(tree, 1, 5.0) == pytest.approx(expected)
  assert lamoo.node_ucb(tree, 0, 5.0) == math.inf
  for cp in (0.0, 30.0, 1e5):
    path = lamoo.select_path(tree, cp, rng, "leaf")
    assert path[0] == 0 and tree.nodes[path[-1]].is_leaf
    best = max(lamoo.node_ucb(tree, leaf, cp) for leaf in tree.leaves)
    assert lamoo.node_ucb(tree, path[-1], cp) == pytest.approx(best)
    desc = lamoo.select_path(tree, cp, rng, "path")
    assert tree.nodes[desc[-1]].is_leaf
    for parent, child in zip(desc[:-1], desc[1:]):
      kids = (tree.nodes[parent].good_child, tree.nodes[parent].bad_child)
      assert lamoo.node_ucb(tree, child, cp) == max(lamoo.node_ucb(tree, k, cp) for k in kids)
  # With cp = 0 the leaf of the best HV wins: the all-good leaf.
  path = lamoo.select_path(tree, 0.0, rng, "leaf")
  assert all(tree.nodes[p].good_child == c for p, c in zip(path[:-1], path[1:]))


def _in_region(tree, path, x):
  inside = np.ones(x.shape[0], bool)
  for parent, child in zip(path[:-1], path[1:]):
    node = tree.nodes[parent]
    go_good = svm.predict(node.svm, x)
    inside &= go_good if child == node.good_child else ~go_good
  return inside


@pytest.mark.parametrize("method", ["rejection", "ehvi"])
def test_proposals_are_in_region_distinct_and_unseen(toy, method):
  x, _ = toy
  idx, xs, ys = _samples(toy, 80, 4)
  tree = lamoo.build_tree(xs, ys, _REF, lamoo.LaMOOConfig.cenas())
  rng = np.random.default_rng(0)
  path = lamoo.select_path(tree, 30.0, rng)
  assert len(path) > 1
  exclude = np.zeros(x.shape[0], bool)
  exclude[idx] = True
  prop = lamoo.propose(tree, path, x, exclude, 6, rng, method=method)
  assert prop.shape == (6,) and np.unique(prop).size == 6
  assert not exclude[prop].any()
  assert _in_region(tree, path, x[prop]).all()
  region = lamoo.region_candidates(tree, path, x, exclude, min_count=6)
  assert not region.relaxed
  np.testing.assert_array_equal(region.mask, _in_region(tree, path, x) & ~exclude)


def test_path_relaxation_when_region_is_exhausted(toy):
  x, _ = toy
  _, xs, ys = _samples(toy, 120, 5)
  tree = lamoo.build_tree(xs, ys, _REF, lamoo.LaMOOConfig.cenas())
  path = max((lamoo.path_to(tree, leaf) for leaf in tree.leaves), key=len)
  assert len(path) >= 3
  full = _in_region(tree, path, x)
  parent_region = _in_region(tree, path[:-1], x)
  exclude = full.copy()  # every candidate of the leaf region is already evaluated
  region = lamoo.region_candidates(tree, path, x, exclude, min_count=1)
  assert region.relaxed and region.depth_used == len(path) - 2
  np.testing.assert_array_equal(region.mask, parent_region & ~full)
  prop = lamoo.propose(tree, path, x, exclude, 3, np.random.default_rng(0))
  assert prop.size == 3 and parent_region[prop].all() and not full[prop].any()
  # Nothing left anywhere: an empty proposal, not an endless loop.
  assert lamoo.propose(tree, path, x, np.ones(x.shape[0], bool), 2,
                       np.random.default_rng(0)).size == 0


def test_lamoo_steps_are_deterministic_and_never_repeat(toy):
  x, y = toy

  def run(seed, method):
    rng = np.random.default_rng(seed)
    state = lamoo.LaMOOState.empty(2)
    proposals = []
    for _ in range(12):
      idx = lamoo.lamoo_step(state, x, _REF, lamoo.LaMOOConfig.cenas(), 4, rng, cp=5.0,
                             method=method)
      proposals.append(idx)
      state = state.add(idx, y[idx])
    return np.concatenate(proposals), state

  a, state = run(0, "rejection")
  b, _ = run(0, "rejection")
  c, _ = run(1, "rejection")
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert np.unique(a).size == a.size == 48
  np.testing.assert_array_equal(state.sample_idx, a)
  e1, _ = run(0, "ehvi")
  e2, _ = run(0, "ehvi")
  np.testing.assert_array_equal(e1, e2)
  assert np.unique(e1).size == 48
  # The state round-trips through JSON.
  back = lamoo.LaMOOState.from_json_dict(json.loads(json.dumps(state.to_json_dict())))
  np.testing.assert_array_equal(back.sample_idx, state.sample_idx)
  np.testing.assert_array_equal(back.y, state.y)


def test_bad_arguments(toy):
  x, _ = toy
  _, xs, ys = _samples(toy, 30, 6)
  tree = lamoo.build_tree(xs, ys, _REF, lamoo.LaMOOConfig.cenas())
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="ref_point"):
    lamoo.build_tree(xs, ys, np.zeros(3), lamoo.LaMOOConfig.cenas())
  with pytest.raises(ValueError, match="X_samples"):
    lamoo.build_tree(xs[:5], ys, _REF, lamoo.LaMOOConfig.cenas())
  with pytest.raises(ValueError, match="root"):
    lamoo.propose(tree, (1,), x, None, 1, rng)
  with pytest.raises(ValueError, match="X_candidates"):
    lamoo.propose(tree, (0,), x[:, :5], None, 1, rng)
  with pytest.raises(ValueError, match="exclude_mask"):
    lamoo.propose(tree, (0,), x, np.zeros(3, bool), 1, rng)
  with pytest.raises(ValueError, match="mode"):
    lamoo.select_path(tree, 1.0, rng, "best")
  with pytest.raises(ValueError, match="min_samples_to_split"):
    lamoo.LaMOOConfig(min_samples_to_split=0)
  with pytest.raises(ValueError, match="malformed"):
    lamoo.LaMOOState.from_json_dict({"y": []})


@pytest.fixture(scope="module")
def hw_nas_bench(shared_data):
  """NB201 cells with HW-NAS-Bench energy: one-hot (12,554 x 30), (acc %, -edgegpu_energy mJ)."""
  from cenas_jax.data.nasbench import load_nb201_table
  from cenas_jax.spaces import nb201

  table = load_nb201_table(shared_data)
  keep = np.flatnonzero(table.has_hw)
  x = nb201.one_hot(table.ops[keep]).astype(np.float32)
  y = np.stack([table.test_acc_cifar10[keep], -table.edgegpu_energy_mj[keep]], 1)
  return x, y


def test_true_front_hypervolume(hw_nas_bench):
  _, y = hw_nas_bench
  assert y.shape == (12554, 2)
  assert hypervolume_2d(y, _REF) == pytest.approx(4152.7, abs=0.05)


def test_end_to_end_on_hw_nas_bench(hw_nas_bench):
  x, y = hw_nas_bench
  max_hv = hypervolume_2d(y, _REF)
  rng = np.random.default_rng(0)
  init = rng.choice(x.shape[0], 10, replace=False)
  state = lamoo.LaMOOState.empty(2).add(init, y[init])
  for _ in range(60):
    idx = lamoo.lamoo_step(state, x, _REF, lamoo.LaMOOConfig.cenas(), 1, rng, cp=30.0)
    state = state.add(idx, y[idx])
  assert np.unique(state.sample_idx).size == 70
  ratio = hypervolume_2d(state.y, _REF) / max_hv
  random_idx = np.random.default_rng(0).choice(x.shape[0], 70, replace=False)
  random_ratio = hypervolume_2d(y[random_idx], _REF) / max_hv
  print(f"LaMOO HV after 10 + 60 samples: {ratio:.4f} of max; random 70 samples: {random_ratio:.4f}")
  assert ratio >= 0.90
