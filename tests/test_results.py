"""Tests for cenas_jax.results."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from cenas_jax import results
from cenas_jax.errors import DataError, DataUnavailableError

PROV = {"seed": 3, "energy_source": "table-hw_nas_bench", "ci_source": "electricitymaps/US-CAL-CISO",
        "data_hashes": {"x.csv": "ab" * 32}}


def test_write_and_load_summary(tmp_path):
  summary = {"hv": 0.5, "nan_value": float("nan"), "inf": float("inf"), "arr": np.arange(3),
             "np_float": np.float32(1.5), "nested": {"t": (1, 2)}}
  path = results.write_summary(tmp_path / "run", summary, PROV)
  text = path.read_text()
  assert "NaN" not in text and "Infinity" not in text
  doc = results.load_summary(tmp_path / "run")
  assert doc["hv"] == 0.5 and doc["nan_value"] is None and doc["inf"] is None
  assert doc["arr"] == [0, 1, 2] and doc["np_float"] == 1.5 and doc["nested"] == {"t": [1, 2]}
  prov = doc["provenance"]
  for key in ("package_version", "git_commit", "git_dirty", "python_version", "jax_version",
              "jax_backend", "hostname", "time_utc", "argv", "seed", "energy_source", "ci_source",
              "data_hashes"):
    assert key in prov, key
  assert prov["seed"] == 3 and prov["data_hashes"] == PROV["data_hashes"]
  assert prov["git_commit"] == "unknown" or len(prov["git_commit"]) == 40


def test_summary_records_jax_when_imported(tmp_path):
  import jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  doc = results.load_summary(results.write_summary(tmp_path, {}, PROV))
  assert doc["provenance"]["jax_backend"] == "cpu"
  assert doc["provenance"]["jax_devices"]


def test_git_commit_unknown_outside_repo(tmp_path, monkeypatch):
  monkeypatch.setattr(results, "_REPO_ROOT", tmp_path)
  prov = results.collect_provenance()
  assert prov["git_commit"] == "unknown" and prov["git_dirty"] == "unknown"


def test_summary_errors(tmp_path):
  with pytest.raises(ValueError, match="missing .*energy_source"):
    results.write_summary(tmp_path, {}, {"seed": 0, "ci_source": None, "data_hashes": {}})
  with pytest.raises(ValueError, match="'provenance'"):
    results.write_summary(tmp_path, {"provenance": 1}, PROV)
  with pytest.raises(TypeError, match="no JSON form"):
    results.write_summary(tmp_path, {"x": object()}, PROV)
  assert not (tmp_path / "summary.json").exists()
  with pytest.raises(DataUnavailableError, match="summary.json"):
    results.load_summary(tmp_path)
  (tmp_path / "summary.json").write_text("{bad")
  with pytest.raises(DataError, match="not valid JSON"):
    results.load_summary(tmp_path)


def test_results_append_and_read(tmp_path):
  with results.ResultsWriter(tmp_path) as w:
    w.append({"i": 0, "acc": float("nan")})
    assert w.extend([{"i": 1}, {"i": 2, "v": np.float64(2.5)}]) == 2
  assert results.append_results(tmp_path, [{"i": 3}]) == 1
  recs = results.read_results(tmp_path)
  assert [r["i"] for r in recs] == [0, 1, 2, 3]
  assert recs[0]["acc"] is None and recs[2]["v"] == 2.5
  lines = (tmp_path / "results.jsonl").read_text().splitlines()
  assert all(json.loads(line) for line in lines) and len(lines) == 4


def test_bad_record_writes_nothing(tmp_path):
  with results.ResultsWriter(tmp_path) as w:
    w.append({"i": 0})
    with pytest.raises(TypeError):
      w.extend([{"i": 1}, {"i": object()}])
  assert [r["i"] for r in results.read_results(tmp_path)] == [0]


def test_truncated_last_line_is_dropped_on_resume(tmp_path):
  results.append_results(tmp_path, [{"i": 0}, {"i": 1}])
  path = tmp_path / "results.jsonl"
  with open(path, "ab") as f:
    f.write(b'{"i": 2, "acc"')  # a crash mid-write
  with pytest.warns(RuntimeWarning, match="interrupted"):
    assert [r["i"] for r in results.read_results(tmp_path)] == [0, 1]
  assert path.read_bytes().endswith(b'"acc"')  # reading never modifies the file
  with pytest.warns(RuntimeWarning, match="dropped before appending"):
    results.append_results(tmp_path, [{"i": 2}])
  assert [r["i"] for r in results.read_results(tmp_path)] == [0, 1, 2]
  assert path.read_text().count("\n") == 3


def test_corrupt_middle_line_names_file_and_line(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text('{"i": 0}\n{oops\n{"i": 2}\n')
  with pytest.raises(DataError, match=r"results.jsonl, line 2"):
    results.read_results(path)


def test_rewrite_results_is_atomic_replace(tmp_path):
  results.append_results(tmp_path, [{"i": i} for i in range(5)])
  results.rewrite_results(tmp_path, [{"i": i} for i in range(2)])
  assert [r["i"] for r in results.read_results(tmp_path)] == [0, 1]
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
  with pytest.raises(DataUnavailableError):
    results.read_results(tmp_path / "nope")


def test_pareto_mask_min_max_and_ties():
  pts = np.array([[1.0, 5.0], [2.0, 4.0], [2.0, 4.0], [3.0, 3.0], [3.0, 4.0], [1.0, 6.0]])
  # Minimize both: (1,5) (2,4) (2,4) (3,3) non-dominated; (3,4) dominated by (2,4); (1,6) by (1,5).
  np.testing.assert_array_equal(results.pareto_mask(pts, False), [1, 1, 1, 1, 0, 0])
  # Maximize first, minimize second: (3,3) is best in both objectives.
  np.testing.assert_array_equal(results.pareto_mask(pts, [True, False]), [0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(results.pareto_mask(pts, True), [0, 0, 0, 0, 1, 1])
  with pytest.raises(ValueError, match="finite"):
    results.pareto_mask([[1.0, np.nan]], False)


def test_pareto_mask_matches_brute_force():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 6, size=(300, 3)).astype(float)  # many ties
  mask = results.pareto_mask(y, [True, False, True])
  z = y * np.array([1, -1, 1])
  ref = [not any((z[j] >= z[i]).all() and (z[j] > z[i]).any() for j in range(len(z)))
         for i in range(len(z))]
  np.testing.assert_array_equal(mask, ref)


def test_write_pareto_csv(tmp_path):
  rows = [{"arch": "a", "acc": 0.9, "energy_j": 5.0},
          {"arch": "b", "acc": 0.8, "energy_j": 2.0, "note": "x"},
          {"arch": "c", "acc": 0.7, "energy_j": 6.0},
          {"arch": "d", "acc": 0.9, "energy_j": 5.0}]
  mask = results.write_pareto_csv(tmp_path, rows, ["acc", "energy_j"], maximize=[True, False])
  np.testing.assert_array_equal(mask, [True, True, False, True])
  with open(tmp_path / "pareto.csv", newline="") as f:
    got = list(csv.DictReader(f))
  assert list(got[0]) == ["arch", "acc", "energy_j", "note", "is_pareto"]
  assert [g["is_pareto"] for g in got] == ["True", "True", "False", "True"]
  assert got[1]["note"] == "x" and got[0]["note"] == ""
  with pytest.raises(DataError, match="row 1 has objective 'acc'"):
    results.write_pareto_csv(tmp_path / "p2.csv", [{"acc": 1, "e": 1}, {"acc": math.nan, "e": 1}],
                             ["acc", "e"], maximize=True)
  assert not (tmp_path / "p2.csv").exists()
  with pytest.raises(ValueError, match="flags"):
    results.write_pareto_csv(tmp_path / "p3.csv", rows, ["acc", "energy_j"], maximize=[True])


def test_outputs_get_the_umask_permissions(tmp_path):
  """Atomic writes used to leave tempfile's -rw------- on every output."""
  import os  # pylint: disable=g-import-not-at-top

  old = os.umask(0o027)
  try:
    results.write_csv(tmp_path / "a.csv", [{"x": 1}])
    results.write_summary(tmp_path, {"x": 1}, dict(seed=0, energy_source=None, ci_source=None,
                                                    data_hashes={}))
  finally:
    os.umask(old)
  assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o640
  assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o640


def test_prepare_workdir_checks_without_writing(tmp_path):
  from cenas_jax.errors import WorkdirError  # pylint: disable=g-import-not-at-top

  wd = results.prepare_workdir(tmp_path / "new" / "run", {"a": 1, "seeds": [0]}, kind="k")
  assert not (tmp_path / "new").exists() and not wd.resumed
  wd.claim()
  wd.finish()
  again = results.prepare_workdir(tmp_path / "new" / "run", {"a": 1, "seeds": [0]}, kind="k")
  assert again.resumed and again.finished
  more = results.prepare_workdir(tmp_path / "new" / "run", {"a": 1, "seeds": [0, 1]}, kind="k",
                                 may_change=("seeds",))
  assert more.resumed and not more.finished
  with pytest.raises(WorkdirError, match=r"--a differ: saved \[1\], now \[2\]"):
    results.prepare_workdir(tmp_path / "new" / "run", {"a": 2, "seeds": [0]}, kind="k")
  with pytest.raises(WorkdirError, match="holds a k run, not a j run"):
    results.prepare_workdir(tmp_path / "new" / "run", {"a": 1}, kind="j")


def test_a_foreign_or_older_workdir_is_refused_with_the_reason(tmp_path):
  from cenas_jax.errors import WorkdirError  # pylint: disable=g-import-not-at-top

  other = tmp_path / "other"
  other.mkdir()
  (other / "results.jsonl").write_text("{}\n")
  with pytest.raises(WorkdirError, match=r"did not write \(results.jsonl; no cenas_run.json\)"):
    results.prepare_workdir(other, {"a": 1}, kind="k")
  older = tmp_path / "older"
  results.write_summary(older, {"x": 1}, dict(seed=0, energy_source=None, ci_source=None, data_hashes={}))
  with pytest.raises(WorkdirError, match="earlier version of this package"):
    results.prepare_workdir(older, {"a": 1}, kind="k")
  assert (other / "results.jsonl").read_text() == "{}\n"


def test_a_setting_added_later_at_its_default_keeps_a_finished_run_finished(tmp_path):
  """A run recorded before a setting existed ran with that setting's default."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Config:
    a: int = 1
    objectives: tuple[str, ...] = ("accuracy", "params")

  run = tmp_path / "run"
  wd = results.prepare_workdir(run, {"a": 1}, kind="k")  # recorded before `objectives` existed
  wd.claim()
  wd.finish()
  assert results.prepare_workdir(run, Config(), kind="k").finished
  now = results.prepare_workdir(run, Config(objectives=("accuracy", "params", "energy")), kind="k")
  assert now.resumed and not now.finished
