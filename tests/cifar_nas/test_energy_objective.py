"""``--objectives=accuracy,params,energy`` end to end with fakes for the supernet's scores, the step
and inference prices and the training jobs (the real pricing is ``tests/training/test_cifar.py``'s):
the outputs carry the third objective, a run stopped mid-search resumes to the same summary without
re-pricing, and bad values are refused."""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json

import numpy as np
import pytest

from cenas_jax.cifar_nas import experiment, outputs, sampling
from cenas_jax.cifar_nas.config import CifarSearchConfig, NetworkSettings, SupernetSettings
from cenas_jax.cifar_nas.problem import InferenceCost, StepCost
from cenas_jax.errors import ConfigError
from cenas_jax.spaces import darts as space
from cenas_jax.training.checkpoint import Checkpointer

ENERGY = ("accuracy", "params", "energy")
TOY = CifarSearchConfig(
    strategy="heuristic", seed=0,
    cifar_path="shared:cifar10_subset/cifar-10-python-subset.tar.gz",
    train_images=64, valid_images=32, test_images=32,
    network=NetworkSettings(init_channels=2, layers=3, epochs=1, batch_size=16, cutout_length=0,
                            drop_path_prob=0.0, auxiliary_weight=0.0),
    supernet=SupernetSettings(supernet_channels=2, supernet_layers=3, supernet_batch_size=16,
                              calib_batches=1),
    hours=6, n_gpus=2, n_init=2, hour_s=0.004, candidates_per_hour=20, queue_capacity=2,
    n_devices=1, objectives=ENERGY)


def _convs(g: space.Genotype) -> int:
  code = space.encode(g).reshape(-1, 2)
  return int(np.isin(code[:, 0], [space.OPS.index(o) for o in space.CELL_OPS if "conv" in o]).sum())


class Interrupt(Exception):
  pass


class FakeJobs:
  """Training jobs that finish at once, their accuracy growing with the cell's convolutions; raises
  (as a kill would stop the process) at its ``stop_at``-th submitted job."""

  name, capacity = "fake", 1

  def __init__(self, stop_at: int | None = None):
    self.left = stop_at

  def submit(self, fn, job, *args, **kwargs):
    del args, kwargs
    if self.left is not None:
      self.left -= 1
      if self.left < 0:
        raise Interrupt()
    f = concurrent.futures.Future()
    acc = 0.3 + 0.02 * _convs(space.Genotype.from_json(job.genotype))
    f.set_result({"step": job.stop_step, "finished": True, "test_accuracy": acc, "test_loss": 1.0,
                  "n_params": 1} if fn.__name__ == "train_job" else None)
    return f

  def cancel(self, future):
    return False

  def close(self):
    pass


@pytest.fixture
def priced(monkeypatch):
  """Fake prices; returns the genotypes whose inference was priced, in order."""
  calls: list[space.Genotype] = []

  def inference_cost(g, recipe, batch_size, device):
    calls.append(g)
    return InferenceCost(energy_mj=1.0 + 0.5 * _convs(g), time_s=1e-4, batch_size=batch_size,
                         source=f"fake:{device}")

  monkeypatch.setattr(outputs, "_export", lambda *a, **k: {})
  monkeypatch.setattr(sampling, "inference_cost", inference_cost)
  monkeypatch.setattr(sampling, "step_cost", lambda g, recipe, device: StepCost(
      (1 + _convs(g) / 16) * 1e-3, 0.3, "fake"))
  monkeypatch.setattr(sampling, "device_prices", lambda config, workdir: {
      "source": "fake", "train_step": {"time_s": 1e-3, "energy_j": 0.3},
      "supernet_step": {"time_s": 1e-3, "energy_j": 0.3}, "train_power_w": 300.0,
      "sample_power_w": 300.0, "score_time_s": 2e-4})
  return calls


def _run(config, wd, backend):
  return experiment.run(config, wd, backend=backend, log=lambda line: None,
                        score_fn=lambda gs: np.array([0.1 + 0.02 * _convs(g) for g in gs]))


def _summary(wd):
  s = json.loads((wd / "summary.json").read_text())
  s.pop("provenance")
  return s


def test_energy_search_writes_the_third_objective_and_resumes_to_the_same_summary(
    tmp_path, priced, shared_data):
  del shared_data
  summary = _run(TOY, tmp_path / "once", FakeJobs())
  assert summary["objectives"] == list(ENERGY) and summary["n_trained"] > TOY.n_init
  ref = summary["hv_reference"]["inference_energy_mj"]
  assert ref == pytest.approx(1.1 * (1.0 + 0.5 * 16))  # the widest pair: 16 conv edges
  assert 0 < summary["final_hv_of_bound"] < 1
  front = summary["pareto"]
  assert front and all(r["inference_energy_mj"] == 1.0 + 0.5 * _convs(space.Genotype.from_json(
      r["genotype"])) for r in front)
  assert summary["provenance_of_numbers"]["inference_energy_mj"].startswith("fake:h100-sxm: ")
  with open(tmp_path / "once" / "pareto.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == summary["n_trained"] and all(float(r["inference_energy_mj"]) > 0 for r in rows)
  # The front is non-dominated in all three objectives.
  y = np.array([[float(r["cifar10_test_acc_pct"]), -float(r["params_m"]),
                 -float(r["inference_energy_mj"])] for r in rows])
  on = np.array([r["is_pareto"] == "True" for r in rows])
  assert sum(on) == len(front)
  for i in np.flatnonzero(on):
    assert not np.any(np.all(y >= y[i], axis=1) & np.any(y > y[i], axis=1))
  assert "inference energy (mJ/image)" in (tmp_path / "once" / "summary.md").read_text()
  assert (tmp_path / "once" / "pareto.png").is_file()
  n_priced = len(priced)

  # Stopped at its fifth job (in a later hour), then the same command again: the same summary, and
  # the resumed process prices no candidate the checkpoint already knew.
  wd = tmp_path / "stopped"
  with pytest.raises(Interrupt):
    _run(TOY, wd, FakeJobs(stop_at=4))
  with Checkpointer(wd / "checkpoints") as ckpt:
    saved = ckpt.restore(target={})
  assert saved.step >= 1  # stopped after an hour was saved
  known = {space.decode(saved.side_state["problem"]["codes"][int(c)])
           for c in saved.side_state["problem"]["inference"]}
  assert known
  priced.clear()
  _run(TOY, wd, FakeJobs())
  assert _summary(wd) == _summary(tmp_path / "once")
  assert len(priced) < n_priced and not known & set(priced)


def test_default_objectives_write_no_energy(tmp_path, priced, shared_data):
  del shared_data
  summary = _run(dataclasses.replace(TOY, objectives=("accuracy", "params")), tmp_path / "run",
                 FakeJobs())
  assert priced == []
  assert "objectives" not in summary and "hv_reference" not in summary
  assert all("inference_energy_mj" not in r for r in summary["pareto"])
  assert "inference_energy_mj" not in (tmp_path / "run" / "pareto.csv").read_text()


@pytest.mark.parametrize("change", [
    dict(objectives=("accuracy",)),
    dict(objectives=("params", "accuracy")),
    dict(objectives=("accuracy", "params", "latency")),
    dict(objectives=("accuracy", "params", "energy"), lamoo=dataclasses.replace(
        CifarSearchConfig().lamoo, proposal="ehvi")),
])
def test_bad_objectives_are_refused(change):
  with pytest.raises(ConfigError) as e:
    CifarSearchConfig(**change)
  assert e.value.field == "objectives"


def test_inference_batch_must_be_positive():
  with pytest.raises(ConfigError) as e:
    CifarSearchConfig(inference_batch=0)
  assert e.value.field == "inference_batch"
