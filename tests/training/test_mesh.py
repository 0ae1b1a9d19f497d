"""Tests for cenas_jax.training.mesh: the explicit 1-D data mesh, batch sharding, process helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from cenas_jax.training import mesh as mesh_lib


def test_conftest_gives_eight_cpu_devices():
  assert jax.device_count() == 8 and jax.devices()[0].platform == "cpu"


def test_data_mesh_is_one_explicit_axis():
  mesh = mesh_lib.make_data_mesh()
  assert mesh.axis_names == ("data",) and mesh.axis_types == (AxisType.Explicit,)
  assert mesh_lib.data_size(mesh) == 8
  assert mesh_lib.data_size(mesh_lib.make_data_mesh(1)) == 1
  with pytest.raises(ValueError, match=r"num_devices must be in \[1, 8\]"):
    mesh_lib.make_data_mesh(9)


def test_shard_batch_splits_rows_and_replicate_copies():
  mesh = mesh_lib.make_data_mesh()
  batch = {"x": np.arange(32.0).reshape(16, 2), "y": np.arange(16)}
  sharded = mesh_lib.shard_batch(batch, mesh)
  assert sharded["x"].sharding.spec == P("data")
  assert {s.data.shape for s in sharded["x"].addressable_shards} == {(2, 2)}
  np.testing.assert_array_equal(sharded["y"], batch["y"])
  params = mesh_lib.replicate({"w": jnp.ones((3,))}, mesh)
  assert params["w"].sharding.is_fully_replicated
  assert len(params["w"].addressable_shards) == 8
  assert str(jax.typeof(sharded["x"])) == "float32[16@data,2]"  # the sharding is in the type
  with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
    mesh_lib.shard_batch({"x": np.zeros((12, 2))}, mesh)
  with pytest.raises(ValueError, match="same leading"):
    mesh_lib.shard_batch({"x": np.zeros((8, 2)), "y": np.zeros(16)}, mesh)


def test_single_process_helpers_and_no_distributed_init_without_coordinator(monkeypatch):
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert mesh_lib.initialize_distributed(None) is False
  assert mesh_lib.initialize_distributed("") is False
  assert not called
  assert mesh_lib.process_index() == 0 and mesh_lib.process_count() == 1
  assert mesh_lib.is_main_process()
  assert mesh_lib.initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=1) is True
  assert called == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]
