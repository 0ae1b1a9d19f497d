"""``NetworkCIFAR``: the standalone DARTS-space network of a genotype, in Flax Linen (NHWC).

The structure is the DARTS evaluation network (Liu et al., ICLR 2019): a 3x3 conv stem to ``3C``
channels, ``layers`` cells with reduction cells at ``layers // 3`` and ``2 * layers // 3`` (channels
doubled there), an auxiliary classifier after the second reduction, global average pooling and a
linear classifier. Each cell preprocesses its two inputs to ``C`` channels (ReLU-conv1x1-BN, or a
factorized reduction when the previous cell halved the resolution), applies the genotype's ops and
concatenates the chosen nodes. Convolutions have no bias (BatchNorm follows each); pooling ops have
no BatchNorm; BatchNorm uses PyTorch's defaults (momentum 0.1, i.e. Flax ``momentum=0.9``, eps 1e-5)
so trained statistics mean the same as in the reference recipe.

Drop-path (per example, on every non-identity op of a cell) takes its probability as a call argument,
so the schedule ``drop_path_prob * epoch / epochs`` changes it without recompiling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.spaces.darts import Genotype, check_channels
from cenas_jax.training.mesh import like_batch

_BN = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _conv(features: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
          name: str | None = None) -> nn.Conv:
  pad = dilation * (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                 kernel_dilation=dilation, feature_group_count=groups, use_bias=False, name=name)


class ReLUConvBN(nn.Module):
  features: int
  kernel: int = 1
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    x = _conv(self.features, self.kernel, self.stride)(nn.relu(x))
    return _BN(use_running_average=not train)(x)


class FactorizedReduce(nn.Module):
  """Halves the resolution with two stride-2 1x1 convs on offset grids, concatenated (``features``
  must be even)."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(x)
    a = nn.Conv(self.features // 2, (1, 1), strides=2, padding="VALID", use_bias=False)(x)
    b = nn.Conv(self.features // 2, (1, 1), strides=2, padding="VALID", use_bias=False)(x[:, 1:, 1:, :])
    return _BN(use_running_average=not train)(jnp.concatenate([a, b], axis=-1))


def depthwise_conv(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1, *,
                   cpu_impl: str = "block_diagonal") -> jax.Array:
  """Depthwise ``k x k`` convolution of NHWC ``x`` with ``w`` of shape ``(k, k, 1, C)``, zero "same"
  padding ``dilation * (k - 1) / 2``, output ``ceil(H / stride)``.

  Lowered for a CPU it is a dense convolution with the block-diagonal kernel ``w[..., c] * I``: C
  times the multiply-adds, yet at DARTS' CPU sizes (8-16 channels) its forward + backward is 4-7x
  faster than XLA:CPU's grouped convolution, and it compiles to one op where ``k * k`` shifted
  multiply-adds compile to dozens (``benchmarks/bench_darts.py`` measures all three). Lowered for
  any other platform it is XLA's grouped convolution (cuDNN's depthwise kernels on NVIDIA GPUs); the
  choice is made per lowering platform with ``lax.platform_dependent``, so kernels extracted for a
  GPU on a CPU host are the GPU's. All compute the same function; ``cpu_impl`` (``"block_diagonal"``,
  ``"shifted"`` or ``"grouped"``) exists for the benchmark.
  """
  k = w.shape[0]
  pad = dilation * (k - 1) // 2
  w = w.astype(x.dtype)

  def conv(x, kernel, groups):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad)] * 2,
                                        rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups)

  def block_diagonal(x, w):
    return conv(x, w[:, :, 0, :, None] * jnp.eye(x.shape[-1], dtype=w.dtype), 1)

  def shifted(x, w):
    b, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = jnp.zeros((b, ho, wo, c), x.dtype)
    for i in range(k):
      for j in range(k):
        start = (0, i * dilation, j * dilation, 0)
        limit = (b, start[1] + (ho - 1) * stride + 1, start[2] + (wo - 1) * stride + 1, c)
        out = out + jax.lax.slice(xp, start, limit, (1, stride, stride, 1)) * w[i, j, 0]
    return out

  def grouped(x, w):
    return conv(x, w, x.shape[-1])

  cpu = {"block_diagonal": block_diagonal, "shifted": shifted, "grouped": grouped}[cpu_impl]
  return jax.lax.platform_dependent(x, w, cpu=cpu, default=grouped)


class DepthwiseSeparable(nn.Module):
  """ReLU, depthwise kxk (optionally dilated), pointwise 1x1 to ``features``, BN: the block that
  both DARTS convolution ops are made of."""

  features: int
  kernel: int
  stride: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    # LeCun-normal over the kernel window, as nn.Conv initialises a grouped convolution.
    w = self.param("depthwise", nn.initializers.lecun_normal(), (self.kernel, self.kernel, 1, x.shape[-1]))
    x = depthwise_conv(nn.relu(x), w, self.stride, self.dilation)
    return _BN(use_running_average=not train)(_conv(self.features, 1)(x))


class SepConv(nn.Module):
  """Two depthwise-separable blocks; only the first strides, only the second changes channels."""

  features: int
  kernel: int
  stride: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwiseSeparable(x.shape[-1], self.kernel, self.stride)(x, train)
    return DepthwiseSeparable(self.features, self.kernel)(x, train)


def DilConv(features: int, kernel: int, stride: int) -> DepthwiseSeparable:  # pylint: disable=invalid-name
  """One depthwise-separable block with dilation 2."""
  return DepthwiseSeparable(features, kernel, stride, dilation=2)


def _window_counts(h: int, w: int, stride: int) -> np.ndarray:
  """``(1, Ho, Wo, 1)`` number of in-image pixels under each 3x3 window (padding 1): the divisor of an
  average pool that ignores padding, a numpy constant so XLA never constant-folds a reduce-window of
  ones (which took seconds per pool in compilation)."""
  ones = np.pad(np.ones((h, w), np.float32), 1)
  counts = sum(ones[i:i + h:stride, j:j + w:stride] for i in range(3) for j in range(3))
  return counts[None, :, :, None]


def _pool(kind: str, stride: int) -> Callable[[jax.Array], jax.Array]:
  """3x3 max or average pool (padding 1; the average ignores the padding, as DARTS' does)."""
  window, strides, padding = (1, 3, 3, 1), (1, stride, stride, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  if kind == "max":
    return lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding)

  def avg(x):
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
    return total / _window_counts(x.shape[1], x.shape[2], stride).astype(x.dtype)

  return avg


def make_op(name: str, features: int, stride: int) -> Callable[..., jax.Array]:
  """The op ``name`` as a callable ``op(x, train)``; parametric ops are Linen submodules.

  Must be called inside a compact method (the submodules bind to the caller).
  """
  if name == "none":
    return lambda x, train: jnp.zeros_like(x[:, ::stride, ::stride, :])
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    pool = _pool(name[:3], stride)
    return lambda x, train: pool(x)
  if name == "skip_connect":
    return (lambda x, train: x) if stride == 1 else FactorizedReduce(features)
  kernel = int(name[-1])
  if name.startswith("sep_conv"):
    return SepConv(features, kernel, stride)
  if name.startswith("dil_conv"):
    return DilConv(features, kernel, stride)
  raise ValueError(f"unknown DARTS op {name!r}")


def drop_path(x: jax.Array, drop_prob: jax.Array | float, rng: jax.Array) -> jax.Array:
  """Zeroes whole examples with probability ``drop_prob`` (a scalar, or one per example ``(B,)``)
  and rescales the rest by ``1 / (1 - drop_prob)`` so the expectation is unchanged."""
  keep = jnp.broadcast_to(1.0 - jnp.asarray(drop_prob, jnp.float32), (x.shape[0],))
  mask = jax.random.bernoulli(rng, keep, out_sharding=like_batch(x, 1))
  scale = jnp.where(mask, 1.0 / keep, 0.0).reshape(-1, *([1] * (x.ndim - 1)))
  return (x * scale).astype(x.dtype)


class Cell(nn.Module):
  """One normal or reduction cell of a genotype."""

  genotype: Genotype
  features: int
  reduction: bool
  reduction_prev: bool

  @nn.compact
  def __call__(self, s0, s1, train: bool, drop_prob: jax.Array | float = 0.0):
    pairs = self.genotype.reduce if self.reduction else self.genotype.normal
    concat = self.genotype.reduce_concat if self.reduction else self.genotype.normal_concat
    s0 = (FactorizedReduce(self.features) if self.reduction_prev else ReLUConvBN(self.features))(s0, train)
    s1 = ReLUConvBN(self.features)(s1, train)
    states = [s0, s1]
    for k in range(0, len(pairs), 2):
      node = 0.0
      for name, index in pairs[k:k + 2]:
        stride = 2 if self.reduction and index < 2 else 1
        h = make_op(name, self.features, stride)(states[index], train)
        if train and not (name == "skip_connect" and stride == 1):  # identities are never dropped
          h = drop_path(h, drop_prob, self.make_rng("drop_path"))
        node = node + h
      states.append(node)
    return jnp.concatenate([states[i] for i in concat], axis=-1)


class AuxiliaryHeadCIFAR(nn.Module):
  """Auxiliary classifier on the 8x8 maps after the second reduction (DARTS' layout)."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.avg_pool(nn.relu(x), (5, 5), strides=(3, 3), padding="VALID")
    x = nn.relu(_BN(use_running_average=not train)(_conv(128, 1)(x)))
    x = nn.Conv(768, (2, 2), padding="VALID", use_bias=False)(x)
    x = nn.relu(_BN(use_running_average=not train)(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class NetworkCIFAR(nn.Module):
  """The standalone CIFAR network of ``genotype``.

  Attributes:
    genotype: the cells.
    init_channels: ``C``, channels of the first cells (36 in the paper recipe).
    layers: number of cells (20 in the paper recipe).
    num_classes: classifier outputs.
    auxiliary: build the auxiliary head (its logits are returned in training only).

  ``__call__(x, train, drop_prob=0.)`` takes ``(B, 32, 32, 3)`` images and returns ``(logits,
  aux_logits)``; ``aux_logits`` is ``None`` unless ``auxiliary and train``. Training needs the
  ``drop_path`` RNG stream when ``drop_prob`` may be non-zero and ``mutable=["batch_stats"]``.
  """

  genotype: Genotype
  init_channels: int = 36
  layers: int = 20
  num_classes: int = 10
  auxiliary: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob: jax.Array | float = 0.0) -> tuple[Any, Any]:
    check_channels(self.init_channels, self.layers)
    c = self.init_channels
    s = _BN(use_running_average=not train)(_conv(3 * c, 3)(x))
    s0 = s1 = s
    reductions = (self.layers // 3, 2 * self.layers // 3)
    reduction_prev, aux_logits = False, None
    for i in range(self.layers):
      reduction = i in reductions
      if reduction:
        c *= 2
      cell = Cell(self.genotype, c, reduction, reduction_prev, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, train, drop_prob)
      reduction_prev = reduction
      if i == reductions[1] and self.auxiliary:
        head = AuxiliaryHeadCIFAR(self.num_classes, name="auxiliary_head")
        # Built in eval too, so that train and eval share one parameter tree.
        aux = head(s1, train)
        aux_logits = aux if train else None
    pooled = jnp.mean(s1, axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(pooled), aux_logits
