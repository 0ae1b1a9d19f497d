"""Masked tabular supernets: materialize is exact, one compile serves every architecture."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.spaces.tabular import make_space
from cenas_jax.supernets import tabular as sn


def _trained_like(space, variables, key):
  """Supernet variables with non-trivial BatchNorm statistics and biases (as after training)."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(key, len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) if x.ndim == 1 else x
            for x, k in zip(leaves, keys)]
  out = jax.tree.unflatten(tree, leaves)
  if "batch_stats" in out:
    out["batch_stats"] = jax.tree.map(lambda v: jnp.abs(v) + 0.5 if v is not None else v,
                                      out["batch_stats"])
  return out


# Reduced value sets keep the number of distinct shapes (and so of eager compiles) small; the
# paper-size spaces are checked on a few architectures below.
_SMALL = dict(widths=(4, 12, 32), hidden_widths=(8, 24), depths=(1, 2, 3, 4), dropouts=(0.1, 0.5))
# FT-Transformer: 3 numeric columns and two categorical ones (one-hot widths 2 and 2); depth 1
# makes the first block also the last (CLS-only) one.
_FTT_SMALL = dict(widths=(8, 16), depths=(1, 2, 3), heads=(1, 3), ffn_ratios=(1.0, 2.5),
                  cat_cardinalities=(2, 2))


@pytest.mark.parametrize("kind,n,sizes", [("mlp", 100, _SMALL), ("resnet", 100, _SMALL),
                                          ("ftt", 100, _FTT_SMALL), ("mlp", 3, {}),
                                          ("resnet", 3, {}), ("ftt", 3, {"cat_cardinalities": (4,)})])
def test_materialize_matches_supernet_on_random_archs(kind, n, sizes):
  space = make_space(kind, d_in=7, d_out=3, **sizes)
  variables = _trained_like(space, sn.init_supernet(space, jax.random.key(0)), jax.random.key(1))
  forward = sn.make_forward(space)  # one trace allowed: every architecture reuses it
  x = jax.random.normal(jax.random.key(2), (5, space.d_in))
  rng = np.random.default_rng(0)
  worst = 0.0
  for arch in space.sample(rng, n):
    module, sub_vars = sn.materialize(space, variables, arch)
    # The small spaces' few shapes make eager op-by-op compiles cheap and shared between
    # architectures; a paper-size architecture's shapes are all new, and one compile of the whole
    # network is then several times faster than compiling each op.
    y_sub = (module.apply if n > 10 else jax.jit(module.apply))(sub_vars, x)
    y_sup = forward(variables, x, jnp.asarray(arch))
    worst = max(worst, float(jnp.max(jnp.abs(y_sub - y_sup))))
  assert worst <= 1e-5, worst


@pytest.mark.parametrize("kind", ["mlp", "resnet", "ftt"])
def test_vmapped_scoring_equals_one_by_one(kind):
  space = make_space(kind, d_in=4, d_out=1, widths=(8, 16), hidden_widths=(8, 32), depths=(1, 2, 3))
  variables = sn.init_supernet(space, jax.random.key(0))
  x = jax.random.normal(jax.random.key(2), (6, 4))
  archs = space.sample(np.random.default_rng(1), 9)
  many = sn.make_vmapped_forward(space)(variables, x, jnp.asarray(archs))
  forward = sn.make_forward(space)
  for a, y in zip(archs, many):
    np.testing.assert_allclose(y, forward(variables, x, jnp.asarray(a)), atol=1e-6)


@pytest.mark.parametrize("kind", ["resnet", "ftt"])
def test_per_row_architectures_equal_shared_architecture(kind):
  space = make_space(kind, d_in=4, d_out=2, widths=(8, 16), hidden_widths=(8, 32), depths=(1, 2))
  variables = sn.init_supernet(space, jax.random.key(0))
  x = jax.random.normal(jax.random.key(2), (6, 4))
  archs = space.sample(np.random.default_rng(3), 6)
  module = sn.supernet(space)
  rows = module.apply(variables, x, jnp.asarray(archs))
  for i in range(6):
    np.testing.assert_allclose(rows[i], module.apply(variables, x[i:i + 1], jnp.asarray(archs[i]))[0],
                               atol=1e-6)


def test_batchnorm_statistics_move_only_for_sampled_norms():
  space = make_space("resnet", d_in=3, d_out=1, widths=(4, 8), hidden_widths=(4,), depths=(1, 2),
                     norms=("batchnorm", "none"))
  variables = sn.init_supernet(space, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (16, 3)) * 3 + 1
  # 1 block (block 1 inactive), block 0 without norm: no block statistics move, the head's do.
  arch = np.array([0, 1] + [1, 0, 0, 0] + [0, 0, 0, 0], np.int32)
  _, upd = sn.supernet(space).apply(variables, x, jnp.asarray(arch), train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(2)})
  before, after = variables["batch_stats"], upd["batch_stats"]
  for name in ("norm_0", "norm_1"):
    np.testing.assert_array_equal(after[name]["mean"], before[name]["mean"])
  assert not np.allclose(after["head_norm"]["mean"], before["head_norm"]["mean"])
  # Block 0 with BatchNorm: its statistics move.
  arch[2] = 0
  _, upd = sn.supernet(space).apply(variables, x, jnp.asarray(arch), train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(upd["batch_stats"]["norm_0"]["mean"], before["norm_0"]["mean"])


def test_forward_refuses_a_second_trace():
  space = make_space("mlp", d_in=3, d_out=1, widths=(4, 8), depths=(1, 2))
  variables = sn.init_supernet(space, jax.random.key(0))
  forward = sn.make_forward(space)
  forward(variables, jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
  forward(variables, jnp.ones((2, 3)), jnp.ones(3, jnp.int32))  # new arch, same compile
  with pytest.raises(AssertionError):
    forward(variables, jnp.zeros((5, 3)), jnp.zeros(3, jnp.int32))  # a new shape would retrace


def test_ftt_masked_heads_and_units_contribute_nothing():
  """Weights of heads, FFN units and token dims outside the architecture do not change its output."""
  space = make_space("ftt", d_in=5, d_out=2, widths=(8, 16), depths=(2,), heads=(2, 4),
                     ffn_ratios=(2.0, 4.0), cat_cardinalities=(2,))
  variables = sn.init_supernet(space, jax.random.key(0))
  arch = np.array([0, 0, 0, 0, 0, 0], np.int32)  # d_token 8, 2 heads, FFN 16 in both blocks
  x = jax.random.normal(jax.random.key(1), (4, 5))
  forward = sn.make_forward(space)
  before = forward(variables, x, jnp.asarray(arch))
  p = jax.tree.map(lambda a: a, variables["params"])
  b = dict(p["block_1"])
  # Heads 2 and 3 of q, k and v, FFN units 16.., and token dims 8.. of the CLS token.
  b["qkv"] = {"kernel": b["qkv"]["kernel"].at[:, 16:32].set(7.0).at[:, 48:64].set(-3.0),
              "bias": b["qkv"]["bias"].at[80:96].set(5.0)}
  b["ffn_in"] = {"kernel": b["ffn_in"]["kernel"].at[:, 16:64].set(2.0),
                 "bias": b["ffn_in"]["bias"]}
  p["block_1"] = b
  p["tokenizer"] = dict(p["tokenizer"], cls=p["tokenizer"]["cls"].at[8:].set(9.0))
  after = forward({"params": p}, x, jnp.asarray(arch))
  np.testing.assert_allclose(after, before, atol=1e-6)
  # The CLS token is the one read: changing its active dims changes the output.
  p["tokenizer"] = dict(p["tokenizer"], cls=p["tokenizer"]["cls"].at[:8].add(1.0))
  assert float(jnp.max(jnp.abs(forward({"params": p}, x, jnp.asarray(arch)) - before))) > 1e-3
