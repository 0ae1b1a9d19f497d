"""The kernels a jitted JAX function launches, read from XLA HLO.

``extract_kernels(fn, *args, mode=...)`` returns one ``Kernel`` per device kernel launch, each with
its class (GEMM, convolution, loop fusion, reduction, attention, copy/transpose, other), dtype,
shapes, FLOPs, bytes read and written, transcendentals and the HLO ops fused into it.

Two modes:

``compiled``
  Lowers and compiles ``fn`` for the backend at hand and reads the optimized HLO: every fusion,
  custom-call and unfused op of the entry computation (and of called/while computations) is one
  kernel. This is what the compiler really launches on this machine (on the CPU backend: XNNPACK
  ``ynn_fusion``/oneDNN custom fusions and loop fusions; on a GPU: ``__cublas$gemm`` calls, Triton
  and loop/input fusions).

``gpu``
  Predicts the NVIDIA kernels on a machine without a GPU. ``fn`` is lowered for the ``cuda``
  platform (``jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))`` works on a CPU-only
  host; if it fails the host platform is used and ``KernelGraph.lowered_for`` says so), and
  XLA-GPU-like rules are applied to the un-optimized HLO:

  1. ``call`` computations are inlined; identical pure instructions are merged (CSE); dead code is
     dropped.
  2. **Dot merger** (XLA's ``DotMerger``, GPU threshold ``--xla_gpu_dot_merger_threshold_mb``,
     default 32 MB): independent dots that share one operand, with equal dimension numbers and
     dtypes, where the other operand has one non-contracting dimension and at least one dot moves
     at most the threshold in input+output bytes, become **one** GEMM whose N is the sum of the
     N's. Their non-shared operands are concatenated by a separate copy kernel (XLA emits the
     ``concatenate`` as a loop fusion when those operands are runtime values, e.g. weights passed
     as arguments). This is the JAX counterpart of the paper's merged parallel kernels; the merged
     kernel has ``merged_count`` > 1 and ``KernelGraph.merge_groups`` lists the original dots.
  3. **Library calls**: each ``dot`` is a GEMM (cuBLAS/cuBLASLt), each ``convolution`` a cuDNN
     call. Layout-only producers of their operands (transpose, slice, broadcast, convert, copy,
     reshape) are absorbed (operand views), any other producer is materialized by its own kernel.
     Epilogues, each absorbed only while the intermediate value has a single user:
     ``multiply`` by a scalar constant (alpha); ``add`` of a full-shape tensor (beta*C); with
     ``cublaslt_epilogues`` (default on, as in XLA's ``xla_gpu_enable_cublaslt`` default of current
     XLA), ``add`` of a vector broadcast along the last output dimension (BIAS) and a following
     ``maximum(x, 0)`` (RELU). Convolutions (cuDNN fused conv rewriter) take a per-feature bias and
     a ReLU. A batch-norm (per-channel scale and shift) is not a conv epilogue: it becomes a loop
     fusion.
  4. **Reductions** (``reduce``) are kernels of their own (input fusions) with their elementwise
     producers fused in.
  5. **Loop fusions**: elementwise ops fuse producer into consumer. An elementwise value is
     materialized (ends a kernel) when it is a function output, feeds a library call or an
     unfusible op, or when non-cheap and read by two different kernels; cheap ops (broadcast,
     iota, convert, slice, reverse, scalars) are duplicated into every consumer instead. A value
     materialized only because of several consumers is emitted as an extra output of one consumer
     kernel (XLA's multi-output fusion) when that creates no cycle, preferring a reduction.
  6. Other ops (sort, scatter, dynamic-update-slice, RNG, collectives, non-trivial custom-calls)
     are one kernel each with no fusion; ``while`` bodies are expanded with their known trip count
     (``known_trip_count`` in the backend config) or once, with a warning.

  Not modelled (known differences from a real XLA-GPU compile): autotuning between cuBLAS and
  Triton GEMMs (a Triton GEMM may absorb more producers), Triton softmax fusion, horizontal loop
  fusion of independent small kernels, layout-assignment transposes and split-K reductions.

Cost accounting follows XLA's ``HloCostAnalysis``: elementwise ops 1 FLOP per output element,
transcendental ops counted as ``transcendentals`` (not FLOPs), dot ``2*M*N*K`` (per batch),
convolution ``2 * out_elements * kernel_elements / out_features``, reduce one FLOP per input element.
Bytes read are the distinct kernel inputs (parameters, constants that are not scalars, values
materialized by other kernels); bytes written are the kernel outputs.

The structured HLO API (``jaxlib._hlo.HloModule``) is used when present, with the text parser as the
fallback (``parser="auto"``); both give the same kernels. Results are cached by the SHA-256 of the
StableHLO text of the lowering (and of the HLO text), so re-extracting an unchanged program costs
only the (JAX-cached) trace, the lowering and one hash. ``kernel_graph_from_module`` runs either
mode on an ``hlo_ir.HloModuleIR`` built in memory (e.g. assembled from cached pieces), uncached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Sequence

from cenas_jax.energy import hlo_ir
from cenas_jax.energy.hlo_ir import HloInstr, HloModuleIR, TensorType

# Kernel classes, in the fixed order used by feature vectors.
KERNEL_CLASSES: tuple[str, ...] = ("gemm", "conv", "attention", "loop", "reduction", "copy", "other")

MODES = ("compiled", "gpu")

# ----------------------------------------------------------------------------------------------------
# Opcode categories.

_FREE = frozenset({
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "reshape", "after-all",
    "opt-barrier", "partition-id", "replica-id", "add-dependency", "domain", "get-dimension-size",
    "set-dimension-size",
})
# Layout-only ops that a GEMM/conv can take as an operand view without a kernel.
_VIEW = frozenset({"broadcast", "transpose", "slice", "convert", "copy", "reshape", "bitcast"})
# Cheap ops XLA duplicates into every consumer instead of materializing.
_CHEAP = frozenset({"broadcast", "iota", "convert", "slice", "reverse", "bitcast", "reshape"})
_DATA_MOVEMENT = frozenset({
    "broadcast", "transpose", "slice", "convert", "copy", "reshape", "bitcast", "concatenate", "pad",
    "gather", "dynamic-slice", "reverse", "iota", "bitcast-convert", "parameter", "constant",
    "get-tuple-element", "tuple",
})
_TRANSCENDENTAL = frozenset({
    "exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "rsqrt",
    "sqrt", "cbrt", "power", "sine", "cosine", "tan", "atan2", "erf",
})
_LIB = frozenset({"dot", "convolution", "custom-call", "fft", "triangular-solve", "cholesky"})
_RED = frozenset({"reduce"})
_OWN = frozenset({
    "sort", "scatter", "select-and-scatter", "dynamic-update-slice", "rng", "rng-bit-generator",
    "rng-get-and-update-state", "all-reduce", "all-gather", "reduce-scatter", "all-to-all",
    "collective-permute", "send", "recv", "send-done", "recv-done", "infeed", "outfeed", "topk",
    "all-reduce-start", "all-reduce-done", "all-gather-start", "all-gather-done",
    "collective-permute-start", "collective-permute-done", "async-start", "async-done",
    "async-update", "copy-start", "copy-done", "cholesky", "triangular-solve",
})
_COLLECTIVE_PREFIXES = ("all-", "reduce-scatter", "collective-", "send", "recv")
_SIDE_EFFECT = frozenset({"rng", "rng-bit-generator", "rng-get-and-update-state", "infeed",
                          "outfeed", "send", "recv", "custom-call", "parameter", "after-all"})
# Custom-calls that JAX emits as annotations and that launch nothing.
_NOOP_CUSTOM_CALLS = ("Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape",
                      "annotate_device_placement", "MoveToHost", "MoveToDevice", "LayoutConstraint",
                      "X64Combine", "X64SplitLow", "X64SplitHigh")


def _custom_target(instr: HloInstr) -> str:
  return (instr.attr("custom_call_target") or "").strip('"')


def _custom_class(target: str) -> str:
  t = target.lower()
  if any(s in t for s in ("fmha", "attention", "flash", "mha")):
    return "attention"
  if any(s in t for s in ("gemm", "matmul", "cublas", "dot")):
    return "gemm"
  if "conv" in t:
    return "conv"
  return "other"


# ----------------------------------------------------------------------------------------------------
# Public data types.


@dataclasses.dataclass(frozen=True)
class Kernel:
  """One kernel launch (per call of the function; ``repeat`` launches when inside a loop).

  Attributes:
    name: HLO name of the kernel's root instruction (merged GEMMs: ``merged(<dot names>)``).
    kernel_class: one of ``KERNEL_CLASSES``.
    dtype: element type the kernel computes in (GEMM/conv: the lhs operand type).
    in_shapes: shapes of the distinct kernel inputs read from memory.
    out_shapes: shapes of the kernel outputs written to memory.
    flops: floating-point operations per launch (XLA cost-analysis convention).
    transcendentals: transcendental operations per launch (exp, log, tanh, rsqrt, ...).
    bytes_read: bytes read from device memory per launch.
    bytes_written: bytes written to device memory per launch.
    fused_ops: opcodes of the HLO ops executed inside the kernel, in topological order.
    repeat: launches per call (trip count of an enclosing while loop; 1 otherwise).
    merged_count: number of original HLO ops merged into this launch (dot merger; 1 otherwise).
    gemm_bmnk: ``(batch, M, N, K)`` for GEMM kernels, else ``None``.
    epilogue: epilogue steps fused into a GEMM/conv (``alpha``, ``bias``, ``addend``, ``relu``).
    target: library target or fusion kind (``__cublas$lt$matmul``, ``__cudnn$convForward``,
      ``kLoop``, ``kInput``, a custom-call target, ...).
    hlo_names: names of the HLO instructions in the kernel (the root last).
  """

  name: str
  kernel_class: str
  dtype: str
  in_shapes: tuple[tuple[int, ...], ...]
  out_shapes: tuple[tuple[int, ...], ...]
  flops: int
  transcendentals: int
  bytes_read: int
  bytes_written: int
  fused_ops: tuple[str, ...] = ()
  repeat: int = 1
  merged_count: int = 1
  gemm_bmnk: tuple[int, int, int, int] | None = None
  epilogue: tuple[str, ...] = ()
  target: str = ""
  hlo_names: tuple[str, ...] = ()

  @property
  def bytes_accessed(self) -> int:
    return self.bytes_read + self.bytes_written

  @property
  def signature(self) -> tuple:
    """What determines the kernel's cost: class, dtype, shapes and fused ops (not names)."""
    return (self.kernel_class, self.dtype, self.in_shapes, self.out_shapes, self.fused_ops,
            self.epilogue, self.gemm_bmnk, self.merged_count)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return json.loads(json.dumps(d))


@dataclasses.dataclass(frozen=True)
class KernelGraph:
  """The kernels of one function plus how they connect.

  Attributes:
    kernels: kernels in a topological (launch) order.
    edges: ``(producer index, consumer index)`` pairs: the consumer reads the producer's output.
    merge_groups: for each merged GEMM, the names of the original dots it replaced.
    mode: ``compiled`` or ``gpu``.
    lowered_for: the platform the HLO was lowered for (``cuda``, ``cpu``, ...).
    fingerprint: SHA-256 of the HLO text the kernels were read from (empty for a module built in
      memory, ``kernel_graph_from_module``).
    parser: ``structured`` or ``text``; ``ir`` for a module built in memory.
    warnings: things the extractor could not model exactly (unknown loop trip counts, ...).
  """

  kernels: tuple[Kernel, ...]
  edges: tuple[tuple[int, int], ...]
  merge_groups: tuple[tuple[str, ...], ...]
  mode: str
  lowered_for: str
  fingerprint: str
  parser: str
  warnings: tuple[str, ...] = ()

  def count_by_class(self) -> dict[str, int]:
    """Number of launches per kernel class (``repeat`` included)."""
    out = {c: 0 for c in KERNEL_CLASSES}
    for k in self.kernels:
      out[k.kernel_class] += k.repeat
    return out


@dataclasses.dataclass(frozen=True)
class GpuFusionConfig:
  """Knobs of the ``gpu``-mode fusion rules (defaults follow current XLA-GPU defaults).

  Attributes:
    cublaslt_epilogues: fuse vector bias and ReLU into GEMMs (cuBLASLt; XLA flag
      ``xla_gpu_enable_cublaslt``). Without it only alpha scaling and a full-shape addend fuse.
    conv_epilogues: fuse per-feature bias and ReLU into convolutions (cuDNN fused conv rewriter).
    dot_merger_threshold_bytes: XLA ``DotMerger`` size limit (input+output bytes of at least one
      of the merged dots), default 32 MiB (``--xla_gpu_dot_merger_threshold_mb=32``); 0 disables.
  """

  cublaslt_epilogues: bool = True
  conv_epilogues: bool = True
  dot_merger_threshold_bytes: int = 32 << 20


# ----------------------------------------------------------------------------------------------------
# Per-op cost (shared by both modes).


def _dims_attr(instr: HloInstr, key: str) -> tuple[int, ...]:
  v = instr.attr(key)
  if not v:
    return ()
  return tuple(int(x) for x in v.strip("{} ").split(",") if x.strip())


def _window_size(instr: HloInstr) -> int:
  w = instr.attr("window") or ""
  m = re.search(r"size=([0-9x]+)", w)
  return math.prod(int(s) for s in m.group(1).split("x")) if m else 1


def _conv_kernel_elements_per_output(instr: HloInstr, rhs: TensorType) -> int:
  """Multiply-adds per output element of a convolution: kernel elements / output features."""
  labels = instr.attr("dim_labels") or ""
  m = re.match(r"[^_]+_([^-]+)->", labels)
  if m and "o" in m.group(1) and len(m.group(1)) == len(rhs.dims):
    out_features = rhs.dims[m.group(1).index("o")]
  else:
    out_features = rhs.dims[-1] if rhs.dims else 1
  return rhs.elements // max(out_features, 1)


def op_cost(instr: HloInstr, operand_types: Sequence[TensorType]) -> tuple[int, int]:
  """FLOPs and transcendentals of one HLO instruction (XLA ``HloCostAnalysis`` convention).

  Args:
    instr: the instruction.
    operand_types: the result type of each operand, in order.

  Returns:
    ``(flops, transcendentals)``.
  """
  op = instr.opcode
  out = instr.type.elements if instr.types else 0
  if op == "dot":
    lhs = operand_types[0]
    k = math.prod(lhs.dims[d] for d in _dims_attr(instr, "lhs_contracting_dims"))
    return 2 * out * k, 0
  if op == "convolution":
    return 2 * out * _conv_kernel_elements_per_output(instr, operand_types[1]), 0
  if op == "reduce":
    n_in = max(len(operand_types) // 2, 1)
    return sum(t.elements for t in operand_types[:n_in]), 0
  if op == "reduce-window":
    return out * _window_size(instr), 0
  if op in _TRANSCENDENTAL:
    return 0, out
  if op in _DATA_MOVEMENT or op in _FREE or op in ("fusion", "call", "while", "conditional",
                                                     "custom-call", "sort", "scatter"):
    return 0, 0
  return out, 0


# ----------------------------------------------------------------------------------------------------
# Graph helpers.


class _Node:
  """A mutable working copy of an instruction in the flattened gpu-mode graph.

  Attributes:
    instr: the instruction as read (for its opcode, types, attributes and literal; its own name and
      operands are those of the computation it came from).
    operands: graph names of the operands (rewired by tuple resolution, CSE and the dot merger).
    repeat: launches per call (trip count of the enclosing while loops).
    name: graph name (``instr.name`` under the prefix of the call it was inlined from).
    opcode: ``instr.opcode``.
  """

  __slots__ = ("instr", "operands", "repeat", "name", "opcode")

  def __init__(self, instr: HloInstr, operands: list[str], repeat: int = 1,
               name: str | None = None) -> None:
    self.instr = instr
    self.operands = operands
    self.repeat = repeat
    self.name = instr.name if name is None else name
    self.opcode = instr.opcode


def _post_order(roots: Sequence[str], operands_of: Callable[[str], Sequence[str]]) -> list[str]:
  """Depth-first post-order from ``roots`` (operands visited in order): a canonical topo order.

  ``operands_of`` is called once per visited node.
  """
  seen: set[str] = set()
  order: list[str] = []
  for root in roots:
    if root in seen:
      continue
    seen.add(root)
    # Each frame: [name, its operands, index of the next operand to visit].
    stack = [[root, operands_of(root), 0]]
    while stack:
      frame = stack[-1]
      ops, i = frame[1], frame[2]
      while i < len(ops) and ops[i] in seen:
        i += 1
      if i < len(ops):
        frame[2] = i + 1
        o = ops[i]
        seen.add(o)
        stack.append([o, operands_of(o), 0])
      else:
        stack.pop()
        order.append(frame[0])
  return order


def _trip_count(instr: HloInstr) -> int | None:
  cfg = instr.attr("backend_config") or ""
  m = re.search(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)', cfg)
  return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------------------------------
# Compiled mode: one kernel per launched instruction of the optimized HLO.


def _fusion_class(instr: HloInstr, module: HloModuleIR) -> tuple[str, str]:
  kind = instr.attr("kind") or ""
  cfg = instr.attr("backend_config") or ""
  opcodes: set[str] = set()
  targets: list[str] = []
  stack = list(instr.called)
  while stack:
    comp = module.computations.get(stack.pop())
    if comp is None:
      continue
    for i in comp.instrs:
      opcodes.add(i.opcode)
      if i.opcode == "custom-call":
        targets.append(_custom_target(i))
      if i.opcode == "fusion":
        stack.extend(i.called)
  m = re.search(r'"kind"\s*:\s*"([^"]+)"', cfg)
  label = m.group(1) if m else kind
  low = label.lower()
  if any(s in low for s in ("fmha", "attention")) or any(_custom_class(t) == "attention"
                                                         for t in targets):
    return "attention", label
  if "convolution" in opcodes:
    return "conv", label
  if "dot" in opcodes or "gemm" in low or any(_custom_class(t) == "gemm" for t in targets):
    return "gemm", label
  if kind == "kInput" or "reduce" in opcodes or "scatter" in opcodes:
    return "reduction", label
  if opcodes <= _DATA_MOVEMENT:
    return "copy", label
  return "loop", label


def _computation_cost(comp_name: str, module: HloModuleIR, memo: dict) -> tuple[int, int, list]:
  """(flops, transcendentals, opcodes) of a fused computation, nested fusions included."""
  if comp_name in memo:
    return memo[comp_name]
  comp = module.computations[comp_name]
  by_name = comp.by_name()
  types = {i.name: i.type for i in comp.instrs}
  flops = trans = 0
  ops: list[str] = []
  for name in _post_order([comp.root], lambda n: by_name[n].operands if n in by_name else ()):
    i = by_name[name]
    if i.opcode == "fusion":
      f, t, o = _computation_cost(i.called[0], module, memo)
      flops, trans = flops + f, trans + t
      ops.extend(o)
      continue
    f, t = op_cost(i, [types.get(o, TensorType("f32", ())) for o in i.operands])
    flops, trans = flops + f, trans + t
    if i.opcode not in _FREE:
      ops.append(i.opcode)
  memo[comp_name] = (flops, trans, ops)
  return memo[comp_name]


def _gemm_bmnk(dot: HloInstr, lhs: TensorType, rhs: TensorType) -> tuple[int, int, int, int]:
  lc, rc = _dims_attr(dot, "lhs_contracting_dims"), _dims_attr(dot, "rhs_contracting_dims")
  lb, rb = _dims_attr(dot, "lhs_batch_dims"), _dims_attr(dot, "rhs_batch_dims")
  batch = math.prod(lhs.dims[d] for d in lb)
  k = math.prod(lhs.dims[d] for d in lc)
  m = math.prod(s for d, s in enumerate(lhs.dims) if d not in lc and d not in lb)
  n = math.prod(s for d, s in enumerate(rhs.dims) if d not in rc and d not in rb)
  return batch, m, n, k


def _compiled_kernels(module: HloModuleIR) -> tuple[list[Kernel], list[tuple[int, int]], list[str]]:
  kernels: list[Kernel] = []
  edges: list[tuple[int, int]] = []
  warnings: list[str] = []
  memo: dict = {}

  def walk(comp_name: str, repeat: int, prefix_inputs: Mapping[str, int] | None = None) -> None:
    comp = module.computations[comp_name]
    by_name = comp.by_name()
    users: dict[str, list[str]] = {}
    for i in comp.instrs:
      for o in i.operands:
        users.setdefault(o, []).append(i.name)
    producer: dict[str, int] = {}  # instruction name -> kernel index (through free ops)
    order = _post_order([comp.root], lambda n: by_name[n].operands if n in by_name else ())
    for name in order:
      instr = by_name[name]
      op = instr.opcode

      def src_kernels(names: Iterable[str]) -> set[int]:
        return {producer[o] for o in names if o in producer}

      if op in ("while",):
        trip = _trip_count(instr)
        if trip is None:
          warnings.append(f"while loop {name}: trip count unknown, body counted once")
        cond, body = instr.attr("condition", "").lstrip("%"), instr.attr("body", "").lstrip("%")
        walk(body, repeat * (trip or 1))
        if cond in module.computations:
          walk(cond, repeat * (trip or 1))
        continue
      if op in ("call", "conditional"):
        if op == "conditional":
          warnings.append(f"conditional {name}: every branch counted")
        for c in instr.called:
          walk(c, repeat)
        continue
      if op in _FREE or (op == "custom-call" and _custom_target(instr) in _NOOP_CUSTOM_CALLS):
        ks = src_kernels(instr.operands)
        if len(ks) == 1:
          producer[name] = next(iter(ks))
        continue
      in_types = [by_name[o].type if o in by_name else TensorType("f32", ()) for o in
                  instr.operands]
      if op == "fusion":
        cls, label = _fusion_class(instr, module)
        flops, trans, ops = _computation_cost(instr.called[0], module, memo)
      else:
        flops, trans = op_cost(instr, in_types)
        ops = [op]
        label = _custom_target(instr) if op == "custom-call" else op
        if op == "dot":
          cls = "gemm"
        elif op == "convolution":
          cls = "conv"
        elif op == "custom-call":
          cls = _custom_class(label)
        elif op in _RED:
          cls = "reduction"
        elif op in ("copy", "transpose", "concatenate", "pad", "slice", "gather", "dynamic-slice",
                    "broadcast", "iota", "reverse", "convert"):
          cls = "copy"
        elif op in _OWN or op in _LIB:
          cls = "other"
        else:
          cls = "loop"
      bmnk = None
      if cls == "gemm" and op == "dot":
        bmnk = _gemm_bmnk(instr, in_types[0], in_types[1])
      elif cls == "gemm":
        dot = _find_dot(instr, module)
        if dot is not None:
          dot_instr, lhs_t, rhs_t = dot
          bmnk = _gemm_bmnk(dot_instr, lhs_t, rhs_t)
      seen_in: dict[str, TensorType] = {}
      for o in instr.operands:
        if o in by_name:
          src = _strip_free(o, by_name)
          t = by_name[src]
          if t.opcode == "constant" and t.type.elements <= 1:
            continue
          seen_in.setdefault(src, by_name[o].type)
      slice_users = [u for u in users.get(name, []) if by_name[u].opcode == "slice"]
      merged = len(slice_users) if cls == "gemm" and len(slice_users) >= 2 and len(
          slice_users) == len(users.get(name, [])) else 1
      idx = len(kernels)
      kernels.append(Kernel(
          name=name, kernel_class=cls, dtype=(in_types[0].dtype if cls in ("gemm", "conv") and
                                              in_types else instr.type.dtype),
          in_shapes=tuple(t.dims for t in seen_in.values()),
          out_shapes=tuple(t.dims for t in instr.types),
          flops=int(flops), transcendentals=int(trans),
          bytes_read=sum(t.nbytes for t in seen_in.values()), bytes_written=instr.out_bytes,
          fused_ops=tuple(ops), repeat=repeat, merged_count=merged, gemm_bmnk=bmnk, target=label,
          hlo_names=(name,)))
      for k in src_kernels(instr.operands):
        edges.append((k, idx))
      producer[name] = idx

  walk(module.entry, 1)
  return kernels, sorted(set(edges)), warnings


def _strip_free(name: str, by_name: Mapping[str, HloInstr]) -> str:
  while name in by_name and by_name[name].opcode in ("bitcast", "reshape", "get-tuple-element",
                                                     "copy") and by_name[name].operands:
    if by_name[name].opcode == "copy":
      break
    name = by_name[name].operands[0]
  return name


def _find_dot(instr: HloInstr, module: HloModuleIR) -> tuple[HloInstr, TensorType, TensorType] | None:
  """The dot inside a GEMM kernel with its operand types (None for opaque custom-calls)."""
  if instr.opcode == "dot":
    return None  # handled by caller through operand types below
  stack = list(instr.called)
  while stack:
    comp = module.computations.get(stack.pop())
    if comp is None:
      continue
    types = {i.name: i.type for i in comp.instrs}
    for i in comp.instrs:
      if i.opcode == "dot":
        return i, types[i.operands[0]], types[i.operands[1]]
      stack.extend(i.called)
  return None


# ----------------------------------------------------------------------------------------------------
# GPU mode: flatten, CSE, dot merger, fusion rules.


class _Graph:
  """Flattened, mutable data-flow graph of one computation (calls inlined)."""

  def __init__(self) -> None:
    self.nodes: dict[str, _Node] = {}
    self.roots: list[str] = []

  def add(self, node: _Node) -> None:
    self.nodes[node.name] = node

  def type(self, name: str) -> TensorType:
    return self.nodes[name].instr.type


def _flatten(module: HloModuleIR, comp_name: str, graph: _Graph, bindings: Mapping[str, str],
             prefix: str, repeat: int, warnings: list[str]) -> str:
  """Copies ``comp_name`` into ``graph`` (inlining calls); returns the graph name of its root."""
  comp = module.computations[comp_name]
  rename: dict[str, str] = {}
  for instr in comp.instrs:
    new_name = prefix + instr.name
    if instr.opcode == "parameter" and bindings:
      rename[instr.name] = bindings[instr.literal]
      continue
    ops = [rename.get(o, prefix + o) for o in instr.operands]
    if instr.opcode == "call":
      callee = instr.attr("to_apply", "").lstrip("%")
      binds = {str(i): o for i, o in enumerate(ops)}
      rename[instr.name] = _flatten(module, callee, graph, binds, f"{new_name}/", repeat, warnings)
      continue
    if instr.opcode == "while":
      trip = _trip_count(instr)
      if trip is None:
        warnings.append(f"while loop {instr.name}: trip count unknown, body counted once")
      body = instr.attr("body", "").lstrip("%")
      # The loop state enters the body as parameter 0; the while result aliases the body root.
      rename[instr.name] = _flatten(module, body, graph, {"0": ops[0]}, f"{new_name}/",
                                    repeat * (trip or 1), warnings)
      continue
    if instr.opcode == "conditional":
      warnings.append(f"conditional {instr.name}: every branch counted")
      outs = []
      for i, branch in enumerate(instr.called):
        outs.append(_flatten(module, branch, graph, {"0": ops[i + 1]} if i + 1 < len(ops) else {},
                             f"{new_name}/{i}/", repeat, warnings))
      rename[instr.name] = outs[0]
      continue
    rename[instr.name] = new_name
    graph.add(_Node(instr, ops, repeat, new_name))
  return rename.get(comp.root, prefix + comp.root)


def _resolve_tuples(graph: _Graph) -> None:
  """Rewires ``get-tuple-element(tuple(...))`` to the tuple element; removes the indirection."""
  def resolve(name: str) -> str:
    seen = 0
    while seen < 1000:
      seen += 1
      node = graph.nodes.get(name)
      if node is None or node.opcode != "get-tuple-element":
        return name
      src = graph.nodes.get(node.operands[0])
      if src is None or src.opcode != "tuple":
        return name
      name = src.operands[int(node.instr.attr("index", "0"))]
    return name

  for node in graph.nodes.values():
    node.operands = [resolve(o) for o in node.operands]
  graph.roots = [resolve(r) for r in graph.roots]


def _cse(graph: _Graph, order: list[str]) -> None:
  """Merges pure instructions with the same opcode, type, operands and attributes."""
  canon: dict[str, str] = {}
  table: dict[tuple, str] = {}
  # Inlined call sites share their ``HloInstr`` objects: the operand-independent part of the key
  # (opcode, types, attributes, literal) is numbered once per distinct value.
  static_ids: dict[tuple, int] = {}
  static_of: dict[int, int] = {}  # id(instr) -> number (the instructions outlive this pass)
  for name in order:
    node = graph.nodes[name]
    node.operands = [canon.get(o, o) for o in node.operands]
    if node.opcode in _SIDE_EFFECT:
      continue
    instr = node.instr
    sid = static_of.get(id(instr))
    if sid is None:
      attrs = tuple((k, v) for k, v in instr.attrs if k not in ("metadata", "sharding"))
      sid = static_of[id(instr)] = static_ids.setdefault(
          (node.opcode, instr.types, attrs, instr.literal), len(static_ids))
    key = (sid, tuple(node.operands), node.repeat)
    if key in table:
      canon[name] = table[key]
    else:
      table[key] = name
  graph.roots = [canon.get(r, r) for r in graph.roots]


def _ancestors(graph: _Graph, order: list[str]) -> dict[str, int]:
  """Bitset of ancestors (by position in ``order``) for every node."""
  pos = {n: i for i, n in enumerate(order)}
  anc: dict[str, int] = {}
  for n in order:
    bits = 0
    for o in graph.nodes[n].operands:
      if o in pos:
        bits |= anc[o] | (1 << pos[o])
    anc[n] = bits
  return anc


def _dot_merger(graph: _Graph, order: list[str], threshold_bytes: int) -> list[tuple[str, ...]]:
  """XLA DotMerger: merges independent dots sharing an operand into one dot. Returns groups."""
  if threshold_bytes <= 0:
    return []
  if sum(graph.nodes[n].opcode == "dot" for n in order) < 2:
    return []  # nothing to merge
  pos = {n: i for i, n in enumerate(order)}
  anc = _ancestors(graph, order)
  groups: dict[tuple, list[list[str]]] = {}
  sizes: dict[str, int] = {}
  for name in order:
    node = graph.nodes[name]
    if node.opcode != "dot" or len(node.operands) != 2:
      continue
    dims = tuple(node.instr.attr(k) for k in ("lhs_contracting_dims", "rhs_contracting_dims",
                                              "lhs_batch_dims", "rhs_batch_dims"))
    lhs_t, rhs_t = graph.type(node.operands[0]), graph.type(node.operands[1])
    size = node.instr.out_bytes + lhs_t.nbytes + rhs_t.nbytes
    sizes[name] = size
    for side in (0, 1):
      other = node.operands[1 - side]
      other_t = graph.type(other)
      n_fixed = len(_dims_attr(node.instr, ("lhs", "rhs")[1 - side] + "_contracting_dims")) + len(
          _dims_attr(node.instr, ("lhs", "rhs")[1 - side] + "_batch_dims"))
      if len(other_t.dims) - n_fixed != 1:
        continue
      key = (side, node.operands[side], dims, lhs_t.dtype, rhs_t.dtype, node.instr.type.dtype,
             node.repeat)
      placed = False
      for group in groups.setdefault(key, []):
        independent = all(not (anc[name] >> pos[g]) & 1 and not (anc[g] >> pos[name]) & 1
                          for g in group)
        small = size <= threshold_bytes or any(sizes[g] <= threshold_bytes for g in group)
        if independent and small and name not in group:
          group.append(name)
          placed = True
          break
      if not placed:
        groups[key].append([name])
  merged: list[tuple[str, ...]] = []
  used: set[str] = set()
  for key, lists in groups.items():
    side = key[0]
    for group in lists:
      group = [g for g in group if g not in used]
      if len(group) < 2:
        continue
      used.update(group)
      merged.append(tuple(group))
      _apply_merge(graph, group, side)
  return merged


def _apply_merge(graph: _Graph, group: list[str], side: int) -> None:
  """Rewrites dots ``d_i = dot(shared, w_i)`` into ``z = dot(shared, concat(w_i))``, ``d_i = slice(z)``."""
  first = graph.nodes[group[0]].instr
  shared = graph.nodes[group[0]].operands[side]
  others = [graph.nodes[g].operands[1 - side] for g in group]
  prefix = ("lhs", "rhs")[1 - side]
  fixed = set(_dims_attr(first, prefix + "_contracting_dims")) | set(
      _dims_attr(first, prefix + "_batch_dims"))
  other_t = graph.type(others[0])
  free_dim = [d for d in range(len(other_t.dims)) if d not in fixed][0]
  cat_dims = list(other_t.dims)
  cat_dims[free_dim] = sum(graph.type(o).dims[free_dim] for o in others)
  cat_name = f"concatenate({','.join(group)})"
  cat_instr = HloInstr(cat_name, "concatenate", (TensorType(other_t.dtype, tuple(cat_dims)),),
                       tuple(others), (("dimensions", f"{{{free_dim}}}"),))
  graph.add(_Node(cat_instr, list(others), graph.nodes[group[0]].repeat))
  out_t = first.type
  # The non-shared operand's free dim is the last of the lhs (side 1) or rhs (side 0) free dims.
  out_dim = len(out_t.dims) - 1 if side == 0 else len(out_t.dims) - 2
  if side == 1:
    lhs_free = len(other_t.dims) - len(fixed)
    out_dim = len(_dims_attr(first, "lhs_batch_dims")) + lhs_free - 1
  out_dims = list(out_t.dims)
  out_dims[out_dim] = sum(graph.nodes[g].instr.type.dims[out_dim] for g in group)
  merged_name = f"merged({','.join(group)})"
  ops = [shared, cat_name] if side == 0 else [cat_name, shared]
  merged_instr = dataclasses.replace(first, name=merged_name, operands=tuple(ops),
                                     types=(TensorType(out_t.dtype, tuple(out_dims)),))
  graph.add(_Node(merged_instr, ops, graph.nodes[group[0]].repeat))
  for g in group:
    node = graph.nodes[g]
    graph.add(_Node(HloInstr(g, "slice", node.instr.types, (merged_name,), (("merged_from", "1"),)),
                    [merged_name], node.repeat))


def _is_scalar_constant(graph: _Graph, name: str, value: float | None = None) -> bool:
  """True when ``name`` is (a broadcast/reshape/convert chain of) a scalar constant."""
  while name in graph.nodes and graph.nodes[name].opcode in ("broadcast", "reshape", "bitcast",
                                                             "convert"):
    name = graph.nodes[name].operands[0]
  node = graph.nodes.get(name)
  if node is None or node.opcode != "constant" or node.instr.type.elements != 1:
    return False
  if value is None:
    return True
  try:
    return float(node.instr.literal.strip("{} ")) == value
  except ValueError:
    return False


def _view_source(graph: _Graph, name: str, through: frozenset[str]) -> str:
  while name in graph.nodes and graph.nodes[name].opcode in through and graph.nodes[name].operands:
    name = graph.nodes[name].operands[0]
  return name


def _conv_feature_dim(instr: HloInstr) -> int:
  labels = instr.attr("dim_labels") or ""
  out = labels.split("->")[-1] if "->" in labels else ""
  return out.index("f") if "f" in out else len(instr.type.dims) - 1


@contextlib.contextmanager
def _gc_paused():
  """Pauses Python's cyclic garbage collector for the block (restored if it was enabled).

  The gpu-mode pass allocates some 10^5 short-lived objects per NB201-sized network, all freed by
  reference counting; with JAX loaded the collector's scans of the whole heap took about as long as
  the pass itself.
  """
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


def _gpu_kernels(module: HloModuleIR, config: GpuFusionConfig) -> tuple[
    list[Kernel], list[tuple[int, int]], list[tuple[str, ...]], list[str]]:
  """The gpu-mode rules on ``module``: ``(kernels, edges, merge groups, warnings)``.

  ``kernel_graph_from_module`` is the public form of this.
  """
  with _gc_paused():
    return _gpu_rules(module, config)


def _gpu_rules(module: HloModuleIR, config: GpuFusionConfig) -> tuple[
    list[Kernel], list[tuple[int, int]], list[tuple[str, ...]], list[str]]:
  warnings: list[str] = []
  graph = _Graph()
  root = _flatten(module, module.entry, graph, {}, "", 1, warnings)
  graph.roots = [root]
  _resolve_tuples(graph)

  def order_now() -> list[str]:
    nodes = graph.nodes

    def operands_of(n: str) -> Sequence[str]:
      node = nodes.get(n)
      return () if node is None else node.operands

    return _post_order(graph.roots, operands_of)

  order = order_now()
  _cse(graph, order)
  order = order_now()
  merge_groups = _dot_merger(graph, order, config.dot_merger_threshold_bytes)
  if merge_groups:
    order = order_now()
  nodes = graph.nodes
  users: dict[str, list[str]] = {n: [] for n in order}
  for n in order:
    for o in nodes[n].operands:
      if o in users and n not in users[o]:
        users[o].append(n)

  def category(n: str) -> str:
    node = nodes[n]
    op = node.opcode
    if op == "custom-call":
      return "free" if _custom_target(node.instr) in _NOOP_CUSTOM_CALLS else "lib"
    if op in _FREE:
      return "free"
    if op in _LIB:
      return "lib"
    if op in _RED:
      return "red"
    if op in _OWN or op.startswith(_COLLECTIVE_PREFIXES):
      return "own"
    return "ew"

  cat = {n: category(n) for n in order}

  # The graph no longer changes: memoize the view source of each name per set of see-through ops.
  view_memo: dict[frozenset[str], dict[str, str]] = {}

  def view_source(name: str, through: frozenset[str]) -> str:
    memo = view_memo.setdefault(through, {})
    src = memo.get(name)
    if src is None:
      src = memo[name] = _view_source(graph, name, through)
    return src

  eff_users_memo: dict[str, tuple[str, ...]] = {}

  def eff_users(n: str) -> tuple[str, ...]:
    """Users of ``n`` seen through free ops (reshape, bitcast, tuple, get-tuple-element)."""
    hit = eff_users_memo.get(n)
    if hit is not None:
      return hit
    out, stack, seen = [], list(users[n]), set()
    while stack:
      u = stack.pop()
      if u in seen:
        continue
      seen.add(u)
      if cat[u] == "free" and nodes[u].opcode != "parameter":
        stack.extend(users[u])
      else:
        out.append(u)
    eff_users_memo[n] = hit = tuple(out)
    return hit

  # --- Library calls and their epilogues. -----------------------------------------------------------
  owner: dict[str, int] = {}  # node -> kernel id for lib/red/own groups and materialized roots
  groups: list[dict[str, Any]] = []

  def new_group(kind: str, root_name: str, members: list[str], **extra: Any) -> int:
    gid = len(groups)
    groups.append(dict(kind=kind, root=root_name, members=list(members), outputs=[root_name],
                       **extra))
    for m in members:
      owner[m] = gid
    return gid

  for n in order:
    if cat[n] != "lib" or n in owner:
      continue
    node = nodes[n]
    members = [n]
    epilogue: list[str] = []
    cur = n
    if node.opcode in ("dot", "convolution"):
      is_dot = node.opcode == "dot"
      vec_ok = config.cublaslt_epilogues if is_dot else config.conv_epilogues
      feat = len(node.instr.type.dims) - 1 if is_dot else _conv_feature_dim(node.instr)
      feat_size = node.instr.type.dims[feat] if node.instr.type.dims else 1
      stage = 0  # 0: alpha allowed, 1: bias allowed, 2: relu allowed, 3: done
      while stage < 3:
        us = users[cur]
        if len(us) != 1 or cur in graph.roots:
          break
        u = us[0]
        un = nodes[u]
        if un.instr.types != nodes[cur].instr.types:
          break
        other = [o for o in un.operands if o != cur]
        if len(other) != 1 or len(un.operands) != 2:
          break
        other = other[0]
        if stage == 0 and un.opcode == "multiply" and _is_scalar_constant(graph, other):
          epilogue.append("alpha")
          stage = 1
        elif stage <= 1 and un.opcode == "add":
          src = _view_source(graph, other, frozenset({"broadcast", "reshape", "bitcast"}))
          src_t = graph.type(src)
          if graph.type(other) == un.instr.type and src == other and len(eff_users(other)) == 1:
            epilogue.append("addend")  # beta * C with a full-shape C
          elif vec_ok and src_t.elements == feat_size and nodes[other].opcode in (
              "broadcast", "reshape"):
            epilogue.append("bias")
          else:
            break
          stage = 2
        elif vec_ok and un.opcode == "maximum" and _is_scalar_constant(graph, other, 0.0):
          epilogue.append("relu")
          stage = 3
        else:
          break
        members.append(u)
        cur = u
    target = ("__cublas$lt$matmul" if node.opcode == "dot" and config.cublaslt_epilogues else
              "__cublas$gemm" if node.opcode == "dot" else
              "__cudnn$convBiasActivationForward" if node.opcode == "convolution" and epilogue else
              "__cudnn$convForward" if node.opcode == "convolution" else
              _custom_target(node.instr) or node.opcode)
    cls = ("gemm" if node.opcode == "dot" else "conv" if node.opcode == "convolution" else
           _custom_class(target) if node.opcode == "custom-call" else "other")
    new_group("lib", cur, members, cls=cls, epilogue=tuple(epilogue), target=target, lib=n)

  for n in order:
    if cat[n] == "red" and n not in owner:
      new_group("red", n, [n], cls="reduction", epilogue=(), target="kInput")
    elif cat[n] == "own" and n not in owner:
      cls = "other"
      new_group("own", n, [n], cls=cls, epilogue=(), target=nodes[n].opcode)

  # --- Which elementwise values must be materialized. -----------------------------------------------
  materialized: set[str] = set()

  def force(n: str, through: frozenset[str]) -> None:
    src = view_source(n, through)
    if src in nodes and cat[src] in ("ew",) and src not in owner:
      materialized.add(src)
    elif src in nodes and cat[src] == "free" and nodes[src].opcode not in ("parameter", "constant"):
      for o in nodes[src].operands:
        force(o, through)

  # Ops a value flows through unchanged (a tuple is handled operand by operand in ``force``).
  free_ops = frozenset(op for op in _FREE if op not in ("parameter", "constant", "tuple"))
  view_or_free_ops = _VIEW | free_ops
  for g in groups:
    if g["kind"] == "red":
      continue  # reductions absorb their elementwise producers (input fusion)
    for m in g["members"]:
      for o in nodes[m].operands:
        if o in g["members"]:
          continue
        force(o, view_or_free_ops if g["kind"] == "lib" else free_ops)
  for r in graph.roots:
    force(r, free_ops)

  # Reverse topological pass: assign each elementwise node to the kernels that read it.
  kernel_of: dict[str, set[int]] = {}
  multi: set[str] = set()
  for n in reversed(order):
    if cat[n] != "ew" or n in owner:
      continue
    if n in materialized:
      gid = new_group("loop", n, [n], cls="loop", epilogue=(), target="kLoop")
      kernel_of[n] = {gid}
      continue
    ks: set[int] = set()
    for u in eff_users(n):
      if u in owner:
        # A reduction absorbs its producers; a library call absorbs views of its operands
        # (anything else feeding it was materialized above).
        ks.add(owner[u])
      elif u in kernel_of:
        ks |= kernel_of[u]
    cheap = nodes[n].opcode in _CHEAP or nodes[n].instr.type.elements <= 1
    if len(ks) > 1 and not cheap:
      materialized.add(n)
      multi.add(n)
      gid = new_group("loop", n, [n], cls="loop", epilogue=(), target="kLoop")
      kernel_of[n] = {gid}
    else:
      kernel_of[n] = ks
      for k in ks:
        if n not in groups[k]["members"]:
          groups[k]["members"].append(n)

  # Multi-output fusion: put a value materialized only for several consumers into one consumer.
  # The graph no longer changes, so each kernel's external sources (operands of its members seen
  # through free ops, minus the members) are computed once and again only when a merge adds
  # members to it; ``readers`` maps a source to (a superset of) the kernels reading it.
  pos = {n: i for i, n in enumerate(order)}
  sources_of: dict[int, frozenset[str]] = {}
  readers: dict[str, set[int]] = {}

  def update_sources(gid: int) -> None:
    mem = set(groups[gid]["members"])
    srcs = frozenset(s for m in mem for o in nodes[m].operands
                     if (s := view_source(o, free_ops)) not in mem)
    sources_of[gid] = srcs
    for s in srcs:
      readers.setdefault(s, set()).add(gid)

  inputs_memo: dict[int, set[int]] = {}  # valid until the next merge changes owners or outputs

  def group_inputs(gid: int) -> set[int]:
    """Kernels whose outputs kernel ``gid`` reads."""
    hit = inputs_memo.get(gid)
    if hit is not None:
      return hit
    srcs: set[int] = set()
    for s in sources_of[gid]:
      o = owner.get(s)
      if o is not None and o != gid and s in groups[o]["outputs"]:
        srcs.add(o)
    inputs_memo[gid] = srcs
    return srcs

  def reaches(a: int, b: int, skip_direct: bool) -> bool:
    """True when kernel ``b`` depends on kernel ``a`` (through another kernel if skip_direct)."""
    stack = [b]
    seen = set()
    while stack:
      x = stack.pop()
      for s in group_inputs(x):
        if s == a and (x != b or not skip_direct):
          return True
        if s not in seen:
          seen.add(s)
          stack.append(s)
    return False

  alive = [True] * len(groups)
  if multi:
    for k in range(len(groups)):
      update_sources(k)
  for n in order:
    if n not in multi:
      continue
    gid = owner[n]
    # Kernel k reads gid only through a source in gid's outputs, so ``readers`` of those outputs
    # hold every candidate; the exact test follows.
    candidates: set[int] = set()
    for out in groups[gid]["outputs"]:
      candidates |= readers.get(out, set())
    consumers = sorted(k for k in candidates if alive[k] and k != gid and gid in
                       group_inputs(k) and groups[k]["kind"] in ("red", "loop"))
    consumers.sort(key=lambda k: (groups[k]["kind"] != "red", pos[groups[k]["root"]]))
    for k in consumers:
      if reaches(gid, k, skip_direct=True):
        continue
      g, src = groups[k], groups[gid]
      g_members = set(g["members"])
      for m in src["members"]:
        if m not in g_members:
          g["members"].append(m)
          g_members.add(m)
        if owner.get(m) == gid:
          owner[m] = k
      g["outputs"].append(n)
      alive[gid] = False
      update_sources(k)
      inputs_memo.clear()
      break

  # --- Build kernels in launch order. -----------------------------------------------------------------
  live_groups = [k for k in range(len(groups)) if alive[k]]
  live_groups.sort(key=lambda k: max(pos[o] for o in groups[k]["outputs"]))
  index = {k: i for i, k in enumerate(live_groups)}
  merged_names = {f"merged({','.join(g)})": g for g in merge_groups}
  kernels: list[Kernel] = []
  edges: set[tuple[int, int]] = set()
  for k in live_groups:
    g = groups[k]
    members = sorted(set(g["members"]), key=pos.__getitem__)
    mem = set(members)
    flops = trans = 0
    ops: list[str] = []
    inputs: dict[str, TensorType] = {}
    for m in members:
      node = nodes[m]
      f, t = op_cost(node.instr, [graph.type(o) for o in node.operands])
      flops, trans = flops + f, trans + t
      if node.opcode not in _FREE:
        ops.append(node.opcode)
      for o in node.operands:
        s = view_source(o, free_ops)
        if s in mem:
          continue
        sn = nodes[s]
        if sn.opcode == "constant" and sn.instr.type.elements <= 1:
          continue
        inputs.setdefault(s, sn.instr.type)
        if s in owner and alive[owner[s]] and owner[s] != k:
          edges.add((index[owner[s]], index[k]))
    outs = [nodes[o].instr.type for o in g["outputs"]]
    root_node = nodes[g["root"]]
    cls = g["cls"]
    bmnk = None
    dtype = root_node.instr.type.dtype
    merged_count = 1
    if g["kind"] == "lib":
      lib = nodes[g["lib"]]
      if lib.operands:
        dtype = graph.type(lib.operands[0]).dtype
      if lib.opcode == "dot":
        bmnk = _gemm_bmnk(lib.instr, graph.type(lib.operands[0]), graph.type(lib.operands[1]))
        merged_count = len(merged_names.get(lib.name, (lib.name,)))
    elif cls == "loop" and set(ops) <= _DATA_MOVEMENT:
      cls = "copy"
    rep = max(nodes[m].repeat for m in members)
    kernels.append(Kernel(
        name=g["root"], kernel_class=cls, dtype=dtype,
        in_shapes=tuple(t.dims for t in inputs.values()),
        out_shapes=tuple(t.dims for t in outs), flops=int(flops), transcendentals=int(trans),
        bytes_read=sum(t.nbytes for t in inputs.values()),
        bytes_written=sum(t.nbytes for t in outs), fused_ops=tuple(ops), repeat=rep,
        merged_count=merged_count, gemm_bmnk=bmnk, epilogue=g.get("epilogue", ()),
        target=g["target"], hlo_names=tuple(members)))
  return kernels, sorted(edges), merge_groups, warnings


# ----------------------------------------------------------------------------------------------------
# Lowering and the public entry points.


def _lower(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], platform: str | None):
  import jax  # pylint: disable=g-import-not-at-top

  f = functools.partial(fn, **kwargs) if kwargs else fn
  jitted = f if hasattr(f, "trace") else jax.jit(f)
  traced = jitted.trace(*args)
  if platform is None:
    return traced.lower(), jax.default_backend()
  return traced.lower(lowering_platforms=(platform,)), platform


def _hlo_objects(lowered: Any, mode: str) -> tuple[str, Callable[[], Any]]:
  """(HLO text, thunk giving the structured module) for a ``jax.stages.Lowered``."""
  if mode == "compiled":
    compiled = lowered.compile()
    return compiled.as_text(), lambda: compiled.runtime_executable().hlo_modules()[0]
  comp = lowered.compiler_ir("hlo")
  return comp.as_hlo_text(), comp.get_hlo_module


_CACHE_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, KernelGraph] = OrderedDict()  # by HLO text fingerprint
_LOWERED_CACHE: OrderedDict[tuple, KernelGraph] = OrderedDict()  # by StableHLO text fingerprint
_CACHE_SIZE = 4096


def clear_cache() -> None:
  """Empties the extraction caches (keyed by HLO / StableHLO fingerprint, mode and config)."""
  with _CACHE_LOCK:
    _CACHE.clear()
    _LOWERED_CACHE.clear()


def kernel_graph_from_module(module: HloModuleIR, *, mode: str = "gpu",
                             config: GpuFusionConfig = GpuFusionConfig(),
                             lowered_for: str = "unknown") -> KernelGraph:
  """Kernels of an already built ``HloModuleIR`` (e.g. one assembled from cached pieces).

  The same rules as ``kernel_graph_from_hlo`` without reading any HLO text, and without its cache
  (the caller knows what identifies the module; ``nb201_kernels`` caches per cell).

  Args:
    module: the module: un-optimized HLO for ``gpu`` mode, optimized HLO for ``compiled`` mode.
    mode: ``gpu`` (apply the XLA-GPU fusion rules) or ``compiled`` (read fusions as they are).
    config: ``gpu``-mode fusion rules.
    lowered_for: platform the module was lowered for (recorded in the result).

  Returns:
    The kernel graph, with ``parser="ir"`` and an empty ``fingerprint`` (no text was read).

  Raises:
    ValueError: unknown ``mode``.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "compiled":
    kernels, edges, warnings = _compiled_kernels(module)
    merge_groups: list[tuple[str, ...]] = []
  else:
    kernels, edges, merge_groups, warnings = _gpu_kernels(module, config)
  return KernelGraph(tuple(kernels), tuple(edges), tuple(merge_groups), mode, lowered_for, "",
                     "ir", tuple(warnings))


def kernel_graph_from_hlo(hlo_text: str | None = None, *, mode: str = "gpu",
                          structured_module: Any = None, parser: str = "auto",
                          config: GpuFusionConfig = GpuFusionConfig(),
                          lowered_for: str = "unknown") -> KernelGraph:
  """Kernels of an HLO module given as text and/or a ``jaxlib._hlo.HloModule``.

  Args:
    hlo_text: HLO module text: un-optimized (``Lowered.compiler_ir("hlo").as_hlo_text()``) for
      ``gpu`` mode, optimized (``Compiled.as_text()``) for ``compiled`` mode.
    mode: ``gpu`` (apply the XLA-GPU fusion rules) or ``compiled`` (read fusions as they are).
    structured_module: the same module as a ``jaxlib._hlo.HloModule`` (used when ``parser`` is
      ``auto`` or ``structured``).
    parser: ``auto`` (structured when given and readable, else text), ``structured`` or ``text``.
    config: ``gpu``-mode fusion rules.
    lowered_for: platform the module was lowered for (recorded in the result).

  Returns:
    The kernel graph.

  Raises:
    ValueError: unknown ``mode``/``parser``, or neither text nor a module given.
    hlo_ir.HloParseError: the HLO cannot be read.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if parser not in ("auto", "structured", "text"):
    raise ValueError(f"parser must be 'auto', 'structured' or 'text', got {parser!r}")
  if hlo_text is None and structured_module is None:
    raise ValueError("give hlo_text or structured_module")
  if hlo_text is None:
    hlo_text = structured_module.to_string()
  fingerprint = hashlib.sha256(hlo_text.encode("utf-8")).hexdigest()
  key = (fingerprint, mode, parser if parser != "auto" else "auto", config, lowered_for)
  with _CACHE_LOCK:
    hit = _CACHE.get(key)
    if hit is not None:
      _CACHE.move_to_end(key)
      return hit
  module = None
  used = "text"
  if parser in ("auto", "structured") and structured_module is not None:
    try:
      module = hlo_ir.module_from_structured(structured_module)
      used = "structured"
    except (AttributeError, TypeError, hlo_ir.HloParseError) as e:
      if parser == "structured":
        raise hlo_ir.HloParseError(f"structured HLO API unusable: {e}") from e
  elif parser == "structured":
    raise ValueError("parser='structured' needs structured_module")
  if module is None:
    module = hlo_ir.module_from_text(hlo_text)
  graph = dataclasses.replace(
      kernel_graph_from_module(module, mode=mode, config=config, lowered_for=lowered_for),
      fingerprint=fingerprint, parser=used)
  with _CACHE_LOCK:
    _CACHE[key] = graph
    while len(_CACHE) > _CACHE_SIZE:
      _CACHE.popitem(last=False)
  return graph


def extract_kernel_graph(fn: Callable[..., Any], *args: Any, mode: str = "compiled",
                         parser: str = "auto", config: GpuFusionConfig = GpuFusionConfig(),
                         **kwargs: Any) -> KernelGraph:
  """Kernels (with their data-flow edges and merge groups) that ``fn(*args, **kwargs)`` launches.

  Args:
    fn: a function of arrays, or a ``jax.jit``-wrapped one (its jit settings are kept).
    *args: example arguments (arrays or ``jax.ShapeDtypeStruct``); only shapes and dtypes matter.
    mode: ``compiled`` (optimized HLO of the backend at hand) or ``gpu`` (predicted NVIDIA kernels
      from the un-optimized HLO lowered for ``cuda``).
    parser: ``auto``, ``structured`` or ``text`` (see ``kernel_graph_from_hlo``).
    config: ``gpu``-mode fusion rules.
    **kwargs: keyword arguments of ``fn``, bound statically (closed over, not traced).

  Returns:
    The kernel graph; ``lowered_for`` says which platform the HLO was lowered for.

  Raises:
    ValueError: unknown ``mode``.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  lowered_for = None
  if mode == "gpu":
    try:
      lowered, lowered_for = _lower(fn, args, kwargs, "cuda")
    except Exception as e:  # pylint: disable=broad-except
      lowered, host = _lower(fn, args, kwargs, None)
      lowered_for = host
      warning = f"lowering for cuda failed ({type(e).__name__}: {e}); used the {host} lowering"
    else:
      warning = None
  else:
    lowered, lowered_for = _lower(fn, args, kwargs, None)
    warning = None
  # First-level cache: the StableHLO text of the lowering (cheap to print) identifies the program,
  # so a hit skips the HLO conversion (and, in compiled mode, the compile).
  try:
    lowered_key = (hashlib.sha256(lowered.as_text().encode("utf-8")).hexdigest(), mode, parser,
                   config, lowered_for, warning)
  except Exception:  # pylint: disable=broad-except
    lowered_key = None
  if lowered_key is not None:
    with _CACHE_LOCK:
      hit = _LOWERED_CACHE.get(lowered_key)
      if hit is not None:
        _LOWERED_CACHE.move_to_end(lowered_key)
        return hit
  text, module_thunk = _hlo_objects(lowered, mode)
  structured = None
  if parser in ("auto", "structured"):
    try:
      structured = module_thunk()
    except Exception:  # pylint: disable=broad-except
      if parser == "structured":
        raise
  graph = kernel_graph_from_hlo(text, mode=mode, structured_module=structured, parser=parser,
                                config=config, lowered_for=lowered_for)
  if warning:
    graph = dataclasses.replace(graph, warnings=graph.warnings + (warning,))
  if lowered_key is not None:
    with _CACHE_LOCK:
      _LOWERED_CACHE[lowered_key] = graph
      while len(_LOWERED_CACHE) > _CACHE_SIZE:
        _LOWERED_CACHE.popitem(last=False)
  return graph


def extract_kernels(fn: Callable[..., Any], *args: Any, mode: str = "compiled",
                    parser: str = "auto", config: GpuFusionConfig = GpuFusionConfig(),
                    **kwargs: Any) -> list[Kernel]:
  """The kernels ``fn(*args, **kwargs)`` launches, in launch order.

  See ``extract_kernel_graph`` for the arguments; this returns only ``graph.kernels``.
  """
  return list(extract_kernel_graph(fn, *args, mode=mode, parser=parser, config=config,
                                   **kwargs).kernels)
