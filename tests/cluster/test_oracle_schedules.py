"""The benchmark that splits the oracle's lead into its schedules and its per-seed choice."""

from __future__ import annotations

import json

import pytest

from benchmarks.oracle_schedules import best_single, compare, load_schedules, schedule_table


def _record(name, seed, paper, full, hv=4000.0):
  return {"strategy": name, "seed": seed, "final_hv": hv,
          "carbon_to_target_g": {"paper": {"0.98": paper}, "full": {"0.98": full}}}


def _workdir(tmp_path, table):
  """``table[name] = [(paper, full) per seed]`` written as an oracle run's episodes."""
  (tmp_path / "episodes").mkdir()
  (tmp_path / "config.json").write_text(json.dumps({"oracle_accounting": "full"}))
  for name, per_seed in table.items():
    for seed, (paper, full) in enumerate(per_seed):
      (tmp_path / "episodes" / f"{name}__seed{seed}.json").write_text(
          json.dumps(_record(name, seed, paper, full)))
  (tmp_path / "episodes" / "vanilla__seed0.json").write_text(json.dumps(_record("vanilla", 0, 1, 1)))
  return tmp_path


def test_the_best_single_schedule_is_measured_against_the_per_seed_pick(tmp_path):
  # Two schedules whose luck alternates: the per-seed pick takes the lucky one every time.
  wd = _workdir(tmp_path, {"oracle_a": [(100, 100), (300, 300), (100, 100)],
                           "oracle_b": [(200, 200), (150, 150), (None, None)]})
  schedules, accounting = load_schedules(wd)
  assert sorted(schedules) == ["oracle_a", "oracle_b"] and accounting == "full"
  seeds, oracle, rows = schedule_table(schedules, accounting)
  assert seeds == [0, 1, 2] and oracle["full"] == [100, 150, 100]
  assert rows["oracle_a"]["chosen"] == 2 and rows["oracle_b"]["chosen"] == 1
  # oracle_a / oracle per seed: 1, 2, 1 -> median 1; oracle_b: 2, 1, and seed 2 never -> 1.5.
  assert rows["oracle_a"]["full"] == (100.0, 1.0) and rows["oracle_b"]["full"] == (175.0, 1.5)
  assert best_single(rows, accounting) == "oracle_a"
  new = {"seeds": [0, 1, 2], "strategies": {"agent": {"carbon_to_target_g": {
      "paper": {"0.98": [200, 300, 300]}, "full": {"0.98": [200, 600, None]}}}}}
  (line,) = compare(new, schedules["oracle_a"], "oracle_a", seeds, oracle)
  assert "paper: agent/oracle_a 2.00, agent/oracle 2.00" in line
  assert "full: agent/oracle_a 2.00, agent/oracle 3.00" in line
  with pytest.raises(ValueError, match=r"no seeds \[2\]"):
    compare({**new, "seeds": [0, 1]}, schedules["oracle_a"], "oracle_a", seeds, oracle)


def test_a_workdir_without_oracle_episodes_is_refused(tmp_path):
  with pytest.raises(ValueError, match="--strategies=oracle"):
    load_schedules(_workdir(tmp_path, {}))
