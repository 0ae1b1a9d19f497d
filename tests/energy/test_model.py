"""Tests of the per-kernel energy model (cenas_jax.energy.model)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.optimize

from cenas_jax.energy import model as em
from cenas_jax.energy.hlo import KERNEL_CLASSES, Kernel
from cenas_jax.energy.specs import DEVICE_SPECS
from cenas_jax.errors import DataError


def _kernel(cls="gemm", flops=2_000_000, bytes_read=40_000, bytes_written=8_000, trans=0,
            dtype="f32", repeat=1):
  return Kernel(name=f"k_{cls}", kernel_class=cls, dtype=dtype, in_shapes=((1,),),
                out_shapes=((1,),), flops=flops, transcendentals=trans, bytes_read=bytes_read,
                bytes_written=bytes_written, repeat=repeat)


def _random_kernels(rng, n):
  out = []
  for _ in range(n):
    cls = KERNEL_CLASSES[rng.integers(0, 6)]
    flops = int(rng.integers(1, 1000)) * (10_000 if cls in ("gemm", "conv", "attention") else 100)
    out.append(_kernel(cls, flops=flops, bytes_read=int(rng.integers(1_000, 2_000_000)),
                       bytes_written=int(rng.integers(1_000, 500_000)),
                       trans=int(rng.integers(0, 1000)) if cls == "loop" else 0))
  return out


def test_feature_names_are_fixed_and_complete():
  assert len(em.FEATURE_NAMES) == len(KERNEL_CLASSES) * len(em.CLASS_FEATURES) + 1
  assert em.FEATURE_NAMES[0] == "gemm.launches" and em.FEATURE_NAMES[-1] == "batch_size"
  assert len(set(em.FEATURE_NAMES)) == len(em.FEATURE_NAMES)


def test_kernel_features_sum_per_class_with_repeat():
  spec = DEVICE_SPECS["h100-sxm"]
  ks = [_kernel("gemm"), _kernel("gemm", repeat=3), _kernel("loop", flops=100, trans=10)]
  row = em.kernel_features(ks, spec, batch_size=4)
  col = {n: row[i] for i, n in enumerate(em.FEATURE_NAMES)}
  assert col["gemm.launches"] == 4 and col["loop.launches"] == 1
  assert col["gemm.flops"] == 4 * 2_000_000
  assert col["gemm.bytes"] == 4 * 48_000
  assert col["gemm.compute_s"] == pytest.approx(4 * 2e6 / spec.peak_flops_per_s["tf32"])
  assert col["loop.compute_s"] == pytest.approx((100 + 4 * 10) / spec.peak_flops_per_s["f32"])
  assert col["gemm.roofline_s"] == pytest.approx(4 * max(2e6 / 494.7e12, 48_000 / 3.35e12))
  assert col["batch_size"] == 4 and col["conv.launches"] == 0
  with pytest.raises(ValueError, match="batch_size"):
    em.kernel_features(ks, spec, batch_size=0)


def test_prior_model_energy_decomposes_into_dynamic_and_static():
  m = em.prior_model("jetson-tx2")
  ks = [_kernel("conv", flops=50_000_000), _kernel("loop", flops=10_000)]
  t = em.predict_time_s(m, ks)
  e = em.predict_energy_j(m, ks)
  dyn = sum(em.predict_kernel_energy_j(m, k)[1] for k in ks) - m.static_power_w * t
  assert t > 0 and e > m.static_power_w * t
  assert e == pytest.approx(dyn + m.static_power_w * t)
  assert t == pytest.approx(sum(em.predict_kernel_energy_j(m, k)[0] for k in ks))
  # More work costs more energy; per-sample energy divides by the batch.
  assert em.predict_energy_j(m, ks + ks) > e
  assert em.predict_energy_j(m, ks, batch_size=8, per_sample=True) == pytest.approx(e / 8)


def test_prediction_from_kernels_equals_prediction_from_features():
  m = em.prior_model("a100-sxm4-40gb")
  rng = np.random.default_rng(0)
  nets = [_random_kernels(rng, 12) for _ in range(5)]
  rows = np.stack([em.kernel_features(ks, m.spec) for ks in nets])
  batch = em.predict_energy_j(m, rows)
  assert batch.shape == (5,)
  np.testing.assert_allclose(batch, [em.predict_energy_j(m, ks) for ks in nets], rtol=1e-12)
  with pytest.raises(ValueError, match="columns"):
    em.predict_energy_j(m, rows[:, :10])


def test_nnls_matches_scipy():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(30, 8))
  b = rng.normal(size=30)
  ours = em.nnls(a, b)
  ref, _ = scipy.optimize.nnls(a, b)
  np.testing.assert_allclose(ours, ref, atol=1e-8)
  assert (ours >= 0).all()


def test_ridge_nnls_is_non_negative_and_pulled_towards_theta0():
  rng = np.random.default_rng(1)
  design = rng.uniform(0.0, 1.0, size=(30, 4))
  theta0 = np.array([1.0, 2.0, 0.5, 3.0])
  y = design @ (theta0 * np.array([1.5, 0.0, 1.0, 2.0])) + 0.1
  free = em.ridge_nnls(design, y, theta0, 1e-9)
  assert (free >= 0).all()
  np.testing.assert_allclose(em.ridge_nnls(design, y, theta0, 1e9), theta0, rtol=1e-6)
  strong = em.ridge_nnls(design, y, theta0, 1.0)
  assert np.abs(strong / theta0 - 1).sum() < np.abs(free / theta0 - 1).sum()


def _truth_from(prior, rng):
  classes = {c: dataclasses.replace(
      p, compute_power_w=p.compute_power_w * rng.uniform(0.5, 2.0),
      memory_power_w=p.memory_power_w * rng.uniform(0.5, 2.0),
      launch_energy_j=p.launch_energy_j * rng.uniform(0.5, 2.0),
      time_efficiency=p.time_efficiency * rng.uniform(0.7, 1.5))
             for c, p in prior.classes.items()}
  return dataclasses.replace(prior, classes=classes, launch_gap_s=prior.launch_gap_s * 1.5)


@pytest.mark.parametrize("with_time", [False, True])
def test_fit_recovers_synthetic_model(with_time):
  rng = np.random.default_rng(2)
  prior = em.prior_model("jetson-tx2")
  truth = _truth_from(prior, rng)
  rows = np.stack([em.kernel_features(_random_kernels(rng, int(rng.integers(5, 40))), prior.spec)
                   for _ in range(300)])
  y = em.predict_energy_j(truth, rows)
  t = em.predict_time_s(truth, rows) if with_time else None
  fitted = em.fit_energy_model(rows, y, prior, ridge=1e-8, measured_time_s=t)
  prior_err = np.abs(em.predict_energy_j(prior, rows) / y - 1).mean()
  fit_err = np.abs(em.predict_energy_j(fitted, rows) / y - 1).mean()
  assert fit_err < 1e-3 < prior_err
  if with_time:
    np.testing.assert_allclose(em.predict_time_s(fitted, rows), t, rtol=1e-3)
  assert fitted.provenance.startswith("fit:")
  # Classes with no data (here 'other') stay at the prior.
  assert dataclasses.astuple(fitted.classes["other"]) == pytest.approx(
      dataclasses.astuple(prior.classes["other"]), rel=1e-9)


def test_strong_ridge_keeps_the_prior():
  rng = np.random.default_rng(3)
  prior = em.prior_model("v100-sxm2")
  rows = np.stack([em.kernel_features(_random_kernels(rng, 10), prior.spec) for _ in range(20)])
  y = 3.0 * em.predict_energy_j(prior, rows)
  fitted = em.fit_energy_model(rows, y, prior, ridge=1e6)
  for c in KERNEL_CLASSES:
    assert fitted.classes[c].compute_power_w == pytest.approx(prior.classes[c].compute_power_w,
                                                              rel=1e-3)


def test_fit_rejects_bad_input():
  prior = em.prior_model("h100-sxm")
  rows = np.ones((3, len(em.FEATURE_NAMES)))
  with pytest.raises(ValueError, match="3 feature rows but 2"):
    em.fit_energy_model(rows, np.ones(2), prior)
  with pytest.raises(ValueError, match="energies > 0"):
    em.fit_energy_model(rows, np.array([1.0, -1.0, 1.0]), prior)
  with pytest.raises(ValueError, match="columns"):
    em.fit_energy_model(rows[:, :5], np.ones(3), prior)


def test_save_load_roundtrip(tmp_path):
  m = em.prior_model("jetson-agx-orin")
  path = tmp_path / "model.json"
  em.save_energy_model(m, path)
  loaded = em.load_energy_model(path)
  assert loaded == m
  ks = [_kernel("gemm"), _kernel("reduction")]
  assert em.predict_energy_j(loaded, ks) == em.predict_energy_j(m, ks)


def test_load_rejects_malformed_files(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(DataError, match="bad.json"):
    em.load_energy_model(bad)
  d = em.prior_model("h100-sxm").to_dict()
  del d["classes"]["gemm"]
  partial = tmp_path / "partial.json"
  partial.write_text(json.dumps(d))
  with pytest.raises(DataError, match="partial.json.*gemm"):
    em.load_energy_model(partial)
  d = em.prior_model("h100-sxm").to_dict()
  d["classes"]["loop"]["time_efficiency"] = -1.0
  neg = tmp_path / "neg.json"
  neg.write_text(json.dumps(d))
  with pytest.raises(DataError, match="non-negative"):
    em.load_energy_model(neg)


def test_end_to_end_on_extracted_kernels():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cenas_jax.energy import extract_kernels  # pylint: disable=g-import-not-at-top

  def mlp(x, w1, w2):
    return jax.nn.relu(x @ w1) @ w2

  def shapes(b):
    return (jax.ShapeDtypeStruct((b, 64), jnp.float32), jax.ShapeDtypeStruct((64, 256), jnp.float32),
            jax.ShapeDtypeStruct((256, 10), jnp.float32))

  m = em.prior_model("jetson-tx2")
  e1 = em.predict_energy_j(m, extract_kernels(mlp, *shapes(1), mode="gpu"), batch_size=1)
  e64 = em.predict_energy_j(m, extract_kernels(mlp, *shapes(64), mode="gpu"), batch_size=64)
  assert 0 < e1 < e64
  # Per-sample energy drops with batch size (weights are read once per call).
  assert e64 / 64 < e1


def test_prediction_refuses_cpu_compiled_kernels_for_a_gpu_spec():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cenas_jax.energy import extract_kernels  # pylint: disable=g-import-not-at-top

  def mlp(x, w):
    return jax.nn.relu(x @ w)

  args = (jax.ShapeDtypeStruct((4, 32), jnp.float32), jax.ShapeDtypeStruct((32, 16), jnp.float32))
  m = em.prior_model("rtx4090")
  compiled = extract_kernels(mlp, *args)  # default mode="compiled": the CPU backend's kernels here
  assert compiled.lowered_for == jax.default_backend() == "cpu"
  with pytest.raises(ValueError, match="lowered for 'cpu'.*mode='gpu'"):
    em.predict_energy_j(m, compiled, batch_size=4)
  with pytest.raises(ValueError, match="mode='gpu'"):
    em.predict_time_s(m, compiled, batch_size=4)
  gpu = extract_kernels(mlp, *args, mode="gpu")
  assert gpu.lowered_for == "cuda" and em.predict_energy_j(m, gpu, batch_size=4) > 0
  # A caller who means it strips the platform with list(); plain lists are not checked.
  assert em.predict_energy_j(m, list(compiled), batch_size=4) > 0
