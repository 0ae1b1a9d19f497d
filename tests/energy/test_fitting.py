"""Fitting for validation: class model + kernel table, CV choices, time model, linear baseline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cenas_jax.energy import fitting
from cenas_jax.energy import model as em
from cenas_jax.energy import nb201_kernels as nk


def test_table_model_select_fit_and_ablation_pieces():
  rng = np.random.default_rng(0)
  ops = rng.integers(0, 5, size=(60, 6))
  counts = nk.compute_kernel_counts(ops)
  prior = em.prior_model("jetson-tx2")
  # Synthetic measurements: the prior plus a known extra cost per 3x3-conv launch (op level).
  conv3 = [k for k in counts.kernels if k.kernel_class == "conv" and k.in_shapes[1][:2] == (3, 3)]
  extra = em.KernelTable(("op",), {"op": {em.signature_key(k, "op"): 2e-4 for k in conv3}},
                         {"op": {}}, {"op": 1.0})
  y = em.predict_energy_j(dataclasses.replace(prior, table=extra), counts)
  choice, scores = fitting.select_table(counts, y, prior, kind="energy", class_ridge=1e2,
                                        candidates=[((), 0.0), (("op",), 1e-6), (("op",), 1e2)])
  assert choice == (("op",), 1e-6) and set(scores) == {"none", "op@1e-06", "op@100"}
  fitted = fitting.fit_table_model(counts, y, prior, kind="energy", class_ridge=1e2, table=choice)
  np.testing.assert_allclose(fitting.predict_table_model(fitted, counts, kind="energy"), y, rtol=1e-3)
  only = fitting.fit_table_model(counts, y, prior, kind="energy", class_ridge=None,
                            table=(("full",), 1e-6))
  assert only.static_power_w == 0 and only.table is not None
  assert fitting.table_label((("class", "op"), 1e-3)) == "class+op@0.001"
  with pytest.raises(ValueError, match="kind"):
    fitting.predict_table_model(fitted, counts, kind="power")


def test_linear_baseline_recovers_an_exact_line():
  x = np.linspace(1, 10, 20)
  fit = fitting.fit_linear_baseline(x, 0.5 + 2 * x)
  assert fit.intercept == pytest.approx(0.5) and fit.slope == pytest.approx(2.0)


def test_fit_time_model_recovers_scaled_efficiencies():
  rng = np.random.default_rng(0)
  ops = [tuple(rng.integers(0, 5, 6)) for _ in range(40)]
  feats = np.stack([nk.network_features(o, "jetson-tx2") for o in ops])
  prior = em.prior_model("jetson-tx2")
  truth = fitting.fit_time_model(feats, em.predict_time_s(prior, feats) * 1.0, prior, ridge=1e-6)
  t_true = em.predict_time_s(prior, feats) * 1.3  # every class 30 % slower, launch gap too
  fit = fitting.fit_time_model(feats, t_true, prior, ridge=1e-6)
  np.testing.assert_allclose(em.predict_time_s(fit, feats), t_true, rtol=1e-3)
  np.testing.assert_allclose(em.predict_time_s(truth, feats), em.predict_time_s(prior, feats),
                             rtol=1e-6)


def test_select_ridge_scores_every_candidate_on_held_out_folds():
  rng = np.random.default_rng(0)
  ops = [tuple(rng.integers(0, 5, 6)) for _ in range(30)]
  feats = np.stack([nk.network_features(o, "jetson-tx2") for o in ops])
  prior = em.prior_model("jetson-tx2")
  y = em.predict_energy_j(prior, feats) * 1.2
  best, scores = fitting.select_ridge(feats, y, prior, kind="energy", grid=[1e-6, 1e4])
  assert set(scores) == {1e-6, 1e4} and best == min(scores, key=scores.get)
  with pytest.raises(ValueError, match="folds"):
    fitting.select_ridge(feats[:3], y[:3], prior, kind="energy", grid=[1.0])
