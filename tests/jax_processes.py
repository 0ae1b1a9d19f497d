"""Starts the processes of a local multi-process JAX run for a test (not a test module)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


def run_jax_processes(worker: Path, args: list[list[str]], *, timeout_s: float,
                      env: dict[str, str] | None = None) -> list[str]:
  """Runs ``python worker PROCESS_ID PORT *args[PROCESS_ID]`` for every process, with a free local
  port for the coordinator, and returns their outputs; fails the test (with every process's last
  output) when one fails or they do not finish in ``timeout_s``."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {}),
         "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
  procs = [subprocess.Popen([sys.executable, str(worker), str(i), str(port), *a], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i, a in enumerate(args)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=timeout_s)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f"the {len(procs)}-process run did not finish in {timeout_s:.0f} s")
  if any(p.returncode for p in procs):
    pytest.fail("\n".join(log[-4000:] for log in logs))
  return logs
