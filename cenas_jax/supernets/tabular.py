"""Weight-entangled tabular supernets by masking, and ``materialize`` to standalone networks.

MLP and ResNet live here; the FT-Transformer (same mechanism, the third ``kind``) in
``cenas_jax.supernets.tabular_ftt``, dispatched to by ``supernet``, ``standalone`` and
``materialize``.

Every width choice of a layer shares one kernel of the largest size (AutoFormer / TabNAS
entanglement): a sub-network of width ``w`` uses the leading slice ``W[:w_in, :w_out]``. The supernet
computes the largest network and multiplies each layer's output by a 0/1 mask of its active units,
so inactive units are exactly 0 and the next matmul reads only the active rows of its kernel; depth
is a ``where`` on the residual stream (ResNet) or on the hidden state (MLP, valid because all blocks
share one width). The architecture (``cenas_jax.spaces.tabular`` index vector) is an *input* array,
per row (``(B, n_decisions)``) or shared (``(n_decisions,)``), so one compiled function serves every
sub-network, training steps can carry it inside the batch, and ``jax.vmap`` over architectures
scores many candidates in one call.

``dropout=True`` applies each row's dropout rates outside training too (BatchNorm stays in inference
mode): in inference mode dropout is the identity, so a score that should see the dropout decisions
must draw their noise (``tabular_nas.search.Supernet``'s ``score_dropout``).

``materialize(space, variables, arch)`` returns the standalone network (an ordinary Linen module of
exactly the sub-network's shapes) and its sliced variables; in inference mode its outputs equal the
supernet's up to float rounding (tested on random architectures of every space).
"""

from __future__ import annotations

import itertools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.spaces.tabular import TabularSpace
from cenas_jax.supernets.layers import MaskableBatchNorm, row_dropout


_COUNTER = itertools.count()  # gives each compiled forward its own trace count


def _rows(arch: jax.Array, n: int) -> jax.Array:
  arch = jnp.asarray(arch, jnp.int32)
  return jnp.broadcast_to(arch, (n, arch.shape[-1])) if arch.ndim == 1 else arch


def _lookup(values, idx: jax.Array) -> jax.Array:
  """``values[idx]`` as a one-hot product: a gather from a constant table by batch-sharded indices
  is refused under explicit sharding, a broadcast product is not. Exact for the small integers and
  rates of a space (float32)."""
  table = jnp.asarray(values, jnp.float32)
  return jnp.sum(jax.nn.one_hot(idx, table.shape[0], dtype=jnp.float32) * table, axis=-1)


def _mask(width: jax.Array, size: int, dtype) -> jax.Array:
  return (jnp.arange(size)[None, :] < width[:, None]).astype(dtype)


def _gate(on: jax.Array, row_weights: jax.Array | None) -> jax.Array:
  """Whether the rows (weighted) mostly use a layer: all rows of a training batch share one arch."""
  w = jnp.ones(on.shape, jnp.float32) if row_weights is None else row_weights
  return jnp.sum(on.astype(jnp.float32) * w) > 0.5 * jnp.sum(w)


class MLPSupernet(nn.Module):
  """Masked MLP supernet: ``max_depth`` blocks Linear -> ReLU -> Dropout of width ``widths[-1]``."""

  space: TabularSpace

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None, dropout: bool | None = None) -> jax.Array:
    s = self.space
    drop = train if dropout is None else dropout
    a = _rows(arch, x.shape[0])
    depth = _lookup(s.depths, a[:, 0])
    m = _mask(_lookup(s.widths, a[:, 1]), s.widths[-1], x.dtype)
    h = x
    for i in range(s.max_depth):
      z = nn.relu(nn.Dense(s.widths[-1], name=f"layer_{i}")(h)) * m
      z = row_dropout(self, z, _lookup(s.dropouts, a[:, 2 + i]), drop)
      h = z if i == 0 else jnp.where((i < depth)[:, None], z, h)
    return nn.Dense(s.d_out, name="head")(h)


class MLP(nn.Module):
  """Standalone MLP: blocks Linear -> ReLU -> Dropout of the given widths, then a Linear head."""

  widths: tuple[int, ...]
  dropouts: tuple[float, ...]
  d_out: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None) -> jax.Array:
    del row_weights  # no BatchNorm
    for i, (w, p) in enumerate(zip(self.widths, self.dropouts)):
      x = row_dropout(self, nn.relu(nn.Dense(w, name=f"layer_{i}")(x)), p, train)
    return nn.Dense(self.d_out, name="head")(x)


class ResNetSupernet(nn.Module):
  """Masked rtdl ResNet supernet: ``d_main = widths[-1]``, ``d_hidden = hidden_widths[-1]``."""

  space: TabularSpace

  @nn.compact
  def __call__(self, x: jax.Array, arch: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None, dropout: bool | None = None) -> jax.Array:
    s = self.space
    drop = train if dropout is None else dropout
    a = _rows(arch, x.shape[0])
    D, H = s.widths[-1], s.hidden_widths[-1]
    n_blocks = _lookup(s.depths, a[:, 0])
    m_main = _mask(_lookup(s.widths, a[:, 1]), D, x.dtype)
    is_bn = [float(n == "batchnorm") for n in s.norms]
    x = nn.Dense(D, name="first")(x) * m_main
    for i in range(s.max_depth):
      norm, dh, p1, p2 = (a[:, 2 + 4 * i + k] for k in range(4))
      active = i < n_blocks
      bn_on = (_lookup(is_bn, norm) > 0.5) & active
      z = MaskableBatchNorm(D, name=f"norm_{i}")(x, train=train, row_weights=row_weights,
                                                 update=_gate(bn_on, row_weights))
      z = jnp.where(bn_on[:, None], z * m_main, x)
      z = nn.relu(nn.Dense(H, name=f"linear1_{i}")(z)) * _mask(_lookup(s.hidden_widths, dh), H, x.dtype)
      z = row_dropout(self, z, _lookup(s.dropouts, p1), drop)
      z = nn.Dense(D, name=f"linear2_{i}")(z) * m_main
      z = row_dropout(self, z, _lookup(s.dropouts, p2), drop)
      x = x + jnp.where(active[:, None], z, 0.0)
    h = MaskableBatchNorm(D, name="head_norm")(x, train=train, row_weights=row_weights) * m_main
    return nn.Dense(s.d_out, name="head")(nn.relu(h))


class ResNet(nn.Module):
  """Standalone rtdl ResNet; ``blocks`` is ``((norm, d_hidden, dropout1, dropout2), ...)``."""

  d_main: int
  blocks: tuple[tuple[str, int, float, float], ...]
  d_out: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               row_weights: jax.Array | None = None) -> jax.Array:
    x = nn.Dense(self.d_main, name="first")(x)
    for i, (norm, dh, p1, p2) in enumerate(self.blocks):
      z = x
      if norm == "batchnorm":
        z = MaskableBatchNorm(self.d_main, name=f"norm_{i}")(z, train=train, row_weights=row_weights)
      z = nn.relu(nn.Dense(dh, name=f"linear1_{i}")(z))
      z = row_dropout(self, z, p1, train)
      z = nn.Dense(self.d_main, name=f"linear2_{i}")(z)
      x = x + row_dropout(self, z, p2, train)
    h = MaskableBatchNorm(self.d_main, name="head_norm")(x, train=train, row_weights=row_weights)
    return nn.Dense(self.d_out, name="head")(nn.relu(h))


def supernet(space: TabularSpace) -> nn.Module:
  """The masked supernet module of ``space``."""
  if space.kind == "ftt":
    return _ftt().FTTransformerSupernet(space)
  return MLPSupernet(space) if space.kind == "mlp" else ResNetSupernet(space)


def _ftt():
  # Imported late: tabular_ftt reuses this module's helpers (_rows, _lookup, _mask).
  from cenas_jax.supernets import tabular_ftt  # pylint: disable=import-outside-toplevel
  return tabular_ftt


def standalone(space: TabularSpace, arch: np.ndarray) -> nn.Module:
  """The standalone network (fresh module, no weights) of one architecture."""
  if space.kind == "ftt":
    return _ftt().standalone(space, arch)
  d = space.decode(arch)
  if d["kind"] == "mlp":
    return MLP(widths=(d["width"],) * d["depth"], dropouts=d["dropouts"], d_out=space.d_out)
  return ResNet(d_main=d["d_main"], d_out=space.d_out,
                blocks=tuple((b["norm"], b["d_hidden"], b["dropout1"], b["dropout2"])
                             for b in d["blocks"]))


def init_supernet(space: TabularSpace, key: jax.Array) -> dict[str, Any]:
  """Variables (``params`` and, for ResNet, ``batch_stats``) of the supernet."""
  x = jnp.zeros((2, space.d_in), jnp.float32)
  # Jitted: op-by-op initialization of a deep supernet compiles every op on its own (FT-Transformer:
  # ~15 s on 2 CPU cores, against ~2 s for one compile).
  init = jax.jit(supernet(space).init)
  return dict(init(key, x, jnp.zeros(len(space.n_choices), jnp.int32)))


def _slice_dense(p: dict, d_in: int, d_out: int) -> dict:
  return {"kernel": p["kernel"][:d_in, :d_out], "bias": p["bias"][:d_out]}


def _slice_vec(tree: dict, d: int) -> dict:
  return {k: v[:d] for k, v in tree.items()}


def materialize(space: TabularSpace, variables: dict[str, Any],
                arch: np.ndarray) -> tuple[nn.Module, dict[str, Any]]:
  """The standalone network of ``arch`` and its variables sliced from the supernet's.

  Args:
    space: the search space.
    variables: supernet variables (``{"params": ..., "batch_stats": ...}``).
    arch: one index vector.

  Returns:
    ``(module, variables)``: ``module.apply(variables, x)`` equals the supernet's inference output
    for ``arch``.
  """
  if space.kind == "ftt":
    return _ftt().materialize(space, variables, arch)
  module = standalone(space, arch)
  p = variables["params"]
  d = space.decode(arch)
  if d["kind"] == "mlp":
    w, n_in = d["width"], space.d_in
    params = {f"layer_{i}": _slice_dense(p[f"layer_{i}"], n_in if i == 0 else w, w)
              for i in range(d["depth"])}
    params["head"] = _slice_dense(p["head"], w, space.d_out)
    return module, {"params": params}
  dm = d["d_main"]
  stats = variables["batch_stats"]
  params = {"first": _slice_dense(p["first"], space.d_in, dm)}
  new_stats = {}
  for i, b in enumerate(d["blocks"]):
    if b["norm"] == "batchnorm":
      params[f"norm_{i}"] = _slice_vec(p[f"norm_{i}"], dm)
      new_stats[f"norm_{i}"] = _slice_vec(stats[f"norm_{i}"], dm)
    params[f"linear1_{i}"] = _slice_dense(p[f"linear1_{i}"], dm, b["d_hidden"])
    params[f"linear2_{i}"] = _slice_dense(p[f"linear2_{i}"], b["d_hidden"], dm)
  params["head_norm"] = _slice_vec(p["head_norm"], dm)
  new_stats["head_norm"] = _slice_vec(stats["head_norm"], dm)
  params["head"] = _slice_dense(p["head"], dm, space.d_out)
  return module, {"params": params, "batch_stats": new_stats}


def make_forward(space: TabularSpace, *, max_traces: int = 1):
  """The jitted inference forward ``f(variables, x, arch) -> outputs`` of the supernet, for every
  architecture of ``space``; a retrace (a new shape) fails (``chex.assert_max_traces``)."""
  module = supernet(space)

  def forward(variables, x, arch):
    return module.apply(variables, x, arch)

  forward.__name__ = forward.__qualname__ = f"supernet_forward_{next(_COUNTER)}"
  return jax.jit(chex.assert_max_traces(forward, n=max_traces))


def make_vmapped_forward(space: TabularSpace):
  """``f(variables, x, archs (K, n_decisions)) -> (K, B, d_out)``: K candidates in one call."""
  module = supernet(space)
  return jax.jit(jax.vmap(lambda v, x, a: module.apply(v, x, a), in_axes=(None, None, 0)))

