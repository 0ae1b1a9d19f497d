"""End-to-end tests of the forecaster run (``evaluate.run``, what ``experiments.train_forecaster`` calls)
on a few hundred hours of real trace, in-process; one subprocess check of the binary's one-line error."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cenas_jax.carbon import evaluate
from cenas_jax.errors import ConfigError, DataError

_REPO = Path(__file__).resolve().parents[2]
TINY = evaluate.ForecastRunConfig(
    region="US-CAL-CISO", train_start="2022-05-01T00:00Z", train_end="2022-06-20T00:00Z",
    test_start="2022-06-20T00:00Z", test_end="2022-07-04T00:00Z",
    model=evaluate.ModelSettings(history_hours=168, patch_hours=24, d_model=16, num_layers=1, num_heads=2,
                                 mlp_dim=16),
    train=evaluate.TrainSettings(batch_size=32, max_epochs=1, patience=5, val_fraction=0.25,
                                 train_stride_hours=3))


def _config(**kw) -> evaluate.ForecastRunConfig:
  return dataclasses.replace(TINY, **kw)


@pytest.fixture(scope="module")
def trained_workdir(shared_data, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("forecaster")
  evaluate.run(TINY, workdir)
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
  assert [r["epoch"] for r in log] == [0, 1] and log[0]["train_loss"] is None
  week = (trained_workdir / "forecast_test_week.csv").read_text().splitlines()
  assert week[0] == "time_utc,actual_g_per_kwh,p10,p50,p90" and len(week) == 1 + 7 * 24
  assert week[1].startswith("2022-06-20 00:00:00+00:00,")


def test_rerun_of_a_finished_workdir_evaluates_without_retraining(trained_workdir):
  before = (trained_workdir / "train_log.jsonl").read_text()
  m = evaluate.run(TINY, trained_workdir)
  assert m["forecaster"]["restored_from"] == str((trained_workdir / "forecaster").resolve())
  assert (trained_workdir / "train_log.jsonl").read_text() == before


def test_restore_and_evaluate_on_another_trace(trained_workdir, shared_data, tmp_path):
  """A trained forecaster evaluated on the benchmark trace of another region, without retraining."""
  bench = str(shared_data / "carbon_intensity" / "carbonx" / "benchmark-data" / "DE.csv")
  m = evaluate.run(_config(region="DE", restore_from=str(trained_workdir / "forecaster"), train_trace=bench,
                           test_trace=bench, train_start="2020-01-01T00:00Z", train_end="2020-02-20T00:00Z",
                           test_start="2020-03-01T00:00Z", test_end="2020-03-15T00:00Z"), tmp_path)
  assert m == json.loads((tmp_path / "metrics.json").read_text())
  assert m["forecaster"]["restored_from"] == str((trained_workdir / "forecaster").resolve())
  assert not (tmp_path / "train_log.jsonl").exists()
  assert m["provenance"]["test_trace"]["source"].startswith("carbonx-benchmark:DE")
  assert m["num_test_origins"] == 11
  assert all(v > 0 for v in m["models"]["transformer"]["mape_by_day"])


def test_bad_trace_names_the_file(shared_data, tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("time,value\n2021-01-01T00:00Z,abc\n")
  with pytest.raises(DataError, match=r"bad\.csv.*row 1|row 1.*bad\.csv"):
    evaluate.run(_config(train_trace=str(bad), train_start="2021-01-01T00:00Z",
                         train_end="2021-01-01T01:00Z"), tmp_path / "w")
  assert not (tmp_path / "w" / "metrics.json").exists()


def test_use_generation_end_to_end(shared_data, tmp_path):
  """use_generation on a few hundred hours of the CarbonX benchmark file (generation by source)."""
  bench = str(shared_data / "carbon_intensity" / "carbonx" / "benchmark-data" / "US-CAL-CISO.csv")
  m = evaluate.run(_config(train_trace=bench, test_trace=bench, use_generation=True,
                           train_start="2020-03-01T00:00Z", train_end="2020-04-20T00:00Z",
                           test_start="2020-04-20T00:00Z", test_end="2020-05-04T00:00Z"), tmp_path)
  cfg = m["forecaster"]["config"]
  names = m["forecaster"]["normalization"]["extra_names"]
  assert cfg["num_extra_features"] == len(names) >= 5 and "solar" in names
  assert m["provenance"]["train_trace"]["source"].startswith("carbonx-benchmark")
  tr = m["models"]["transformer"]
  assert tr["quantiles_calibrated"] and tr["p10_le_p50_le_p90"]
  assert m["num_test_origins"] == 11
  assert all(0 < v < 1 for name in m["models"] for v in m["models"][name]["mape_by_day"])


def test_config_errors_name_the_flag():
  with pytest.raises(ConfigError, match="use_generation") as err:
    _config(use_generation=True, train_regions=("DE",))
  assert err.value.field == "train_regions"
  for field, make in (("dropout", lambda: evaluate.ModelSettings(dropout=1.5)),
                      ("num_heads", lambda: evaluate.ModelSettings(d_model=30)),
                      ("val_fraction", lambda: evaluate.TrainSettings(val_fraction=1.0)),
                      ("test_start", lambda: _config(test_start="not a time")),
                      ("train_regions", lambda: _config(train_regions=("XX",))),
                      ("refit_every_hours", lambda: _config(refit_every_hours=-1)),
                      ("test_start", lambda: _config(test_start="2030-01-01T00:00Z"))):
    with pytest.raises(ConfigError) as err:
      make()
    assert err.value.field == field, (field, err.value)


def test_a_test_window_outside_the_trace_fails_before_anything_is_written(tmp_path):
  with pytest.raises(ConfigError, match="not inside the file's data.*--test_start/--test_end") as err:
    evaluate.run(_config(test_start="2030-01-01T00:00Z", test_end="2031-01-01T00:00Z"), tmp_path / "w")
  assert err.value.field == "test_start"
  assert not (tmp_path / "w").exists()


def test_refit_every_hours_records_both_modes(trained_workdir, tmp_path):
  """refit_every_hours: refitted models in ``models``, frozen ones in ``models_without_refit``."""
  m = evaluate.run(_config(restore_from=str(trained_workdir / "forecaster"), refit_every_hours=72), tmp_path)
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


def test_refit_needs_a_test_trace_that_continues_the_training_trace(trained_workdir, tmp_path):
  with pytest.raises(ConfigError, match="gap") as err:
    evaluate.run(_config(restore_from=str(trained_workdir / "forecaster"), train_end="2022-06-10T00:00Z",
                         refit_every_hours=72), tmp_path / "w")
  assert err.value.field == "refit_every_hours"
  assert not (tmp_path / "w" / "metrics.json").exists()


def test_binary_refuses_a_bad_flag_in_one_line(shared_data, tmp_path):
  """The binary over its flagfile: a refused setting is one ``error: --flag: ...`` line, no traceback."""
  env = {**os.environ, "CENAS_SHARED_DATA": str(shared_data), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train_forecaster", "--flagfile=experiments/flags/forecaster_DE.flags",
       f"--workdir={tmp_path / 'w'}", "--use_generation"], cwd=_REPO, env=env, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --train_regions: ")
  assert "--use_generation" in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()
