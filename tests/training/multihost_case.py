"""The training case shared by the one-process and two-process runs of ``test_multihost.py``."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cenas_jax.spaces import darts
from cenas_jax.training import cifar
from cenas_jax.training import step as step_lib

BATCH = 16
# Pools and skips: cheap to compile; the stem, preprocessing, BatchNorm and classifier still learn.
GENOTYPE = darts._g([("skip_connect", 0), ("max_pool_3x3", 1)] * 4,  # pylint: disable=protected-access
                    [("avg_pool_3x3", 0), ("skip_connect", 1)] * 4)
CONFIG = dataclasses.replace(cifar.SMOKE_RECIPE, epochs=2, batch_size=BATCH, init_channels=2, layers=3,
                             learning_rate=0.1, drop_path_prob=0.0, cutout_length=8)


def batches() -> list[dict[str, np.ndarray]]:
  """Two global batches of the same 16 images and labels in every process."""
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (BATCH, 32, 32, 3)).astype(np.uint8),
           "label": rng.integers(0, 10, BATCH).astype(np.int32),
           "drop_prob": np.zeros(BATCH, np.float32)} for _ in range(2)]


def train(mesh, global_batches) -> tuple[list[float], step_lib.TrainState]:
  """Two steps from the same seed; every process passes the same global batches."""
  model = cifar.make_model(GENOTYPE, CONFIG)
  optimizer = cifar.make_optimizer(CONFIG, 2)
  step = step_lib.make_train_step(cifar.make_loss_fn(model, CONFIG), optimizer, mesh=mesh,
                                  batch_size=BATCH)
  variables = dict(model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False))
  params = variables.pop("params")
  state = step_lib.init_train_state(params, optimizer, jax.random.key(1), model_state=variables,
                                    mesh=mesh)
  losses = []
  for b in global_batches:
    state, metrics = step(state, b)
    losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))
  return losses, state
