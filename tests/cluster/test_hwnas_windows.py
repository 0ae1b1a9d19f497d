"""The windows study: windows spread as asked, outputs and resume; the agent is blind to the grid's
level (a trace scaled by a constant gives the same allocations)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cenas_jax.cluster import windows
from cenas_jax.cluster.config import ExperimentConfig, PretrainConfig
from cenas_jax.cluster.search import SearchConfig
from cenas_jax.errors import ConfigError

STUDY = ExperimentConfig(strategies=("heuristic", "cenas"), seeds=(0,),
                         search=SearchConfig(hours=4),
                         pretrain=PretrainConfig(pretrain_episodes=1))


def _plain_trace(path, start="2021-06-01T00:00:00+00:00", hours=24 * 40, scale=0.25):
  t = pd.date_range(start, periods=hours, freq="h")
  v = scale * (250.0 + 120.0 * np.sin(2 * np.pi * np.arange(hours) / 24.0))
  pd.DataFrame({"time": t.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "value": v}).to_csv(path, index=False)
  return path


def test_windows_are_evenly_spread_inside_the_range(tmp_path):
  path = _plain_trace(tmp_path / "other_grid.csv")
  cfg = windows.WindowsConfig(study=STUDY, windows_per_region=3, windows_regions=("DE",),
                              windows_start="2022-01-01T00:00:00+00:00",
                              windows_end="2022-01-11T00:00:00+00:00",
                              windows_trace_paths=(str(path),))
  ws = windows.windows(cfg)
  assert [w.region for w in ws[:3]] == ["DE"] * 3 and all(not w.trace_path for w in ws[:3])
  starts = [pd.Timestamp(w.start) for w in ws[:3]]
  assert starts[0] == pd.Timestamp("2022-01-01T00:00:00+00:00")
  assert starts[-1] + pd.Timedelta(hours=4) <= pd.Timestamp("2022-01-11T00:00:00+00:00")
  assert starts[1] - starts[0] == starts[2] - starts[1]
  # The extra trace's windows start after pre-training's end and a week of history.
  extra = ws[3:]
  assert len(extra) == 3 and all(w.trace_path == str(path) for w in extra)
  assert all(pd.Timestamp(w.start) >= pd.Timestamp(STUDY.pretrain.pretrain_end) for w in extra)
  assert len({windows.window_name(w) for w in ws}) == 6
  with pytest.raises(ConfigError, match="heuristic"):
    windows.WindowsConfig(study=dataclasses.replace(STUDY, strategies=("cenas",)))
  with pytest.raises(ConfigError, match="oracle"):
    windows.WindowsConfig(study=dataclasses.replace(STUDY, strategies=("heuristic", "cenas",
                                                                       "oracle")))


def test_run_writes_the_table_and_resumes(tmp_path, shared_data, capsys):
  del shared_data
  path = _plain_trace(tmp_path / "other_grid.csv")
  cfg = windows.WindowsConfig(study=STUDY, windows_per_region=2, windows_regions=("US-CAL-CISO",),
                              windows_trace_paths=(str(path),))
  wd = tmp_path / "w"
  summary = windows.run(cfg, wd)
  assert len(summary["windows"]) == 4
  for row in summary["windows"]:
    assert 0 < row["cenas_final_hv_frac"] <= 1 and 0 < row["heuristic_final_hv_frac"] <= 1
  assert summary["windows"][-1]["mean_ci_g_per_kwh"] < 100  # the low-carbon grid of the extra file
  ow = summary["over_windows"]["full"]
  assert ow["windows"] == 4 and 0 <= ow["cenas_wins"] <= 4
  on_disk = json.loads((wd / "summary.json").read_text())
  assert on_disk["windows"] == summary["windows"]
  assert (wd / "windows.csv").read_text().count("\n") == 5
  assert "unseen windows" in (wd / "summary.md").read_text()
  # Every episode is stored: a second run reloads them and gives the same table.
  capsys.readouterr()
  again = windows.run(cfg, wd)
  assert again["windows"] == summary["windows"]


def test_the_agent_allocates_the_same_on_a_grid_at_another_level(shared_data):
  import jax

  from cenas_jax.cluster import search
  from cenas_jax.cluster.agent_strategy import AgentStrategy
  from cenas_jax.cluster.problem import hwnas_problem
  from cenas_jax.controller.allocation_agent import AgentConfig, init_agent
  from cenas_jax.data.nasbench import load_nb201_table

  del shared_data
  problem = hwnas_problem(load_nb201_table(), sampling="fewshot")
  cfg = AgentConfig(mode="repaired", frozen=True)
  strategy = AgentStrategy(config=cfg, init_params=init_agent(cfg, jax.random.key(3)))
  scfg = SearchConfig(hours=12, history_hours=48)
  t = np.arange(200)
  ci = 250.0 + 120.0 * np.sin(2 * np.pi * t / 24.0) + 15.0 * np.cos(0.7 * t)

  def allocations(trace):
    state = search.init_episode(problem, scfg, 0, strategy)
    while state.hour < scfg.hours:
      state, _ = search.step_episode(state, problem, trace, 60, strategy, search.RandomOptimizer(),
                                     scfg, forecast_fn=lambda i, tr=trace: tr[i: i + 24])
    return state.history["n_train"], search.charged_g(state.ledger, "full")

  base, g = allocations(ci)
  scaled, g_scaled = allocations(0.2 * ci)
  assert scaled == base and len(set(base)) > 1
  assert g_scaled == pytest.approx(0.2 * g)
