"""SPOS training of the masked supernet on the training core's data-parallel step."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cenas_jax.spaces.tabular import make_space
from cenas_jax.supernets import tabular as sn
from cenas_jax.tabular_nas import search
from cenas_jax.tabular_nas.data import Split
from cenas_jax.training import mesh as mesh_lib


def _split(n=512, d=6, seed=0) -> Split:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
  idx = np.arange(n)
  return Split("toy", "binclass", x, y, idx[:384], idx[384:448], idx[448:], 2, 0.0, 1.0, {})


@pytest.mark.parametrize("kind", ["mlp", "resnet", "ftt"])
def test_spos_learns_on_8_devices_and_scores_match_the_forward(kind):
  split = _split()
  ftt = dict(heads=(1, 2), ffn_ratios=(1.0, 2.0)) if kind == "ftt" else {}
  space = make_space(kind, split.d_in, 2, widths=(4, 16), hidden_widths=(8, 16), depths=(1, 2),
                     dropouts=(0.0, 0.1), **ftt)
  mesh = mesh_lib.make_data_mesh()
  assert mesh_lib.data_size(mesh) == 8
  net = search.Supernet(space, split, mesh, batch_size=64, k=3, val_batch=16, lr=1e-2, seed=0)
  losses = search.spos(net, 80)  # one compiled step for 80 different sampled architectures
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
  archs = space.sample(np.random.default_rng(1), 3)
  q = net.score(archs, rows=split.val)
  variables = {"params": jax.device_get(net.state.params),
               **jax.device_get(net.state.model_state)}
  for a, qa in zip(archs, q):
    module, sub = sn.materialize(space, variables, a)
    pred = np.argmax(np.asarray(module.apply(sub, split.x[split.val])), -1)
    assert qa == pytest.approx(np.mean(pred == split.y[split.val]))
  assert np.mean(q) > 0.75


def _dropout_pair(space) -> np.ndarray:
  """One architecture twice: every dropout at the lowest rate, then at the highest."""
  arch = space.sample(np.random.default_rng(3))
  lo, hi = (space.with_dropout(arch, rate) for rate in (space.dropouts[0], space.dropouts[-1]))
  return np.stack([lo, hi, lo])


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_scores_see_dropout_only_when_score_dropout_draws_it(kind):
  split = _split()
  space = make_space(kind, split.d_in, 2, widths=(16,), hidden_widths=(16,), depths=(3,),
                     dropouts=(0.0, 0.5))
  mesh = mesh_lib.make_data_mesh()
  plain = search.Supernet(space, split, mesh, batch_size=64, k=3, val_batch=64, lr=1e-2, seed=0)
  search.spos(plain, 60)

  def noisy_copy():  # the same weights, scored with dropout drawn
    net = search.Supernet(space, split, mesh, batch_size=64, k=3, val_batch=64, lr=1e-2, seed=0,
                          score_dropout=True)
    net.state = plain.state
    return net

  archs = _dropout_pair(space)
  q_plain = plain.score(archs, rows=split.val)
  # Inference mode: the dropout decisions change nothing, the blind spot the option closes.
  assert q_plain[0] == q_plain[1]
  noisy = noisy_copy()
  q = np.array([noisy.score(archs, rows=split.val) for _ in range(4)])
  np.testing.assert_array_equal(q[:, 0], q_plain[0])  # rate 0 draws no noise
  assert len(set(q[:, 1])) > 1  # every call draws new noise ...
  again = noisy_copy()
  np.testing.assert_array_equal(again.score(archs, rows=split.val), q[0])  # ... from the seed
  if kind == "mlp":  # a 3-layer MLP at rate 0.5 in every layer: the noise costs accuracy
    assert q[:, 1].mean() < q_plain[1] - 0.03


def test_score_dropout_is_refused_for_the_ft_transformer():
  split = _split()
  space = make_space("ftt", split.d_in, 2, widths=(8,), depths=(1,), heads=(1,), ffn_ratios=(1.0,))
  with pytest.raises(ValueError, match="score_dropout"):
    search.Supernet(space, split, mesh_lib.make_data_mesh(), batch_size=64, k=2, val_batch=16,
                    score_dropout=True)
