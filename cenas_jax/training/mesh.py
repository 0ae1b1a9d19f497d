"""The device mesh every training loop uses: one ``data`` axis, explicit sharding, many hosts.

Data parallelism only: a batch is split along its leading axis over the ``data`` mesh axis and
parameters are replicated. The mesh is built with ``jax.make_mesh`` and an *explicit* axis type, so
the sharding of every array is part of its type under ``jit`` (``jax.typeof(x)`` shows
``f32[16@data, 3]``) and a mismatch is a trace-time error instead of a silent all-gather.

Use the mesh with ``jax.set_mesh(mesh)`` (a context manager and a global setter), not the legacy
``with mesh:``::

  initialize_distributed(coordinator_address)   # only on a multi-host run
  mesh = make_data_mesh()
  with jax.set_mesh(mesh):
    params = replicate(params, mesh)
    batch = shard_batch(batch, mesh)

On many hosts every process calls the same code with the same *global* batch (each process holds
the whole dataset, as the data layer loads it); ``shard_batch`` places on this process's devices
only the rows they hold, and only ``is_main_process()`` writes results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

_log = logging.getLogger(__name__)


def initialize_distributed(coordinator_address: str | None = None, *,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Joins a multi-host run when asked to; a single-host run calls nothing.

  ``jax.distributed.initialize`` must run before any other JAX call on every host. It is only called
  when ``coordinator_address`` (``"host:port"`` of process 0) is given, so the same binary runs on a
  laptop without a coordinator.

  Args:
    coordinator_address: address of process 0's coordination service; ``None`` or ``""``: single
      host, nothing is initialised.
    num_processes: number of processes (hosts); ``None``: from the cluster environment.
    process_id: this process's index; ``None``: from the cluster environment.

  Returns:
    Whether ``jax.distributed.initialize`` was called.
  """
  if not coordinator_address:
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  _log.info("joined a %d-process run as process %d (%d local / %d global devices)",
            jax.process_count(), jax.process_index(), jax.local_device_count(), jax.device_count())
  return True


def process_index() -> int:
  """Index of this process (host) in a multi-host run; 0 on a single host."""
  return jax.process_index()


def process_count() -> int:
  """Number of processes (hosts) in the run; 1 on a single host."""
  return jax.process_count()


def is_main_process() -> bool:
  """Whether this process is process 0, the only one that writes results and checkpoints."""
  return jax.process_index() == 0


def make_data_mesh(num_devices: int | None = None, *,
                   devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with the explicit axis ``data`` over the devices.

  Args:
    num_devices: how many devices to use (the first ones); ``None``: all of them. On many hosts this
      counts global devices.
    devices: the devices to build the mesh from; ``None``: ``jax.devices()`` (global on many hosts,
      the local ones otherwise).

  Raises:
    ValueError: ``num_devices`` is not in ``[1, number of devices]``.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices) if num_devices is None else int(num_devices)
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}] (the devices available), got {n}.")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Explicit,), devices=devices[:n])


def data_size(mesh: Mesh) -> int:
  """Number of devices along the ``data`` axis (the global batch must be a multiple of it)."""
  return int(mesh.shape[DATA_AXIS])


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over ``data``, the other axes whole: the sharding of a batch."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array: the sharding of parameters and optimizer state."""
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` on every device of ``mesh`` (parameters, optimizer state).

  On many hosts every process must pass the same values (e.g. initialised from the same seed); each
  process then places its copy on its own devices, since ``device_put`` accepts only addressable
  devices there.
  """
  sharding = replicated_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _replicate_across_processes(x, sharding), tree)


def _replicate_across_processes(x: Any, sharding: NamedSharding) -> jax.Array:
  if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
    data = _replicate_across_processes(jax.random.key_data(x), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  value = np.asarray(x)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits every leaf of the global ``batch`` along its leading axis over ``data``.

  Args:
    batch: pytree of arrays with a common leading (example) axis: the global batch, the same in
      every process. On many hosts each process places only the rows its own devices hold
      (``jax.make_array_from_callback`` asks for exactly those), whatever the order of the mesh's
      devices.
    mesh: a mesh from :func:`make_data_mesh`.

  Raises:
    ValueError: the leaves' leading sizes differ, or the batch size is not a multiple of the number
      of devices along ``data``.
  """
  leaves = jax.tree.leaves(batch)
  sizes = {int(np.shape(x)[0]) for x in leaves}
  if len(sizes) != 1:
    raise ValueError("every leaf of a batch needs the same leading (example) size, got "
                     f"{sorted(sizes)}.")
  size = sizes.pop()
  if size % data_size(mesh):
    raise ValueError(f"the batch size {size} is not a multiple of the {data_size(mesh)} devices "
                     "along the data axis; pad the batch (see step.pad_batch).")
  sharding = data_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, batch)


def mesh_processes(mesh: Mesh) -> frozenset[int]:
  """The processes whose devices are in ``mesh`` (``{0}`` on a single host)."""
  return frozenset(int(d.process_index) for d in mesh.devices.flat)


def like_batch(x: jax.Array, ndim: int) -> P | None:
  """The sharding spec for a new ``ndim``-D per-example array that follows ``x``'s batch axis.

  Random draws made inside a data-parallel step (crop offsets, drop-path masks) must be sharded
  like the batch they modify: under explicit sharding, mixing a ``data``-sharded batch with a
  replicated per-example array is an error. ``None`` when ``x`` is not sharded along its first axis.
  """
  spec = jax.typeof(x).sharding.spec
  lead = spec[0] if len(spec) else None
  return None if lead is None else P(lead, *([None] * (ndim - 1)))
