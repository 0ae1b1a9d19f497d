"""End-to-end runs of the NB201 validation (energy.validate) on a few cells (real HW-NAS-Bench table)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cenas_jax.energy import validate as exp
from cenas_jax.energy.validate import ValidateConfig
from cenas_jax.errors import ConfigError, DataError

METRIC_KEYS = {"rmspe", "acc10", "spearman", "kendall"}


def test_default_targets_write_metrics_predictions_plot_and_reuse_cache(tmp_path, shared_data,
                                                                         capsys):
  del shared_data  # the run reads the table from the shared data folder
  wd = tmp_path / "w"
  metrics = exp.run(ValidateConfig(limit=40, workers=1), wd)
  on_disk = json.loads((wd / "metrics.json").read_text())
  assert set(on_disk) == {"edgegpu_energy", "edgegpu_latency"}
  for target in on_disk.values():
    assert set(target) == set(exp.MODELS)
    for m in target.values():
      assert set(m) == METRIC_KEYS
      assert 0 <= m["acc10"] <= 1 and m["rmspe"] >= 0 and -1 <= m["spearman"] <= 1
  assert on_disk["edgegpu_energy"]["kernel_model"]["rmspe"] == pytest.approx(
      metrics["edgegpu_energy"]["kernel_model"]["rmspe"])
  with open(wd / "predictions.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 80
  assert {r["split"] for r in rows} == {"train", "test"}
  assert sum(r["split"] == "test" for r in rows if r["target"] == "edgegpu_energy") == 12
  energy = [r for r in rows if r["target"] == "edgegpu_energy"]
  assert all(float(r["pred_kernel_model"]) > 0 and float(r["measured"]) > 0 for r in energy)
  assert (wd / "scatter_edgegpu_energy.png").stat().st_size > 1000
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["provenance"]["seed"] == 0
  assert summary["timings"]["extracted_cells"] == 40
  # The ablation (same split), the edge kernels and table chosen by CV on the training cells, and
  # the model selection among the kernel model, the proxies and their blend.
  for name in on_disk:
    assert set(summary["ablation"][name]) == set(exp.ABLATION)
    info = summary["models"][name]
    edge_cv = info["edge_kernels_cv_rmspe"]
    assert set(edge_cv) == set(exp.EDGE_CHOICES) and info["edge_kernels_flag"] == "auto"
    assert info["edge_kernels"] == min(edge_cv, key=edge_cv.get)
    row = ("roofline_and_table" if info["edge_kernels"] == "none" else
           f"roofline_table_and_{info['edge_kernels']}_edges")
    assert summary["ablation"][name][row] == pytest.approx(on_disk[name]["kernel_model"])
    assert summary["noise_floor"][name]["n_cells"] >= 0
    assert info["table"] in info["table_cv_rmspe"]
    assert min(info["table_cv_rmspe"].values()) == info["table_cv_rmspe"][info["table"]]
    assert set(info["cv_rmspe"]) == {"kernel_model", "flops_linear", "params_linear",
                                     "traffic_linear", "blend"}
    assert info["cv_rmspe"]["kernel_model"] == min(info["table_cv_rmspe"].values())
    assert info["selected"] == min(info["cv_rmspe"], key=info["cv_rmspe"].get)
    assert on_disk[name]["selected"] == on_disk[name][info["selected"]]
    assert set(summary["targets_met"][name]) >= {"selected_rmspe_le_best_proxy",
                                                 "selected_spearman_ge_best_proxy"}
  # The saved model (with its table) predicts a cell from its kernels as in predictions.csv.
  from cenas_jax.data.nasbench import load_nb201_table
  from cenas_jax.energy import model as em
  from cenas_jax.energy import nb201_kernels as nk

  model = em.load_energy_model(wd / "kernel_model_edgegpu_energy.json")
  edge = summary["models"]["edgegpu_energy"]["edge_kernels"]
  row = energy[0]
  ops = tuple(load_nb201_table().ops[int(row["arch_index"])])
  kernels = nk.network_kernels(ops) if edge == "none" else nk.runtime_kernels(ops, keys=edge)
  assert em.predict_energy_j(model, kernels) * 1e3 == pytest.approx(
      float(row["pred_kernel_model"]), rel=1e-6)
  out = capsys.readouterr().out
  assert "kernel_model" in out and "flops_linear" in out
  # Rerun: every feature row comes from features.npz, and the numbers are the same.
  again = exp.run(ValidateConfig(limit=40, workers=1), wd)
  assert json.loads((wd / "summary.json").read_text())["timings"]["extracted_cells"] == 0
  assert again == metrics
  # Without edge kernels the kernel model is roofline + table on XLA's kernels alone.
  plain = exp.run(ValidateConfig(limit=40, workers=1, edge_kernels="none"), wd)
  summary = json.loads((wd / "summary.json").read_text())
  assert set(summary["ablation"]["edgegpu_energy"]) == {"roofline_only", "table_only",
                                                        "roofline_and_table"}
  assert summary["ablation"]["edgegpu_energy"]["roofline_and_table"] == pytest.approx(
      plain["edgegpu_energy"]["kernel_model"])


def test_targets_csv_by_arch_str_with_missing_values(tmp_path, shared_data):
  del shared_data
  from cenas_jax.data.nasbench import load_nb201_table
  from cenas_jax.energy import nb201_kernels as nk

  table = load_nb201_table()
  rng = np.random.default_rng(1)
  idx = rng.choice(np.flatnonzero(table.has_hw), 24, replace=False)
  path = tmp_path / "other_device.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arch_str", "my_latency_ms"])
    for k, i in enumerate(idx):
      # A synthetic device whose latency is exactly linear in MACs.
      value = "" if k == 0 else f"{1.0 + nk.macs(tuple(table.ops[i])) / 1e8:.6f}"
      w.writerow([table.arch_str[i], value])
  metrics = exp.run(ValidateConfig(targets_csv=str(path), target_column="my_latency_ms", workers=1),
                    tmp_path / "w")
  assert set(metrics) == {"my_latency_ms"}
  assert metrics["my_latency_ms"]["flops_linear"]["rmspe"] < 1e-6  # the exact model is found
  summary = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert summary["split"]["my_latency_ms"]["n_cells"] == 23
  assert summary["models"]["my_latency_ms"]["kind"] == "latency"
  assert str(path) in summary["provenance"]["data_hashes"]


def test_bad_targets_csv_names_the_file_and_line(tmp_path, shared_data):
  del shared_data
  path = tmp_path / "bad.csv"
  path.write_text("arch_index,energy_mj\n1,2.0\n2,-3\n")
  with pytest.raises(DataError, match=r"bad.csv line 3"):
    exp.run(ValidateConfig(targets_csv=str(path), target_column="energy_mj", workers=1),
            tmp_path / "w")
  with pytest.raises(ConfigError, match="no column .nope."):
    exp.run(ValidateConfig(targets_csv=str(path), target_column="nope", workers=1), tmp_path / "w")
  with pytest.raises(ConfigError, match="--target_unit") as e:
    exp.run(ValidateConfig(targets_csv=str(path), target_column="arch_index", workers=1),
            tmp_path / "w")
  assert e.value.field == "target_unit"


def test_config_refuses_bad_settings_naming_the_field():
  for kw, field in (({"train_fraction": 1.0}, "train_fraction"), ({"ridge": -1.0}, "ridge"),
                    ({"targets_csv": "x.csv"}, "target_column"),
                    ({"target_column": "y"}, "targets_csv"),
                    ({"table_levels_grid": ("class+nope",)}, "table_levels_grid"),
                    ({"table_ridge_grid": (0.0,)}, "table_ridge_grid"),
                    ({"device_spec": "tpu"}, "device_spec")):
    with pytest.raises(ConfigError) as e:
      ValidateConfig(**kw)
    assert e.value.field == field
  assert ValidateConfig(table_levels_grid=("none", "op"), table_ridge_grid=(1e-3,)
                        ).table_candidates == [((), 0.0), (("op",), 1e-3)]


def test_duplicate_noise_floor_from_repeated_live_cells():
  # Two cells share a live cell (node 2 feeds nothing in both); the third is alone.
  ops = np.array([[3, 2, 4, 0, 1, 0], [3, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]])
  floor = exp.duplicate_noise_floor(ops, np.array([1.0, 1.2, 5.0]))
  assert floor["n_groups"] == 1 and floor["n_cells"] == 2
  d = 0.1 * np.sqrt(2.0)  # deviation from the mean 1.1, corrected for the group size
  rel = np.array([-d / (1.1 - d), d / (1.1 + d)])
  assert floor["rmspe"] == pytest.approx(np.sqrt(np.mean(rel**2)))
  assert floor["acc10"] == pytest.approx(np.mean(np.abs(rel) <= 0.1))
  assert np.isnan(exp.duplicate_noise_floor(ops[2:], np.array([5.0]))["rmspe"])
