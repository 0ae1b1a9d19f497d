"""Tests for cenas_jax.data.carbon_traces: the real shared traces and strict handling of bad files."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cenas_jax.data import carbon_traces as ct
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file

CENAS_WINDOW_START = "2021-07-02T06:00Z"  # CE-NAS carbon_reader.py row 13158.
CENAS_WINDOW_HOURS = 80


def _ci_dir(shared_data: Path) -> Path:
  return shared_data / "carbon_intensity"


def _utc(text: str) -> pd.Timestamp:
  return pd.Timestamp(text, tz="UTC")


# ----------------------------------------------------------------------------------------------
# Real files.

# Lifecycle mean (min, max) measured in PROVENANCE.md on 2021-2024; our 2021-2023 copy must lie
# within that range.
_FORECASTING_RANGE = {
    "US-CAL-CISO": (50.6, 454.4),
    "DE": (108.7, 773.0),
    "US-MIDA-PJM": (266.1, 572.7),
}


@pytest.mark.parametrize("region", ct.KNOWN_REGIONS)
def test_forecasting_data(shared_data, region):
  path = _ci_dir(shared_data) / "carbonx" / "forecasting-data" / f"{region}.csv"
  trace = ct.load_trace(path)
  assert len(trace) == 26_280
  assert trace.start == _utc("2021-01-01 00:00")
  assert trace.end == _utc("2024-01-01 00:00")
  assert trace.source == f"electricitymaps:{region}:lifecycle"
  assert trace.region == region
  assert trace.column == "Carbon intensity gCO₂eq/kWh (Life cycle)"
  assert trace.sha256 == sha256_file(path)
  assert trace.interpolated_hours == () and trace.merged_duplicate_hours == 0
  assert trace.generation_mwh is None
  lo, hi = _FORECASTING_RANGE[region]
  values = trace.values
  assert values.dtype == np.float64 and values.shape == (26_280,)
  assert lo - 0.05 <= values.min() and values.max() <= hi + 0.05
  s = trace.ci_g_per_kwh
  assert str(s.index.tz) == "UTC" and s.index.freqstr == "h" and not s.isna().any()
  direct = ct.load_trace(path, column="direct")
  assert direct.source == f"electricitymaps:{region}:direct"
  assert np.all(direct.values < values)  # Direct excludes upstream emissions.


@pytest.mark.parametrize("year, direct_mean", [(2021, 205.6), (2022, 194.6), (2023, 193.5)])
def test_electricitymaps_yearly(shared_data, year, direct_mean):
  path = _ci_dir(shared_data) / "electricitymaps" / f"US-CAL-CISO_{year}_hourly.csv.gz"
  trace = ct.load_electricitymaps_csv(path, column="direct")
  assert ct.sniff_format(path) == "electricitymaps"
  assert len(trace) == 8_760
  assert trace.start == _utc(f"{year}-01-01 00:00")
  assert trace.end == _utc(f"{year + 1}-01-01 00:00")
  assert trace.column == "Carbon Intensity gCO₂eq/kWh (direct)"
  assert trace.sha256 == sha256_file(path)  # Hash of the stored (gzip) bytes.
  assert trace.values.mean() == pytest.approx(direct_mean, abs=0.05)
  if year == 2021:
    assert trace.values.min() == pytest.approx(58.8, abs=0.05)
    assert trace.values.max() == pytest.approx(326.0, abs=0.05)
  lifecycle = ct.load_trace(path)
  assert lifecycle.column == "Carbon Intensity gCO₂eq/kWh (LCA)"
  assert lifecycle.source == "electricitymaps:US-CAL-CISO:lifecycle"


_BENCHMARK = {  # mean (min, max) and generation columns, from PROVENANCE.md.
    "US-CAL-CISO": (272.9, 84.0, 450.9,
                    ["coal", "nat_gas", "nuclear", "oil", "hydro", "solar", "wind", "other"]),
    "DE": (326.3, 106.3, 567.6, ["biomass", "coal", "nat_gas", "geothermal", "hydro", "nuclear",
                                 "oil", "solar", "wind", "unknown"]),
    "US-MIDA-PJM": (368.4, 256.2, 480.2,
                    ["coal", "nat_gas", "nuclear", "oil", "hydro", "solar", "wind", "other"]),
}


@pytest.mark.parametrize("region", ct.KNOWN_REGIONS)
def test_benchmark_data(shared_data, region):
  path = _ci_dir(shared_data) / "carbonx" / "benchmark-data" / f"{region}.csv"
  assert ct.sniff_format(path) == "carbonx-benchmark"
  trace = ct.load_trace(path)
  mean, lo, hi, gen_cols = _BENCHMARK[region]
  assert len(trace) == 17_544
  assert trace.start == _utc("2020-01-01 00:00") and trace.end == _utc("2022-01-01 00:00")
  assert trace.source == f"carbonx-benchmark:{region}:carbon_intensity"
  assert trace.region == region
  assert trace.values.mean() == pytest.approx(mean, abs=0.05)
  assert trace.values.min() == pytest.approx(lo, abs=0.06)
  assert trace.values.max() == pytest.approx(hi, abs=0.06)
  gen = trace.generation_mwh
  assert list(gen.columns) == gen_cols
  assert gen.index.equals(trace.ci_g_per_kwh.index)
  assert gen.to_numpy().dtype == np.float64 and np.all(np.isfinite(gen.to_numpy()))
  assert trace.to_dict()["generation_columns"] == gen_cols


def test_benchmark_first_rows_both_date_formats(shared_data):
  bench = _ci_dir(shared_data) / "carbonx" / "benchmark-data"
  ciso = ct.load_trace(bench / "US-CAL-CISO.csv")  # MM/DD/YYYY HH:MM:SS
  de = ct.load_trace(bench / "DE.csv")  # YYYY-MM-DD HH:MM:SS+00:00
  assert ciso.ci_g_per_kwh[_utc("2020-01-01 01:00")] == pytest.approx(389.74)
  assert ciso.generation_mwh.loc[_utc("2020-01-01 01:00"), "nat_gas"] == 9098
  assert de.ci_g_per_kwh[_utc("2021-12-31 23:00")] == pytest.approx(159.58)


@pytest.mark.parametrize("dataset, column, expected", [
    ("forecasting", "lifecycle", (157.8, 328.6, 258.2)),
    ("forecasting", "direct", (105.3, 250.0, 190.8)),
    ("benchmark", None, (153.4, 340.2, 262.8)),
])
def test_cenas_window(shared_data, dataset, column, expected):
  trace = ct.region_trace("US-CAL-CISO", dataset=dataset, column=column, root=shared_data)
  w = trace.window(CENAS_WINDOW_START, CENAS_WINDOW_HOURS)
  assert len(w) == 80
  assert w.start == _utc("2021-07-02 06:00") and w.end == _utc("2021-07-05 14:00")
  got = (w.values.min(), w.values.max(), w.values.mean())
  np.testing.assert_allclose(got, expected, atol=0.051)
  if dataset == "benchmark":
    assert len(w.generation_mwh) == 80 and w.generation_mwh.index.equals(w.ci_g_per_kwh.index)


def test_co2signal_raw_file_matches_provenance(shared_data):
  path = _ci_dir(shared_data) / "pause-resume" / "US-CAL-CISO.csv"
  raw = pd.read_csv(path)
  assert len(raw) == 18_088
  assert raw["zone_datetime"].nunique() == 9_707
  assert raw["carbon_intensity_avg"].mean() == pytest.approx(247.5, abs=0.05)
  assert ct.sniff_format(path) == "co2signal"


def test_co2signal_default_raises_on_first_long_gap(shared_data):
  path = _ci_dir(shared_data) / "pause-resume" / "US-CAL-CISO.csv"
  with pytest.raises(DataError) as e:
    ct.load_trace(path)
  msg = str(e.value)
  assert str(path) in msg
  assert "8 missing hours from 2021-10-08T06:00Z to 2021-10-08T13:00Z" in msg
  assert "data row 1 " in msg and "data row 2 " in msg and "max_gap_hours=3" in msg


def test_co2signal_all_hours_with_large_max_gap(shared_data, caplog):
  path = _ci_dir(shared_data) / "pause-resume" / "US-CAL-CISO.csv"
  with caplog.at_level(logging.WARNING, logger="cenas_jax.data.carbon_traces"):
    trace = ct.load_co2signal_csv(path, max_gap_hours=300)
  span_h = 10_193  # 2021-10-08T05:00Z .. 2022-12-06T21:00Z inclusive.
  assert len(trace) == span_h
  assert trace.start == _utc("2021-10-08 05:00") and trace.end == _utc("2022-12-06 22:00")
  assert len(trace.interpolated_hours) == span_h - 9_707  # Every distinct hour is kept.
  assert trace.merged_duplicate_hours > 8_000
  assert trace.source == "co2signal:US-CAL-CISO:carbon_intensity_avg"
  assert trace.sha256 == "b595d752587f940af97c9715ad7e52fe808e5f947ade69f0206c9fac983629b2"
  assert 11 <= trace.values.min() and trace.values.max() <= 426
  # Hour 09:00 is re-reported after hour 10:00 (rows 7770-7777): all 7 readings are merged.
  assert trace.ci_g_per_kwh[_utc("2022-04-08 09:00")] == pytest.approx(
      (331 + 334 + 5 * 336) / 7)
  warnings = [r for r in caplog.records if "interpolated" in r.getMessage()]
  assert len(warnings) == 1 and "486" in warnings[0].getMessage()


def test_co2signal_gap_free_window(shared_data):
  path = _ci_dir(shared_data) / "pause-resume" / "US-CAL-CISO.csv"
  trace = ct.load_trace(path, start="2021-10-08T14:00Z", end="2022-04-08T11:00Z")
  assert len(trace) == 4_365
  assert trace.start == _utc("2021-10-08 14:00") and trace.end == _utc("2022-04-08 11:00")
  assert all(trace.start <= t < trace.end for t in trace.interpolated_hours)
  assert 0 < len(trace.interpolated_hours) < 200
  with pytest.raises(DataError, match=r"288 missing hours from 2022-04-08T11:00Z to "
                                     r"2022-04-20T10:00Z"):
    ct.load_trace(path, start="2022-04-01T00:00Z", end="2022-05-01T00:00Z")


def test_region_trace(shared_data, tmp_path):
  for region in ct.KNOWN_REGIONS:
    assert ct.region_trace(region, root=shared_data).region == region
  em = ct.region_trace("US-CAL-CISO", dataset="electricitymaps", year=2022, root=shared_data)
  assert len(em) == 8_760 and em.start == _utc("2022-01-01 00:00")
  with pytest.raises(ValueError, match="year="):
    ct.region_trace("US-CAL-CISO", dataset="electricitymaps", root=shared_data)
  with pytest.raises(ValueError, match="year= only applies"):
    ct.region_trace("DE", year=2021, root=shared_data)
  with pytest.raises(ValueError, match="Unknown region"):
    ct.region_trace("FR", root=shared_data)
  with pytest.raises(ValueError, match="Unknown dataset"):
    ct.region_trace("DE", dataset="nope", root=shared_data)
  with pytest.raises(DataUnavailableError, match="DE_2021_hourly.csv.gz"):
    ct.region_trace("DE", dataset="electricitymaps", year=2021, root=shared_data)
  with pytest.raises(DataUnavailableError, match="CENAS_SHARED_DATA"):
    ct.region_trace("DE", root=tmp_path)


def test_region_trace_default_root_uses_env(shared_data, monkeypatch):
  monkeypatch.setenv("CENAS_SHARED_DATA", str(shared_data))
  trace = ct.region_trace("DE", dataset="benchmark")
  assert trace.path == str(shared_data / "carbon_intensity/carbonx/benchmark-data/DE.csv")


def test_trace_helpers_and_provenance(shared_data):
  trace = ct.region_trace("US-CAL-CISO", root=shared_data)
  w = trace.window("2021-07-02T06:00:00+00:00", 5)
  assert len(w) == 5
  np.testing.assert_array_equal(w.values, trace.ci_g_per_kwh.loc["2021-07-02 06:00":
                                                                  "2021-07-02 10:00"].to_numpy())
  same = trace.slice(pd.Timestamp("2021-07-01 23:00", tz="America/Los_Angeles"),
                     "2021-07-02T11:00Z")
  assert same.start == _utc("2021-07-02 06:00") and len(same) == 5
  np.testing.assert_array_equal(same.values, w.values)
  whole = trace.slice()
  assert len(whole) == len(trace)
  d = w.to_dict()
  json.dumps(d, allow_nan=False)
  assert d["start"] == "2021-07-02T06:00Z" and d["end"] == "2021-07-02T11:00Z"
  assert d["hours"] == 5 and d["sha256"] == trace.sha256 and d["region"] == "US-CAL-CISO"
  with pytest.raises(dataclasses.FrozenInstanceError):
    trace.source = "x"  # type: ignore[misc]
  with pytest.raises(DataError, match="outside the trace"):
    trace.window("2023-12-31T20:00Z", 5)
  with pytest.raises(DataError, match="outside the trace"):
    trace.window("2020-12-31T23:00Z", 2)
  with pytest.raises(ValueError, match="no timezone"):
    trace.window("2021-07-02 06:00", 5)
  with pytest.raises(ValueError, match="not on the hour"):
    trace.window("2021-07-02T06:30Z", 5)
  with pytest.raises(ValueError, match="positive integer"):
    trace.window("2021-07-02T06:00Z", 0)
  with pytest.raises(ValueError, match="must be after"):
    trace.slice("2021-07-02T06:00Z", "2021-07-02T06:00Z")


# ----------------------------------------------------------------------------------------------
# Synthetic files.

_EM_HEADER = ("Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
              "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
              "Data Source,Data Estimated,Data Estimation Method")


def _em_row(hour: int, direct: float, lca: float, zone: str = "US-CAL-CISO") -> str:
  return f"2021-01-01 {hour:02d}:00:00,USA,CAISO,{zone},{direct},{lca},44.7,33.7,caiso.com,false,"


def _write(tmp_path: Path, name: str, lines: list[str], *, newline_at_end: bool = True) -> Path:
  path = tmp_path / name
  text = "\n".join(lines) + ("\n" if newline_at_end else "")
  path.write_text(text, encoding="utf-8")
  return path


def _plain(tmp_path: Path, rows: list[tuple[str, str]], name: str = "trace.csv") -> Path:
  return _write(tmp_path, name, ["time,value"] + [f"{t},{v}" for t, v in rows])


def _hours(n: int, start: str = "2021-01-01T00:00:00Z") -> list[str]:
  t0 = pd.Timestamp(start)
  return [(t0 + pd.Timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(n)]


def test_plain_csv_roundtrip_and_gzip(tmp_path):
  times = _hours(4)
  path = _plain(tmp_path, list(zip(times, ["100", "110.5", "120", "0"])))
  trace = ct.load_trace(path)
  assert ct.sniff_format(path) == "plain"
  assert trace.source == "plain:unknown:value" and trace.region is None
  np.testing.assert_array_equal(trace.values, [100.0, 110.5, 120.0, 0.0])
  gz = tmp_path / "trace.csv.gz"
  gz.write_bytes(gzip.compress(path.read_bytes()))
  trace_gz = ct.load_plain_csv(gz, region="DE")
  np.testing.assert_array_equal(trace_gz.values, trace.values)
  assert trace_gz.sha256 == sha256_file(gz) != trace.sha256
  assert trace_gz.source == "plain:DE:value"


def test_offsets_are_converted_to_utc(tmp_path):
  path = _plain(tmp_path, [("2021-01-01T01:00:00+01:00", "1"), ("2021-01-01T02:00:00+01:00", "2"),
                           ("2021-01-01T02:00:00Z", "3")])
  trace = ct.load_trace(path)
  assert trace.start == _utc("2021-01-01 00:00")
  np.testing.assert_array_equal(trace.values, [1.0, 2.0, 3.0])


def test_truncated_file(tmp_path):
  lines = [_EM_HEADER] + [_em_row(h, 200 + h, 300 + h) for h in range(5)]
  lines[-1] = lines[-1][:48]  # Cut mid-row: '...,204,30' (the LCA value itself looks valid).
  assert lines[-1].endswith(",204,30")
  path = _write(tmp_path, "cut.csv", lines, newline_at_end=False)
  with pytest.raises(DataError, match=r"cut\.csv: data row 5 has 6 fields, the header has 11 "
                                      r"\(the file looks truncated"):
    ct.load_trace(path)


def test_corrupt_gzip(tmp_path):
  path = tmp_path / "t.csv.gz"
  path.write_bytes(gzip.compress(b"time,value\n2021-01-01T00:00Z,1\n" * 50)[:-20])
  with pytest.raises(DataError, match=r"t\.csv\.gz: gzip data is corrupt or truncated"):
    ct.load_trace(path)


def test_wrong_header(tmp_path):
  path = _write(tmp_path, "bad.csv", ["time,val", "2021-01-01T00:00Z,1"])
  with pytest.raises(DataError, match=r"bad\.csv: unrecognized header 'time,val'"):
    ct.load_trace(path)
  with pytest.raises(DataError, match=r"bad\.csv: wrong header for format 'plain'"):
    ct.load_trace(path, fmt="plain")
  no_lca = _EM_HEADER.replace("(LCA)", "(other)")
  path = _write(tmp_path, "em.csv", [no_lca, _em_row(0, 1, 2)])
  with pytest.raises(DataError, match=r"em\.csv: wrong header for format 'electricitymaps'"):
    ct.load_trace(path)
  path = _write(tmp_path, "empty.csv", [""])
  with pytest.raises(DataError, match="empty file"):
    ct.load_trace(path)
  path = _write(tmp_path, "header_only.csv", ["time,value"])
  with pytest.raises(DataError, match="no data rows"):
    ct.load_trace(path)


def test_long_gap_raises(tmp_path):
  times = _hours(10)
  rows = [(t, "100") for i, t in enumerate(times) if not 2 <= i <= 5]  # 4 missing hours.
  path = _plain(tmp_path, rows, "gap.csv")
  with pytest.raises(DataError) as e:
    ct.load_trace(path)
  msg = str(e.value)
  assert "gap.csv: 4 missing hours from 2021-01-01T02:00Z to 2021-01-01T05:00Z" in msg
  assert "data row 2 (2021-01-01T01:00Z)" in msg and "data row 3 (2021-01-01T06:00Z)" in msg
  trace = ct.load_trace(path, max_gap_hours=4)
  assert len(trace) == 10 and len(trace.interpolated_hours) == 4
  head = ct.load_trace(path, end="2021-01-01T02:00Z")  # The gap is outside the window.
  assert len(head) == 2 and head.interpolated_hours == ()


def test_short_gap_is_interpolated_and_reported(tmp_path, caplog):
  times = _hours(6)
  rows = [(times[0], "100"), (times[1], "100"), (times[4], "160"), (times[5], "10")]
  path = _plain(tmp_path, rows, "short.csv")
  with caplog.at_level(logging.WARNING, logger="cenas_jax.data.carbon_traces"):
    trace = ct.load_trace(path)
  np.testing.assert_allclose(trace.values, [100, 100, 120, 140, 160, 10])
  assert trace.interpolated_hours == (_utc("2021-01-01 02:00"), _utc("2021-01-01 03:00"))
  assert trace.to_dict()["interpolated_hours"] == ["2021-01-01T02:00Z", "2021-01-01T03:00Z"]
  msgs = [r.getMessage() for r in caplog.records]
  assert len(msgs) == 1 and "short.csv" in msgs[0] and "interpolated 2 missing hour" in msgs[0]
  # A window starting inside the gap interpolates from the neighbour before the window.
  part = ct.load_trace(path, start="2021-01-01T03:00Z")
  np.testing.assert_allclose(part.values, [140, 160, 10])
  assert part.interpolated_hours == (_utc("2021-01-01 03:00"),)
  assert part.window("2021-01-01T04:00Z", 2).interpolated_hours == ()
  with pytest.raises(DataError, match="2 missing hours"):
    ct.load_trace(path, max_gap_hours=1)


def test_benchmark_generation_is_interpolated_too(tmp_path):
  lines = [",UTC time,carbon_intensity,coal,solar",
           "0,01/01/2020 00:00:00,100,10,0",
           "1,01/01/2020 02:00:00,200,30,4"]
  path = _write(tmp_path, "US-CAL-CISO.csv", lines)
  trace = ct.load_carbonx_benchmark_csv(path)
  assert trace.region == "US-CAL-CISO"
  np.testing.assert_allclose(trace.values, [100, 150, 200])
  np.testing.assert_allclose(trace.generation_mwh["coal"], [10, 20, 30])
  np.testing.assert_allclose(trace.generation_mwh["solar"], [0, 2, 4])
  assert ct.load_trace(path, region="X").region == "X"


@pytest.mark.parametrize("value, why", [
    ("", "missing value"),
    ("nan", "missing value"),
    ("-3", "negative value '-3'"),
    ("12a", "non-numeric value '12a'"),
    ("inf", "infinite value"),
])
def test_bad_values(tmp_path, value, why):
  times = _hours(4)
  path = _plain(tmp_path, [(times[0], "1"), (times[1], "2"), (times[2], value), (times[3], "4")],
                "vals.csv")
  with pytest.raises(DataError, match=rf"vals\.csv: data row 3: {why}.* column 'value'"):
    ct.load_trace(path)


def test_bad_value_in_electricitymaps_chosen_column(tmp_path):
  lines = [_EM_HEADER, _em_row(0, 1, 2), _em_row(1, "", 3), _em_row(2, 1, "x")]
  path = _write(tmp_path, "em.csv", lines)
  with pytest.raises(DataError, match=r"em\.csv: data row 3: non-numeric value 'x'.*LCA"):
    ct.load_trace(path)
  with pytest.raises(DataError, match=r"em\.csv: data row 2: missing value.*direct"):
    ct.load_trace(path, column="direct")
  with pytest.raises(ValueError, match="column must be"):
    ct.load_trace(path, column="marginal")


def test_duplicate_hours_are_merged(tmp_path):
  t = _hours(3)
  path = _plain(tmp_path, [(t[0], "100"), (t[1], "200"), (t[1], "300"), (t[1], "400"),
                           (t[2], "10"), (t[2], "20")])
  trace = ct.load_trace(path)
  np.testing.assert_allclose(trace.values, [100, 300, 15])
  assert trace.merged_duplicate_hours == 2
  assert trace.to_dict()["merged_duplicate_hours"] == 2


def test_sub_hourly_is_averaged(tmp_path):
  rows = [("2021-01-01T00:00:00Z", "100"), ("2021-01-01T00:15:00Z", "110"),
          ("2021-01-01T00:30:00Z", "120"), ("2021-01-01T00:45:00Z", "130"),
          ("2021-01-01T01:00:00Z", "50"), ("2021-01-01T01:30:00Z", "70")]
  trace = ct.load_trace(_plain(tmp_path, rows))
  np.testing.assert_allclose(trace.values, [115, 60])
  assert trace.start == _utc("2021-01-01 00:00") and len(trace) == 2


def test_unsorted_raises(tmp_path):
  t = _hours(4)
  path = _plain(tmp_path, [(t[0], "1"), (t[2], "2"), (t[1], "3"), (t[3], "4")], "uns.csv")
  with pytest.raises(DataError, match=r"uns\.csv: data row 3: time .* is earlier than row 2"):
    ct.load_trace(path)


def test_naive_timestamps_raise(tmp_path):
  path = _plain(tmp_path, [("2021-01-01T00:00:00Z", "1"), ("2021-01-01 01:00:00", "2")], "nv.csv")
  with pytest.raises(DataError, match=r"nv\.csv: data row 2: timestamp '2021-01-01 01:00:00' .*"
                                      "no timezone"):
    ct.load_trace(path)
  path = _plain(tmp_path, [("2021-01-01T00:00:00Z", "1"), ("2021-01-02", "2")], "date.csv")
  with pytest.raises(DataError, match=r"date\.csv: data row 2: .*no timezone"):
    ct.load_trace(path)


def test_unparseable_timestamp_and_blank_line(tmp_path):
  path = _plain(tmp_path, [("2021-01-01T00:00:00Z", "1"), ("2021-13-01T01:00:00Z", "2")], "t.csv")
  with pytest.raises(DataError, match=r"t\.csv: data row 2: cannot parse timestamp"):
    ct.load_trace(path)
  path = _write(tmp_path, "blank.csv", ["time,value", "2021-01-01T00:00Z,1", "",
                                        "2021-01-01T01:00Z,2"])
  with pytest.raises(DataError, match=r"blank\.csv: data row 2 is empty"):
    ct.load_trace(path)


_CO2_HEADER = ("timestamp,zone_datetime,status,zone_name,carbon_intensity_avg,"
               "carbon_intensity_unit,fossilFuelPercentage")


def _co2_row(scrape_s: int, zone_dt: str, ci: str, status: str = "ok", zone: str = "US-CAL-CISO",
             unit: str = "gCO2eq/kWh") -> str:
  return f"{scrape_s},{zone_dt},{status},{zone},{ci},{unit},50.0"


def test_co2signal_synthetic(tmp_path):
  lines = [_CO2_HEADER,
           _co2_row(1, "2021-10-08T05:00:00.000Z", "300"),
           _co2_row(2, "2021-10-08T06:00:00.000Z", "310"),
           _co2_row(3, "2021-10-08T05:00:00.000Z", "302"),  # An earlier hour, re-reported.
           _co2_row(4, "2021-10-08T07:00:00.000Z", "320")]
  path = _write(tmp_path, "co2.csv", lines)
  trace = ct.load_trace(path)
  np.testing.assert_allclose(trace.values, [301, 310, 320])
  assert trace.merged_duplicate_hours == 1 and trace.region == "US-CAL-CISO"
  lines_unsorted = lines[:2] + [_co2_row(0, "2021-10-08T06:00:00.000Z", "310")]
  with pytest.raises(DataError, match=r"data row 2: timestamp '0' is earlier than row 1"):
    ct.load_trace(_write(tmp_path, "co2u.csv", lines_unsorted))
  naive = [_CO2_HEADER, _co2_row(1, "2021-10-08T05:00:00", "300")]
  with pytest.raises(DataError, match="data row 1: .*no timezone"):
    ct.load_trace(_write(tmp_path, "co2n.csv", naive))
  failed = [_CO2_HEADER, _co2_row(1, "2021-10-08T05:00:00Z", "300", status="error")]
  with pytest.raises(DataError, match="data row 1: status 'error'"):
    ct.load_trace(_write(tmp_path, "co2s.csv", failed))
  unit = [_CO2_HEADER, _co2_row(1, "2021-10-08T05:00:00Z", "300", unit="g/MWh")]
  with pytest.raises(DataError, match="data row 1: unit 'g/MWh'"):
    ct.load_trace(_write(tmp_path, "co2unit.csv", unit))
  zones = [_CO2_HEADER, _co2_row(1, "2021-10-08T05:00:00Z", "300"),
           _co2_row(2, "2021-10-08T06:00:00Z", "300", zone="DE")]
  with pytest.raises(DataError, match="several zones"):
    ct.load_trace(_write(tmp_path, "co2z.csv", zones))


def test_argument_errors(tmp_path):
  path = _plain(tmp_path, list(zip(_hours(3), ["1", "2", "3"])))
  with pytest.raises(ValueError, match="max_gap_hours"):
    ct.load_trace(path, max_gap_hours=-1)
  with pytest.raises(ValueError, match="fmt must be"):
    ct.load_trace(path, fmt="excel")  # type: ignore[arg-type]
  with pytest.raises(ValueError, match="one value column"):
    ct.load_trace(path, column="ci")
  with pytest.raises(ValueError, match="must be after"):
    ct.load_trace(path, start="2021-01-01T02:00Z", end="2021-01-01T01:00Z")
  with pytest.raises(DataError, match=r"not inside the file's data, which covers "
                                      r"\[2021-01-01T00:00Z, 2021-01-01T03:00Z\)"):
    ct.load_trace(path, end="2021-01-01T04:00Z")
  with pytest.raises(DataUnavailableError, match="missing.csv"):
    ct.load_trace(tmp_path / "missing.csv")
  sub = ct.load_trace(path, start="2021-01-01T01:00Z", end="2021-01-01T02:00Z")
  np.testing.assert_array_equal(sub.values, [2.0])


def test_carbon_trace_validates_its_fields():
  idx = pd.date_range("2021-01-01", periods=3, freq="h", tz="UTC")
  ok = ct.CarbonTrace(pd.Series([1.0, 2.0, 3.0], index=idx), "x:y:z", "p", "0" * 64, "v")
  assert len(ok) == 3 and ok.end == _utc("2021-01-01 03:00")
  with pytest.raises(ValueError, match="finite"):
    ct.CarbonTrace(pd.Series([1.0, np.nan, 3.0], index=idx), "x", "p", "0", "v")
  with pytest.raises(ValueError, match="UTC"):
    ct.CarbonTrace(pd.Series([1.0, 2.0, 3.0], index=idx.tz_localize(None)), "x", "p", "0", "v")
  with pytest.raises(ValueError, match="hourly"):
    ct.CarbonTrace(pd.Series([1.0, 2.0], index=idx[[0, 2]]), "x", "p", "0", "v")
