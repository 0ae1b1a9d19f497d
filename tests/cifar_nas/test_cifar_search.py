"""``cifar_nas.experiment.run`` end to end at toy scale: real supernet, real training jobs on the
local backend, real prices; interrupted at two moments and resumed to the same summary.json."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cenas_jax.cifar_nas import experiment, jobs
from cenas_jax.cifar_nas.config import CifarSearchConfig, NetworkSettings, SupernetSettings
from cenas_jax.cluster import backends
from cenas_jax.errors import CenasError, ConfigError

TINY = CifarSearchConfig(
    strategy="heuristic", seed=0,
    cifar_path="shared:cifar10_subset/cifar-10-python-subset.tar.gz",
    train_images=64, valid_images=32, test_images=32,
    network=NetworkSettings(init_channels=2, layers=3, epochs=1, batch_size=16, learning_rate=0.05,
                            cutout_length=0, drop_path_prob=0.0, auxiliary_weight=0.0),
    supernet=SupernetSettings(supernet_channels=2, supernet_layers=3, supernet_epochs=1,
                              supernet_batch_size=16, calib_batches=1),
    hours=5, n_gpus=2, n_init=1, hour_s=0.004, candidates_per_hour=20, queue_capacity=2, n_devices=1)


class Interrupt(Exception):
  pass


class StopAfter:
  """A local backend that raises (as a kill would stop the process) at its n-th job batch."""

  def __init__(self, n: int):
    self.inner = backends.make_local_backend(1)
    self.name, self.capacity, self.left = "local", self.inner.capacity, n

  def submit(self, fn, *args, **kwargs):
    self.left -= 1
    if self.left < 0:
      raise Interrupt()
    return self.inner.submit(fn, *args, **kwargs)

  def cancel(self, future):
    return self.inner.cancel(future)

  def close(self):
    self.inner.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared_data):
  del shared_data
  wd = tmp_path_factory.mktemp("cifar") / "run"
  summary = experiment.run(TINY, wd, log=lambda line: None)
  return wd, summary


def _summary(wd):
  s = json.loads((wd / "summary.json").read_text())
  s.pop("provenance")
  return s


def test_search_trains_scores_and_writes_everything(finished):
  wd, summary = finished
  assert summary["n_trained"] >= 2 and summary["n_scored"] >= 1
  for name in ("summary.json", "summary.md", "results.jsonl", "pareto.csv", "pareto.png",
               "hv_vs_hours.png", "hv_vs_carbon.png", "allocation.png", "prices.json"):
    assert (wd / name).is_file(), name
  rows = [json.loads(line) for line in (wd / "results.jsonl").read_text().splitlines()]
  assert [r["hour"] for r in rows] == list(range(1, TINY.hours + 1))
  assert all(r["n_train"] + r["n_sample"] <= TINY.n_gpus for r in rows)
  assert summary["carbon_g"]["full"] > summary["carbon_g"]["paper"] > 0
  assert summary["carbon_lbs"]["full"] == pytest.approx(summary["carbon_g"]["full"] / 453.59237)
  front = summary["pareto"]
  assert front and all(0 < r["cifar10_test_acc_pct"] <= 100 and r["params_m"] > 0 for r in front)
  assert "predicted" in summary["provenance_of_numbers"]["energy_kwh"]


def test_exported_architecture_loads_in_one_call(finished):
  from cenas_jax.data import cifar10
  from cenas_jax.training import export

  wd, summary = finished
  best = summary["pareto"][0]
  model, variables = export.load_network(wd / best["exported"])
  data = cifar10.load_cifar10(jobs.resolve(TINY.data).path)
  x = data.x_test[:TINY.test_images]
  from cenas_jax.data import augment

  logits = model.apply(variables, augment.normalize(x), train=False)
  logits = logits[0] if isinstance(logits, tuple) else logits
  acc = float(np.mean(np.argmax(logits, -1) == data.y_test[:TINY.test_images]))
  assert 100 * acc == pytest.approx(best["cifar10_test_acc_pct"], abs=1e-4)


def test_interrupted_twice_resumes_to_the_same_summary(finished, tmp_path):
  wd_done, _ = finished
  wd = tmp_path / "run"
  for n in (0, 3):  # during the initial training, then in a later hour
    with pytest.raises(Interrupt):
      experiment.run(TINY, wd, backend=StopAfter(n), log=lambda line: None)
  experiment.run(TINY, wd, log=lambda line: None)
  assert _summary(wd) == _summary(wd_done)
  # A finished run is not redone.
  assert experiment.run(TINY, wd, log=lambda line: None)["n_trained"] == _summary(wd)["n_trained"]


@pytest.mark.parametrize("change, field", [
    (dict(include_genotypes=("DARTS_V9",)), "include_genotypes"),
    (dict(start="2019-01-01T00:00:00+00:00"), "start"),
    (dict(n_devices=99), "n_devices"),
])
def test_bad_input_is_one_error_and_leaves_the_workdir_untouched(tmp_path, change, field):
  wd = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    experiment.run(dataclasses.replace(TINY, **change), wd, log=lambda line: None)
  assert e.value.field == field
  assert not wd.exists()


def test_missing_data_names_the_file(tmp_path):
  with pytest.raises(CenasError, match="nowhere.tar.gz"):
    experiment.run(dataclasses.replace(TINY, cifar_path=str(tmp_path / "nowhere.tar.gz")),
                   tmp_path / "run", log=lambda line: None)
  assert not (tmp_path / "run").exists()


def test_ray_backend_gives_the_same_search(finished, tmp_path):
  pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
  wd_done, _ = finished
  wd = tmp_path / "run"
  with backends.RayBackend(num_gpus_per_job=0) as ray_backend:
    experiment.run(dataclasses.replace(TINY, backend="ray"), wd, backend=ray_backend,
                   log=lambda line: None)
  local, ray = _summary(wd_done), _summary(wd)
  for s in (local, ray):
    s.pop("provenance_of_numbers")  # names the backend
  assert ray == local
