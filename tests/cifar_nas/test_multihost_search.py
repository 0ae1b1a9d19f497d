"""The search over two JAX processes (``cifar_nas.multihost``): the supernet spans both processes'
devices, process 0 runs the loop, and the outputs equal one process's over the same 4 devices."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cenas_jax.cifar_nas import experiment
from multihost_search_worker import HOURS
from test_cifar_search import TINY

_WORKER = Path(__file__).with_name("multihost_search_worker.py")
_ROOT = Path(__file__).resolve().parents[2]
_DEVICES = 4  # 2 processes x 2 devices, or one process's first 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _comparable(workdir: Path) -> dict:
  summary = json.loads((workdir / "summary.json").read_text())
  for key in ("provenance", "wall_s", "config"):
    summary.pop(key, None)
  return summary


def test_two_processes_search_as_one_process_over_the_same_devices(tmp_path, shared_data):
  del shared_data
  port, workdir = _free_port(), tmp_path / "two"
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
  procs = [subprocess.Popen([sys.executable, str(_WORKER), str(i), str(port), str(workdir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=900)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("the two-process search did not finish in 900 s")
  assert all(p.returncode == 0 for p in procs), "\n".join(log[-4000:] for log in logs)
  assert "[0] returned a summary" in logs[0] and "[1] returned None" in logs[1]
  assert "[1] process 1: training the supernet with process 0 on 4 devices" in logs[1]
  assert "[1] process 1: scored" in logs[1]

  one = tmp_path / "one"
  experiment.run(dataclasses.replace(TINY, hours=HOURS, n_devices=_DEVICES), one, log=lambda line: None)
  assert _comparable(workdir) == _comparable(one)
  assert (workdir / "results.jsonl").read_text() == (one / "results.jsonl").read_text()
