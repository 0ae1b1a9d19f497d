"""What a backend runs for the CIFAR-10 search: the data split and the training job.

``train_job`` is a top-level function over plain arguments, so the local backend runs it in a thread
and Ray pickles it to another machine; each process loads the data once (``load_split`` is cached).
A job is idempotent: it continues the candidate's training from the checkpoint in its own directory
and stops at ``stop_step``, so a job run twice (a resumed search, a preempted worker) trains nothing
twice.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from cenas_jax.cifar_nas.problem import TrainJob
from cenas_jax.data import cifar10
from cenas_jax.spaces import darts as space
from cenas_jax.training import cifar
from cenas_jax.training import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Which images the search uses.

  Attributes:
    path: a CIFAR-10 archive or folder (``cifar10.load_cifar10``); "" downloads the official archive
      into the cache (checked against its sha256).
    train_images: the first images of the training set that networks and the supernet train on
      (0: all but the held-out ones).
    valid_images: the training images after those, held out for the supernet's scores.
    test_images: the first test images a trained network is tested on (0: all).
  """

  path: str = ""
  train_images: int = 0
  valid_images: int = 5000
  test_images: int = 0


@dataclasses.dataclass(frozen=True)
class Split:
  """The arrays of a ``DataSpec`` (``train`` is a ``Cifar10``-like object for the training core)."""

  train: cifar10.Cifar10
  x_valid: np.ndarray
  y_valid: np.ndarray
  source: str


def resolve(spec: DataSpec) -> DataSpec:
  """``spec`` with a ``shared:<path>`` data path made absolute (under ``$CENAS_SHARED_DATA``)."""
  if spec.path.startswith("shared:"):
    from cenas_jax.data.paths import shared_data_dir

    return dataclasses.replace(spec, path=str(shared_data_dir() / spec.path[len("shared:"):]))
  return spec


@functools.lru_cache(maxsize=2)
def load_split(spec: DataSpec) -> Split:
  """Loads and splits the data; raises the data layer's errors (they name the missing file)."""
  data = cifar10.load_cifar10(spec.path or None)
  n_all = len(data.x_train)
  n_train = spec.train_images or n_all - spec.valid_images
  if n_train < 1 or n_train + spec.valid_images > n_all:
    raise ValueError(f"train_images={n_train} + valid_images={spec.valid_images} exceeds the "
                     f"{n_all} training images of {data.source}")
  n_test = spec.test_images or len(data.x_test)
  if n_test > len(data.x_test):
    raise ValueError(f"test_images={n_test} exceeds the {len(data.x_test)} test images of {data.source}")
  valid = slice(n_train, n_train + spec.valid_images)
  train = dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                              x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])
  return Split(train=train, x_valid=data.x_train[valid], y_valid=data.y_train[valid], source=data.source)


def _advance(job: TrainJob, data: DataSpec, recipe: cifar.RecipeConfig,
             devices: list[Any] | None) -> cifar.TrainProgress:
  """``cifar.train_until`` for ``job`` on ``devices`` (default: the first local device)."""
  mesh = mesh_lib.make_data_mesh(devices=devices or jax.local_devices()[:1])
  return cifar.train_until(space.Genotype.from_json(job.genotype), load_split(data).train, recipe,
                           seed=job.seed, workdir=job.job_dir, stop_step=job.stop_step, mesh=mesh,
                           log=None)


def train_job(job: TrainJob, data: DataSpec, recipe: cifar.RecipeConfig, *,
              devices: list[Any] | None = None) -> dict[str, Any]:
  """Advances ``job``'s candidate to ``job.stop_step`` on ``devices`` (data-parallel over them).

  Returns ``{"step", "finished", "test_accuracy", "test_loss", "n_params"}`` (accuracy and loss
  None until the training is finished).
  """
  progress = _advance(job, data, recipe, devices)
  return {"step": int(progress.step), "finished": bool(progress.finished),
          "test_accuracy": None if progress.test_accuracy is None else float(progress.test_accuracy),
          "test_loss": None if progress.test_loss is None else float(progress.test_loss),
          "n_params": int(progress.n_params)}


def export_job(job: TrainJob, data: DataSpec, recipe: cifar.RecipeConfig, path: str, *,
               devices: list[Any] | None = None) -> str:
  """Exports ``job``'s finished training (its last checkpoint) to ``path`` (``training.export``)."""
  from cenas_jax.training import export

  done = _advance(job, data, recipe, devices)  # a finished job: restores its last checkpoint
  export.export_network(path, space.Genotype.from_json(job.genotype), recipe, done.state,
                        {"test_accuracy": done.test_accuracy, "test_loss": done.test_loss,
                         "n_params": done.n_params, "candidate": job.candidate})
  return path
