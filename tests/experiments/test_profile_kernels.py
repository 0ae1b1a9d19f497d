"""Tests of experiments.profile_kernels (fake meter, no-GPU path) and experiments.fit_energy_model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pandas as pd
import pytest

from cenas_jax import energy
from cenas_jax.energy.meter import EnergyMeterUnavailable, FakeEnergyMeter
from cenas_jax.errors import DataError
from cenas_jax.fileio import sha256_file
from experiments import fit_energy_model, profile_kernels
from experiments.profile_kernels import KERNEL_COLUMNS, KernelSpec, ProfileConfig, ProfileError

REPO_ROOT = Path(__file__).resolve().parents[2]

FAKE = ProfileConfig(preset="tiny", min_window_s=0.02, repeats=2, idle_s=0.01, cooldown_s=0.0,
                     fake_meter=True, allow_fake=True, fake_power_w=250.0)


def _read(path: Path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> tuple[Path, dict]:
  workdir = tmp_path_factory.mktemp("profile") / "w"
  return workdir, profile_kernels.run(FAKE, workdir)


def test_fake_run_writes_labelled_dataset(fake_run):
  workdir, summary = fake_run
  table = pd.read_csv(workdir / "kernels.csv")
  assert tuple(table.columns) == KERNEL_COLUMNS
  assert list(table["config_id"]) == [s.config_id for s in profile_kernels.tiny_kernel_specs()]
  assert set(table["energy_source"]) == {"fake"}
  assert set(table["op_class"]) == {"gemm", "elementwise", "conv"}
  gemm = table.set_index("op_class").loc["gemm"]
  assert gemm["flops"] == 2 * 8 * 8 * 8 and gemm["bytes"] == 3 * 64 * 4
  assert json.loads(gemm["params_json"]) == {"k": 8, "m": 8, "n": 8}
  assert (table["n_calls"] >= 1).all() and (table["repeats"] == 2).all()
  assert (table["time_per_call_s"] > 0).all()
  # The fake board draws 250 W (its counter ticks every 0.1 ms, so short windows read a little off).
  assert table["power_w"].between(150.0, 300.0).all()
  ratio = table["energy_per_call_j"] / table["time_per_call_s"]
  assert ratio.between(150.0, 300.0).all()
  expected_dyn = table["energy_per_call_j"] - 60.0 * table["time_per_call_s"]
  assert (table["dyn_energy_per_call_j"] - expected_dyn).abs().max() < 1e-12
  assert (table["device_name"] == "Fake GPU (simulated)").all()
  assert (table["jax_backend"] == jax.default_backend()).all()
  assert summary["energy_source"] == "fake"
  assert summary["n_configs"] == 3 and summary["idle_power_w_before"] == 60.0
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["dataset_sha256"] == sha256_file(workdir / "kernels.csv")
  assert on_disk["provenance"]["energy_source"] == "fake"


def test_resume_skips_measured_configs(tmp_path):
  workdir = tmp_path / "w"
  profile_kernels.run(ProfileConfig(**{**FAKE.__dict__, "max_configs": 2}), workdir)
  first = _read(workdir / "kernels.csv")
  assert len(first) == 2
  summary = profile_kernels.run(FAKE, workdir)
  rows = _read(workdir / "kernels.csv")
  assert len(rows) == 3 and summary["n_measured_this_run"] == 1
  assert rows[:2] == first  # measured rows are kept as they were


def test_fake_meter_needs_allow_fake(tmp_path):
  config = ProfileConfig(**{**FAKE.__dict__, "allow_fake": False})
  with pytest.raises(ProfileError, match="--allow_fake"):
    profile_kernels.run(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


class _PretendMeasured(FakeEnergyMeter):
  energy_source = "measured-nvml"


def test_fake_and_measured_rows_are_never_mixed(fake_run, tmp_path):
  workdir, _ = fake_run
  before = (workdir / "kernels.csv").read_bytes()
  config = ProfileConfig(**{**FAKE.__dict__, "fake_meter": False, "allow_fake": False})
  with pytest.raises(ProfileError, match="never mixed"):
    profile_kernels.run(config, workdir, meter=_PretendMeasured(device_name="Fake GPU (simulated)"))
  with pytest.raises(ProfileError, match="new --workdir per device"):
    profile_kernels.run(FAKE, workdir, meter=FakeEnergyMeter(device_name="Other GPU"))
  assert (workdir / "kernels.csv").read_bytes() == before


def test_truncated_dataset_is_refused(fake_run, tmp_path):
  workdir, _ = fake_run
  bad = tmp_path / "w"
  bad.mkdir()
  text = (workdir / "kernels.csv").read_text()
  (bad / "kernels.csv").write_text(text[: len(text) - 40].rsplit(",", 5)[0] + "\n")
  with pytest.raises(ProfileError, match="wrong number of fields"):
    profile_kernels.run(FAKE, bad)
  (bad / "kernels.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ProfileError, match="header"):
    profile_kernels.run(FAKE, bad)


def test_no_gpu_raises_in_process(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "pynvml", None)
  config = ProfileConfig(**{**FAKE.__dict__, "fake_meter": False, "allow_fake": False})
  with pytest.raises(EnergyMeterUnavailable, match="nvidia-ml-py"):
    profile_kernels.run(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


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


def _cli(module: str, *args: str, stub_dir: Path | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if stub_dir is not None:
    env["PYTHONPATH"] = os.pathsep.join([str(stub_dir), env.get("PYTHONPATH", "")])
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_without_gpu_exits_nonzero(tmp_path):
  stub = tmp_path / "stub"
  stub.mkdir()
  (stub / "pynvml.py").write_text(_STUB_PYNVML)  # a machine with nvidia-ml-py but no driver
  workdir = tmp_path / "w"
  proc = _cli("experiments.profile_kernels", f"--workdir={workdir}", stub_dir=stub)
  assert proc.returncode == 1, proc.stderr
  assert "No GPU energy meter" in proc.stderr and "nvmlInit()" in proc.stderr
  assert not (workdir / "kernels.csv").exists()


def test_cli_fake_meter_without_allow_fake_exits_nonzero(tmp_path):
  proc = _cli("experiments.profile_kernels", f"--workdir={tmp_path / 'w'}", "--fake_meter",
              "--preset=tiny")
  assert proc.returncode == 1
  assert "--allow_fake" in proc.stderr and "SIMULATED" in proc.stderr


def test_kernel_specs_and_costs():
  specs = profile_kernels.default_kernel_specs()
  ids = [s.config_id for s in specs]
  assert len(ids) == len(set(ids)) >= 80
  assert {s.op_class for s in specs} == set(profile_kernels.OP_CLASSES)
  assert {s.dtype for s in specs if s.op_class == "gemm"} == {"float32", "bfloat16", "float16"}
  g = profile_kernels.build_kernel(KernelSpec.make("gemm", "bfloat16", m=4, k=3, n=2))
  assert (g.flops, g.bytes) == (2 * 4 * 3 * 2, (12 + 6 + 8) * 2)
  c = profile_kernels.build_kernel(KernelSpec.make("conv", "float32", b=2, hw=5, cin=3, cout=4, k=3))
  assert c.flops == 2 * 2 * 5 * 5 * 4 * 9 * 3
  a = profile_kernels.build_kernel(KernelSpec.make("attention", "float32", b=1, h=2, s=8, d=4))
  assert a.transcendentals == 2 * 8 * 8
  # Every configuration of the standard grid traces with its declared argument shapes.
  for spec in specs[::7]:
    program = profile_kernels.build_kernel(spec)
    out = jax.eval_shape(program.fn, *program.arg_shapes)
    assert out.dtype == jax.numpy.dtype(spec.dtype), spec.config_id
  with pytest.raises(ValueError, match="Unknown op_class"):
    KernelSpec.make("fft", "float32", n=4)


def test_fit_energy_model_on_fake_dataset(fake_run, tmp_path):
  workdir, _ = fake_run
  dataset = str(workdir / "kernels.csv")
  with pytest.raises(fit_energy_model.FitError, match="SIMULATED"):
    fit_energy_model.run(fit_energy_model.FitConfig(dataset=dataset), tmp_path / "refused")
  out = tmp_path / "fit"
  summary = fit_energy_model.run(
      fit_energy_model.FitConfig(dataset=dataset, device_spec="h100-sxm", allow_fake=True), out)
  assert summary["energy_source"] == "fake" and summary["device_spec"] == "h100-sxm"
  assert summary["n_train"] + summary["n_test"] == 3
  metrics = pd.read_csv(out / "metrics.csv")
  assert set(metrics["model"]) == {"prior", "fitted"} and set(metrics["split"]) == {"train", "test"}
  assert (metrics["rmspe_pct"] >= 0).all()
  model = energy.load_energy_model(out / "energy_model.json")
  assert model.provenance.startswith("fit:") and model.spec.name == "h100-sxm"
  preds = pd.read_csv(out / "predictions.csv")
  assert len(preds) == 3 and (preds["fitted_energy_j"] > 0).all()


def test_fit_energy_model_bad_inputs(fake_run, tmp_path):
  workdir, _ = fake_run
  with pytest.raises(fit_energy_model.FitError, match="device spec"):
    fit_energy_model.run(fit_energy_model.FitConfig(
        dataset=str(workdir / "kernels.csv"), allow_fake=True), tmp_path / "a")
  rows = _read(workdir / "kernels.csv")
  rows[1]["energy_per_call_j"] = "abc"
  bad = tmp_path / "bad.csv"
  with open(bad, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=KERNEL_COLUMNS)
    w.writeheader()
    w.writerows(rows)
  with pytest.raises(DataError, match=r"bad\.csv, line 3: column energy_per_call_j"):
    fit_energy_model.run(fit_energy_model.FitConfig(dataset=str(bad), allow_fake=True), tmp_path / "b")
  with pytest.raises(FileNotFoundError, match="missing.csv"):
    fit_energy_model.run(fit_energy_model.FitConfig(dataset=str(tmp_path / "missing.csv")), tmp_path / "c")
