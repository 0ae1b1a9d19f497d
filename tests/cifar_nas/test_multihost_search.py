"""The search over two JAX processes (``cifar_nas.multihost``): the supernet spans both processes'
devices, process 0 runs the loop, and the outputs equal one process's over the same 4 devices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cenas_jax.cifar_nas import experiment
from jax_processes import run_jax_processes
from multihost_search_worker import HOURS
from test_cifar_search import TINY

_WORKER = Path(__file__).with_name("multihost_search_worker.py")
_DEVICES = 4  # 2 processes x 2 devices, or one process's first 4


def _comparable(workdir: Path) -> dict:
  summary = json.loads((workdir / "summary.json").read_text())
  for key in ("provenance", "wall_s", "config"):
    summary.pop(key, None)
  return summary


def test_two_processes_search_as_one_process_over_the_same_devices(tmp_path, shared_data):
  del shared_data
  workdir = tmp_path / "two"
  logs = run_jax_processes(_WORKER, [[str(workdir)]] * 2, timeout_s=900)
  assert "[0] returned a summary" in logs[0] and "[1] returned None" in logs[1]
  assert "[1] process 1: training the supernet with process 0 on 4 devices" in logs[1]
  assert "[1] process 1: scored" in logs[1]

  one = tmp_path / "one"
  experiment.run(dataclasses.replace(TINY, hours=HOURS, n_devices=_DEVICES), one, log=lambda line: None)
  assert _comparable(workdir) == _comparable(one)
  assert (workdir / "results.jsonl").read_text() == (one / "results.jsonl").read_text()
