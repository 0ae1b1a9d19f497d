"""End-to-end test of ``python -m experiments.train_forecaster`` on a few hundred hours of real trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_TINY = [
    "--history_hours=168", "--patch_hours=24", "--d_model=16", "--num_layers=1", "--num_heads=2",
    "--mlp_dim=16", "--batch_size=32", "--max_epochs=1", "--patience=5", "--val_fraction=0.25",
    "--train_stride_hours=3",
]


def _run(args: list[str], shared_data: Path) -> subprocess.CompletedProcess:
  env = {**os.environ, "CENAS_SHARED_DATA": str(shared_data), "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "experiments.train_forecaster", *args], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_workdir(shared_data, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("forecaster")
  proc = _run(["--region=US-CAL-CISO", f"--workdir={workdir}", "--train_start=2022-05-01T00:00Z",
               "--train_end=2022-06-20T00:00Z", "--test_start=2022-06-20T00:00Z",
               "--test_end=2022-07-04T00:00Z", *_TINY], shared_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_metrics_schema_and_outputs(trained_workdir):
  m = json.loads((trained_workdir / "metrics.json").read_text())
  assert m["region"] == "US-CAL-CISO"
  assert m["train_period"].startswith("2022-05-01") and m["test_period"].startswith("2022-06-20")
  assert "lifecycle" in m["target"]
  assert set(m["models"]) == {"transformer", "seasonal_naive_24h", "seasonal_naive_168h", "linear_ar"}
  for name, model in m["models"].items():
    assert len(model["mape_by_day"]) == 4, name
    assert all(0.0 < v < 1.0 for v in model["mape_by_day"]), (name, model)
  tr = m["models"]["transformer"]
  assert 0.0 <= tr["coverage_p10_p90"] <= 1.0 and tr["ape_p90"] > 0
  # 14 test days, origins every 24 h, each needing 96 h ahead inside the test period: 11 origins.
  assert m["num_test_origins"] == 11
  # The normalization was fitted on the training period only (before its validation slice).
  norm = m["forecaster"]["normalization"]
  assert norm["fitted_end"] < m["forecaster"]["val_start"] < "2022-06-20"
  for f in ("forecast_test_week.png", "forecast_test_week.csv", "train_log.jsonl",
            "forecaster/forecaster.json"):
    assert (trained_workdir / f).exists(), f
  log = [json.loads(line) for line in (trained_workdir / "train_log.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in log] == [0, 1]


def test_restore_and_evaluate_on_another_trace(trained_workdir, shared_data, tmp_path):
  """A trained forecaster evaluated on the benchmark trace of another region, without retraining."""
  bench = shared_data / "carbon_intensity" / "carbonx" / "benchmark-data" / "DE.csv"
  proc = _run(["--region=DE", f"--workdir={tmp_path}", f"--restore_from={trained_workdir / 'forecaster'}",
               f"--train_trace={bench}", f"--test_trace={bench}", "--train_start=2020-01-01T00:00Z",
               "--train_end=2020-02-20T00:00Z", "--test_start=2020-03-01T00:00Z",
               "--test_end=2020-03-15T00:00Z", *_TINY], shared_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  m = json.loads((tmp_path / "metrics.json").read_text())
  assert m["forecaster"]["restored_from"] == str((trained_workdir / "forecaster").resolve())
  assert not (tmp_path / "train_log.jsonl").exists()
  assert m["provenance"]["test_trace"]["source"].startswith("carbonx-benchmark:DE")
  assert m["num_test_origins"] == 11
  assert all(v > 0 for v in m["models"]["transformer"]["mape_by_day"])


def test_bad_trace_flag_names_the_file(shared_data, tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("time,value\n2021-01-01T00:00Z,abc\n")
  proc = _run(["--region=US-CAL-CISO", f"--workdir={tmp_path / 'w'}", f"--train_trace={bad}",
               "--train_start=2021-01-01T00:00Z", "--train_end=2021-01-01T01:00Z", *_TINY], shared_data)
  assert proc.returncode != 0
  assert "bad.csv" in proc.stderr and "row 1" in proc.stderr
  assert not (tmp_path / "w" / "metrics.json").exists()


def test_use_generation_end_to_end(shared_data, tmp_path):
  """--use_generation on a few hundred hours of the CarbonX benchmark file (generation by source)."""
  bench = shared_data / "carbon_intensity" / "carbonx" / "benchmark-data" / "US-CAL-CISO.csv"
  proc = _run(["--region=US-CAL-CISO", f"--workdir={tmp_path}", f"--train_trace={bench}",
               f"--test_trace={bench}", "--use_generation", "--train_start=2020-03-01T00:00Z",
               "--train_end=2020-04-20T00:00Z", "--test_start=2020-04-20T00:00Z",
               "--test_end=2020-05-04T00:00Z", *_TINY], shared_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  m = json.loads((tmp_path / "metrics.json").read_text())
  cfg = m["forecaster"]["config"]
  names = m["forecaster"]["normalization"]["extra_names"]
  assert cfg["num_extra_features"] == len(names) >= 5 and "solar" in names
  assert m["provenance"]["train_trace"]["source"].startswith("carbonx-benchmark")
  tr = m["models"]["transformer"]
  assert tr["quantiles_calibrated"] and tr["p10_le_p50_le_p90"]
  assert m["num_test_origins"] == 11
  assert all(0 < v < 1 for name in m["models"] for v in m["models"][name]["mape_by_day"])


def test_train_regions_with_generation_is_refused(shared_data, tmp_path):
  bench = shared_data / "carbon_intensity" / "carbonx" / "benchmark-data" / "US-CAL-CISO.csv"
  proc = _run(["--region=US-CAL-CISO", f"--workdir={tmp_path / 'w'}", f"--train_trace={bench}",
               "--use_generation", "--train_regions=DE", "--train_start=2020-03-01T00:00Z",
               "--train_end=2020-04-20T00:00Z", *_TINY], shared_data)
  assert proc.returncode != 0
  assert "--train_regions" in proc.stderr and "--use_generation" in proc.stderr
  assert not (tmp_path / "w" / "metrics.json").exists()


def test_refit_every_hours_records_both_modes(trained_workdir, shared_data, tmp_path):
  """--refit_every_hours: refitted models in ``models``, frozen ones in ``models_without_refit``."""
  proc = _run(["--region=US-CAL-CISO", f"--workdir={tmp_path}", f"--restore_from={trained_workdir / 'forecaster'}",
               "--train_start=2022-05-01T00:00Z", "--train_end=2022-06-20T00:00Z",
               "--test_start=2022-06-20T00:00Z", "--test_end=2022-07-04T00:00Z", "--refit_every_hours=72",
               *_TINY], shared_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  m = json.loads((tmp_path / "metrics.json").read_text())
  refit = m["refit"]
  assert refit["mode"] == "rolling" and refit["every_hours"] == 72 and refit["network"] == "frozen"
  assert refit["parts"] == ["linear_skip", "quantile_calibration"]
  # 11 daily origins from 2022-06-20, a refit every 3 days: 4 refits, the first at the first origin.
  assert refit["num_refits"] == 4 and refit["refits"][0]["cutoff"].startswith("2022-06-20T00:00")
  assert all(a["num_windows"] < b["num_windows"] for a, b in zip(refit["refits"], refit["refits"][1:]))
  assert set(m["models_without_refit"]) == {"transformer", "linear_ar"}
  assert set(m["models"]) == {"transformer", "seasonal_naive_24h", "seasonal_naive_168h", "linear_ar"}
  assert m["models"]["transformer"]["p10_le_p50_le_p90"]
  assert m["models"]["transformer"]["mape_by_day"] != m["models_without_refit"]["transformer"]["mape_by_day"]
  assert all(0 < v < 1 for v in m["models"]["linear_ar"]["mape_by_day"])


def test_refit_needs_a_test_trace_that_continues_the_training_trace(trained_workdir, shared_data, tmp_path):
  proc = _run(["--region=US-CAL-CISO", f"--workdir={tmp_path / 'w'}",
               f"--restore_from={trained_workdir / 'forecaster'}", "--train_start=2022-05-01T00:00Z",
               "--train_end=2022-06-10T00:00Z", "--test_start=2022-06-20T00:00Z",
               "--test_end=2022-07-04T00:00Z", "--refit_every_hours=72", *_TINY], shared_data)
  assert proc.returncode != 0
  assert "--refit_every_hours" in proc.stderr and "gap" in proc.stderr
  assert not (tmp_path / "w" / "metrics.json").exists()
