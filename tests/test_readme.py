"""The README's Python examples run as written, in order, in one namespace (as a reader pastes them),
and its commands name flagfiles and modules that exist."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_README = (_REPO / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
  return re.findall(rf"```{lang}\n(.*?)```", _README, flags=re.S)


def test_python_examples_run_as_written(tmp_path, monkeypatch, capsys, shared_data):
  del shared_data  # the tracker example reads the shared DE trace
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("ELECTRICITYMAPS_TOKEN", raising=False)  # the trace branch, offline
  blocks = _blocks("python")
  assert len(blocks) == 3
  namespace: dict = {"__name__": "readme"}
  for i, code in enumerate(blocks):
    exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # pylint: disable=exec-used
  out = capsys.readouterr().out.splitlines()
  assert re.fullmatch(r"\d+\.\d{3} mJ per call on h100-sxm \(prior:h100-sxm\)", out[0]), out[0]
  assert re.fullmatch(r"20 evaluated, \d+ on the front, HV \d+\.\d{3}", out[1]), out[1]
  assert "(predicted-prior:h100-sxm)" in out[2] and "electricitymaps:DE" in out[2], out[2]
  e = namespace["tracker"].last
  assert e.energy_j == pytest.approx(1000 * namespace["energy_j"])
  with open(tmp_path / "runs" / "tracked" / "emissions.csv", newline="") as f:
    (row,) = list(csv.DictReader(f))
  assert float(row["emissions"]) == pytest.approx(e.carbon_g / 1000)
  assert len(namespace["sampled"].x) == 20


def test_commands_name_files_that_exist():
  commands = "\n".join(_blocks("bash"))
  for flagfile in re.findall(r"--flagfile=(\S+)", commands):
    assert (_REPO / flagfile).is_file(), flagfile
  for module in re.findall(r"-m (experiments\.\w+)", commands):
    assert (_REPO / (module.replace(".", "/") + ".py")).is_file(), module
