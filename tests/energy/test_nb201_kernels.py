"""Composed NB201 kernels equal a whole-network extraction; helpers, cache and metrics."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from cenas_jax.energy import model as em
from cenas_jax.energy import nb201_kernels as nk
from cenas_jax.errors import DataError

# Cells chosen to exercise the fusion cases that cross op and cell boundaries: conv-heavy,
# pools (reduce-window reducers), skip-only (the whole stage elementwise), a cell whose output is
# zeros (all edges dead), an empty node feeding convs, and dead edges.
SAMPLE_CELLS = [
    (3, 2, 4, 1, 3, 3),
    (4, 4, 4, 4, 4, 4),
    (1, 0, 1, 0, 0, 1),
    (3, 3, 3, 0, 0, 0),
    (0, 0, 2, 1, 0, 3),
    (2, 1, 0, 4, 3, 0),
]


def _full_network_kernels(ops):
  import jax
  import jax.numpy as jnp

  from cenas_jax.energy import extract_kernels
  from cenas_jax.spaces import nb201_net

  net = nb201_net.make_nb201_net(ops)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  return extract_kernels(lambda v, x: net.apply(v, x, train=False), variables, x, mode="gpu")


@pytest.mark.parametrize("ops", SAMPLE_CELLS)
def test_composed_kernels_equal_full_network_extraction(ops):
  full = _full_network_kernels(ops)
  composed = nk.network_kernels(ops)
  assert collections.Counter(k.signature for k in composed) == collections.Counter(
      k.signature for k in full)
  assert [k.kernel_class for k in composed] == [k.kernel_class for k in full]
  np.testing.assert_array_equal(nk.network_features(ops, "jetson-tx2"),
                                em.kernel_features(full, "jetson-tx2"))


def test_live_ops_drops_edges_that_cannot_reach_the_output():
  assert nk.live_ops((3, 3, 3, 0, 0, 0)) == (0, 0, 0, 0, 0, 0)
  assert nk.live_ops((3, 2, 4, 0, 0, 1)) == (3, 2, 4, 0, 0, 1)
  assert nk.live_ops((3, 2, 4, 0, 1, 0)) == (3, 0, 0, 0, 1, 0)  # node 2 feeds nothing
  assert nk.network_kernels((3, 2, 4, 0, 1, 0)) == nk.network_kernels((3, 0, 0, 0, 1, 0))


def test_param_count_matches_flax_count_params():
  from cenas_jax.spaces import nb201_net

  for ops in [(3, 2, 4, 1, 3, 3), (0, 0, 0, 0, 0, 0), (2, 2, 2, 2, 2, 2)]:
    assert nk.param_count(ops) == nb201_net.count_params(ops)


def test_features_scale_with_batch_size():
  one = nk.network_features((3, 1, 2, 4, 3, 1), "jetson-tx2")
  four = nk.network_features((3, 1, 2, 4, 3, 1), "jetson-tx2",
                             nk.NB201NetConfig(batch_size=4))
  conv_flops = em.FEATURE_NAMES.index("conv.flops")
  assert four[conv_flops] == 4 * one[conv_flops]
  assert four[-1] == 4 and one[-1] == 1


def test_compute_features_deduplicates_and_keeps_row_order():
  ops = np.array([[3, 2, 4, 0, 1, 0], [1, 1, 1, 1, 1, 1], [3, 0, 0, 0, 1, 0]])
  rows = nk.compute_features(ops, "jetson-tx2")
  assert rows.shape == (3, len(em.FEATURE_NAMES))
  np.testing.assert_array_equal(rows[0], rows[2])  # same live cell
  np.testing.assert_array_equal(rows[1], nk.network_features((1,) * 6, "jetson-tx2"))


def test_feature_cache_round_trip_and_stale_key(tmp_path):
  path = str(tmp_path / "features.npz")
  assert nk.load_feature_cache(path, "k") == {}
  rows = {5: np.arange(len(em.FEATURE_NAMES), dtype=float), 2: np.ones(len(em.FEATURE_NAMES))}
  nk.save_feature_cache(path, "k", rows)
  back = nk.load_feature_cache(path, "k")
  assert sorted(back) == [2, 5]
  np.testing.assert_array_equal(back[5], rows[5])
  assert nk.load_feature_cache(path, "other-key") == {}
  (tmp_path / "bad.npz").write_bytes(b"not an npz")
  with pytest.raises(DataError, match="bad.npz"):
    nk.load_feature_cache(str(tmp_path / "bad.npz"), "k")


def test_fingerprint_is_stable_and_depends_on_config():
  a = nk.fingerprint()
  assert a == nk.fingerprint() and len(a) == 64
  assert nk.fingerprint(nk.NB201NetConfig(batch_size=2)) != a


def test_regression_metrics_known_values():
  y = np.array([1.0, 2.0, 4.0, 8.0])
  m = nk.regression_metrics(np.array([1.05, 2.4, 4.0, 7.0]), y)
  rel = np.array([0.05, 0.2, 0.0, -0.125])
  assert m["rmspe"] == pytest.approx(np.sqrt(np.mean(rel**2)))
  assert m["acc10"] == pytest.approx(0.5)
  assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
  with pytest.raises(ValueError):
    nk.regression_metrics(np.ones(3), np.array([1.0, 0.0, 1.0]))


def test_linear_baseline_recovers_an_exact_line():
  x = np.linspace(1, 10, 20)
  fit = nk.fit_linear_baseline(x, 0.5 + 2 * x)
  assert fit.intercept == pytest.approx(0.5) and fit.slope == pytest.approx(2.0)


def test_fit_time_model_recovers_scaled_efficiencies():
  rng = np.random.default_rng(0)
  ops = [tuple(rng.integers(0, 5, 6)) for _ in range(40)]
  feats = np.stack([nk.network_features(o, "jetson-tx2") for o in ops])
  prior = em.prior_model("jetson-tx2")
  truth = nk.fit_time_model(feats, em.predict_time_s(prior, feats) * 1.0, prior, ridge=1e-6)
  t_true = em.predict_time_s(prior, feats) * 1.3  # every class 30 % slower, launch gap too
  fit = nk.fit_time_model(feats, t_true, prior, ridge=1e-6)
  np.testing.assert_allclose(em.predict_time_s(fit, feats), t_true, rtol=1e-3)
  np.testing.assert_allclose(em.predict_time_s(truth, feats), em.predict_time_s(prior, feats),
                             rtol=1e-6)
