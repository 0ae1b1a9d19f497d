"""A plain PyTorch (eager, NCHW) ``NetworkCIFAR``: the reference the DARTS throughput is measured against.

The same network as ``cenas_jax.spaces.darts_net.NetworkCIFAR`` without the auxiliary head and
drop-path (a throughput reference needs neither): a 3x3 conv stem to ``3C`` channels + BN,
``layers`` cells with reduction cells at ``layers // 3`` and ``2 * layers // 3`` (channels doubled
there), each cell preprocessing its inputs to ``C`` channels (ReLU-conv1x1-BN, or a factorized
reduction after a reduction cell), global average pooling and a linear classifier. Convolutions have
no bias; BatchNorm has PyTorch's defaults (momentum 0.1, eps 1e-5); pools have no BatchNorm and the
average pool ignores the padding. Written after the structure of the DARTS reference code (Liu et
al., ICLR 2019), with our ``Genotype`` (pairs ``(op_name, input_node)``). Its parameter count is
``cenas_jax.spaces.darts.count_params``, and ``load_flax_variables`` copies a Flax network's
variables in (matched by their Linen names), so ``tests/spaces/test_torch_darts.py`` checks that the
two compute the same logits and gradients. One known difference: in training, PyTorch updates the
running variance with the unbiased batch variance, Flax with the biased one (a factor ``n / (n - 1)``,
``n = B * H * W``); it changes no step's output, only the statistics used in evaluation.

``torch`` is not a dependency of the package; it is the optional ``bench`` extra. It need not share
the package's environment: a separate venv with the main one's site-packages behind it works, e.g.

  python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install 'torch>=2.13'
  PYTHONPATH=$PWD:$VENV/lib/python3.11/site-packages \\
      /tmp/torchvenv/bin/python benchmarks/bench_darts.py --torch --channels 8 --layers 5 --batch 32

where ``$VENV`` is the environment the package is installed in (``pip install -e .[bench]`` in one
environment works too; PyPI's default Linux wheel of torch pulls the CUDA libraries, the CPU-only
wheel ``torch==2.13.0+cpu`` is enough and is what was measured).

Threads: PyTorch's CPU ops run on an OpenMP pool of ``torch.get_num_threads()`` threads (the core
count, 2 on the shared development machine). When other processes keep the cores busy, a pool thread
that is descheduled stalls every op's barrier: there the eager step of DARTS_V2 at C=8, 5 cells,
batch 32 took 7.8-12 s with the default 2 threads and 0.26 s with one (``OMP_NUM_THREADS=1`` or
``torch.set_num_threads(1)``), and the 2-thread time swung by 50x between repeats of one run. On a
loaded machine, a single-thread reference is the one whose ratio means something; report the thread
count with every number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from cenas_jax.spaces.darts import Genotype, check_channels


def _bn(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class ReLUConvBN(nn.Sequential):

  def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1):
    super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False),
                     _bn(c_out))


class FactorizedReduce(nn.Module):
  """Halves the resolution with two stride-2 1x1 convs on grids offset by one pixel, concatenated."""

  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
    self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
    self.bn = _bn(c_out)

  def forward(self, x):
    x = torch.relu(x)
    return self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], dim=1))


class DepthwiseSeparable(nn.Sequential):
  """ReLU, depthwise kxk (optionally dilated), pointwise 1x1, BN: the block of both conv ops."""

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1):
    pad = dilation * (kernel - 1) // 2
    super().__init__(nn.ReLU(),
                     nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation, groups=c_in, bias=False),
                     nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out))


class SepConv(nn.Sequential):
  """Two depthwise-separable blocks; only the first strides, only the second changes channels."""

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
    super().__init__(DepthwiseSeparable(c_in, c_in, kernel, stride), DepthwiseSeparable(c_in, c_out, kernel))


class Zero(nn.Module):

  def __init__(self, stride: int):
    super().__init__()
    self.stride = stride

  def forward(self, x):
    return torch.zeros_like(x[:, :, ::self.stride, ::self.stride])


def make_op(name: str, channels: int, stride: int) -> nn.Module:
  """The DARTS op ``name`` on ``channels`` channels (inputs and outputs alike)."""
  if name == "none":
    return Zero(stride)
  if name == "max_pool_3x3":
    return nn.MaxPool2d(3, stride, 1)
  if name == "avg_pool_3x3":
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
  if name == "skip_connect":
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)
  kernel = int(name[-1])
  if name.startswith("sep_conv"):
    return SepConv(channels, channels, kernel, stride)
  if name.startswith("dil_conv"):
    return DepthwiseSeparable(channels, channels, kernel, stride, dilation=2)
  raise ValueError(f"unknown DARTS op {name!r}")


class Cell(nn.Module):

  def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
               reduction_prev: bool):
    super().__init__()
    pairs = genotype.reduce if reduction else genotype.normal
    self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
    self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                        else ReLUConvBN(c_prev_prev, channels))
    self.preprocess1 = ReLUConvBN(c_prev, channels)
    self.inputs = tuple(index for _, index in pairs)
    self.ops = nn.ModuleList(make_op(name, channels, 2 if reduction and index < 2 else 1)
                             for name, index in pairs)

  def forward(self, s0, s1):
    states = [self.preprocess0(s0), self.preprocess1(s1)]
    for k in range(0, len(self.ops), 2):
      states.append(sum(self.ops[j](states[self.inputs[j]]) for j in (k, k + 1)))
    return torch.cat([states[i] for i in self.concat], dim=1)


class NetworkCIFAR(nn.Module):
  """The standalone CIFAR network of ``genotype``: ``(B, 3, 32, 32)`` images -> ``(B, num_classes)``."""

  def __init__(self, genotype: Genotype, init_channels: int = 36, layers: int = 20, num_classes: int = 10):
    super().__init__()
    check_channels(init_channels, layers)
    c = init_channels
    self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), _bn(3 * c))
    c_pp, c_p = 3 * c, 3 * c
    reductions = (layers // 3, 2 * layers // 3)
    reduction_prev = False
    self.cells = nn.ModuleList()
    for i in range(layers):
      reduction = i in reductions
      if reduction:
        c *= 2
      cell = Cell(genotype, c_pp, c_p, c, reduction, reduction_prev)
      self.cells.append(cell)
      c_pp, c_p = c_p, len(cell.concat) * c
      reduction_prev = reduction
    self.classifier = nn.Linear(c_p, num_classes)

  def forward(self, x):
    s0 = s1 = self.stem(x)
    for cell in self.cells:
      s0, s1 = s1, cell(s0, s1)
    return self.classifier(s1.mean(dim=(2, 3)))


def count_params(net: nn.Module) -> int:
  """Trainable parameters (BatchNorm running statistics are buffers, so not counted)."""
  return sum(p.numel() for p in net.parameters())


Path = tuple[str, ...]


def flax_paths(net: NetworkCIFAR) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, torch.Tensor]]]:
  """Each parameter and each BatchNorm statistic of ``net`` with its path in the Flax network's
  ``params`` and ``batch_stats`` trees (Linen names submodules ``ClassName_k`` by creation order
  within their parent; the classes here carry the same names)."""
  params, stats = [], []

  def conv(m, path):
    params.append((path + ("kernel",), m.weight))

  def bn(m, path):
    params.extend([(path + ("scale",), m.weight), (path + ("bias",), m.bias)])
    stats.extend([(path + ("mean",), m.running_mean), (path + ("var",), m.running_var)])

  def walk(m, path):
    if isinstance(m, ReLUConvBN):
      conv(m[1], path + ("Conv_0",))
      bn(m[2], path + ("BatchNorm_0",))
    elif isinstance(m, FactorizedReduce):
      conv(m.conv_a, path + ("Conv_0",))
      conv(m.conv_b, path + ("Conv_1",))
      bn(m.bn, path + ("BatchNorm_0",))
    elif isinstance(m, DepthwiseSeparable):
      params.append((path + ("depthwise",), m[1].weight))
      conv(m[2], path + ("Conv_0",))
      bn(m[3], path + ("BatchNorm_0",))
    elif isinstance(m, SepConv):
      walk(m[0], path + ("DepthwiseSeparable_0",))
      walk(m[1], path + ("DepthwiseSeparable_1",))
    elif isinstance(m, Cell):
      counts: dict[str, int] = {}
      for child in (m.preprocess0, m.preprocess1, *m.ops):
        kind = type(child).__name__
        if kind in ("ReLUConvBN", "FactorizedReduce", "DepthwiseSeparable", "SepConv"):
          counts[kind] = counts.get(kind, -1) + 1
          walk(child, path + (f"{kind}_{counts[kind]}",))

  conv(net.stem[0], ("Conv_0",))
  bn(net.stem[1], ("BatchNorm_0",))
  for i, cell in enumerate(net.cells):
    walk(cell, (f"cell_{i}",))
  params.extend([(("classifier", "kernel"), net.classifier.weight),
                 (("classifier", "bias"), net.classifier.bias)])
  return params, stats


def to_torch_layout(a: Any) -> np.ndarray:
  """A Flax leaf in PyTorch's layout: conv kernels HWIO (depthwise ``(k, k, 1, C)``) -> OIHW, dense
  kernels ``(in, out)`` -> ``(out, in)``."""
  a = np.asarray(a)
  if a.ndim == 4:
    return a.transpose(3, 2, 0, 1)
  return a.T if a.ndim == 2 else a


def _leaves(tree: Mapping[str, Any]) -> list[Any]:
  return [leaf for value in tree.values()
          for leaf in (_leaves(value) if isinstance(value, Mapping) else [value])]


@torch.no_grad()
def load_flax_variables(net: NetworkCIFAR, variables: Mapping[str, Any]) -> None:
  """Copies a Flax ``darts_net.NetworkCIFAR``'s ``params`` and ``batch_stats`` into ``net`` (of the
  same genotype and sizes); raises ``ValueError`` on a missing, extra or mis-shaped leaf."""
  for collection, pairs in zip(("params", "batch_stats"), flax_paths(net)):
    tree = variables[collection]
    n_leaves = len(_leaves(tree))
    if n_leaves != len(pairs):
      raise ValueError(f"{collection}: {n_leaves} Flax leaves, {len(pairs)} torch tensors")
    for path, target in pairs:
      leaf = tree
      for key in path:
        if key not in leaf:
          raise ValueError(f"{collection}: the Flax network has no {'/'.join(path)}")
        leaf = leaf[key]
      value = to_torch_layout(leaf)
      if value.shape != tuple(target.shape):
        raise ValueError(f"{collection}/{'/'.join(path)}: Flax {np.shape(leaf)} -> {value.shape}, "
                         f"torch {tuple(target.shape)}")
      target.copy_(torch.from_numpy(np.array(value)))  # a writable copy

