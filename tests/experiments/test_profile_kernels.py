"""experiments.profile_kernels as a process: flag names, and no GPU is one error line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from absl import flags

from cenas_jax.energy.kernel_bench import ProfileConfig
from experiments import cli

REPO_ROOT = Path(__file__).resolve().parents[2]

_STUB_PYNVML = '''
NVML_ERROR_LIBRARY_NOT_FOUND = 12
class NVMLError(Exception):
  def __init__(self, value):
    super().__init__(value)
    self.value = value
  def __str__(self):
    return "NVML Shared Library Not Found"
def nvmlInit():
  raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
'''


def test_flag_names_are_kept():
  fv = flags.FlagValues()
  cli.define_flags(ProfileConfig, flag_values=fv)
  assert {"workdir", "preset", "min_window_s", "repeats", "idle_s", "cooldown_s", "device",
          "method", "max_configs", "seed", "fake_meter", "allow_fake", "fake_power_w"} <= set(fv)


def test_without_gpu_one_error_line_and_no_dataset(tmp_path):
  stub = tmp_path / "stub"
  stub.mkdir()
  (stub / "pynvml.py").write_text(_STUB_PYNVML)  # a machine with nvidia-ml-py but no driver
  workdir = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-m", "experiments.profile_kernels",
                         f"--workdir={workdir}"], cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: No GPU energy meter"), proc.stderr
  assert "nvmlInit()" in lines[0] and "Traceback" not in proc.stderr
  assert not (workdir / "kernels.csv").exists()
