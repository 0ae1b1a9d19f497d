"""The sampling side of the CIFAR-10 search and the device prices: what a step costs on the
stated device, the supernet (trained once, SPOS; few-shot as an option) and its scores.

Prices: a step's time and energy are the kernel model's prediction for the step's HLO on
``energy_device`` (``training.cifar.train_step_energy``), labelled ``predicted-<model>``. A supernet
path costs about what the same cell costs standalone at the supernet's shape (one path runs per
step); scoring a proposal runs forward passes over ``calib_batches`` batches and the held-out
images, priced at a third of a training step per image (forward only; an estimate).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cenas_jax.cifar_nas import jobs as jobs_lib
from cenas_jax.cifar_nas.config import CifarSearchConfig
from cenas_jax.cifar_nas.problem import InferenceCost, StepCost
from cenas_jax.errors import ConfigError
from cenas_jax.fileio import atomic_write_json
from cenas_jax.spaces import darts as space

def step_cost(genotype: space.Genotype, recipe, device: str) -> StepCost:
  from cenas_jax.training import cifar

  e = cifar.train_step_energy(genotype, recipe, device)
  return StepCost(time_s=float(e["time_s"]), energy_j=float(e["energy_j"]), source=e["energy_source"])


def inference_cost(genotype: space.Genotype, recipe, batch_size: int, device: str) -> InferenceCost:
  """The trained network's predicted inference energy and time per image at ``batch_size``
  (``training.cifar.inference_energy``: the kernel model on the evaluation forward's HLO)."""
  from cenas_jax.training import cifar

  e = cifar.inference_energy(genotype, recipe, batch_size, device)
  return InferenceCost(energy_mj=1e3 * float(e["energy_j_per_image"]),
                       time_s=float(e["time_s_per_image"]), batch_size=int(batch_size),
                       source=e["energy_source"])


def device_prices(config: CifarSearchConfig, workdir: Path) -> dict:
  """Predicted step costs of the reference cell (DARTS_V2) under the standalone and the supernet
  recipes on ``energy_device``, and what the pool derives from them (cached in ``prices.json``)."""
  path = workdir / "prices.json"
  if path.exists():
    return json.loads(path.read_text())
  ref = space.GENOTYPES["DARTS_V2"]
  train = step_cost(ref, config.network.recipe(), config.energy_device)
  srec = config.supernet.recipe()
  sup = step_cost(ref, srec, config.energy_device)
  images = config.supernet.calib_batches * srec.batch_size + config.valid_images
  score_s = images / srec.batch_size * sup.time_s / 3.0
  out = {"device": config.energy_device, "source": train.source,
         "train_step": dataclasses.asdict(train), "supernet_step": dataclasses.asdict(sup),
         "train_power_w": train.energy_j / train.time_s, "sample_power_w": sup.energy_j / sup.time_s,
         "score_time_s": score_s}
  atomic_write_json(path, out)
  return out




def supernet_mesh(config: CifarSearchConfig):
  """The devices the supernet trains and scores on, data-parallel: the first ``n_devices`` local
  devices (all when 0) of every process (``cifar_nas.multihost``)."""
  import jax

  from cenas_jax.training import mesh as mesh_lib

  local = jax.local_devices()
  n = config.n_devices or len(local)
  if n > len(local):
    raise ConfigError("n_devices", f"{n} devices asked, this machine has {len(local)} "
                      f"({local[0].platform})")
  devices = [d for p in range(jax.process_count())
             for d in [d for d in jax.devices() if d.process_index == p][:n]]
  if config.supernet.supernet_batch_size % len(devices):
    raise ConfigError("supernet_batch_size", f"{config.supernet.supernet_batch_size} is not a "
                      f"multiple of the {len(devices)} devices the supernet is data-parallel over")
  return mesh_lib.make_data_mesh(devices=devices)


def supernet_recipe(config: CifarSearchConfig, mesh):
  n = mesh.devices.size
  per_batch = min(500, config.valid_images)
  return dataclasses.replace(config.supernet.recipe(), eval_batch_size=-(-per_batch // n) * n)


def train_supernets(config: CifarSearchConfig, split: jobs_lib.Split, workdir: Path, mesh, log):
  from cenas_jax.training import supernet as sup

  recipe = supernet_recipe(config, mesh)
  data = split.train
  one = sup.train_supernet(data, recipe, seed=config.seed, workdir=workdir / "supernet", mesh=mesh,
                           log=lambda line: log(f"  supernet {line}"))
  nets = [one]
  if config.supernet.few_shot:
    nets = sup.train_few_shot(data, one, recipe, seed=config.seed, workdir=workdir / "supernet_split",
                              mesh=mesh, log=lambda line: log(f"  few-shot {line}"))
  from cenas_jax.supernets.darts import N_OPS

  per_net = recipe.epochs * (len(data.x_train) // recipe.batch_size)
  return nets, per_net * (1 + (N_OPS if config.supernet.few_shot else 0))


def make_score_fn(config: CifarSearchConfig, split: jobs_lib.Split, nets, mesh):
  from cenas_jax.supernets import darts as sn
  from cenas_jax.training import supernet as sup

  scorer = sup.Scorer(supernet_recipe(config, mesh), split.train.x_train, split.x_valid,
                      split.y_valid, calib_batches=config.supernet.calib_batches, mesh=mesh)

  def score_fn(genotypes):
    return scorer.score_many(nets if len(nets) > 1 else nets[0], [sn.arch_of(g) for g in genotypes])

  return score_fn
