"""The DARTS / NASNet cell space for CIFAR-10: genotypes, published cells, encoding, sampling.

A network is two cell types, *normal* and *reduction* (which halves the resolution and doubles the
channels). Each cell has two inputs (the outputs of the two previous cells, nodes 0 and 1) and
``STEPS = 4`` intermediate nodes; intermediate node ``i`` (node ``i + 2``) sums two operations, each
applied to one earlier node. The cell's output concatenates the intermediate nodes along channels.

A ``Genotype`` follows the DARTS convention (Liu et al., ICLR 2019): ``normal`` and ``reduce`` are
lists of ``2 * STEPS`` pairs ``(op_name, input_node)``, two per intermediate node in order, and
``normal_concat`` / ``reduce_concat`` list the nodes whose outputs are concatenated.

Space size: node ``i`` picks 2 distinct inputs among ``i + 2`` and an op (of 7, ``none`` excluded)
for each, so one cell has ``prod_i C(i + 2, 2) * 7^8 = 180 * 7^8 ~ 1.04e9`` choices, counting the two
orderings of a node's pair once (the sum is symmetric), and a network ``~1.08e18``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cenas_jax.errors import DataError

OPS: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# Operations a derived (discrete) cell uses: ``none`` only exists inside the continuous relaxation.
CELL_OPS: tuple[str, ...] = OPS[1:]
STEPS = 4
INPUTS_PER_NODE = 2
EDGES_PER_CELL = STEPS * INPUTS_PER_NODE
CELL_TYPES = ("normal", "reduce")

Pair = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A discrete DARTS architecture (normal and reduction cell), hashable and JSON-serializable."""

  normal: tuple[Pair, ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[Pair, ...]
  reduce_concat: tuple[int, ...]

  def __post_init__(self):
    for cell in CELL_TYPES:
      pairs = tuple((str(op), int(i)) for op, i in getattr(self, cell))
      concat = tuple(int(n) for n in getattr(self, f"{cell}_concat"))
      object.__setattr__(self, cell, pairs)
      object.__setattr__(self, f"{cell}_concat", concat)
      _check_cell(cell, pairs, concat)

  def to_json(self) -> dict[str, Any]:
    return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
            "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

  @classmethod
  def from_json(cls, data: Mapping[str, Any] | str) -> Genotype:
    """From ``to_json``'s dict (or its JSON text); raises ``DataError`` naming what is wrong."""
    if isinstance(data, str):
      try:
        data = json.loads(data)
      except json.JSONDecodeError as e:
        raise DataError(f"genotype JSON does not parse: {e}") from None
    missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data]
    if missing:
      raise DataError(f"genotype JSON lacks {missing}; expected keys normal, normal_concat, reduce, "
                      "reduce_concat as written by Genotype.to_json.")
    try:
      return cls(normal=tuple(tuple(p) for p in data["normal"]), normal_concat=tuple(data["normal_concat"]),
                 reduce=tuple(tuple(p) for p in data["reduce"]), reduce_concat=tuple(data["reduce_concat"]))
    except (TypeError, ValueError) as e:
      raise DataError(f"invalid genotype JSON: {e}") from None


def _check_cell(cell: str, pairs: tuple[Pair, ...], concat: tuple[int, ...]) -> None:
  if len(pairs) % INPUTS_PER_NODE or not pairs:
    raise DataError(f"genotype {cell} cell has {len(pairs)} (op, input) pairs; need 2 per node.")
  for k, (op, node) in enumerate(pairs):
    if op not in OPS:
      raise DataError(f"genotype {cell} cell, pair {k}: unknown op {op!r}; choose from {list(OPS)}.")
    step = k // INPUTS_PER_NODE
    if not 0 <= node < step + 2:
      raise DataError(f"genotype {cell} cell, pair {k}: node {step + 2} cannot read node {node} "
                      f"(inputs must be earlier nodes 0..{step + 1}).")
  n_nodes = len(pairs) // INPUTS_PER_NODE + 2
  if not concat or any(not 0 <= n < n_nodes for n in concat):
    raise DataError(f"genotype {cell}_concat {list(concat)} must name nodes in 0..{n_nodes - 1}.")


def _g(normal: Sequence[Pair], reduce: Sequence[Pair]) -> Genotype:
  return Genotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))


# Published cells (as released with each paper's code) and the parameter counts their papers report
# for CIFAR-10 at 36 initial channels and 20 cells, auxiliary head excluded.
GENOTYPES: dict[str, Genotype] = {
    # Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (first order).
    "DARTS_V1": _g([("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                    ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
                   [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                    ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    # Ibid., second order: the cell usually called "DARTS".
    "DARTS_V2": _g([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                    ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
                   [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                    ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
    # Chen, Xie, Wu & Tian, "Progressive DARTS", ICCV 2019.
    "P_DARTS": _g([("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
                  [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
                   ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)]),
    # Xu et al., "PC-DARTS: Partial Channel Connections", ICLR 2020 (the CIFAR-10 cell).
    "PC_DARTS": _g([("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
                    ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
                   [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
                    ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]),
}
PUBLISHED_PARAMS_M: dict[str, float] = {
    "DARTS_V1": 3.3,  # DARTS paper, Table 1, "DARTS (first order) + cutout"
    "DARTS_V2": 3.3,  # DARTS paper, Table 1, "DARTS (second order) + cutout"
    "P_DARTS": 3.4,  # P-DARTS paper, Table 1, CIFAR-10 search
    "PC_DARTS": 3.6,  # PC-DARTS paper, Table 1
}


def get_genotype(name: str) -> Genotype:
  """A published genotype by name (``DARTS_V1``, ``DARTS_V2``, ``P_DARTS``, ``PC_DARTS``)."""
  try:
    return GENOTYPES[name]
  except KeyError:
    raise DataError(f"unknown genotype {name!r}; known: {sorted(GENOTYPES)} "
                    "(or give a genotype JSON file written by Genotype.to_json).") from None


# ---------------------------------------------------------------------------------------------
# Parameter count (closed form: LaMOO needs it for every candidate it classifies)


def _op_params(name: str, c: int, stride: int) -> int:
  """Trainable parameters of op ``name`` on ``c`` channels (conv weights + BatchNorm scale/bias)."""
  k = int(name[-1]) if name[-1].isdigit() else 0
  if name.startswith("sep_conv"):  # twice: depthwise kxk, pointwise 1x1, BN
    return 2 * (c * k * k + c * c + 2 * c)
  if name.startswith("dil_conv"):  # depthwise kxk, pointwise 1x1, BN
    return c * k * k + c * c + 2 * c
  if name == "skip_connect" and stride == 2:  # factorized reduction
    return _preprocess_params(c, c)
  return 0  # none, pools, identity


def _preprocess_params(c_in: int, c_out: int) -> int:
  """ReLU-conv1x1-BN and the factorized reduction (two ``c_out / 2`` halves, so ``c_out`` is even)
  have the same count."""
  return c_in * c_out + 2 * c_out


def check_channels(init_channels: int, layers: int) -> None:
  """Raises ``ValueError`` unless ``init_channels`` is even and positive and ``layers >= 3`` (the
  factorized reduction splits channels in halves; the network has two reduction cells)."""
  if init_channels < 2 or init_channels % 2:
    raise ValueError(f"init_channels must be even and >= 2 (factorized reductions halve it), got {init_channels}")
  if layers < 3:
    raise ValueError(f"layers must be >= 3 (two reduction cells and a normal one), got {layers}")


def count_params(genotype: Genotype, init_channels: int = 36, layers: int = 20, num_classes: int = 10,
                 auxiliary: bool = False) -> int:
  """Trainable parameters of ``darts_net.NetworkCIFAR(genotype, init_channels, layers)``.

  Counted as DARTS reports them: conv and linear weights, linear biases and BatchNorm scale/bias; no
  BatchNorm running statistics, and no auxiliary head unless ``auxiliary``. Equal to the Flax
  network's parameter count (tested on every published genotype and random ones). DARTS_V2 at
  ``init_channels=36, layers=20`` has 3,349,342, which DARTS' paper rounds to 3.3M.
  """
  check_channels(init_channels, layers)
  c = init_channels
  total = 3 * 3 * 3 * (3 * c) + 2 * (3 * c)  # stem: 3x3 conv to 3C, BN
  c_pp, c_p = 3 * c, 3 * c
  reductions = (layers // 3, 2 * layers // 3)
  c_aux = 0
  for i in range(layers):
    reduction = i in reductions
    if reduction:
      c *= 2
    pairs = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    total += _preprocess_params(c_pp, c) + _preprocess_params(c_p, c)
    total += sum(_op_params(name, c, 2 if reduction and index < 2 else 1) for name, index in pairs)
    c_pp, c_p = c_p, len(concat) * c
    if i == reductions[1]:
      c_aux = c_p
  total += c_p * num_classes + num_classes
  if auxiliary:  # conv1x1 to 128, BN, conv2x2 to 768, BN, linear
    total += c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes + num_classes
  return total


# ---------------------------------------------------------------------------------------------
# Encoding for LaMOO's classifiers, and sampling


def canonical(genotype: Genotype) -> Genotype:
  """The same architecture with each node's two pairs in a fixed order (input node, then op).

  A node sums its two inputs, so swapping them gives the same network; canonical genotypes compare
  equal exactly when the networks are the same.
  """
  def cell(pairs):
    out = []
    for k in range(0, len(pairs), INPUTS_PER_NODE):
      out.extend(sorted(pairs[k:k + INPUTS_PER_NODE], key=lambda p: (p[1], OPS.index(p[0]))))
    return tuple(out)

  return dataclasses.replace(genotype, normal=cell(genotype.normal), reduce=cell(genotype.reduce))


ENCODING_SIZE = len(CELL_TYPES) * EDGES_PER_CELL * 2  # (op index, input node) per edge


def encode(genotype: Genotype) -> np.ndarray:
  """Fixed-length integer code ``(32,)``: per cell, per edge of the canonical genotype, the op's
  index in ``OPS`` and the input node. ``decode`` inverts it (up to canonical order)."""
  g = canonical(genotype)
  code = [v for cell in (g.normal, g.reduce) for op, node in cell for v in (OPS.index(op), node)]
  if len(code) != ENCODING_SIZE:
    raise DataError(f"encode: the genotype has {len(code) // 2} edges, the space {ENCODING_SIZE // 2}.")
  return np.asarray(code, dtype=np.int32)


def decode(code: Any) -> Genotype:
  """The canonical genotype of an ``encode`` code (concat of every intermediate node)."""
  code = np.asarray(code, dtype=np.int64).reshape(len(CELL_TYPES), EDGES_PER_CELL, 2)
  cells = [tuple((OPS[int(op)], int(node)) for op, node in cell) for cell in code]
  return _g(*cells)


def features(genotypes: Sequence[Genotype]) -> np.ndarray:
  """``(n, 2 * 8 * (8 + 5))`` float one-hot features (op and input node of each edge).

  The integer ``encode`` is ordinal, which a kernel classifier would read as a distance between op
  indices; one-hot columns make every op equally far from every other.
  """
  n_nodes = STEPS + 1
  out = np.zeros((len(genotypes), len(CELL_TYPES) * EDGES_PER_CELL, len(OPS) + n_nodes), np.float32)
  for i, g in enumerate(genotypes):
    code = encode(g).reshape(-1, 2)
    out[i, np.arange(len(code)), code[:, 0]] = 1.0
    out[i, np.arange(len(code)), len(OPS) + code[:, 1]] = 1.0
  return out.reshape(len(genotypes), -1)


def sample(rng: np.random.Generator, n: int = 1) -> list[Genotype]:
  """``n`` genotypes drawn uniformly from the space (distinct inputs per node, ops from ``CELL_OPS``)."""
  out = []
  for _ in range(n):
    cells = []
    for _cell in CELL_TYPES:
      pairs: list[Pair] = []
      for step in range(STEPS):
        nodes = rng.choice(step + 2, size=INPUTS_PER_NODE, replace=False)
        ops = rng.integers(len(CELL_OPS), size=INPUTS_PER_NODE)
        pairs.extend((CELL_OPS[o], int(v)) for o, v in zip(ops, nodes))
      cells.append(pairs)
    out.append(canonical(_g(*cells)))
  return out


def space_size() -> int:
  """Distinct canonical genotypes (normal x reduction)."""
  per_cell = math.prod(math.comb(step + 2, INPUTS_PER_NODE) for step in range(STEPS))
  per_cell *= len(CELL_OPS) ** EDGES_PER_CELL
  return per_cell ** len(CELL_TYPES)
