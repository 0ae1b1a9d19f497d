"""Tests of the kernel table (per-signature corrections) and KernelCounts (energy.model)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cenas_jax.energy import model as em
from cenas_jax.energy.hlo import Kernel
from cenas_jax.errors import DataError


def _vocab() -> list[Kernel]:
  """Distinct kernels of several classes (distinct at every signature level but ``class``)."""
  out = []
  for i, cls in enumerate(["conv", "conv", "loop", "loop", "reduction", "gemm", "copy", "loop"]):
    c = 8 * (i + 1)
    ins = ((1, 16, 16, c), (3, 3, c, c)) if cls == "conv" else ((1, 16, 16, c),)
    out.append(Kernel(name=f"k{i}", kernel_class=cls, dtype="f32", in_shapes=ins,
                      out_shapes=((1, 16, 16, c),), flops=(2_000_000 if cls in ("conv", "gemm")
                                                           else 20_000) * (i + 1),
                      transcendentals=0, bytes_read=40_000 * (i + 1), bytes_written=8_000 * (i + 1),
                      fused_ops=("convolution",) if cls == "conv" else ("add", f"op{i}"),
                      target="__cudnn$convForward" if cls == "conv" else "kLoop"))
  return out


def _functions(rng, vocab, n):
  """``n`` kernel lists drawing 1-4 launches of random kernels of ``vocab``."""
  out = []
  for _ in range(n):
    picks = rng.choice(len(vocab), size=int(rng.integers(2, 6)), replace=False)
    out.append([dataclasses.replace(vocab[j], repeat=int(rng.integers(1, 4))) for j in picks])
  return out


def test_signature_keys_coarse_to_fine():
  k = _vocab()[0]
  keys = [em.signature_key(k, lv) for lv in em.SIGNATURE_LEVELS]
  assert keys[0] == "conv" and len(set(keys)) == 4
  # Names and repeat do not change any key; the weight shape changes the op key.
  same = dataclasses.replace(k, name="other", hlo_names=("x",), repeat=5)
  assert [em.signature_key(same, lv) for lv in em.SIGNATURE_LEVELS] == keys
  bigger = dataclasses.replace(k, in_shapes=(k.in_shapes[0], (1, 1, 8, 8)))
  assert em.signature_key(bigger, "op") != keys[1]
  # merged_count is part of the full key only.
  merged = dataclasses.replace(k, merged_count=2)
  assert em.signature_key(merged, "full") != keys[3]
  assert em.signature_key(merged, "shape") == keys[2]
  with pytest.raises(ValueError, match="unknown signature level"):
    em.signature_key(k, "nope")


def test_kernel_counts_match_kernel_features_and_round_trip_lists():
  rng = np.random.default_rng(0)
  funcs = _functions(rng, _vocab(), 20)
  counts = em.count_kernels(funcs, batch_size=2)
  assert len(counts) == 20 and len(counts.kernels) == len(_vocab())
  rows = counts.features("jetson-tx2")
  for f, r in zip(funcs, rows):
    np.testing.assert_allclose(r, em.kernel_features(f, "jetson-tx2", batch_size=2), rtol=1e-12)
  # Launch counts include repeat; the lists come back with one entry per distinct kernel.
  back = counts.kernel_lists()
  assert [sum(k.repeat for k in b) for b in back] == [sum(k.repeat for k in f) for f in funcs]
  both = em.KernelCounts.concat([counts.rows([0, 1]), em.count_kernels(funcs[2:5])])
  np.testing.assert_allclose(both.features("jetson-tx2")[:, :-1], rows[:5, :-1], rtol=1e-12)
  assert list(both.batch_size) == [2, 2, 1, 1, 1]


def _truth_deltas(vocab):
  """Known per-launch energy corrections (J) of each full signature: -40 % .. +45 % of the prior's
  price of the launch."""
  prior = em.prior_model("jetson-tx2")
  return {em.signature_key(k, "full"): (-1) ** i * 0.05 * (i + 2) *
          em.predict_kernel_energy_j(prior, k)[1] for i, k in enumerate(vocab)}


def _truth_energy(prior, funcs, deltas):
  return np.array([em.predict_energy_j(prior, f) + sum(
      k.repeat * deltas[em.signature_key(k, "full")] for k in f) for f in funcs])


def test_table_fit_recovers_known_per_signature_costs():
  rng = np.random.default_rng(1)
  vocab = _vocab()
  prior = em.prior_model("jetson-tx2")
  funcs = _functions(rng, vocab, 300)
  deltas = _truth_deltas(vocab)
  y = _truth_energy(prior, funcs, deltas)
  counts = em.count_kernels(funcs)
  fitted = em.fit_kernel_table(prior, counts, measured_energy_j=y, levels=("full",), ridge=1e-10)
  assert fitted.classes == prior.classes and fitted.table.levels == ("full",)
  for key, d in deltas.items():
    assert fitted.table.energy_j["full"][key] == pytest.approx(d, rel=1e-5)
  assert fitted.table.time_s == {"full": {}}
  np.testing.assert_allclose(em.predict_energy_j(fitted, counts), y, rtol=1e-6)
  # A kernel list gives the same prediction as its counts row, and the per-launch prices add up.
  f = funcs[0]
  assert em.predict_energy_j(fitted, f) == pytest.approx(y[0], rel=1e-6)
  t = em.predict_time_s(fitted, f)
  dyn = sum(k.repeat * em.predict_kernel_energy_j(fitted, k)[1] for k in f)
  assert dyn == pytest.approx(y[0], rel=1e-6)
  assert t == pytest.approx(sum(k.repeat * em.predict_kernel_energy_j(fitted, k)[0] for k in f))


def test_time_corrections_are_fitted_before_energy():
  rng = np.random.default_rng(2)
  vocab = _vocab()
  prior = em.prior_model("jetson-tx2")
  funcs = _functions(rng, vocab, 200)
  dt = {em.signature_key(k, "class"): 5e-5 * (i + 1) for i, k in enumerate(vocab)}
  t = np.array([em.predict_time_s(prior, f) + sum(k.repeat * dt[em.signature_key(k, "class")]
                                                  for k in f) for f in funcs])
  # Energy = class energy with the true times; no dynamic correction.
  e = np.array([em.predict_energy_j(prior, f) for f in funcs]) + prior.static_power_w * (
      t - np.array([em.predict_time_s(prior, f) for f in funcs]))
  counts = em.count_kernels(funcs)
  fitted = em.fit_kernel_table(prior, counts, measured_energy_j=e, measured_time_s=t,
                               levels=("class",), ridge=1e-10)
  np.testing.assert_allclose(em.predict_time_s(fitted, counts), t, rtol=1e-6)
  np.testing.assert_allclose(em.predict_energy_j(fitted, counts), e, rtol=1e-6)
  for key, v in fitted.table.energy_j["class"].items():
    assert abs(v) < 1e-9, key  # the time corrections explain the energy already
  assert "copy" in fitted.table.time_s["class"] and "attention" not in fitted.table.time_s["class"]


def test_unseen_signatures_fall_back_to_the_class_predictor():
  rng = np.random.default_rng(3)
  vocab = _vocab()
  prior = em.prior_model("jetson-tx2")
  seen, unseen = vocab[:6], vocab[6:]
  funcs = _functions(rng, seen, 200)
  y = _truth_energy(prior, funcs, _truth_deltas(vocab))
  fitted = em.fit_kernel_table(prior, em.count_kernels(funcs), measured_energy_j=y,
                               levels=("op", "full"), ridge=1e-6)
  for k in unseen:
    assert fitted.table.corrections(k) == (0.0, 0.0)
    assert em.predict_kernel_energy_j(fitted, k) == em.predict_kernel_energy_j(prior, k)
    assert em.signature_key(k, "full") not in fitted.table.energy_j["full"]
  assert em.predict_energy_j(fitted, unseen) == pytest.approx(em.predict_energy_j(prior, unseen))
  assert fitted.table.corrections(seen[0])[1] != 0.0


def test_strong_ridge_keeps_the_class_predictor():
  rng = np.random.default_rng(4)
  vocab = _vocab()
  prior = em.prior_model("jetson-tx2")
  funcs = _functions(rng, vocab, 50)
  counts = em.count_kernels(funcs)
  y = 2.0 * em.predict_energy_j(prior, counts)
  weak = em.fit_kernel_table(prior, counts, measured_energy_j=y, levels=("op",), ridge=1e-8)
  strong = em.fit_kernel_table(prior, counts, measured_energy_j=y, levels=("op",), ridge=1e6)
  np.testing.assert_allclose(em.predict_energy_j(strong, counts),
                             em.predict_energy_j(prior, counts), rtol=1e-4)
  np.testing.assert_allclose(em.predict_energy_j(weak, counts), y, rtol=1e-4)


def test_table_save_load_round_trip_and_old_format(tmp_path):
  rng = np.random.default_rng(5)
  vocab = _vocab()
  prior = em.prior_model("jetson-tx2")
  funcs = _functions(rng, vocab, 100)
  counts = em.count_kernels(funcs)
  fitted = em.fit_kernel_table(prior, counts, measured_energy_j=_truth_energy(
      prior, funcs, _truth_deltas(vocab)), measured_time_s=em.predict_time_s(prior, counts) * 1.1,
                               levels=("class", "full"), ridge={"class": 1e-3, "full": 1e-5})
  path = tmp_path / "model.json"
  em.save_energy_model(fitted, path)
  loaded = em.load_energy_model(path)
  assert loaded == fitted
  assert loaded.table.ridge == {"class": 1e-3, "full": 1e-5}
  np.testing.assert_array_equal(em.predict_energy_j(loaded, counts),
                                em.predict_energy_j(fitted, counts))
  # Format 1 (before kernel tables) still loads, as a model without a table.
  d = prior.to_dict()
  d["format"] = "cenas_jax.energy_model/1"
  del d["table"]
  old = tmp_path / "old.json"
  old.write_text(json.dumps(d))
  assert em.load_energy_model(old) == prior
  d = fitted.to_dict()
  d["table"]["levels"] = ["class", "nope"]
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps(d))
  with pytest.raises(DataError, match="bad.json"):
    em.load_energy_model(bad)


def test_table_models_refuse_feature_rows_and_bad_fit_input():
  rng = np.random.default_rng(6)
  prior = em.prior_model("jetson-tx2")
  funcs = _functions(rng, _vocab(), 20)
  counts = em.count_kernels(funcs)
  y = em.predict_energy_j(prior, counts)
  fitted = em.fit_kernel_table(prior, counts, measured_energy_j=y)
  with pytest.raises(ValueError, match="kernel table"):
    em.predict_energy_j(fitted, counts.features(prior.spec))
  with pytest.raises(ValueError, match="measured_energy_j and/or measured_time_s"):
    em.fit_kernel_table(prior, counts)
  with pytest.raises(ValueError, match="one value per function"):
    em.fit_kernel_table(prior, counts, measured_energy_j=y[:5])
  with pytest.raises(ValueError, match="ridge"):
    em.fit_kernel_table(prior, counts, measured_energy_j=y, ridge=0.0)
  with pytest.raises(ValueError, match="levels"):
    em.fit_kernel_table(prior, counts, measured_energy_j=y, levels=("class", "bogus"))
