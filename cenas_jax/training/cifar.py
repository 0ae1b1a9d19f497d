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

One step loop (``_train_steps``) serves the epoch loop ``fit`` (``train_network``, supernets) and
``train_until``, which advances a job to any global step in segments a scheduler hands out (a job's
directory: ``job_dir``); the global step index fixes each batch, so every split of a run ends in the
same state, bit for bit, as one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax import fileio
from cenas_jax.data import augment
from cenas_jax.errors import WorkdirError
from cenas_jax.spaces.darts import Genotype, count_params
from cenas_jax.spaces.darts_net import NetworkCIFAR
from cenas_jax.training import checkpoint as ckpt_lib
from cenas_jax.training import mesh as mesh_lib
from cenas_jax.training import step as step_lib


COMPUTE_DTYPES = ("float32", "bfloat16")


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
  compute_dtype: str = "float32"

  def __post_init__(self):
    for name in ("epochs", "batch_size", "init_channels", "layers", "eval_batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 <= self.drop_path_prob < 1.0:
      raise ValueError(f"drop_path_prob must be in [0, 1), got {self.drop_path_prob}")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")


PAPER_RECIPE = RecipeConfig()
# CPU preset: a 5-cell, 8-channel network that learns on the CIFAR-10 subset in minutes.
SMOKE_RECIPE = RecipeConfig(epochs=4, batch_size=64, learning_rate=0.05, init_channels=8, layers=5,
                            cutout_length=0, drop_path_prob=0.0, eval_batch_size=500)


def cast_for_compute(tree: Any, config: RecipeConfig) -> Any:
  """The floating leaves of ``tree`` in ``config.compute_dtype`` (``"bfloat16"``: mixed precision).

  Only the forward pass's copies are cast: the master parameters, the optimizer state and
  BatchNorm's running statistics stay float32, and the gradient flows back through the cast as
  float32, so the update is a float32 update. Convolutions and matrix products then run in bf16 on
  the GPU's tensor cores (half the bytes of float32); logits are cast back before the softmax.
  """
  if config.compute_dtype == "float32":
    return tree
  dtype = jnp.dtype(config.compute_dtype)
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


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
    (logits, aux), new_state = model.apply(
        {"params": cast_for_compute(params, config), **model_state}, cast_for_compute(x, config),
        train=True, drop_prob=batch["drop_prob"], rngs={"drop_path": k_drop}, mutable=["batch_stats"])
    logits = logits.astype(jnp.float32)
    aux = None if aux is None else aux.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    if aux is not None:
      loss = loss + config.auxiliary_weight * optax.softmax_cross_entropy_with_integer_labels(
          aux, batch["label"])
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return loss, (dict(new_state), {"accuracy": accuracy})

  return loss_fn


def make_forward(model: NetworkCIFAR, config: RecipeConfig = PAPER_RECIPE
                 ) -> Callable[[Any, Any, jax.Array], jax.Array]:
  """Inference: ``forward(params, model_state, images uint8 (B, 32, 32, 3)) -> float32 logits``,
  normalized input, BatchNorm's running averages, in ``config.compute_dtype`` (as trained). The
  evaluation step runs it, and ``inference_energy`` prices it."""

  def forward(params, model_state, images):
    logits, _ = model.apply({"params": cast_for_compute(params, config), **model_state},
                            cast_for_compute(augment.normalize(images), config), train=False)
    return logits.astype(jnp.float32)

  return forward


def make_eval_fn(model: NetworkCIFAR, config: RecipeConfig = PAPER_RECIPE) -> step_lib.EvalFn:
  """Per-example loss and top-1 accuracy with BatchNorm's running averages (in
  ``config.compute_dtype``, as trained)."""

  forward = make_forward(model, config)

  def eval_fn(params, model_state, batch, weights):
    del weights
    logits = forward(params, model_state, batch["image"])
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
      eval_step=step_lib.make_eval_step(make_eval_fn(model, config), mesh=mesh, batch_size=config.eval_batch_size))


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


def steps_per_epoch(data: Any, config: RecipeConfig) -> int:
  """Training steps of one epoch: full batches of ``data.x_train`` (the last partial one is dropped).

  Raises:
    ValueError: fewer training images than one batch.
  """
  n = len(data.x_train) // config.batch_size
  if n < 1:
    raise ValueError(f"{len(data.x_train)} training images are fewer than one batch of {config.batch_size}")
  return n


def total_steps(data: Any, config: RecipeConfig) -> int:
  """Training steps of the whole run: ``config.epochs * (len(data.x_train) // config.batch_size)``."""
  return config.epochs * steps_per_epoch(data, config)


def _zero_sums() -> dict[str, float]:
  return {"loss": 0.0, "accuracy": 0.0}


def _train_steps(train_step: step_lib.TrainStep, state: step_lib.TrainState, data: Any,
                 config: RecipeConfig, *, seed: int, start: int, stop: int, sums: dict[str, float],
                 end_epoch: Callable[[int, step_lib.TrainState, dict[str, float]], None]
                 ) -> tuple[step_lib.TrainState, dict[str, float]]:
  """The one training loop: global steps ``[start, stop)`` of the run, from any step to any step.

  Global step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``: the rows
  ``order[i * batch_size:(i + 1) * batch_size]`` of that epoch's order
  ``np.random.default_rng([seed, epoch]).permutation``, with the epoch's drop-path probability. The
  step index alone fixes the batch, so a run split anywhere (mid-epoch included) takes the same steps
  as one uninterrupted run; the state carries the PRNG key and the optimizer's step count.

  Args:
    sums: the running sums of the current epoch's per-step loss and accuracy (``{"loss",
      "accuracy"}``; zeros at an epoch start), added to in step order so that a split run adds the
      same floats in the same order.
    end_epoch: called as ``end_epoch(epoch, state, sums)`` after the last step of each epoch (the
      state must not be donated there); the sums restart at zero after it.

  Returns:
    ``(state, sums)``: the state after step ``stop - 1`` and the current epoch's running sums.
  """
  per_epoch = steps_per_epoch(data, config)
  size = config.batch_size
  order = None
  for s in range(start, stop):
    epoch, i = divmod(s, per_epoch)
    if order is None or i == 0:
      order = np.random.default_rng([seed, epoch]).permutation(len(data.x_train))
    idx = order[i * size:(i + 1) * size]
    batch = {"image": data.x_train[idx], "label": data.y_train[idx],
             "drop_prob": np.full(size, drop_prob_at(config, epoch), np.float32)}
    state, metrics = train_step(state, batch)
    for k in sums:
      sums[k] += float(metrics[k])
    if i == per_epoch - 1:
      end_epoch(epoch, state, sums)
      sums = _zero_sums()
  return state, sums


def _epoch_record(epoch: int, sums: dict[str, float], per_epoch: int) -> dict[str, float]:
  return {"epoch": epoch + 1, "train_loss": sums["loss"] / per_epoch,
          "train_accuracy": sums["accuracy"] / per_epoch}


def _restore(checkpointer: ckpt_lib.Checkpointer, state: step_lib.TrainState,
             mesh: jax.sharding.Mesh) -> ckpt_lib.Restored:
  """The latest checkpoint, restored like ``state`` and replicated on ``mesh``."""
  if len(mesh_lib.mesh_processes(mesh)) > 1:
    # A state over several processes cannot go to one device; every process restores its copy in
    # place, as the processes that saved it together (tests/training/test_multihost.py).
    return checkpointer.restore(target=state)
  # Restore onto one device (orbax cannot target arrays on an explicit-axes mesh), then replicate.
  restored = checkpointer.restore(target=jax.device_put(state, jax.local_devices()[0]))
  return dataclasses.replace(restored, state=mesh_lib.replicate(restored.state, mesh))


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

  The steps are :func:`_train_steps`'s (the loop :func:`train_until` runs too). A rerun with the same
  ``workdir`` continues from the last epoch saved and ends in the same state as an uninterrupted run
  (same seed, backend and device count). Returns ``(state, history)``.
  """
  per_epoch = steps_per_epoch(data, config)
  history: list[dict[str, float]] = []
  start_epoch = 0
  checkpointer = (ckpt_lib.Checkpointer(Path(workdir) / "checkpoints",
                                       processes=mesh_lib.mesh_processes(train_step.mesh))
                  if workdir else None)
  if checkpointer is not None and checkpointer.latest_step() is not None:
    restored = _restore(checkpointer, state, train_step.mesh)
    state, history, start_epoch = restored.state, list(restored.side_state["history"]), restored.step
  t0 = time.perf_counter()

  def end_epoch(epoch, state, sums):
    record = _epoch_record(epoch, sums, per_epoch)
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

  try:
    state, _ = _train_steps(train_step, state, data, config, seed=seed, start=start_epoch * per_epoch,
                            stop=config.epochs * per_epoch, sums=_zero_sums(), end_epoch=end_epoch)
  finally:
    if checkpointer is not None:
      checkpointer.close()
  return state, history


def _test_fn(compiled: _Compiled, data: Any, config: RecipeConfig
             ) -> Callable[[step_lib.TrainState], dict[str, float]]:
  """Test-set loss and accuracy of a state (padded last batch, BatchNorm's running averages)."""

  def test(state):
    out = step_lib.evaluate(compiled.eval_step, state, _batches(
        data.x_test, data.y_test, config.eval_batch_size, np.arange(len(data.x_test)), False))
    return {"test_accuracy": out["accuracy"], "test_loss": out["loss"]}

  return test


def train_network(genotype: Genotype, data: Any, config: RecipeConfig, *, seed: int = 0,
                  workdir: str | Path | None = None, mesh: jax.sharding.Mesh | None = None,
                  log: Callable[[str], None] | None = print) -> TrainResult:
  """Trains ``genotype``'s network on ``data`` (a ``Cifar10``-like object) and tests it after every
  epoch; with ``workdir`` it checkpoints and resumes (see :func:`fit`)."""
  mesh = mesh or mesh_lib.make_data_mesh()
  compiled = _compiled(genotype, config, steps_per_epoch(data, config), mesh)
  state, history = fit(compiled.train_step, init_state(compiled, seed, mesh), data, config, seed=seed,
                       workdir=workdir, evaluate=_test_fn(compiled, data, config), log=log)
  last = history[-1]
  n_params = count_params(genotype, config.init_channels, config.layers)
  return TrainResult(test_accuracy=last["test_accuracy"], test_loss=last["test_loss"], n_params=n_params,
                     epochs=config.epochs, history=tuple(history), state=state)


# A job keeps its newest two checkpoints: the latest, and one to fall back on should it be damaged.
JOB_MAX_TO_KEEP = 2
_JOB_FILE = "job.json"


def _recipe_key(config: RecipeConfig) -> dict[str, Any]:
  """The recipe as a job records it; the float32 default of ``compute_dtype`` is left out, so that
  jobs recorded before the option existed keep their directory and resume."""
  key = dataclasses.asdict(config)
  if key["compute_dtype"] == "float32":
    del key["compute_dtype"]
  return key


def job_dir(root: str | Path, genotype: Genotype, config: RecipeConfig, seed: int) -> Path:
  """The directory of one training job under ``root``: ``<12 hex digits>-seed<seed>``, the digits a
  hash of the genotype and recipe, so that one (architecture, recipe, seed) always lands in the same
  place and a rerun resumes it.

  Inside, :func:`train_until` keeps ``job.json`` (what the job is) and ``checkpoints/<global step>``
  (at most :data:`JOB_MAX_TO_KEEP` of them).
  """
  key = json.dumps({"genotype": genotype.to_json(), "recipe": _recipe_key(config)}, sort_keys=True)
  return Path(root) / f"{hashlib.sha256(key.encode()).hexdigest()[:12]}-seed{int(seed)}"


def _check_job(workdir: Path, genotype: Genotype, config: RecipeConfig, seed: int, data: Any) -> None:
  """Records the job in ``workdir/job.json``, or checks that the one recorded there is this one."""
  job = {"genotype": genotype.to_json(), "recipe": _recipe_key(config), "seed": int(seed),
         "n_train": len(data.x_train), "n_test": len(data.x_test)}
  path = workdir / _JOB_FILE
  if not path.exists():
    # Hidden files may be the temporary file of a job.json write that a kill interrupted.
    if workdir.is_dir() and any(not f.name.startswith(".") for f in workdir.iterdir()):
      raise WorkdirError(f"{workdir} holds files but no {_JOB_FILE}: it is not a training job's "
                         "directory; use a new or empty one.")
    fileio.atomic_write_json(path, job)
    return
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} cannot be read ({e}); delete the job directory to start it again.") from None
  diff = sorted(k for k in job if saved.get(k) != json.loads(json.dumps(job[k])))
  if diff:
    raise WorkdirError(f"{workdir} holds another training job (its {', '.join(diff)} differ from this "
                       "one's); use job_dir() or a new directory for this one.")


@dataclasses.dataclass(frozen=True)
class TrainProgress:
  """Where a training job stands after :func:`train_until`.

  Attributes:
    step: global steps done (the checkpoint's step).
    total_steps: steps of the whole run (:func:`total_steps`).
    finished: ``step == total_steps``; the test metrics are set only then.
    test_accuracy, test_loss: on the test set after the last step; ``None`` until finished.
    n_params: the network's parameter count.
    history: ``{epoch, train_loss, train_accuracy}`` of each completed epoch.
    steps_run: steps this call trained (0 when the checkpoint was already there).
    seconds: wall-clock seconds this call spent training and testing.
    state: the training state at ``step``.
  """

  step: int
  total_steps: int
  finished: bool
  test_accuracy: float | None
  test_loss: float | None
  n_params: int
  history: tuple[dict[str, float], ...]
  steps_run: int
  seconds: float
  state: step_lib.TrainState


def train_until(genotype: Genotype, data: Any, config: RecipeConfig, *, seed: int, workdir: str | Path,
                stop_step: int, mesh: jax.sharding.Mesh | None = None,
                log: Callable[[str], None] | None = None) -> TrainProgress:
  """Advances a from-scratch training job to global step ``stop_step``, from its latest checkpoint.

  The job is ``train_network(genotype, data, config, seed=seed)`` cut into segments: any split of
  ``[0, total_steps]`` into calls (mid-epoch too, each in a fresh process) ends with the same
  parameters, bit for bit, and the same test accuracy as one call and as :func:`train_network` (same
  backend and device count), because both run :func:`_train_steps` and the step index fixes the
  batch. A segment checkpoints at each epoch end inside it and at ``stop_step``; when ``stop_step``
  reaches the total it tests the network and keeps the test metrics in the last checkpoint.

  Idempotent: when the checkpoint is already at or beyond ``stop_step`` nothing is trained; the call
  returns where the job stands.

  Args:
    genotype, data, config, seed: the job, as for :func:`train_network`.
    workdir: the job's directory (see :func:`job_dir`); new, empty or this job's.
    stop_step: the global step to reach; clipped to :func:`total_steps`.
    mesh: data mesh (default: every device).
    log: receives one line per completed epoch and one per call.

  Raises:
    ValueError: ``stop_step`` < 0 or fewer training images than one batch.
    WorkdirError: ``workdir`` holds other files or another job.
    CheckpointError: the latest checkpoint is unreadable or incompatible.
  """
  if stop_step < 0:
    raise ValueError(f"stop_step must be >= 0, got {stop_step}")
  t0 = time.perf_counter()
  total = total_steps(data, config)
  per_epoch = steps_per_epoch(data, config)
  stop = min(int(stop_step), total)
  workdir = Path(workdir)
  _check_job(workdir, genotype, config, seed, data)
  mesh = mesh or mesh_lib.make_data_mesh()
  compiled = _compiled(genotype, config, per_epoch, mesh)
  history: list[dict[str, float]] = []
  sums, test, start = _zero_sums(), None, 0
  with ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=JOB_MAX_TO_KEEP,
                             processes=mesh_lib.mesh_processes(mesh)) as checkpointer:
    if checkpointer.latest_step() is None:
      state = init_state(compiled, seed, mesh)
    else:
      # Restored onto the state's shapes alone: a resumed segment never compiles the initializer.
      one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one),
                            jax.eval_shape(lambda: init_state(compiled, seed, None)))
      restored = checkpointer.restore(target=target)
      state, start, side = mesh_lib.replicate(restored.state, mesh), restored.step, restored.side_state
      history, sums, test = list(side["history"]), dict(side["sums"]), side.get("test")
    if start < stop:

      def end_epoch(epoch, state, sums):
        history.append(_epoch_record(epoch, sums, per_epoch))
        if (epoch + 1) * per_epoch < stop:  # the segment's own end is saved below, with its test
          checkpointer.save((epoch + 1) * per_epoch, state, {"history": history, "sums": _zero_sums()})
        if log is not None:
          log(f"epoch {epoch + 1}/{config.epochs}  train loss {history[-1]['train_loss']:.4f}  "
              f"train accuracy {history[-1]['train_accuracy']:.4f}")

      state, sums = _train_steps(compiled.train_step, state, data, config, seed=seed, start=start,
                                 stop=stop, sums=sums, end_epoch=end_epoch)
      if stop == total:
        test = _test_fn(compiled, data, config)(state)
      checkpointer.save(stop, state, {"history": history, "sums": sums, "test": test})
    elif start == total and test is None:  # a final step saved without its test: test it now
      test = _test_fn(compiled, data, config)(state)
  step = max(start, stop)
  if int(state.step) != step:
    raise ckpt_lib.CheckpointError(f"{workdir}: the checkpoint of step {step} holds a state at step "
                                   f"{int(state.step)}; delete the job directory to start it again.")
  seconds = time.perf_counter() - t0
  if log is not None:
    shown = f"  test accuracy {test['test_accuracy']:.4f}" if test is not None else ""
    log(f"step {step}/{total}  trained {max(0, stop - start)} steps in {seconds:.1f} s{shown}")
  return TrainProgress(step=step, total_steps=total, finished=step == total,
                       test_accuracy=None if test is None else test["test_accuracy"],
                       test_loss=None if test is None else test["test_loss"],
                       n_params=count_params(genotype, config.init_channels, config.layers),
                       history=tuple(history), steps_run=max(0, stop - start), seconds=seconds,
                       state=state)


def _predicted_cost(fn: Callable[..., Any], args: tuple, *, batch_size: int, device: str,
                    what: str) -> dict[str, Any]:
  """The one pricing of a jitted program: the kernels XLA would launch for ``fn(*args)`` (``energy``
  gpu mode, lowered for CUDA on any host) priced by ``device``'s analytical prior model."""
  from cenas_jax import energy  # pylint: disable=g-import-not-at-top
  from cenas_jax.errors import CenasError  # pylint: disable=g-import-not-at-top

  graph = energy.extract_kernel_graph(fn, *args, mode="gpu")
  if graph.lowered_for != "cuda":
    raise CenasError(f"the {what} could not be lowered for CUDA (got {graph.lowered_for}); "
                     "its kernels would not be an NVIDIA GPU's.")
  prior = energy.prior_model(device)
  return {"energy_j": energy.predict_energy_j(prior, graph.kernels, batch_size=batch_size),
          "time_s": energy.predict_time_s(prior, graph.kernels, batch_size=batch_size),
          "n_kernels": len(graph.kernels), "batch_size": batch_size, "device": device,
          "energy_source": f"predicted-{prior.provenance}"}


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
  compiled = _compiled(genotype, config, 1, mesh_lib.make_data_mesh(1))
  state = jax.eval_shape(lambda: init_state(compiled, 0, None))
  b = config.batch_size
  batch = {"image": jax.ShapeDtypeStruct((b, 32, 32, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32),
           "drop_prob": jax.ShapeDtypeStruct((b,), jnp.float32)}
  weights = jax.ShapeDtypeStruct((b,), jnp.float32)
  return _predicted_cost(compiled.train_step.step_fn, (state, batch, weights), batch_size=b,
                         device=device, what="train step")


def inference_energy(genotype: Genotype, config: RecipeConfig, batch_size: int = 1,
                     device: str = "h100-sxm") -> dict[str, Any]:
  """Predicted energy (J) and time (s) of one inference call of ``genotype``'s trained network on
  ``batch_size`` images on the NVIDIA ``device``, and the same per image.

  The program is the evaluation forward (``make_forward``: normalization, the network with
  BatchNorm's running averages, no auxiliary head, in ``config.compute_dtype``) at the shape of
  ``config`` (``init_channels``, ``layers``); its kernels are priced as ``train_step_energy``'s, so
  the label is the same ``predicted-prior:<device>``.

  Returns:
    ``{"energy_j", "time_s", "energy_j_per_image", "time_s_per_image", "n_kernels", "batch_size",
    "device", "energy_source"}``.

  Raises:
    ValueError: ``batch_size`` < 1.
    CenasError: the forward could not be lowered for CUDA.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  model = make_model(genotype, config)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                train=False))
  variables = dict(variables)
  params = variables.pop("params")
  forward = jax.jit(make_forward(model, config))
  images = jax.ShapeDtypeStruct((batch_size, 32, 32, 3), jnp.uint8)
  out = _predicted_cost(forward, (params, variables, images), batch_size=batch_size, device=device,
                        what="inference forward")
  out["energy_j_per_image"] = out["energy_j"] / batch_size
  out["time_s_per_image"] = out["time_s"] / batch_size
  return out
