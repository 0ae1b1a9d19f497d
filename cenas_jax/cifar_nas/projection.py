"""What a CIFAR-10 search would cost before it runs: GPU-hours, kWh and CO2 from predicted step costs.

``project(config, workdir)`` prices one training step of the reference cell (DARTS_V2) under the
standalone and supernet recipes on ``energy_device`` (the kernel model on the steps' HLO, as the
search itself does), and scales them to:

- one proposal's training: ``epochs x steps_per_epoch`` steps;
- the supernet's training (x8 with the few-shot split);
- the whole search's ceiling: every GPU held and training for all ``hours`` (what full accounting
  charges at most), at the window's mean intensity, and how many trainings fit in it.

Carbon uses the search window of the configured trace (mean intensity), PUE included. These are
predictions of the device's analytical prior, labelled so, not measurements.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cenas_jax.cifar_nas import sampling
from cenas_jax.cifar_nas.config import CifarSearchConfig
from cenas_jax.cluster import experiment as hw_experiment
from cenas_jax.fileio import atomic_write_json

CIFAR10_TRAIN_IMAGES = 50_000


def project(config: CifarSearchConfig, workdir: str | os.PathLike[str], log=print) -> dict:
  """Writes ``<workdir>/projection.json`` (and the step prices, ``prices.json``); returns it."""
  workdir = Path(workdir)
  ci, _, hour0, info = hw_experiment.trace_window(config)
  window = ci[hour0: hour0 + config.hours]
  workdir.mkdir(parents=True, exist_ok=True)
  log(f"pricing the training steps on {config.energy_device} (lowering the steps for CUDA; minutes "
      "at paper scale)")
  prices = sampling.device_prices(config, workdir)
  net, sup = config.network.recipe(), config.supernet.recipe()
  n_train = config.train_images or CIFAR10_TRAIN_IMAGES - config.valid_images
  steps = net.epochs * (n_train // net.batch_size)
  sup_steps = sup.epochs * (n_train // sup.batch_size) * (8 if config.supernet.few_shot else 1)
  t, e = prices["train_step"], prices["supernet_step"]
  ci_mean = float(np.mean(window))

  def cost(gpu_s: float, energy_j: float) -> dict:
    kwh = energy_j * config.pue / 3.6e6
    g = kwh * ci_mean
    return {"gpu_hours": gpu_s / 3600.0, "kwh": kwh, "carbon_g": g, "carbon_lbs": g / 453.59237}

  one = cost(steps * t["time_s"], steps * t["energy_j"])
  supernet = cost(sup_steps * e["time_s"], sup_steps * e["energy_j"])
  held_s = config.n_gpus * config.hours * 3600.0
  ceiling = cost(held_s, held_s * prices["train_power_w"])
  out = {
      "device": config.energy_device, "source": prices["source"],
      "window": {"trace": info.get("source"), "start": config.start, "hours": config.hours,
                 "ci_mean_g_per_kwh": ci_mean},
      "train_images": n_train, "training_steps": steps, "supernet_steps": sup_steps,
      "one_training": one, "supernet": supernet,
      "search_ceiling_all_gpus_training": ceiling,
      "trainings_that_fit": held_s / (steps * t["time_s"]),
  }
  atomic_write_json(workdir / "projection.json", out)
  log(f"one training ({net.epochs} epochs x {n_train // net.batch_size} steps): "
      f"{one['gpu_hours']:.2f} GPU-h, {one['kwh']:.3f} kWh, {one['carbon_lbs']:.3f} lbs CO2; "
      f"supernet: {supernet['gpu_hours']:.2f} GPU-h; the whole search at most "
      f"{ceiling['gpu_hours']:.0f} GPU-h, {ceiling['kwh']:.1f} kWh, {ceiling['carbon_lbs']:.1f} lbs CO2 "
      f"at {ci_mean:.0f} g/kWh ({out['trainings_that_fit']:.0f} trainings fit); {prices['source']}")
  return out
