"""Data parallelism across processes: two JAX processes of 4 CPU devices each take the same training
steps as one process of 8 devices (``jax.distributed`` over a local coordinator, gloo collectives)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import multihost_case as case
from cenas_jax.training import mesh as mesh_lib

_WORKER = Path(__file__).with_name("multihost_worker.py")
_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_take_the_same_steps_as_one_and_checkpoint_together(tmp_path):
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
  outs = [tmp_path / f"process{i}.json" for i in range(2)]
  ckpt = tmp_path / "checkpoints"
  procs = [subprocess.Popen([sys.executable, str(_WORKER), str(i), str(port), str(outs[i]), str(ckpt)],
                            env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("the two-process run did not finish in 600 s")
  assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
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
