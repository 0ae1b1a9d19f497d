"""Tests of cenas_jax.spaces.nb201_net: the NB201 network in Flax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cenas_jax.spaces import nb201_net
from cenas_jax.spaces.nb201 import arch_str_to_ops
from cenas_jax.spaces.nb201_net import analytical_flops, count_params, init_variables, make_nb201_net

BEST_CIFAR10 = (3, 3, 3, 1, 3, 2)  # NB201 index 6111, best CIFAR-10 test accuracy
ALL_CONV3X3 = (3,) * 6
ALL_NONE = (0,) * 6
SMALL = dict(C=4, N=1)  # tiny networks: fast to compile on a CPU


def _images(seed: int, batch: int = 2, hw: int = 8) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, hw, hw, 3)), jnp.float32)


def _numpy_variables(net, input_shape=(2, 8, 8, 3), seed: int = 0):
  """Random variables of the right structure, drawn with numpy.

  Initializing with JAX's RNG compiles an initializer per network (slow on a busy CPU); the
  properties tested with these variables hold for any parameter values.
  """
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.normal(0.0, 0.3, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def small_best():
  """The small network of the best cell, initialized once with the library's initializer."""
  net = make_nb201_net(BEST_CIFAR10, **SMALL)
  # An "rbg" key compiles far faster than the default threefry on a CPU.
  return net, init_variables(net, jax.random.key(0, impl="rbg"), (2, 8, 8, 3))


def test_full_size_output_and_variable_shapes():
  net = make_nb201_net(BEST_CIFAR10)
  x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  logits = jax.eval_shape(lambda v: net.apply(v, jnp.zeros(x.shape), train=False), variables)
  assert logits.shape == (3, 10)
  assert set(variables) == {"params", "batch_stats"}
  params = variables["params"]
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 16)
  assert params["stage1_cell0"]["edge_1_0"]["conv"]["kernel"].shape == (3, 3, 16, 16)
  assert params["stage2_cell4"]["edge_3_2"]["conv"]["kernel"].shape == (1, 1, 32, 32)
  assert params["reduction_2"]["conv_a"]["conv"]["kernel"].shape == (3, 3, 32, 64)
  assert params["reduction_2"]["downsample"]["kernel"].shape == (1, 1, 32, 64)
  assert params["classifier"]["kernel"].shape == (64, 10)
  assert "edge_3_0" not in params["stage3_cell0"]  # skip_connect has no weights
  assert len([k for k in params if k.startswith("stage")]) == 15


def test_inference_and_train_modes(small_best):
  net, variables = small_best
  bs = variables["batch_stats"]["stage1_cell0"]["edge_1_0"]["bn"]
  np.testing.assert_array_equal(bs["mean"], 0.0)  # BN running statistics start at mean 0, var 1
  np.testing.assert_array_equal(bs["var"], 1.0)
  infer = lambda v, x: net.apply(v, x, train=False)  # noqa: E731
  train = lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"])  # noqa: E731
  x = _images(1, batch=3)
  logits = infer(variables, x)
  assert logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(logits)))
  logits_t, updates = train(variables, x)
  assert logits_t.shape == (3, 10)
  assert not np.allclose(logits_t, logits, atol=1e-4)  # batch statistics differ from running ones
  before = variables["batch_stats"]["stem_bn"]["mean"]
  after = updates["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(before, after)  # running statistics move in train mode
  # Inference mode is per-example: an image's logits do not depend on the rest of the batch.
  shuffled = infer(variables, x[::-1])
  np.testing.assert_allclose(shuffled[::-1], logits, rtol=1e-5, atol=1e-5)


def test_all_none_cell_gives_constant_logits():
  net = make_nb201_net(ALL_NONE, **SMALL)
  variables = _numpy_variables(net)
  a = net.apply(variables, _images(1), train=False)
  b = net.apply(variables, 10.0 * _images(2), train=False)
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  np.testing.assert_allclose(a[0], a[1], rtol=0, atol=1e-6)
  train_logits, _ = net.apply(variables, _images(3), train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(train_logits[0], train_logits[1], rtol=0, atol=1e-6)


def test_dead_cell_output_still_constant_but_live_cell_is_not():
  # Node 3 has only `none` inputs: the cell output is zeros, whatever nodes 1 and 2 compute.
  dead = make_nb201_net((3, 3, 3, 0, 0, 0), **SMALL)
  v = _numpy_variables(dead)
  out = dead.apply(v, _images(1), train=False)
  np.testing.assert_allclose(out[0], out[1], atol=1e-6)
  live = make_nb201_net((3, 3, 3, 1, 0, 3), **SMALL)
  v = _numpy_variables(live)
  out = live.apply(v, _images(1), train=False)
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3


def test_jit_compiles_once_per_cell(small_best):
  net, variables = small_best
  traces = []

  @jax.jit
  def forward(v, x):
    traces.append(1)
    return net.apply(v, x, train=False)

  outs = [forward(variables, _images(k)) for k in range(3)]
  assert len(traces) == 1
  assert not np.allclose(outs[0], outs[1])
  # The same cell built again is an equal (hashable) module: jit reuses its compiled function.
  assert make_nb201_net(BEST_CIFAR10, **SMALL) == net
  assert hash(make_nb201_net(list(BEST_CIFAR10), **SMALL)) == hash(net)


def test_param_counts_match_nb201():
  # NB201's range over the space is 0.073 M .. 1.531 M parameters (C=16, N=5).
  assert count_params(ALL_CONV3X3) == 1_531_546
  assert count_params(ALL_NONE) == 73_306
  assert count_params((1, 4, 1, 4, 1, 4)) == 73_306  # skip/pool carry no weights
  assert count_params(BEST_CIFAR10) == 1_073_466  # index 6111: 1.07 M


def test_count_params_agrees_with_initialized_variables(small_best):
  _, variables = small_best
  n = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count_params(BEST_CIFAR10, **SMALL) == n
  # By hand: stem 3*9*4 + 8; reductions (4->8, 8->16) with BN; 4 conv3x3 + 1 conv1x1 per cell at
  # 4, 8, 16 channels; last BN; classifier 16*10 + 10.
  cells = sum(4 * (c * c * 9 + 2 * c) + (c * c + 2 * c) for c in (4, 8, 16))
  reductions = sum(ci * co * 9 + 2 * co + co * co * 9 + 2 * co + ci * co for ci, co in ((4, 8), (8, 16)))
  assert n == 3 * 9 * 4 + 8 + reductions + cells + 2 * 16 + 16 * 10 + 10


def test_analytical_flops_match_hw_nas_bench(shared_data):
  table = pd.read_csv(shared_data / "hw_nas_bench" / "hwnasbench_nb201_cifar10_subset.csv.gz")
  ours_m = np.array([analytical_flops(arch_str_to_ops(s)) / 1e6 for s in table["arch_str"]])
  np.testing.assert_allclose(ours_m, table["flops_M"].to_numpy(), rtol=0, atol=1e-9)
  assert len(table) == 12_554
  # Spot checks with the numbers written out (MFLOPs as HW-NAS-Bench reports them, i.e. MMACs).
  row = table.set_index("arch_index").loc[1]
  assert row["flops_M"] == pytest.approx(113.95137)
  assert analytical_flops(ALL_NONE) == 7_783_050
  assert analytical_flops(ALL_CONV3X3) == 220_119_690
  assert analytical_flops(BEST_CIFAR10, unit="flops") == 2 * 153_272_970


def test_bad_arguments():
  with pytest.raises(ValueError):
    make_nb201_net((3, 3, 3))
  with pytest.raises(ValueError):
    make_nb201_net((0, 1, 2, 3, 4, 5))
  with pytest.raises(ValueError, match="C must be"):
    make_nb201_net(ALL_NONE, C=0)
  with pytest.raises(ValueError, match="unit"):
    analytical_flops(ALL_NONE, unit="gflops")
  net = make_nb201_net(ALL_NONE, **SMALL)
  with pytest.raises(ValueError, match="NHWC"):
    net.init(jax.random.key(0), jnp.zeros((8, 8, 3)))


def test_module_constants():
  assert nb201_net.INPUT_SHAPE_CIFAR == (32, 32, 3)
