"""Plain PyTorch (eager, CPU) standalone tabular networks: the reference of ``bench_tabular.py --torch``.

The same networks as ``cenas_jax.supernets.tabular.MLP`` and ``ResNet`` (what ``standalone`` and
``materialize`` return), built from ``TabularSpace.decode``'s description:

- MLP: ``depth`` blocks Linear -> ReLU -> Dropout of one width, then a Linear head;
- ResNet (rtdl): Linear(d_in, d_main), blocks ``x + Drop2(Linear2(Drop1(ReLU(Linear1(Norm(x))))))``
  with BatchNorm or no norm per block, head BatchNorm -> ReLU -> Linear.

BatchNorm has PyTorch's defaults (momentum 0.1, eps 1e-5), which are ``MaskableBatchNorm``'s
(``momentum=0.9`` there is the decay of the running average, the same update). One known difference:
in training PyTorch updates the running variance with the unbiased batch variance, Flax with the
biased one; it changes no training step's output, only the statistics used in evaluation. The
FT-Transformer space has no PyTorch twin here.

``load_flax_variables`` copies a Flax network's ``params`` and ``batch_stats`` in (matched by their
Linen names), so the benchmark can check that both compute the same outputs. ``torch`` is not a
dependency of the package but the optional ``bench`` extra; see ``_torch_darts.py`` for running it
from a separate venv, and for why the thread count matters on a loaded machine (``bench_tabular.py
--torch`` sets ``OMP_WAIT_POLICY=PASSIVE`` for that reason, and uses all of its cores).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


def _bn(features: int) -> nn.BatchNorm1d:
  return nn.BatchNorm1d(features, eps=1e-5, momentum=0.1)


class MLP(nn.Module):
  """Blocks Linear -> ReLU -> Dropout of ``widths``, then a Linear head to ``d_out``."""

  def __init__(self, d_in: int, widths: tuple[int, ...], dropouts: tuple[float, ...], d_out: int):
    super().__init__()
    dims = (d_in, *widths)
    self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.drops = nn.ModuleList(nn.Dropout(p) for p in dropouts)
    self.head = nn.Linear(dims[-1], d_out)

  def forward(self, x):
    for layer, drop in zip(self.layers, self.drops):
      x = drop(torch.relu(layer(x)))
    return self.head(x)


class ResNetBlock(nn.Module):
  """``x + Drop2(Linear2(Drop1(ReLU(Linear1(Norm(x))))))``; ``norm`` is ``"batchnorm"`` or ``"none"``."""

  def __init__(self, d_main: int, norm: str, d_hidden: int, dropout1: float, dropout2: float):
    super().__init__()
    self.norm = _bn(d_main) if norm == "batchnorm" else nn.Identity()
    self.linear1 = nn.Linear(d_main, d_hidden)
    self.drop1 = nn.Dropout(dropout1)
    self.linear2 = nn.Linear(d_hidden, d_main)
    self.drop2 = nn.Dropout(dropout2)

  def forward(self, x):
    z = self.drop1(torch.relu(self.linear1(self.norm(x))))
    return x + self.drop2(self.linear2(z))


class ResNet(nn.Module):
  """rtdl ResNet: Linear(d_in, d_main), the blocks, head BatchNorm -> ReLU -> Linear."""

  def __init__(self, d_in: int, d_main: int, blocks: tuple[Mapping[str, Any], ...], d_out: int):
    super().__init__()
    self.first = nn.Linear(d_in, d_main)
    self.blocks = nn.ModuleList(ResNetBlock(d_main, b["norm"], b["d_hidden"], b["dropout1"],
                                            b["dropout2"]) for b in blocks)
    self.head_norm = _bn(d_main)
    self.head = nn.Linear(d_main, d_out)

  def forward(self, x):
    x = self.first(x)
    for block in self.blocks:
      x = block(x)
    return self.head(torch.relu(self.head_norm(x)))


def standalone(space, arch: np.ndarray) -> nn.Module:
  """The PyTorch network of one architecture of an MLP or ResNet ``TabularSpace`` (fresh weights)."""
  d = space.decode(arch)
  if d["kind"] == "mlp":
    return MLP(space.d_in, (d["width"],) * d["depth"], d["dropouts"], space.d_out)
  if d["kind"] == "resnet":
    return ResNet(space.d_in, d["d_main"], d["blocks"], space.d_out)
  raise ValueError(f"no PyTorch network for the {d['kind']!r} space")


def count_params(net: nn.Module) -> int:
  """Trainable parameters (BatchNorm running statistics are buffers, so not counted)."""
  return sum(p.numel() for p in net.parameters())


Path = tuple[str, ...]


def flax_paths(net: nn.Module) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, torch.Tensor]]]:
  """Each parameter and BatchNorm statistic of ``net`` with its path in the Flax standalone network's
  ``params`` and ``batch_stats`` trees (the names ``supernets.tabular.MLP`` / ``ResNet`` give)."""
  params, stats = [], []

  def dense(m: nn.Linear, name: str):
    params.extend([((name, "kernel"), m.weight), ((name, "bias"), m.bias)])

  def bn(m: nn.BatchNorm1d, name: str):
    params.extend([((name, "scale"), m.weight), ((name, "bias"), m.bias)])
    stats.extend([((name, "mean"), m.running_mean), ((name, "var"), m.running_var)])

  if isinstance(net, MLP):
    for i, layer in enumerate(net.layers):
      dense(layer, f"layer_{i}")
  else:
    dense(net.first, "first")
    for i, block in enumerate(net.blocks):
      if isinstance(block.norm, nn.BatchNorm1d):
        bn(block.norm, f"norm_{i}")
      dense(block.linear1, f"linear1_{i}")
      dense(block.linear2, f"linear2_{i}")
    bn(net.head_norm, "head_norm")
  dense(net.head, "head")
  return params, stats


def _n_leaves(tree: Mapping[str, Any]) -> int:
  return sum(_n_leaves(v) if isinstance(v, Mapping) else 1 for v in tree.values())


@torch.no_grad()
def load_flax_variables(net: nn.Module, variables: Mapping[str, Any]) -> None:
  """Copies a Flax standalone network's ``params`` (and ``batch_stats``) into ``net`` of the same
  architecture; dense kernels ``(in, out)`` become ``(out, in)``. Raises ``ValueError`` on a missing,
  extra or mis-shaped leaf."""
  for collection, pairs in zip(("params", "batch_stats"), flax_paths(net)):
    tree = variables.get(collection, {})
    if _n_leaves(tree) != len(pairs):
      raise ValueError(f"{collection}: {_n_leaves(tree)} Flax leaves, {len(pairs)} torch tensors")
    for (name, leaf_name), target in pairs:
      if name not in tree or leaf_name not in tree[name]:
        raise ValueError(f"{collection}: the Flax network has no {name}/{leaf_name}")
      value = np.asarray(tree[name][leaf_name])
      value = value.T if value.ndim == 2 else value
      if value.shape != tuple(target.shape):
        raise ValueError(f"{collection}/{name}/{leaf_name}: Flax {value.shape[::-1]} -> "
                         f"{value.shape}, torch {tuple(target.shape)}")
      target.copy_(torch.from_numpy(np.array(value)))  # a writable copy
