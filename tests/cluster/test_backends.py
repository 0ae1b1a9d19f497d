"""Execution backends: the local slots and, when the ray extra is installed, Ray's local cluster."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.cluster import backends
from cenas_jax.errors import ConfigError
from cenas_jax.training import mesh as mesh_lib

_REPO = Path(__file__).resolve().parents[2]


def _sum_of_squares(x):
  return jnp.sum(x * x)


def _job(x, *, devices, log=None, barrier=None):
  """A tiny data-parallel computation on the job's devices; exact (integers) on any device count.

  ``log`` (local only) records which devices ran when; ``barrier`` makes the job wait for as many
  others as the barrier has parties, which proves they run at once.
  """
  start = time.perf_counter()
  if barrier is not None:
    barrier.wait(timeout=60)
  mesh = mesh_lib.make_data_mesh(devices=devices)
  batch = mesh_lib.shard_batch(np.arange(16, dtype=np.int32) + x, mesh)
  with jax.set_mesh(mesh):
    value = int(jax.jit(_sum_of_squares)(batch))
  default = jnp.zeros(()).devices()
  if log is not None:
    with log["lock"]:
      log["runs"].append((tuple(d.id for d in devices), start, time.perf_counter()))
  return {"x": x, "value": value, "n_devices": len(devices),
          "batch_devices": sorted(d.id for d in batch.sharding.device_set),
          "default_device": [d.id for d in default]}


def _expected(x):
  return int(np.sum((np.arange(16) + x) ** 2))


def _fail(message, *, devices):
  raise ValueError(message)


def _sleep(seconds, *, devices):
  time.sleep(seconds)
  return len(devices)


# --------------------------------------------------------------------------------------------------
# Local


def test_local_slots_run_jobs_on_their_own_devices_and_never_share_a_slot():
  log = {"lock": threading.Lock(), "runs": []}
  barrier = threading.Barrier(4)  # every generation of 4 jobs must run at once to pass it
  with backends.LocalBackend(jax.devices(), devices_per_job=2) as backend:
    assert backend.name == "local" and backend.capacity == 4
    assert [[d.id for d in s] for s in backend.slots] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    futures = [backend.submit(_job, x, log=log, barrier=barrier) for x in range(8)]
    results = [f.result(timeout=120) for f in futures]
  serial = [_job(x, devices=jax.devices()[:1]) for x in range(8)]
  assert [r["value"] for r in results] == [s["value"] for s in serial] == [_expected(x)
                                                                            for x in range(8)]
  slots = {tuple(d.id for d in s) for s in backend.slots}
  for r in results:
    assert r["n_devices"] == 2
    assert tuple(r["batch_devices"]) in slots  # the job's arrays live on its slot only
    assert r["default_device"] == r["batch_devices"][:1]  # jax.default_device(slot[0])
  runs = log["runs"]
  assert len(runs) == 8
  for i, (slot_a, start_a, end_a) in enumerate(runs):
    for slot_b, start_b, end_b in runs[i + 1:]:
      if slot_a == slot_b:
        assert end_a <= start_b or end_b <= start_a, "two jobs overlapped on one slot"


def test_local_job_exception_surfaces_and_the_slot_is_freed():
  with backends.LocalBackend(jax.devices()[:1]) as backend:
    with pytest.raises(ValueError, match="boom"):
      backend.submit(_fail, "boom").result(timeout=60)
    assert backend.submit(_job, 3).result(timeout=60)["value"] == _expected(3)


def test_local_cancel_drops_a_queued_job_but_not_a_running_one():
  started, release = threading.Event(), threading.Event()

  def blocking(*, devices):
    started.set()
    release.wait(timeout=60)
    return len(devices)

  with backends.LocalBackend(jax.devices()[:1]) as backend:
    running = backend.submit(blocking)
    assert started.wait(timeout=60)
    queued = backend.submit(_job, 1)
    assert backend.cancel(queued)
    assert not backend.cancel(running)
    release.set()
    assert running.result(timeout=60) == 1
  assert queued.cancelled()
  with pytest.raises(RuntimeError):
    backend.submit(_job, 1)


def test_make_local_backend_refuses_devices_the_machine_lacks():
  with pytest.raises(ConfigError) as e:
    backends.make_local_backend(9)
  assert e.value.field == "n_devices"
  assert e.value.message.startswith("asked for 9 devices but this machine has 8 (cpu: 8 x cpu)")
  for bad in (0, -1):
    with pytest.raises(ConfigError, match="n_devices"):
      backends.make_local_backend(bad)
  with pytest.raises(ConfigError) as e:
    backends.make_local_backend(2, devices_per_job=3)
  assert e.value.field == "devices_per_job"
  with backends.make_local_backend(5, devices_per_job=2) as backend:  # one device left over
    assert backend.capacity == 2
  with backends.make_backend("local") as backend:
    assert backend.capacity == 8


def test_make_backend_rejects_unknown_names_and_the_other_backends_flags():
  with pytest.raises(ConfigError, match="^backend: unknown backend 'slurm'"):
    backends.make_backend("slurm")
  with pytest.raises(ConfigError) as e:
    backends.make_backend("local", ray_address="10.0.0.1:6379")
  assert e.value.field == "ray_address"
  with pytest.raises(ConfigError) as e:
    backends.make_backend("ray", n_devices=2)
  assert e.value.field == "n_devices"


def test_ray_backend_without_the_extra_names_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
  with pytest.raises(ConfigError) as e:
    backends.make_backend("ray")
  assert (e.value.field, e.value.message) == (
      "backend", "--backend=ray needs the ray extra: pip install -e '.[ray]'")


def test_importing_the_backends_does_not_import_ray():
  code = "import sys, cenas_jax.cluster.backends; print('ray' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=_REPO, env={**os.environ, "PYTHONPATH": str(_REPO)})
  assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Ray (the optional extra)


def test_ray_job_size_counts_gpus_and_falls_back_to_cpus():
  assert backends.ray_job_size({"CPU": 64.0, "GPU": 8.0}, 1, 1) == (1, 8)
  assert backends.ray_job_size({"CPU": 64.0, "GPU": 8.0}, 2, 1) == (2, 4)
  assert backends.ray_job_size({"CPU": 4.0, "GPU": 8.0}, 1, 1) == (1, 4)  # CPUs bound it
  assert backends.ray_job_size({"CPU": 6.0}, 1, 2) == (0, 3)  # no GPUs: CPU jobs
  with pytest.raises(ConfigError, match="^devices_per_job: a job asks for 4 GPUs but the Ray "
                     "cluster has 2$"):
    backends.ray_job_size({"CPU": 8.0, "GPU": 2.0}, 4, 1)
  with pytest.raises(ConfigError, match="^num_cpus_per_job: "):
    backends.ray_job_size({"CPU": 2.0}, 0, 4)


def _import_ray_or_skip():
  ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
  # The workers unpickle the test's job functions by value: they cannot import this test module.
  ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
  return ray


def test_ray_backend_without_an_address_starts_a_local_ray_and_stops_it():
  ray = _import_ray_or_skip()
  if ray.is_initialized():
    pytest.skip("Ray is already initialised in this process")
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)  # see ray_cluster
    backend = backends.make_backend("ray")
  with backend:
    assert ray.is_initialized() and backend.capacity >= 1
    assert backend.submit(_sleep, 0).result(timeout=300) == 1
  assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_cluster():
  ray = _import_ray_or_skip()
  # The workers inherit this process's environment (PYTHONPATH, JAX_PLATFORMS, 8 CPU devices).
  # Ray starts its daemons with fork + exec, which JAX's fork warning does not concern.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024)
  yield ray
  ray.shutdown()


def test_ray_gives_the_same_results_as_local(ray_cluster):
  with backends.RayBackend(num_gpus_per_job=1) as backend:  # no GPUs here: CPU jobs
    assert backend.name == "ray" and backend.capacity == 2 and backend.num_gpus_per_job == 0
    results = [f.result(timeout=300) for f in [backend.submit(_job, x) for x in range(8)]]
  with backends.LocalBackend(jax.devices(), devices_per_job=2) as local:
    expected = [f.result(timeout=120) for f in [local.submit(_job, x) for x in range(8)]]
  assert [r["value"] for r in results] == [r["value"] for r in expected]
  for r in results:
    assert (r["n_devices"], r["batch_devices"], r["default_device"]) == (1, [0], [0])
  assert ray_cluster.is_initialized()  # a Ray it did not start is left running


def test_ray_job_exception_surfaces_and_cancel_drops_a_queued_job(ray_cluster):
  with backends.RayBackend() as backend:
    with pytest.raises(ValueError, match="boom"):
      backend.submit(_fail, "boom").result(timeout=300)
    # Short sleeps: Ray interrupts a running task on a best-effort basis (a cancel that meets the
    # task while it is being started is lost, and the task then runs to its end).
    blockers = [backend.submit(_sleep, 3) for _ in range(backend.capacity)]
    queued = backend.submit(_job, 1)
    assert backend.cancel(queued) and queued.cancelled()
    assert all(backend.cancel(f) for f in blockers)  # running or about to: interrupted
    done, _ = concurrent.futures.wait([queued, *blockers], timeout=10)
    assert len(done) == 1 + len(blockers)
    with pytest.raises(concurrent.futures.CancelledError):
      queued.result(timeout=1)
    # The cancelled jobs free their CPUs: a new job runs.
    assert backend.submit(_job, 2).result(timeout=300)["value"] == _expected(2)


def test_ray_dead_address_fails_fast_with_a_config_error():
  pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
  start = time.perf_counter()
  with pytest.raises(ConfigError) as e:
    backends.make_backend("ray", ray_address="127.0.0.1:1")
  assert time.perf_counter() - start < backends.RAY_CONNECT_TIMEOUT_S + 1
  assert e.value.field == "ray_address"
  assert e.value.message.startswith("could not connect to Ray at 127.0.0.1:1: Connection refused;")
  assert e.value.message.endswith("start one with `ray start --head` or drop --ray_address to run "
                                  "locally")
