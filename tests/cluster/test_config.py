"""Tests of the experiment's settings: nesting, the flat flags they map to, and refused values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from absl import flags

from cenas_jax.cluster import experiment
from cenas_jax.cluster.config import (AgentSettings, ExperimentConfig, OracleConfig, OracleSchedule,
                                      ProposalConfig)
from cenas_jax.cluster.pool import PoolConfig
from cenas_jax.cluster.search import SearchConfig
from cenas_jax.errors import ConfigError
from experiments import cli

_REPO = Path(__file__).resolve().parents[2]
# The flags of experiments/hwnas_search.py before the settings were nested: every one must still be
# a leaf field of the same name (the committed flagfiles use them).
_FLAGS_BEFORE = (
    "strategies region trace_dataset ci_column trace_path start hours n_gpus queue_capacity "
    "sample_time_s train_power_w sample_power_w idle_power_w pue switch_overhead_s "
    "screen_per_gpu_hour oneshot_per_gpu_hour sampling train_time_model proposal cp lamoo_preset "
    "max_tree_samples n_init agent_mode agent_ci_input forecaster_dir agent_entropy_weight "
    "agent_greedy agent_beta_scale agent_release reward_accounting pretrain_episodes "
    "pretrain_regions pretrain_end oracle_quantiles oracle_splits oracle_accounting hv_targets "
    "workers").split()


def test_the_nested_config_keeps_the_flat_flag_names():
  leaves = cli.leaf_fields(ExperimentConfig)
  assert set(_FLAGS_BEFORE) <= set(leaves)
  default = ExperimentConfig()
  assert leaves["n_gpus"][1] == default.search.pool.n_gpus
  assert leaves["oracle_splits"][1] == default.oracle.oracle_splits
  assert "schedules" not in leaves  # parsed, not a flag
  # config.json / provenance: flat, by flag name, JSON types.
  flat = ExperimentConfig().to_json()
  assert set(flat) == set(leaves)
  assert flat["n_gpus"] == 8 and flat["oracle_splits"] == ["1:0", "2:0", "2:1", "8:1"]


def test_flagfiles_build_the_config(tmp_path):
  values = flags.FlagValues()
  cli.define_flags(ExperimentConfig, skip=("seeds",), flag_values=values)
  flags.DEFINE_integer("num_seeds", 20, "", flag_values=values)
  values(["prog", f"--flagfile={_REPO / 'experiments/flags/hwnas_quick.flags'}",
          f"--workdir={tmp_path}"])
  config = cli.config_from_flags(ExperimentConfig, flag_values=values,
                                 seeds=tuple(range(values.num_seeds)))
  assert config.seeds == (0, 1, 2)
  assert config.search == SearchConfig(pool=PoolConfig(screen_per_gpu_hour=60,
                                                       screen_explore_every=2))
  assert config.sampling == "fewshot" and config.pretrain.pretrain_episodes == 20
  assert config.agent.agent_action == "residual" and config.pretrain.pretrain_optimizer == "lamoo"
  assert config.pretrain.pretrain_entropy_final == 0.05
  assert config.strategies == ("vanilla", "oneshot", "heuristic", "cenas", "oracle")


def test_oracle_schedules_are_parsed_once():
  oracle = OracleConfig(oracle_quantiles=(0.35, 0.7), oracle_splits=("2:0", "8:1"))
  assert oracle.schedules == (OracleSchedule(0.35, 2, 0), OracleSchedule(0.7, 2, 0),
                              OracleSchedule(0.35, 8, 1), OracleSchedule(0.7, 8, 1))
  assert [s.name for s in oracle.schedules] == ["oracle_q0.35_2:0", "oracle_q0.70_2:0",
                                                "oracle_q0.35_8:1", "oracle_q0.70_8:1"]
  config = ExperimentConfig(oracle=oracle)
  assert experiment.oracle_names(config) == [s.name for s in oracle.schedules]
  jobs = experiment._episode_jobs(dataclasses.replace(config, strategies=("oracle",), seeds=(0,)))  # pylint: disable=protected-access
  assert [spec for spec, _ in jobs] == list(oracle.schedules)


@pytest.mark.parametrize("build, field", [
    (lambda: OracleConfig(oracle_splits=("2-0",)), "oracle_splits"),
    (lambda: OracleConfig(oracle_quantiles=(1.5,)), "oracle_quantiles"),
    (lambda: OracleConfig(oracle_accounting="some"), "oracle_accounting"),
    (lambda: ExperimentConfig(strategies=("vanilla", "nope")), "strategies"),
    (lambda: ExperimentConfig(seeds=()), "seeds"),
    (lambda: ExperimentConfig(sampling="zeroshot"), "sampling"),
    (lambda: SearchConfig(hours=0), "hours"),
    (lambda: SearchConfig(reward_accounting="half"), "reward_accounting"),
    (lambda: AgentSettings(agent_mode="fixed"), "agent_mode"),
    (lambda: AgentSettings(agent_ci_input="forecast"), "forecaster_dir"),
    (lambda: AgentSettings(agent_n_step=0), "agent_n_step"),
    (lambda: AgentSettings(agent_mode="faithful", agent_n_step=3), "agent_n_step"),
    (lambda: ProposalConfig(proposal="grid"), "proposal"),
    (lambda: PoolConfig(n_gpus=0), "n_gpus"),
    # Regression: without 0.98 a whole study ran and then died with KeyError: '0.98'.
    (lambda: ExperimentConfig(hv_targets=(0.95, 0.99)), "hv_targets"),
    (lambda: ExperimentConfig(hv_targets=(0.98, 1.5)), "hv_targets"),
])
def test_refused_values_name_their_flag(build, field):
  with pytest.raises(ConfigError) as err:
    build()
  assert err.value.field == field


def test_a_refused_value_is_one_line_naming_the_flag(tmp_path, capsys):
  values = flags.FlagValues()
  cli.define_flags(ExperimentConfig, skip=("seeds",), flag_values=values)
  values(["prog", f"--workdir={tmp_path}", "--oracle_splits=2-0"])
  with pytest.raises(SystemExit) as exit_:
    cli.run_main(["prog"], ExperimentConfig, experiment.run, flag_values=values, seeds=(0,))
  assert exit_.value.code == 2
  assert capsys.readouterr().err == (
      "error: --oracle_splits: '2-0' is not 'N_CLEAN:N_DIRTY' (e.g. 2:0)\n")
  assert not list(tmp_path.iterdir())  # refused before anything was written
