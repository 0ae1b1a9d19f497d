"""Execution backends: where the search's training jobs run (this machine's devices or Ray).

A *job* is a picklable call ``fn(*args, devices=[...], **kwargs)``: a top-level function with plain
arguments that trains one candidate up to a step in its own checkpoint directory. Jobs are
idempotent (a job whose checkpoint is already there returns at once), so a backend may rerun,
cancel or interrupt one without losing more than the work since its last checkpoint. A backend
hands each job the device set it may use; the job builds its mesh from them
(``training.mesh.make_data_mesh(devices=devices)``).

Two backends share one small interface (:class:`Backend`): ``submit`` -> a
``concurrent.futures.Future``, ``cancel``, ``capacity`` (jobs run at once) and ``close`` (also a
context manager):

- :class:`LocalBackend`, the default: this process's devices split into fixed *slots* of
  ``devices_per_job`` devices, one worker thread per slot (JAX releases the GIL while it computes),
  never two jobs on one slot at once;
- :class:`RayBackend` (the optional ``ray`` extra): each job is a Ray task asking for
  ``num_gpus_per_job`` GPUs, so a search outgrows one machine without new code. ``ray`` is imported
  only when a RayBackend is made.

Use :func:`make_backend` from a binary's flags (``--backend``, ``--n_devices``, ``--ray_address``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax

from cenas_jax.errors import ConfigError

_log = logging.getLogger(__name__)

RAY_EXTRA_HINT = "--backend=ray needs the ray extra: pip install -e '.[ray]'"
# How long a Ray address may take to accept a TCP connection before it counts as not answering (s).
# ray.init itself retries a dead address for many minutes (20 attempts of ~40 s in Ray 2.60).
RAY_CONNECT_TIMEOUT_S = 5.0


class Backend(Protocol):
  """Runs jobs ``fn(*args, devices=[...], **kwargs)`` and returns their futures."""

  name: str  # "local" or "ray"
  capacity: int  # jobs it runs at once

  def submit(self, fn: Callable[..., Any], /, *args: Any,
             **kwargs: Any) -> concurrent.futures.Future:
    """Queues a job; its future holds the job's return value or raises its exception."""

  def cancel(self, future: concurrent.futures.Future) -> bool:
    """Cancels a job that has not finished; ``True`` when its future is now cancelled."""

  def close(self) -> None:
    """Waits for the submitted jobs and frees the workers."""


class _ContextManager:
  """``with backend: ...`` closes it; an exception leaving the block cancels the queued jobs."""

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.close(cancel_futures=exc_type is not None)


def _describe(devices: Sequence[jax.Device]) -> str:
  kinds: dict[str, int] = {}
  for d in devices:
    kinds[d.device_kind] = kinds.get(d.device_kind, 0) + 1
  return ", ".join(f"{n} x {kind}" for kind, n in kinds.items()) or "none"


class LocalBackend(_ContextManager):
  """Jobs on this process's devices, one worker thread per slot of ``devices_per_job`` devices.

  The devices are cut into ``len(devices) // devices_per_job`` consecutive slots (left-over devices
  are not used). A worker takes a free slot for each job and runs it with that slot's devices as
  ``devices=`` and under ``jax.default_device(slot[0])`` (thread-local), so unsharded arrays of the
  job land on its own devices; the slot is freed when the job returns or raises.

  Args:
    devices: the devices to use; ``None``: ``jax.local_devices()``.
    devices_per_job: devices of one slot (the data-parallel width of one job).

  Raises:
    ConfigError: ``devices_per_job`` is not in ``[1, len(devices)]``.
  """

  name = "local"

  def __init__(self, devices: Sequence[jax.Device] | None = None, devices_per_job: int = 1):
    devices = list(jax.local_devices() if devices is None else devices)
    if not 1 <= devices_per_job <= len(devices):
      raise ConfigError("devices_per_job", f"must be in [1, {len(devices)}] (the devices used: "
                        f"{_describe(devices)}), got {devices_per_job}")
    n_slots = len(devices) // devices_per_job
    if n_slots * devices_per_job < len(devices):
      _log.warning("%d of %d devices are not used: %d devices per job", len(devices) - n_slots *
                   devices_per_job, len(devices), devices_per_job)
    self.devices_per_job = devices_per_job
    self.slots: tuple[tuple[jax.Device, ...], ...] = tuple(
        tuple(devices[i * devices_per_job:(i + 1) * devices_per_job]) for i in range(n_slots))
    self.capacity = n_slots
    # As many workers as slots, so a worker always finds a free slot and never waits for one.
    self._free: queue.SimpleQueue[tuple[jax.Device, ...]] = queue.SimpleQueue()
    for slot in self.slots:
      self._free.put(slot)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=n_slots,
                                                       thread_name_prefix="cenas-local-job")

  def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    slot = self._free.get_nowait()
    try:
      with jax.default_device(slot[0]):
        return fn(*args, devices=list(slot), **kwargs)
    finally:
      self._free.put(slot)

  def submit(self, fn: Callable[..., Any], /, *args: Any,
             **kwargs: Any) -> concurrent.futures.Future:
    """Queues ``fn(*args, devices=<a slot's devices>, **kwargs)``.

    Raises:
      RuntimeError: the backend is closed.
    """
    return self._pool.submit(self._run, fn, args, kwargs)

  def cancel(self, future: concurrent.futures.Future) -> bool:
    """Cancels a queued job; a running or finished one is left alone (``False``)."""
    return future.cancel()

  def close(self, *, cancel_futures: bool = False) -> None:
    """Waits for the running jobs and, unless ``cancel_futures``, the queued ones; idempotent."""
    self._pool.shutdown(wait=True, cancel_futures=cancel_futures)


def make_local_backend(n_devices: int | None = None, *, devices_per_job: int = 1) -> LocalBackend:
  """A :class:`LocalBackend` on the first ``n_devices`` of ``jax.local_devices()``.

  Args:
    n_devices: how many local devices the search may use; ``None``: all of them.
    devices_per_job: devices of one job.

  Raises:
    ConfigError: the machine lacks ``n_devices`` devices (field ``n_devices``), or
      ``devices_per_job`` is not in ``[1, n_devices]``.
  """
  local = jax.local_devices()
  if n_devices is not None and not 1 <= n_devices <= len(local):
    raise ConfigError("n_devices", f"asked for {n_devices} devices but this machine has "
                      f"{len(local)} ({jax.default_backend()}: {_describe(local)}); use at most "
                      f"{len(local)}")
  return LocalBackend(local if n_devices is None else local[:n_devices],
                      devices_per_job=devices_per_job)


# --------------------------------------------------------------------------------------------------
# Ray


def _import_ray():
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError("backend", RAY_EXTRA_HINT) from e
  return ray


def _check_answers(address: str, timeout_s: float) -> None:
  """Raises ``ConfigError("ray_address")`` unless ``address`` (``[ray://]host:port``) takes a TCP
  connection within ``timeout_s``: ``ray.init`` would retry a dead address for many minutes."""
  hint = "start one with `ray start --head` or drop --ray_address to run locally"
  host, sep, port = address.removeprefix("ray://").rpartition(":")
  host = host.strip("[]")  # an IPv6 host is written [::1]:6379
  if not sep or not host or not port.isdigit():
    raise ConfigError("ray_address", f"expected host:port (e.g. 10.0.0.1:6379), 'auto' or "
                      f"ray://host:port, got {address!r}; {hint}")
  try:
    socket.create_connection((host, int(port)), timeout=timeout_s).close()
  except OSError as e:
    if isinstance(e, TimeoutError):
      reason = f"no answer within {timeout_s:g} s"
    else:
      reason = e.strerror or type(e).__name__
    raise ConfigError("ray_address", f"could not connect to Ray at {address}: {reason}; "
                      f"{hint}") from e


def _ray_job_devices() -> list[jax.Device]:
  """Inside a Ray task: the worker's JAX devices restricted to the GPUs Ray assigned to the task
  (its first CPU device when it got none)."""
  import ray  # pylint: disable=g-import-not-at-top
  gpu_ids = [str(i) for i in ray.get_gpu_ids()]
  if not gpu_ids:
    return [jax.devices("cpu")[0]]
  gpus = jax.local_devices(backend="gpu")
  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs, and a GPU task runs in a fresh worker
  # (max_calls=1), so JAX sees exactly them; with every GPU visible, JAX's ids are the physical
  # ones.
  if len(gpus) == len(gpu_ids):
    return gpus
  mine = [d for d in gpus if str(d.id) in gpu_ids]
  if len(mine) != len(gpu_ids):
    raise RuntimeError(f"Ray assigned GPUs {gpu_ids} (CUDA_VISIBLE_DEVICES="
                       f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}) but JAX sees {gpus}")
  return mine


def _run_ray_job(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
  """The body of every Ray task: the job on the task's devices."""
  devices = _ray_job_devices()
  with jax.default_device(devices[0]):
    return fn(*args, devices=devices, **kwargs)


def ray_job_size(resources: dict[str, float], num_gpus_per_job: int,
                 num_cpus_per_job: int) -> tuple[int, int]:
  """GPUs a Ray job asks for and how many such jobs the cluster runs at once.

  Args:
    resources: ``ray.cluster_resources()`` (``{"CPU": 16.0, "GPU": 8.0, ...}``).
    num_gpus_per_job: GPUs a job wants; on a cluster without GPUs the jobs ask for none.
    num_cpus_per_job: CPUs a job asks for.

  Returns:
    ``(gpus per job, capacity)``: capacity is GPUs // GPUs per job, bounded by CPUs // CPUs per
    job (CPUs // CPUs per job alone for CPU jobs).

  Raises:
    ConfigError: the cluster has fewer GPUs (but some) or CPUs than one job asks for.
  """
  gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
  if num_gpus_per_job and not gpus:
    _log.warning("the Ray cluster has no GPUs: jobs run on CPUs (%d of them)", cpus)
    num_gpus_per_job = 0
  if num_gpus_per_job > gpus:
    raise ConfigError("devices_per_job", f"a job asks for {num_gpus_per_job} GPUs but the Ray "
                      f"cluster has {gpus}")
  if num_cpus_per_job > cpus:
    raise ConfigError("num_cpus_per_job", f"a job asks for {num_cpus_per_job} CPUs but the Ray "
                      f"cluster has {cpus}")
  capacity = cpus // num_cpus_per_job
  if num_gpus_per_job:
    capacity = min(capacity, gpus // num_gpus_per_job)
  return int(num_gpus_per_job), capacity


def _cancel(future: concurrent.futures.Future) -> bool:
  """Cancels a future no executor runs, and notifies ``concurrent.futures.wait``/``as_completed``
  (which only count a cancelled future as done once notified)."""
  if not future.cancel():
    return False
  future.set_running_or_notify_cancel()
  return True


class RayBackend(_ContextManager):
  """Jobs as Ray tasks, each with ``num_gpus_per_job`` GPUs (or CPUs on a cluster without GPUs).

  Connects to the cluster at ``address`` (``ray.init(address=...)``) or, when ``address`` is
  ``None``, starts a local one (``ray.init()``); when Ray is already initialised in this process
  that connection is used as it is and left open by :meth:`close`. The workers must import
  ``cenas_jax`` and the job's module (install the package on every node, or give a ``runtime_env``
  to ``ray.init`` before making the backend); a job function from a script or a test module, which
  the workers cannot import, is sent by value after ``ray.cloudpickle.register_pickle_by_value``.

  ``capacity`` is read from ``ray.cluster_resources()`` when the backend is made: GPUs //
  ``num_gpus_per_job`` (bounded by CPUs // ``num_cpus_per_job``); on a cluster without GPUs the
  jobs ask for no GPU and capacity is CPUs // ``num_cpus_per_job``.

  Args:
    address: ``host:port`` of the head's GCS, ``ray://host:port`` or ``"auto"``; ``None``: local.
    num_gpus_per_job: GPUs of one job (a whole number: JAX preallocates most of a GPU's memory).
    num_cpus_per_job: CPUs of one job.
    connect_timeout_s: how long ``address`` may take to accept a connection.

  Raises:
    ConfigError: ray is not installed (field ``backend``); ``address`` does not answer (field
      ``ray_address``); the cluster has too few CPUs or GPUs for one job.
  """

  name = "ray"

  def __init__(self, address: str | None = None, num_gpus_per_job: int = 1,
               num_cpus_per_job: int = 1, *, connect_timeout_s: float = RAY_CONNECT_TIMEOUT_S):
    if int(num_gpus_per_job) != num_gpus_per_job or num_gpus_per_job < 0:
      raise ConfigError("devices_per_job", f"GPUs per Ray job must be a whole number >= 0, got "
                        f"{num_gpus_per_job}")
    if num_cpus_per_job < 1:
      raise ConfigError("num_cpus_per_job", f"must be >= 1, got {num_cpus_per_job}")
    ray = _import_ray()
    self._ray = ray
    if address and address != "auto":
      _check_answers(address, connect_timeout_s)
    self._owns_ray = not ray.is_initialized()
    if self._owns_ray:
      try:
        ray.init(address=address or None)
      except ConnectionError as e:  # it takes TCP connections but is no Ray head (~20 s in 2.60)
        raise ConfigError("ray_address", f"could not connect to Ray at {address}: {e}; start one "
                          "with `ray start --head` or drop --ray_address to run locally") from e
    resources = ray.cluster_resources()
    try:
      self.num_gpus_per_job, self.capacity = ray_job_size(resources, num_gpus_per_job,
                                                          num_cpus_per_job)
    except ConfigError:
      if self._owns_ray:
        ray.shutdown()
      raise
    self.num_cpus_per_job = int(num_cpus_per_job)
    # A GPU task gets a fresh worker (max_calls=1, Ray's default for GPU tasks, stated here because
    # _ray_job_devices relies on it): JAX then starts with only the task's GPUs visible.
    options: dict[str, Any] = dict(num_gpus=self.num_gpus_per_job, num_cpus=self.num_cpus_per_job)
    if self.num_gpus_per_job:
      options["max_calls"] = 1
    self._remote = ray.remote(**options)(_run_ray_job)
    self._refs: dict[concurrent.futures.Future, Any] = {}
    self._lock = threading.Lock()
    self._closed = False
    _log.info("Ray backend: %s, capacity %d (%d GPUs, %d CPUs per job)",
              resources, self.capacity, self.num_gpus_per_job, self.num_cpus_per_job)

  def submit(self, fn: Callable[..., Any], /, *args: Any,
             **kwargs: Any) -> concurrent.futures.Future:
    """Starts ``fn(*args, devices=<the task's devices>, **kwargs)`` as a Ray task.

    The future raises what the job raised (Ray's error is an instance of the job's exception
    class), or ``CancelledError`` after :meth:`cancel`.

    Raises:
      RuntimeError: the backend is closed.
    """
    if self._closed:
      raise RuntimeError("submit on a closed RayBackend")
    ref = self._remote.remote(fn, args, kwargs)
    outer: concurrent.futures.Future = concurrent.futures.Future()
    with self._lock:
      self._refs[outer] = ref

    def copy(inner: concurrent.futures.Future) -> None:
      with self._lock:
        self._refs.pop(outer, None)
      try:
        if inner.cancelled():
          _cancel(outer)
        elif inner.exception() is None:
          outer.set_result(inner.result())
        else:
          outer.set_exception(inner.exception())
      except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile

    ref.future().add_done_callback(copy)
    return outer

  def cancel(self, future: concurrent.futures.Future) -> bool:
    """Cancels a job that has not finished (``ray.cancel``): a queued task is dropped, a running one
    is interrupted (``KeyboardInterrupt`` in the task; Ray does this on a best-effort basis, and a
    task that misses it runs to its end with its result dropped). The idempotent job resumes from
    its last checkpoint when submitted again. ``False`` when the job had already finished."""
    with self._lock:
      ref = self._refs.get(future)
    if ref is None or not _cancel(future):
      return False
    self._ray.cancel(ref)
    return True

  def close(self, *, cancel_futures: bool = False) -> None:
    """Waits for the submitted jobs (or cancels them), then shuts down a Ray it started."""
    if self._closed:
      return
    self._closed = True
    with self._lock:
      pending = list(self._refs)
    if cancel_futures:
      for future in pending:
        self.cancel(future)
    concurrent.futures.wait(pending)
    if self._owns_ray:
      self._ray.shutdown()


def make_backend(name: str, *, n_devices: int | None = None, ray_address: str = "",
                 devices_per_job: int = 1) -> Backend:
  """The backend a binary's flags ask for.

  Args:
    name: ``"local"`` (this machine's devices) or ``"ray"``.
    n_devices: local only: how many local devices to use; ``None``: all.
    ray_address: ray only: the cluster's address; ``""``: start a local Ray.
    devices_per_job: devices (local) or GPUs (Ray) of one job.

  Raises:
    ConfigError: an unknown name, a flag of the other backend, or the backend's own refusals.
  """
  if name == "local":
    if ray_address:
      raise ConfigError("ray_address", "applies only with --backend=ray; drop it or pass "
                        "--backend=ray")
    return make_local_backend(n_devices, devices_per_job=devices_per_job)
  if name == "ray":
    if n_devices is not None:
      raise ConfigError("n_devices", "applies only with --backend=local (a Ray cluster's size is "
                        "its own); drop it")
    return RayBackend(ray_address or None, num_gpus_per_job=devices_per_job)
  raise ConfigError("backend", f"unknown backend {name!r}; use 'local' or 'ray'")

