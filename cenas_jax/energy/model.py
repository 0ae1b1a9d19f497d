"""Per-kernel energy model: E = sum_k e_k + P_static * (sum_k t_k + launch gaps).

For a kernel k of class c (``hlo.KERNEL_CLASSES``) on a device with peak rate ``peak(dtype, c)``
and memory bandwidth ``bw``:

  compute_s_k  = (flops_k + TRANSCENDENTAL_FLOPS * transcendentals_k) / peak      [s]
  memory_s_k   = (bytes_read_k + bytes_written_k) / bw                            [s]
  roofline_s_k = max(compute_s_k, memory_s_k)                                     [s]
  t_k = time_efficiency_c * roofline_s_k                                          [s]
  e_k = compute_power_w_c * compute_s_k + memory_power_w_c * memory_s_k + launch_energy_j_c

and for one call of the function (``repeat`` launches counted):

  T = sum_k t_k + launch_gap_s * n_launches
  E = sum_k e_k + static_power_w * T

Every term is linear in the per-class sums of compute_s, memory_s, roofline_s and launches, so a
network is summarised by ``kernel_features`` (fixed columns, ``FEATURE_NAMES``) and the model is
fitted per class by non-negative least squares on those rows.

Parallel and merged kernels: XLA-GPU runs the kernels of one program in order on one stream, so
times add up. Sibling ops that the compiler merges (dot merger; see ``hlo``) are one kernel with one
launch and the combined shape, and are priced as such; ``Kernel.merged_count`` records how many ops
each launch stands for, and nothing is charged per merged op.

Prior and fit: ``prior_model(spec)`` derives every parameter from the device's datasheet (dynamic
power = a share of TDP - idle, roofline efficiencies per class, launch gap), and
``fit_energy_model`` refines it from measurements, with a ridge penalty that pulls each parameter
towards its prior value (relative scale) and keeps all parameters non-negative. Residuals are
relative (each row divided by its measured value), matching the RMSPE / within-10 % metrics the
model is judged by.

Batch size: kernels are extracted at the batch the function was lowered with, so FLOPs and bytes
already scale with it. ``batch_size`` is stored as the last feature column and
``predict_energy_j(..., per_sample=True)`` divides the per-call energy by it. The prior holds
both regimes a batch sweep crosses: the launch count does not grow with the batch, so at batch 1
the ``launch_gap_s`` per launch dominates (launch-bound; 99 % of the prior's time of an NB201
network on an H200), while ``roofline_s`` grows with it and dominates at a large batch
(compute/memory-bound; the gaps are 35-46 % at batch 256); see ``validate_batches``.

Kernel table (nn-Meter's lookup, shrunk towards the roofline): a model may carry a ``KernelTable``
of learned per-launch corrections keyed by kernel *signature* at one or more levels of detail
(``SIGNATURE_LEVELS``, coarse to fine: ``class``, ``op``, ``shape``, ``full``; see
``signature_key``). With it, each launch costs

  t_k = time_efficiency_c * roofline_s_k + launch_gap_s + sum_levels dt[level][key_level(k)]
  e_k = (roofline e_k above) + sum_levels de[level][key_level(k)]

so the ``class`` level is a per-class launch gap (and launch energy) on top of the shared one, and
finer levels give each distinct kernel configuration its own cost. ``fit_kernel_table`` fits the
corrections by ridge regression on the relative error of whole-function measurements; the ridge
pulls every correction to 0, i.e. towards the class predictor, and a signature never seen in the
fit has no entry, so it is priced by the class predictor alone. The table is linear in the launch
counts of each signature, so many functions are summarised by ``KernelCounts`` (sparse counts of
distinct kernels, ``count_kernels``) and predicted in one sparse product. Merged kernels keep their
``merged_count`` in the ``full`` key and ``repeat`` counts launches, as everywhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cenas_jax.energy.hlo import KERNEL_CLASSES, Kernel, platform_mismatch
from cenas_jax.energy.specs import DeviceSpec, get_spec
from cenas_jax.errors import DataError
from cenas_jax.fileio import atomic_write_json

# One transcendental costs this many FLOPs of issue time (SFU throughput is 1/4 to 1/8 of the FP32
# rate on Pascal..Hopper SMs).
TRANSCENDENTAL_FLOPS = 4.0

CLASS_FEATURES: tuple[str, ...] = ("launches", "flops", "transcendentals", "bytes", "compute_s",
                                   "memory_s", "roofline_s")
FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{c}.{f}" for c in KERNEL_CLASSES for f in CLASS_FEATURES) + ("batch_size",)
_NF = len(CLASS_FEATURES)
_CLASS_BASE = {c: i * _NF for i, c in enumerate(KERNEL_CLASSES)}  # first column of each class
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Prior roofline efficiency (achieved time / roofline time) per class.
_PRIOR_TIME_EFFICIENCY = {"gemm": 1.5, "conv": 1.7, "attention": 2.0, "loop": 1.25,
                          "reduction": 1.6, "copy": 1.4, "other": 2.5}
# Share of (TDP - idle) drawn while a kernel runs at its compute / memory roofline.
_PRIOR_COMPUTE_SHARE = 0.8
_PRIOR_MEMORY_SHARE = 0.5
# Dynamic energy of one launch, in units of (TDP - idle) * launch_overhead_s.
_PRIOR_LAUNCH_SHARE = 0.1

_FORMAT = "cenas_jax.energy_model/2"
# Format 1 had no kernel table; such files load as models without one.
_FORMATS_READ = ("cenas_jax.energy_model/1", _FORMAT)

SIGNATURE_LEVELS: tuple[str, ...] = ("class", "op", "shape", "full")
"""Granularities of ``KernelTable`` keys, coarse to fine (see ``signature_key``)."""


@dataclasses.dataclass(frozen=True)
class ClassParams:
  """Energy/time parameters of one kernel class (all non-negative).

  Attributes:
    compute_power_w: dynamic energy per second of peak-rate compute, in J/s = W.
    memory_power_w: dynamic energy per second of peak-bandwidth traffic, in W.
    launch_energy_j: dynamic energy per launch, in J.
    time_efficiency: kernel time / roofline time (>= 1 for real kernels).
  """

  compute_power_w: float
  memory_power_w: float
  launch_energy_j: float
  time_efficiency: float


@dataclasses.dataclass(frozen=True)
class KernelTable:
  """Learned per-launch corrections of the class predictor, keyed by kernel signature.

  Attributes:
    levels: signature levels the table is keyed at (a subset of ``SIGNATURE_LEVELS``, coarse to
      fine); a kernel's correction is the sum of its entries at every level.
    energy_j: ``{level: {signature_key: correction of e_k per launch, in J}}``.
    time_s: ``{level: {signature_key: correction of t_k per launch, in s}}``.
    ridge: ``{level: ridge strength}`` the entries were fitted with (relative units; see
      ``fit_kernel_table``).
    provenance: how the table was fitted.
  """

  levels: tuple[str, ...]
  energy_j: Mapping[str, Mapping[str, float]]
  time_s: Mapping[str, Mapping[str, float]]
  ridge: Mapping[str, float]
  provenance: str = ""

  def __post_init__(self) -> None:
    bad = [lv for lv in self.levels if lv not in SIGNATURE_LEVELS]
    if bad or len(set(self.levels)) != len(self.levels):
      raise ValueError(f"KernelTable.levels must be distinct members of {SIGNATURE_LEVELS}, got "
                       f"{self.levels}")
    for name in ("energy_j", "time_s", "ridge"):
      extra = set(getattr(self, name)) - set(self.levels)
      if extra:
        raise ValueError(f"KernelTable.{name} has levels {sorted(extra)} not in {self.levels}")

  def corrections(self, kernel: Kernel) -> tuple[float, float]:
    """``(time_s, energy_j)`` added to one launch of ``kernel`` (0 for unseen signatures)."""
    dt = de = 0.0
    for lv in self.levels:
      key = signature_key(kernel, lv)
      dt += self.time_s.get(lv, {}).get(key, 0.0)
      de += self.energy_j.get(lv, {}).get(key, 0.0)
    return dt, de

  def n_entries(self) -> int:
    """Number of signatures with an energy or time entry, over all levels."""
    return sum(len(set(self.energy_j.get(lv, {})) | set(self.time_s.get(lv, {})))
               for lv in self.levels)

  def to_dict(self) -> dict:
    return {"levels": list(self.levels),
            "energy_j": {lv: dict(sorted(d.items())) for lv, d in self.energy_j.items()},
            "time_s": {lv: dict(sorted(d.items())) for lv, d in self.time_s.items()},
            "ridge": dict(self.ridge), "provenance": self.provenance}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "KernelTable":
    def entries(m: Mapping) -> dict[str, dict[str, float]]:
      return {str(lv): {str(k): float(v) for k, v in e.items()} for lv, e in m.items()}

    return cls(tuple(str(lv) for lv in d["levels"]), entries(d["energy_j"]), entries(d["time_s"]),
               {str(lv): float(r) for lv, r in d["ridge"].items()}, str(d.get("provenance", "")))


@dataclasses.dataclass(frozen=True)
class EnergyModel:
  """A fitted (or prior) per-kernel energy model for one device.

  Attributes:
    spec: the device the features are computed against.
    classes: parameters per kernel class (every class of ``KERNEL_CLASSES``).
    static_power_w: power drawn whether kernels run or not, in W.
    launch_gap_s: idle time per launch between kernels, in s (per-class gaps: the ``class`` level
      of ``table``).
    provenance: how the parameters were obtained (``prior:<spec>``, ``fit:...``).
    table: optional per-signature corrections (``fit_kernel_table``); ``None``: the class
      predictor alone.
  """

  spec: DeviceSpec
  classes: Mapping[str, ClassParams]
  static_power_w: float
  launch_gap_s: float
  provenance: str = ""
  table: KernelTable | None = None

  def to_dict(self) -> dict:
    return {
        "format": _FORMAT,
        "spec": self.spec.to_dict(),
        "classes": {c: dataclasses.asdict(p) for c, p in self.classes.items()},
        "static_power_w": self.static_power_w,
        "launch_gap_s": self.launch_gap_s,
        "provenance": self.provenance,
        "table": None if self.table is None else self.table.to_dict(),
    }


# ----------------------------------------------------------------------------------------------------
# Features.


def _resolve_spec(spec: DeviceSpec | str) -> DeviceSpec:
  if isinstance(spec, DeviceSpec):
    return spec
  return get_spec(spec)  # KeyError naming the known specs


def kernel_roofline(kernel: Kernel, spec: DeviceSpec) -> tuple[float, float, float]:
  """``(compute_s, memory_s, roofline_s)`` of one launch of ``kernel`` on ``spec``."""
  peak = spec.peak_for(kernel.dtype, kernel.kernel_class)
  compute_s = (kernel.flops + TRANSCENDENTAL_FLOPS * kernel.transcendentals) / peak
  memory_s = kernel.bytes_accessed / spec.mem_bandwidth_bytes_per_s
  return compute_s, memory_s, max(compute_s, memory_s)


def kernel_features(kernels: Sequence[Kernel], spec: DeviceSpec | str, *,
                    batch_size: int = 1) -> np.ndarray:
  """Per-class aggregated features of one function's kernels.

  Args:
    kernels: the kernels (``hlo.extract_kernels``).
    spec: device (or its ``DEVICE_SPECS`` key) for the roofline columns.
    batch_size: samples per call the kernels were extracted at (stored as the last column).

  Returns:
    float64 array of shape ``(len(FEATURE_NAMES),)``; column ``i`` is ``FEATURE_NAMES[i]``
    (``<class>.<feature>``: launches, flops, transcendentals, bytes, compute_s, memory_s,
    roofline_s; sums over launches, ``repeat`` included).

  Raises:
    ValueError: ``batch_size`` < 1 or an unknown kernel class.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  spec = _resolve_spec(spec)
  # Accumulated in Python floats (IEEE doubles, the same additions in the same order as adding into
  # a float64 array, so the same bits) and copied once: a NumPy slice update per kernel cost more
  # than the rest of the row.
  acc = [0.0] * len(FEATURE_NAMES)
  peaks: dict[tuple[str, str], float] = {}
  bandwidth = spec.mem_bandwidth_bytes_per_s
  for k in kernels:
    cls = k.kernel_class
    if cls not in _CLASS_BASE:
      raise ValueError(f"kernel {k.name!r} has unknown class {cls!r}")
    base = _CLASS_BASE[cls]
    # kernel_roofline, with the peak looked up once per (dtype, class).
    peak = peaks.get((k.dtype, cls))
    if peak is None:
      peak = peaks[k.dtype, cls] = spec.peak_for(k.dtype, cls)
    compute_s = (k.flops + TRANSCENDENTAL_FLOPS * k.transcendentals) / peak
    memory_s = k.bytes_accessed / bandwidth
    roof_s = max(compute_s, memory_s)
    r = k.repeat
    acc[base] += float(r)
    acc[base + 1] += float(r * k.flops)
    acc[base + 2] += float(r * k.transcendentals)
    acc[base + 3] += float(r * k.bytes_accessed)
    acc[base + 4] += r * compute_s
    acc[base + 5] += r * memory_s
    acc[base + 6] += r * roof_s
  row = np.array(acc, np.float64)
  row[-1] = batch_size
  return row


def _shapes_key(shapes: Iterable[Sequence[int]]) -> str:
  return ",".join("x".join(str(d) for d in s) or "scalar" for s in shapes)


def signature_key(kernel: Kernel, level: str) -> str:
  """The ``KernelTable`` key of ``kernel`` at ``level`` (a string, stable across processes).

  Memoized (the strings are pure functions of the frozen kernel): a cross-validated fit asks for
  the keys of the same few thousand kernels hundreds of times, and building them dominated it.

  Levels, coarse to fine:
    ``class``: the kernel class (its entries are per-class launch gaps / launch energies);
    ``op``: class, dtype, output shapes, the library target or fusion kind, the weight shapes of
      library calls (operands after the first) and the set of distinct ops inside (broadcasts
      dropped): "a 3x3 conv to 1x32x32x16", "a BN+ReLU loop fusion to 1x16x16x32";
    ``shape``: class, dtype, all input and output shapes and the ops' multiset;
    ``full``: ``Kernel.signature``: everything but names (op order, epilogue, GEMM dimensions,
      ``merged_count``).

  Raises:
    ValueError: unknown level.
  """
  return _signature_key_cached(kernel, level)


@functools.lru_cache(maxsize=1 << 17)
def _signature_key_cached(kernel: Kernel, level: str) -> str:
  c, dt = kernel.kernel_class, kernel.dtype
  if level == "class":
    return c
  if level == "op":
    ops = "+".join(sorted(set(kernel.fused_ops) - {"broadcast"}))
    weights = _shapes_key(kernel.in_shapes[1:]) if c in ("gemm", "conv", "attention") else ""
    return (f"{c}|{dt}|out={_shapes_key(kernel.out_shapes)}|{kernel.target}|w={weights}|ops={ops}|"
            f"epi={'+'.join(kernel.epilogue)}")
  if level == "shape":
    counts: dict[str, int] = {}
    for o in kernel.fused_ops:
      if o != "broadcast":
        counts[o] = counts.get(o, 0) + 1
    ops = "+".join(f"{o}*{n}" for o, n in sorted(counts.items()))
    return (f"{c}|{dt}|in={_shapes_key(kernel.in_shapes)}|out={_shapes_key(kernel.out_shapes)}|"
            f"{kernel.target}|ops={ops}|epi={'+'.join(kernel.epilogue)}")
  if level == "full":
    bmnk = "x".join(str(d) for d in kernel.gemm_bmnk) if kernel.gemm_bmnk else ""
    return (f"{c}|{dt}|in={_shapes_key(kernel.in_shapes)}|out={_shapes_key(kernel.out_shapes)}|"
            f"{kernel.target}|ops={'.'.join(kernel.fused_ops)}|epi={'+'.join(kernel.epilogue)}|"
            f"bmnk={bmnk}|merged={kernel.merged_count}")
  raise ValueError(f"unknown signature level {level!r}; known: {SIGNATURE_LEVELS}")


def _canonical(kernel: Kernel) -> Kernel:
  """``kernel`` without its names and with one launch (the representative of its signature)."""
  return dataclasses.replace(kernel, name="", hlo_names=(), repeat=1)


def kernel_from_dict(d: Mapping[str, Any]) -> Kernel:
  """Inverse of ``Kernel.to_dict`` (JSON lists back to tuples).

  Raises:
    KeyError, TypeError, ValueError: ``d`` is not a kernel's dict.
  """
  def shapes(v: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(x) for x in s) for s in v)

  return Kernel(name=str(d["name"]), kernel_class=str(d["kernel_class"]), dtype=str(d["dtype"]),
                in_shapes=shapes(d["in_shapes"]), out_shapes=shapes(d["out_shapes"]),
                flops=int(d["flops"]), transcendentals=int(d["transcendentals"]),
                bytes_read=int(d["bytes_read"]), bytes_written=int(d["bytes_written"]),
                fused_ops=tuple(str(o) for o in d["fused_ops"]), repeat=int(d["repeat"]),
                merged_count=int(d["merged_count"]),
                gemm_bmnk=None if d["gemm_bmnk"] is None else tuple(int(x) for x in d["gemm_bmnk"]),
                epilogue=tuple(str(o) for o in d["epilogue"]), target=str(d["target"]),
                hlo_names=tuple(str(o) for o in d["hlo_names"]))


@dataclasses.dataclass(frozen=True)
class KernelCounts:
  """Sparse launch counts of the distinct kernels of many functions.

  Attributes:
    kernels: one representative per distinct kernel (``Kernel.signature`` plus FLOPs, bytes and
      target; names dropped, ``repeat`` 1).
    counts: ``scipy.sparse.csr_matrix`` of shape ``(n_functions, len(kernels))``: launches of each
      kernel per call (``repeat`` included).
    batch_size: int64 ``(n_functions,)``: samples per call each function was extracted at.
  """

  kernels: tuple[Kernel, ...]
  counts: Any
  batch_size: np.ndarray

  def __post_init__(self) -> None:
    if self.counts.shape != (len(self.batch_size), len(self.kernels)):
      raise ValueError(f"counts has shape {self.counts.shape}, expected "
                       f"({len(self.batch_size)}, {len(self.kernels)})")

  def __len__(self) -> int:
    return len(self.batch_size)

  def rows(self, select: np.ndarray | Sequence[int]) -> "KernelCounts":
    """The functions ``select`` (indices or a boolean mask), same kernel vocabulary."""
    select = np.asarray(select)
    if select.dtype == bool:
      select = np.flatnonzero(select)
    return KernelCounts(self.kernels, self.counts[select], self.batch_size[select])

  def kernel_lists(self) -> list[list[Kernel]]:
    """Each function's kernels, one entry per distinct kernel with ``repeat`` = its count."""
    out = []
    for i in range(len(self)):
      lo, hi = self.counts.indptr[i], self.counts.indptr[i + 1]
      out.append([dataclasses.replace(self.kernels[j], repeat=int(n)) for j, n in
                  zip(self.counts.indices[lo:hi], self.counts.data[lo:hi])])
    return out

  def features(self, spec: DeviceSpec | str) -> np.ndarray:
    """``kernel_features`` rows of every function, ``(len(self), len(FEATURE_NAMES))``."""
    spec = _resolve_spec(spec)
    per_kernel = _per_kernel_features(self.kernels, spec)
    rows = np.asarray(self.counts @ per_kernel) if self.kernels else np.zeros(
        (len(self), len(FEATURE_NAMES)))
    rows[:, -1] = self.batch_size
    return rows

  def key_counts(self, level: str) -> tuple[Any, list[str]]:
    """``(csr counts per signature key at level, keys)``: launches summed over each key."""
    import scipy.sparse  # pylint: disable=g-import-not-at-top

    keys: dict[str, int] = {}
    col = np.array([keys.setdefault(key, len(keys)) for key in _vocab_keys(self.kernels, level)],
                   np.int64)
    proj = scipy.sparse.csr_matrix((np.ones(len(col)), (np.arange(len(col)), col)),
                                   shape=(len(col), len(keys)))
    return (self.counts @ proj).tocsr(), list(keys)

  @staticmethod
  def concat(parts: Sequence["KernelCounts"]) -> "KernelCounts":
    """Stacks the functions of ``parts`` (their kernel vocabularies merged)."""
    import scipy.sparse  # pylint: disable=g-import-not-at-top

    vocab: dict[Kernel, int] = {}
    cols = [np.array([vocab.setdefault(k, len(vocab)) for k in p.kernels], np.int64) for p in parts]
    blocks = []
    for p, col in zip(parts, cols):
      c = p.counts.tocoo()
      blocks.append(scipy.sparse.csr_matrix((c.data, (c.row, col[c.col])), shape=(len(p), len(vocab))))
    counts = (scipy.sparse.vstack(blocks, format="csr") if blocks else
              scipy.sparse.csr_matrix((0, 0), dtype=np.float64))
    batch = np.concatenate([p.batch_size for p in parts]) if parts else np.zeros(0, np.int64)
    return KernelCounts(tuple(vocab), counts, batch.astype(np.int64))


_PER_KERNEL: "OrderedDict[tuple[int, int], tuple[tuple[Kernel, ...], DeviceSpec, np.ndarray]]" = \
    OrderedDict()


def _per_kernel_features(kernels: tuple[Kernel, ...], spec: DeviceSpec) -> np.ndarray:
  """``kernel_features`` of each kernel alone, ``(len(kernels), len(FEATURE_NAMES))``; the last
  few vocabularies are kept (``KernelCounts.rows`` shares its vocabulary, so the folds of a
  cross-validation price it once)."""
  key = (id(kernels), id(spec))
  hit = _PER_KERNEL.get(key)
  if hit is not None and hit[0] is kernels and hit[1] is spec:
    return hit[2]
  rows = (np.stack([kernel_features([k], spec) for k in kernels]) if kernels else
          np.zeros((0, len(FEATURE_NAMES))))
  rows.setflags(write=False)
  _PER_KERNEL[key] = (kernels, spec, rows)
  while len(_PER_KERNEL) > 8:
    _PER_KERNEL.popitem(last=False)
  return rows


_VOCAB_KEYS: "OrderedDict[tuple[int, str], tuple[tuple[Kernel, ...], tuple[str, ...]]]" = \
    OrderedDict()


def _vocab_keys(kernels: tuple[Kernel, ...], level: str) -> tuple[str, ...]:
  """``signature_key`` of every kernel of a vocabulary at ``level``, kept for the last few
  vocabularies (the folds of a cross-validation share one)."""
  key = (id(kernels), level)
  hit = _VOCAB_KEYS.get(key)
  if hit is not None and hit[0] is kernels:
    return hit[1]
  keys = tuple(signature_key(k, level) for k in kernels)
  _VOCAB_KEYS[key] = (kernels, keys)
  while len(_VOCAB_KEYS) > 32:
    _VOCAB_KEYS.popitem(last=False)
  return keys


def count_kernels(kernel_lists: Sequence[Sequence[Kernel]], *,
                  batch_size: int | Sequence[int] = 1) -> KernelCounts:
  """``KernelCounts`` of many functions' kernel lists (``repeat`` counted as launches).

  Args:
    kernel_lists: one kernel list per function (``hlo.extract_kernels`` output).
    batch_size: samples per call, one for all or one per function (>= 1).

  Raises:
    ValueError: a batch size < 1, a length mismatch or an unknown kernel class.
  """
  import scipy.sparse  # pylint: disable=g-import-not-at-top

  n = len(kernel_lists)
  batch = np.broadcast_to(np.asarray(batch_size, np.int64), (n,)).copy()
  if np.any(batch < 1):
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  vocab: dict[Kernel, int] = {}
  rows, cols, data = [], [], []
  for i, ks in enumerate(kernel_lists):
    per: dict[int, int] = {}
    for k in ks:
      if k.kernel_class not in KERNEL_CLASSES:
        raise ValueError(f"kernel {k.name!r} has unknown class {k.kernel_class!r}")
      j = vocab.setdefault(_canonical(k), len(vocab))
      per[j] = per.get(j, 0) + k.repeat
    for j, c in sorted(per.items()):
      rows.append(i)
      cols.append(j)
      data.append(c)
  counts = scipy.sparse.csr_matrix((np.asarray(data, np.float64), (np.asarray(rows, np.int64),
                                                                    np.asarray(cols, np.int64))),
                                   shape=(n, len(vocab)))
  return KernelCounts(tuple(vocab), counts, batch)


def _table_vector(table: KernelTable, counts: KernelCounts, what: str) -> np.ndarray:
  """Per-kernel correction (``energy_j`` or ``time_s``) of each kernel of ``counts``."""
  entries = getattr(table, what)
  out = np.zeros(len(counts.kernels), np.float64)
  for lv in table.levels:
    e = entries.get(lv, {})
    out += np.array([e.get(key, 0.0) for key in _vocab_keys(counts.kernels, lv)], np.float64)
  return out


def _prepare(model: EnergyModel, x: Sequence[Kernel] | np.ndarray | KernelCounts, batch_size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
  """``(feature rows, table time_s per row, table energy_j per row, single)`` of an input."""
  if isinstance(x, KernelCounts):
    rows = x.features(model.spec)
    counts, single = x, False
  elif isinstance(x, np.ndarray):
    rows = np.asarray(x, np.float64)
    single = rows.ndim == 1
    rows = np.atleast_2d(rows)
    if rows.shape[1] != len(FEATURE_NAMES):
      raise ValueError(f"feature rows must have {len(FEATURE_NAMES)} columns (FEATURE_NAMES), "
                       f"got shape {rows.shape}")
    if model.table is not None:
      raise ValueError("this model has a kernel table, which needs the kernels: pass a kernel "
                       "list or KernelCounts (count_kernels) instead of feature rows")
    zero = np.zeros(len(rows))
    return rows, zero, zero, single
  else:
    why = platform_mismatch(getattr(x, "lowered_for", None), model.spec.name)
    if why:
      raise ValueError(why)
    kernels = list(x)
    rows = kernel_features(kernels, model.spec, batch_size=batch_size)[None, :]
    if model.table is None:
      return rows, np.zeros(1), np.zeros(1), True
    counts, single = count_kernels([kernels], batch_size=batch_size), True
  if model.table is None:
    zero = np.zeros(len(rows))
    return rows, zero, zero, single
  dt = np.asarray(counts.counts @ _table_vector(model.table, counts, "time_s")).reshape(-1)
  de = np.asarray(counts.counts @ _table_vector(model.table, counts, "energy_j")).reshape(-1)
  return rows, dt, de, single


def _cols(rows: np.ndarray, feature: str) -> np.ndarray:
  """``(n_rows, n_classes)`` slice of one per-class feature."""
  j = CLASS_FEATURES.index(feature)
  return rows[:, [i * _NF + j for i in range(len(KERNEL_CLASSES))]]


def _param_arrays(model: EnergyModel) -> dict[str, np.ndarray]:
  ps = [model.classes[c] for c in KERNEL_CLASSES]
  return {f.name: np.array([getattr(p, f.name) for p in ps]) for f in dataclasses.fields(
      ClassParams)}


# ----------------------------------------------------------------------------------------------------
# Prediction.


def _class_time_s(model: EnergyModel, rows: np.ndarray) -> np.ndarray:
  p = _param_arrays(model)
  return _cols(rows, "roofline_s") @ p["time_efficiency"] + model.launch_gap_s * _cols(
      rows, "launches").sum(axis=1)


def _class_dynamic_j(model: EnergyModel, rows: np.ndarray) -> np.ndarray:
  p = _param_arrays(model)
  return (_cols(rows, "compute_s") @ p["compute_power_w"] + _cols(rows, "memory_s") @
          p["memory_power_w"] + _cols(rows, "launches") @ p["launch_energy_j"])


def predict_time_s(model: EnergyModel,
                   kernels_or_features: Sequence[Kernel] | np.ndarray | KernelCounts, *,
                   batch_size: int = 1) -> float | np.ndarray:
  """Predicted time of one call, in s (kernel times plus launch gaps, table corrections included).

  Args:
    model: the energy model.
    kernels_or_features: a kernel list, ``KernelCounts`` of many functions, or (for a model without
      a table) one feature row or a 2-D array of rows.
    batch_size: samples per call (used only when a kernel list is given).

  Returns:
    A float for one function, an array for ``KernelCounts`` or a 2-D feature input.

  Raises:
    ValueError: as ``predict_energy_j`` (including kernels lowered for a non-GPU platform).
  """
  rows, dt, _, single = _prepare(model, kernels_or_features, batch_size)
  t = _class_time_s(model, rows) + dt
  return float(t[0]) if single else t


def predict_energy_j(model: EnergyModel,
                     kernels_or_features: Sequence[Kernel] | np.ndarray | KernelCounts, *,
                     batch_size: int = 1, per_sample: bool = False) -> float | np.ndarray:
  """Predicted energy of one call, in J: dynamic kernel energy plus static power x time.

  Args:
    model: the energy model.
    kernels_or_features: a kernel list, ``KernelCounts`` of many functions, or (for a model without
      a table) one feature row or a 2-D array of rows.
    batch_size: samples per call the kernels were extracted at (used only when a kernel list is
      given; feature rows carry it in their last column, ``KernelCounts`` in ``batch_size``).
    per_sample: divide by the batch size (energy per sample instead of per call).

  Returns:
    A float for one function, an array for ``KernelCounts`` or a 2-D feature input.

  Raises:
    ValueError: feature rows given to a model with a kernel table, malformed rows, or a
      ``hlo.KernelList`` lowered for another platform than an NVIDIA GPU (e.g. CPU kernels from
      ``extract_kernels(mode="compiled")`` on a CPU host; the message names the fix).
  """
  rows, dt, de, single = _prepare(model, kernels_or_features, batch_size)
  t = _class_time_s(model, rows) + dt
  e = _class_dynamic_j(model, rows) + de + model.static_power_w * t
  if per_sample:
    e = e / rows[:, -1]
  return float(e[0]) if single else e


def predict_kernel_energy_j(model: EnergyModel, kernel: Kernel) -> tuple[float, float]:
  """``(time_s, energy_j)`` of one launch of ``kernel``: its launch gap, static share and table
  corrections included."""
  cp = model.classes[kernel.kernel_class]
  compute_s, memory_s, roof_s = kernel_roofline(kernel, model.spec)
  dt, de = model.table.corrections(kernel) if model.table is not None else (0.0, 0.0)
  t = cp.time_efficiency * roof_s + model.launch_gap_s + dt
  e = (cp.compute_power_w * compute_s + cp.memory_power_w * memory_s + cp.launch_energy_j + de +
       model.static_power_w * t)
  return t, e


# ----------------------------------------------------------------------------------------------------
# Prior and fitting.


def prior_model(spec: DeviceSpec | str) -> EnergyModel:
  """Analytical model from datasheet numbers only (the starting point and regularizer of a fit)."""
  spec = _resolve_spec(spec)
  dyn_w = max(spec.tdp_w - spec.idle_power_w, 0.0)
  classes = {
      c: ClassParams(compute_power_w=_PRIOR_COMPUTE_SHARE * dyn_w,
                     memory_power_w=_PRIOR_MEMORY_SHARE * dyn_w,
                     launch_energy_j=_PRIOR_LAUNCH_SHARE * dyn_w * spec.launch_overhead_s,
                     time_efficiency=_PRIOR_TIME_EFFICIENCY[c])
      for c in KERNEL_CLASSES
  }
  return EnergyModel(spec, classes, spec.idle_power_w, spec.launch_overhead_s,
                     provenance=f"prior:{spec.name}")


def nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int | None = None,
         tol: float = 1e-12) -> np.ndarray:
  """Non-negative least squares ``argmin_{x>=0} ||a x - b||`` (Lawson-Hanson active set)."""
  m, n = a.shape
  x = np.zeros(n)
  passive = np.zeros(n, bool)
  max_iter = max_iter or 3 * n + 30
  w = a.T @ (b - a @ x)
  for _ in range(max_iter):
    if passive.all() or w[~passive].max(initial=-np.inf) <= tol * max(1.0, np.abs(w).max()):
      break
    j = int(np.argmax(np.where(passive, -np.inf, w)))
    passive[j] = True
    while True:
      z = np.zeros(n)
      z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
      if (z[passive] > tol).all():
        break
      mask = passive & (z <= tol)
      alpha = np.min(x[mask] / np.maximum(x[mask] - z[mask], 1e-300))
      x = x + alpha * (z - x)
      passive &= x > tol
      x[~passive] = 0.0
      if not passive.any():
        break
    x = z if passive.any() else x
    w = a.T @ (b - a @ x)
  return np.maximum(x, 0.0)


def ridge_nnls(design: np.ndarray, y: np.ndarray, theta0: np.ndarray, ridge: float) -> np.ndarray:
  """``argmin_{s>=0} sum_i ((design_i . (theta0*s) - y_i)/y_i)^2 + ridge*||s-1||^2``; returns theta.

  The one non-negative ridge solve of the energy model's fits (relative errors, pulled towards
  ``theta0``). It uses ``nnls`` (above) rather than ``scipy.optimize.nnls``: the two agree to
  ~1e-15 in relative prediction on NB201 fits and scipy's is ~20x faster, but those last bits
  reorder near-tied cells, which moved a rank correlation of the committed NB201 validation in
  its third decimal (``roofline_only`` latency Kendall 0.611 -> 0.612).
  """
  scaled = design * theta0[None, :] / y[:, None]
  a = np.vstack([scaled, np.sqrt(ridge) * np.eye(len(theta0))])
  b = np.concatenate([np.ones(len(y)), np.sqrt(ridge) * np.ones(len(theta0))])
  return theta0 * nnls(a, b)


def fit_energy_model(feature_rows: np.ndarray, measured_energy_j: np.ndarray,
                     prior: EnergyModel, *, ridge: float = 1e-2,
                     measured_time_s: np.ndarray | None = None,
                     static_power_w: float | None = None) -> EnergyModel:
  """Refines ``prior`` on measured whole-function energies (and optionally times).

  Minimises the squared relative error of the predicted energy (and time) plus
  ``ridge * sum_j (theta_j/theta0_j - 1)^2`` over non-negative parameters. With
  ``measured_time_s`` the time parameters (efficiencies, launch gap) are fitted on time first and
  the dynamic-energy parameters on ``E - P_static * T``; without it everything is fitted jointly on
  energy. The static power is held fixed (the prior's idle power, or ``static_power_w``, e.g. a
  measured idle reading). Classes absent from the data keep their prior values.

  Args:
    feature_rows: ``(n, len(FEATURE_NAMES))`` rows from ``kernel_features`` (same device as
      ``prior.spec``).
    measured_energy_j: ``(n,)`` measured energy per call, in J (> 0).
    prior: starting point and regularization target.
    ridge: strength of the pull towards the prior (relative units; > 0).
    measured_time_s: optional ``(n,)`` measured time per call, in s (> 0).
    static_power_w: optional static power to use instead of the prior's.

  Returns:
    The fitted model.

  Raises:
    ValueError: shapes disagree, non-finite or non-positive targets, or ridge <= 0.
  """
  rows = np.atleast_2d(np.asarray(feature_rows, np.float64))
  y = np.asarray(measured_energy_j, np.float64).reshape(-1)
  if rows.shape[1] != len(FEATURE_NAMES):
    raise ValueError(f"feature_rows must have {len(FEATURE_NAMES)} columns, got {rows.shape}")
  if rows.shape[0] != y.shape[0]:
    raise ValueError(f"{rows.shape[0]} feature rows but {y.shape[0]} energies")
  if not np.all(np.isfinite(rows)) or not np.all(np.isfinite(y)) or np.any(y <= 0):
    raise ValueError("feature rows and measured_energy_j must be finite, energies > 0")
  if ridge <= 0:
    raise ValueError(f"ridge must be > 0, got {ridge}")
  p0 = _param_arrays(prior)
  static_w = prior.static_power_w if static_power_w is None else float(static_power_w)
  n_launch = _cols(rows, "launches").sum(axis=1, keepdims=True)
  time_design = np.hstack([_cols(rows, "roofline_s"), n_launch])
  time0 = np.concatenate([p0["time_efficiency"], [prior.launch_gap_s]])
  dyn_design = np.hstack([_cols(rows, "compute_s"), _cols(rows, "memory_s"),
                          _cols(rows, "launches")])
  dyn0 = np.concatenate([p0["compute_power_w"], p0["memory_power_w"], p0["launch_energy_j"]])
  nc = len(KERNEL_CLASSES)
  if measured_time_s is not None:
    t = np.asarray(measured_time_s, np.float64).reshape(-1)
    if t.shape != y.shape or not np.all(np.isfinite(t)) or np.any(t <= 0):
      raise ValueError("measured_time_s must be finite, > 0 and match measured_energy_j")
    time_theta = ridge_nnls(time_design, t, time0, ridge)
    t_hat = time_design @ time_theta
    target = y - static_w * t_hat
    if np.any(target <= 0):
      raise ValueError("measured energy is below static power x predicted time for some rows; "
                       "check static_power_w or the measurements")
    dyn_theta = ridge_nnls(dyn_design, target, dyn0, ridge)
  else:
    design = np.hstack([dyn_design, static_w * time_design])
    theta = ridge_nnls(design, y, np.concatenate([dyn0, time0]), ridge)
    dyn_theta, time_theta = theta[:3 * nc], theta[3 * nc:]
  classes = {
      c: ClassParams(compute_power_w=float(dyn_theta[i]), memory_power_w=float(dyn_theta[nc + i]),
                     launch_energy_j=float(dyn_theta[2 * nc + i]),
                     time_efficiency=float(time_theta[i]))
      for i, c in enumerate(KERNEL_CLASSES)
  }
  how = "energy+time" if measured_time_s is not None else "energy"
  return EnergyModel(prior.spec, classes, static_w, float(time_theta[-1]),
                     provenance=f"fit:{how}:n={len(y)}:ridge={ridge:g}:from={prior.provenance}")


def _table_lsqr(key_counts: Sequence[Any], y: np.ndarray, base: np.ndarray, scale: float,
                ridges: Sequence[float]) -> list[np.ndarray]:
  """Ridge-regularised relative least squares for table corrections (one block per level).

  Minimises ``sum_i ((base_i + sum_l K_l[i] . d_l - y_i) / y_i)^2 + sum_l r_l ||d_l / scale||^2``
  by LSQR on the columns rescaled so that every penalty is ``||c||^2`` (``damp = 1``).
  """
  import scipy.sparse  # pylint: disable=g-import-not-at-top
  from scipy.sparse.linalg import lsqr  # pylint: disable=g-import-not-at-top

  w = scipy.sparse.diags(1.0 / y)
  col_scale = [scale / np.sqrt(r) for r in ridges]
  a = scipy.sparse.hstack([w @ k * cs for k, cs in zip(key_counts, col_scale)]).tocsr()
  b = 1.0 - base / y
  # Tolerances 1e-8: the residual norm agrees with 1e-12 to 6 digits at half the iterations.
  c = lsqr(a, b, damp=1.0, atol=1e-8, btol=1e-8, iter_lim=20 * a.shape[1] + 1000)[0]
  out, o = [], 0
  for k, cs in zip(key_counts, col_scale):
    out.append(c[o:o + k.shape[1]] * cs)
    o += k.shape[1]
  return out


def fit_kernel_table(model: EnergyModel, counts: KernelCounts, *,
                     measured_energy_j: np.ndarray | None = None,
                     measured_time_s: np.ndarray | None = None,
                     levels: Sequence[str] = ("class", "op"),
                     ridge: float | Mapping[str, float] = 1e-3) -> EnergyModel:
  """Adds a ``KernelTable`` of per-signature corrections to ``model`` (its class part kept).

  For each target given, minimises the squared relative error of the whole-function prediction
  plus ``sum_levels ridge[level] * sum_keys (d_key / scale)^2``, where ``d_key`` is a key's
  per-launch correction (J or s) and ``scale`` the median per-launch cost of the measured functions
  (measured value / launches), so ridge strengths are unitless and comparable across devices: a
  large ridge keeps the class predictor, a small one lets every signature take its own cost.
  Times are fitted first (corrections of ``t_k``); energies are then fitted (corrections of
  ``e_k``) on top of the class prediction with the fitted time corrections, so
  ``E = sum_k e_k + P_static * T`` keeps its form. Signatures absent from ``counts`` (or with no
  launches in it) get no entry and fall back to the class predictor. Any table already on
  ``model`` is replaced.

  Args:
    model: the class predictor (``prior_model`` / ``fit_energy_model`` output) to correct.
    counts: launch counts of the measured functions (``count_kernels``).
    measured_energy_j: ``(n,)`` measured energy per call, in J (> 0), or ``None``.
    measured_time_s: ``(n,)`` measured time per call, in s (> 0), or ``None``.
    levels: signature levels of the table (``SIGNATURE_LEVELS``; several levels add up, each
      shrunk with its own ridge).
    ridge: one strength for every level or ``{level: strength}`` (> 0).

  Returns:
    ``model`` with ``table`` set.

  Raises:
    ValueError: no target, shape mismatch, non-positive or non-finite targets, bad levels/ridge.
  """
  if measured_energy_j is None and measured_time_s is None:
    raise ValueError("fit_kernel_table needs measured_energy_j and/or measured_time_s")
  levels = tuple(levels)
  if not levels:
    raise ValueError("fit_kernel_table needs at least one signature level")
  ridges = {lv: float(ridge) for lv in levels} if not isinstance(ridge, Mapping) else {
      lv: float(ridge[lv]) for lv in levels if lv in ridge}
  if set(ridges) != set(levels) or any(not np.isfinite(r) or r <= 0 for r in ridges.values()):
    raise ValueError(f"ridge must be > 0 for every level of {levels}, got {ridge}")
  KernelTable(levels, {}, {}, ridges)  # validates the level names

  def target(v: np.ndarray | None, name: str) -> np.ndarray | None:
    if v is None:
      return None
    v = np.asarray(v, np.float64).reshape(-1)
    if v.shape != (len(counts),) or not np.all(np.isfinite(v)) or np.any(v <= 0):
      raise ValueError(f"{name} must be finite, > 0 and have one value per function "
                       f"({len(counts)}), got shape {v.shape}")
    return v

  y_e = target(measured_energy_j, "measured_energy_j")
  y_t = target(measured_time_s, "measured_time_s")
  rows = counts.features(model.spec)
  launches = _cols(rows, "launches").sum(axis=1)
  if np.any(launches <= 0):
    raise ValueError("every function needs at least one kernel launch")
  per_level = {lv: counts.key_counts(lv) for lv in levels}
  seen = {lv: np.asarray(kc.sum(axis=0)).reshape(-1) > 0 for lv, (kc, _) in per_level.items()}

  def fit(y: np.ndarray, base: np.ndarray) -> dict[str, dict[str, float]]:
    scale = float(np.median(y / launches))
    ds = _table_lsqr([per_level[lv][0] for lv in levels], y, base, scale,
                     [ridges[lv] for lv in levels])
    return {lv: {k: float(v) for k, v, ok in zip(per_level[lv][1], d, seen[lv]) if ok}
            for lv, d in zip(levels, ds)}

  class_t = _class_time_s(model, rows)
  time_entries: dict[str, dict[str, float]] = {lv: {} for lv in levels}
  dt = np.zeros(len(counts))
  if y_t is not None:
    time_entries = fit(y_t, class_t)
    dt = sum(np.asarray(per_level[lv][0] @ np.array([time_entries[lv].get(k, 0.0) for k in
                                                     per_level[lv][1]])).reshape(-1)
             for lv in levels)
  energy_entries: dict[str, dict[str, float]] = {lv: {} for lv in levels}
  if y_e is not None:
    base_e = _class_dynamic_j(model, rows) + model.static_power_w * (class_t + dt)
    energy_entries = fit(y_e, base_e)
  how = "+".join(n for n, v in (("energy", y_e), ("time", y_t)) if v is not None)
  table = KernelTable(levels, energy_entries, time_entries, ridges,
                      provenance=f"fit:{how}:n={len(counts)}:levels={'+'.join(levels)}:ridge="
                                 + ",".join(f"{lv}={r:g}" for lv, r in ridges.items()))
  return dataclasses.replace(model, table=table)


# ----------------------------------------------------------------------------------------------------
# Persistence.


def save_energy_model(model: EnergyModel, path: str | os.PathLike[str]) -> None:
  """Writes the model as JSON (atomically)."""
  atomic_write_json(path, model.to_dict())


def energy_model_from_dict(d: Mapping, *, where: str = "energy model") -> EnergyModel:
  """Rebuilds a model from ``EnergyModel.to_dict()`` output (format 2, or format 1 without table).

  Raises:
    DataError: wrong format tag, missing classes/fields, negative class parameters or a malformed
      kernel table (names ``where``).
  """
  try:
    if d.get("format") not in _FORMATS_READ:
      raise DataError(f"{where}: format is {d.get('format')!r}, expected one of {_FORMATS_READ}")
    spec = DeviceSpec.from_dict(d["spec"])
    missing = [c for c in KERNEL_CLASSES if c not in d["classes"]]
    if missing:
      raise DataError(f"{where}: parameters missing for kernel classes {missing}")
    classes = {c: ClassParams(**{k: float(v) for k, v in d["classes"][c].items()})
               for c in KERNEL_CLASSES}
    table = None if d.get("table") is None else KernelTable.from_dict(d["table"])
    model = EnergyModel(spec, classes, float(d["static_power_w"]), float(d["launch_gap_s"]),
                        str(d.get("provenance", "")), table)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"{where}: malformed energy model ({type(e).__name__}: {e}); re-save it with "
                    "save_energy_model") from e
  values = [model.static_power_w, model.launch_gap_s] + [
      v for p in classes.values() for v in dataclasses.astuple(p)]
  if any(not np.isfinite(v) or v < 0 for v in values):
    raise DataError(f"{where}: parameters must be finite and non-negative")
  if table is not None and not all(np.isfinite(v) for m in (table.energy_j, table.time_s)
                                   for e in m.values() for v in e.values()):
    raise DataError(f"{where}: kernel table entries must be finite")
  return model


def load_energy_model(path: str | os.PathLike[str]) -> EnergyModel:
  """Reads a model written by ``save_energy_model``.

  Raises:
    FileNotFoundError: no such file.
    DataError: the file is not valid JSON or not an energy model (the message names the file).
  """
  with open(path, encoding="utf-8") as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: not valid JSON ({e}); re-save it with save_energy_model") from e
  return energy_model_from_dict(d, where=str(path))
