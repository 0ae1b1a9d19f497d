"""The carbon tracker: predicted and measured energy, trace / live / constant intensity, and the
CodeCarbon-compatible emissions.csv; the Electricity Maps client on a stored API response (written
in the documented v3 `/carbon-intensity/latest` format: no network is reachable where these run)."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cenas_jax import energy
from cenas_jax.carbon import tracker as tr
from cenas_jax.data import live_intensity as live
from cenas_jax.energy.meter import FakeEnergyMeter, SimulatedClock
from cenas_jax.errors import DataError

_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "electricitymaps_latest_DE.json"
_T0 = pd.Timestamp("2026-01-05T10:00:00Z").timestamp()


def _mlp(params, x):
  return jnp.tanh(x @ params["w1"]) @ params["w2"]


def _inputs():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  return ({"w1": jax.random.normal(k1, (64, 128)), "w2": jax.random.normal(k2, (128, 10))},
          jax.random.normal(k3, (32, 64)))


def _rows(path: Path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_predicted_energy_charged_at_a_constant_intensity(tmp_path):
  clock = SimulatedClock(_T0)
  t = tr.CarbonTracker(tr.ConstantIntensity(400.0, "test"), device="a100-sxm4-40gb", meter=None,
                       output_dir=tmp_path, pue=1.2, clock=clock)
  fn = jax.jit(_mlp)
  step = t.wrap(fn)
  params, x = _inputs()
  with t:
    for _ in range(3):
      step(params, x)
    clock.advance(2.0)
  per_call = energy.predict_energy_j(energy.prior_model("a100-sxm4-40gb"), energy.extract_kernels(fn, params, x, mode="gpu"))
  e = t.last
  assert e.n_calls == 3 and e.energy_j == pytest.approx(3 * per_call) and e.energy_j > 0
  assert e.energy_source == "predicted-prior:a100-sxm4-40gb" and e.ci_source == "test"
  assert e.carbon_g == pytest.approx(3 * per_call * 1.2 / 3.6e6 * 400.0)
  assert e.duration_s == pytest.approx(2.0)
  with open(tmp_path / "emissions.csv", newline="") as f:
    header = next(csv.reader(f))
  assert tuple(header) == tr.CODECARBON_COLUMNS + tr.EXTRA_COLUMNS
  (row,) = _rows(tmp_path / "emissions.csv")
  assert float(row["emissions"]) == pytest.approx(e.carbon_g / 1000)  # kg, as CodeCarbon
  assert float(row["energy_consumed"]) == pytest.approx(e.energy_j * 1.2 / 3.6e6)  # kWh with PUE
  assert row["energy_source"] == "predicted-prior:a100-sxm4-40gb" and row["gpu_model"] == "a100-sxm4-40gb"
  assert row["timestamp"] == "2026-01-05T10:00:02"


def test_measured_energy_and_a_replayed_trace(tmp_path):
  clock = SimulatedClock(_T0)
  meter = FakeEnergyMeter(250.0, clock=clock, counter_period_s=1.0)
  index = pd.date_range("2021-07-02T00:00Z", periods=4, freq="h")
  trace = pd.Series([100.0, 200.0, 300.0, 400.0], index=index)
  t = tr.CarbonTracker(tr.TraceIntensity(trace, replay_start="2021-07-02T00:30Z"), meter=meter,
                       output_dir=tmp_path, clock=clock)

  @t
  def work():
    clock.advance(7200.0)  # two hours: 30 min at 100, 60 at 200, 30 at 300 -> mean 200

  work()
  e = t.last
  assert e.energy_source == "fake" and e.energy_j == pytest.approx(250.0 * 7200)
  assert e.ci_g_per_kwh == pytest.approx(200.0)
  assert e.carbon_g == pytest.approx(0.5 * 200.0)  # 0.5 kWh x 200 g/kWh
  # The second block replays the trace at the same offset: 02:30 .. 04:30 leaves it.
  with pytest.raises(tr.TrackerError, match="the trace covers"):
    work()
  assert len(_rows(tmp_path / "emissions.csv")) == 1


def test_nothing_metered_is_refused(tmp_path):
  t = tr.CarbonTracker(tr.ConstantIntensity(100.0), device="a100-sxm4-40gb", meter=None, output_dir=tmp_path)
  with pytest.raises(tr.TrackerError, match="nothing was metered"):
    with t:
      pass
  assert not (tmp_path / "emissions.csv").exists()


def test_appends_to_a_codecarbon_file_and_refuses_a_foreign_one(tmp_path):
  path = tmp_path / "emissions.csv"
  path.write_text(",".join(tr.CODECARBON_COLUMNS) + "\n" + ",".join(
      ["2024-05-27T11:31:35", "codecarbon", "r1", "299.8", "0.0166"] + [""] * 26) + "\n")
  tr.append_emissions_csv(path, {"timestamp": "2026-01-01T00:00:00", "emissions": 0.5,
                                 "energy_source": "fake"})
  rows = _rows(path)
  assert [r["emissions"] for r in rows] == ["0.0166", "0.5"] and rows[0]["energy_source"] == ""
  other = tmp_path / "other.csv"
  other.write_text("a,b\n1,2\n")
  with pytest.raises(DataError, match="other.csv"):
    tr.append_emissions_csv(other, {"emissions": 1.0})
  assert other.read_text() == "a,b\n1,2\n"


def _replay(status=200, body=None):
  calls = []

  def fetch(url, headers, timeout_s):
    calls.append((url, dict(headers), timeout_s))
    return status, _FIXTURE.read_bytes() if body is None else body

  return fetch, calls


def test_electricitymaps_client_on_a_stored_response():
  fetch, calls = _replay()
  reading = live.ElectricityMapsClient(zone="DE", token="T", fetch=fetch).latest()
  assert calls == [("https://api.electricitymap.org/v3/carbon-intensity/latest?zone=DE",
                    {"auth-token": "T"}, 10.0)]
  assert reading.ci_g_per_kwh == 302.0 and reading.zone == "DE" and reading.is_estimated
  assert reading.time_utc == pd.Timestamp("2024-05-21T14:00Z")
  assert reading.source == "electricitymaps-live:DE:lifecycle"
  for status, match in ((401, "token was refused"), (404, "zone 'DE' refused"), (500, "HTTP 500")):
    with pytest.raises(live.LiveIntensityError, match=match):
      live.ElectricityMapsClient(zone="DE", token="T", fetch=_replay(status, b"{}")[0]).latest()
  with pytest.raises(DataError, match="not an Electricity Maps"):
    live.ElectricityMapsClient(zone="DE", token="T", fetch=_replay(200, b"<html>")[0]).latest()


def test_live_intensity_when_a_token_is_set(monkeypatch, tmp_path):
  monkeypatch.delenv(live.TOKEN_ENV, raising=False)
  with pytest.raises(live.LiveIntensityError, match=live.TOKEN_ENV):
    live.ElectricityMapsClient(zone="DE").latest()
  trace = pd.Series([50.0], index=pd.date_range("2021-01-01T00:00Z", periods=1, freq="h"))
  assert isinstance(tr.default_intensity("DE", trace), tr.TraceIntensity)
  monkeypatch.setenv(live.TOKEN_ENV, "secret")
  source = tr.default_intensity("DE", trace)
  assert isinstance(source, tr.LiveIntensity) and source.client.token == "secret"
  source.client.fetch = _replay()[0]
  clock = SimulatedClock(_T0)
  t = tr.CarbonTracker(source, meter=FakeEnergyMeter(100.0, clock=clock, counter_period_s=1.0),
                       output_dir=tmp_path, clock=clock)
  with t:
    clock.advance(36.0)
  assert t.last.ci_g_per_kwh == 302.0 and t.last.ci_source.startswith("electricitymaps-live:DE")
  assert t.last.carbon_g == pytest.approx(3600.0 / 3.6e6 * 302.0)
  assert np.isclose(float(_rows(tmp_path / "emissions.csv")[0]["ci_g_per_kwh"]), 302.0)
