"""Tests for cenas_jax.training.step: 1 vs 8 devices, padding, one compilation, donation, jit."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cenas_jax.training import mesh as mesh_lib
from cenas_jax.training import step as step_lib


class _Net(nn.Module):
  """Dense -> BatchNorm (masked) -> relu -> Dense: has model state, like the real networks."""

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x, mask=mask)
    return nn.Dense(3)(nn.relu(x))


_NET = _Net()
_OPT = optax.sgd(0.1, momentum=0.9)


def _loss_fn(params, model_state, batch, weights, rng):
  del rng
  logits, updates = _NET.apply({"params": params, **model_state}, batch["x"], train=True,
                               mask=(weights > 0)[:, None], mutable=["batch_stats"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  return loss, (updates, {"accuracy": (logits.argmax(-1) == batch["y"]).astype(jnp.float32)})


def _eval_fn(params, model_state, batch, weights):
  del weights
  logits = _NET.apply({"params": params, **model_state}, batch["x"], train=False)
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]),
          "accuracy": (logits.argmax(-1) == batch["y"]).astype(jnp.float32)}


def _data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, 5)).astype(np.float32), "y": rng.integers(0, 3, n)}


@functools.cache
def _initial_variables():
  """Initial variables as host arrays (so that donating a state never deletes them)."""
  init = jax.jit(functools.partial(_NET.init, train=False))
  return jax.tree.map(np.asarray, init(jax.random.key(0), jnp.zeros((2, 5))))


def _state(mesh):
  variables = _initial_variables()
  return step_lib.init_train_state(variables["params"], _OPT, jax.random.key(1),
                                   model_state={"batch_stats": variables["batch_stats"]}, mesh=mesh)


def _host(tree):
  def to_numpy(x):
    is_key = jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(x) if is_key else x)

  return jax.tree.map(to_numpy, tree)


def _run(mesh, batch_size, batches):
  step = step_lib.make_train_step(_loss_fn, _OPT, mesh=mesh, batch_size=batch_size)
  state, history = _state(mesh), []
  for batch in batches:
    state, metrics = step(state, batch)
    history.append(_host(metrics))
  return _host(state), history


def _assert_close(a, b, tol=1e-5):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=tol, atol=tol), a, b)


def test_one_and_eight_devices_give_the_same_losses_gradients_and_state():
  batches = [_data(16, seed) for seed in range(3)]
  state1, hist1 = _run(mesh_lib.make_data_mesh(1), 16, batches)
  state8, hist8 = _run(mesh_lib.make_data_mesh(8), 16, batches)
  _assert_close(hist1, hist8)
  _assert_close(state1.params, state8.params)  # same gradients, step after step
  _assert_close(state1.model_state, state8.model_state)  # BatchNorm over the global batch
  assert int(state8.step) == 3
  # The gradient itself, on both meshes.
  grads = []
  for n in (1, 8):
    mesh = mesh_lib.make_data_mesh(n)
    state, batch = _state(mesh), mesh_lib.shard_batch(batches[0], mesh)
    weights = mesh_lib.shard_batch(np.ones(16, np.float32), mesh)
    with jax.set_mesh(mesh):
      grads.append(_host(jax.jit(jax.grad(lambda p: jnp.mean(_loss_fn(
          p, state.model_state, batch, weights, None)[0])))(state.params)))
  _assert_close(grads[0], grads[1])


def test_padding_gives_the_unpadded_result():
  batch = _data(5)
  state_exact, hist_exact = _run(mesh_lib.make_data_mesh(1), 5, [batch])
  state_pad, hist_pad = _run(mesh_lib.make_data_mesh(8), 16, [batch])  # 5 real rows + 11 padding
  _assert_close(hist_exact, hist_pad)
  assert hist_pad[0]["weight"] == 5
  _assert_close(state_exact.params, state_pad.params)
  _assert_close(state_exact.model_state, state_pad.model_state)  # padding kept out of BN stats
  padded, weights = step_lib.pad_batch(batch, 8)
  np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(padded["x"][5:], np.repeat(batch["x"][4:], 3, axis=0))
  with pytest.raises(ValueError, match="does not fit the compiled batch size 4"):
    step_lib.pad_batch(batch, 4)


def _compiles(caplog, name: str) -> int:
  return sum(f"Compiling jit({name}" in r.getMessage() for r in caplog.records)


def test_ragged_batches_compile_once_and_eval_matches(caplog):
  mesh = mesh_lib.make_data_mesh(8)
  step = step_lib.make_train_step(_loss_fn, _OPT, mesh=mesh, batch_size=16)
  eval_step = step_lib.make_eval_step(_eval_fn, mesh=mesh, batch_size=16)
  state = _state(mesh)
  data = _data(40, 9)
  parts = [{k: v[i:i + 16] for k, v in data.items()} for i in range(0, 40, 16)]  # 16, 16, 8
  with jax.log_compiles():
    for n in (16, 11, 3, 16, 1):  # chex.assert_max_traces(n=1) also raises on a retrace
      state, _ = step(state, _data(n, n))
    means = step_lib.evaluate(eval_step, state, parts)
  assert _compiles(caplog, step.jitted.__name__) == 1
  assert _compiles(caplog, eval_step.jitted.__name__) == 1
  full = _host(_eval_fn(state.params, state.model_state, data, None))
  assert means["accuracy"] == pytest.approx(full["accuracy"].mean(), abs=1e-6)
  assert means["loss"] == pytest.approx(full["loss"].mean(), rel=1e-5)
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    step_lib.make_train_step(_loss_fn, _OPT, mesh=mesh, batch_size=12)


def test_state_is_donated():
  mesh = mesh_lib.make_data_mesh(8)
  step = step_lib.make_train_step(_loss_fn, _OPT, mesh=mesh, batch_size=16)
  old = _state(mesh)
  new, _ = step(old, _data(16))
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old))
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new))
  with pytest.raises(RuntimeError, match="deleted"):
    np.asarray(old.params["Dense_0"]["kernel"])


def _linear_loss_fn(params, model_state, batch, weights, rng):
  del weights, rng
  logits = batch["x"] @ params["w"] + params["b"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  return loss, (model_state, {})


def test_jit_and_no_jit_agree():
  # A plain linear model: op-by-op execution compiles every primitive, so keep them few.
  mesh = mesh_lib.make_data_mesh(1)
  step = step_lib.make_train_step(_linear_loss_fn, _OPT, mesh=mesh, batch_size=8)
  params = {"w": np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(5, 3),
            "b": np.zeros(3, np.float32)}
  batch, weights = step_lib.pad_batch(_data(6), 8)
  fresh = lambda: step_lib.init_train_state(params, _OPT, jax.random.key(1), mesh=mesh)  # noqa: E731
  eager_state, eager_metrics = step.step_fn(fresh(), batch, weights)  # op by op
  jit_state, jit_metrics = step(fresh(), _data(6))
  _assert_close(_host(eager_metrics), _host(jit_metrics))
  _assert_close(_host(eager_state), _host(jit_state))


def test_non_finite_batch_or_loss_is_refused():
  mesh = mesh_lib.make_data_mesh(1)
  step = step_lib.make_train_step(_loss_fn, _OPT, mesh=mesh, batch_size=4)
  bad = _data(4)
  bad["x"][2, 1] = np.nan
  with pytest.raises(AssertionError, match="finite"):
    step(_state(mesh), bad)
  diverging = step_lib.make_train_step(
      lambda *a: (jnp.full((4,), jnp.inf), (a[1], {})), _OPT, mesh=mesh, batch_size=4)
  with pytest.raises(AssertionError, match="finite"):
    diverging(_state(mesh), _data(4))
