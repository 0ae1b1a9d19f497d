"""The FT-Transformer (rtdl) as a weight-entangled supernet by masking, and its standalone network.

rtdl's FT-Transformer (Gorishniy et al. 2021): a feature tokenizer (numeric column j: ``x_j * W_j +
b_j``; categorical column j: an embedding of its category plus a bias), a CLS token appended after
the feature tokens, pre-norm blocks (the first block without the attention pre-norm; multi-head
self-attention with a fused QKV projection; a ReGLU FFN), and the head LayerNorm -> ReLU -> Linear
on the CLS token's output. The last block computes only the CLS token's query and FFN (rtdl's
shortcut: nothing else is read after it), so the standalone network's kernels, which the energy
lookup prices, are the ones rtdl runs.

Entanglement: the supernet holds every layer at the largest token dim ``D``, head count ``H`` and
FFN width ``F``; a sub-network uses the leading slices. The supernet and the standalone network are
built from the *same* modules (``Tokenizer``, ``Block``, ``MaskedLayerNorm``); the supernet passes
0/1 masks, the standalone network none, so slicing is exact by construction:

- token dim: every token is multiplied by the token mask after each layer that writes it, so the
  inactive dims are exactly 0 and the next matmul reads only the active rows of its kernel; the
  LayerNorms take mean and variance over the active dims only (``MaskedLayerNorm``).
- heads: each head's attention output is multiplied by the head mask before the output projection;
  a masked head contributes nothing. Softmax runs per head over the keys (the tokens, all active),
  and the scale is ``1 / sqrt(head_dim)`` with a head dim fixed by the space, so an active head's
  attention does not depend on how many heads are active.
- FFN: the ReGLU's value and gate halves are the first and second ``F`` columns of one kernel; the
  hidden mask zeroes the inactive units (``materialize`` concatenates the two active slices into
  the standalone network's ``2 f`` columns).
- depth: ``where`` on the token stream after each block beyond the first.

Categorical columns arrive one-hot (``cenas_jax.tabular_nas.data``); the embedding of column j is
computed as its one-hot block times the column's table, which equals the table lookup exactly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.spaces.tabular import FTT_DROPOUT, TabularSpace
from cenas_jax.supernets.layers import row_dropout


def _dropout(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """``row_dropout`` over all non-batch axes."""
  if not train or rate == 0.0:
    return x
  return row_dropout(module, x.reshape(x.shape[0], -1), rate, train).reshape(x.shape)


class MaskedLayerNorm(nn.Module):
  """LayerNorm over the last axis, restricted to the dims where ``mask`` is 1 (all without one).

  With a mask, mean and variance are taken over the active dims only and the inactive dims of the
  output are 0, so it equals a LayerNorm of the active slice with the sliced scale and bias.
  """

  features: int
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if mask is None:
      mean = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    else:
      n = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)
      mean = jnp.sum(x * mask, axis=-1, keepdims=True) / n
      var = jnp.sum(jnp.square((x - mean) * mask), axis=-1, keepdims=True) / n
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y if mask is None else y * mask


class Tokenizer(nn.Module):
  """Feature tokens (numeric, then categorical) and the CLS token last: (B, d_in) -> (B, T, d)."""

  n_num: int
  cat_cardinalities: tuple[int, ...]
  d: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.normal(stddev=0.1)
    parts = []
    if self.n_num:
      w = self.param("num_weight", init, (self.n_num, self.d))
      b = self.param("num_bias", init, (self.n_num, self.d))
      parts.append(x[:, :self.n_num, None] * w + b)
    if self.cat_cardinalities:
      cards = self.cat_cardinalities
      emb = self.param("cat_embedding", init, (sum(cards), self.d))
      b = self.param("cat_bias", init, (len(cards), self.d))
      # group[g, c] = 1 when one-hot column c belongs to categorical column g.
      group = jnp.asarray(np.repeat(np.eye(len(cards), dtype=np.float32), cards, axis=1))
      onehot = x[:, self.n_num:self.n_num + sum(cards)]
      parts.append(jnp.einsum("bgc,cd->bgd", onehot[:, None, :] * group, emb) + b)
    cls = self.param("cls", init, (self.d,))
    # Built from x (not broadcast from the parameter) so that it is sharded like the batch.
    parts.append(jnp.zeros_like(x[:, :1])[:, :, None] + cls)
    return jnp.concatenate(parts, axis=1)


class Block(nn.Module):
  """One pre-norm FT-Transformer block (rtdl); masks broadcast against (B, T, ...)."""

  d: int
  heads: int
  head_dim: int
  d_hidden: int
  first: bool
  cls_only: bool = False
  dropout: float = FTT_DROPOUT

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, m_d: jax.Array | None = None,
               m_h: jax.Array | None = None, m_f: jax.Array | None = None,
               delta: jax.Array | None = None) -> jax.Array:
    """``x`` (B, T, d) -> (B, T, d), or (B, 1, d) for ``cls_only``.

    ``delta``, added to ``x`` first, serves the energy lookup (the previous block's residual add
    fused into this block's first LayerNorm).
    """
    def mask(v, m):
      return v if m is None else v * m

    if delta is not None:
      x = x + delta

    B, T, _ = x.shape
    H, E, F = self.heads, self.head_dim, self.d_hidden
    z = x if self.first else MaskedLayerNorm(self.d, name="attn_norm")(x, m_d)
    qkv = nn.Dense(3 * H * E, name="qkv")(z)
    q, k, v = (qkv[..., j * H * E:(j + 1) * H * E].reshape(B, T, H, E) for j in range(3))
    if self.cls_only:  # only the CLS token is read after the last block
      q, x = q[:, -1:], x[:, -1:]
    s = jnp.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(E).astype(np.float32)
    p = _dropout(self, jax.nn.softmax(s, axis=-1), self.dropout, train)
    o = mask(jnp.einsum("bhqk,bkhe->bqhe", p, v), m_h)
    x = x + mask(nn.Dense(self.d, name="out")(o.reshape(B, q.shape[1], H * E)), m_d)
    z = MaskedLayerNorm(self.d, name="ffn_norm")(x, m_d)
    ab = nn.Dense(2 * F, name="ffn_in")(z)
    h = mask(ab[..., :F] * nn.relu(ab[..., F:]), m_f)  # ReGLU
    h = _dropout(self, h, self.dropout, train)
    return x + mask(nn.Dense(self.d, name="ffn_out")(h), m_d)


def _head(x_cls: jax.Array, d: int, d_out: int, m_d: jax.Array | None) -> jax.Array:
  h = MaskedLayerNorm(d, name="head_norm")(x_cls, m_d)
  return nn.Dense(d_out, name="head")(nn.relu(h))


class FTTransformerSupernet(nn.Module):
  """Masked FT-Transformer supernet: ``d_token = widths[-1]``, ``heads[-1]`` heads, FFN width
  ``max_ffn_hidden``, ``max_depth`` blocks."""

  space: TabularSpace

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None) -> jax.Array:
    del row_weights  # no BatchNorm
    from cenas_jax.supernets.tabular import _lookup, _mask, _rows  # pylint: disable=import-outside-toplevel
    s = self.space
    a = _rows(arch, x.shape[0])
    D, H, F = s.widths[-1], s.heads[-1], s.max_ffn_hidden
    depth = _lookup(s.depths, a[:, 0])
    d_tok = _lookup(s.widths, a[:, 1])
    m_d = _mask(d_tok, D, x.dtype)[:, None, :]
    t = Tokenizer(s.n_num, s.cat_cardinalities, D, name="tokenizer")(x) * m_d
    for i in range(s.max_depth):
      heads = _lookup(s.heads, a[:, 2 + 2 * i])
      hidden = jnp.floor(_lookup(s.ffn_ratios, a[:, 3 + 2 * i]) * d_tok + 0.5)
      y = Block(D, H, s.head_dim, F, first=i == 0, name=f"block_{i}")(
          t, train=train, m_d=m_d, m_h=_mask(heads, H, x.dtype)[:, None, :, None],
          m_f=_mask(hidden, F, x.dtype)[:, None, :])
      t = y if i == 0 else jnp.where((i < depth)[:, None, None], y, t)
    return _head(t[:, -1], D, s.d_out, m_d[:, 0])


class FTTransformer(nn.Module):
  """Standalone FT-Transformer; ``blocks`` is ``((heads, d_hidden), ...)``."""

  n_num: int
  cat_cardinalities: tuple[int, ...]
  d_token: int
  blocks: tuple[tuple[int, int], ...]
  head_dim: int
  d_out: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None) -> jax.Array:
    del row_weights
    t = Tokenizer(self.n_num, self.cat_cardinalities, self.d_token, name="tokenizer")(x)
    for i, (h, f) in enumerate(self.blocks):
      t = Block(self.d_token, h, self.head_dim, f, first=i == 0,
                cls_only=i == len(self.blocks) - 1, name=f"block_{i}")(t, train=train)
    return _head(t[:, -1], self.d_token, self.d_out, None)


def standalone(space: TabularSpace, arch: np.ndarray) -> FTTransformer:
  d = space.decode(arch)
  return FTTransformer(n_num=space.n_num, cat_cardinalities=tuple(space.cat_cardinalities),
                       d_token=d["d_token"], head_dim=space.head_dim, d_out=space.d_out,
                       blocks=tuple((b["heads"], b["d_hidden"]) for b in d["blocks"]))


def _dense(p: dict, d_in: int, cols: list[tuple[int, int]]) -> dict:
  """A Dense's params keeping input rows ``[:d_in]`` and the column ranges ``cols``, in order."""
  return {"kernel": jnp.concatenate([p["kernel"][:d_in, a:b] for a, b in cols], axis=1),
          "bias": jnp.concatenate([p["bias"][a:b] for a, b in cols])}


def materialize(space: TabularSpace, variables: dict[str, Any],
                arch: np.ndarray) -> tuple[nn.Module, dict[str, Any]]:
  """The standalone FT-Transformer of ``arch`` and its params sliced from the supernet's."""
  module = standalone(space, arch)
  p = variables["params"]
  d = module.d_token
  E, HE, F = space.head_dim, space.heads[-1] * space.head_dim, space.max_ffn_hidden
  params = {"tokenizer": {k: v[..., :d] for k, v in p["tokenizer"].items()}}
  for i, (h, f) in enumerate(module.blocks):
    b = p[f"block_{i}"]
    blk = {"qkv": _dense(b["qkv"], d, [(j * HE, j * HE + h * E) for j in range(3)]),
           "out": _dense(b["out"], h * E, [(0, d)]),
           "ffn_norm": {k: v[:d] for k, v in b["ffn_norm"].items()},
           "ffn_in": _dense(b["ffn_in"], d, [(0, f), (F, F + f)]),
           "ffn_out": _dense(b["ffn_out"], f, [(0, d)])}
    if i:
      blk["attn_norm"] = {k: v[:d] for k, v in b["attn_norm"].items()}
    params[f"block_{i}"] = blk
  params["head_norm"] = {k: v[:d] for k, v in p["head_norm"].items()}
  params["head"] = _dense(p["head"], d, [(0, space.d_out)])
  return module, {"params": params}
