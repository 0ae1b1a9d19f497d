"""NetworkCIFAR: the Flax network of a DARTS genotype."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.spaces import darts, darts_net

_C, _LAYERS = 4, 5  # small: reductions at cells 1 and 3


def _init(genotype, auxiliary=True, batch=2):
  model = darts_net.NetworkCIFAR(genotype, init_channels=_C, layers=_LAYERS, auxiliary=auxiliary)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 32, 32, 3)), jnp.float32)
  return model, model.init(jax.random.key(0), x, train=False), x


def _n(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


# P-DARTS and PC-DARTS hold every op but a stride-2 skip, which the random cell has; the closed form
# is checked against the other published cells at full size in test_darts.py.
_RANDOM = darts.sample(np.random.default_rng(3), 1)[0]
assert ("skip_connect", 0) in _RANDOM.reduce or ("skip_connect", 1) in _RANDOM.reduce


@pytest.mark.parametrize("genotype", [darts.GENOTYPES["P_DARTS"], darts.GENOTYPES["PC_DARTS"], _RANDOM],
                         ids=["P_DARTS", "PC_DARTS", "random"])
def test_count_params_equals_the_flax_network(genotype):
  shapes = jax.eval_shape(lambda: _init(genotype)[1])
  params = shapes["params"]
  with_aux = _n(params)
  without = with_aux - _n(params["auxiliary_head"])
  assert without == darts.count_params(genotype, _C, _LAYERS)
  assert with_aux == darts.count_params(genotype, _C, _LAYERS, auxiliary=True)


def test_forward_train_and_eval():
  # Three cells (normal, reduction, reduction): the smallest network with every part, quick to compile.
  model = darts_net.NetworkCIFAR(darts.GENOTYPES["DARTS_V2"], init_channels=_C, layers=3, auxiliary=True)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))
  logits, aux = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
  assert logits.shape == (2, 10) and aux is None
  (logits_t, aux_t), updates = jax.jit(lambda v: model.apply(
      v, x, train=True, drop_prob=0.2, rngs={"drop_path": jax.random.key(1)}, mutable=["batch_stats"]))(variables)
  assert logits_t.shape == (2, 10) and aux_t.shape == (2, 10)
  assert np.isfinite(np.asarray(logits_t)).all()
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                                   updates["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))  # every BatchNorm saw the batch


def test_drop_path_is_off_at_zero_and_unbiased():
  x = jnp.ones((4000, 1, 1, 2))
  np.testing.assert_array_equal(darts_net.drop_path(x, 0.0, jax.random.key(0)), x)
  y = darts_net.drop_path(x, 0.3, jax.random.key(0))
  kept = np.asarray(y[:, 0, 0, 0] != 0)
  assert abs(kept.mean() - 0.7) < 0.03
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
  assert abs(float(y.mean()) - 1.0) < 0.05


def test_odd_channels_refused():
  model = darts_net.NetworkCIFAR(darts.GENOTYPES["DARTS_V2"], init_channels=5, layers=5)
  with pytest.raises(ValueError, match="even"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 1), (5, 2, 1), (3, 1, 2), (5, 2, 2)])
def test_depthwise_conv_implementations_agree(kernel, stride, dilation):
  """The CPU's block-diagonal dense convolution, the shifted sums and XLA's grouped convolution are
  one function (forward and gradients)."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 4))
  outs, grads = {}, {}
  for impl in ("block_diagonal", "shifted", "grouped"):
    f = lambda x, w, impl=impl: darts_net.depthwise_conv(x, w, stride, dilation, cpu_impl=impl)
    outs[impl] = f(x, w)
    grads[impl] = jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))(x, w)
  assert outs["grouped"].shape == (2, (9 - 1) // stride + 1, (9 - 1) // stride + 1, 4)
  for impl in ("block_diagonal", "shifted"):
    np.testing.assert_allclose(outs[impl], outs["grouped"], atol=1e-5)
    for a, b in zip(grads[impl], grads["grouped"]):
      np.testing.assert_allclose(a, b, atol=1e-4)


def test_average_pool_ignores_padding():
  x = jnp.ones((1, 5, 5, 1))
  for stride in (1, 2):
    np.testing.assert_allclose(darts_net._pool("avg", stride)(x), 1.0)
