"""Tests of energy.kernel_bench: the kernel specs, the dataset file and the run (fake meter, no GPU)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import jax
import pandas as pd
import pytest

from cenas_jax.energy import kernel_bench
from cenas_jax.energy.kernel_bench import KERNEL_COLUMNS, KernelSpec, ProfileConfig, ProfileError
from cenas_jax.energy.meter import EnergyMeterUnavailable, FakeEnergyMeter
from cenas_jax.errors import ConfigError
from cenas_jax.fileio import sha256_file

FAKE = ProfileConfig(preset="tiny", min_window_s=0.02, repeats=2, idle_s=0.01, cooldown_s=0.0,
                     fake_meter=True, allow_fake=True, fake_power_w=250.0)


def _read(path: Path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> tuple[Path, dict]:
  workdir = tmp_path_factory.mktemp("profile") / "w"
  return workdir, kernel_bench.run(FAKE, workdir)


def test_fake_run_writes_labelled_dataset(fake_run):
  workdir, summary = fake_run
  table = pd.read_csv(workdir / "kernels.csv")
  assert tuple(table.columns) == KERNEL_COLUMNS
  assert list(table["config_id"]) == [s.config_id for s in kernel_bench.tiny_kernel_specs()]
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
  kernel_bench.run(ProfileConfig(**{**FAKE.__dict__, "max_configs": 2}), workdir)
  first = _read(workdir / "kernels.csv")
  assert len(first) == 2
  summary = kernel_bench.run(FAKE, workdir)
  rows = _read(workdir / "kernels.csv")
  assert len(rows) == 3 and summary["n_measured_this_run"] == 1
  assert rows[:2] == first  # measured rows are kept as they were


def test_config_refuses_bad_settings_naming_the_field():
  with pytest.raises(ConfigError, match="--allow_fake") as e:
    ProfileConfig(**{**FAKE.__dict__, "allow_fake": False})
  assert e.value.field == "allow_fake"
  for kw in ({"repeats": 0}, {"min_window_s": 0.0}, {"cooldown_s": -1.0}, {"preset": "huge"}):
    with pytest.raises(ConfigError) as e:
      ProfileConfig(**{**FAKE.__dict__, **kw})
    assert e.value.field == next(iter(kw))


class _PretendMeasured(FakeEnergyMeter):
  energy_source = "measured-nvml"


def test_fake_and_measured_rows_are_never_mixed(fake_run, tmp_path):
  workdir, _ = fake_run
  before = (workdir / "kernels.csv").read_bytes()
  config = ProfileConfig(**{**FAKE.__dict__, "fake_meter": False, "allow_fake": False})
  with pytest.raises(ProfileError, match="never mixed"):
    kernel_bench.run(config, workdir, meter=_PretendMeasured(device_name="Fake GPU (simulated)"))
  with pytest.raises(ProfileError, match="new --workdir per device"):
    kernel_bench.run(FAKE, workdir, meter=FakeEnergyMeter(device_name="Other GPU"))
  assert (workdir / "kernels.csv").read_bytes() == before


def test_truncated_dataset_is_refused(fake_run, tmp_path):
  workdir, _ = fake_run
  bad = tmp_path / "w"
  bad.mkdir()
  text = (workdir / "kernels.csv").read_text()
  (bad / "kernels.csv").write_text(text[: len(text) - 40].rsplit(",", 5)[0] + "\n")
  with pytest.raises(ProfileError, match="wrong number of fields"):
    kernel_bench.run(FAKE, bad)
  (bad / "kernels.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ProfileError, match="header"):
    kernel_bench.run(FAKE, bad)


def test_no_gpu_raises_in_process(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "pynvml", None)
  config = ProfileConfig(**{**FAKE.__dict__, "fake_meter": False, "allow_fake": False})
  with pytest.raises(EnergyMeterUnavailable, match="nvidia-ml-py"):
    kernel_bench.run(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_kernel_specs_and_costs():
  specs = kernel_bench.default_kernel_specs()
  ids = [s.config_id for s in specs]
  assert len(ids) == len(set(ids)) >= 80
  assert {s.op_class for s in specs} == set(kernel_bench.OP_CLASSES)
  assert {s.dtype for s in specs if s.op_class == "gemm"} == {"float32", "bfloat16", "float16"}
  g = kernel_bench.build_kernel(KernelSpec.make("gemm", "bfloat16", m=4, k=3, n=2))
  assert (g.flops, g.bytes) == (2 * 4 * 3 * 2, (12 + 6 + 8) * 2)
  c = kernel_bench.build_kernel(KernelSpec.make("conv", "float32", b=2, hw=5, cin=3, cout=4, k=3))
  assert c.flops == 2 * 2 * 5 * 5 * 4 * 9 * 3
  a = kernel_bench.build_kernel(KernelSpec.make("attention", "float32", b=1, h=2, s=8, d=4))
  assert a.transcendentals == 2 * 8 * 8
  # Every configuration of the standard grid traces with its declared argument shapes.
  for spec in specs[::7]:
    program = kernel_bench.build_kernel(spec)
    out = jax.eval_shape(program.fn, *program.arg_shapes)
    assert out.dtype == jax.numpy.dtype(spec.dtype), spec.config_id
  with pytest.raises(ValueError, match="Unknown op_class"):
    KernelSpec.make("fft", "float32", n=4)


def test_short_preset_covers_every_class_and_dtype_of_the_grid():
  short, default = kernel_bench.short_kernel_specs(), kernel_bench.default_kernel_specs()
  assert set(short) < set(default) and len(short) == (len(default) + 1) // 2
  assert {(s.op_class, s.dtype) for s in short} == {(s.op_class, s.dtype) for s in default}


def test_measure_calls_divides_windows_by_calls():
  t = [0.0]

  def clock():
    return t[0]

  meter = FakeEnergyMeter(200.0, idle_power_w=50.0, counter_period_s=1e-4, clock=clock,
                          sleep=lambda s: None)

  out = jax.numpy.zeros(())

  def call():  # each call advances the fake clock by 1 ms
    t[0] += 1e-3
    return out

  m = kernel_bench.measure_calls(meter, call, name="x", min_window_s=0.01, repeats=3)
  assert m["n_calls"] >= 1 and m["repeats"] == 3
  assert m["time_per_call_s"] == pytest.approx(1e-3)
  assert m["energy_per_call_j"] == pytest.approx(200.0 * 1e-3, rel=0.01)
  assert m["power_w"] == pytest.approx(200.0, rel=0.01)


def test_measure_calls_remeasures_windows_that_a_slow_calibration_left_short(caplog):
  t, calls = [0.0], [0]
  meter = FakeEnergyMeter(200.0, idle_power_w=50.0, counter_period_s=1e-4, clock=lambda: t[0],
                          sleep=lambda s: None)
  out = jax.numpy.zeros(())

  def call():  # 1 ms on the meter's clock; the first calibration call also stalls the host 5 ms
    calls[0] += 1
    if calls[0] == 3:
      time.sleep(5e-3)
    t[0] += 1e-3
    return out

  m = kernel_bench.measure_calls(meter, call, name="x", min_window_s=0.01, repeats=2)
  # Calibration saw 5 ms per call, so 2 calls (2 ms) per window; the short first window is measured
  # again with 2 * 10 ms / 2 ms = 10 calls, which the second window keeps.
  assert m["n_calls"] == 10 and m["window_s"] == pytest.approx(0.01)
  assert m["time_per_call_s"] == pytest.approx(1e-3)
  assert m["power_w"] == pytest.approx(200.0, rel=0.01)
  assert "x#0: window lasted 0.0020 s" in caplog.text and "measuring it again" in caplog.text
