"""The H200 whole-network measurements (workspace/gpu_h200/networks.jsonl, 5 NB201 cells at batch 1
and 256) as per-batch targets: the CSV the GPU stage writes, and one model over both batches scored
leave-one-cell-out."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from cenas_jax.energy import validate as exp
from cenas_jax.energy.validate import ValidateConfig
from cenas_jax.errors import ConfigError

NETWORKS = Path(__file__).resolve().parents[2] / "workspace" / "gpu_h200" / "networks.jsonl"


def test_h200_networks_one_model_over_batch_1_and_256(tmp_path, shared_data):
  del shared_data
  from benchmarks.gpu_networks import nb201_targets_csv

  path = tmp_path / "nb201_targets.csv"
  assert nb201_targets_csv(NETWORKS, path) == 5
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["arch_str", "time_b1_ms", "time_b256_ms", "energy_b1_j",
                           "energy_b256_j"]
  first = json.loads(NETWORKS.read_text().splitlines()[0])
  assert float(rows[0]["time_b1_ms"]) == pytest.approx(first["time_per_call_s"] * 1e3)
  # Five cells: every cell is predicted by the model fitted on the other four (CV in 4 folds of
  # one cell); the class (roofline) model alone, as a table has too few cells to learn from.
  config = ValidateConfig(targets_csv=str(path), target_column="time_b1_ms@1,time_b256_ms@256",
                          device_spec="h200-sxm", split="leave_one_cell_out", cv_folds=4,
                          table_levels_grid=("none",), edge_kernels="none", workers=1)
  with pytest.raises(ConfigError) as e:  # a 70/30 split of 5 cells leaves 4 for 5 CV folds
    exp.run(dataclasses.replace(config, split="random", cv_folds=5), tmp_path / "w")
  assert e.value.field == "cv_folds"
  metrics = exp.run(config, tmp_path / "w")
  assert set(metrics) == {"time", "time@1", "time@256"}
  for name in metrics:
    kernel, flops = metrics[name]["kernel_model"], metrics[name]["flops_linear"]
    assert kernel["rmspe"] < 0.5 * flops["rmspe"], (name, kernel, flops)
  assert metrics["time"]["kernel_model"]["rmspe"] == pytest.approx(0.312, abs=0.01)
  summary = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert summary["split"]["time"]["n_rows"] == 10 and len(summary["models"]["time"]["folds"]) == 5
