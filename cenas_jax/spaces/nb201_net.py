"""The NAS-Bench-201 network in Flax Linen, for one cell given as 6 op indices.

The macro skeleton is NB201's ``TinyNetwork`` (CIFAR, NHWC input ``(B, 32, 32, 3)``)::

  stem: conv3x3(3 -> C, no bias) + BN
  stage 1: N cells at C channels, 32x32
  reduction: ResNet basic block C -> 2C, stride 2
  stage 2: N cells at 2C channels, 16x16
  reduction: ResNet basic block 2C -> 4C, stride 2
  stage 3: N cells at 4C channels, 8x8
  BN + ReLU, global average pool, dense(4C -> num_classes)

with C=16, N=5 in NB201. Inside a cell (edge and op order of ``cenas_jax.spaces.nb201``), node
``j = sum_{i<j} op_ij(node i)`` and the cell output is node 3. Ops: ``none`` (contributes nothing;
a node with only ``none`` inputs is zeros), ``skip_connect`` (identity), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU -> conv (no bias, "same" padding) -> BN, the NB201 ``ReLUConvBN`` order),
``avg_pool_3x3`` (3x3, stride 1, padding 1, padded cells not counted). The reduction block is NB201's
``ResNetBasicblock``: ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN, plus a shortcut AvgPool2x2 +
conv1x1 (no BN, no final ReLU). All BN layers are affine, momentum 0.9 in Flax terms (PyTorch
0.1), epsilon 1e-5.

Modes: ``net.apply(variables, x, train=False)`` uses the BN running statistics (inference; what
energy is measured and predicted on); ``net.apply(variables, x, train=True,
mutable=["batch_stats"])`` uses batch statistics and returns the updated running statistics
(training).

``count_params`` counts the ``params`` collection (weights, biases, BN scale and offset; not the BN
running statistics), which is how NB201 counts parameters. ``analytical_flops`` follows the
counter behind NB201's / HW-NAS-Bench's ``flops_M``: see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from cenas_jax.spaces.nb201 import (  # noqa: F401  (the op indices are re-exported)
    AVG_POOL,
    CONV1X1,
    CONV3X3,
    EDGES,
    NONE,
    SKIP,
    validate_ops,
)

INPUT_SHAPE_CIFAR: tuple[int, int, int] = (32, 32, 3)
"""Height, width, channels of a CIFAR-10 image (NHWC without the batch)."""

_BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
_BN_EPSILON = 1e-5


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name
  )


class ReLUConvBN(nn.Module):
  """ReLU -> conv (no bias, same padding) -> affine BN."""

  features: int
  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pad = (self.kernel_size - 1) // 2
    x = nn.relu(x)
    x = nn.Conv(
        self.features,
        (self.kernel_size, self.kernel_size),
        strides=(self.stride, self.stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        name="conv",
    )(x)
    return _batch_norm(train, name="bn")(x)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 average pool, stride 1, padding 1, padded cells excluded from the mean (NB201's pool)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class NB201Cell(nn.Module):
  """One NB201 cell (4 nodes, 6 edges) with a fixed op per edge; channels in == channels out."""

  ops: tuple[int, ...]
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    nodes = [x]
    for j in range(1, 4):
      total = None
      for e, (to_node, from_node) in enumerate(EDGES):
        if to_node != j or self.ops[e] == NONE:
          continue
        op, h = self.ops[e], nodes[from_node]
        name = f"edge_{to_node}_{from_node}"
        if op == SKIP:
          y = h
        elif op == CONV1X1:
          y = ReLUConvBN(self.features, 1, name=name)(h, train)
        elif op == CONV3X3:
          y = ReLUConvBN(self.features, 3, name=name)(h, train)
        elif op == AVG_POOL:
          y = avg_pool_3x3(h)
        else:  # pragma: no cover - validate_ops rejects anything else.
          raise ValueError(f"Unknown NB201 op index {op}.")
        total = y if total is None else total + y
      nodes.append(jnp.zeros_like(x) if total is None else total)
    return nodes[3]


class ResNetBasicBlock(nn.Module):
  """NB201's reduction block: two ReLU-conv3x3-BN (first with stride 2) + AvgPool2x2/conv1x1 shortcut."""

  features: int
  stride: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = ReLUConvBN(self.features, 3, self.stride, name="conv_a")(x, train)
    y = ReLUConvBN(self.features, 3, 1, name="conv_b")(y, train)
    s = self.stride
    shortcut = nn.avg_pool(x, (s, s), strides=(s, s), padding="VALID")
    shortcut = nn.Conv(self.features, (1, 1), use_bias=False, name="downsample")(shortcut)
    return shortcut + y


class NB201Net(nn.Module):
  """The NB201 CIFAR network (``TinyNetwork``) for one cell.

  Attributes:
    ops: 6 op indices in edge order (see ``cenas_jax.spaces.nb201``).
    num_classes: classifier outputs.
    C: channels of the first stage (doubled at each reduction).
    N: cells per stage.
  """

  ops: tuple[int, ...]
  num_classes: int = 10
  C: int = 16
  N: int = 5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)`` for NHWC images ``x`` of shape ``(B, H, W, 3)``."""
    if x.ndim != 4:
      raise ValueError(f"NB201Net expects NHWC images (B, H, W, C), got shape {x.shape}.")
    x = nn.Conv(self.C, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem_conv")(x)
    x = _batch_norm(train, name="stem_bn")(x)
    features = self.C
    for stage in range(3):
      if stage > 0:
        features *= 2
        x = ResNetBasicBlock(features, 2, name=f"reduction_{stage}")(x, train)
      for i in range(self.N):
        x = NB201Cell(self.ops, features, name=f"stage{stage + 1}_cell{i}")(x, train)
    x = nn.relu(_batch_norm(train, name="lastact_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(x)


def make_nb201_net(ops: Sequence[int], num_classes: int = 10, C: int = 16, N: int = 5) -> NB201Net:
  """The NB201 network for cell ``ops`` (6 op indices; validated).

  Raises:
    ValueError: bad ``ops`` (length, values) or non-positive sizes.
  """
  _check_sizes("make_nb201_net", num_classes=num_classes, C=C, N=N)
  return NB201Net(ops=validate_ops(ops), num_classes=int(num_classes), C=int(C), N=int(N))


def init_variables(
    net: NB201Net, rng: jax.Array, input_shape: Sequence[int] = (1, *INPUT_SHAPE_CIFAR)
) -> dict[str, Any]:
  """Initial ``{"params": ..., "batch_stats": ...}`` for ``net`` (``rng`` a ``jax.random.key``).

  The initializer is jitted (eager initialization of the 15 cells dispatches hundreds of small ops).
  On a CPU, compiling it for the default threefry key takes several times longer than for a
  ``jax.random.key(seed, impl="rbg")`` key.
  """
  x = jnp.zeros(tuple(input_shape), jnp.float32)
  return jax.jit(lambda key: net.init(key, x, train=False))(rng)


def count_params(ops: Sequence[int], num_classes: int = 10, C: int = 16, N: int = 5) -> int:
  """Number of trainable parameters (the ``params`` collection) of the NB201 network for ``ops``.

  Conv weights, BN scale/offset and the classifier's weights and bias; BN running statistics are
  not parameters (NB201 counts the same way: 0.073 M to 1.53 M over the space at C=16, N=5).
  Closed form over the layer shapes (the tests check it against the initialized variables); every
  non-``none`` conv edge counts, dead ones included (they hold parameters).

  Raises:
    ValueError: bad ``ops`` or non-positive sizes.
  """
  _check_sizes("count_params", num_classes=num_classes, C=C, N=N)
  ops = validate_ops(ops)
  total = 9 * 3 * C + 2 * C  # stem conv + BN
  cin = C
  for stage in range(3):
    c = C * 2**stage
    if stage > 0:
      total += 9 * cin * c + 2 * c + 9 * c * c + 2 * c + cin * c  # conv_a+BN, conv_b+BN, shortcut
    per_cell = sum((c * c if op == CONV1X1 else 9 * c * c) + 2 * c for op in ops
                   if op in (CONV1X1, CONV3X3))
    total += N * per_cell
    cin = c
  total += 2 * cin + cin * num_classes + num_classes  # last BN, classifier
  return total


def _check_sizes(where: str, **sizes: int) -> None:
  for name, v in sizes.items():
    if int(v) != v or v < 1:
      raise ValueError(f"{where}: {name} must be a positive integer, got {v!r}.")


def analytical_flops(
    ops: Sequence[int],
    num_classes: int = 10,
    C: int = 16,
    N: int = 5,
    *,
    input_hw: int = 32,
    unit: Literal["macs", "flops"] = "macs",
) -> int:
  """Multiply-accumulates (default) or FLOPs of one forward pass of one image.

  Convention (``unit="macs"``): one multiply-add counts 1; counted are the convolutions
  (``H_out * W_out * C_out * k * k * C_in``, no bias) and the classifier (``C_in * C_out`` plus
  ``C_out`` for its bias); BN, ReLU, pooling and additions count 0; every non-``none`` edge counts,
  also an edge whose result never reaches the cell output. This is exactly the counter behind
  NB201's / HW-NAS-Bench's ``flops_M``: ``flops_M == analytical_flops(ops) / 1e6`` for every cell
  of the HW-NAS-Bench CIFAR-10 table (their "FLOPs" are MACs). ``unit="flops"`` returns 2 x MACs
  (a multiply and an add each), the convention of roofline models.

  Note that XLA removes convolutions whose output is unused (dead edges), so the compiled network
  may run fewer MACs than this count.

  Raises:
    ValueError: bad ``ops`` or ``unit``.
  """
  ops = validate_ops(ops)
  if unit not in ("macs", "flops"):
    raise ValueError(f"analytical_flops: unit must be 'macs' or 'flops', got {unit!r}.")
  hw = input_hw
  macs = hw * hw * C * 3 * 9  # stem
  cin = C
  for stage in range(3):
    c = C * 2**stage
    if stage > 0:
      hw //= 2
      macs += hw * hw * c * cin * 9 + hw * hw * c * c * 9 + hw * hw * c * cin  # conv_a, conv_b, shortcut
    cin = c
    per_cell = sum(hw * hw * c * c * (9 if op == CONV3X3 else 1) for op in ops if op in (CONV1X1, CONV3X3))
    macs += N * per_cell
  macs += cin * num_classes + num_classes  # classifier weights + bias
  return macs if unit == "macs" else 2 * macs
