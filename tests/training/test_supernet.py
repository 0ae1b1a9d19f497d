"""SPOS training of the DARTS supernet, few-shot splitting and recalibrated scoring."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from cenas_jax.spaces import darts as space
from cenas_jax.supernets import darts as sn
from cenas_jax.training import mesh as mesh_lib
from cenas_jax.training import supernet

_RECIPE = dataclasses.replace(supernet.SMOKE_SEARCH_RECIPE, epochs=3, batch_size=32, init_channels=2,
                              layers=3, learning_rate=0.1, eval_batch_size=64)


@dataclasses.dataclass
class _Data:
  x_train: np.ndarray
  y_train: np.ndarray


def _bright_dark(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n).astype(np.int32)
  x = rng.integers(0, 100, (n, 32, 32, 3)) + 150 * y[:, None, None, None]
  return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def trained():
  """A supernet trained on 8 devices: 3 epochs x 4 steps, a new path each step, one compilation
  (the train step asserts it)."""
  x, y = _bright_dark(128, 0)
  mesh = mesh_lib.make_data_mesh(8)
  result = supernet.train_supernet(_Data(x, y), _RECIPE, seed=0, mesh=mesh, log=None)
  return result, mesh


@pytest.fixture(scope="module")
def scorer(trained):
  xv, yv = _bright_dark(100, 1)
  xc, _ = _bright_dark(64, 2)
  return supernet.Scorer(_RECIPE, xc, xv, yv, calib_batches=2, mesh=trained[1])


def test_spos_training_learns_and_scores_paths_above_chance(trained, scorer):
  result, _ = trained
  assert [h["epoch"] for h in result.history] == [1, 2, 3]
  assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
  # 12 steps cannot train most of 1e18 paths; published cells' ops are common (sep_conv, pools).
  archs = [sn.arch_of(space.GENOTYPES[n]) for n in ("DARTS_V2", "P_DARTS")]
  scores = scorer.score_many(result, archs)
  assert scores.shape == (2,) and (scores >= 0.9).all(), scores  # two separable classes
  assert scorer._eval_step.jitted._cache_size() == 1  # pylint: disable=protected-access


def test_eight_devices_take_the_same_step_as_one(trained):
  """Loss and update (hence gradients: SGD is linear in them) on 8 fake devices equal 1 device's."""
  result, mesh8 = trained
  x, y = _bright_dark(32, 3)
  batch = {"image": x, "label": y, "drop_prob": np.zeros(32, np.float32)}
  outs = []
  for mesh in (mesh8, mesh_lib.make_data_mesh(1)):
    compiled = supernet._compiled(_RECIPE, 4, mesh)  # pylint: disable=protected-access
    state = mesh_lib.replicate(jax.device_get(result.state), mesh)
    new_state, metrics = compiled.train_step(state, batch)
    outs.append((jax.device_get(new_state.params), float(metrics["loss"])))
  assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_few_shot_sub_supernets_train_their_op_and_score_theirs(trained, scorer):
  result, mesh = trained
  x, y = _bright_dark(64, 4)
  recipe = dataclasses.replace(_RECIPE, epochs=1)
  subs = supernet.train_few_shot(_Data(x, y), result, recipe, seed=0, mesh=mesh, log=None)
  assert [s.split_op for s in subs] == list(range(sn.N_OPS))
  assert all(int(s.state.model_state["split_op"]) == s.split_op for s in subs)
  # Each sub-supernet moved away from the one-shot weights it started from.
  for s in subs:
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), s.params, result.params)
    assert max(jax.tree.leaves(diff)) > 0
  arch = sn.arch_of(space.GENOTYPES["DARTS_V2"])  # sep_conv_3x3 (CELL_OPS index 3) on the split edge
  assert arch[sn.SPLIT_SLOT][0] - 1 == 3
  routed = scorer.score_many(subs, [arch])[0]
  assert routed == scorer.score(subs[3].params, arch)["accuracy"]
