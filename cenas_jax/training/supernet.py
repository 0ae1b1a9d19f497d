"""Training the DARTS supernet (SPOS) on CIFAR-10 and scoring architectures with it.

**Training.** Each step samples one path uniformly *inside* the compiled step, from the step's key
(``supernets.darts.sample_arch``), so the step compiles once for every path and the sequence of
paths is fixed by the seed. Data parallelism, donation, checkpoints and the epoch loop are the
training core's (``training/step.py``, ``training/cifar.fit``). The optimizer is DARTS' search
recipe (SGD, momentum 0.9, cosine from 0.025 to 0.001, weight decay 3e-4, clip 5). One difference
from PyTorch's SPOS: optax updates every parameter each step, so weights of ops off the path still
decay and keep their momentum (PyTorch skips parameters whose gradient is ``None``).

**Few-shot split** (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021): after the
one-shot training, the supernet is copied into 7 sub-supernets, one per op on the edge
``supernets.darts.SPLIT_SLOT`` (present in every architecture), each trained further on the paths
with that op; an architecture is scored by the sub-supernet of its op there. The op is part of the
model state (``{"split_op": int}``), so all sub-supernets share one compiled step.

**Scoring** (:class:`Scorer`): BatchNorm statistics recalibrated for the path on ``calib_batches``
training batches (see ``supernets/darts.py``), then top-1 accuracy on held-out images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.data import augment
from cenas_jax.supernets import darts as sn
from cenas_jax.training import cifar
from cenas_jax.training import mesh as mesh_lib
from cenas_jax.training import step as step_lib
from cenas_jax.training.cifar import RecipeConfig

# DARTS' search recipe (Liu et al. 2019, section 3.1): 16 channels, 8 cells, batch 64, 50 epochs.
SEARCH_RECIPE = RecipeConfig(epochs=50, batch_size=64, learning_rate=0.025, learning_rate_min=0.001,
                             cutout_length=0, drop_path_prob=0.0, auxiliary_weight=0.0, init_channels=16,
                             layers=8, eval_batch_size=500)
# CPU preset for the CIFAR-10 subset.
SMOKE_SEARCH_RECIPE = dataclasses.replace(SEARCH_RECIPE, epochs=4, batch_size=64, learning_rate=0.05,
                                          init_channels=8, layers=5)


def supernet_config(recipe: RecipeConfig, num_classes: int = 10) -> sn.SupernetConfig:
  return sn.SupernetConfig(recipe.init_channels, recipe.layers, num_classes)


def make_loss_fn(config: sn.SupernetConfig, recipe: RecipeConfig) -> step_lib.LossFn:
  """Cross-entropy of one uniformly sampled path (restricted to ``model_state["split_op"]`` on the
  split edge when that is >= 0), with the recipe's augmentation."""

  def loss_fn(params, model_state, batch, weights, rng):
    del weights  # training batches are never padded
    k_arch, k_aug = jax.random.split(rng)
    arch = sn.sample_arch(k_arch, model_state["split_op"])
    x = augment.augment_cifar(k_aug, batch["image"], cutout_length=recipe.cutout_length)
    logits, _ = sn.apply(cifar.cast_for_compute(params, recipe), arch,
                         cifar.cast_for_compute(x, recipe), config)
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return loss, (model_state, {"accuracy": accuracy})

  return loss_fn


@dataclasses.dataclass(frozen=True)
class _Compiled:
  optimizer: optax.GradientTransformation
  train_step: step_lib.TrainStep


@functools.lru_cache(maxsize=4)
def _compiled(recipe: RecipeConfig, steps_per_epoch: int, mesh: jax.sharding.Mesh) -> _Compiled:
  optimizer = cifar.make_optimizer(recipe, steps_per_epoch)
  step = step_lib.make_train_step(make_loss_fn(supernet_config(recipe), recipe), optimizer, mesh=mesh,
                                  batch_size=recipe.batch_size)
  return _Compiled(optimizer, step)


@dataclasses.dataclass(frozen=True)
class SupernetResult:
  """The trained supernet: ``params`` (replicated), ``history`` per epoch, ``split_op`` (-1: the
  one-shot supernet)."""

  params: Any
  history: tuple[dict[str, float], ...]
  split_op: int
  state: step_lib.TrainState


def train_supernet(data: Any, recipe: RecipeConfig, *, seed: int = 0, split_op: int = -1,
                   init_params: Any = None, workdir: str | Path | None = None,
                   mesh: jax.sharding.Mesh | None = None,
                   log: Callable[[str], None] | None = print) -> SupernetResult:
  """SPOS training of the supernet on ``data.x_train``/``y_train`` for ``recipe.epochs`` epochs.

  Args:
    data: a ``Cifar10``-like object (only the training arrays are read).
    recipe: optimizer, epochs, batch size and the supernet's shape (``init_channels``, ``layers``).
    seed: initialisation, paths, augmentation and batch order.
    split_op: ``-1`` for the one-shot supernet, or the op (index in ``CELL_OPS``) of a few-shot
      sub-supernet on ``SPLIT_SLOT``.
    init_params: start from these parameters (a few-shot sub-supernet starts from the one-shot
      supernet's) instead of a fresh initialisation.
    workdir: checkpoint every epoch there and resume from it.
    mesh: the data mesh (default: all devices).
    log: progress lines (``None``: silent).
  """
  mesh = mesh or mesh_lib.make_data_mesh()
  compiled = _compiled(recipe, max(1, len(data.x_train) // recipe.batch_size), mesh)
  k_init, k_train = jax.random.split(jax.random.key(seed))
  params = sn.init(k_init, supernet_config(recipe)) if init_params is None else init_params
  state = step_lib.init_train_state(jax.device_get(params), compiled.optimizer,
                                    jax.random.fold_in(k_train, split_op + 1),
                                    model_state={"split_op": jnp.asarray(split_op, jnp.int32)}, mesh=mesh)
  state, history = cifar.fit(compiled.train_step, state, data, recipe, seed=seed, workdir=workdir, log=log)
  return SupernetResult(params=state.params, history=tuple(history), split_op=split_op, state=state)


def train_few_shot(data: Any, one_shot: SupernetResult, recipe: RecipeConfig, *, seed: int = 0,
                   workdir: str | Path | None = None, mesh: jax.sharding.Mesh | None = None,
                   log: Callable[[str], None] | None = print) -> list[SupernetResult]:
  """The 7 few-shot sub-supernets, each initialised from ``one_shot`` and trained ``recipe.epochs``
  more epochs on its op of the split edge (checkpointed under ``workdir/split_<op>``)."""
  out = []
  for op in range(sn.N_OPS):
    sub_dir = None if workdir is None else Path(workdir) / f"split_{op}"
    sub_log = None if log is None else (lambda line, op=op: log(f"[split {op}] {line}"))
    out.append(train_supernet(data, recipe, seed=seed, split_op=op, init_params=one_shot.params,
                              workdir=sub_dir, mesh=mesh, log=sub_log))
  return out


class Scorer:
  """Scores paths of a trained supernet: recalibrated BatchNorm, then top-1 accuracy on held-out
  images. One compiled calibration and one compiled evaluation serve every path.

  Args:
    recipe: the supernet's recipe (its shape and evaluation batch size).
    calib_images: uint8 ``(N, 32, 32, 3)`` training images for recalibration; they are used in
      ``calib_batches`` batches of ``recipe.batch_size`` (the first ``calib_batches * batch_size``).
    eval_images, eval_labels: held-out data the score is the accuracy on.
    calib_batches: how many batches recalibration averages.
    mesh: the data mesh (default: all devices).
  """

  def __init__(self, recipe: RecipeConfig, calib_images: np.ndarray, eval_images: np.ndarray,
               eval_labels: np.ndarray, *, calib_batches: int = 4, mesh: jax.sharding.Mesh | None = None):
    self.mesh = mesh or mesh_lib.make_data_mesh()
    self.config = supernet_config(recipe)
    size = recipe.batch_size
    if len(calib_images) < calib_batches * size:
      raise ValueError(f"recalibration needs {calib_batches} x {size} images, got {len(calib_images)}")
    self._calib = [calib_images[i * size:(i + 1) * size] for i in range(calib_batches)]
    self._eval = (eval_images, eval_labels)
    self._eval_batch = recipe.eval_batch_size
    config = self.config

    @jax.jit
    def batch_stats(params, arch, images):
      return sn.apply(params, arch, augment.normalize(images), config)[1]

    def eval_fn(params, model_state, batch, weights):
      del weights
      logits, _ = sn.apply(params, model_state["arch"], augment.normalize(batch["image"]), config,
                           stats=model_state["stats"])
      return {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
              "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])}

    self._batch_stats = batch_stats
    self._eval_step = step_lib.make_eval_step(eval_fn, mesh=self.mesh, batch_size=self._eval_batch)

  def calibrate(self, params: Any, arch: Any) -> sn.Stats:
    """Population BatchNorm statistics of path ``arch`` over the calibration batches."""
    arch = jnp.asarray(arch, jnp.int32)
    with jax.set_mesh(self.mesh):
      per_batch = [self._batch_stats(params, arch, mesh_lib.shard_batch(x, self.mesh)) for x in self._calib]
    return sn.combine_stats(per_batch)

  def score(self, params: Any, arch: Any) -> dict[str, float]:
    """``{"accuracy", "loss"}`` of path ``arch`` on the held-out images."""
    arch = jnp.asarray(arch, jnp.int32)
    state = step_lib.TrainState(params=params, opt_state=None,
                                model_state={"arch": arch, "stats": self.calibrate(params, arch)},
                                step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))
    x, y = self._eval
    batches = ({"image": x[i:i + self._eval_batch], "label": y[i:i + self._eval_batch]}
               for i in range(0, len(x), self._eval_batch))
    return step_lib.evaluate(self._eval_step, state, batches)

  def score_many(self, supernets: Sequence[SupernetResult] | SupernetResult,
                 archs: Sequence[Any]) -> np.ndarray:
    """Held-out accuracy of each path; with the 7 few-shot sub-supernets, each path is scored by
    the one of its op on the split edge."""
    nets = [supernets] if isinstance(supernets, SupernetResult) else list(supernets)
    out = []
    for arch in archs:
      arch = np.asarray(arch)
      net = nets[0] if len(nets) == 1 else nets[int(arch[sn.SPLIT_SLOT][0]) - 1]
      out.append(self.score(net.params, arch)["accuracy"])
    return np.asarray(out)
