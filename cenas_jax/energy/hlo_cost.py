"""Kernels and their cost: the types both HLO readers produce, opcode categories, per-op FLOPs.

Shared by the compiled-HLO reader (``hlo_compiled``) and the gpu-mode fusion rules (``hlo_gpu``);
``hlo`` holds the public entry points. Cost accounting follows XLA's ``HloCostAnalysis``:
elementwise ops 1 FLOP per output element, transcendental ops counted as ``transcendentals`` (not
FLOPs), dot ``2*M*N*K`` (per batch), convolution ``2 * out_elements * kernel_elements /
out_features``, reduce one FLOP per input element.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable, Sequence

from cenas_jax.energy.hlo_ir import HloInstr, TensorType

# Kernel classes, in the fixed order used by feature vectors.
KERNEL_CLASSES: tuple[str, ...] = ("gemm", "conv", "attention", "loop", "reduction", "copy", "other")

# ----------------------------------------------------------------------------------------------------
# Opcode categories.

FREE = frozenset({
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "reshape", "after-all",
    "opt-barrier", "partition-id", "replica-id", "add-dependency", "domain", "get-dimension-size",
    "set-dimension-size",
})
# Layout-only ops that a GEMM/conv can take as an operand view without a kernel.
VIEW = frozenset({"broadcast", "transpose", "slice", "convert", "copy", "reshape", "bitcast"})
# Cheap ops XLA duplicates into every consumer instead of materializing.
CHEAP = frozenset({"broadcast", "iota", "convert", "slice", "reverse", "bitcast", "reshape"})
DATA_MOVEMENT = frozenset({
    "broadcast", "transpose", "slice", "convert", "copy", "reshape", "bitcast", "concatenate", "pad",
    "gather", "dynamic-slice", "reverse", "iota", "bitcast-convert", "parameter", "constant",
    "get-tuple-element", "tuple",
})
TRANSCENDENTAL = frozenset({
    "exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "rsqrt",
    "sqrt", "cbrt", "power", "sine", "cosine", "tan", "atan2", "erf",
})
LIB = frozenset({"dot", "convolution", "custom-call", "fft", "triangular-solve", "cholesky"})
RED = frozenset({"reduce"})
OWN = frozenset({
    "sort", "scatter", "select-and-scatter", "dynamic-update-slice", "rng", "rng-bit-generator",
    "rng-get-and-update-state", "all-reduce", "all-gather", "reduce-scatter", "all-to-all",
    "collective-permute", "send", "recv", "send-done", "recv-done", "infeed", "outfeed", "topk",
    "all-reduce-start", "all-reduce-done", "all-gather-start", "all-gather-done",
    "collective-permute-start", "collective-permute-done", "async-start", "async-done",
    "async-update", "copy-start", "copy-done", "cholesky", "triangular-solve",
})
COLLECTIVE_PREFIXES = ("all-", "reduce-scatter", "collective-", "send", "recv")
SIDE_EFFECT = frozenset({"rng", "rng-bit-generator", "rng-get-and-update-state", "infeed",
                          "outfeed", "send", "recv", "custom-call", "parameter", "after-all"})
# Custom-calls that JAX emits as annotations and that launch nothing.
NOOP_CUSTOM_CALLS = ("Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape",
                      "annotate_device_placement", "MoveToHost", "MoveToDevice", "LayoutConstraint",
                      "X64Combine", "X64SplitLow", "X64SplitHigh")


def custom_target(instr: HloInstr) -> str:
  return (instr.attr("custom_call_target") or "").strip('"')


def custom_class(target: str) -> str:
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


def dims_attr(instr: HloInstr, key: str) -> tuple[int, ...]:
  v = instr.attr(key)
  if not v:
    return ()
  return tuple(int(x) for x in v.strip("{} ").split(",") if x.strip())


def window_size(instr: HloInstr) -> int:
  w = instr.attr("window") or ""
  m = re.search(r"size=([0-9x]+)", w)
  return math.prod(int(s) for s in m.group(1).split("x")) if m else 1


def conv_kernel_elements_per_output(instr: HloInstr, rhs: TensorType) -> int:
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
    k = math.prod(lhs.dims[d] for d in dims_attr(instr, "lhs_contracting_dims"))
    return 2 * out * k, 0
  if op == "convolution":
    return 2 * out * conv_kernel_elements_per_output(instr, operand_types[1]), 0
  if op == "reduce":
    n_in = max(len(operand_types) // 2, 1)
    return sum(t.elements for t in operand_types[:n_in]), 0
  if op == "reduce-window":
    return out * window_size(instr), 0
  if op in TRANSCENDENTAL:
    return 0, out
  if op in DATA_MOVEMENT or op in FREE or op in ("fusion", "call", "while", "conditional",
                                                     "custom-call", "sort", "scatter"):
    return 0, 0
  return out, 0


def gemm_bmnk(dot: HloInstr, lhs: TensorType, rhs: TensorType) -> tuple[int, int, int, int]:
  lc, rc = dims_attr(dot, "lhs_contracting_dims"), dims_attr(dot, "rhs_contracting_dims")
  lb, rb = dims_attr(dot, "lhs_batch_dims"), dims_attr(dot, "rhs_batch_dims")
  batch = math.prod(lhs.dims[d] for d in lb)
  k = math.prod(lhs.dims[d] for d in lc)
  m = math.prod(s for d, s in enumerate(lhs.dims) if d not in lc and d not in lb)
  n = math.prod(s for d, s in enumerate(rhs.dims) if d not in rc and d not in rb)
  return batch, m, n, k


# ----------------------------------------------------------------------------------------------------
# Graph helpers.


def post_order(roots: Sequence[str], operands_of: Callable[[str], Sequence[str]]) -> list[str]:
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


def trip_count(instr: HloInstr) -> int | None:
  cfg = instr.attr("backend_config") or ""
  m = re.search(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)', cfg)
  return int(m.group(1)) if m else None
