"""The CIFAR-10 search on many hosts: one supernet over every host's devices, one search loop.

Every host runs the same command with ``--coordinator_address`` (process 0's ``host:port``),
``--num_processes`` and ``--process_id``; ``jax.distributed`` joins them (``join``). Then:

- **Process 0 runs the search** as on one host: the agent, LaMOO, the ledger, the hourly
  checkpoint, the outputs. Its evaluation jobs run on its backend: its own devices (``local``), or
  Ray's workers on any host (``ray``).
- **The supernet is data-parallel over every process's devices.** All processes train it together
  (each process's devices take their rows of every global batch; its checkpoint is written together,
  so the workdir must be on storage every host sees) and score every proposal together.
- **The other processes follow** (``follow``): they wait for process 0's messages in the
  coordination service's key-value store, which costs no device time (a collective would keep their
  accelerators spinning through the hours process 0 spends on evaluation): ``supernet`` (train it),
  ``score`` (these genotypes), ``stop``.

Only process 0 writes results. The loop's decisions depend on the scores alone, which every process
computes from the same global arrays, so a follower never needs the search state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from cenas_jax.errors import CenasError, ConfigError

_PREFIX = "cenas_jax/cifar_search"
# How long one wait in the key-value store lasts before it is renewed (ms); a follower waits as long
# as process 0 works, so this only bounds each call.
_WAIT_MS = 10 * 60 * 1000


def join(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """``jax.distributed.initialize`` unless this process already joined; one clear error otherwise."""
  import jax

  from cenas_jax.training import mesh as mesh_lib

  if not coordinator_address or jax.distributed.is_initialized():
    return
  try:
    mesh_lib.initialize_distributed(coordinator_address, num_processes=num_processes or None,
                                    process_id=None if process_id < 0 else process_id)
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise ConfigError("coordinator_address", f"could not join the run at {coordinator_address} "
                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class Channel:
  """Messages from process 0 to every other process, numbered, in the coordination service's
  key-value store (``post`` on process 0, ``receive`` in the others, in the same order)."""

  def __init__(self, prefix: str = _PREFIX):
    import orbax.checkpoint as ocp

    self._client = ocp.multihost.get_jax_distributed_client()
    self._prefix, self._n = prefix, 0

  def post(self, op: str, **payload: Any) -> None:
    self._client.key_value_set(f"{self._prefix}/{self._n}", json.dumps({"op": op, **payload}))
    self._n += 1

  def receive(self) -> dict[str, Any]:
    key = f"{self._prefix}/{self._n}"
    while True:
      try:
        message = json.loads(self._client.blocking_key_value_get(key, _WAIT_MS))
        break
      except Exception as e:  # pylint: disable=broad-exception-caught
        if "DEADLINE_EXCEEDED" not in str(e):  # a timeout: process 0 is still working
          raise
    self._n += 1
    return message


def leading(channel: Channel | None, score_fn: Callable | None) -> Callable | None:
  """Process 0's ``score_fn``: posts the genotypes, then scores them with the followers."""
  if channel is None or score_fn is None:
    return score_fn

  def score(genotypes):
    channel.post("score", genotypes=[g.to_json() for g in genotypes])
    return score_fn(genotypes)

  return score


def follow(config, workdir: str | Path, log: Callable[[str], None] = print) -> None:
  """A process other than 0: trains and scores the supernet with process 0 until it stops."""
  import jax

  from cenas_jax.cifar_nas import jobs as jobs_lib
  from cenas_jax.cifar_nas import sampling
  from cenas_jax.spaces import darts as space

  me = jax.process_index()
  channel = Channel()
  message = channel.receive()
  if message["op"] == "supernet":
    split = jobs_lib.load_split(jobs_lib.resolve(config.data))
    mesh = sampling.supernet_mesh(config)
    log(f"process {me}: training the supernet with process 0 on {mesh.devices.size} devices")
    nets, _ = sampling.train_supernets(config, split, Path(workdir).expanduser(), mesh,
                                       log=lambda line: None)
    score_fn = sampling.make_score_fn(config, split, nets, mesh)
    scored = 0
    while (message := channel.receive())["op"] == "score":
      score_fn([space.Genotype.from_json(g) for g in message["genotypes"]])
      scored += len(message["genotypes"])
    log(f"process {me}: scored {scored} proposals with process 0")
  if message["op"] != "stop":
    raise RuntimeError(f"process {me}: unexpected message {message['op']!r} from process 0")
  if message.get("error"):
    raise CenasError(f"process 0 stopped: {message['error']}")
