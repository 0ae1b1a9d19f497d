"""Training jobs advanced in segments (``train_until``) and exported networks (``export``)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from cenas_jax.data import augment
from cenas_jax.errors import DataError, WorkdirError
from cenas_jax.spaces import darts
from cenas_jax.training import cifar, export
from cenas_jax.training import mesh as mesh_lib

# 64 training images in batches of 8 over 2 epochs: 16 steps, 8 per epoch. Drop-path, cutout and
# the auxiliary head are on, so the split must carry the drop-path schedule and every key.
TINY = dataclasses.replace(cifar.SMOKE_RECIPE, epochs=2, batch_size=8, init_channels=2, layers=3,
                           learning_rate=0.05, eval_batch_size=32, drop_path_prob=0.2, cutout_length=8,
                           auxiliary_weight=0.4)
# Cheap to compile: pools and skips only (the stem, preprocessing, classifier and head still learn).
LIGHT = darts._g([("skip_connect", 0), ("max_pool_3x3", 1)] * 4,  # pylint: disable=protected-access
                 [("avg_pool_3x3", 0), ("skip_connect", 1)] * 4)
SEED = 3


@dataclasses.dataclass
class Data:
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def make_data() -> Data:
  rng = np.random.default_rng(0)
  return Data(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.int32),
              rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32).astype(np.int32))


def _mesh():
  return mesh_lib.make_data_mesh(1)


def _segment_killed_in_a_fresh_process(workdir: Path, stop_step: int) -> subprocess.CompletedProcess:
  """Runs ``train_until`` in a new interpreter and kills it (SIGKILL) at its first epoch line."""
  code = textwrap.dedent(f"""
      import os, signal, sys
      sys.path.insert(0, {str(Path(__file__).parent)!r})
      import test_train_jobs as t
      from cenas_jax.training import cifar

      def kill_at_epoch_end(line):
        if line.startswith("epoch "):
          os.kill(os.getpid(), signal.SIGKILL)

      cifar.train_until(t.LIGHT, t.make_data(), t.TINY, seed=t.SEED, workdir={str(workdir)!r},
                        stop_step={stop_step}, mesh=t._mesh(), log=kill_at_epoch_end)
  """)
  root = Path(__file__).resolve().parents[2]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same job as segments [0,3] [3,5] [5,8 killed] [8,11] [11,16], as one call, and as
  ``train_network``; the segments' progress is kept."""
  data = make_data()
  split_dir = tmp_path_factory.mktemp("split")
  one_dir = tmp_path_factory.mktemp("one")
  progress, lines = [], []
  for stop in (3, 5):
    progress.append(cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=split_dir, stop_step=stop,
                                      mesh=_mesh(), log=lines.append))
  # Segment [5, 11] in a fresh process, killed -9 right after the epoch-end checkpoint at step 8.
  proc = _segment_killed_in_a_fresh_process(split_dir, 11)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
  for stop in (11, 16):
    progress.append(cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=split_dir, stop_step=stop,
                                      mesh=_mesh(), log=lines.append))
  one = cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=one_dir, stop_step=10**6, mesh=_mesh(),
                          log=None)
  network = cifar.train_network(LIGHT, data, TINY, seed=SEED, mesh=_mesh(), log=None)
  return {"data": data, "split_dir": split_dir, "progress": progress, "lines": lines, "one": one,
          "network": network}


def _leaves(state):
  return jax.tree.leaves(jax.device_get((state.params, state.model_state, state.opt_state,
                                         jax.random.key_data(state.rng), state.step)))


def test_total_steps_and_job_dirs():
  data = make_data()
  assert cifar.total_steps(data, TINY) == 16 and cifar.steps_per_epoch(data, TINY) == 8
  root = Path("/jobs")
  a = cifar.job_dir(root, LIGHT, TINY, 0)
  assert a == cifar.job_dir(root, LIGHT, TINY, 0) and a.parent == root and a.name.endswith("-seed0")
  others = {cifar.job_dir(root, LIGHT, TINY, 1), cifar.job_dir(root, darts.get_genotype("DARTS_V2"), TINY, 0),
            cifar.job_dir(root, LIGHT, dataclasses.replace(TINY, epochs=3), 0)}
  assert a not in others and len(others) == 3
  with pytest.raises(ValueError, match="fewer than one batch"):
    cifar.total_steps(dataclasses.replace(data, x_train=data.x_train[:7]), TINY)


def test_segments_progress_and_stop_where_asked(runs):
  p3, p5, p11, p16 = runs["progress"]
  assert [(p.step, p.steps_run, p.finished) for p in runs["progress"]] == [
      (3, 3, False), (5, 2, False), (11, 3, False), (16, 5, True)]  # [8, 11] after the kill at 8
  assert p3.test_accuracy is None and p3.test_loss is None and p3.history == () and p5.total_steps == 16
  assert [h["epoch"] for h in p11.history] == [1] and [h["epoch"] for h in p16.history] == [1, 2]
  assert 0.0 <= p16.test_accuracy <= 1.0 and np.isfinite(p16.test_loss)
  assert p16.n_params == darts.count_params(LIGHT, 2, 3)
  assert any(line.startswith("epoch 2/2") for line in runs["lines"])
  # Bounded: the newest JOB_MAX_TO_KEEP checkpoints only.
  steps = sorted(int(p.name) for p in (runs["split_dir"] / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [11, 16] and len(steps) == cifar.JOB_MAX_TO_KEEP


def test_any_split_is_bitwise_one_call_and_train_network(runs):
  split, one, network = runs["progress"][-1], runs["one"], runs["network"]
  assert one.step == 16 and one.steps_run == 16 and one.finished
  for a, b, c in zip(_leaves(split.state), _leaves(one.state), _leaves(network.state), strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  assert split.test_accuracy == one.test_accuracy == network.test_accuracy
  assert split.test_loss == one.test_loss == network.test_loss
  assert split.history == one.history
  for h, n in zip(split.history, network.history, strict=True):
    assert (h["train_loss"], h["train_accuracy"]) == (n["train_loss"], n["train_accuracy"])


def test_train_until_is_idempotent(runs, tmp_path):
  data, where = runs["data"], runs["split_dir"]
  before = sorted(os.listdir(where / "checkpoints"))
  for stop in (5, 16, 40):
    again = cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=where, stop_step=stop, mesh=_mesh(), log=None)
    assert (again.step, again.steps_run, again.finished) == (16, 0, True)
    assert again.test_accuracy == runs["network"].test_accuracy and again.history == runs["progress"][-1].history
  assert sorted(os.listdir(where / "checkpoints")) == before
  first = cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=tmp_path, stop_step=2, mesh=_mesh(), log=None)
  second = cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=tmp_path, stop_step=2, mesh=_mesh(), log=None)
  assert (first.steps_run, second.steps_run, second.step) == (2, 0, 2)
  for a, b in zip(_leaves(first.state), _leaves(second.state), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="stop_step"):
    cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=tmp_path, stop_step=-1)


def test_a_job_directory_holds_one_job(runs, tmp_path):
  data = runs["data"]
  with pytest.raises(WorkdirError, match="seed"):
    cifar.train_until(LIGHT, data, TINY, seed=SEED + 1, workdir=runs["split_dir"], stop_step=16)
  with pytest.raises(WorkdirError, match="recipe"):
    cifar.train_until(LIGHT, data, dataclasses.replace(TINY, epochs=3), seed=SEED,
                      workdir=runs["split_dir"], stop_step=16)
  (tmp_path / "notes.txt").write_text("someone else's")
  with pytest.raises(WorkdirError, match="not a training job"):
    cifar.train_until(LIGHT, data, TINY, seed=SEED, workdir=tmp_path, stop_step=16)


def test_export_load_round_trip_gives_the_same_logits(runs, tmp_path):
  data, trained = runs["data"], runs["progress"][-1]
  metrics = {"test_accuracy": trained.test_accuracy, "n_params": trained.n_params}
  where = export.export_network(tmp_path / "net", LIGHT, TINY, trained.state, metrics)
  assert sorted(os.listdir(where)) == ["genotype.json", "metrics.json", "recipe.json", "variables.msgpack"]
  assert darts.Genotype.from_json((where / "genotype.json").read_text()) == LIGHT
  assert export.read_metrics(where) == metrics
  model, variables = export.load_network(where)
  assert model == cifar.make_model(LIGHT, TINY)
  x = augment.normalize(data.x_test)
  logits, aux = model.apply(variables, x, train=False)
  state = jax.device_get(trained.state)
  reference, _ = model.apply({"params": state.params, **state.model_state}, x, train=False)
  assert aux is None
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(reference))
  accuracy = float(np.mean(np.argmax(logits, -1) == data.y_test))
  assert accuracy == pytest.approx(trained.test_accuracy, abs=1e-6)


def test_load_network_names_the_bad_file(runs, tmp_path):
  where = export.export_network(tmp_path / "net", LIGHT, TINY, runs["progress"][-1].state, {})
  (where / "variables.msgpack").write_bytes((where / "variables.msgpack").read_bytes()[:100])
  with pytest.raises(DataError, match="variables.msgpack: corrupt"):
    export.load_network(where)
  # Another genotype's network has other arrays.
  (where / "genotype.json").write_text(json.dumps(darts.get_genotype("DARTS_V2").to_json()))
  export.export_network(tmp_path / "other", LIGHT, TINY, runs["progress"][-1].state, {})
  (where / "variables.msgpack").write_bytes((tmp_path / "other" / "variables.msgpack").read_bytes())
  with pytest.raises(DataError, match="variables.msgpack: its arrays do not match"):
    export.load_network(where)
  (where / "genotype.json").write_text("{not json")
  with pytest.raises(DataError, match="genotype.json"):
    export.load_network(where)
  (where / "recipe.json").unlink()
  (where / "genotype.json").write_text(json.dumps(LIGHT.to_json()))
  with pytest.raises(DataError, match="recipe.json: missing"):
    export.load_network(where)
