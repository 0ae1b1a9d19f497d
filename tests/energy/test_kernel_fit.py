"""Tests of energy.kernel_fit on a fake-meter kernel dataset (no GPU needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from cenas_jax import energy
from cenas_jax.energy import kernel_bench, kernel_fit
from cenas_jax.energy.kernel_bench import KERNEL_COLUMNS, ProfileConfig
from cenas_jax.energy.kernel_fit import FitConfig, FitError
from cenas_jax.errors import ConfigError, DataError

FAKE = ProfileConfig(preset="tiny", min_window_s=0.02, repeats=2, idle_s=0.01, cooldown_s=0.0,
                     fake_meter=True, allow_fake=True, fake_power_w=250.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("profile") / "w"
  kernel_bench.run(FAKE, workdir)
  return workdir / "kernels.csv"


def test_fit_on_fake_dataset(dataset, tmp_path):
  with pytest.raises(FitError, match="SIMULATED"):
    kernel_fit.run(FitConfig(dataset=str(dataset)), tmp_path / "refused")
  out = tmp_path / "fit"
  summary = kernel_fit.run(FitConfig(dataset=str(dataset), device_spec="h100-sxm",
                                     allow_fake=True), out)
  assert summary["energy_source"] == "fake" and summary["device_spec"] == "h100-sxm"
  assert summary["n_train"] + summary["n_test"] == 3 and summary["n_test"] == 1
  metrics = pd.read_csv(out / "metrics.csv")
  assert set(metrics["model"]) == {"prior", "fitted"} and set(metrics["split"]) == {"train", "test"}
  assert (metrics["rmspe_pct"] >= 0).all()
  assert list(metrics.columns) == ["model", "split", "op_class", "n", "rmspe_pct", "mape_pct",
                                   "within_10pct", "spearman", "time_rmspe_pct"]
  model = energy.load_energy_model(out / "energy_model.json")
  assert model.provenance.startswith("fit:") and model.spec.name == "h100-sxm"
  preds = pd.read_csv(out / "predictions.csv")
  assert len(preds) == 3 and (preds["fitted_energy_j"] > 0).all()
  on_disk = json.loads((out / "summary.json").read_text())
  assert on_disk["provenance"]["energy_source"] == "fake"
  assert on_disk["provenance"]["data_hashes"] == {str(dataset): summary["dataset_sha256"]}


def test_fit_with_kernel_table_saves_and_reloads_it(dataset, tmp_path):
  out = tmp_path / "fit"
  summary = kernel_fit.run(FitConfig(dataset=str(dataset), device_spec="h100-sxm",
                                     allow_fake=True, table_levels="class+op",
                                     table_ridge=1e-3), out)
  assert summary["table_provenance"].startswith("fit:energy+time:")
  model = energy.load_energy_model(out / "energy_model.json")
  assert model.table is not None and model.table.levels == ("class", "op")
  assert model.table.n_entries() > 0
  on_disk = json.loads((out / "energy_model.json").read_text())
  assert on_disk["format"] == "cenas_jax.energy_model/2" and on_disk["table"]["levels"] == [
      "class", "op"]
  preds = pd.read_csv(out / "predictions.csv")
  assert (preds["fitted_energy_j"] > 0).all()
  with pytest.raises(FitError, match="ridge"):
    kernel_fit.run(FitConfig(dataset=str(dataset), device_spec="h100-sxm", allow_fake=True,
                             table_levels="op", table_ridge=0.0), tmp_path / "bad")


def test_bad_inputs(dataset, tmp_path):
  with pytest.raises(FitError, match="device spec"):
    kernel_fit.run(FitConfig(dataset=str(dataset), allow_fake=True), tmp_path / "a")
  with open(dataset, newline="") as f:
    rows = list(csv.DictReader(f))
  rows[1]["energy_per_call_j"] = "abc"
  bad = tmp_path / "bad.csv"
  with open(bad, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=KERNEL_COLUMNS)
    w.writeheader()
    w.writerows(rows)
  with pytest.raises(DataError, match=r"bad\.csv, line 3: column energy_per_call_j"):
    kernel_fit.run(FitConfig(dataset=str(bad), allow_fake=True), tmp_path / "b")
  foreign = tmp_path / "foreign.csv"
  foreign.write_text("x,y\n1,2\n")
  with pytest.raises(DataError, match="not the kernels.csv header.*point --dataset at the kernels.csv"):
    kernel_fit.run(FitConfig(dataset=str(foreign), allow_fake=True), tmp_path / "e")
  assert not (tmp_path / "e").exists()
  with pytest.raises(FileNotFoundError, match="missing.csv"):
    kernel_fit.run(FitConfig(dataset=str(tmp_path / "missing.csv")), tmp_path / "c")
  with pytest.raises(ConfigError, match="required") as e:
    kernel_fit.run(FitConfig(), tmp_path / "d")
  assert e.value.field == "dataset"


def test_config_refuses_bad_settings_naming_the_field():
  for kw, field in (({"table_levels": "class+nope"}, "table_levels"),
                    ({"test_fraction": 0.0}, "test_fraction"),
                    ({"device_spec": "tpu"}, "device_spec")):
    with pytest.raises(ConfigError) as e:
      FitConfig(**kw)
    assert e.value.field == field
  assert FitConfig(table_levels="class+op").levels == ("class", "op")
  assert FitConfig().levels == ()


def test_rows_the_meter_does_not_resolve_are_left_out_and_listed(dataset, tmp_path):
  table = pd.read_csv(dataset)
  # The first configuration drew idle power only: its dynamic energy is 2 % of its energy.
  table.loc[0, "energy_per_call_j"] = table.loc[0, "idle_power_w"] * table.loc[0, "time_per_call_s"] / 0.98
  idle_only = tmp_path / "kernels.csv"
  table.to_csv(idle_only, index=False)
  summary = kernel_fit.run(FitConfig(dataset=str(idle_only), device_spec="h100-sxm", allow_fake=True,
                                     min_dynamic_fraction=0.1), tmp_path / "fit")
  assert summary["left_out_unresolved"] == [table.loc[0, "config_id"]]
  assert summary["n_train"] + summary["n_test"] == 2
  with pytest.raises(ConfigError, match="min_dynamic_fraction"):
    kernel_fit.run(FitConfig(dataset=str(idle_only), allow_fake=True, min_dynamic_fraction=1.0),
                   tmp_path / "bad")
