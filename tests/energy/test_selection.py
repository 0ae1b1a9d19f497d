"""Tests of the CV choice between the kernel model and proxy baselines (energy.selection)."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.energy import selection
from cenas_jax.energy.hlo import Kernel
from cenas_jax.energy.model import count_kernels


def _data(n=300, seed=0):
  rng = np.random.default_rng(seed)
  flops = rng.uniform(1e8, 5e8, n)
  params = rng.uniform(1e5, 1e6, n)
  traffic = rng.uniform(1e6, 1e7, n)
  return rng, {"flops": flops, "params": params, "traffic": traffic}


def test_blend_recovers_an_exact_linear_combination():
  _, px = _data()
  y = 2.0 + 3e-8 * px["flops"] + 1e-6 * px["params"]
  b = selection.fit_blend(px, y)
  assert b.intercept == pytest.approx(2.0, rel=1e-6)
  assert b.coef == pytest.approx((3e-8, 1e-6, 0.0), rel=1e-6, abs=1e-12)
  assert np.allclose(b.predict(px), y)


def test_flops_linear_device_selects_a_proxy_not_the_noisy_kernel_model():
  rng, px = _data()
  y = 1.0 + 1e-8 * px["flops"]  # a compute-bound device: one FLOPs coefficient explains it
  fold = selection.folds_of(len(y), 5, 0)
  kernel_oof = y * rng.normal(1.0, 0.08, len(y))  # a kernel model 8 % off per cell
  sel = selection.select(kernel_oof, 0.08, px, y, fold)
  assert sel.cv_rmspe["flops_linear"] < 1e-9
  assert sel.choice in ("flops_linear", "blend")
  assert sel.cv_rmspe[sel.choice] == min(sel.cv_rmspe.values())
  preds = sel.predict(kernel_oof, px)
  assert set(preds) == set(selection.CANDIDATES) | {"selected"}
  assert np.allclose(preds["selected"], y, rtol=1e-6)
  d = sel.to_dict()
  assert d["choice"] == sel.choice and set(d["cv_rmspe"]) == set(selection.CANDIDATES)


def test_kernel_informative_device_keeps_the_kernel_model():
  rng, px = _data()
  y = rng.uniform(1.0, 3.0, len(px["flops"]))  # unrelated to every proxy
  fold = selection.folds_of(len(y), 5, 0)
  kernel_oof = y * rng.normal(1.0, 0.02, len(y))
  sel = selection.select(kernel_oof, 0.02, px, y, fold)
  assert sel.choice in ("kernel_model", "blend")
  assert sel.cv_rmspe["flops_linear"] > 0.1 > sel.cv_rmspe[sel.choice]


def test_traffic_bytes_sums_reads_and_writes_per_call():
  k1 = Kernel(name="a", kernel_class="loop", dtype="f32", in_shapes=((4,),), out_shapes=((4,),),
              flops=4, transcendentals=0, bytes_read=16, bytes_written=16, fused_ops=("add",))
  k2 = Kernel(name="b", kernel_class="gemm", dtype="f32", in_shapes=((4, 4),), out_shapes=((4,),),
              flops=32, transcendentals=0, bytes_read=80, bytes_written=16, fused_ops=("dot",),
              repeat=3)
  counts = count_kernels([[k1], [k1, k2]])
  assert selection.traffic_bytes(counts).tolist() == [32.0, 32.0 + 3 * 96.0]
  assert selection.best_proxy({"flops_linear": {"rmspe": 0.3, "spearman": 0.9},
                               "params_linear": {"rmspe": 0.2, "spearman": 0.8}}, "rmspe") == 0.2
