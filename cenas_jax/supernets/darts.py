"""The DARTS-space weight-sharing supernet (single-path one-shot, SPOS), as pure functions.

Every op of every edge of every cell owns its weights, as in DARTS' supernet: an edge is a pair
(intermediate node ``k``, input node ``j < k + 2``), 14 per cell, and each carries the 7 ops of
``spaces.darts.CELL_OPS``. An architecture selects one (op, input) per slot, two slots per node; a
training step runs exactly one such path (Guo et al., "Single Path One-Shot NAS", ECCV 2020).

**Why not one Linen module per (edge, op).** With a Python choice per slot, every sampled path is a
new program; with one ``lax.switch`` over the (input, op) branches of every slot, each switch holds
every branch and the program grows to ~200 op subgraphs per cell (it took more than 7 minutes to
compile a 5-cell, 4-channel supernet on a CPU). Here each op type's weights are *stacked over the
14 edges* and indexed by a traced edge id; a cell is one ``lax.scan`` over its 8 slots whose body is
one ``lax.switch`` over the 7 ops (14 in a reduction cell: stride 2 from inputs 0/1, stride 1 from
the nodes). The path is an int array, so **one compiled program serves every path**, and the
program holds 7-14 op subgraphs per cell.

**BatchNorm.** Ops use BatchNorm without affine parameters (as DARTS' supernet does) and always
normalise with the statistics of the batch in training. Running averages would mix the statistics of
every path that used an op, so none are kept: scoring a path first *recalibrates* it, i.e. runs
calibration batches through that path, averages each BatchNorm's batch statistics into population
statistics (:func:`combine_stats`), then evaluates held-out data with them (SPOS' choice; the
alternative, normalising each evaluation batch with its own statistics, depends on the batch's size
and composition). Statistics are per path slot (``(8, 2, 2, C)`` per cell: slot, BatchNorm position
in the op, mean/variance, channel) because a path uses exactly one op per slot.

Shapes are NHWC. An architecture ``arch`` is ``int32 (2, 8, 2)``: for the normal and the reduction
cell, per slot in canonical order, the op's index in ``spaces.darts.OPS`` (1..7; ``none`` is not in
the space) and the input node; ``arch_of(genotype)`` / ``genotype_of(arch)`` convert.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cenas_jax.spaces import darts as space
from cenas_jax.spaces.darts_net import _pool, depthwise_conv

N_EDGES = sum(k + 2 for k in range(space.STEPS))  # 14
# Edge id of (node k, input j) is EDGE_OFFSET[k] + j.
EDGE_OFFSET = tuple(sum(i + 2 for i in range(k)) for k in range(space.STEPS))
N_OPS = len(space.CELL_OPS)  # 7 (op index in OPS minus 1)
ARCH_SHAPE = (len(space.CELL_TYPES), space.EDGES_PER_CELL, 2)
# Few-shot splitting fixes the op of one edge that every architecture has: node 0 reads inputs 0
# and 1 (two distinct inputs among two), so slot 1 of the normal cell is always the edge 1 -> 2.
SPLIT_SLOT = (0, 1)
_EPS = 1e-5
_CONV_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

Params = dict[str, Any]
Stats = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
  """Shape of the supernet (DARTS' search network: 16 channels, 8 cells)."""

  init_channels: int = 16
  layers: int = 8
  num_classes: int = 10

  def __post_init__(self):
    space.check_channels(self.init_channels, self.layers)
    if self.num_classes < 2:
      raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

  def cells(self) -> list[tuple[int, bool, bool]]:
    """``(channels, reduction, reduction_prev)`` of each cell, as in ``NetworkCIFAR``."""
    c, out, prev = self.init_channels, [], False
    reductions = (self.layers // 3, 2 * self.layers // 3)
    for i in range(self.layers):
      reduction = i in reductions
      c = 2 * c if reduction else c
      out.append((c, reduction, prev))
      prev = reduction
    return out


# ---------------------------------------------------------------------------------------------
# Architectures


def arch_of(genotype: space.Genotype) -> np.ndarray:
  """``int32 (2, 8, 2)`` path of ``genotype`` (its canonical encoding).

  Raises:
    ValueError: the genotype uses ``none`` or does not concatenate every intermediate node (the
      supernet's cells always output all four).
  """
  full = tuple(range(2, 2 + space.STEPS))
  if genotype.normal_concat != full or genotype.reduce_concat != full:
    raise ValueError(f"the supernet's cells concatenate nodes {list(full)}; this genotype does not.")
  code = space.encode(genotype).reshape(ARCH_SHAPE)
  if (code[..., 0] == 0).any():
    raise ValueError("the op 'none' is not in the supernet's space (derived cells never use it).")
  return code


def genotype_of(arch: Any) -> space.Genotype:
  """The canonical genotype of a path (``spaces.darts.decode``)."""
  return space.decode(np.asarray(arch))


def sample_arch(key: jax.Array, split_op: jax.Array | int = -1) -> jax.Array:
  """A uniformly random path, jittable: per node two distinct inputs (ascending) and 7 ops.

  Args:
    key: PRNG key.
    split_op: ``-1``, or an index in ``CELL_OPS`` that the path must use on ``SPLIT_SLOT`` (the
      sub-supernet of a few-shot split); may be traced.

  Returns:
    ``int32 (2, 8, 2)``; the same distribution as ``spaces.darts.sample``.
  """
  cells = []
  for cell_key in jax.random.split(key, len(space.CELL_TYPES)):
    slots = []
    for k, node_key in enumerate(jax.random.split(cell_key, space.STEPS)):
      k_in, k_op = jax.random.split(node_key)
      # Two distinct inputs among k + 2, uniform over pairs: a, then b among the others.
      a = jax.random.randint(k_in, (), 0, k + 2)
      b = jax.random.randint(jax.random.fold_in(k_in, 1), (), 0, k + 1)
      b = b + (b >= a)
      inputs = jnp.stack([jnp.minimum(a, b), jnp.maximum(a, b)])
      ops = jax.random.randint(k_op, (space.INPUTS_PER_NODE,), 1, N_OPS + 1)
      slots.append(jnp.stack([ops, inputs], axis=-1))
    cells.append(jnp.concatenate(slots))
  arch = jnp.stack(cells).astype(jnp.int32)
  split_op = jnp.asarray(split_op, jnp.int32)
  forced = jnp.where(split_op >= 0, split_op + 1, arch[SPLIT_SLOT][0])
  return arch.at[SPLIT_SLOT + (0,)].set(forced)


# ---------------------------------------------------------------------------------------------
# Parameters


def _init_w(key: jax.Array, shape: tuple[int, ...], stacked: bool = False) -> jax.Array:
  """LeCun-normal conv/linear weights (fan-in = all axes but the last; a leading stack axis is not
  fan-in)."""
  batch = (0,) if stacked else ()
  in_axes = tuple(range(1 if stacked else 0, len(shape) - 1))
  return jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axes,
                                              out_axis=-1, batch_axis=batch)(key, shape)


def _init_cell(key: jax.Array, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> Params:
  keys = iter(jax.random.split(key, 20))
  if reduction_prev:
    pre0 = {"w1": _init_w(next(keys), (1, 1, c_pp, c // 2)), "w2": _init_w(next(keys), (1, 1, c_pp, c // 2))}
  else:
    pre0 = {"w": _init_w(next(keys), (1, 1, c_pp, c))}
  ops: Params = {}
  for name in _CONV_OPS:
    k = int(name[-1])
    blocks = 2 if name.startswith("sep") else 1
    ops[name] = {}
    for b in range(1, blocks + 1):
      ops[name][f"dw{b}"] = _init_w(next(keys), (N_EDGES, k, k, 1, c), stacked=True)
      ops[name][f"pw{b}"] = _init_w(next(keys), (N_EDGES, 1, 1, c, c), stacked=True)
  if reduction:  # the stride-2 skip_connect (factorized reduction) of the two edges from the inputs
    ops["skip_connect"] = {"w1": _init_w(next(keys), (2, 1, 1, c, c // 2), stacked=True),
                           "w2": _init_w(next(keys), (2, 1, 1, c, c // 2), stacked=True)}
  return {"pre0": pre0, "pre1": {"w": _init_w(next(keys), (1, 1, c_p, c))}, "ops": ops}


@functools.partial(jax.jit, static_argnums=1)
def init(key: jax.Array, config: SupernetConfig) -> Params:
  """Fresh supernet parameters (a pytree of float32 arrays); jitted, as op-by-op initialisation of
  the many stacked shapes compiles one kernel per shape."""
  cells = config.cells()
  keys = jax.random.split(key, len(cells) + 2)
  c0 = config.init_channels
  params: Params = {"stem": {"w": _init_w(keys[0], (3, 3, 3, 3 * c0))}, "cells": []}
  c_pp = c_p = 3 * c0
  for i, (c, reduction, reduction_prev) in enumerate(cells):
    params["cells"].append(_init_cell(keys[i + 1], c_pp, c_p, c, reduction, reduction_prev))
    c_pp, c_p = c_p, space.STEPS * c
  params["classifier"] = {"w": _init_w(keys[-1], (c_p, config.num_classes)),
                          "b": jnp.zeros((config.num_classes,))}
  return params


def param_count(params: Params) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
# Forward pass


def _conv(x: jax.Array, w: jax.Array, stride: int = 1) -> jax.Array:
  """Dense convolution (the stem's 3x3 and the 1x1s), zero "same" padding."""
  pad = (w.shape[0] - 1) // 2
  return lax.conv_general_dilated(x, w.astype(x.dtype), (stride, stride), [(pad, pad)] * 2,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bn(x: jax.Array, stat: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Normalises ``x`` per channel with ``stat = [mean, var]`` (``(2, C)``), or with the batch's own
  statistics when ``stat`` is None; returns ``(y, stat used)``. Statistics are computed in float32."""
  if stat is None:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(0, 1, 2))
    stat = jnp.stack([mean, jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))])
  y = (x - stat[0].astype(x.dtype)) * lax.rsqrt(stat[1] + _EPS).astype(x.dtype)
  return y, stat


def _factorized_reduce(x: jax.Array, w1: jax.Array, w2: jax.Array, stat):
  x = jax.nn.relu(x)
  a = _conv(x, w1, stride=2)
  b = _conv(x[:, 1:, 1:, :], w2, stride=2)
  return _bn(jnp.concatenate([a, b], axis=-1), stat)


def _relu_conv_bn(x: jax.Array, w: jax.Array, stat):
  return _bn(_conv(jax.nn.relu(x), w), stat)


def _op_branch(name: str, stride: int):
  """``branch(x, w, st) -> (y, slot_stats (2, 2, C))`` for op ``name``; ``w`` are its weights for one
  edge, ``st`` the slot's statistics or None."""

  def conv_op(x, w, st):
    dilation = 2 if name.startswith("dil") else 1
    stats = []
    for b in range(1, 3 if name.startswith("sep") else 2):
      x = depthwise_conv(jax.nn.relu(x), w[f"dw{b}"], stride if b == 1 else 1, dilation)
      x, s = _bn(_conv(x, w[f"pw{b}"]), None if st is None else st[b - 1])
      stats.append(s)
    if len(stats) == 1:
      stats.append(jnp.zeros_like(stats[0]))
    return x, jnp.stack(stats)

  def no_stats(y, x):
    return y, jnp.zeros((2, 2, x.shape[-1]), jnp.float32)

  if name in _CONV_OPS:
    return conv_op
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    pool = _pool(name[:3], stride)
    return lambda x, w, st: no_stats(pool(x), x)
  if name == "skip_connect" and stride == 1:
    return lambda x, w, st: no_stats(x, x)
  if name == "skip_connect":
    def reduce(x, w, st):
      y, s = _factorized_reduce(x, w["w1"], w["w2"], None if st is None else st[0])
      return y, jnp.stack([s, jnp.zeros_like(s)])
    return reduce
  raise ValueError(f"unknown op {name!r}")


def _switch(index: jax.Array, branches: list, *operands):
  """``lax.switch`` that runs one branch in the forward *and* one in the backward pass.

  Differentiating a plain ``lax.switch`` makes every branch emit the residuals of all branches
  (zeros for the branches not taken), which at DARTS' sizes made the backward pass of a supernet cell
  60x slower than its forward on a CPU. Here the residuals are the operands, and the backward pass
  recomputes the taken branch's forward inside its VJP (a remat of one op).
  """

  @jax.custom_vjp
  def run(index, operands):
    return lax.switch(index, branches, *operands)

  def fwd(index, operands):
    return run(index, operands), (index, operands)

  def bwd(res, ct):
    index, operands = res

    def vjp_of(branch):
      def f(operands, ct):
        return jax.vjp(lambda ops: branch(*ops), operands)[1](ct)[0]
      return f

    grads = lax.switch(index, [vjp_of(b) for b in branches], operands, ct)
    return None, grads

  run.defvjp(fwd, bwd)
  return run(index, operands)


def _cell(p: Params, s0: jax.Array, s1: jax.Array, arch_cell: jax.Array, reduction: bool,
          reduction_prev: bool, stats: Stats | None) -> tuple[jax.Array, Stats]:
  """One cell on path ``arch_cell`` (``(8, 2)``): preprocess, scan over the 8 slots, concatenate."""
  get = (lambda k: None) if stats is None else stats.get
  if reduction_prev:
    x0, st0 = _factorized_reduce(s0, p["pre0"]["w1"], p["pre0"]["w2"], get("pre0"))
  else:
    x0, st0 = _relu_conv_bn(s0, p["pre0"]["w"], get("pre0"))
  x1, st1 = _relu_conv_bn(s1, p["pre1"]["w"], get("pre1"))
  inputs = jnp.stack([x0, x1])  # (2, B, H, W, C)
  # Zeros made from the inputs keep their batch sharding (explicit sharding refuses to mix).
  zero = jnp.zeros_like(x1[:, ::2, ::2, :] if reduction else x1)
  b, h, w, c = zero.shape
  nodes = jnp.broadcast_to(zero, (space.STEPS,) + zero.shape)
  ops, node_in = arch_cell[:, 0] - 1, arch_cell[:, 1]
  node_of_slot = jnp.arange(space.EDGES_PER_CELL) // space.INPUTS_PER_NODE
  edge = jnp.asarray(EDGE_OFFSET)[node_of_slot] + node_in
  first = jnp.arange(space.EDGES_PER_CELL) % space.INPUTS_PER_NODE == 0

  def branch(name: str, stride: int, from_inputs: bool):
    fn = _op_branch(name, stride)

    def run(weights, x_input, x_node, j, e, st):
      if name == "skip_connect" and stride == 2:
        wts = jax.tree.map(lambda a: a[jnp.clip(j, 0, 1)], weights[name])
      elif name in _CONV_OPS:
        wts = jax.tree.map(lambda a: a[e], weights[name])
      else:
        wts = None
      return fn(x_input if from_inputs else x_node, wts, st)

    return run

  if reduction:  # branch = op + 7 * (input is a node): stride 2 from the cell's inputs, else 1
    branches = ([branch(n, 2, True) for n in space.CELL_OPS] + [branch(n, 1, False) for n in space.CELL_OPS])
    index = ops + N_OPS * (node_in >= 2)
    offset = 0  # nodes holds the four intermediate nodes (half resolution)
  else:
    branches = [branch(n, 1, False) for n in space.CELL_OPS]
    index = ops
    nodes = jnp.concatenate([inputs, nodes])  # one buffer: node i at position i
    offset = 2
  slot_stats = None if stats is None else stats["ops"]

  def body(carry, xs):
    nodes, acc = carry
    i, j, e, k, is_first, st = xs
    x_input = inputs[jnp.clip(j, 0, 1)]
    x_node = nodes[jnp.clip(j - 2 + offset, 0, nodes.shape[0] - 1)]
    y, s = _switch(i, branches, p["ops"], x_input, x_node, j, e, st)
    acc = jnp.where(is_first, y, acc + y)
    # Writing the partial sum after the first slot is harmless: a node never reads itself.
    nodes = lax.dynamic_update_index_in_dim(nodes, acc, k + offset, 0)
    return (nodes, acc), s

  xs = (index, node_in, edge, node_of_slot, first, slot_stats)
  (nodes, _), op_stats = lax.scan(body, (nodes, jnp.zeros_like(nodes[0])), xs)
  out = nodes[offset:]
  out = jnp.moveaxis(out, 0, -2).reshape(b, h, w, space.STEPS * c)
  return out, {"pre0": st0, "pre1": st1, "ops": op_stats}


def apply(params: Params, arch: jax.Array, images: jax.Array, config: SupernetConfig,
          stats: Stats | None = None) -> tuple[jax.Array, Stats]:
  """Logits of path ``arch`` on normalised images ``(B, 32, 32, 3)``.

  Args:
    params: from :func:`init`.
    arch: ``int32 (2, 8, 2)`` path (traced: one compiled program for every path).
    images: float images, normalised (``data.augment``).
    config: the supernet's shape (static).
    stats: BatchNorm statistics of this path (from :func:`combine_stats`); ``None``: every
      BatchNorm normalises with the batch's statistics (training, and calibration).

  Returns:
    ``(logits (B, num_classes), stats used)``: with ``stats=None`` the batch's statistics of every
    BatchNorm on the path (what calibration averages).
  """
  arch = jnp.asarray(arch, jnp.int32)
  get = (lambda k: None) if stats is None else stats.get
  s, stem_stat = _bn(_conv(images, params["stem"]["w"]), get("stem"))
  s0 = s1 = s
  cell_stats = []
  for i, (_, reduction, reduction_prev) in enumerate(config.cells()):
    st = None if stats is None else stats["cells"][i]
    out, used = _cell(params["cells"][i], s0, s1, arch[int(reduction)], reduction, reduction_prev, st)
    s0, s1 = s1, out
    cell_stats.append(used)
  pooled = jnp.mean(s1.astype(jnp.float32), axis=(1, 2))
  logits = pooled @ params["classifier"]["w"] + params["classifier"]["b"]
  return logits, {"stem": stem_stat, "cells": cell_stats}


def combine_stats(batch_stats: list[Stats]) -> Stats:
  """Population statistics from the per-batch statistics of equal-sized batches of one path:
  ``mean = avg(mean_b)``, ``var = avg(var_b + mean_b^2) - mean^2``."""
  if not batch_stats:
    raise ValueError("calibration needs at least one batch.")

  def combine(*stats):
    s = jnp.stack(stats)
    mean = jnp.mean(s[..., 0, :], axis=0)
    second = jnp.mean(s[..., 1, :] + jnp.square(s[..., 0, :]), axis=0)
    return jnp.stack([mean, jnp.maximum(second - jnp.square(mean), 0.0)], axis=-2)

  return jax.tree.map(combine, *batch_stats)
