"""The DARTS weight-sharing supernet: paths, per-edge weights, one program for every path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.spaces import darts as space
from cenas_jax.supernets import darts as sn

_CONFIG = sn.SupernetConfig(init_channels=4, layers=3)


def _reference_apply(params, arch, x, config):
  """The path computed with Python control flow (static op and input per slot): what the scanned,
  switched program must equal."""
  arch = np.asarray(arch)
  s, _ = sn._bn(sn._conv(x, params["stem"]["w"]), None)  # pylint: disable=protected-access
  s0 = s1 = s
  for i, (_, reduction, reduction_prev) in enumerate(config.cells()):
    p = params["cells"][i]
    if reduction_prev:
      x0, _ = sn._factorized_reduce(s0, p["pre0"]["w1"], p["pre0"]["w2"], None)
    else:
      x0, _ = sn._relu_conv_bn(s0, p["pre0"]["w"], None)
    x1, _ = sn._relu_conv_bn(s1, p["pre1"]["w"], None)
    states = [x0, x1]
    for k in range(space.STEPS):
      node = 0.0
      for slot in (2 * k, 2 * k + 1):
        op, j = int(arch[int(reduction), slot, 0]), int(arch[int(reduction), slot, 1])
        name = space.OPS[op]
        stride = 2 if reduction and j < 2 else 1
        if name == "skip_connect" and stride == 2:
          w = jax.tree.map(lambda a: a[j], p["ops"][name])
        elif name in sn._CONV_OPS:  # pylint: disable=protected-access
          w = jax.tree.map(lambda a: a[sn.EDGE_OFFSET[k] + j], p["ops"][name])
        else:
          w = None
        node = node + sn._op_branch(name, stride)(states[j], w, None)[0]  # pylint: disable=protected-access
      states.append(node)
    s0, s1 = s1, jnp.concatenate(states[2:], axis=-1)
  pooled = jnp.mean(s1, axis=(1, 2))
  return pooled @ params["classifier"]["w"] + params["classifier"]["b"]


@pytest.fixture(scope="module")
def params():
  return sn.init(jax.random.key(0), _CONFIG)


def test_sampled_paths_are_canonical_genotypes_of_the_space():
  sample = jax.jit(jax.vmap(sn.sample_arch, in_axes=(0, None)))
  archs = np.asarray(sample(jax.random.split(jax.random.key(0), 300), -1))
  assert archs.shape == (300,) + sn.ARCH_SHAPE
  for arch in archs[:50]:
    g = sn.genotype_of(arch)
    assert g == space.canonical(g)
    np.testing.assert_array_equal(sn.arch_of(g), arch)
  assert set(np.unique(archs[..., 0])) == set(range(1, 8))  # every op but none, nothing else
  assert (archs[..., 1] < np.repeat(np.arange(2, 6), 2)).all()
  # Two distinct inputs per node; uniform over the 7 ops on the split edge.
  assert (archs[:, :, 0::2, 1] < archs[:, :, 1::2, 1]).all()
  counts = np.bincount(archs[:, 0, 1, 0], minlength=8)[1:]
  assert counts.min() > 20
  forced = np.asarray(sample(jax.random.split(jax.random.key(1), 50), 4))
  assert (forced[:, 0, 1, 0] == 5).all() and (forced[:, 0, 1, 1] == 1).all()


def test_arch_of_refuses_what_the_supernet_cannot_run():
  g = space.GENOTYPES["DARTS_V2"]
  with pytest.raises(ValueError, match="none"):
    sn.arch_of(space._g([("none", 0)] + list(g.normal[1:]), g.reduce))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="concatenate"):
    sn.arch_of(space.Genotype(g.normal, (2, 3), g.reduce, g.reduce_concat))


def test_a_path_equals_the_same_path_computed_op_by_op(params):
  """The scan over slots, the switch over ops and the per-edge weight index select exactly the
  path's ops, inputs and weights (several random paths and the published cells)."""
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  apply = jax.jit(lambda p, a: sn.apply(p, a, x, _CONFIG)[0])
  archs = [sn.arch_of(space.GENOTYPES[n]) for n in ("DARTS_V2", "PC_DARTS")]
  archs += [np.asarray(sn.sample_arch(k)) for k in jax.random.split(jax.random.key(2), 3)]
  for arch in archs:
    np.testing.assert_allclose(apply(params, arch), _reference_apply(params, arch, x, _CONFIG),
                               atol=2e-4, rtol=2e-4)
  assert apply._cache_size() == 1  # pylint: disable=protected-access


def test_every_op_of_every_edge_has_its_own_weights(params):
  """A path's gradient reaches exactly the weights of the (edge, op) pairs it uses."""
  arch = sn.arch_of(space.GENOTYPES["P_DARTS"])
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(sn.apply(p, arch, x, _CONFIG)[0] ** 2)))(params)
  for i, (_, reduction, _) in enumerate(_CONFIG.cells()):
    used = {(space.OPS[op], sn.EDGE_OFFSET[slot // 2] + j) for slot, (op, j) in enumerate(arch[int(reduction)])}
    for name in sn._CONV_OPS:  # pylint: disable=protected-access
      norms = np.asarray(jnp.sqrt(jnp.sum(grads["cells"][i]["ops"][name]["dw1"] ** 2, axis=(1, 2, 3, 4))))
      for edge in range(sn.N_EDGES):
        assert (norms[edge] > 0) == ((name, edge) in used), (i, name, edge)


def test_recalibrated_statistics_are_population_statistics():
  rng = np.random.default_rng(0)
  a, b = rng.normal(1.0, 2.0, (6, 3)), rng.normal(-1.0, 0.5, (6, 3))
  stat = lambda v: jnp.stack([v.mean(0), v.var(0)])
  combined = sn.combine_stats([{"s": stat(a)}, {"s": stat(b)}])["s"]
  np.testing.assert_allclose(combined, stat(np.concatenate([a, b])), rtol=1e-5)


def test_evaluating_with_the_batch_statistics_reproduces_training_mode(params):
  x = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
  arch = sn.sample_arch(jax.random.key(4))
  logits, stats = jax.jit(lambda p, a: sn.apply(p, a, x, _CONFIG))(params, arch)
  again, _ = jax.jit(lambda p, a, s: sn.apply(p, a, x, _CONFIG, stats=s))(params, arch, stats)
  np.testing.assert_allclose(again, logits, atol=1e-4, rtol=1e-4)
