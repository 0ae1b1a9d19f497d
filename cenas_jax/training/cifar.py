"""Training a DARTS-space network on CIFAR-10: the recipe, its optimizer and losses, a resumable run.

The paper-scale recipe (``PAPER_RECIPE``) is the DARTS / LaNAS evaluation recipe that CE-NAS's
group used: 600 epochs, batch 96, SGD with momentum 0.9 and a cosine learning rate from 0.025 to 0,
weight decay 3e-4 (added to the gradient, as PyTorch's SGD does), gradient clipping at global norm 5,
cutout 16, drop-path 0.2 growing linearly with the epoch, auxiliary head weight 0.4, 36 channels and
20 cells. ``SMOKE_RECIPE`` is a CPU preset (tiny network, few epochs).

The loss function runs the augmentation on the device (``data/augment.py``) from the step's key, so
batches travel as uint8 images. Each batch carries the drop-path probability of its epoch per
example (``"drop_prob"``), which keeps the schedule out of the compiled step: the step compiles once
for the whole run.

Training drops the last incomplete batch of each epoch (as the reference recipe does), so BatchNorm
never sees padding rows; evaluation pads and masks through ``training/step.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.data import augment
from cenas_jax.spaces.darts import Genotype, count_params
from cenas_jax.spaces.darts_net import NetworkCIFAR
from cenas_jax.training import checkpoint as ckpt_lib
from cenas_jax.training import mesh as mesh_lib
from cenas_jax.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
  """How a standalone network is trained (defaults: the paper-scale recipe)."""

  epochs: int = 600
  batch_size: int = 96
  learning_rate: float = 0.025
  learning_rate_min: float = 0.0
  momentum: float = 0.9
  weight_decay: float = 3e-4
  grad_clip_norm: float = 5.0
  cutout_length: int = 16
  drop_path_prob: float = 0.2
  auxiliary_weight: float = 0.4
  init_channels: int = 36
  layers: int = 20
  eval_batch_size: int = 500

  def __post_init__(self):
    for name in ("epochs", "batch_size", "init_channels", "layers", "eval_batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 <= self.drop_path_prob < 1.0:
      raise ValueError(f"drop_path_prob must be in [0, 1), got {self.drop_path_prob}")


PAPER_RECIPE = RecipeConfig()
# CPU preset: a 5-cell, 8-channel network that learns on the CIFAR-10 subset in minutes.
SMOKE_RECIPE = RecipeConfig(epochs=4, batch_size=64, learning_rate=0.05, init_channels=8, layers=5,
                            cutout_length=0, drop_path_prob=0.0, eval_batch_size=500)


def make_optimizer(config: RecipeConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """Clip to global norm, add ``weight_decay * params``, SGD with momentum on a per-step cosine
  schedule from ``learning_rate`` to ``learning_rate_min`` over all epochs (PyTorch's order)."""
  total = max(1, config.epochs * steps_per_epoch)
  alpha = config.learning_rate_min / config.learning_rate if config.learning_rate else 0.0
  schedule = optax.cosine_decay_schedule(config.learning_rate, total, alpha=alpha)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(schedule, momentum=config.momentum))


def drop_prob_at(config: RecipeConfig, epoch: int) -> float:
  """Drop-path probability of ``epoch`` (0-based): ``drop_path_prob * epoch / epochs``."""
  return config.drop_path_prob * epoch / config.epochs


def make_model(genotype: Genotype, config: RecipeConfig, num_classes: int = 10) -> NetworkCIFAR:
  return NetworkCIFAR(genotype, config.init_channels, config.layers, num_classes,
                      auxiliary=config.auxiliary_weight > 0)


def make_loss_fn(model: NetworkCIFAR, config: RecipeConfig) -> step_lib.LossFn:
  """Per-example cross-entropy (+ ``auxiliary_weight`` x the auxiliary head's), with augmentation.

  The batch is ``{"image": uint8 (B, 32, 32, 3), "label": int (B,), "drop_prob": float (B,)}``.
  """

  def loss_fn(params, model_state, batch, weights, rng):
    del weights  # training batches are never padded (see the module docstring)
    k_aug, k_drop = jax.random.split(rng)
    x = augment.augment_cifar(k_aug, batch["image"], cutout_length=config.cutout_length)
    (logits, aux), new_state = model.apply({"params": params, **model_state}, x, train=True,
                                           drop_prob=batch["drop_prob"], rngs={"drop_path": k_drop},
                                           mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    if aux is not None:
      loss = loss + config.auxiliary_weight * optax.softmax_cross_entropy_with_integer_labels(
          aux, batch["label"])
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return loss, (dict(new_state), {"accuracy": accuracy})

  return loss_fn


def make_eval_fn(model: NetworkCIFAR) -> step_lib.EvalFn:
  """Per-example loss and top-1 accuracy with BatchNorm's running averages."""

  def eval_fn(params, model_state, batch, weights):
    del weights
    logits, _ = model.apply({"params": params, **model_state}, augment.normalize(batch["image"]),
                            train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"loss": loss, "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}

  return eval_fn


@dataclasses.dataclass(frozen=True)
class _Compiled:
  """The compiled functions of one (genotype, recipe, epoch length, mesh)."""

  optimizer: optax.GradientTransformation
  init: Callable[[jax.Array], Any]
  train_step: step_lib.TrainStep
  eval_step: step_lib.EvalStep


@functools.lru_cache(maxsize=4)
def _compiled(genotype: Genotype, config: RecipeConfig, steps_per_epoch: int,
              mesh: jax.sharding.Mesh) -> _Compiled:
  """Cached so that retraining an architecture (another seed, a resumed run) compiles nothing."""
  model = make_model(genotype, config)
  optimizer = make_optimizer(config, steps_per_epoch)
  return _Compiled(
      optimizer=optimizer,
      init=jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False)),
      train_step=step_lib.make_train_step(make_loss_fn(model, config), optimizer, mesh=mesh,
                                          batch_size=config.batch_size),
      eval_step=step_lib.make_eval_step(make_eval_fn(model), mesh=mesh, batch_size=config.eval_batch_size))


def init_state(compiled: _Compiled, seed: int, mesh: jax.sharding.Mesh | None) -> step_lib.TrainState:
  """A fresh training state (replicated on ``mesh``; ``None``: not placed, e.g. under eval_shape)."""
  k_init, k_train = jax.random.split(jax.random.key(seed))
  variables = dict(compiled.init(k_init))
  params = variables.pop("params")
  return step_lib.init_train_state(params, compiled.optimizer, k_train, model_state=variables, mesh=mesh)


def _batches(x: np.ndarray, y: np.ndarray, size: int, order: np.ndarray, drop_last: bool, **extra):
  stop = len(order) - len(order) % size if drop_last else len(order)
  for i in range(0, stop, size):
    idx = order[i:i + size]
    yield {"image": x[idx], "label": y[idx], **{k: np.full(len(idx), v, np.float32) for k, v in extra.items()}}


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """Final test metrics and the per-epoch history (``[{epoch, train_loss, train_accuracy,
  test_accuracy, seconds}]``)."""

  test_accuracy: float
  test_loss: float
  n_params: int
  epochs: int
  history: tuple[dict[str, float], ...]
  state: step_lib.TrainState


def fit(train_step: step_lib.TrainStep, state: step_lib.TrainState, data: Any, config: RecipeConfig, *,
        seed: int, workdir: str | Path | None = None,
        evaluate: Callable[[step_lib.TrainState], dict[str, float]] | None = None,
        log: Callable[[str], None] | None = print) -> tuple[step_lib.TrainState, list[dict[str, float]]]:
  """The epoch loop shared by standalone networks and supernets: shuffled drop-last batches of
  ``data.x_train``/``y_train`` with the epoch's drop-path probability, ``evaluate(state)`` after each
  epoch, a checkpoint per epoch under ``workdir/checkpoints``, progress lines with an ETA.

  A rerun with the same ``workdir`` continues from the last epoch saved and ends in the same state
  as an uninterrupted run (same seed, backend and device count). Returns ``(state, history)``.
  """
  steps_per_epoch = len(data.x_train) // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"{len(data.x_train)} training images are fewer than one batch of {config.batch_size}")
  history: list[dict[str, float]] = []
  start_epoch = 0
  checkpointer = ckpt_lib.Checkpointer(Path(workdir) / "checkpoints") if workdir else None
  if checkpointer is not None and checkpointer.latest_step() is not None:
    # Restore onto one device (orbax cannot target arrays on an explicit-axes mesh), then replicate.
    restored = checkpointer.restore(target=jax.device_put(state, jax.devices()[0]))
    state = mesh_lib.replicate(restored.state, train_step.mesh)
    history = list(restored.side_state["history"])
    start_epoch = restored.step
  t0 = time.perf_counter()
  for epoch in range(start_epoch, config.epochs):
    order = np.random.default_rng([seed, epoch]).permutation(len(data.x_train))
    sums = {"loss": 0.0, "accuracy": 0.0}
    for batch in _batches(data.x_train, data.y_train, config.batch_size, order, True,
                          drop_prob=drop_prob_at(config, epoch)):
      state, metrics = train_step(state, batch)
      for k in sums:
        sums[k] += float(metrics[k])
    record = {"epoch": epoch + 1, "train_loss": sums["loss"] / steps_per_epoch,
              "train_accuracy": sums["accuracy"] / steps_per_epoch}
    record.update(evaluate(state) if evaluate is not None else {})
    record["seconds"] = time.perf_counter() - t0
    history.append(record)
    if checkpointer is not None:
      checkpointer.save(epoch + 1, state, {"history": history})
    if log is not None:
      done = epoch + 1 - start_epoch
      eta = (time.perf_counter() - t0) / done * (config.epochs - epoch - 1)
      shown = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                        if k not in ("epoch", "seconds"))
      log(f"epoch {epoch + 1}/{config.epochs}  {shown}  ETA {eta:.0f} s")
  if checkpointer is not None:
    checkpointer.close()
  return state, history


def train_network(genotype: Genotype, data: Any, config: RecipeConfig, *, seed: int = 0,
                  workdir: str | Path | None = None, mesh: jax.sharding.Mesh | None = None,
                  log: Callable[[str], None] | None = print) -> TrainResult:
  """Trains ``genotype``'s network on ``data`` (a ``Cifar10``-like object) and tests it after every
  epoch; with ``workdir`` it checkpoints and resumes (see :func:`fit`)."""
  mesh = mesh or mesh_lib.make_data_mesh()
  compiled = _compiled(genotype, config, max(1, len(data.x_train) // config.batch_size), mesh)
  eval_step = compiled.eval_step

  def test(state):
    out = step_lib.evaluate(eval_step, state, _batches(data.x_test, data.y_test, config.eval_batch_size,
                                                       np.arange(len(data.x_test)), False))
    return {"test_accuracy": out["accuracy"], "test_loss": out["loss"]}

  state, history = fit(compiled.train_step, init_state(compiled, seed, mesh), data, config, seed=seed,
                       workdir=workdir, evaluate=test, log=log)
  last = history[-1]
  n_params = count_params(genotype, config.init_channels, config.layers)
  return TrainResult(test_accuracy=last["test_accuracy"], test_loss=last["test_loss"], n_params=n_params,
                     epochs=config.epochs, history=tuple(history), state=state)


def train_step_energy(genotype: Genotype, config: RecipeConfig, device: str = "h100-sxm") -> dict[str, Any]:
  """Predicted energy (J) and time (s) of one training step of ``genotype`` at ``config.batch_size``
  on the NVIDIA ``device`` (a name of ``energy.DEVICE_SPECS``).

  The kernels are those XLA would launch for the whole step (forward, backward, optimizer update;
  ``energy`` gpu mode, lowered for CUDA on any host) and are priced by the device's analytical
  prior model: a prediction, labelled ``energy_source = "predicted-prior:<device>"``, not a
  measurement. This is the figure a carbon ledger charges per step where no GPU meter exists.

  Raises:
    CenasError: the step could not be lowered for CUDA (the kernels would be another platform's).
  """
  from cenas_jax import energy  # pylint: disable=g-import-not-at-top
  from cenas_jax.errors import CenasError  # pylint: disable=g-import-not-at-top

  compiled = _compiled(genotype, config, 1, mesh_lib.make_data_mesh(1))
  state = jax.eval_shape(lambda: init_state(compiled, 0, None))
  b = config.batch_size
  batch = {"image": jax.ShapeDtypeStruct((b, 32, 32, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32),
           "drop_prob": jax.ShapeDtypeStruct((b,), jnp.float32)}
  weights = jax.ShapeDtypeStruct((b,), jnp.float32)
  graph = energy.extract_kernel_graph(compiled.train_step.step_fn, state, batch, weights, mode="gpu")
  if graph.lowered_for != "cuda":
    raise CenasError(f"the train step could not be lowered for CUDA (got {graph.lowered_for}); "
                     "its kernels would not be an NVIDIA GPU's.")
  prior = energy.prior_model(device)
  return {"energy_j": energy.predict_energy_j(prior, graph.kernels, batch_size=b),
          "time_s": energy.predict_time_s(prior, graph.kernels, batch_size=b),
          "n_kernels": len(graph.kernels), "batch_size": b, "device": device,
          "energy_source": f"predicted-{prior.provenance}"}
