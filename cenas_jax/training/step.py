"""One train state and one data-parallel train/eval step for every network (supernets, CIFAR-10).

The state is one pytree, :class:`TrainState` (parameters, optimizer state, model state such as
BatchNorm statistics, step counter, PRNG key), so a step is a pure function ``state -> state`` that
``jit`` can donate and :class:`cenas_jax.training.checkpoint.Checkpointer` can save whole.

The caller writes a *per-example* loss; the step does the rest:

- **Data parallelism by sharding under ``jit``**, not ``jax.shard_map`` + ``jax.lax.pmean``: the batch
  is sharded along the explicit ``data`` mesh axis and the parameters are replicated, and the loss
  is the weighted mean over the *global* batch, so its gradient is the global mean and XLA inserts
  the cross-device all-reduce itself. This was chosen because the program is then the same on 1 and
  on N devices (the numbers agree to float rounding), padded rows spread unevenly over devices need
  no per-device normalisation (a ``pmean`` of per-device means would weight a device holding padding
  as much as a full one), and BatchNorm statistics are over the global batch as on one device (under
  ``shard_map`` they would be per device unless every model added its own ``pmean``).
- **Ragged batches without retracing**: every batch is padded to the compiled ``batch_size`` by
  repeating its last row (real values, so the padded forward pass stays finite) and gets
  per-example weights, 1 for real rows and 0 for padding. Losses and metrics are weighted means; a
  model with BatchNorm must pass ``mask=weights > 0`` so padding stays out of its statistics.
- **Compiled once**: the jitted step is wrapped in ``chex.assert_max_traces(n=1)``, so a retrace
  (a shape, dtype or sharding that changed between calls) fails loudly instead of recompiling.
- **Donation**: the state argument is donated (``donate_argnums=0``); after a step the old state's
  buffers are deleted and must not be used again.
- **Checks at the boundaries** (``chex``): the batch's leaves share a leading size no larger than
  ``batch_size`` and are finite; inside the step the per-example loss has shape ``(batch_size,)``; with
  ``check_finite`` the returned loss is checked to be finite (this waits for the step to finish).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from cenas_jax.training import mesh as mesh_lib

Batch = Any  # pytree of arrays with a common leading (example) axis
# loss_fn(params, model_state, batch, weights, rng) -> (per_example_loss (B,),
#                                                       (new_model_state, {name: per-example (B,)}))
LossFn = Callable[[Any, Any, Batch, jax.Array, jax.Array],
                  tuple[jax.Array, tuple[Any, Mapping[str, jax.Array]]]]
# eval_fn(params, model_state, batch, weights) -> {name: per-example (B,)}
EvalFn = Callable[[Any, Any, Batch, jax.Array], Mapping[str, jax.Array]]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["params", "opt_state", "model_state", "step", "rng"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a training step reads and writes (a pytree; replace fields, never mutate).

  Attributes:
    params: trainable parameters.
    opt_state: the optax optimizer state of ``params``.
    model_state: non-trained state the forward pass updates, e.g. ``{"batch_stats": ...}``;
      ``{}`` when there is none.
    step: int32 scalar, number of steps taken.
    rng: typed PRNG key (``jax.random.key``), split once per step.
  """

  params: Any
  opt_state: Any
  model_state: Any
  step: jax.Array
  rng: jax.Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation, rng: jax.Array, *,
                     model_state: Any = None, mesh: Mesh | None = None) -> TrainState:
  """A fresh state at step 0, replicated over ``mesh`` when one is given.

  Args:
    params: initial parameters.
    optimizer: the optimizer the train step will use.
    rng: typed PRNG key (``jax.random.key(seed)``).
    model_state: initial model state (e.g. BatchNorm statistics); ``None``: ``{}``.
    mesh: a mesh from :func:`cenas_jax.training.mesh.make_data_mesh`; the state is replicated on it.
  """
  state = TrainState(params=params, opt_state=optimizer.init(params),
                     model_state={} if model_state is None else model_state,
                     step=jnp.zeros((), jnp.int32), rng=rng)
  return state if mesh is None else mesh_lib.replicate(state, mesh)


def pad_batch(batch: Batch, size: int) -> tuple[Batch, np.ndarray]:
  """Pads a batch of ``n <= size`` rows to ``size`` rows by repeating its last row.

  Args:
    batch: pytree of arrays with a common leading size ``n >= 1``.
    size: the compiled batch size.

  Returns:
    ``(padded batch as numpy arrays, float32 (size,) weights)``: weight 1 for the ``n`` real rows
    and 0 for the padding.

  Raises:
    ValueError: an empty batch, leaves of different leading sizes, or ``n > size``.
  """
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError("the batch has no arrays.")
  sizes = {int(np.shape(x)[0]) for x in leaves}
  if len(sizes) != 1:
    raise ValueError("every leaf of a batch needs the same leading (example) size, got "
                     f"{sorted(sizes)}.")
  n = sizes.pop()
  if not 1 <= n <= size:
    raise ValueError(f"a batch of {n} rows does not fit the compiled batch size {size}.")
  weights = np.zeros(size, np.float32)
  weights[:n] = 1.0

  def pad(x):
    x = np.asarray(x)
    if n == size:
      return x
    return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)], axis=0)

  return jax.tree.map(pad, batch), weights


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  chex.assert_equal_shape([values, weights])
  return jnp.sum(values * weights) / jnp.sum(weights)


def _prepare(batch: Batch, batch_size: int, mesh: Mesh) -> tuple[Batch, jax.Array]:
  """Host-side boundary: checks, pads and shards a batch and its weights."""
  chex.assert_tree_all_finite(batch)
  # On many hosts every process passes the same global batch; shard_batch keeps this process's rows.
  padded, weights = pad_batch(batch, batch_size)
  return mesh_lib.shard_batch((padded, weights), mesh)


_instances = itertools.count()


def _compile_once(fn: Callable, name: str) -> Callable:
  """``fn`` wrapped in ``chex.assert_max_traces(n=1)``, counted for this step object alone.

  chex counts traces per definition site (call stack, source and ``__name__``), so every step built
  by the same caller would share one count and the second step object would fail at its first
  trace; a unique ``__name__`` gives each step object its own count.
  """
  fn.__name__ = fn.__qualname__ = f"{name}_{next(_instances)}"
  return chex.assert_max_traces(fn, n=1)


def _check_batch_size(batch_size: int, mesh: Mesh) -> int:
  batch_size = int(batch_size)
  n_dev = mesh_lib.data_size(mesh)
  if batch_size < 1 or batch_size % n_dev:
    raise ValueError(f"batch_size must be a positive multiple of the {n_dev} devices along the data "
                     f"axis, got {batch_size}.")
  return batch_size


class TrainStep:
  """A compiled data-parallel training step: ``state, metrics = step(state, batch)``.

  ``batch`` may have any number of rows up to ``batch_size``; it is padded, masked and sharded, so
  the step compiles once. ``state`` is donated: do not use it after the call. ``metrics`` holds the
  weighted means of the loss (``"loss"``) and of every per-example metric ``loss_fn`` returns, and
  ``"weight"``, the number of real rows.
  """

  def __init__(self, loss_fn: LossFn, optimizer: optax.GradientTransformation, *, mesh: Mesh,
               batch_size: int, check_finite: bool = True):
    self.mesh = mesh
    self.batch_size = _check_batch_size(batch_size, mesh)
    self.check_finite = check_finite
    size = self.batch_size

    def step(state: TrainState, batch: Batch, weights: jax.Array) -> tuple[TrainState, dict]:
      rng, step_rng = jax.random.split(state.rng)

      def loss(params):
        per_example, (model_state, metrics) = loss_fn(params, state.model_state, batch, weights,
                                                      step_rng)
        chex.assert_shape(per_example, (size,))
        return _weighted_mean(per_example, weights), (model_state, metrics)

      (value, (model_state, metrics)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      out = {name: _weighted_mean(v, weights) for name, v in metrics.items()}
      out["loss"] = value
      out["weight"] = jnp.sum(weights)
      return TrainState(params=params, opt_state=opt_state, model_state=model_state,
                        step=state.step + 1, rng=rng), out

    self.step_fn = step  # the pure function, not jitted (for tests and debugging)
    self.jitted = jax.jit(_compile_once(step, "train_step"), donate_argnums=0,
                         out_shardings=mesh_lib.replicated_sharding(mesh))

  def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    batch, weights = _prepare(batch, self.batch_size, self.mesh)
    with jax.set_mesh(self.mesh):
      state, metrics = self.jitted(state, batch, weights)
    if self.check_finite:
      chex.assert_tree_all_finite(metrics["loss"])
    return state, metrics


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, mesh: Mesh,
                    batch_size: int, check_finite: bool = True) -> TrainStep:
  """The training step of ``loss_fn`` under ``optimizer``, data-parallel over ``mesh``.

  Args:
    loss_fn: ``loss_fn(params, model_state, batch, weights, rng)`` -> ``(per_example_loss,
      (new_model_state, metrics))``: ``per_example_loss`` of shape ``(batch_size,)``, ``metrics`` a
      dict of per-example ``(batch_size,)`` arrays (e.g. ``{"accuracy": ...}``). ``weights`` is 1 for
      real rows and 0 for padding (pass ``mask=weights > 0`` to BatchNorm); ``rng`` is a fresh key
      for this step (dropout, augmentation). Return ``model_state`` unchanged when there is none.
    optimizer: an optax gradient transformation.
    mesh: a mesh from :func:`cenas_jax.training.mesh.make_data_mesh`.
    batch_size: the compiled global batch size, a multiple of the devices along ``data``.
    check_finite: check the returned loss is finite after each step (waits for the step).

  Raises:
    ValueError: ``batch_size`` is not a positive multiple of the devices along ``data``.
  """
  return TrainStep(loss_fn, optimizer, mesh=mesh, batch_size=batch_size, check_finite=check_finite)


class EvalStep:
  """A compiled evaluation step: ``sums = step(state, batch)`` (state not donated).

  Returns the weighted *sums* of every per-example metric and ``"weight"``, the number of real rows,
  so that batches of a dataset add up exactly; :func:`evaluate` turns them into means.
  """

  def __init__(self, eval_fn: EvalFn, *, mesh: Mesh, batch_size: int):
    self.mesh = mesh
    self.batch_size = _check_batch_size(batch_size, mesh)
    size = self.batch_size

    def step(state: TrainState, batch: Batch, weights: jax.Array) -> dict[str, jax.Array]:
      metrics = eval_fn(state.params, state.model_state, batch, weights)
      chex.assert_shape(list(metrics.values()), (size,))
      out = {name: jnp.sum(v * weights) for name, v in metrics.items()}
      out["weight"] = jnp.sum(weights)
      return out

    self.jitted = jax.jit(_compile_once(step, "eval_step"))

  def __call__(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    batch, weights = _prepare(batch, self.batch_size, self.mesh)
    with jax.set_mesh(self.mesh):
      return self.jitted(state, batch, weights)


def make_eval_step(eval_fn: EvalFn, *, mesh: Mesh, batch_size: int) -> EvalStep:
  """The evaluation step of ``eval_fn``, data-parallel over ``mesh``, padded as the train step.

  Args:
    eval_fn: ``eval_fn(params, model_state, batch, weights)`` -> dict of per-example
      ``(batch_size,)`` metrics (e.g. ``{"loss": ..., "accuracy": ...}``), in inference mode
      (BatchNorm's running averages).
    mesh: a mesh from :func:`cenas_jax.training.mesh.make_data_mesh`.
    batch_size: the compiled global batch size, a multiple of the devices along ``data``.
  """
  return EvalStep(eval_fn, mesh=mesh, batch_size=batch_size)


def evaluate(eval_step: EvalStep, state: TrainState, batches: Iterable[Batch]) -> dict[str, float]:
  """Means of every metric over all rows of ``batches`` (each weighted by its real rows).

  Raises:
    ValueError: ``batches`` is empty.
  """
  totals: dict[str, jax.Array] | None = None
  for batch in batches:
    sums = eval_step(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("evaluate needs at least one batch.")
  weight = float(totals.pop("weight"))
  return {name: float(v) / weight for name, v in totals.items()}
