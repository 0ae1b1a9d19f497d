"""Composed NB201 kernels equal a whole-network extraction; helpers, cache, edge kernels."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

from cenas_jax.energy import model as em
from cenas_jax.energy import nb201_compose as nc
from cenas_jax.energy import nb201_kernels as nk
from cenas_jax.errors import DataError

# Cells chosen to exercise the fusion cases that cross op and cell boundaries: conv-heavy,
# pools (reduce-window reducers), skip-only (the whole stage elementwise), a cell whose output is
# zeros (all edges dead), an empty node feeding convs, and dead edges.
SAMPLE_CELLS = [
    (3, 2, 4, 1, 3, 3),
    (4, 4, 4, 4, 4, 4),
    (1, 0, 1, 0, 0, 1),
    (3, 3, 3, 0, 0, 0),
    (0, 0, 2, 1, 0, 3),
    (2, 1, 0, 4, 3, 0),
]


def _full_network_kernels(ops):
  import jax
  import jax.numpy as jnp

  from cenas_jax.energy import extract_kernels
  from cenas_jax.spaces import nb201_net

  net = nb201_net.make_nb201_net(ops)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  return extract_kernels(lambda v, x: net.apply(v, x, train=False), variables, x, mode="gpu")


@pytest.mark.parametrize("ops", SAMPLE_CELLS)
def test_composed_kernels_equal_full_network_extraction(ops):
  full = _full_network_kernels(ops)
  composed = nk.network_kernels(ops)
  assert collections.Counter(k.signature for k in composed) == collections.Counter(
      k.signature for k in full)
  assert [k.kernel_class for k in composed] == [k.kernel_class for k in full]
  np.testing.assert_array_equal(nk.network_features(ops, "jetson-tx2"),
                                em.kernel_features(full, "jetson-tx2"))


def test_composed_graph_equals_the_stitched_module_on_random_cells():
  # network_kernels assembles the flattened graph from per-fragment templates; it must give exactly
  # what the gpu-mode pass gives on network_module (kernels with names, and so predictions).
  rng = np.random.default_rng(15)
  cells = {nk.live_ops(tuple(int(o) for o in rng.integers(0, 5, 6))) for _ in range(40)}
  cells = sorted(cells)[:24]
  assert len(cells) >= 20
  model = em.prior_model("jetson-tx2")
  for ops in cells:
    fast, slow = nk.network_kernels(ops), nk.module_kernels(ops)
    assert fast == slow, ops
    for a, b in ((em.predict_energy_j(model, fast), em.predict_energy_j(model, slow)),
                 (em.predict_time_s(model, fast), em.predict_time_s(model, slow))):
      assert a == pytest.approx(b, rel=1e-9, abs=0)


def test_shared_call_site_nodes_are_not_changed_by_a_cell():
  # Graphs of different cells share the nodes of a call site; the passes must leave them as they
  # were, so recomputing cells in another order gives the same kernels.
  cells = [(3, 2, 4, 1, 3, 3), (1, 1, 1, 1, 1, 1), (4, 0, 1, 2, 4, 3), (2, 3, 3, 4, 1, 2)]
  first = [nk.network_kernels(c) for c in cells]
  nk._kernels_cached.cache_clear()  # pylint: disable=protected-access
  again = [nk.network_kernels(c) for c in reversed(cells)][::-1]
  assert again == first


@pytest.mark.parametrize("ops", SAMPLE_CELLS)
def test_nodes_cse_may_skip_are_merged_with_nothing(ops):
  # pylint: disable=protected-access
  from cenas_jax.energy import hlo_gpu

  config = nk.NB201NetConfig()
  graph, order, unique = nc.compose(nk.live_ops(ops), config)
  assert unique  # every network has convolutions, whose weights make nodes unique
  merged = hlo_gpu._cse(graph, order)
  assert not (set(merged) | set(merged.values())) & unique
  graph, order, unique = nc.compose(nk.live_ops(ops), config)
  assert hlo_gpu._cse(graph, order, unique) == merged


@pytest.mark.parametrize("ops", SAMPLE_CELLS[:3])
def test_composed_post_order_is_the_graph_walk(ops):
  # pylint: disable=protected-access
  from cenas_jax.energy.hlo_cost import post_order

  config = nk.NB201NetConfig()
  frags, temps = nc._fragments(16, 5, 10, 1, 32), nc._templates(16, 5, 10, 1, 32)
  gb = nc._GraphBuilder()
  root = nc._walk_network(nk.live_ops(ops), config, gb.param,
                          lambda name, inputs: gb.call(frags[name], temps[name], inputs), gb.add)
  nodes = gb.graph.nodes
  want = post_order([root], lambda n: nodes[n].operands if n in nodes else ())
  assert gb.order(root) == want
  assert gb._order_iterative(root) == want


def test_network_kernels_leave_no_cyclic_garbage():
  # A network's graph and fusion state must be freed by reference counting: left to the cyclic
  # collector (a closure that calls itself holds them in a cycle), each network cost milliseconds.
  import gc

  nk.network_kernels(SAMPLE_CELLS[0])  # fragments lowered, templates built
  gc.collect()
  gc.disable()
  try:
    for ops in [(4, 4, 4, 4, 4, 4), (0, 0, 2, 1, 0, 3), (2, 1, 3, 3, 4, 1)]:
      nk.network_kernels(ops)
    assert gc.collect() == 0
  finally:
    gc.enable()


def test_live_ops_drops_edges_that_cannot_reach_the_output():
  assert nk.live_ops((3, 3, 3, 0, 0, 0)) == (0, 0, 0, 0, 0, 0)
  assert nk.live_ops((3, 2, 4, 0, 0, 1)) == (3, 2, 4, 0, 0, 1)
  assert nk.live_ops((3, 2, 4, 0, 1, 0)) == (3, 0, 0, 0, 1, 0)  # node 2 feeds nothing
  assert nk.network_kernels((3, 2, 4, 0, 1, 0)) == nk.network_kernels((3, 0, 0, 0, 1, 0))


def test_features_scale_with_batch_size():
  one = nk.network_features((3, 1, 2, 4, 3, 1), "jetson-tx2")
  four = nk.network_features((3, 1, 2, 4, 3, 1), "jetson-tx2",
                             nk.NB201NetConfig(batch_size=4))
  conv_flops = em.FEATURE_NAMES.index("conv.flops")
  assert four[conv_flops] == 4 * one[conv_flops]
  assert four[-1] == 4 and one[-1] == 1


def test_compute_features_deduplicates_and_keeps_row_order():
  ops = np.array([[3, 2, 4, 0, 1, 0], [1, 1, 1, 1, 1, 1], [3, 0, 0, 0, 1, 0]])
  rows = nk.compute_features(ops, "jetson-tx2")
  assert rows.shape == (3, len(em.FEATURE_NAMES))
  np.testing.assert_array_equal(rows[0], rows[2])  # same live cell
  np.testing.assert_array_equal(rows[1], nk.network_features((1,) * 6, "jetson-tx2"))


def test_compute_kernel_counts_match_network_kernels_and_keep_row_order():
  ops = np.array([[3, 2, 4, 0, 1, 0], [1, 1, 1, 1, 1, 1], [3, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]])
  counts = nk.compute_kernel_counts(ops)
  assert len(counts) == 4
  lists = counts.kernel_lists()
  for row, ks in zip(ops, lists):
    want = collections.Counter()
    for k in nk.network_kernels(tuple(row)):
      want[k.signature] += k.repeat
    got = collections.Counter()
    for k in ks:
      got[k.signature] += k.repeat
    assert got == want
  np.testing.assert_allclose(counts.features("jetson-tx2"),
                             nk.compute_features(ops, "jetson-tx2"), rtol=1e-12)
  # Rows 0 and 2 are the same live cell.
  assert counts.counts[0].toarray().tolist() == counts.counts[2].toarray().tolist()


def test_feature_cache_round_trip_and_stale_key(tmp_path):
  path = str(tmp_path / "features.npz")
  assert nk.load_feature_cache(path, "k") is None
  counts = nk.compute_kernel_counts(np.array([[3, 2, 4, 1, 3, 3], [1, 0, 1, 0, 0, 1]]))
  nk.save_feature_cache(path, "k", np.array([5, 2]), counts)
  idx, back = nk.load_feature_cache(path, "k")
  assert idx.tolist() == [5, 2]
  assert back.kernels == counts.kernels
  assert (back.counts != counts.counts).nnz == 0
  np.testing.assert_array_equal(back.features("jetson-tx2"), counts.features("jetson-tx2"))
  assert nk.load_feature_cache(path, "other-key") is None
  with pytest.raises(ValueError, match="distinct arch_index"):
    nk.save_feature_cache(path, "k", np.array([5, 5]), counts)
  (tmp_path / "bad.npz").write_bytes(b"not an npz")
  with pytest.raises(DataError, match="bad.npz"):
    nk.load_feature_cache(str(tmp_path / "bad.npz"), "k")
  # A cache of the previous format (feature rows only) is stale, not an error.
  np.savez(tmp_path / "old.npz", key=np.array("k0"), arch_index=np.array([1]),
           features=np.zeros((1, len(em.FEATURE_NAMES))))
  assert nk.load_feature_cache(str(tmp_path / "old.npz"), nk.cache_key("jetson-tx2")) is None
  assert nk.cache_key("jetson-tx2").endswith(":jetson-tx2")


def test_fingerprint_is_stable_and_depends_on_config():
  a = nk.fingerprint()
  assert a == nk.fingerprint() and len(a) == 64
  assert nk.fingerprint(nk.NB201NetConfig(batch_size=2)) != a


def test_edge_kernels_describe_live_edges_and_node_sums():
  full = nk.edge_kernels((3, 2, 4, 1, 3, 3))
  assert len(full) == 3 * (6 + 3)  # per stage: 6 live edges, nodes summing 1, 2 and 3 edges
  assert all(k.kernel_class == "other" and k.flops == 0 and k.bytes_accessed == 0 and k.repeat == 5
             for k in full)
  stage1 = [k.fused_ops[0] for k in full if k.out_shapes == ((1, 32, 32, 16),)]
  assert stage1 == ["edge1<-0:nor_conv_3x3", "edge2<-0:nor_conv_1x1", "edge2<-1:avg_pool_3x3",
                    "edge3<-0:skip_connect", "edge3<-1:nor_conv_3x3", "edge3<-2:nor_conv_3x3",
                    "node1:sum1", "node2:sum2", "node3:sum3"]
  assert {k.out_shapes for k in full} == {((1, 32, 32, 16),), ((1, 16, 16, 32),), ((1, 8, 8, 64),)}
  # Dead edges (node 2 feeds nothing here) get no placeholder.
  dead = nk.edge_kernels((3, 2, 4, 0, 1, 0))
  assert [k.fused_ops[0] for k in dead[:4]] == ["edge1<-0:nor_conv_3x3", "edge3<-1:skip_connect",
                                                "node1:sum1", "node3:sum1"]
  assert dead == nk.edge_kernels((3, 0, 0, 0, 1, 0))
  # A cell with a constant output (nothing reaches node 3) gets one marker per stage.
  const = nk.edge_kernels((0, 0, 0, 0, 0, 0))
  assert [k.fused_ops for k in const] == [("cell:constant",)] * 3
  assert const == nk.edge_kernels((3, 2, 4, 0, 0, 0), keys="graph")
  graph = nk.edge_kernels((3, 2, 4, 1, 3, 3), keys="graph")
  assert [k.fused_ops[0] for k in graph[:9]] == [
      "edge:nor_conv_3x3:into1:fan3", "edge:nor_conv_1x1:into2:fan3",
      "edge:avg_pool_3x3:into2:fan2", "edge:skip_connect:into3:fan3",
      "edge:nor_conv_3x3:into3:fan2", "edge:nor_conv_3x3:into3:fan1", "sum1:fan2", "sum2:fan1",
      "sum3:fan1"]
  assert nk.runtime_kernels((1, 0, 1, 0, 0, 1)) == (nk.network_kernels((1, 0, 1, 0, 0, 1)) +
                                                     nk.edge_kernels((1, 0, 1, 0, 0, 1)))
  ops = np.array([[3, 2, 4, 1, 3, 3], [1, 0, 1, 0, 0, 1]])
  both = nk.with_edge_kernels(nk.compute_kernel_counts(ops), ops)
  for row, ks in zip(ops, both.kernel_lists()):
    assert sum(k.repeat for k in ks) == sum(k.repeat for k in nk.runtime_kernels(tuple(row)))
  with pytest.raises(ValueError, match="cells for"):
    nk.with_edge_kernels(nk.compute_kernel_counts(ops), ops[:1])
  # Keyed by op only: the same signatures wherever the edge sits, and node sums by arity.
  by_op = nk.edge_kernels((3, 2, 4, 1, 3, 3), keys="op")
  assert [k.fused_ops[0] for k in by_op[:9]] == [
      "edge:nor_conv_3x3", "edge:nor_conv_1x1", "edge:avg_pool_3x3", "edge:skip_connect",
      "edge:nor_conv_3x3", "edge:nor_conv_3x3", "sum1", "sum2", "sum3"]
  assert [dataclasses.replace(k, fused_ops=()) for k in by_op] == [
      dataclasses.replace(k, fused_ops=()) for k in full]
  with pytest.raises(ValueError, match="edge kernel keys"):
    nk.edge_kernels((3, 2, 4, 1, 3, 3), keys="edge")
