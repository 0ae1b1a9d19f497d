"""Fast ``gpu``-mode kernels and energy features of NAS-Bench-201 networks, composed per op.

Tracing and lowering the whole Flax ``NB201Net`` (``cenas_jax.spaces.nb201_net``) takes seconds
per cell, too slow for the 15,625 cells of the space. ``network_kernels(ops)`` instead runs the
gpu-mode passes of ``cenas_jax.energy.hlo_gpu`` from CSE on over the network's flattened graph,
assembled from fragments lowered once (``cenas_jax.energy.nb201_compose``), so fusions that cross
op and cell boundaries (BN + node sum + the next ReLU in one loop kernel, multi-output fusion of a
node read by several kernels, a ReLU absorbed into a conv epilogue) come out as on a whole-network
lowering. ``module_kernels`` is the long way (the stitched module through ``hlo``), for tests;
``tests/energy/test_nb201_kernels.py`` checks that the composed kernels equal a full-network
extraction and the long way.

Edges that cannot reach the cell output (into node 1 or 2 when that node feeds nothing) are dropped
before composing (``live_ops``): XLA removes them as dead code, and cells that differ only there
share one cached result.

Many cells: ``compute_kernel_counts`` gives a ``model.KernelCounts`` (the distinct kernels and each
cell's sparse launch counts), from which both the per-class feature rows and the kernel table are
computed; ``save_feature_cache`` / ``load_feature_cache`` keep it in ``features.npz``.
``edge_kernels`` adds zero-cost placeholders for the cell structure that XLA's fusion hides (per
live edge and per node sum), whose cost a kernel table learns from the measurements. Fitting and
scoring models on these counts is ``cenas_jax.energy.fitting`` / ``metrics``; the NB201 validation
protocol is ``cenas_jax.energy.validate``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from cenas_jax.energy import hlo, hlo_gpu
from cenas_jax.energy.hlo import Kernel
from cenas_jax.energy.model import KernelCounts, count_kernels, kernel_features
from cenas_jax.energy.nb201_compose import (  # noqa: F401  (NB201NetConfig, network_module: API)
    NB201NetConfig,
    compose,
    fragments,
    network_module,
)
from cenas_jax.energy.specs import DeviceSpec
from cenas_jax.spaces.nb201 import EDGES, NONE, NUM_EDGES, OPS, validate_ops

COMPOSER_VERSION = "nb201_kernels/1"
"""Bumped whenever the composition changes (part of ``fingerprint``)."""


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




def fingerprint(config: NB201NetConfig = NB201NetConfig()) -> str:
  """SHA-256 identifying what the composed kernels depend on.

  Covers the composer version, the JAX/jaxlib versions, the network configuration (fusion rules
  included) and the HLO text of every fragment (so a change in the Flax modules changes it).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top

  frags = fragments(config)
  h = hashlib.sha256()
  for part in (COMPOSER_VERSION, jax.__version__, jaxlib.__version__, repr(config)):
    h.update(part.encode("utf-8") + b"\0")
  for name in sorted(frags):
    h.update(f"{name}={frags[name].text_sha256}\0".encode("utf-8"))
  return h.hexdigest()


def module_kernels(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig()
                   ) -> tuple[Kernel, ...]:
  """``network_kernels`` the long way: ``hlo.kernel_graph_from_module(network_module(ops))``.

  The reference the composed graph of ``network_kernels`` is tested against (same kernels, names
  included); slower.
  """
  graph = hlo.kernel_graph_from_module(network_module(live_ops(ops), config), config=config.fusion,
                                       lowered_for="cuda")
  if graph.warnings:
    raise RuntimeError(f"unexpected kernel-extraction warnings for cell {ops}: {graph.warnings}")
  return tuple(graph.kernels)


def _extract(live: tuple[int, ...], config: NB201NetConfig) -> tuple[list[Kernel], list[str]]:
  """The kernels and warnings of the gpu-mode passes on the composed graph of ``live``.

  A function of its own so that the graph dies (by reference counting) when it returns, inside the
  caller's pause of the cyclic collector: alive after the pause, its ~10^4 objects would all be
  scanned by the first collection (about a millisecond per network).
  """
  graph, order, unique = compose(live, config)
  kernels, _, _, warnings = hlo_gpu.gpu_kernels_from_graph(graph, config.fusion, order=order,
                                                           unique=unique)
  return kernels, warnings


@functools.lru_cache(maxsize=16384)
def _kernels_cached(live: tuple[int, ...], config: NB201NetConfig) -> tuple[Kernel, ...]:
  with hlo_gpu._gc_paused():  # pylint: disable=protected-access
    kernels, warnings = _extract(live, config)
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


def _map_live_cells(ops_rows: np.ndarray, fn: Callable[[tuple[Any, ...]], Any], extra: tuple[Any, ...],
                    *, workers: int, chunk_size: int,
                    progress: Callable[[int, int], None] | None
                    ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[Any]]:
  """Runs ``fn((chunk, *extra))`` over chunks of the distinct live cells of ``ops_rows``.

  Returns ``(live, unique, parts)``: each row's live cell, the sorted distinct live cells, and
  ``fn``'s result per chunk of ``unique`` in order. ``workers > 1`` uses spawned processes (``fn``
  must be a module-level function).

  Raises:
    ValueError: bad ``ops_rows`` shape, ``workers`` or ``chunk_size``.
  """
  ops_rows = np.asarray(ops_rows)
  if ops_rows.ndim != 2 or ops_rows.shape[1] != NUM_EDGES:
    raise ValueError(f"ops_rows must have shape (n, {NUM_EDGES}), got {ops_rows.shape}")
  if workers < 1 or chunk_size < 1:
    raise ValueError(f"workers and chunk_size must be >= 1, got {workers}, {chunk_size}")
  live = [live_ops(tuple(int(o) for o in r)) for r in ops_rows]
  unique = sorted(set(live))
  chunks = [unique[i:i + chunk_size] for i in range(0, len(unique), chunk_size)]
  parts: list[Any] = []
  done = 0

  def collect(results: Iterable[Any]) -> None:
    nonlocal done
    for c, part in zip(chunks, results):
      parts.append(part)
      done += len(c)
      if progress is not None:
        progress(done, len(unique))

  if workers == 1 or len(chunks) <= 1:
    collect(fn((c, *extra)) for c in chunks)
  else:
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    import multiprocessing  # pylint: disable=g-import-not-at-top

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
      collect(pool.map(fn, [(c, *extra) for c in chunks]))
  return live, unique, parts


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
  live, unique, parts = _map_live_cells(ops_rows, _features_chunk, (spec, config), workers=workers,
                                        chunk_size=chunk_size, progress=progress)
  if not unique:
    return np.zeros((0, len(_feature_names())), np.float64)
  table = np.concatenate(parts)
  pos = {ops: i for i, ops in enumerate(unique)}
  return table[[pos[ops] for ops in live]]


def _counts_chunk(args: tuple[list[tuple[int, ...]], NB201NetConfig]) -> KernelCounts:
  """Worker entry point (module level so spawned processes can import it)."""
  ops_list, config = args
  return count_kernels([network_kernels(ops, config) for ops in ops_list],
                       batch_size=config.batch_size)


def compute_kernel_counts(ops_rows: np.ndarray, config: NB201NetConfig = NB201NetConfig(), *,
                          workers: int = 1, chunk_size: int = 64,
                          progress: Callable[[int, int], None] | None = None) -> KernelCounts:
  """``model.KernelCounts`` of many cells (one row per ``ops_rows`` row), deduplicated by live cell.

  What the kernel table and the feature rows are computed from (``KernelCounts.features`` gives
  the ``FEATURE_NAMES`` rows). Arguments as ``compute_features``.
  """
  live, unique, parts = _map_live_cells(ops_rows, _counts_chunk, (config,), workers=workers,
                                        chunk_size=chunk_size, progress=progress)
  table = KernelCounts.concat(parts) if parts else count_kernels([])
  pos = {ops: i for i, ops in enumerate(unique)}
  return table.rows(np.array([pos[ops] for ops in live], np.int64))


_CACHE_FORMAT = "kernel-counts/1"


def cache_key(spec: str, config: NB201NetConfig = NB201NetConfig()) -> str:
  """What a cached cell depends on: the cache format, ``fingerprint(config)`` and the spec name."""
  return f"{_CACHE_FORMAT}:{fingerprint(config)}:{spec}"


def load_feature_cache(path: str, key: str) -> tuple[np.ndarray, KernelCounts] | None:
  """``(arch_index, KernelCounts)`` of the cells in ``path`` (``features.npz``); ``None`` when the
  file is absent or was written under another key (a stale cache is recomputed, not reused).

  Raises:
    DataError: the file exists but is not a readable cache (the message names it; delete it to
      recompute).
  """
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  import scipy.sparse  # pylint: disable=g-import-not-at-top

  from cenas_jax.energy.model import kernel_from_dict  # pylint: disable=g-import-not-at-top
  from cenas_jax.errors import DataError  # pylint: disable=g-import-not-at-top

  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      if "key" not in z.files or str(z["key"]) != key:
        return None
      idx = z["arch_index"].astype(np.int64)
      kernels = tuple(kernel_from_dict(json.loads(str(t))) for t in z["kernels_json"])
      counts = scipy.sparse.csr_matrix((z["counts_data"], z["counts_indices"],
                                        z["counts_indptr"]), shape=(len(idx), len(kernels)))
      batch = z["batch_size"].astype(np.int64)
    return idx, KernelCounts(kernels, counts, batch)
  except (OSError, KeyError, ValueError, TypeError) as e:
    raise DataError(f"{path}: not a kernel-count cache ({type(e).__name__}: {e}); delete it to "
                    "recompute") from e


def save_feature_cache(path: str, key: str, arch_index: np.ndarray, counts: KernelCounts) -> None:
  """Writes the kernel counts of the cells ``arch_index`` to ``path`` (``.npz``, atomically).

  Stores the distinct kernels (JSON, names dropped) and the sparse per-cell launch counts, which
  is what both the feature rows (``KernelCounts.features``) and the kernel table need.
  """
  import io  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top

  from cenas_jax.fileio import atomic_write_bytes  # pylint: disable=g-import-not-at-top

  idx = np.asarray(arch_index, np.int64)
  if len(idx) != len(counts) or len(set(idx.tolist())) != len(idx):
    raise ValueError(f"need one distinct arch_index per counted cell, got {len(idx)} for "
                     f"{len(counts)}")
  c = counts.counts.tocsr()
  c.sort_indices()
  buf = io.BytesIO()
  np.savez_compressed(
      buf, key=np.array(key), arch_index=idx, batch_size=counts.batch_size,
      kernels_json=np.array([json.dumps(k.to_dict(), sort_keys=True) for k in counts.kernels]),
      counts_data=c.data, counts_indices=c.indices, counts_indptr=c.indptr)
  atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------
# Launches of the reference runtime that XLA's kernels do not show.

EDGE_TARGET = "nb201-edge"
NODE_SUM_TARGET = "nb201-node-sum"
# How edge kernels are keyed: "op" gives every live edge of the same op (and every node summing
# the same number of edges) one signature per stage, i.e. a per-launch cost that does not depend
# on where in the cell it sits - what a per-op runtime cost model can claim; "position" also keys
# them by edge / node, which lets the table learn a cost per (position, op): an encoding of the
# cell itself rather than of its kernels.
EDGE_KEYS: tuple[str, ...] = ("position", "op", "graph")


def _edge_key(keys: str, op: str, to_node: int, from_node: int, fan_in: int, fan_out: int) -> str:
  if keys == "position":
    return f"edge{to_node}<-{from_node}:{op}"
  if keys == "graph":
    return f"edge:{op}:into{fan_in}:fan{fan_out}"
  return f"edge:{op}"


def _sum_key(keys: str, node: int, k: int, fan_out: int) -> str:
  if keys == "position":
    return f"node{node}:sum{k}"
  if keys == "graph":
    return f"sum{k}:fan{fan_out}"
  return f"sum{k}"


def edge_kernels(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig(), *,
                 keys: str = "position") -> tuple[Kernel, ...]:
  """Zero-cost placeholder kernels for the cell structure that XLA's fusion hides.

  XLA fuses every node sum, BN and ReLU of a cell into a few loop kernels and elides identity
  edges, so its kernels do not say where in the cell an op sits or how many inputs each node
  sums. A runtime that executes the cell module by module (HW-NAS-Bench measured PyTorch-defined
  networks on the Jetson) launches work for each of them. These placeholders carry that structure
  into the kernel table: per stage and per cell (``repeat`` = cells per stage), one
  ``kernel_class="other"`` kernel per live edge (``fused_ops=("edge<to><-<from>:<op>",)``, target
  ``EDGE_TARGET``) and one per live node (``("node<j>:sum<k>",)`` for a node summing ``k`` live
  edges, target ``NODE_SUM_TARGET``), with the stage's activation shape and no FLOPs or bytes:
  the class predictor prices them as ``other`` launches, and ``model.fit_kernel_table`` learns
  what each costs on the measured device. Dead edges (``live_ops``) get none. ``keys`` (see
  ``EDGE_KEYS``) says what a placeholder is keyed by:

  * ``position``: edge position and op (the table can learn a cost per place in the cell);
  * ``op``: the op alone (``("edge:<op>",)``, ``("sum<k>",)``);
  * ``graph``: the op and its data flow, no position: ``("edge:<op>:into<k>:fan<m>",)`` for an
    op whose output joins a ``k``-input node sum and whose input tensor ``m`` live edges read
    (a runtime that runs each edge as its own module re-reads a shared input per reader and can
    fuse the add of a sum into the producer's epilogue), ``("sum<k>:fan<m>",)`` for a ``k``-input
    sum whose result ``m`` edges read (the cell output: 1).

  A cell whose output is constant (no live edge) gets one ``("cell:constant",)`` placeholder
  instead (any ``keys``).

  Raises:
    ValueError: bad ``ops`` or ``keys``.
  """
  if keys not in EDGE_KEYS:
    raise ValueError(f"edge kernel keys must be one of {EDGE_KEYS}, got {keys!r}")
  live = live_ops(ops)
  fan_in = {j: sum(1 for e, (t, _) in enumerate(EDGES) if t == j and live[e] != NONE)
            for j in (1, 2, 3)}
  fan_out = {j: sum(1 for e, (_, f) in enumerate(EDGES) if f == j and live[e] != NONE)
             for j in (0, 1, 2)}
  fan_out[3] = 1  # the cell output feeds the next cell
  out = []
  hw, c = config.input_hw, config.C
  for stage in range(3):
    if stage > 0:
      hw, c = hw // 2, c * 2
    shape = ((config.batch_size, hw, hw, c),)
    for e, (to_node, from_node) in enumerate(EDGES):
      if live[e] == NONE:
        continue
      key = _edge_key(keys, OPS[live[e]], to_node, from_node, fan_in[to_node], fan_out[from_node])
      out.append(Kernel(name="", kernel_class="other", dtype="f32", in_shapes=shape,
                        out_shapes=shape, flops=0, transcendentals=0, bytes_read=0,
                        bytes_written=0, fused_ops=(key,), repeat=config.N, target=EDGE_TARGET))
    for j, k in fan_in.items():
      if k:
        out.append(Kernel(name="", kernel_class="other", dtype="f32", in_shapes=shape * k,
                          out_shapes=shape, flops=0, transcendentals=0, bytes_read=0,
                          bytes_written=0, fused_ops=(_sum_key(keys, j, k, fan_out[j]),),
                          repeat=config.N, target=NODE_SUM_TARGET))
    if not fan_in[3]:
      # The cell output is the constant 0 (no live edge reaches node 3), so the network's output
      # does not depend on its input: a runtime that bakes the weights in as constants (TFLite on
      # the Raspberry Pi and the Pixel 3) folds it away and measures ~1000x less. One placeholder
      # per such cell lets the table learn what the device does with it.
      out.append(Kernel(name="", kernel_class="other", dtype="f32", in_shapes=shape,
                        out_shapes=shape, flops=0, transcendentals=0, bytes_read=0,
                        bytes_written=0, fused_ops=("cell:constant",), repeat=config.N,
                        target=NODE_SUM_TARGET))
  return tuple(out)


def edge_kernel_counts(ops_rows: np.ndarray, config: NB201NetConfig = NB201NetConfig(), *,
                       keys: str = "position") -> KernelCounts:
  """``model.KernelCounts`` of ``edge_kernels`` for every row of ``ops_rows``."""
  return count_kernels([edge_kernels(tuple(int(o) for o in r), config, keys=keys)
                        for r in ops_rows],
                       batch_size=config.batch_size)


def with_edge_kernels(counts: KernelCounts, ops_rows: np.ndarray,
                      config: NB201NetConfig = NB201NetConfig(), *,
                      keys: str = "position") -> KernelCounts:
  """``counts`` (XLA kernels of the cells ``ops_rows``) plus their ``edge_kernels``."""
  import scipy.sparse  # pylint: disable=g-import-not-at-top

  extra = edge_kernel_counts(ops_rows, config, keys=keys)
  if len(extra) != len(counts):
    raise ValueError(f"{len(ops_rows)} cells for {len(counts)} kernel-count rows")
  return KernelCounts(counts.kernels + extra.kernels,
                      scipy.sparse.hstack([counts.counts, extra.counts]).tocsr(),
                      counts.batch_size)


def runtime_kernels(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig(), *,
                    keys: str = "position") -> tuple[Kernel, ...]:
  """``network_kernels(ops)`` followed by ``edge_kernels(ops, keys=keys)``: what a model fitted
  with edge kernels (``energy_model_nb201 --edge_kernels=<keys>``) predicts a cell from."""
  return network_kernels(ops, config) + edge_kernels(ops, config, keys=keys)
