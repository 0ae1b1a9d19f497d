"""experiments.energy_model_nb201 as a process: flag names, and a bad setting is one error line.

The validation itself runs in-process in tests/energy/test_validate.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from absl import flags

from cenas_jax.energy.validate import ValidateConfig
from experiments import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_flag_names_and_list_syntax_are_kept():
  fv = flags.FlagValues()
  cli.define_flags(ValidateConfig, flag_values=fv)
  assert {"workdir", "seed", "train_fraction", "device_spec", "batch_size", "targets_csv",
          "target_column", "target_unit", "ridge", "ridge_grid", "table_levels_grid",
          "table_ridge_grid", "edge_kernels", "limit", "workers"} <= set(fv)
  fv(["prog", "--workdir=/w", "--ridge_grid=1e-3,1", "--table_levels_grid=class+op,none"])
  config = cli.config_from_flags(ValidateConfig, flag_values=fv)
  assert config.ridge_grid == (1e-3, 1.0) and config.table_levels_grid == ("class+op", "none")


def test_bad_setting_is_one_error_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.energy_model_nb201",
                         f"--workdir={tmp_path / 'w'}", "--train_fraction=1.5"], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip() == "error: --train_fraction: must be in (0, 1), got 1.5"
  assert not (tmp_path / "w").exists()
