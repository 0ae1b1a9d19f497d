"""Search spaces for tabular data: MLP, ResNet and FT-Transformer (rtdl-style), as chains of
categorical decisions.

An architecture is an int32 vector of choice indices, one per decision (``TabularSpace.decisions``);
the same vector drives the masked supernet (``cenas_jax.supernets.tabular``), the controller
(one categorical per decision) and the per-layer energy lookup. ``decode`` turns it into the
standalone network's description, ``flat_index`` / ``from_flat_index`` into one integer (mixed
radix over all decisions, so every index vector, including ones that differ only in decisions
that are inactive at the sampled depth, has its own integer).

Value sets default to the ones found in the paper's code (reference ``tabular_energy_nas.md`` 1.6):

- MLP: ``depth`` 1..10, one shared ``width`` in ``range(4, 1025, 4)``, a dropout per block from
  ``{0.1, 0.2, 0.4, 0.6, 0.8, 0.9}``; block Linear -> ReLU -> Dropout; head Linear.
- ResNet: ``d_main`` in ``range(4, 257, 4)``, ``n_blocks`` 1..10, per block the norm (BatchNorm or
  none), ``d_hidden`` in ``range(4, 513, 4)`` and two dropouts; block
  ``x + Drop2(Linear2(Drop1(ReLU(Linear1(Norm(x))))))``; first layer Linear(d_in, d_main); head
  BatchNorm -> ReLU -> Linear (rtdl's).
- FT-Transformer (``ftt``, the paper's one-shot "tiny" preset): token dim ``d_token`` in
  ``{8, 16, 32}`` (``widths``), ``depth`` 2..5 (the first L blocks), per block the number of heads
  in 3..8 (``heads``) and the FFN ratio in ``{2.0, 2.5, ..., 4.0}`` (``ffn_ratios``; ReGLU hidden
  width ``round(ratio * d_token)``). The head dim is fixed (``head_dim``, default 8, so a block's
  attention width is ``heads * 8`` = 24..64, the size of the token dim as in a standard
  transformer; the paper's code fixes 64, which at token dims 8..32 makes the attention 6..64 times
  wider than the tokens it mixes); a fixed head dim keeps the attention scale ``1/sqrt(head_dim)``
  the same for every head count, so slicing heads is exact. Dropout (attention and FFN) is fixed at
  ``FTT_DROPOUT``, as in the paper's one-shot space. One token per numeric column
  (``x_j * W_j + b_j``) and one per categorical column (an embedding of its category), plus a CLS
  token; ``cat_cardinalities`` says which trailing input columns are one-hot blocks of which
  categorical column.

Decisions of blocks beyond the sampled depth are part of the vector (the controller samples them
and the supernet ignores them), as in TuNAS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cenas_jax.errors import ConfigError

PAPER_DROPOUTS = (0.1, 0.2, 0.4, 0.6, 0.8, 0.9)
KINDS = ("mlp", "resnet", "ftt")
FTT_D_TOKEN = (8, 16, 32)
FTT_DEPTHS = (2, 3, 4, 5)
FTT_HEADS = (3, 4, 5, 6, 7, 8)
FTT_FFN_RATIOS = (2.0, 2.5, 3.0, 3.5, 4.0)
FTT_DROPOUT = 0.1
NORMS = ("batchnorm", "none")
RESNET_D_MAIN = tuple(range(4, 257, 4))


@dataclasses.dataclass(frozen=True)
class Decision:
  """One categorical decision: its name and the values its choice indices stand for."""

  name: str
  values: tuple[Any, ...]

  @property
  def n(self) -> int:
    return len(self.values)


@dataclasses.dataclass(frozen=True)
class TabularSpace:
  """A tabular search space.

  Attributes:
    kind: ``"mlp"``, ``"resnet"`` or ``"ftt"``.
    d_in: input features (after preprocessing: numeric columns plus one-hot categories).
    d_out: outputs (classes for classification, 1 for regression).
    depths: allowed depths (MLP hidden blocks / ResNet blocks), ascending.
    widths: MLP shared width, ResNet ``d_main`` or FT-Transformer ``d_token``, ascending
      (``make_space`` gives ResNet and FT-Transformer the paper's values).
    hidden_widths: ResNet ``d_hidden`` per block, ascending (unused for MLP).
    dropouts: dropout values of every dropout decision.
    norms: ResNet per-block norm choices.
    heads: FT-Transformer heads per block, ascending.
    ffn_ratios: FT-Transformer FFN hidden width / token dim per block, ascending.
    head_dim: FT-Transformer fixed width of one head.
    cat_cardinalities: one-hot widths of the categorical columns, which are the last
      ``sum(cat_cardinalities)`` input columns (FT-Transformer embeds each as one token).
  """

  kind: str
  d_in: int
  d_out: int
  depths: tuple[int, ...] = tuple(range(1, 11))
  widths: tuple[int, ...] = tuple(range(4, 1025, 4))
  hidden_widths: tuple[int, ...] = tuple(range(4, 513, 4))
  dropouts: tuple[float, ...] = PAPER_DROPOUTS
  norms: tuple[str, ...] = NORMS
  heads: tuple[int, ...] = FTT_HEADS
  ffn_ratios: tuple[float, ...] = FTT_FFN_RATIOS
  head_dim: int = 8
  cat_cardinalities: tuple[int, ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ConfigError("space", f"must be one of {KINDS}, got {self.kind!r}.")
    for name in ("depths", "widths", "hidden_widths", "heads"):
      v = getattr(self, name)
      if not v or list(v) != sorted(set(v)) or v[0] < 1:
        raise ConfigError(name, f"must be ascending distinct positive integers, got {v}.")
    if not self.dropouts or any(not 0.0 <= p < 1.0 for p in self.dropouts):
      raise ConfigError("dropouts", f"must be values in [0, 1), got {self.dropouts}.")
    if not set(self.norms) <= set(NORMS) or not self.norms:
      raise ConfigError("norms", f"must be a subset of {NORMS}, got {self.norms}.")
    if not self.ffn_ratios or list(self.ffn_ratios) != sorted(set(self.ffn_ratios)) or \
        self.ffn_ratios[0] <= 0 or self.head_dim < 1:
      raise ConfigError("ffn_ratios", f"must be ascending distinct positive values (and head_dim "
                        f">= 1), got {self.ffn_ratios}, {self.head_dim}.")
    if any(c < 1 for c in self.cat_cardinalities) or sum(self.cat_cardinalities) > self.d_in:
      raise ConfigError("dataset", f"categorical one-hot widths {self.cat_cardinalities} do not "
                        f"fit in {self.d_in} input columns.")
    if self.d_in < 1 or self.d_out < 1:
      raise ConfigError("dataset", f"needs at least one input and one output, got {self.d_in}, "
                        f"{self.d_out}.")

  @property
  def max_depth(self) -> int:
    return self.depths[-1]

  @property
  def n_num(self) -> int:
    """Numeric input columns (the first ``d_in - sum(cat_cardinalities)``)."""
    return self.d_in - sum(self.cat_cardinalities)

  @property
  def n_tokens(self) -> int:
    """FT-Transformer tokens: one per numeric and per categorical column, plus the CLS token."""
    return self.n_num + len(self.cat_cardinalities) + 1

  def ffn_hidden(self, d_token: float, ratio: float) -> int:
    """ReGLU hidden width of an FT-Transformer block (round half up)."""
    return int(np.floor(ratio * d_token + 0.5))

  @property
  def max_ffn_hidden(self) -> int:
    return self.ffn_hidden(self.widths[-1], self.ffn_ratios[-1])

  @property
  def _per_block(self) -> int:
    return {"mlp": 1, "resnet": 4, "ftt": 2}[self.kind]

  @property
  def decisions(self) -> tuple[Decision, ...]:
    L = self.max_depth
    if self.kind == "mlp":
      return (Decision("depth", self.depths), Decision("width", self.widths),
              *(Decision(f"dropout_{i}", self.dropouts) for i in range(L)))
    if self.kind == "ftt":
      per_block = []
      for i in range(L):
        per_block += [Decision(f"heads_{i}", self.heads),
                      Decision(f"ffn_ratio_{i}", self.ffn_ratios)]
      return (Decision("depth", self.depths), Decision("d_token", self.widths), *per_block)
    per_block = []
    for i in range(L):
      per_block += [Decision(f"norm_{i}", self.norms),
                    Decision(f"d_hidden_{i}", self.hidden_widths),
                    Decision(f"dropout1_{i}", self.dropouts),
                    Decision(f"dropout2_{i}", self.dropouts)]
    return (Decision("n_blocks", self.depths), Decision("d_main", self.widths), *per_block)

  @property
  def n_choices(self) -> np.ndarray:
    """int (n_decisions,) number of choices of each decision."""
    return np.array([d.n for d in self.decisions], np.int64)

  @property
  def size(self) -> int:
    """Number of distinct architectures (decisions of inactive blocks not counted)."""
    if self.kind == "mlp":
      return sum(len(self.widths) * len(self.dropouts) ** d for d in self.depths)
    if self.kind == "ftt":
      block = len(self.heads) * len(self.ffn_ratios)
      return sum(len(self.widths) * block ** d for d in self.depths)
    block = len(self.norms) * len(self.hidden_widths) * len(self.dropouts) ** 2
    return sum(len(self.widths) * block ** d for d in self.depths)

  def sample(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniform choice indices: int32 (n_decisions,) or (n, n_decisions)."""
    shape = (1 if n is None else n, len(self.n_choices))
    out = (rng.random(shape) * self.n_choices).astype(np.int32)
    return out[0] if n is None else out

  def check(self, arch: np.ndarray) -> np.ndarray:
    arch = np.asarray(arch)
    if arch.shape[-1:] != self.n_choices.shape or (arch < 0).any() or (arch >= self.n_choices).any():
      raise ValueError(f"not an architecture of this {self.kind} space: {arch}.")
    return arch.astype(np.int32)

  def decode(self, arch: np.ndarray) -> dict[str, Any]:
    """The standalone network an index vector stands for (only active blocks)."""
    a = [int(v) for v in self.check(arch)]
    depth = self.depths[a[0]]
    width = self.widths[a[1]]
    if self.kind == "mlp":
      return {"kind": "mlp", "depth": depth, "width": width,
              "dropouts": tuple(self.dropouts[a[2 + i]] for i in range(depth))}
    if self.kind == "ftt":
      blocks = tuple({"heads": self.heads[a[2 + 2 * i]],
                      "d_hidden": self.ffn_hidden(width, self.ffn_ratios[a[3 + 2 * i]])}
                     for i in range(depth))
      return {"kind": "ftt", "depth": depth, "d_token": width, "head_dim": self.head_dim,
              "n_tokens": self.n_tokens, "blocks": blocks}
    blocks = []
    for i in range(depth):
      norm, dh, p1, p2 = a[2 + 4 * i: 6 + 4 * i]
      blocks.append({"norm": self.norms[norm], "d_hidden": self.hidden_widths[dh],
                     "dropout1": self.dropouts[p1], "dropout2": self.dropouts[p2]})
    return {"kind": "resnet", "n_blocks": depth, "d_main": width, "blocks": tuple(blocks)}

  def canonical(self, arch: np.ndarray) -> np.ndarray:
    """``arch`` with the decisions of inactive blocks set to 0 (same network, one representative)."""
    arch = self.check(arch).copy()
    depth = self.depths[int(arch[0])]
    arch[2 + self._per_block * depth:] = 0
    return arch

  def with_dropout(self, arch: np.ndarray, rate: float) -> np.ndarray:
    """``arch`` with every dropout decision set to ``rate`` (same shape, one dropout rate).

    Raises:
      ValueError: the space has no dropout decisions (the FT-Transformer's dropout is fixed), or
        ``rate`` is not one of its rates.
    """
    arch = self.check(arch).copy()
    idx = [i for i, d in enumerate(self.decisions) if d.name.startswith("dropout")]
    if not idx:
      raise ValueError(f"the {self.kind} space has no dropout decisions")
    if rate not in self.dropouts:
      raise ValueError(f"{rate} is not one of the space's rates {self.dropouts}")
    arch[idx] = self.dropouts.index(rate)
    return arch

  def flat_index(self, arch: np.ndarray) -> int:
    """Mixed-radix integer of an index vector, in ``[0, prod(n_choices))``."""
    idx = 0
    for v, n in zip(self.check(arch), self.n_choices):
      idx = idx * int(n) + int(v)
    return idx

  def from_flat_index(self, idx: int) -> np.ndarray:
    out = np.zeros(len(self.n_choices), np.int32)
    for j in range(len(out) - 1, -1, -1):
      idx, out[j] = divmod(int(idx), int(self.n_choices[j]))
    if idx:
      raise ValueError("flat index out of range.")
    return out

  def describe(self, arch: np.ndarray) -> str:
    d = self.decode(arch)
    if d["kind"] == "mlp":
      return f"mlp(depth={d['depth']}, width={d['width']})"
    if d["kind"] == "ftt":
      blocks = ",".join(f"{b['heads']}h{b['d_hidden']}" for b in d["blocks"])
      return f"ftt(d_token={d['d_token']}, blocks=[{blocks}])"
    hid = ",".join(f"{b['d_hidden']}{'bn' if b['norm'] == 'batchnorm' else ''}" for b in d["blocks"])
    return f"resnet(d_main={d['d_main']}, blocks=[{hid}])"


def make_space(kind: str, d_in: int, d_out: int, **overrides: Any) -> TabularSpace:
  """A space of ``kind`` with the paper's value sets, overridden by any non-empty ``overrides``."""
  values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items() if v}
  if kind == "resnet":
    values.setdefault("widths", RESNET_D_MAIN)
  if kind == "ftt":
    values.setdefault("widths", FTT_D_TOKEN)
    values.setdefault("depths", FTT_DEPTHS)
  return TabularSpace(kind=kind, d_in=d_in, d_out=d_out, **values)
