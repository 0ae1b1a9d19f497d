"""Every binary's judged failures, in-process through ``cli.parse_flags`` / ``cli.run_main`` as the
binaries call them: a broken trace or dataset, a missing file, a bad flag value, a corrupt
checkpoint, an unwritable workdir and a foreign non-empty workdir each end in one ``error: ...`` line
on stderr, exit status 2, no traceback, and nothing written or changed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from absl import flags

from cenas_jax.carbon import evaluate
from cenas_jax.cluster import experiment
from cenas_jax.energy import kernel_bench, kernel_fit, validate
from cenas_jax.workdir import prepare_workdir
from experiments import cli


def _snapshot(root: Path) -> dict[str, str]:
  if not root.exists():
    return {}
  if root.is_file():
    return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
          for p in sorted(root.rglob("*"))}


def _fails(capsys, config_cls, run, argv, *, skip=(), workdir_kind=None, overrides=None) -> str:
  """Runs a binary's flag parsing and ``run_main`` in-process; returns its one error line."""
  fv = flags.FlagValues()
  cli.define_flags(config_cls, flag_values=fv, skip=skip)
  workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
  watched = Path(workdir).parent
  before = _snapshot(watched)
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(["prog", *argv], flag_values=fv)
    cli.run_main(["prog"], config_cls, run, flag_values=fv, workdir_kind=workdir_kind,
                 **(overrides or {}))
  err = capsys.readouterr().err
  assert e.value.code == 2
  assert err.startswith("error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err
  assert _snapshot(watched) == before, f"{argv} changed {watched}"
  return err


@pytest.fixture
def places(tmp_path):
  """A broken trace, a missing file, a corrupt forecaster checkpoint, a file where a directory is
  needed and another tool's non-empty directory."""
  broken = tmp_path / "inputs" / "broken.csv"
  broken.parent.mkdir()
  broken.write_text("time,value\n2021-07-02T06:00Z,12\n2021-07-02T07:00Z,abc\n")
  corrupt = tmp_path / "inputs" / "forecaster"
  (corrupt / "params").mkdir(parents=True)
  (corrupt / "forecaster.json").write_text("{truncated")
  (tmp_path / "inputs" / "a_file").write_text("x")
  foreign = tmp_path / "inputs" / "foreign"
  foreign.mkdir()
  for name in ("results.jsonl", "summary.json", "pareto.csv"):
    (foreign / name).write_text("another tool's\n")
  return {"broken": broken, "missing": tmp_path / "inputs" / "missing.csv", "corrupt": corrupt,
          "under_file": tmp_path / "inputs" / "a_file" / "w", "foreign": foreign,
          "new": tmp_path / "out" / "w"}


def _hwnas(capsys, argv):
  return _fails(capsys, experiment.ExperimentConfig, experiment.run, argv, skip=("seeds",),
                overrides={"seeds": (0,)})


def test_hwnas_search(capsys, places, shared_data):
  del shared_data
  new = f"--workdir={places['new']}"
  assert "broken.csv" in _hwnas(capsys, [new, f"--trace_path={places['broken']}"])
  assert "missing.csv" in _hwnas(capsys, [new, f"--trace_path={places['missing']}"])
  assert _hwnas(capsys, [new, "--n_gpus=-1"]) == "error: --n_gpus: must be >= 1, got -1\n"
  assert _hwnas(capsys, [new, "--pue=0.5"]).startswith("error: --pue: ")
  assert _hwnas(capsys, [new, "--region=FR"]).startswith("error: --region: 'FR' has no shared trace")
  assert _hwnas(capsys, [new, "--hv_targets=0.95,x"]).startswith(
      "error: --hv_targets=0.95,x: 'x' is not a number")
  err = _hwnas(capsys, [new, "--agent_ci_input=forecast", f"--forecaster_dir={places['corrupt']}",
                        "--strategies=cenas"])
  assert err.startswith("error: --forecaster_dir: ") and "forecaster.json" in err
  err = _hwnas(capsys, [new, "--agent_ci_input=forecast", "--forecaster_dir=/nonexistent",
                        "--strategies=cenas"])
  assert "--restore_from" not in err and "/nonexistent" in err
  assert "not a directory" in _hwnas(capsys, [f"--workdir={places['under_file']}"])
  assert "did not write" in _hwnas(capsys, [f"--workdir={places['foreign']}"])
  # A study of ours whose hourly checkpoint is damaged: refused naming it, nothing changed.
  ours = places["new"].parent / "study"
  config = experiment.ExperimentConfig(strategies=("vanilla",), seeds=(0,),
                                       search=experiment.search.SearchConfig(hours=2))
  prepare_workdir(ours, config, kind="hwnas_search", may_change=experiment.RESUMABLE_CHANGES).claim()
  (ours / "config.json").write_text(json.dumps({k: v for k, v in config.to_json().items()
                                                if k != "workers"}, indent=2) + "\n")
  step = ours / "checkpoints" / "vanilla__seed0" / "1"
  step.mkdir(parents=True)
  (step / "_CHECKPOINT_METADATA").write_text("{damaged")
  err = _hwnas(capsys, [f"--workdir={ours}", "--strategies=vanilla", "--hours=2"])
  assert "checkpoints/vanilla__seed0" in err, err


def test_hwnas_windows(capsys, places, shared_data):
  from cenas_jax.cluster import windows

  del shared_data
  new = f"--workdir={places['new']}"

  def fails(argv):
    return _fails(capsys, windows.WindowsConfig, windows.run, argv, skip=("seeds",),
                  overrides={"seeds": (0,)})

  assert "broken.csv" in fails([new, f"--windows_trace_paths={places['broken']}"])
  assert "missing.csv" in fails([new, f"--windows_trace_paths={places['missing']}"])
  assert fails([new, "--windows_per_region=0"]) == (
      "error: --windows_per_region: must be >= 1, got 0\n")
  assert fails([new, "--windows_start=2022-01-01"]).startswith("error: --windows_start: ")
  assert fails([new, "--strategies=cenas,oracle,heuristic"]).startswith("error: --strategies: ")
  assert fails([new, "--windows_end=2030-01-01T00:00:00+00:00"]).startswith("error: --windows_end: ")
  assert "did not write" in fails([f"--workdir={places['foreign']}"])


def _cifar(capsys, argv):
  from cenas_jax.cifar_nas import config as cifar_config
  from cenas_jax.cifar_nas import experiment as cifar_experiment

  return _fails(capsys, cifar_config.CifarSearchConfig, cifar_experiment.run, argv)


def test_cifar_search(capsys, places, shared_data):
  del shared_data
  new = f"--workdir={places['new']}"
  data = "--cifar_path=shared:cifar10_subset/cifar-10-python-subset.tar.gz"
  assert "broken.csv" in _cifar(capsys, [new, data, f"--trace_path={places['broken']}"])
  assert "missing.csv" in _cifar(capsys, [new, f"--cifar_path={places['missing']}"])
  assert _cifar(capsys, [new, "--n_gpus=-1"]) == "error: --n_gpus: must be >= 1, got -1\n"
  assert _cifar(capsys, [new, "--objectives=accuracy,energy"]) == (
      "error: --objectives: must be accuracy,params or accuracy,params,energy (in that order), got "
      "'accuracy,energy'\n")
  assert _cifar(capsys, [new, data, "--include_genotypes=DARTS_V9"]).startswith(
      "error: --include_genotypes: 'DARTS_V9' is neither a published cell")
  assert _cifar(capsys, [new, data, "--start=2019-01-01T00:00:00+00:00"]).startswith(
      "error: --start: 2019-01-01T00:00:00+00:00 with --hours=80 is outside the trace")
  assert _cifar(capsys, [new, data, "--n_devices=99"]).startswith("error: --n_devices: ")
  err = _cifar(capsys, [new, data, "--backend=ray", "--ray_address=127.0.0.1:1"])
  assert err.startswith("error: --ray_address: ") or "ray extra" in err, err
  assert "not a directory" in _cifar(capsys, [f"--workdir={places['under_file']}"])
  assert "did not write" in _cifar(capsys, [f"--workdir={places['foreign']}"])


def _forecaster(capsys, argv):
  return _fails(capsys, evaluate.ForecastRunConfig, evaluate.run, argv)


def test_train_forecaster(capsys, places, shared_data):
  del shared_data
  new = f"--workdir={places['new']}"
  window = ["--train_start=2021-07-02T06:00Z", "--train_end=2021-07-02T08:00Z"]
  assert "broken.csv" in _forecaster(capsys, [new, f"--train_trace={places['broken']}", *window])
  assert "missing.csv" in _forecaster(capsys, [new, f"--train_trace={places['missing']}"])
  assert _forecaster(capsys, [new, "--dropout=1.5"]).startswith("error: --dropout: ")
  assert _forecaster(capsys, [new, "--test_start=soon"]).startswith("error: --test_start: ")
  assert _forecaster(capsys, [new, "--train_regions=DE,XX"]).startswith("error: --train_regions: ")
  err = _forecaster(capsys, [new, f"--restore_from={places['corrupt']}"])
  assert err.startswith("error: --restore_from: ") and "forecaster.json" in err
  assert "not a directory" in _forecaster(capsys, [f"--workdir={places['under_file']}"])
  assert "did not write" in _forecaster(capsys, [f"--workdir={places['foreign']}"])


_BROKEN_TRACES = {
    "wrong_header.csv": "a,b\n2021-01-01T00:00Z,1\n",
    "text.csv": "time,value\n2021-01-01T00:00Z,abc\n",
    "nan.csv": "time,value\n2021-01-01T00:00Z,nan\n",
    "negative.csv": "time,value\n2021-01-01T00:00Z,-5\n",
    "unsorted.csv": "time,value\n2021-01-01T01:00Z,5\n2021-01-01T00:00Z,3\n",
    "gap.csv": "time,value\n2021-01-01T00:00Z,5\n2021-01-09T00:00Z,3\n",
    "naive.csv": "time,value\n2021-01-01T00:00,5\n",
    "truncated.csv": "time,value\n2021-01-01T00:00Z\n",
}


def test_train_forecaster_eight_broken_traces(capsys, places):
  """The issue's eight kinds of broken trace: each one line naming the file and row, not a traceback."""
  new = f"--workdir={places['new']}"
  window = ["--train_start=2021-01-01T00:00Z", "--train_end=2021-01-01T02:00Z"]
  for name, text in _BROKEN_TRACES.items():
    path = places["broken"].parent / name
    path.write_text(text)
    err = _forecaster(capsys, [new, f"--train_trace={path}", *window])
    assert name in err, err
  err = _forecaster(capsys, [new, "--test_start=2030-01-01T00:00Z", "--test_end=2031-01-01T00:00Z"])
  assert "start=" not in err and "2030" in err, err


def test_fit_energy_model(capsys, places):
  def fit(argv):
    return _fails(capsys, kernel_fit.FitConfig, kernel_fit.run, argv, workdir_kind="fit_energy_model")

  new = f"--workdir={places['new']}"
  assert "broken.csv" in fit([new, f"--dataset={places['broken']}"])
  assert "missing.csv" in fit([new, f"--dataset={places['missing']}"])
  assert fit([new, "--test_fraction=abc"]).startswith("error: --test_fraction=abc: ")
  assert "not a directory" in fit([f"--workdir={places['under_file']}", f"--dataset={places['broken']}"])
  assert "did not write" in fit([f"--workdir={places['foreign']}", f"--dataset={places['broken']}"])


def test_energy_model_nb201(capsys, places):
  def nb201(argv):
    return _fails(capsys, validate.ValidateConfig, validate.run, argv, workdir_kind="energy_model_nb201")

  new = f"--workdir={places['new']}"
  assert nb201([new, "--ridge_grid=1,x"]).startswith("error: --ridge_grid=1,x: 'x' is not a number")
  assert "not a directory" in nb201([f"--workdir={places['under_file']}"])
  assert "did not write" in nb201([f"--workdir={places['foreign']}"])


def test_profile_kernels(capsys, places):
  def profile(argv):
    return _fails(capsys, kernel_bench.ProfileConfig, kernel_bench.run, argv, workdir_kind="profile_kernels")

  new = f"--workdir={places['new']}"
  assert profile([new, "--repeats=two"]).startswith("error: --repeats=two: ")
  assert "not a directory" in profile([f"--workdir={places['under_file']}"])
  assert "did not write" in profile([f"--workdir={places['foreign']}"])
  # A workdir of ours with a damaged kernels.csv (the run's resumable state) is refused as it is.
  ours = places["new"].parent / "ours"
  ours.mkdir(parents=True)
  prepare_workdir(ours, kernel_bench.ProfileConfig(fake_meter=True, allow_fake=True),
                  kind="profile_kernels").claim()
  (ours / "kernels.csv").write_text("config_id,energy_j\nabc")
  err = profile([f"--workdir={ours}", "--fake_meter", "--allow_fake"])
  assert "kernels.csv" in err


def test_an_os_error_on_a_file_is_one_line(capsys, tmp_path):
  def run(config, workdir):
    raise PermissionError(13, "Permission denied", f"{workdir}/summary.json")

  fv = flags.FlagValues()
  cli.define_flags(validate.ValidateConfig, flag_values=fv)
  cli.parse_flags(["prog", f"--workdir={tmp_path / 'w'}"], flag_values=fv)
  with pytest.raises(SystemExit):
    cli.run_main(["prog"], validate.ValidateConfig, run, flag_values=fv, workdir_kind="x")
  assert capsys.readouterr().err == f"error: {tmp_path / 'w'}/summary.json: Permission denied\n"
  assert not (tmp_path / "w").exists()  # the claim of the failed start is undone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_workdir_is_one_line(capsys, tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    err = _fails(capsys, validate.ValidateConfig, validate.run, [f"--workdir={ro / 'w'}"],
                 workdir_kind="energy_model_nb201")
    assert "cannot write" in err
  finally:
    ro.chmod(0o700)
