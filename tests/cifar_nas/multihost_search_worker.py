"""One process of the two-process search in ``test_multihost_search.py`` (not a test module).

  python tests/cifar_nas/multihost_search_worker.py PROCESS_ID PORT WORKDIR

Runs ``test_cifar_search.TINY`` (3 hours) as process PROCESS_ID of a 2-process search on 127.0.0.1:PORT with 2
CPU devices per process (gloo collectives): the supernet spans the 4 devices; process 0 runs the
search and writes WORKDIR's outputs.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax

PROCESSES, LOCAL_DEVICES, HOURS = 2, 2, 3


def main() -> None:
  pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  # pylint: disable=import-outside-toplevel
  from test_cifar_search import TINY

  from cenas_jax.cifar_nas import experiment
  config = dataclasses.replace(TINY, hours=HOURS, n_devices=LOCAL_DEVICES,
                               coordinator_address=f"127.0.0.1:{port}", num_processes=PROCESSES,
                               process_id=pid)
  out = experiment.run(config, workdir, log=lambda line: print(f"[{pid}] {line}", flush=True))
  print(f"[{pid}] returned {'a summary' if out is not None else 'None'}", flush=True)


if __name__ == "__main__":
  main()
