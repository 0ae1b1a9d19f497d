"""Predicted inference energy per architecture: a per-layer lookup over the kernel energy model.

Energy is always priced on the *standalone* (materialized) network, never on the masked supernet,
whose kernels have the largest shapes whatever the architecture. The spaces are chains, so the
standalone network's kernels are the union of its segments' kernels, and the energy model is
linear in the kernel list (``E = sum_k e_k + P_static * (sum_k t_k + gaps)``); the lookup therefore
extracts the kernels of each distinct segment once (``cenas_jax.energy.extract_kernels`` in ``gpu``
mode: the predicted NVIDIA kernels of the segment's jitted forward), prices them, and sums per
architecture. Segments are cut where XLA does not fuse across them:

- MLP: ``first(d_in, w)``, ``hidden(w)`` x (depth - 1), ``head(w, d_out)``, each a GEMM with its
  bias (and ReLU) epilogue.
- ResNet: ``first(d_in, d_main)``; per block ``body(d_main, d_hidden, norm)`` (BatchNorm loop,
  GEMM + bias + ReLU, GEMM + bias). The residual add of a block fuses into what follows it: into
  the next block's BatchNorm loop (``add_body``, one multi-output kernel), or into the head's
  BatchNorm + ReLU loop (``resnet_head``); before a block without norm it is its own loop kernel
  (``residual_add``).

- FT-Transformer: per block ``ftt_block(d_token, heads, d_hidden, n_tokens, head_dim, first,
  last, d_out)`` (LayerNorm, fused QKV GEMM, batched QK^T, softmax, PV, output GEMM, LayerNorm,
  ReGLU FFN GEMMs; the last block for the CLS query only); the first block's segment includes
  the tokenizer (numeric tokens, categorical embeddings, CLS) and the last block's the head. A
  block's final residual add fuses into the next block's first LayerNorm reduction (one
  multi-output kernel) in the whole network, but is a kernel of its own when it is a segment's
  output, so each block boundary adds ``ftt_add_fusion(d_token, n_tokens, head_dim)``, the
  (negative) energy difference of the two, extracted once.

``check_against_whole_network`` compares the sum with extracting the whole materialized network's
jitted forward.

Entries are filled lazily (about 30 ms each) and can be saved to and loaded from a JSON file, so a
resumed run does not extract again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax import energy
from cenas_jax.fileio import atomic_write_json
from cenas_jax.spaces.tabular import TabularSpace
from cenas_jax.supernets import tabular_ftt as ftt
from cenas_jax.supernets.layers import MaskableBatchNorm

_F32 = jnp.float32


class _Seg(nn.Module):
  """One chain segment, built from the same Linen layers as the standalone networks."""

  kind: str
  d_in: int
  d_out: int
  d_hidden: int = 0
  norm: bool = False

  @nn.compact
  def __call__(self, x, z=None):
    if self.kind in ("first_relu", "hidden"):
      return nn.relu(nn.Dense(self.d_out)(x))
    if self.kind in ("first", "mlp_head"):
      return nn.Dense(self.d_out)(x)
    if self.kind in ("body", "add_body"):
      # add_body: the previous block's residual add fuses with this block's BatchNorm (one
      # multi-output loop kernel writing the new residual stream and its normalized copy).
      h = x + z if self.kind == "add_body" else x
      y = MaskableBatchNorm(self.d_in)(h, train=False) if self.norm else h
      y = nn.Dense(self.d_in)(nn.relu(nn.Dense(self.d_hidden)(y)))
      return y
    if self.kind == "resnet_head":  # the last block's residual add fuses into the head's loop
      h = MaskableBatchNorm(self.d_in)(x + z, train=False)
      return nn.Dense(self.d_out)(nn.relu(h))
    raise ValueError(self.kind)


_TWO_INPUTS = ("add_body", "resnet_head")


class _FttSeg(nn.Module):
  """One FT-Transformer chain segment, from the standalone network's own modules."""

  key: tuple
  n_num: int = 0
  cat_cardinalities: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x, z=None):
    _, d, heads, hidden, _, head_dim, first, last, d_out = self.key
    if first:
      x = ftt.Tokenizer(self.n_num, self.cat_cardinalities, d)(x)
    out = ftt.Block(d, heads, head_dim, hidden, first=bool(first), cls_only=bool(last))(
        x, delta=z)
    return ftt._head(out[:, -1], d, d_out, None) if last else out  # pylint: disable=protected-access


def _ftt_kernels(key: tuple, inputs: tuple, space: TabularSpace) -> list:
  module = _FttSeg(tuple(key), space.n_num, tuple(space.cat_cardinalities))
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                 *(jnp.zeros(i.shape, _F32) for i in inputs)))
  return energy.extract_kernels(lambda v, *a: module.apply(v, *a), variables, *inputs, mode="gpu")


def _ftt_segment_energy_j(key: tuple, batch: int, space: TabularSpace,
                          model: energy.EnergyModel) -> float:
  """Energy of a block segment, or of the ``ftt_add_fusion`` correction.

  Between two blocks, the whole network's residual add fuses into the next block's first
  LayerNorm reduction (one multi-output kernel), while the segments compute it as a kernel of its
  own (the segment's output) followed by the reduction. The correction, added once per block
  boundary, is E(block on ``x + u``) - E(block on ``h``) - E(``x + u``), extracted on the
  smallest block of the same token dim and token count.
  """
  def price(ks):
    return float(energy.predict_energy_j(model, ks, batch_size=batch))

  if key[0] == "ftt_block":
    _, d, _, _, n_tok, _, first, _, _ = key
    x = jax.ShapeDtypeStruct((batch, n_tok, d), _F32)
    inputs = (jax.ShapeDtypeStruct((batch, space.d_in), _F32),) if first else (x,)
    return price(_ftt_kernels(key, inputs, space))
  _, d, n_tok, head_dim = key
  x = jax.ShapeDtypeStruct((batch, n_tok, d), _F32)
  block = ("ftt_block", d, 1, d, n_tok, head_dim, 0, 0, 1)
  fused = price(_ftt_kernels(block, (x, x), space))
  apart = price(_ftt_kernels(block, (x,), space))
  add = price(energy.extract_kernels(lambda a, b: a + b, x, x, mode="gpu"))
  return fused - apart - add


def _ftt_segments(space: TabularSpace, d: dict) -> list[tuple]:
  last = d["depth"] - 1
  out = [("ftt_block", d["d_token"], b["heads"], b["d_hidden"], d["n_tokens"], d["head_dim"],
          int(i == 0), int(i == last), space.d_out) for i, b in enumerate(d["blocks"])]
  return out + [("ftt_add_fusion", d["d_token"], d["n_tokens"], d["head_dim"])] * last


def segment_kernels(key: tuple, batch: int) -> list:
  """The predicted GPU kernels of one MLP or ResNet segment ``(kind, d_in, d_out, d_hidden, norm)``
  at ``batch``."""
  x = jax.ShapeDtypeStruct((batch, key[1]), _F32)
  if key[0] == "residual_add":
    return energy.extract_kernels(lambda a, b: a + b, x, x, mode="gpu")
  kind, d_in, d_out, d_hidden, norm = key
  module = _Seg(kind, d_in, d_out, d_hidden, bool(norm))
  inputs = (x, x) if kind in _TWO_INPUTS else (x,)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                 *(jnp.zeros(i.shape, _F32) for i in inputs)))
  return energy.extract_kernels(lambda v, *a: module.apply(v, *a), variables, *inputs, mode="gpu")


def segments(space: TabularSpace, arch: np.ndarray) -> list[tuple]:
  """The chain segments (lookup keys) of one architecture, in order."""
  d = space.decode(arch)
  if d["kind"] == "ftt":
    return _ftt_segments(space, d)
  if d["kind"] == "mlp":
    w = d["width"]
    return ([("first_relu", space.d_in, w, 0, 0)] + [("hidden", w, w, 0, 0)] * (d["depth"] - 1)
            + [("mlp_head", w, space.d_out, 0, 0)])
  dm = d["d_main"]
  out = [("first", space.d_in, dm, 0, 0)]
  for i, b in enumerate(d["blocks"]):
    bn = int(b["norm"] == "batchnorm")
    if i and not bn:
      out.append(("residual_add", dm))
    out.append(("add_body" if i and bn else "body", dm, dm, b["d_hidden"], bn))
  out.append(("resnet_head", dm, space.d_out, 0, 0))
  return out


class EnergyLookup:
  """Per-layer energy lookup for one space, device model and batch size.

  Attributes:
    space: the search space.
    model: the kernel energy model (e.g. ``energy.prior_model("h100-sxm")``).
    batch: samples per inference call the kernels are extracted at.
    label: where the numbers come from, ``predicted-<model>-<device>``.
  """

  def __init__(self, space: TabularSpace, model: energy.EnergyModel, batch: int):
    self.space = space
    self.model = model
    self.batch = int(batch)
    self.label = f"predicted-{model.provenance.replace(':', '-')}-{model.spec.name}-gpu-kernels"
    self._table: dict[tuple, float] = {}
    self._per_arch: dict[bytes, float] = {}  # memo: index vector bytes -> energy_j
    self.extractions = 0

  def _fill(self, keys: Iterable[tuple]) -> None:
    for key in keys:
      if key not in self._table:
        if key[0].startswith("ftt_"):
          self._table[key] = _ftt_segment_energy_j(key, self.batch, self.space, self.model)
        else:
          ks = segment_kernels(key, self.batch)
          self._table[key] = float(energy.predict_energy_j(self.model, ks, batch_size=self.batch))
        self.extractions += 1

  def energy_j(self, archs: np.ndarray) -> np.ndarray:
    """Predicted energy of one inference call at ``batch`` per architecture, J: (n,) or scalar."""
    archs = np.asarray(archs)
    single = archs.ndim == 1
    archs = archs.reshape(-1, archs.shape[-1])
    keys = [a.tobytes() for a in archs.astype(np.int32)]
    todo = {k: a for k, a in zip(keys, archs) if k not in self._per_arch}
    if todo:
      segs = {k: segments(self.space, a) for k, a in todo.items()}
      self._fill({seg for s in segs.values() for seg in s})
      t = self._table
      self._per_arch.update({k: sum(t[seg] for seg in s) for k, s in segs.items()})
    out = np.array([self._per_arch[k] for k in keys])
    return out[0] if single else out

  def clear_memo(self) -> None:
    """Forgets the per-architecture sums (keeps the segment table); for benchmarks."""
    self._per_arch.clear()

  def energy_per_sample_j(self, archs: np.ndarray) -> np.ndarray:
    return self.energy_j(archs) / self.batch

  def save(self, path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, {"label": self.label, "batch": self.batch,
                             "table": [[list(k), v] for k, v in self._table.items()]})

  def load(self, path: str | os.PathLike[str]) -> None:
    """Adds the entries of a file written by ``save`` for the same label and batch (if any)."""
    path = Path(path)
    if not path.exists():
      return
    doc = json.loads(path.read_text())
    if doc.get("label") == self.label and int(doc.get("batch", -1)) == self.batch:
      for k, v in doc["table"]:
        self._table[tuple(k)] = float(v)


def whole_network_energy_j(space: TabularSpace, model: energy.EnergyModel, arch: np.ndarray,
                           batch: int, variables: Any | None = None) -> float:
  """Energy of one call of the materialized network's jitted forward, from its own kernels."""
  from cenas_jax.supernets import tabular as sn  # pylint: disable=import-outside-toplevel
  module = sn.standalone(space, arch)
  if variables is None:
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                   jnp.zeros((batch, space.d_in), _F32)))
  ks = energy.extract_kernels(lambda v, x: module.apply(v, x), variables,
                              jax.ShapeDtypeStruct((batch, space.d_in), _F32), mode="gpu")
  return float(energy.predict_energy_j(model, ks, batch_size=batch))


def check_against_whole_network(lookup: EnergyLookup, archs: np.ndarray) -> dict[str, float]:
  """Relative error of the lookup against whole-network extraction on ``archs``."""
  lut = lookup.energy_j(archs)
  whole = np.array([whole_network_energy_j(lookup.space, lookup.model, a, lookup.batch)
                    for a in archs])
  rel = np.abs(lut - whole) / whole
  return {"max_rel_err": float(rel.max()), "median_rel_err": float(np.median(rel)),
          "n": int(len(archs))}
