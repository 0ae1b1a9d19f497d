"""Data parallelism across processes: two JAX processes of 4 CPU devices each take the same training
steps as one process of 8 devices (``jax.distributed`` over a local coordinator, gloo collectives)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import multihost_case as case
from cenas_jax.training import mesh as mesh_lib
from jax_processes import run_jax_processes

_WORKER = Path(__file__).with_name("multihost_worker.py")


def test_two_processes_take_the_same_steps_as_one_and_checkpoint_together(tmp_path):
  outs = [tmp_path / f"process{i}.json" for i in range(2)]
  ckpt = tmp_path / "checkpoints"
  run_jax_processes(_WORKER, [[str(out), str(ckpt)] for out in outs], timeout_s=600,
                    env={"JAX_NUM_CPU_DEVICES": "4"})
  runs = [json.loads(o.read_text()) for o in outs]
  assert [r["process_count"] for r in runs] == [2, 2] and [r["devices"] for r in runs] == [8, 8]

  assert all(r["restored_equal"] for r in runs)
  assert [r["restored_side_state"]["losses"] for r in runs] == [runs[0]["losses"]] * 2
  losses, state = case.train(mesh_lib.make_data_mesh(8), case.batches())
  reference = jax.tree.leaves(jax.device_get(state.params))
  for run in runs:
    assert run["losses"] == pytest.approx(losses, rel=1e-5)
    got = jax.tree.leaves(run["params"], is_leaf=lambda x: isinstance(x, list))
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
      np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=2e-4, atol=1e-5)
