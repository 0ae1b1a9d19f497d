"""Fast ``gpu``-mode kernels and energy features of NAS-Bench-201 networks, composed per op.

Tracing and lowering the whole Flax ``NB201Net`` (``cenas_jax.spaces.nb201_net``) takes seconds
per cell, too slow for the 15,625 cells of the space. Every NB201 network is the same skeleton
(stem, 3 stages of N cells, 2 reduction blocks, head) with the cell's 6 edge ops repeated, so the
network's HLO is assembled here from a few cached *fragments*, each lowered once (for ``cuda``)
from the real Flax modules:

- ``stem`` (conv3x3 + BN), ``reduction_2`` / ``reduction_3`` (``ResNetBasicBlock``), ``head``
  (BN + ReLU + global mean + dense);
- per stage: ``ReLUConvBN`` 1x1 and 3x3, ``avg_pool_3x3`` and the ``zeros_like`` of an empty node.

``network_module(ops)`` stitches them into one HLO module: an entry computation that calls the
fragments and adds the edge outputs of each node in ``NB201Cell``'s order, with fresh parameters
for every weight. The gpu-mode rules of ``cenas_jax.energy.hlo`` then run on that module exactly as
on a whole-network lowering (calls are inlined before CSE and fusion), so fusions that cross op
and cell boundaries (BN + node sum + the next ReLU in one loop kernel, multi-output fusion of a
node read by several kernels, a ReLU absorbed into a conv epilogue) come out the same. Only the
fusion pass runs per cell; no JAX tracing. ``tests/energy/test_nb201_kernels.py`` checks that the
composed kernels equal a full-network extraction.

Edges that cannot reach the cell output (into node 1 or 2 when that node feeds nothing) are dropped
before composing (``live_ops``): XLA removes them as dead code, and cells that differ only there
share one cached result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cenas_jax.energy import hlo, hlo_ir
from cenas_jax.energy.hlo import GpuFusionConfig, Kernel
from cenas_jax.energy.hlo_ir import HloComputationIR, HloInstr, HloModuleIR, TensorType
from cenas_jax.energy.model import kernel_features
from cenas_jax.energy.specs import DeviceSpec
from cenas_jax.spaces.nb201 import EDGES, NUM_EDGES, validate_ops

NONE, SKIP, CONV1X1, CONV3X3, AVG_POOL = range(5)

COMPOSER_VERSION = "nb201_kernels/1"
"""Bumped whenever the composition changes (part of ``fingerprint``)."""


@dataclasses.dataclass(frozen=True)
class NB201NetConfig:
  """Macro settings of the NB201 network whose kernels are composed.

  Attributes:
    C: channels of the first stage (doubled at each reduction).
    N: cells per stage.
    num_classes: classifier outputs.
    batch_size: images per call the kernels are extracted at.
    input_hw: input height = width, in pixels (32 for CIFAR).
    fusion: gpu-mode fusion rules.
  """

  C: int = 16
  N: int = 5
  num_classes: int = 10
  batch_size: int = 1
  input_hw: int = 32
  fusion: GpuFusionConfig = GpuFusionConfig()

  def __post_init__(self) -> None:
    for name in ("C", "N", "num_classes", "batch_size", "input_hw"):
      v = getattr(self, name)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"NB201NetConfig.{name} must be a positive integer, got {v!r}")
    if self.input_hw % 4:
      raise ValueError(f"NB201NetConfig.input_hw must be divisible by 4, got {self.input_hw}")


# ----------------------------------------------------------------------------------------------------
# Pure helpers on cells.


def live_ops(ops: Sequence[int]) -> tuple[int, ...]:
  """``ops`` with every edge whose target node cannot reach the cell output set to ``none``.

  Node 3 is the output; node 2 reaches it iff edge 3<-2 is not ``none``; node 1 iff edge 3<-1 is
  not ``none`` or (edge 2<-1 is not ``none`` and node 2 reaches it). Edges into a node that does
  not reach the output compute values nobody reads (XLA drops them), so the network's kernels are
  those of ``live_ops(ops)``.
  """
  ops = validate_ops(ops)
  reach = {3: True}
  reach[2] = ops[5] != NONE
  reach[1] = ops[4] != NONE or (ops[2] != NONE and reach[2])
  return tuple(op if reach[to] else NONE for op, (to, _) in zip(ops, EDGES))


def param_count(ops: Sequence[int], *, C: int = 16, N: int = 5, num_classes: int = 10) -> int:
  """Trainable parameters of the NB201 network for ``ops`` (closed form of ``count_params``).

  Counts conv weights, BN scale and offset and the classifier (weights + bias); every
  non-``none`` conv edge counts, dead ones included (they hold parameters).
  """
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


# ----------------------------------------------------------------------------------------------------
# Fragments: each piece of the network lowered once for cuda.


@dataclasses.dataclass(frozen=True)
class _Fragment:
  """One lowered piece: its computations (renamed with a unique prefix) and entry signature."""

  entry: str
  computations: Mapping[str, HloComputationIR]
  n_inputs: int  # leading parameters that are activations (the rest are weights)
  param_types: tuple[TensorType, ...]  # by parameter index
  out_type: TensorType
  text_sha256: str
  module: HloModuleIR  # as lowered (names not prefixed)
  clone_per_call: bool  # holds reductions whose reducer names must be unique per call site


# Ops that name a reducer computation. A whole-network lowering gives every such op its own reducer
# computation, and ``hlo``'s CSE keys on that name, so identical pools on one input stay separate
# kernels there; each call site of a fragment holding them gets its own copy of the reducers here.
_REDUCER_OPS = frozenset({"reduce", "reduce-window", "select-and-scatter", "scatter", "sort",
                          "map"})

_NAME_TOKEN = re.compile(r"%?([A-Za-z_][\w.\-]*)")


def _rename_module(module: HloModuleIR, prefix: str) -> dict[str, HloComputationIR]:
  """Computations of ``module`` with ``prefix`` before every computation name and reference."""
  names = set(module.computations)

  def ren(value: str) -> str:
    return _NAME_TOKEN.sub(lambda m: ("%" if m.group(0).startswith("%") else "") + prefix +
                           m.group(1) if m.group(1) in names else m.group(0), value)

  call_attrs = hlo_ir._CALL_ATTRS  # pylint: disable=protected-access
  out = {}
  for cname, comp in module.computations.items():
    instrs = []
    for i in comp.instrs:
      if i.called:
        attrs = tuple((k, ren(v) if k in call_attrs else v) for k, v in i.attrs)
        i = dataclasses.replace(i, attrs=attrs, called=tuple(prefix + c for c in i.called))
      instrs.append(i)
    out[prefix + cname] = HloComputationIR(prefix + cname, tuple(instrs), comp.root)
  return out


def _lower_fragment(name: str, fn: Callable[..., Any], inputs: Sequence[Any], variables: Any
                    ) -> _Fragment:
  import jax  # pylint: disable=g-import-not-at-top

  lowered = jax.jit(fn, keep_unused=True).trace(*inputs, variables).lower(
      lowering_platforms=("cuda",))
  text = lowered.compiler_ir("hlo").as_hlo_text()
  module = hlo_ir.module_from_text(text)
  prefix = f"{name}::"
  comps = _rename_module(module, prefix)
  entry = comps[prefix + module.entry]
  params = sorted((int(i.literal), i.type) for i in entry.instrs if i.opcode == "parameter")
  if [p[0] for p in params] != list(range(len(params))):
    raise RuntimeError(f"fragment {name}: unexpected parameter numbering {[p[0] for p in params]}")
  n_leaves = len(jax.tree.leaves(variables)) + len(inputs)
  if len(params) != n_leaves:
    raise RuntimeError(f"fragment {name}: {len(params)} HLO parameters for {n_leaves} arguments")
  out_type = entry.by_name()[entry.root].type
  clone = any(i.opcode in _REDUCER_OPS for c in module.computations.values() for i in c.instrs)
  return _Fragment(prefix + module.entry, comps, len(inputs), tuple(t for _, t in params),
                   out_type, hashlib.sha256(text.encode("utf-8")).hexdigest(), module, clone)


@functools.lru_cache(maxsize=8)
def _fragments(C: int, N: int, num_classes: int, batch_size: int, input_hw: int  # noqa: N803
               ) -> dict[str, _Fragment]:
  """All fragments of the network (lowered once per process and configuration)."""
  del N  # the fragments do not depend on the number of cells
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cenas_jax.spaces import nb201_net  # pylint: disable=g-import-not-at-top

  def bn() -> nn.BatchNorm:
    # Same settings as nb201_net's BatchNorm layers, in inference mode.
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5)

  class Stem(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
      x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
      return bn()(x)

  class Head(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
      x = nn.relu(bn()(x))
      x = jnp.mean(x, axis=(1, 2))
      return nn.Dense(self.num_classes)(x)

  def sds(*shape: int) -> Any:
    return jax.ShapeDtypeStruct(shape, jnp.float32)

  def module_fragment(name: str, module: nn.Module, x: Any, **call_kw: Any) -> _Fragment:
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype),
                                                   **call_kw))
    return _lower_fragment(name, lambda x, v: module.apply(v, x, **call_kw), [x], variables)

  b = batch_size
  frags = {"stem": module_fragment("stem", Stem(C), sds(b, input_hw, input_hw, 3))}
  hw, c = input_hw, C
  for stage in range(3):
    if stage > 0:
      x_in = sds(b, hw, hw, c)
      hw, c = hw // 2, c * 2
      frags[f"reduction_{stage + 1}"] = module_fragment(
          f"reduction_{stage + 1}", nb201_net.ResNetBasicBlock(c, 2), x_in, train=False)
    x = sds(b, hw, hw, c)
    s = stage + 1
    frags[f"conv1x1_{s}"] = module_fragment(f"conv1x1_{s}", nb201_net.ReLUConvBN(c, 1), x,
                                            train=False)
    frags[f"conv3x3_{s}"] = module_fragment(f"conv3x3_{s}", nb201_net.ReLUConvBN(c, 3), x,
                                            train=False)
    frags[f"pool_{s}"] = _lower_fragment(f"pool_{s}", lambda x, v: nb201_net.avg_pool_3x3(x),
                                         [x], {})
    frags[f"zeros_{s}"] = _lower_fragment(f"zeros_{s}", lambda x, v: jnp.zeros_like(x), [x], {})
  frags["head"] = module_fragment("head", Head(num_classes), sds(b, hw, hw, c))
  return frags


# ----------------------------------------------------------------------------------------------------
# Stitching.


class _EntryBuilder:
  """Accumulates the instructions of the stitched entry computation."""

  def __init__(self) -> None:
    self.instrs: list[HloInstr] = []
    self.types: dict[str, TensorType] = {}
    self.n_params = 0
    self.computations: dict[str, HloComputationIR] = {}

  def param(self, t: TensorType) -> str:
    name = f"p{self.n_params}"
    self.instrs.append(HloInstr(name, "parameter", (t,), (), (), (), str(self.n_params)))
    self.n_params += 1
    self.types[name] = t
    return name

  def call(self, frag: _Fragment, inputs: Sequence[str]) -> str:
    if len(inputs) != frag.n_inputs:
      raise ValueError(f"fragment {frag.entry} takes {frag.n_inputs} inputs")
    operands = list(inputs) + [self.param(t) for t in frag.param_types[frag.n_inputs:]]
    name = f"c{len(self.instrs)}"
    entry = frag.entry
    if frag.clone_per_call:
      prefix = f"{name}::"
      self.computations.update(_rename_module(frag.module, prefix))
      entry = prefix + frag.module.entry
    else:
      self.computations.update(frag.computations)
    self.instrs.append(HloInstr(name, "call", (frag.out_type,), tuple(operands),
                                (("to_apply", "%" + entry),), (entry,)))
    self.types[name] = frag.out_type
    return name

  def add(self, a: str, b: str) -> str:
    name = f"a{len(self.instrs)}"
    self.instrs.append(HloInstr(name, "add", (self.types[a],), (a, b)))
    self.types[name] = self.types[a]
    return name


def network_module(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig()) -> HloModuleIR:
  """The HLO module of the NB201 network for ``ops`` (inference), stitched from cached fragments.

  Mirrors ``NB201Net.__call__`` / ``NB201Cell.__call__`` op by op: the same fragments in the same
  order, node sums accumulated in edge order, empty nodes as ``zeros_like``.

  Raises:
    ValueError: bad ``ops``.
  """
  ops = validate_ops(ops)
  frags = _fragments(config.C, config.N, config.num_classes, config.batch_size, config.input_hw)
  eb = _EntryBuilder()
  hw = config.input_hw
  x = eb.param(TensorType("f32", (config.batch_size, hw, hw, 3)))
  x = eb.call(frags["stem"], [x])
  for stage in range(1, 4):
    if stage > 1:
      x = eb.call(frags[f"reduction_{stage}"], [x])
    for _ in range(config.N):
      nodes = [x]
      for j in range(1, 4):
        total = None
        for e, (to_node, from_node) in enumerate(EDGES):
          op = ops[e]
          if to_node != j or op == NONE:
            continue
          h = nodes[from_node]
          if op == SKIP:
            y = h
          elif op == CONV1X1:
            y = eb.call(frags[f"conv1x1_{stage}"], [h])
          elif op == CONV3X3:
            y = eb.call(frags[f"conv3x3_{stage}"], [h])
          else:
            y = eb.call(frags[f"pool_{stage}"], [h])
          total = y if total is None else eb.add(total, y)
        nodes.append(eb.call(frags[f"zeros_{stage}"], [x]) if total is None else total)
      x = nodes[3]
  root = eb.call(frags["head"], [x])
  comps = dict(eb.computations)
  comps["nb201_entry"] = HloComputationIR("nb201_entry", tuple(eb.instrs), root)
  return HloModuleIR("nb201_network", comps, "nb201_entry")


def fingerprint(config: NB201NetConfig = NB201NetConfig()) -> str:
  """SHA-256 identifying what the composed kernels depend on.

  Covers the composer version, the JAX/jaxlib versions, the network configuration (fusion rules
  included) and the HLO text of every fragment (so a change in the Flax modules changes it).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top

  frags = _fragments(config.C, config.N, config.num_classes, config.batch_size, config.input_hw)
  h = hashlib.sha256()
  for part in (COMPOSER_VERSION, jax.__version__, jaxlib.__version__, repr(config)):
    h.update(part.encode("utf-8") + b"\0")
  for name in sorted(frags):
    h.update(f"{name}={frags[name].text_sha256}\0".encode("utf-8"))
  return h.hexdigest()


@functools.lru_cache(maxsize=16384)
def _kernels_cached(live: tuple[int, ...], config: NB201NetConfig) -> tuple[Kernel, ...]:
  module = network_module(live, config)
  # The gpu-mode rules on an already built module (hlo's public entry points start from text).
  gpu_kernels = hlo._gpu_kernels  # pylint: disable=protected-access
  kernels, _, _, warnings = gpu_kernels(module, config.fusion)
  if warnings:
    raise RuntimeError(f"unexpected kernel-extraction warnings for cell {live}: {warnings}")
  return tuple(kernels)


def network_kernels(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig()
                    ) -> tuple[Kernel, ...]:
  """Predicted NVIDIA kernels (``gpu`` mode) of one inference call of the NB201 network for ``ops``.

  Equal to ``hlo.extract_kernels(net.apply, ..., mode="gpu")`` on the whole Flax network (up to
  HLO instruction names), at a fraction of the cost; cached per live cell.

  Raises:
    ValueError: bad ``ops``.
  """
  return _kernels_cached(live_ops(ops), config)


def network_features(ops: Sequence[int], spec: DeviceSpec | str,
                     config: NB201NetConfig = NB201NetConfig()) -> np.ndarray:
  """``model.kernel_features`` row (``FEATURE_NAMES`` columns) of the network for ``ops``."""
  return kernel_features(network_kernels(ops, config), spec, batch_size=config.batch_size)


def _feature_names() -> tuple[str, ...]:
  from cenas_jax.energy.model import FEATURE_NAMES  # pylint: disable=g-import-not-at-top
  return FEATURE_NAMES


def macs(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig()) -> int:
  """Multiply-accumulates of one image (NB201 / HW-NAS-Bench ``flops_M`` convention)."""
  from cenas_jax.spaces import nb201_net  # pylint: disable=g-import-not-at-top
  return nb201_net.analytical_flops(ops, config.num_classes, config.C, config.N,
                                    input_hw=config.input_hw)


def total_flops(kernels: Sequence[Kernel]) -> int:
  """FLOPs of a kernel list, launches counted (``repeat``)."""
  return int(math.fsum(k.flops * k.repeat for k in kernels))


# ----------------------------------------------------------------------------------------------------
# Many cells: parallel feature tables with an on-disk cache.


def _features_chunk(args: tuple[list[tuple[int, ...]], str, NB201NetConfig]) -> np.ndarray:
  """Worker entry point (module level so spawned processes can import it)."""
  ops_list, spec, config = args
  return np.stack([network_features(ops, spec, config) for ops in ops_list])


def compute_features(ops_rows: np.ndarray, spec: str, config: NB201NetConfig = NB201NetConfig(), *,
                     workers: int = 1, chunk_size: int = 64,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Feature rows for many cells, deduplicated by live cell, optionally over spawned processes.

  Args:
    ops_rows: ``(n, 6)`` op indices.
    spec: ``DEVICE_SPECS`` key for the roofline columns.
    config: network settings.
    workers: processes (``multiprocessing`` spawn context); 1 runs in this process.
    chunk_size: cells per task.
    progress: optional ``progress(done, total)`` over distinct live cells.

  Returns:
    ``(n, len(FEATURE_NAMES))`` float64.
  """
  ops_rows = np.asarray(ops_rows)
  if ops_rows.ndim != 2 or ops_rows.shape[1] != NUM_EDGES:
    raise ValueError(f"ops_rows must have shape (n, {NUM_EDGES}), got {ops_rows.shape}")
  if workers < 1 or chunk_size < 1:
    raise ValueError(f"workers and chunk_size must be >= 1, got {workers}, {chunk_size}")
  live = [live_ops(tuple(int(o) for o in r)) for r in ops_rows]
  unique = sorted(set(live))
  chunks = [unique[i:i + chunk_size] for i in range(0, len(unique), chunk_size)]
  results: list[np.ndarray] = []
  done = 0
  if workers == 1 or len(chunks) <= 1:
    for c in chunks:
      results.append(_features_chunk((c, spec, config)))
      done += len(c)
      if progress is not None:
        progress(done, len(unique))
  else:
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    import multiprocessing  # pylint: disable=g-import-not-at-top

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
      for c, rows in zip(chunks, pool.map(_features_chunk, [(c, spec, config) for c in chunks])):
        results.append(rows)
        done += len(c)
        if progress is not None:
          progress(done, len(unique))
  if not unique:
    return np.zeros((0, len(_feature_names())), np.float64)
  table = np.concatenate(results)
  pos = {ops: i for i, ops in enumerate(unique)}
  return table[[pos[ops] for ops in live]]


def cache_key(spec: str, config: NB201NetConfig = NB201NetConfig()) -> str:
  """What a cached feature row depends on: ``fingerprint(config)`` plus the device spec name."""
  return f"{fingerprint(config)}:{spec}"


def load_feature_cache(path: str, key: str) -> dict[int, np.ndarray]:
  """Rows of ``path`` (``features.npz``) keyed by arch index; empty when absent or stale.

  Raises:
    DataError: the file exists but is not a readable feature cache (the message names it; delete
      it to recompute).
  """
  import os  # pylint: disable=g-import-not-at-top

  from cenas_jax.errors import DataError  # pylint: disable=g-import-not-at-top

  if not os.path.exists(path):
    return {}
  try:
    with np.load(path, allow_pickle=False) as z:
      if str(z["key"]) != key:
        return {}
      idx, rows = z["arch_index"], z["features"]
  except (OSError, KeyError, ValueError) as e:
    raise DataError(f"{path}: not a feature cache ({type(e).__name__}: {e}); delete it to "
                    "recompute the features") from e
  if rows.ndim != 2 or rows.shape != (len(idx), len(_feature_names())):
    raise DataError(f"{path}: feature array has shape {rows.shape}; delete it to recompute")
  return {int(i): r for i, r in zip(idx, rows)}


def save_feature_cache(path: str, key: str, rows_by_index: Mapping[int, np.ndarray]) -> None:
  """Writes ``rows_by_index`` to ``path`` (``.npz``, atomically) under ``key``."""
  import io  # pylint: disable=g-import-not-at-top

  from cenas_jax.fileio import atomic_write_bytes  # pylint: disable=g-import-not-at-top

  idx = np.array(sorted(rows_by_index), np.int64)
  rows = (np.stack([rows_by_index[int(i)] for i in idx]) if len(idx) else
          np.zeros((0, len(_feature_names()))))
  buf = io.BytesIO()
  np.savez(buf, key=np.array(key), arch_index=idx, features=rows,
           feature_names=np.array(_feature_names()))
  atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------
# Validation: metrics, fitting and baselines.


def regression_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
  """RMSPE, share within +-10 % (nn-Meter's metric), Spearman and Kendall rank correlation.

  All are fractions (not percent): ``rmspe = sqrt(mean(((pred - y) / y)^2))``,
  ``acc10 = mean(|pred - y| / y <= 0.1)``.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  p = np.asarray(predicted, np.float64)
  y = np.asarray(measured, np.float64)
  if p.shape != y.shape or p.ndim != 1 or len(y) < 2:
    raise ValueError(f"need two equal 1-D arrays of >= 2 values, got {p.shape} and {y.shape}")
  if np.any(y <= 0) or not np.all(np.isfinite(y)) or not np.all(np.isfinite(p)):
    raise ValueError("measured values must be finite and > 0, predictions finite")
  rel = (p - y) / y
  return {"rmspe": float(np.sqrt(np.mean(rel**2))), "acc10": float(np.mean(np.abs(rel) <= 0.1)),
          "spearman": float(stats.spearmanr(p, y).statistic),
          "kendall": float(stats.kendalltau(p, y).statistic)}


@dataclasses.dataclass(frozen=True)
class LinearBaseline:
  """``y = intercept + slope * x``, fitted by relative least squares (each row weighted 1/y)."""

  intercept: float
  slope: float

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.intercept + self.slope * np.asarray(x, np.float64)


def fit_linear_baseline(x: np.ndarray, y: np.ndarray) -> LinearBaseline:
  """Fits ``LinearBaseline`` minimising ``sum(((a + b x - y) / y)^2)`` (the RMSPE objective)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  a = np.stack([np.ones_like(x), x], axis=1) / y[:, None]
  coef = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
  return LinearBaseline(float(coef[0]), float(coef[1]))


def fit_time_model(feature_rows: np.ndarray, measured_time_s: np.ndarray, prior: Any, *,
                   ridge: float = 1e-2) -> Any:
  """The prior with its time parameters (per-class efficiency, launch gap) fitted on times.

  Same objective as ``model.fit_energy_model``'s time stage: squared relative error plus
  ``ridge * sum_j (theta_j / theta0_j - 1)^2``, non-negative. Energy parameters stay at the prior.

  Args:
    feature_rows: ``(n, len(FEATURE_NAMES))`` rows.
    measured_time_s: ``(n,)`` measured time per call, in s (> 0).
    prior: an ``EnergyModel`` (starting point and regularization target).
    ridge: pull towards the prior (> 0).

  Returns:
    An ``EnergyModel``; use ``model.predict_time_s`` with it.
  """
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

  rows = np.atleast_2d(np.asarray(feature_rows, np.float64))
  t = np.asarray(measured_time_s, np.float64).reshape(-1)
  if rows.shape != (len(t), len(em.FEATURE_NAMES)) or np.any(t <= 0) or not np.all(np.isfinite(t)):
    raise ValueError("feature rows must match measured_time_s, times finite and > 0")
  if ridge <= 0:
    raise ValueError(f"ridge must be > 0, got {ridge}")
  nf, nc = len(em.CLASS_FEATURES), len(em.KERNEL_CLASSES)
  j_roof, j_launch = em.CLASS_FEATURES.index("roofline_s"), em.CLASS_FEATURES.index("launches")
  roof = rows[:, [i * nf + j_roof for i in range(nc)]]
  launches = rows[:, [i * nf + j_launch for i in range(nc)]].sum(axis=1, keepdims=True)
  design = np.hstack([roof, launches])
  theta0 = np.array([prior.classes[c].time_efficiency for c in em.KERNEL_CLASSES] +
                    [prior.launch_gap_s])
  scaled = design * theta0[None, :] / t[:, None]
  a = np.vstack([scaled, np.sqrt(ridge) * np.eye(len(theta0))])
  b = np.concatenate([np.ones(len(t)), np.sqrt(ridge) * np.ones(len(theta0))])
  theta = theta0 * em.nnls(a, b)
  classes = {c: dataclasses.replace(prior.classes[c], time_efficiency=float(theta[i]))
             for i, c in enumerate(em.KERNEL_CLASSES)}
  return dataclasses.replace(prior, classes=classes, launch_gap_s=float(theta[-1]),
                             provenance=f"fit:time:n={len(t)}:ridge={ridge:g}:from="
                                        f"{prior.provenance}")


def fit_kernel_model(feature_rows: np.ndarray, measured: np.ndarray, prior: Any, *, kind: str,
                     ridge: float) -> Any:
  """Fits the per-kernel model on energies in J (``kind="energy"``) or times in s (``latency``)."""
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

  if kind == "energy":
    return em.fit_energy_model(feature_rows, measured, prior, ridge=ridge)
  if kind == "latency":
    return fit_time_model(feature_rows, measured, prior, ridge=ridge)
  raise ValueError(f"kind must be 'energy' or 'latency', got {kind!r}")


def predict_kernel_model(fitted: Any, feature_rows: np.ndarray, *, kind: str) -> np.ndarray:
  """Energies in J or times in s of ``feature_rows`` under a ``fit_kernel_model`` result."""
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

  rows = np.atleast_2d(feature_rows)
  if kind == "energy":
    return np.asarray(em.predict_energy_j(fitted, rows))
  return np.asarray(em.predict_time_s(fitted, rows))


def select_ridge(feature_rows: np.ndarray, measured: np.ndarray, prior: Any, *, kind: str,
                 grid: Sequence[float], folds: int = 5, seed: int = 0
                 ) -> tuple[float, dict[float, float]]:
  """The ridge strength with the lowest k-fold cross-validated RMSPE (training cells only).

  Returns:
    ``(best ridge, {ridge: mean held-out-fold RMSPE})``.
  """
  y = np.asarray(measured, np.float64)
  if folds < 2 or len(y) < folds or not grid:
    raise ValueError("need folds >= 2, at least `folds` rows and a non-empty grid")
  fold = np.random.default_rng(seed).permutation(len(y)) % folds
  scores = {}
  for r in grid:
    errs = []
    for k in range(folds):
      tr, va = fold != k, fold == k
      fitted = fit_kernel_model(feature_rows[tr], y[tr], prior, kind=kind, ridge=float(r))
      p = predict_kernel_model(fitted, feature_rows[va], kind=kind)
      errs.append(float(np.sqrt(np.mean(((p - y[va]) / y[va])**2))))
    scores[float(r)] = float(np.mean(errs))
  return min(scores, key=scores.get), scores
