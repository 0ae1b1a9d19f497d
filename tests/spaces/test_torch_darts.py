"""The PyTorch reference network of the DARTS benchmark computes the Flax network's function.

Skipped where ``torch`` is not installed (it is the optional ``bench`` extra).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cenas_jax.spaces import darts, darts_net

torch = pytest.importorskip("torch")
td = pytest.importorskip("benchmarks._torch_darts")

_C, _LAYERS = 4, 5  # small: reductions at cells 1 and 3
# Every op of the space, ``none`` and both pools included, in both cells.
_ALL_OPS = darts.Genotype(
    normal=(("none", 0), ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("dil_conv_5x5", 2),
            ("max_pool_3x3", 1), ("skip_connect", 3), ("dil_conv_3x3", 2), ("sep_conv_3x3", 4)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("skip_connect", 0), ("avg_pool_3x3", 1), ("none", 1), ("sep_conv_5x5", 2),
            ("dil_conv_5x5", 0), ("max_pool_3x3", 3), ("dil_conv_3x3", 1), ("sep_conv_3x3", 4)),
    reduce_concat=(2, 3, 4, 5))


@pytest.mark.parametrize("genotype", [darts.GENOTYPES["DARTS_V2"], darts.sample(np.random.default_rng(3))[0],
                                      _ALL_OPS], ids=["DARTS_V2", "random", "all_ops"])
def test_param_count_is_the_closed_form(genotype):
  for c, layers in ((8, 5), (16, 8), (36, 20)):
    assert td.count_params(td.NetworkCIFAR(genotype, c, layers)) == darts.count_params(genotype, c, layers)


def test_same_function_as_the_flax_network():
  model = darts_net.NetworkCIFAR(_ALL_OPS, _C, _LAYERS)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, 4)
  variables = model.init(jax.random.key(0), jnp.asarray(x), train=False)
  # Non-trivial running statistics, so that eval mode tests they are copied and used.
  variables = {**variables, "batch_stats": jax.tree.map(
      lambda s: s + jnp.asarray(rng.uniform(0.1, 0.5, s.shape), s.dtype), variables["batch_stats"])}
  net = td.NetworkCIFAR(_ALL_OPS, _C, _LAYERS)
  td.load_flax_variables(net, variables)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))

  net.eval()
  eval_logits, _ = model.apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(net(xt).detach().numpy(), eval_logits, atol=1e-5, rtol=1e-4)

  # Training mode: batch statistics in the forward pass, and the same gradients.
  def loss(params):
    (logits, _), new = model.apply({**variables, "params": params}, jnp.asarray(x), train=True,
                                   mutable=["batch_stats"], rngs={"drop_path": jax.random.key(0)})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y))), (logits, new)

  (loss_j, (logits_j, new_stats)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  net.train()
  logits_t = net(xt)
  loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y))
  loss_t.backward()
  np.testing.assert_allclose(logits_t.detach().numpy(), logits_j, atol=1e-5, rtol=1e-4)
  assert loss_t.item() == pytest.approx(float(loss_j), rel=1e-5)
  params, stats = td.flax_paths(net)
  for path, s in stats:  # running means move alike (the variances differ by n / (n - 1), see the module)
    if path[-1] == "mean":
      m = new_stats["batch_stats"]
      for key in path:
        m = m[key]
      np.testing.assert_allclose(s.numpy(), m, atol=1e-5, rtol=1e-4, err_msg=str(path))
  assert len(params) == len(jax.tree_util.tree_leaves(grads))
  for path, p in params:
    g = grads
    for key in path:
      g = g[key]
    np.testing.assert_allclose(p.grad.numpy(), td.to_torch_layout(g), atol=1e-5, rtol=1e-3, err_msg=str(path))
