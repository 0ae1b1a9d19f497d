"""Search spaces for tabular data: MLP and ResNet (rtdl-style), as chains of categorical decisions.

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

Decisions of blocks beyond the sampled depth are part of the vector (the controller samples them
and the supernet ignores them), as in TuNAS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cenas_jax.errors import ConfigError

PAPER_DROPOUTS = (0.1, 0.2, 0.4, 0.6, 0.8, 0.9)
KINDS = ("mlp", "resnet")
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
    kind: ``"mlp"`` or ``"resnet"``.
    d_in: input features (after preprocessing: numeric columns plus one-hot categories).
    d_out: outputs (classes for classification, 1 for regression).
    depths: allowed depths (MLP hidden blocks / ResNet blocks), ascending.
    widths: MLP shared width, or ResNet ``d_main``, ascending (``make_space`` gives ResNet the
      paper's ``range(4, 257, 4)``).
    hidden_widths: ResNet ``d_hidden`` per block, ascending (unused for MLP).
    dropouts: dropout values of every dropout decision.
    norms: ResNet per-block norm choices.
  """

  kind: str
  d_in: int
  d_out: int
  depths: tuple[int, ...] = tuple(range(1, 11))
  widths: tuple[int, ...] = tuple(range(4, 1025, 4))
  hidden_widths: tuple[int, ...] = tuple(range(4, 513, 4))
  dropouts: tuple[float, ...] = PAPER_DROPOUTS
  norms: tuple[str, ...] = NORMS

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ConfigError("space", f"must be one of {KINDS}, got {self.kind!r}.")
    for name in ("depths", "widths", "hidden_widths"):
      v = getattr(self, name)
      if not v or list(v) != sorted(set(v)) or v[0] < 1:
        raise ConfigError(name, f"must be ascending distinct positive integers, got {v}.")
    if not self.dropouts or any(not 0.0 <= p < 1.0 for p in self.dropouts):
      raise ConfigError("dropouts", f"must be values in [0, 1), got {self.dropouts}.")
    if not set(self.norms) <= set(NORMS) or not self.norms:
      raise ConfigError("norms", f"must be a subset of {NORMS}, got {self.norms}.")
    if self.d_in < 1 or self.d_out < 1:
      raise ConfigError("dataset", f"needs at least one input and one output, got {self.d_in}, "
                        f"{self.d_out}.")

  @property
  def max_depth(self) -> int:
    return self.depths[-1]

  @property
  def decisions(self) -> tuple[Decision, ...]:
    L = self.max_depth
    if self.kind == "mlp":
      return (Decision("depth", self.depths), Decision("width", self.widths),
              *(Decision(f"dropout_{i}", self.dropouts) for i in range(L)))
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
    per = 1 if self.kind == "mlp" else 4
    arch[2 + per * depth:] = 0
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
    hid = ",".join(f"{b['d_hidden']}{'bn' if b['norm'] == 'batchnorm' else ''}" for b in d["blocks"])
    return f"resnet(d_main={d['d_main']}, blocks=[{hid}])"


def make_space(kind: str, d_in: int, d_out: int, **overrides: Any) -> TabularSpace:
  """A space of ``kind`` with the paper's value sets, overridden by any non-empty ``overrides``."""
  values = {k: tuple(v) for k, v in overrides.items() if v}
  if kind == "resnet":
    values.setdefault("widths", RESNET_D_MAIN)
  return TabularSpace(kind=kind, d_in=d_in, d_out=d_out, **values)
