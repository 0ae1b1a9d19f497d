"""One process of the two-process data-parallel check in ``test_multihost.py`` (not a test module).

  python tests/training/multihost_worker.py PROCESS_ID PORT OUT_JSON CHECKPOINT_DIR

Joins a 2-process JAX run on 127.0.0.1:PORT with 4 CPU devices per process (gloo collectives),
takes two training steps of a small DARTS network on a fixed 16-image global batch (each process's
devices take their rows), saves the state in CHECKPOINT_DIR (every process calls the same
``Checkpointer``) and restores it, and writes the losses, the parameters it ends with and whether
the restored state equals them to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import sys

import jax

PROCESSES, LOCAL_DEVICES = 2, 4


def main() -> None:
  pid, port, out, ckpt_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # pylint: disable=import-outside-toplevel
  from cenas_jax.training import mesh as mesh_lib
  mesh_lib.initialize_distributed(f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=pid)
  import numpy as np

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import multihost_case as case
  mesh = mesh_lib.make_data_mesh()
  assert mesh_lib.data_size(mesh) == PROCESSES * LOCAL_DEVICES
  losses, state = case.train(mesh, case.batches())  # every process passes the global batches
  from cenas_jax.training.checkpoint import Checkpointer
  with Checkpointer(ckpt_dir, processes=mesh_lib.mesh_processes(mesh)) as ckpt:
    ckpt.save(2, state, {"losses": losses})
    restored = ckpt.restore(target=state)
  def local(s):  # this process's copy of every leaf (the state is replicated)
    leaves = jax.tree.leaves((s.params, s.opt_state, s.model_state, jax.random.key_data(s.rng)))
    return [np.asarray(a.addressable_data(0)) for a in leaves]

  saved, back = local(state), local(restored.state)
  same = len(saved) == len(back) and all(np.array_equal(a, b) for a, b in zip(saved, back))
  local = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)).tolist(), state.params)
  with open(out, "w") as f:
    json.dump({"losses": losses, "params": local, "process_count": mesh_lib.process_count(),
               "devices": jax.device_count(), "restored_equal": same,
               "restored_side_state": restored.side_state}, f)


if __name__ == "__main__":
  main()
