"""Training DARTS networks with the CIFAR recipe: schedule, optimizer, learning, resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import numpy as np
import pytest

from cenas_jax.spaces import darts
from cenas_jax.training import cifar
from cenas_jax.training import mesh as mesh_lib

_TINY = dataclasses.replace(cifar.SMOKE_RECIPE, epochs=3, batch_size=32, init_channels=2, layers=3,
                            learning_rate=0.1, eval_batch_size=64, drop_path_prob=0.1, cutout_length=8)


@dataclasses.dataclass
class _Data:
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def _bright_dark(n, seed):
  """Two classes anyone can learn: dark and bright images."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n).astype(np.int32)
  x = rng.integers(0, 100, (n, 32, 32, 3)) + 150 * y[:, None, None, None]
  return x.astype(np.uint8), y


# Cheap to compile: pools and skips only (the stem, preprocessing and classifier still learn).
_LIGHT = darts._g([("skip_connect", 0), ("max_pool_3x3", 1)] * 4,  # pylint: disable=protected-access
                  [("avg_pool_3x3", 0), ("skip_connect", 1)] * 4)


def _data():
  x, y = _bright_dark(96, 0)
  xt, yt = _bright_dark(64, 1)
  return _Data(x, y, xt, yt)


def _step_and_state(model, config, optimizer, mesh):
  """A batch-16 train step of ``model`` and its fresh state (seeds 0 and 1)."""
  step = cifar.step_lib.make_train_step(cifar.make_loss_fn(model, config), optimizer, mesh=mesh,
                                        batch_size=16)
  variables = dict(model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False))
  params = variables.pop("params")
  return step, cifar.step_lib.init_train_state(params, optimizer, jax.random.key(1),
                                               model_state=variables, mesh=mesh)


def test_recipe_defaults_are_the_paper_recipe():
  r = cifar.PAPER_RECIPE
  assert (r.epochs, r.batch_size, r.learning_rate, r.momentum, r.weight_decay) == (600, 96, 0.025, 0.9, 3e-4)
  assert (r.cutout_length, r.drop_path_prob, r.auxiliary_weight, r.grad_clip_norm) == (16, 0.2, 0.4, 5.0)
  assert (r.init_channels, r.layers) == (36, 20)
  assert cifar.drop_prob_at(r, 0) == 0.0 and cifar.drop_prob_at(r, 300) == pytest.approx(0.1)
  with pytest.raises(ValueError, match="drop_path_prob"):
    cifar.RecipeConfig(drop_path_prob=1.0)


def test_optimizer_is_clip_then_decay_then_cosine_sgd():
  config = dataclasses.replace(cifar.PAPER_RECIPE, epochs=2, momentum=0.0)
  opt = cifar.make_optimizer(config, steps_per_epoch=5)
  params = {"w": np.full(4, 2.0, np.float32)}
  state = opt.init(params)
  grads = {"w": np.full(4, 10.0, np.float32)}  # norm 20, clipped to 5
  updates, _ = opt.update(grads, state, params)
  expected = -0.025 * (10.0 * 5.0 / 20.0 + 3e-4 * 2.0)
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)


def test_trains_learns_and_resumes_to_the_same_state(tmp_path):
  data = _data()
  mesh = mesh_lib.make_data_mesh(1)
  full = cifar.train_network(_LIGHT, data, _TINY, seed=0, workdir=tmp_path / "a",
                             mesh=mesh, log=None)
  assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
  assert full.test_accuracy >= 0.9  # two separable classes
  assert full.n_params == darts.count_params(_LIGHT, 2, 3)

  class Killed(Exception):
    pass

  def die_after_first_epoch(line):
    if line.startswith("epoch 1/"):
      raise Killed

  with pytest.raises(Killed):
    cifar.train_network(_LIGHT, data, _TINY, seed=0, workdir=tmp_path / "b",
                        mesh=mesh, log=die_after_first_epoch)
  resumed = cifar.train_network(_LIGHT, data, _TINY, seed=0, workdir=tmp_path / "b",
                                mesh=mesh, log=None)
  assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
  for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed.test_accuracy == full.test_accuracy


def test_train_step_energy_is_a_labelled_prediction_that_grows_with_the_batch():
  small = cifar.train_step_energy(_LIGHT, dataclasses.replace(_TINY, batch_size=8), "h100-sxm")
  large = cifar.train_step_energy(_LIGHT, dataclasses.replace(_TINY, batch_size=64), "h100-sxm")
  assert small["energy_source"] == "predicted-prior:h100-sxm"
  assert small["n_kernels"] == large["n_kernels"] > 10
  assert 0 < small["energy_j"] < large["energy_j"] and 0 < small["time_s"] < large["time_s"]


def test_inference_energy_prices_the_eval_forward_per_image():
  one = cifar.inference_energy(_LIGHT, _TINY, 1, "h100-sxm")
  eight = cifar.inference_energy(_LIGHT, _TINY, 8, "h100-sxm")
  step = cifar.train_step_energy(_LIGHT, dataclasses.replace(_TINY, batch_size=8), "h100-sxm")
  assert one["energy_source"] == step["energy_source"] == "predicted-prior:h100-sxm"
  assert one["n_kernels"] == eight["n_kernels"] > 5
  assert eight["energy_j_per_image"] == pytest.approx(eight["energy_j"] / 8)
  assert eight["time_s_per_image"] == pytest.approx(eight["time_s"] / 8)
  assert one["energy_j_per_image"] == one["energy_j"]
  # A call of 8 images costs more than one of 1, but less per image (launches are shared); the
  # forward alone costs less than a training step (forward, backward and update) of the same batch.
  assert one["energy_j"] < eight["energy_j"] < 8 * one["energy_j"]
  assert eight["energy_j"] < step["energy_j"] and eight["n_kernels"] < step["n_kernels"]
  # Sep-convs launch more kernels than pools and skips, so the heavier cell costs more.
  heavy = cifar.inference_energy(darts.GENOTYPES["DARTS_V2"], _TINY, 1, "h100-sxm")
  assert heavy["energy_j"] > one["energy_j"] and heavy["n_kernels"] > one["n_kernels"]
  with pytest.raises(ValueError, match="batch_size"):
    cifar.inference_energy(_LIGHT, _TINY, 0)


def test_one_and_eight_devices_take_the_same_step():
  """Augmentation, drop-path, BatchNorm over the global batch and the update agree across meshes."""
  data = _data()
  batch = {"image": data.x_train[:16], "label": data.y_train[:16], "drop_prob": np.full(16, 0.2, np.float32)}
  config = dataclasses.replace(_TINY, batch_size=16)
  model = cifar.make_model(_LIGHT, config)
  optimizer = cifar.make_optimizer(config, 3)
  out = []
  for n in (1, 8):
    mesh = mesh_lib.make_data_mesh(n)
    step, state = _step_and_state(model, config, optimizer, mesh)
    state, metrics = step(state, batch)
    out.append((float(metrics["loss"]), jax.device_get(state.params), jax.device_get(state.model_state)))
  assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
  for a, b in zip(jax.tree.leaves(out[0][1:]), jax.tree.leaves(out[1][1:])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


def test_bfloat16_compute_keeps_float32_state_and_tracks_the_float32_step():
  """Mixed precision: the forward pass runs in bf16, the parameters, optimizer state, BatchNorm
  statistics and the update stay float32, and the step agrees with the float32 step to bf16 rounding."""
  data = _data()
  batch = {"image": data.x_train[:16], "label": data.y_train[:16], "drop_prob": np.zeros(16, np.float32)}
  out = {}
  for dtype in ("float32", "bfloat16"):
    config = dataclasses.replace(_TINY, batch_size=16, compute_dtype=dtype)
    model = cifar.make_model(darts.GENOTYPES["DARTS_V2"], config)
    optimizer = cifar.make_optimizer(config, 3)
    mesh = mesh_lib.make_data_mesh(1)
    step, state = _step_and_state(model, config, optimizer, mesh)
    before = jax.device_get(state.params)
    state, metrics = step(state, batch)
    assert {a.dtype for a in jax.tree.leaves((state.params, state.opt_state, state.model_state))
            if np.issubdtype(a.dtype, np.floating)} == {np.dtype("float32")}
    delta = jax.tree.map(lambda a, b: np.asarray(a) - b, jax.device_get(state.params), before)
    out[dtype] = (float(metrics["loss"]), np.concatenate([d.ravel() for d in jax.tree.leaves(delta)]))
  (l32, d32), (l16, d16) = out["float32"], out["bfloat16"]
  assert l16 == pytest.approx(l32, rel=2e-2)
  assert np.linalg.norm(d16 - d32) / np.linalg.norm(d32) < 0.1
  with pytest.raises(ValueError, match="compute_dtype"):
    cifar.RecipeConfig(compute_dtype="float16")


def test_float32_jobs_keep_their_directory_and_bfloat16_jobs_get_their_own(tmp_path):
  g = darts.GENOTYPES["DARTS_V2"]
  f32 = cifar.job_dir(tmp_path, g, _TINY, 0)
  key = {"genotype": g.to_json(), "recipe": {k: v for k, v in dataclasses.asdict(_TINY).items()
                                             if k != "compute_dtype"}}
  expected = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  assert f32.name == f"{expected}-seed0"
  assert cifar.job_dir(tmp_path, g, dataclasses.replace(_TINY, compute_dtype="bfloat16"), 0) != f32
