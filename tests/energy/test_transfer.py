"""Tests of the few-cell recalibration of a kernel model on a new device (energy.transfer)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cenas_jax.energy import transfer
from cenas_jax.errors import ConfigError


def _groups(n=200, seed=0):
  rng = np.random.default_rng(seed)
  g = rng.uniform(0.1, 1.0, (n, 3))
  macs = rng.uniform(1e7, 1e8, n)
  return g, macs


def test_scalar_recovers_a_rescaled_source_and_grouped_a_reweighted_one():
  g, macs = _groups()
  y = 0.5 + 3.0 * g.sum(axis=1)  # the new device: the source's costs, 3x slower, plus a constant
  fitted, cv = transfer.recalibrate(g, macs, y)
  assert np.allclose(fitted["scalar"].predict(g, macs), y)
  assert cv["scalar"] < 1e-9 and cv[cv["transfer_choice"]] < 1e-6
  y2 = 0.2 + g @ np.array([1.0, 4.0, 0.5])  # classes speed up differently on the new device
  fitted, cv = transfer.recalibrate(g, macs, y2)
  assert cv["transfer_choice"].startswith("grouped") and cv["transfer_choice"] != "grouped@1"
  assert np.allclose(fitted["transfer"].predict(g, macs), y2, rtol=2e-2)
  err = lambda m: np.sqrt(np.mean(((fitted[m].predict(g, macs) - y2) / y2)**2))  # noqa: E731
  assert err("transfer") < err("scalar") and err("transfer") < err("flops_linear")


def test_grouped_with_a_large_ridge_is_the_scalar_fit():
  g, macs = _groups(seed=1)
  y = 0.1 + g @ np.array([1.0, 2.0, 3.0])
  big = transfer.fit_candidate("grouped", g, macs, y, ridge=1e9)
  scalar = transfer.fit_candidate("scalar", g, macs, y)
  assert np.allclose(big.predict(g, macs), scalar.predict(g, macs), rtol=1e-5)


def test_config_refuses_bad_settings_naming_the_field():
  for kw, field in (({"source": "tx2"}, "source"), ({"fallback_source": "edgegpu_energy"},
                                                     "fallback_source"),
                    ({"targets": ("nope",)}, "targets"), ({"fractions": (0.9,)}, "fractions"),
                    ({"seeds": 0}, "seeds"), ({"table": "class@x"}, "table"),
                    ({"edge_kernels": "cell"}, "edge_kernels"), ({"limit": 5}, "limit")):
    with pytest.raises(ConfigError) as e:
      transfer.TransferConfig(**kw)
    assert e.value.field == field


def test_run_on_a_few_cells_writes_rows_curves_and_figure(tmp_path, shared_data):
  del shared_data
  cfg = transfer.TransferConfig(targets=("edgegpu_energy", "fpga_latency"), fractions=(0.2, 0.5),
                                seeds=2, limit=40)
  curves = transfer.run(cfg, tmp_path)
  with open(tmp_path / "transfer.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * 2 * 2 * len(transfer.MODELS)
  # Jetson energy is the source's own device (Jetson latency): it takes the fallback source.
  assert {r["source"] for r in rows if r["target"] == "edgegpu_energy"} == {"raspi4_latency"}
  assert {r["source"] for r in rows if r["target"] == "fpga_latency"} == {"edgegpu_latency"}
  assert {r["n_cells"] for r in rows if r["fraction"] == "0.2"} == {"10"}  # at least 10 cells
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["curves"] == curves
  for t in ("edgegpu_energy", "fpga_latency"):
    for f in ("0.2", "0.5"):
      vals = [float(r["rmspe"]) for r in rows if r["target"] == t and r["fraction"] == f and
              r["model"] == "transfer"]
      assert curves[t][f]["transfer"] == pytest.approx(float(np.median(vals)))
  assert (tmp_path / "transfer_curves.png").stat().st_size > 1000
