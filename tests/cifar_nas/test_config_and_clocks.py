"""The CIFAR-10 search's flagfiles, its clocks, and a wall-clock run on live intensities (fakes for
the clock, the Electricity Maps client, the supernet and the training jobs)."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import pytest

from cenas_jax import results
from cenas_jax.cifar_nas import experiment, outputs, sampling
from cenas_jax.cifar_nas.config import CifarSearchConfig
from cenas_jax.cifar_nas.problem import StepCost
from cenas_jax.cluster.clock import ReplayClock, WallClock
from cenas_jax.errors import ConfigError
from flagfiles import config_from_flagfile


def _from_flagfile(name: str) -> CifarSearchConfig:
  return config_from_flagfile(CifarSearchConfig, name)


def test_flagfiles_parse_to_the_stated_scales():
  quick = _from_flagfile("quickstart.flags")
  assert (quick.n_gpus, quick.hours, quick.clock, quick.strategy) == (2, 24, "replay", "cenas")
  assert quick.network.recipe().init_channels == 4 and quick.network.recipe().epochs == 1
  assert quick.cifar_path.startswith("shared:")
  gpu = _from_flagfile("cifar10_gpu_short.flags")
  assert gpu.cifar_path == "" and gpu.n_devices == 1
  paper = _from_flagfile("cifar10_paper.flags")
  recipe = paper.network.recipe()
  assert (recipe.init_channels, recipe.layers, recipe.epochs, recipe.batch_size) == (36, 20, 600, 96)
  assert (paper.supernet.supernet_channels, paper.supernet.supernet_layers) == (16, 8)
  assert (paper.n_gpus, paper.hours, paper.hour_s) == (8, 80, 3600.0)


@pytest.mark.parametrize("change, field", [
    (dict(clock="wall", hour_s=10.0), "hour_s"),
    (dict(live_zone="DE"), "live_zone"),
    (dict(clock="wall", live_zone="DE", agent_ci_input_perfect=True), "live_zone"),
    (dict(region="FR"), "region"),
    (dict(energy_device="tpu-v9"), "energy_device"),
    (dict(backend="local", ray_address="10.0.0.1:6379"), "ray_address"),
    (dict(coordinator_address="10.0.0.1"), "coordinator_address"),
    (dict(num_processes=2, process_id=1), "coordinator_address"),
    (dict(coordinator_address="10.0.0.1:8476", process_id=-2), "process_id"),
])
def test_refused_settings_name_their_flag(change, field):
  change = dict(change)
  if change.pop("agent_ci_input_perfect", False):
    change["strategy"] = "cenas"
  with pytest.raises(ConfigError) as e:
    CifarSearchConfig(**change)
  assert e.value.field == field


def test_replay_clock_paces_only_when_asked():
  t = [0.0]
  slept = []

  def sleep(s):
    slept.append(s)
    t[0] += s

  fast = ReplayClock(hour_s=0.5, sleep=sleep, now=lambda: t[0])
  assert fast.wait_until(5, 0, 0.0) == 0.0 and slept == []
  paced = ReplayClock(hour_s=0.5, pace_wall_s=10.0, sleep=sleep, now=lambda: t[0])
  t[0] = 3.0
  assert paced.wait_until(2, 1, 0.0) == pytest.approx(7.0)  # hour 2, one hour after this start
  assert t[0] == pytest.approx(10.0)


def test_wall_clock_waits_for_the_real_hour():
  t = [1000.0]
  clock = WallClock(start_unix=1000.0, sleep=lambda s: t.__setitem__(0, t[0] + s), now=lambda: t[0])
  assert clock.wait_until(0, 0, 0.0) == 0.0
  assert clock.wait_until(2, 0, 0.0) == pytest.approx(7200.0) and t[0] == pytest.approx(8200.0)


class _Live:
  def __init__(self, values):
    self.values, self.calls = list(values), 0

  def latest(self):
    self.calls += 1
    return type("Reading", (), {"ci_g_per_kwh": self.values[self.calls - 1]})()


class _InstantJobs:
  """A backend whose training jobs finish at once with an accuracy from the candidate's index."""

  name, capacity = "fake", 1

  def submit(self, fn, job, *args, **kwargs):
    del args, kwargs
    f = concurrent.futures.Future()
    if fn.__name__ == "train_job":
      f.set_result({"step": job.stop_step, "finished": True, "test_accuracy": 0.1 + 0.001 * job.candidate,
                    "test_loss": 1.0, "n_params": 1})
    else:  # export: nothing was trained
      f.set_result(None)
    return f

  def cancel(self, future):
    return False

  def close(self):
    pass


def test_wall_clock_run_reads_live_intensities_hour_by_hour(tmp_path, monkeypatch, shared_data):
  del shared_data
  monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", "test-token")
  monkeypatch.setattr(outputs, "_export", lambda *a, **k: {})
  # Prices of a step that lasts 20 minutes, so that the wall clock's 3600-s hours hold a few jobs.
  monkeypatch.setattr(sampling, "step_cost", lambda g, recipe, device: StepCost(300.0, 3e4, "fake"))
  monkeypatch.setattr(sampling, "device_prices", lambda config, workdir: {
      "source": "fake", "train_step": {"time_s": 300.0, "energy_j": 3e4},
      "supernet_step": {"time_s": 300.0, "energy_j": 3e4}, "train_power_w": 100.0,
      "sample_power_w": 100.0, "score_time_s": 60.0})
  t = [0.0]
  config = CifarSearchConfig(
      strategy="heuristic", clock="wall", live_zone="DE", start="2030-01-01T00:00:00+00:00",
      cifar_path="shared:cifar10_subset/cifar-10-python-subset.tar.gz", train_images=64,
      valid_images=32, test_images=32, hours=3, n_gpus=2, n_init=1, candidates_per_hour=10,
      network=dataclasses.replace(CifarSearchConfig().network, init_channels=2, layers=3, epochs=1,
                                  batch_size=16, cutout_length=0, drop_path_prob=0.0,
                                  auxiliary_weight=0.0),
      supernet=dataclasses.replace(CifarSearchConfig().supernet, supernet_channels=2, supernet_layers=3,
                                   supernet_batch_size=16, calib_batches=1),
      n_devices=1)
  start = experiment.unix_time(config.start)
  clock = WallClock(start_unix=start, sleep=lambda s: t.__setitem__(0, t[0] + s),
                    now=lambda: start + t[0])
  live = _Live([300.0, 100.0, 200.0, 250.0])
  summary = experiment.run(config, tmp_path / "run", backend=_InstantJobs(), clock=clock, live=live,
                           score_fn=lambda gs: np.full(len(gs), 0.2), log=lambda line: None)
  rows = results.read_results(tmp_path / "run")
  assert [r["ci_g_per_kwh"] for r in rows] == [300.0, 100.0, 200.0]
  assert t[0] == pytest.approx(2 * 3600.0)  # waited for hours 1 and 2
  assert summary["provenance_of_numbers"]["carbon_g"].endswith("electricitymaps-live:DE")
