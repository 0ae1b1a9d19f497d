"""Safe reader for the official HW-NAS-Bench pickle (``HW-NAS-Bench-v1_0.pickle``).

The official file is a Python pickle. Unpickling can run arbitrary code, so it is read only through
``restricted_load``, which builds nothing but plain containers and numbers (dict, list, tuple, str,
int, float, bool, None): every global / class lookup (``os.system``, ``numpy.ndarray``, ``set`` via
``builtins``, ...) and every persistent id is refused with ``UnsafePickleError``, and the loaded
object is checked once more to hold only the allowed types.

The NB201 part is then converted **once** into a safe cache, a ``.npz`` read with
``allow_pickle=False``:

- ``<dataset>__<metric>``: float64 array of length 15,625 (row i = NB201 arch index i), values
  exactly as in the pickle (NaN where the pickle has no value; HW-NAS-Bench's ``-1`` "not
  measured" markers are kept as ``-1`` here and turned into NaN by the table loader);
- ``<dataset>__arch_str``: the arch string of each index from the pickle's ``config`` entries
  (empty where absent), used to check the index order;
- ``__meta__``: a JSON string with the format tag, the source file name and its sha256.

Pickle layout (from the official API ``hw_nas_bench_api/hw_nas_bench_api.py``)::

    d["nasbench201"][dataset][metric][arch_index] -> float
    d["nasbench201"][dataset]["config"][arch_index] -> {"name", "C", "N", "arch_str", "num_classes"}
    dataset in {"cifar10", "cifar100", "ImageNet16-120"}

Units (HW-NAS-Bench README): latency in ms, energy in mJ; arithmetic intensity is unitless.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.data.paths import RemoteFile, cache_dir
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import atomic_write_bytes, sha256_file

NUM_NB201_ARCHS = 15625

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")

METRICS: tuple[str, ...] = (
    "edgegpu_latency",  # ms
    "edgegpu_energy",  # mJ
    "raspi4_latency",  # ms
    "edgetpu_latency",  # ms (-1: not measured)
    "pixel3_latency",  # ms
    "eyeriss_latency",  # ms
    "eyeriss_energy",  # mJ
    "eyeriss_arithmetic_intensity",  # unitless
    "fpga_latency",  # ms
    "fpga_energy",  # mJ
)

CACHE_FORMAT = "cenas-hw-nas-bench-nb201-v1"

HW_NAS_BENCH_PICKLE = RemoteFile(
    url="https://raw.githubusercontent.com/GATECH-EIC/HW-NAS-Bench/master/HW-NAS-Bench-v1_0.pickle",
    filename="HW-NAS-Bench-v1_0.pickle",
    # Unknown: the file could not be obtained when this reader was written, so its digest is not
    # checked. Pin it here once a trusted copy has been hashed.
    sha256=None,
    subdir="hw_nas_bench",
)
"""Download metadata of the official pickle (repository GATECH-EIC/HW-NAS-Bench, MIT license)."""

_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_CONTAINER_TYPES = frozenset({dict, list, tuple})


class UnsafePickleError(DataError):
  """A pickle asks for something other than plain containers and numbers."""


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that refuses every global lookup and persistent id."""

  def __init__(self, file: io.BufferedIOBase, *, source: str):
    super().__init__(file, fix_imports=False, encoding="utf-8", errors="strict")
    self._source = source

  def find_class(self, module: str, name: str) -> Any:  # noqa: D102
    raise UnsafePickleError(
        f"{self._source}: the pickle references the global {module}.{name}; only plain "
        "containers and numbers (dict, list, tuple, str, int, float, bool, None) are allowed, so "
        "it is refused. "
        "If this is the official HW-NAS-Bench file, check that it was not modified (compare its "
        "sha256 with a trusted copy)."
    )

  def persistent_load(self, pid: Any) -> Any:  # noqa: D102
    raise UnsafePickleError(
        f"{self._source}: the pickle uses a persistent id ({pid!r:.80}); refused (only plain "
        "containers and numbers are allowed)."
    )


def _check_plain(obj: Any, source: str) -> None:
  """Walks ``obj`` iteratively and raises unless it holds only the allowed plain types."""

  def refuse(t: type) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: the pickle contains an object of type {t.__name__}; only dict, list, tuple, "
        "str, int, float, bool and None are allowed."
    )

  if type(obj) in _SCALAR_TYPES:
    return
  if type(obj) not in _CONTAINER_TYPES:
    raise refuse(type(obj))
  stack = [obj]
  seen: set[int] = set()
  while stack:
    x = stack.pop()
    if id(x) in seen:
      continue
    seen.add(id(x))
    items = itertools.chain(x.keys(), x.values()) if type(x) is dict else x
    for v in items:
      t = type(v)
      if t in _SCALAR_TYPES:
        continue
      if t in _CONTAINER_TYPES:
        stack.append(v)
        continue
      raise refuse(t)


def restricted_load(path: str | os.PathLike[str]) -> Any:
  """Unpickles ``path`` allowing only dict, list, tuple, str, int, float, bool and None.

  Raises:
    UnsafePickleError: the pickle references any global (class, function) or a persistent id, or
      holds another type (e.g. bytes, set).
    DataError: the file is not a readable pickle.
  """
  path = Path(path)
  source = str(path)
  try:
    with open(path, "rb") as f:
      obj = _RestrictedUnpickler(f, source=source).load()
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, MemoryError, RecursionError, UnicodeDecodeError) as e:
    raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {e}).") from e
  _check_plain(obj, source)
  return obj


def _per_index_values(container: Any, where: str) -> np.ndarray:
  """A list (length 15,625) or ``{index: value}`` dict of numbers -> float64 (NaN: absent)."""
  out = np.full(NUM_NB201_ARCHS, np.nan)
  if isinstance(container, (list, tuple)):
    if len(container) != NUM_NB201_ARCHS:
      raise DataError(f"{where}: has {len(container)} entries; expected {NUM_NB201_ARCHS} (one per "
                      "NB201 arch index).")
    if set(map(type, container)) <= {float, int}:  # Fast path: a plain list of numbers.
      try:
        values = np.array(container, dtype=np.float64)
      except OverflowError:
        values = None  # The slow path names the entry.
      if values is not None and np.all(np.isfinite(values)):
        return values
    items = enumerate(container)
  elif isinstance(container, dict):
    items = container.items()
  else:
    raise DataError(f"{where}: expected a list or an {{arch_index: value}} dict, got "
                    f"{type(container).__name__}.")
  for key, value in items:
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < NUM_NB201_ARCHS:
      raise DataError(f"{where}: key {key!r} is not an NB201 arch index in [0, {NUM_NB201_ARCHS}).")
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise DataError(f"{where}[{key}]: value {value!r:.80} is not a number.")
    try:
      number = float(value)
    except OverflowError:
      number = math.inf
    if not math.isfinite(number):
      raise DataError(f"{where}[{key}]: value {value!r:.80} is not a finite number.")
    out[key] = number
  return out


def _per_index_arch_str(configs: Any, where: str) -> np.ndarray:
  out = np.full(NUM_NB201_ARCHS, "", dtype=object)
  if isinstance(configs, (list, tuple)):
    items = enumerate(configs)
  elif isinstance(configs, dict):
    items = configs.items()
  else:
    raise DataError(
        f"{where}: expected a list or dict of net configs, got {type(configs).__name__}.")
  for key, cfg in items:
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < NUM_NB201_ARCHS:
      raise DataError(f"{where}: key {key!r} is not an NB201 arch index in [0, {NUM_NB201_ARCHS}).")
    arch = cfg.get("arch_str") if isinstance(cfg, dict) else None
    if not isinstance(arch, str):
      raise DataError(f"{where}[{key}]: config has no 'arch_str' string.")
    out[key] = arch
  return out


def nb201_arrays_from_pickle_object(obj: Any, *, source: str = "<pickle>") -> dict[str, np.ndarray]:
  """Extracts the NB201 part of a loaded HW-NAS-Bench object as ``{"<dataset>__<metric>": array}``.

  Every dataset in ``DATASETS`` must be present with all 10 ``METRICS``; the ``config`` entry is
  optional (it gives ``<dataset>__arch_str``). Other keys (e.g. the FBNet space) are ignored.

  Raises:
    DataError: a required dataset or metric is missing or malformed (the message names it).
  """
  if not isinstance(obj, dict) or not isinstance(obj.get("nasbench201"), dict):
    keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
    raise DataError(f"{source}: expected a dict with a 'nasbench201' dict (HW-NAS-Bench layout); "
                    f"found {keys}.")
  space = obj["nasbench201"]
  arrays: dict[str, np.ndarray] = {}
  for dataset in DATASETS:
    if not isinstance(space.get(dataset), dict):
      raise DataError(f"{source}: ['nasbench201'][{dataset!r}] is missing or not a dict.")
    block = space[dataset]
    for metric in METRICS:
      where = f"{source}: ['nasbench201'][{dataset!r}][{metric!r}]"
      if metric not in block:
        raise DataError(f"{where} is missing.")
      arrays[f"{dataset}__{metric}"] = _per_index_values(block[metric], where)
    if "config" in block:
      where = f"{source}: ['nasbench201'][{dataset!r}]['config']"
      arrays[f"{dataset}__arch_str"] = _per_index_arch_str(block["config"], where).astype(str)
  return arrays


def convert_hw_nas_bench_pickle(pickle_path: str | os.PathLike[str],
                                out_path: str | os.PathLike[str]) -> Path:
  """Converts the official pickle's NB201 part into the safe ``.npz`` cache at ``out_path``.

  The pickle is read with ``restricted_load``; the cache is written atomically.

  Returns:
    ``out_path`` as a Path.

  Raises:
    UnsafePickleError: the pickle holds anything but plain containers and numbers.
    DataError: the pickle does not have the HW-NAS-Bench layout.
  """
  pickle_path = Path(pickle_path)
  obj = restricted_load(pickle_path)
  arrays = nb201_arrays_from_pickle_object(obj, source=str(pickle_path))
  meta = {
      "format": CACHE_FORMAT,
      "source_name": pickle_path.name,
      "source_sha256": sha256_file(pickle_path),
      "num_archs": NUM_NB201_ARCHS,
      "datasets": list(DATASETS),
      "metrics": list(METRICS),
  }
  buf = io.BytesIO()
  np.savez(buf, __meta__=np.array(json.dumps(meta)), **arrays)
  return atomic_write_bytes(out_path, buf.getvalue())


def load_hw_nas_bench_cache(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray],
                                                                    dict[str, Any]]:
  """Loads a cache written by ``convert_hw_nas_bench_pickle``.

  Returns:
    ``(arrays, meta)``: ``arrays["<dataset>__<metric>"]`` float64 ``(15625,)`` and optional
    ``arrays["<dataset>__arch_str"]`` str ``(15625,)``; ``meta`` the JSON header.

  Raises:
    DataError: not a cache of this format, or arrays missing / of the wrong shape.
  """
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"{path}: not a readable HW-NAS-Bench cache (.npz) ({e}). Delete it and "
                    "convert the pickle again with convert_hw_nas_bench_pickle.") from e
  try:
    meta = json.loads(str(data.pop("__meta__")))
  except (KeyError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: no valid '__meta__' entry; not a HW-NAS-Bench cache.") from e
  found = meta.get("format") if isinstance(meta, Mapping) else meta
  if found != CACHE_FORMAT:
    raise DataError(f"{path}: cache format {found!r} is not {CACHE_FORMAT!r}; convert the pickle "
                    "again.")
  for dataset in DATASETS:
    for metric in METRICS:
      key = f"{dataset}__{metric}"
      arr = data.get(key)
      if arr is None or arr.shape != (NUM_NB201_ARCHS,) or arr.dtype != np.float64:
        raise DataError(f"{path}: array {key!r} is missing or not float64 of shape "
                        f"({NUM_NB201_ARCHS},); convert the pickle again.")
  return data, dict(meta)


def default_cache_path(pickle_path: str | os.PathLike[str]) -> Path:
  """Where ``cached_nb201_arrays`` keeps the cache of ``pickle_path`` (under ``cache_dir()``)."""
  return cache_dir() / "hw_nas_bench" / (Path(pickle_path).stem + ".nb201.npz")


def cached_nb201_arrays(pickle_path: str | os.PathLike[str],
                        cache_path: str | os.PathLike[str] | None = None,
                        ) -> tuple[dict[str, np.ndarray], dict[str, Any], Path]:
  """Loads the NB201 arrays of ``pickle_path`` through the cache, converting once if needed.

  If ``pickle_path`` ends in ``.npz`` it is taken to be a cache already and loaded directly.
  Otherwise the cache (``cache_path`` or ``default_cache_path(pickle_path)``) is used when its
  recorded source sha256 equals the pickle's, and is (re)built from the pickle when it is absent
  or stale.

  Returns:
    ``(arrays, meta, cache_path)``.
  """
  pickle_path = Path(pickle_path).expanduser()
  if pickle_path.suffix == ".npz":
    arrays, meta = load_hw_nas_bench_cache(pickle_path)
    return arrays, meta, pickle_path
  if not pickle_path.exists():
    raise DataUnavailableError(
        f"HW-NAS-Bench pickle not found at {pickle_path}. Download it from "
        f"{HW_NAS_BENCH_PICKLE.url} and pass its path.")
  cache = Path(cache_path) if cache_path is not None else default_cache_path(pickle_path)
  digest = sha256_file(pickle_path)
  if cache.exists():
    arrays, meta = load_hw_nas_bench_cache(cache)
    if meta.get("source_sha256") == digest:
      return arrays, meta, cache
  convert_hw_nas_bench_pickle(pickle_path, cache)
  arrays, meta = load_hw_nas_bench_cache(cache)
  return arrays, meta, cache
