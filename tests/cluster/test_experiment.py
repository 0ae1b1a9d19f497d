"""End-to-end tests of the HW-NAS-Bench experiment runner: outputs, kill -9 resume, config guard."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cenas_jax.cluster import experiment
from cenas_jax.cluster.config import ExperimentConfig, OracleConfig, PretrainConfig
from cenas_jax.cluster.search import SearchConfig
from cenas_jax import results
from cenas_jax.errors import CenasError, WorkdirError

_REPO = Path(__file__).resolve().parents[2]
# Provenance that describes the moment and the command line of a run, not its results.
_VOLATILE_PROVENANCE = ("time_utc", "argv", "git_dirty")

TINY = ExperimentConfig(strategies=("vanilla", "heuristic", "cenas_faithful", "oracle"),
                        seeds=(0, 1), search=SearchConfig(hours=6),
                        oracle=OracleConfig(oracle_quantiles=(0.3, 0.7), oracle_splits=("8:1",)))
# The kill -9 run: a finished episode to reload, and an agent episode to resume mid-way.
KILL = ExperimentConfig(strategies=("heuristic", "cenas_faithful"), seeds=(0,),
                        search=SearchConfig(hours=8))
KILL_FLAGS = ["--strategies=heuristic,cenas_faithful", "--seeds=0", "--hours=8"]


def _stable(summary: dict) -> dict:
  out = dict(summary)
  out["provenance"] = {k: v for k, v in summary["provenance"].items()
                       if k not in _VOLATILE_PROVENANCE}
  return out


def _snapshot(root: Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
  del shared_data  # the runner reads the real table and trace from it
  workdir = tmp_path_factory.mktemp("tiny")
  summary = experiment.run(TINY, workdir)
  return workdir, summary


def test_run_writes_the_outputs(tiny_run):
  workdir, summary = tiny_run
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["max_hv"] == pytest.approx(4152.71, abs=0.1)
  assert on_disk["seeds"] == [0, 1]
  assert on_disk["hv_targets"] == [0.95, 0.97, 0.98, 0.99]
  assert set(on_disk["strategies"]) == {"vanilla", "heuristic", "cenas_faithful", "oracle"}
  for name, entry in on_disk["strategies"].items():
    assert len(entry["final_hv"]) == 2 and len(entry["n_trained"]) == 2, name
    assert all(0 < hv <= on_disk["max_hv"] for hv in entry["final_hv"])
    assert all(n >= 10 for n in entry["n_trained"])  # the 10 initial architectures at least
    for acc in ("paper", "full"):
      assert len(entry["carbon_g"][acc]) == 2
      assert set(entry["carbon_to_target_g"][acc]) == {"0.95", "0.97", "0.98", "0.99"}
    assert all(f >= p for p, f in zip(entry["carbon_g"]["paper"], entry["carbon_g"]["full"]))
  schedules = experiment.oracle_names(TINY)
  assert len(schedules) == 2
  assert set(on_disk["strategies"]["oracle"]["chosen_schedule"]) <= set(schedules)
  assert set(on_disk["ratios_vs_vanilla"]) == set(on_disk["strategies"])
  for name, ratios in on_disk["ratios_vs_vanilla"].items():
    assert set(ratios) >= {"total", "to_target"}
    assert set(ratios["total"]) == {"paper", "full"}
    assert set(ratios["to_target"]["paper"]) == {"0.95", "0.97", "0.98", "0.99"}
  assert on_disk["ratios_vs_vanilla"]["vanilla"]["total"] == {"paper": 1.0, "full": 1.0}
  # Vanilla trains on all 8 GPUs and so spends the most training carbon.
  van = on_disk["strategies"]["vanilla"]["carbon_g"]["paper"]
  heu = on_disk["strategies"]["heuristic"]["carbon_g"]["paper"]
  assert all(v > h for v, h in zip(van, heu))
  for key in ("seed", "energy_source", "ci_source", "data_hashes"):
    assert key in on_disk["provenance"]
  # The settings are recorded flat, by flag name (as config.json).
  assert on_disk["provenance"]["config"] == TINY.to_json()
  assert on_disk["provenance"]["config"]["hours"] == 6
  assert on_disk["provenance"]["config"]["oracle_splits"] == ["8:1"]
  assert summary["max_hv"] == on_disk["max_hv"]
  # The clairvoyant bound is below what every strategy spent to 0.98 (in 6 h: where it got there).
  bound = on_disk["bound"]
  assert [b["seed"] for b in bound["per_seed"]] == [0, 1]
  assert all(b["carbon_g"] > 0 and b["n_trained"] >= 1 for b in bound["per_seed"])
  for name, entry in on_disk["strategies"].items():
    for acc in ("paper", "full"):
      for b, c in zip(bound["per_seed"], entry["carbon_to_target_g"][acc]["0.98"]):
        assert c is None or c >= b["carbon_g"], (name, acc)
  assert "to 0.98 vs bound" in (workdir / "summary.md").read_text()

  rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 4 * 2 * 6  # strategies x seeds x hours
  assert {r["strategy"] for r in rows} == set(on_disk["strategies"])
  for r in rows:
    assert r["n_train"] + r["n_sample"] <= 8
    if r["strategy"] == "vanilla":
      assert (r["n_train"], r["n_sample"]) == (8, 0)
    if r["strategy"] == "cenas_faithful":
      assert 1 <= r["n_train"] <= 7 and r["n_train"] + r["n_sample"] == 8
  last = [r for r in rows if r["strategy"] == "vanilla" and r["seed"] == 0][-1]
  assert last["hour"] == 6
  assert last["carbon_g_paper_cum"] == pytest.approx(van[0])
  assert last["hv"] == pytest.approx(on_disk["strategies"]["vanilla"]["final_hv"][0])

  with open(workdir / "pareto.csv", newline="") as f:
    pareto = list(csv.DictReader(f))
  assert pareto and {"arch_index", "arch_str", "cifar10_test_acc_pct", "edgegpu_energy_mj",
                     "is_pareto"} <= set(pareto[0])
  assert any(p["is_pareto"] in ("True", "true", "1") for p in pareto)

  for png in ("hv_vs_hours.png", "hv_vs_carbon.png", "allocation_heuristic.png",
              "allocation_oracle.png"):
    data = (workdir / png).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000, png
  # Finished episodes are stored and their hourly checkpoints removed.
  names = {p.stem for p in (workdir / "episodes").glob("*.json")}
  assert names == {f"{s}__seed{i}" for s in ("vanilla", "heuristic", "cenas_faithful", *schedules)
                   for i in (0, 1)}
  assert not any((workdir / "checkpoints").glob("*/*"))


def test_rerun_is_a_no_op_and_other_settings_are_refused(tiny_run, capsys):
  workdir, summary = tiny_run
  before = _snapshot(workdir)
  other = dataclasses.replace(TINY, search=SearchConfig(hours=7), seeds=(0, 1, 2))
  with pytest.raises(CenasError) as err:
    experiment.run(other, workdir)
  msg = str(err.value)
  assert "--hours" in msg and str(workdir) in msg
  assert "--strategies" not in msg and "--seeds" not in msg  # more seeds extend a study
  assert _snapshot(workdir) == before  # nothing touched
  # The same settings again: it says so, writes nothing, and returns the summary on disk.
  capsys.readouterr()
  again = experiment.run(TINY, workdir)
  out = capsys.readouterr().out
  assert "finished with these settings: nothing to run" in out and "ETA" not in out
  assert again == results.to_json_safe(summary)
  assert _snapshot(workdir) == before


def test_more_seeds_extend_a_finished_study(tiny_run, tmp_path, capsys):
  workdir = tmp_path / "study"
  shutil.copytree(tiny_run[0], workdir)
  more = dataclasses.replace(TINY, strategies=("vanilla", "heuristic"), seeds=(0, 1, 2))
  with pytest.raises(CenasError, match="--strategies"):
    experiment.run(more, workdir)
  more = dataclasses.replace(TINY, seeds=(0, 1, 2))
  capsys.readouterr()
  summary = experiment.run(more, workdir)
  out = capsys.readouterr().out
  assert out.count("finished earlier (loaded)") == 2 * 5 and out.count("ETA") == 5
  assert summary["seeds"] == [0, 1, 2]
  assert summary["strategies"]["vanilla"]["final_hv"][:2] == tiny_run[1]["strategies"]["vanilla"]["final_hv"]


def test_outputs_explain_themselves(tiny_run):
  workdir, _ = tiny_run
  md = (workdir / "summary.md").read_text()
  assert md.startswith("# CE-NAS on HW-NAS-Bench: 2 seeds, 6 simulated hours")
  for phrase in ("carbon paper (g): the paper's accounting", "carbon full (g): every GPU", "25th-75th percentile",
                 "its chosen schedules (seeds): oracle_q"):
    assert phrase in md, phrase
  with open(workdir / "pareto.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert {r["run"] for r in rows} == {"vanilla, seed 0"}
  assert (workdir / "pareto.png").read_bytes().startswith(b"\x89PNG")
  # A study's workdir is marked ours and finished; outputs have the umask's permissions.
  marker = json.loads((workdir / "cenas_run.json").read_text())
  assert marker["kind"] == "hwnas_search" and marker["finished_utc"]
  mask = os.umask(0)
  os.umask(mask)
  assert (workdir / "summary.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_start_writes_nothing(tmp_path, shared_data):
  del shared_data
  bad = tmp_path / "bad.csv"
  bad.write_text("time,value\n2021-07-02T06:00Z,abc\n")
  for config in (dataclasses.replace(TINY, trace_path=str(bad)),
                 dataclasses.replace(TINY, start="2031-01-01T00:00:00+00:00"),
                 dataclasses.replace(TINY, trace_path=str(tmp_path / "missing.csv"))):
    with pytest.raises(CenasError):
      experiment.run(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_foreign_and_unusable_workdirs_are_refused(tmp_path):
  foreign = tmp_path / "other_tool"
  foreign.mkdir()
  (foreign / "summary.json").write_text("{}")
  with pytest.raises(WorkdirError, match="did not write"):
    experiment.run(TINY, foreign)
  assert (foreign / "summary.json").read_text() == "{}" and len(list(foreign.iterdir())) == 1
  (tmp_path / "a_file").write_text("x")
  for path in (tmp_path / "a_file", tmp_path / "a_file" / "w"):
    with pytest.raises(WorkdirError, match="not a directory"):
      experiment.run(TINY, path)


def _binary(workdir: Path, extra=()) -> list[str]:
  return [sys.executable, "-m", "experiments.hwnas_search", f"--workdir={workdir}", *KILL_FLAGS,
          *extra]


def test_kill_9_then_resume_gives_the_uninterrupted_summary(tmp_path, shared_data):
  # The second process reuses the first one's compiled executables (JAX's persistent compilation
  # cache); this only saves compile time.
  env = dict(os.environ, CENAS_SHARED_DATA=str(shared_data), PYTHONUNBUFFERED="1",
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  killed = tmp_path / "killed"
  agent_ckpts = killed / "checkpoints" / "cenas_faithful__seed0"
  log = tmp_path / "killed.log"
  with open(log, "wb") as out:
    proc = subprocess.Popen(_binary(killed), cwd=_REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 300.0
      # Kill once the heuristic episode is finished and the agent's has an hourly checkpoint.
      while not ((killed / "episodes" / "heuristic__seed0.json").exists()
                 and agent_ckpts.is_dir() and any(p.name.isdigit() for p in agent_ckpts.iterdir())):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.02)
      proc.send_signal(signal.SIGKILL)
      proc.wait(timeout=30)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
  assert not (killed / "episodes" / "cenas_faithful__seed0.json").exists()

  resumed = subprocess.run(_binary(killed), cwd=_REPO, env=env, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "cenas_faithful__seed0: resumed at hour" in resumed.stdout + resumed.stderr

  reference = tmp_path / "reference"
  experiment.run(KILL, reference)
  got = json.loads((killed / "summary.json").read_text())
  want = json.loads((reference / "summary.json").read_text())
  assert len(got["strategies"]["cenas_faithful"]["final_hv"]) == 1  # a real result
  assert _stable(got) == _stable(want)
  assert (killed / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()
  assert (killed / "pareto.csv").read_text() == (reference / "pareto.csv").read_text()


def test_electricitymaps_trace_is_the_file_of_the_windows_year(shared_data):
  """Regression: --trace_dataset=electricitymaps asked for a year= that no flag sets."""
  config = ExperimentConfig(trace_dataset="electricitymaps")
  for when, year in (("2021-07-02T06:00:00+00:00", 2021), ("2022-03-01T00:00:00+00:00", 2022)):
    trace = experiment.region_trace(config, "US-CAL-CISO", when)
    assert str(trace.path).endswith(f"US-CAL-CISO_{year}_hourly.csv.gz")
    assert trace.start.year == year and len(trace) in (8760, 8784)


def _pretrained_leaves(tmp_path, name: str, hours: int = 4, **pretrain) -> list:
  import jax

  cfg = ExperimentConfig(strategies=("cenas",), seeds=(0,), search=SearchConfig(hours=hours),
                         pretrain=PretrainConfig(pretrain_episodes=1, **pretrain))
  inputs = experiment.load_inputs(cfg)
  out = experiment.pretrain(cfg, inputs, tmp_path / name)
  return jax.tree.leaves(experiment._load_pretrained(out, cfg, inputs))


def _same(a: list, b: list) -> bool:
  import numpy as np

  return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_pretrain_seed_draws_another_agent_and_the_default_is_reproducible(tmp_path, shared_data):
  """The deployed agent is one draw of pre-training: the same seed gives the same weights, another
  seed other windows and initial weights (so rerunning with seeds measures that draw)."""
  del shared_data
  assert PretrainConfig().pretrain_seed == 12345  # the constant the stored studies were run with
  a = _pretrained_leaves(tmp_path, "a", pretrain_seed=1)
  assert _same(a, _pretrained_leaves(tmp_path, "a_again", pretrain_seed=1))
  assert not _same(a, _pretrained_leaves(tmp_path, "b", pretrain_seed=2))


def test_pretrain_draws_deploy_the_best_on_validation_windows(tmp_path, shared_data):
  """With k draws, each is validated on the same pre-training windows and the lowest score is
  deployed: that draw's agent, as trained alone from its seed. 24 hours: long enough for some
  validation episodes to reach the target with LaMOO's proposals."""
  import math

  import numpy as np

  del shared_data
  lamoo = dict(hours=24, pretrain_optimizer="lamoo")
  leaves = _pretrained_leaves(tmp_path, "k", pretrain_seed=3, pretrain_draws=2,
                              pretrain_validation_episodes=3, **lamoo)
  val = json.loads((tmp_path / "k" / "pretrain_validation.json").read_text())
  assert [d["seed"] for d in val["draws"]] == [3, 4]
  for d in val["draws"]:
    assert len(d["episodes"]) == 3 and all(set(e) == {"region", "paper", "full"} for e in d["episodes"])
    median = sorted(math.inf if e["paper"] is None else math.sqrt(e["paper"] * e["full"])
                    for e in d["episodes"])[1]
    assert d["score_g"] == (None if math.isinf(median) else pytest.approx(median))
  # The same windows for every draw.
  assert [e["region"] for e in val["draws"][0]["episodes"]] == [
      e["region"] for e in val["draws"][1]["episodes"]]
  scores = [math.inf if d["score_g"] is None else d["score_g"] for d in val["draws"]]
  assert any(math.isfinite(x) for x in scores)  # the choice is made on a number, not a tie
  best = val["draws"][int(np.argmin(scores))]
  assert val["deployed_seed"] == best["seed"]
  assert _same(leaves, _pretrained_leaves(tmp_path, "alone", pretrain_seed=best["seed"], **lamoo))
  with pytest.raises(CenasError, match="pretrain_draws"):
    PretrainConfig(pretrain_draws=0)
  with pytest.raises(CenasError, match="pretrain_seed"):
    PretrainConfig(pretrain_seed=-1)
