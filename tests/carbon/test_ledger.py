"""Tests for cenas_jax.carbon.ledger."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

from cenas_jax.carbon import ledger as lg


def _sample() -> lg.Ledger:
  led = lg.empty_ledger()
  # 1 GPU x 3600 s x 1000 W = 3.6e6 J = 1 kWh at 200 g/kWh -> 200 g.
  led = lg.ledger_add(led, t_start_s=0.0, duration_s=3600.0, n_gpus=1, kind="training",
                      power_w=1000.0, ci_g_per_kwh=200.0, tag="arch-a", job_id=7)
  # 2 GPUs x 1800 s x 100 W = 3.6e5 J = 0.1 kWh at 200 g/kWh, PUE 1.5 -> 30 g.
  led = lg.ledger_add(led, t_start_s=0.0, duration_s=1800.0, gpu_ids=[3, 5], kind="sampling",
                      power_w=100.0, ci_g_per_kwh=200.0, pue=1.5)
  # Measured energy 7.2e5 J on 4 GPUs over 3600 s -> power 50 W/GPU; 0.2 kWh at 100 -> 20 g.
  led = lg.ledger_add(led, t_start_s=3600.0, duration_s=3600.0, n_gpus=4, kind="idle",
                      energy_j=7.2e5, ci_g_per_kwh=100.0)
  return led


def test_entries_and_totals():
  led = _sample()
  assert len(led) == 3
  np.testing.assert_allclose(led.carbon_g, [200.0, 30.0, 20.0])
  np.testing.assert_allclose(led.energy_j, [3.6e6, 3.6e5, 7.2e5])
  np.testing.assert_allclose(led.power_w, [1000.0, 100.0, 50.0])
  assert list(led.kinds) == ["training", "sampling", "idle"]
  assert led.gpu_ids(1) == (3, 5) and led.gpu_ids(0) is None
  assert list(led.n_gpus) == [1, 2, 4]
  full = lg.totals(led)
  assert full.carbon_g == pytest.approx(250.0)
  assert full.energy_j == pytest.approx(4.68e6)
  assert full.gpu_seconds == pytest.approx(3600 + 3600 + 4 * 3600)
  assert full.n_entries == 3
  assert lg.totals(led, "paper").carbon_g == pytest.approx(200.0)
  assert lg.totals(led, {"sampling", "idle"}).carbon_g == pytest.approx(50.0)
  by_kind = lg.totals_by_kind(led)
  assert set(by_kind) == {"training", "sampling", "idle"}
  assert by_kind["sampling"].gpu_seconds == pytest.approx(3600.0)
  assert lg.totals(lg.empty_ledger()).carbon_g == 0.0
  with pytest.raises(ValueError, match="Unknown accounting policy"):
    lg.totals(led, "nope")


def test_functional_and_branch_safety():
  base = _sample()
  a = lg.ledger_add(base, t_start_s=10.0, duration_s=1.0, n_gpus=1, kind="switch", power_w=1.0,
                    ci_g_per_kwh=1.0)
  b = lg.ledger_add(base, t_start_s=20.0, duration_s=2.0, n_gpus=1, kind="training",
                    power_w=1.0, ci_g_per_kwh=1.0)  # base is an older view now: must branch
  assert len(base) == 3 and len(a) == 4 and len(b) == 4
  assert a.t_start_s[3] == 10.0 and b.t_start_s[3] == 20.0
  assert a.kinds[3] == "switch" and b.kinds[3] == "training"
  a2 = lg.ledger_add(a, t_start_s=30.0, duration_s=1.0, n_gpus=1, kind="idle", power_w=1.0,
                     ci_g_per_kwh=1.0)
  assert len(a) == 4 and len(a2) == 5 and b.t_start_s[3] == 20.0
  with pytest.raises(ValueError):
    base.carbon_g[0] = 0.0  # views are read-only


def test_many_appends_grow_amortized():
  led = lg.empty_ledger(capacity=1)
  for i in range(1000):
    led = lg.ledger_add(led, t_start_s=float(i), duration_s=1.0, n_gpus=2, kind="training",
                        power_w=1800.0, ci_g_per_kwh=100.0)
  assert len(led) == 1000
  # Each: 2 * 1800 W * 1 s = 3600 J = 1e-3 kWh * 100 = 0.1 g.
  assert lg.totals(led).carbon_g == pytest.approx(100.0)
  assert led._buf.capacity < 4096  # pylint: disable=protected-access


def test_invalid_input_raises():
  led = lg.empty_ledger()
  ok = dict(t_start_s=0.0, duration_s=1.0, n_gpus=1, kind="training", power_w=1.0, ci_g_per_kwh=1.0)
  for bad, match in [({"duration_s": -1.0}, "duration_s"), ({"power_w": -3.0}, "power_w"),
                     ({"ci_g_per_kwh": float("nan")}, "ci_g_per_kwh"), ({"pue": -1.0}, "pue"),
                     ({"kind": ""}, "kind"), ({"n_gpus": -2}, "n_gpus"),
                     ({"n_gpus": None}, "n_gpus or gpu_ids"),
                     ({"power_w": None}, "power_w .* or energy_j"),
                     ({"gpu_ids": [64]}, "gpu_ids"), ({"gpu_ids": [0, 1], "n_gpus": 3}, "disagrees"),
                     ({"energy_j": 5.0, "power_w": None, "duration_s": 0.0}, "zero GPU-seconds")]:
    with pytest.raises(ValueError, match=match):
      lg.ledger_add(led, **{**ok, **bad})
  assert len(led) == 0


def test_cumulative_curves():
  led = _sample()
  t_end, cum = lg.cumulative_carbon_g(led)
  np.testing.assert_allclose(t_end, [1800.0, 3600.0, 7200.0])
  np.testing.assert_allclose(cum, [30.0, 230.0, 250.0])
  at = lg.cumulative_carbon_g(led, [-1.0, 0.0, 900.0, 1800.0, 3600.0, 5400.0, 7200.0, 1e6])
  # At 900 s: training 200 * 0.25 + sampling 30 * 0.5 = 65.
  np.testing.assert_allclose(at, [0.0, 0.0, 65.0, 130.0, 230.0, 240.0, 250.0, 250.0], atol=1e-9)
  paper = lg.cumulative_carbon_g(led, [1800.0, 7200.0], policy="paper")
  np.testing.assert_allclose(paper, [100.0, 200.0])
  # Zero-length entries count as a jump at their start.
  z = lg.ledger_add(led, t_start_s=100.0, duration_s=0.0, n_gpus=1, kind="switch",
                    energy_j=3.6e6, power_w=0.0, ci_g_per_kwh=5.0)
  np.testing.assert_allclose(lg.cumulative_carbon_g(z, [99.0, 100.0], policy={"switch"}), [0.0, 5.0])
  np.testing.assert_allclose(lg.cumulative_carbon_g(lg.empty_ledger(), [1.0, 2.0]), [0.0, 0.0])
  # Matches a brute-force pro-rata sum on random entries.
  rng = np.random.default_rng(1)
  r = lg.empty_ledger()
  for _ in range(50):
    r = lg.ledger_add(r, t_start_s=rng.uniform(0, 100), duration_s=rng.choice([0.0, rng.uniform(0, 30)]),
                      n_gpus=1, kind="training", power_w=rng.uniform(0, 300), ci_g_per_kwh=200.0)
  ts = np.linspace(-5, 140, 97)
  d = r.duration_s
  frac = np.where(d[None] > 0, np.clip((ts[:, None] - r.t_start_s[None]) / np.where(d > 0, d, 1)[None], 0, 1),
                  (ts[:, None] >= r.t_start_s[None]).astype(float))
  np.testing.assert_allclose(lg.cumulative_carbon_g(r, ts), frac @ r.carbon_g, rtol=1e-9, atol=1e-9)


def test_dict_round_trip_and_dataframe():
  led = _sample()
  data = json.loads(json.dumps(led.to_dict(), allow_nan=False))
  back = lg.Ledger.from_dict(data)
  assert len(back) == 3
  for col in ("t_start_s", "duration_s", "carbon_g", "energy_j", "power_w", "pue", "job_id"):
    np.testing.assert_array_equal(back.column(col), led.column(col))
  assert list(back.kinds) == list(led.kinds) and list(back.tags) == list(led.tags)
  assert back.gpu_ids(1) == (3, 5)
  more = lg.ledger_add(back, t_start_s=1.0, duration_s=1.0, n_gpus=1, kind="training", power_w=1.0,
                       ci_g_per_kwh=1.0)
  assert len(more) == 4
  df = led.to_dataframe()
  assert list(df["kind"]) == ["training", "sampling", "idle"]
  assert df["carbon_g"].sum() == pytest.approx(250.0)
  assert df.loc[1, "gpu_ids"] == (3, 5) and df.loc[0, "tag"] == "arch-a" and df.loc[0, "job_id"] == 7
  bad = dict(data, duration_s=[1.0, -1.0, 1.0])
  with pytest.raises(ValueError, match="duration_s"):
    lg.from_dict(bad)
  with pytest.raises(ValueError, match="shape"):
    lg.from_dict(dict(data, carbon_g=[1.0]))
  with pytest.raises(ValueError, match="Not a ledger"):
    lg.from_dict({"n": 0})


def test_copy_and_pickle():
  led = _sample()
  assert copy.deepcopy({"l": led})["l"] is led
  back = pickle.loads(pickle.dumps(led))
  np.testing.assert_array_equal(back.carbon_g, led.carbon_g)
  assert list(back.kinds) == list(led.kinds)
