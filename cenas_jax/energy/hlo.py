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

Cost accounting follows XLA's ``HloCostAnalysis`` (``hlo_cost.op_cost``). Bytes read are the
distinct kernel inputs (parameters, constants that are not scalars, values materialized by other
kernels); bytes written are the kernel outputs.

The structured HLO API (``jaxlib._hlo.HloModule``) is used when present, with the text parser as the
fallback (``parser="auto"``); both give the same kernels. Results are cached by the SHA-256 of the
StableHLO text of the lowering (and of the HLO text), so re-extracting an unchanged program costs
only the (JAX-cached) trace, the lowering and one hash. ``kernel_graph_from_module`` runs either
mode on an ``hlo_ir.HloModuleIR`` built in memory (e.g. assembled from cached pieces), uncached.

Modules: ``hlo_cost`` (the ``Kernel`` types, opcode categories and per-op cost), ``hlo_compiled``
(the compiled-mode reader), ``hlo_gpu`` (the gpu-mode fusion passes) and this one (lowering,
caches and the public entry points, which re-exports the types).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping

from cenas_jax.energy import hlo_ir
from cenas_jax.energy.hlo_compiled import compiled_kernels
from cenas_jax.energy.hlo_cost import (  # noqa: F401  (re-exported: the public types live here too)
    KERNEL_CLASSES,
    GpuFusionConfig,
    Kernel,
    KernelGraph,
    op_cost,
)
from cenas_jax.energy.hlo_gpu import gpu_kernels as _gpu_kernels
from cenas_jax.energy.hlo_ir import HloModuleIR

MODES = ("compiled", "gpu")


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
    kernels, edges, warnings = compiled_kernels(module)
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


GPU_PLATFORMS = ("cuda", "gpu")
"""``lowered_for`` values whose kernels are NVIDIA kernels (``gpu``: compiled on a GPU host)."""


class KernelList(list):
  """A list of ``Kernel`` that remembers the platform its HLO was lowered for.

  ``model.predict_energy_j`` / ``predict_time_s`` refuse a ``KernelList`` lowered for a platform
  other than an NVIDIA GPU (``GPU_PLATFORMS``): ``mode="compiled"`` on a CPU host gives the CPU
  backend's kernels (XNNPACK/oneDNN fusions), which a GPU spec would price as if they ran on the
  GPU. ``list(kernels)`` drops the attribute for a caller who means it.

  Attributes:
    lowered_for: platform of the lowering (``cuda`` in gpu mode; the host backend, e.g. ``cpu``
      or ``gpu``, in compiled mode).
    mode: the extraction mode.
  """

  def __init__(self, kernels: Any = (), *, lowered_for: str = "unknown", mode: str = "gpu"):
    super().__init__(kernels)
    self.lowered_for = lowered_for
    self.mode = mode


def platform_mismatch(lowered_for: str | None, device: str) -> str | None:
  """Why kernels lowered for ``lowered_for`` cannot be priced as ``device`` (an NVIDIA spec), or
  ``None`` when they can (or the platform is unknown)."""
  if lowered_for in (None, "unknown") or lowered_for in GPU_PLATFORMS:
    return None
  return (f"these kernels were lowered for {lowered_for!r} (extract_kernels(mode='compiled') on a "
          f"{lowered_for} host gives that backend's kernels), but the model prices them as the "
          f"NVIDIA device {device!r}: extract with mode='gpu' (predicted NVIDIA kernels, works "
          f"without a GPU) or with mode='compiled' on a GPU host")


def extract_kernels(fn: Callable[..., Any], *args: Any, mode: str = "compiled",
                    parser: str = "auto", config: GpuFusionConfig = GpuFusionConfig(),
                    **kwargs: Any) -> KernelList:
  """The kernels ``fn(*args, **kwargs)`` launches, in launch order.

  See ``extract_kernel_graph`` for the arguments; this returns only ``graph.kernels``, as a
  ``KernelList`` that carries ``lowered_for`` (so prediction can refuse CPU kernels).
  """
  graph = extract_kernel_graph(fn, *args, mode=mode, parser=parser, config=config, **kwargs)
  return KernelList(graph.kernels, lowered_for=graph.lowered_for, mode=mode)
