"""experiments.fit_energy_model as a process: flag names, and a bad setting is one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from absl import flags

from cenas_jax.energy.kernel_fit import FitConfig
from experiments import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_flag_names_are_kept():
  fv = flags.FlagValues()
  cli.define_flags(FitConfig, flag_values=fv)
  assert {"dataset", "workdir", "device_spec", "ridge", "test_fraction", "seed", "kernel_mode",
          "allow_fake", "table_levels", "table_ridge"} <= set(fv)
  fv(["prog", "--workdir=/w", "--table_levels=class+op"])
  assert cli.config_from_flags(FitConfig, flag_values=fv).levels == ("class", "op")


def test_bad_setting_is_one_error_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.fit_energy_model",
                         f"--workdir={tmp_path / 'w'}", "--dataset=x.csv",
                         "--table_levels=class+nope"], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
  assert proc.stderr.startswith("error: --table_levels: unknown levels ['nope']")
