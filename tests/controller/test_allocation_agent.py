"""Tests of the CE-NAS GPU-allocation agent's pure functions (faithful and repaired modes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.controller import allocation_agent as aa
from cenas_jax.controller.allocation_agent import AgentConfig
from cenas_jax.controller.types import Allocation, Observation, Outcome, QuantileRule


def _obs(**kw) -> Observation:
  base = dict(hour=0, hours_total=80, n_gpus=8, ci_g_per_kwh=200.0,
              ci_history=np.array([150.0, 200.0]), ci_forecast=None, ci_ref_min=100.0,
              ci_ref_max=500.0, hv=3000.0, hv_prev=2900.0, hv_init=2821.26, max_hv=4152.71, n_evaluated=15,
              n_queued=4)
  base.update(kw)
  return Observation(**base)


@pytest.mark.parametrize("action, n_train", [
    (0, 1), (1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5), (8, 6), (9, 7)])
def test_faithful_action_mapping(action, n_train):
  config = AgentConfig(mode="faithful")
  assert config.n_actions == 10
  assert aa.action_to_allocation(config, action) == Allocation(n_train, 8 - n_train)


def test_repaired_action_mapping_may_release_gpus():
  config = AgentConfig(mode="repaired")
  assert config.n_actions == 9
  assert aa.action_to_allocation(config, 0) == Allocation(0, 1)
  assert aa.action_to_allocation(config, 5) == Allocation(5, 1)
  assert aa.action_to_allocation(config, 8) == Allocation(8, 0)
  # Without release, the repaired mode uses the official mapping.
  assert aa.action_to_allocation(AgentConfig(mode="repaired", release=False), 9) == Allocation(7, 1)


def test_residual_actions_adjust_the_heuristic_rule():
  config = AgentConfig(mode="repaired", action_mode="residual", residual_max=3)
  assert config.n_actions == 7
  # ci 200 in [100, 500]: ci_norm 0.25 -> the rule trains round(1 + 6 x 0.75) = 6 (of 1..7).
  obs = _obs(ci_g_per_kwh=200.0)
  assert aa.action_to_allocation(config, 3, obs) == Allocation(6, 1)  # delta 0: the rule itself
  assert aa.action_to_allocation(config, 0, obs) == Allocation(3, 1)
  assert aa.action_to_allocation(config, 6, obs) == Allocation(8, 0)  # 9 clipped to the pool
  clean = _obs(ci_g_per_kwh=500.0)  # the dirtiest hour: the rule trains 1
  assert aa.action_to_allocation(config, 0, clean) == Allocation(0, 1)
  with pytest.raises(ValueError, match="observation"):
    aa.action_to_allocation(config, 3)


def test_quantile_rule_thresholds_on_the_last_and_next_day():
  rule = QuantileRule(quantile=0.5, n_clean=4, n_dirty=1, hours=3)
  history = np.array([900.0, 100.0, 300.0, 200.0])  # 900 is older than the last 3 hours
  # Median of the last 3 hours and the next 3 forecast ones: {100, 300, 200, 50, 60, 1000} -> 150.
  obs = _obs(ci_g_per_kwh=200.0, ci_history=history, ci_forecast=np.array([50.0, 60.0, 1000.0, 5.0]))
  assert rule.threshold_g_per_kwh(obs) == pytest.approx(150.0)
  assert rule.n_train(obs) == 1  # 200 > 150: a dirty hour
  assert rule.n_train(_obs(ci_g_per_kwh=150.0, ci_history=history,
                           ci_forecast=obs.ci_forecast)) == 4  # at the threshold: clean
  # Without a forecast, the history alone: median of {100, 300, 200} = 200 -> clean.
  assert rule.n_train(_obs(ci_g_per_kwh=200.0, ci_history=history)) == 4
  assert QuantileRule(n_clean=12).n_train(_obs()) <= 8  # clipped to the pool
  with pytest.raises(ValueError, match="quantile"):
    QuantileRule(quantile=1.0)


def test_residual_actions_can_adjust_the_quantile_rule():
  config = AgentConfig(mode="repaired", action_mode="residual", residual_base="quantile")
  history = np.full(24, 300.0)
  clean, dirty = _obs(ci_g_per_kwh=100.0, ci_history=history), _obs(ci_g_per_kwh=400.0, ci_history=history)
  rule = QuantileRule()
  assert (rule.n_train(clean), rule.n_train(dirty)) == (4, 1)
  assert aa.action_to_allocation(config, 3, clean) == Allocation(4, 1)  # delta 0: the rule itself
  assert aa.action_to_allocation(config, 6, clean) == Allocation(7, 1)
  assert aa.action_to_allocation(config, 0, dirty) == Allocation(0, 1)  # 1 - 3 clipped to 0
  with pytest.raises(ValueError, match="residual_base"):
    AgentConfig(mode="repaired", action_mode="residual", residual_base="other")


def test_faithful_features_reproduce_the_official_quirks():
  config = AgentConfig(mode="faithful")
  hv0 = 2821.26
  f = aa.features(config, _obs(hour=0, hv_init=hv0))
  # T_rem / 40 (not / 80): 2.0 at the start; ci scaled by the reference range, centred; the HV
  # after initialization (obs.hv = 3000 is ignored); the raw count of evaluated architectures.
  np.testing.assert_allclose(f, [2.0, (200.0 - 100.0) / 400.0 - 0.5, hv0 / 4152.71, 15.0],
                             rtol=1e-6)
  f = aa.features(config, _obs(hour=10, ci_g_per_kwh=500.0, hv=3900.0, hv_init=hv0,
                               n_evaluated=120))
  np.testing.assert_allclose(f, [70.0 / 40.0, 0.5, hv0 / 4152.71, 120.0], rtol=1e-6)
  assert f.dtype == np.float32 and f.shape == (config.obs_dim,)


def test_repaired_features_are_live_and_normalized():
  config = AgentConfig(mode="repaired", use_forecast=True)
  fc = np.array([300.0, 100.0, 200.0, 400.0])
  f = aa.features(config, _obs(hour=20, hv=3000.0, hv_prev=2900.0, ci_forecast=fc))
  expect = [1.0 - 20 / 80, -0.25, 3000.0 / 4152.71, 0.15, 10.0 * 100.0 / 4152.71, 0.4,
            (250.0 - 200.0) / 400.0, 0.25, (100.0 - 200.0) / 400.0]
  np.testing.assert_allclose(f, expect, rtol=1e-6)
  with pytest.raises(ValueError, match="forecast"):
    aa.features(config, _obs(ci_forecast=None))


def test_reward_on_hand_numbers():
  obs = _obs(hour=3, max_hv=4150.0, ci_ref_max=500.0)
  outcome = Outcome(hv_gain=41.5, carbon_g=2400.0, n_finished=3)
  # Faithful: t = 4 of a 40 h budget -> 20 x 0.01 x (0.8 x 0.1 + 0.8) = 0.176; carbon per GPU
  # 2400 / 8 = 300 at beta = 2 / 500 -> 1.2; 0.05 x 3 finished = 0.15.
  assert aa.reward(AgentConfig(mode="faithful"), obs, outcome) == pytest.approx(0.176 - 1.2 + 0.15)
  # The repaired mode scales time by the real horizon (80 h): 20 x 0.01 x (0.8 x 0.05 + 0.8) = 0.168.
  assert aa.reward(AgentConfig(mode="repaired"), obs, outcome) == pytest.approx(0.168 - 1.2 + 0.15)
  # Carbon is converted to the official unit (GPU-hours x gCO2/kWh) by the GPU power in kW.
  c300 = AgentConfig(mode="faithful", reward_gpu_power_kw=0.3)
  assert aa.reward(c300, obs, outcome) == pytest.approx(0.176 - 1.2 / 0.3 + 0.15)


def test_progress_reward_prices_carbon_against_the_remaining_gap():
  obs = _obs(hv=4000.0, max_hv=4150.0, ci_ref_max=500.0)
  cfg = AgentConfig(mode="repaired", reward_mode="progress", carbon_price=0.2)
  # Gap 150 -> 75: one halving (ln 2); carbon per GPU 2400 / 8 = 300 of 500 -> 0.2 x 0.6 = 0.12.
  r = aa.reward(cfg, obs, Outcome(hv_gain=75.0, carbon_g=2400.0, n_finished=3))
  assert r == pytest.approx(np.log(2.0) - 0.12)
  # Halving a small gap is worth as much as halving a large one; nothing is paid per finished job.
  late = aa.reward(cfg, _obs(hv=4149.0, max_hv=4150.0, ci_ref_max=500.0),
                   Outcome(hv_gain=0.5, carbon_g=0.0, n_finished=0))
  assert late == pytest.approx(np.log(2.0))
  # The gap is floored (gap_floor x max HV), so reaching the maximum gives a finite reward.
  top = aa.reward(cfg, _obs(hv=4149.0, max_hv=4150.0), Outcome(hv_gain=1.0, carbon_g=0.0,
                                                               n_finished=1))
  assert top == pytest.approx(np.log(1.0 / (1e-4 * 4150.0)))
  with pytest.raises(ValueError, match="reward_mode"):
    AgentConfig(reward_mode="greedy")


def test_an_entropy_weight_passed_to_update_overrides_the_config():
  agent = aa.init_agent(SMALL, jax.random.key(0))
  feats = jnp.ones(SMALL.obs_dim, jnp.float32)
  args = (feats, jnp.int32(1), jnp.float32(0.0), feats, jnp.float32(1.0))
  _, m_cfg = aa.update(SMALL, agent, *args)
  _, m_same = aa.update(SMALL, agent, *args, jnp.float32(SMALL.entropy_weight))
  _, m_zero = aa.update(SMALL, agent, *args, jnp.float32(0.0))
  assert float(m_same["actor_loss"]) == pytest.approx(float(m_cfg["actor_loss"]))
  # Actor loss = -logp * adv - w H: with w = 0 only the advantage term is left.
  assert float(m_zero["actor_loss"]) - float(m_cfg["actor_loss"]) == pytest.approx(
      SMALL.entropy_weight * float(m_cfg["entropy"]), rel=1e-5)


# One small repaired-mode configuration shared by the tests that compile ``act`` / ``update`` (each
# distinct configuration is a static argument and compiles once).
SMALL = AgentConfig(mode="repaired", n_gpus=4, hidden=(32, 32), use_forecast=False)


def test_repaired_agent_learns_a_two_armed_bandit():
  agent = aa.init_agent(SMALL, jax.random.key(0))
  feats = jnp.asarray(np.array([1.0, 0.1, 0.7, 0.2, 0.0, 0.3], np.float32))

  def probs(agent):
    return np.asarray(aa.act(SMALL, agent, feats, jax.random.key(0))[2])

  good, bad = 3, 1
  p0 = probs(agent)
  for _ in range(40):  # the same state; the good arm pays 1, the bad arm 0 (terminal transitions)
    agent, metrics = aa.update(SMALL, agent, feats, jnp.int32(good), jnp.float32(1.0), feats,
                               jnp.float32(1.0))
    agent, metrics = aa.update(SMALL, agent, feats, jnp.int32(bad), jnp.float32(0.0), feats,
                               jnp.float32(1.0))
  p1 = probs(agent)
  assert p1.sum() == pytest.approx(1.0, abs=1e-5)
  assert p1[good] > p0[good] + 0.05
  assert p1[bad] < p0[bad] - 0.03
  # The critic has learnt the mean payoff: the bad arm's advantage is negative.
  assert float(metrics["advantage"]) < -0.2


def test_repaired_agent_policy_depends_on_its_state():
  """The repaired-mode policy reacts to the carbon intensity in its state."""
  config = AgentConfig(mode="repaired", use_forecast=False)
  agent = aa.init_agent(config, jax.random.key(3))
  # A large initial output scale would hide the dependence; grow the head to make it visible.
  actor = jax.tree.map(lambda x: x, agent["actor"])
  head = sorted(actor["params"])[-1]
  actor["params"][head]["kernel"] = actor["params"][head]["kernel"] * 100.0
  agent = dict(agent, actor=actor)
  f1 = jnp.asarray(aa.features(config, _obs(ci_g_per_kwh=120.0)))
  f2 = jnp.asarray(aa.features(config, _obs(ci_g_per_kwh=480.0)))
  _, _, p1 = aa.act(config, agent, f1, jax.random.key(0))
  _, _, p2 = aa.act(config, agent, f2, jax.random.key(0))
  assert float(jnp.max(jnp.abs(p1 - p2))) > 1e-3


def test_all_learning_rates_are_in_the_config():
  config = AgentConfig(mode="repaired", n_gpus=4, hidden=(8,), use_forecast=False,
                       repaired_actor_lr=0.0, repaired_critic_lr=0.0)
  agent = aa.init_agent(config, jax.random.key(0))
  feats = jnp.ones(config.obs_dim, jnp.float32)
  new, _ = aa.update(config, agent, feats, jnp.int32(1), jnp.float32(1.0), feats, jnp.float32(0.0))
  # Zero learning rates: nothing moves.
  for a, b in zip(jax.tree.leaves(agent["actor"]) + jax.tree.leaves(agent["critic"]),
                  jax.tree.leaves(new["actor"]) + jax.tree.leaves(new["critic"])):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="mode"):
    AgentConfig(mode="fixed")  # the strategy of that name is a constant split, not an agent mode


def test_ci_normalization_is_the_observation_s():
  obs = _obs(ci_g_per_kwh=200.0, ci_ref_min=100.0, ci_ref_max=500.0)
  assert obs.ci_norm == pytest.approx(0.25) and obs.ci_span == 400.0
  assert aa.features(AgentConfig(mode="faithful"), obs)[1] == pytest.approx(obs.ci_norm - 0.5)
  flat = _obs(ci_g_per_kwh=300.0, ci_ref_min=300.0, ci_ref_max=300.0)
  assert flat.ci_norm == 0.0 and flat.ci_span == 1e-9


def test_controller_imports_nothing_from_the_cluster():
  import pathlib
  import re

  import cenas_jax.controller

  root = pathlib.Path(cenas_jax.controller.__file__).parent
  for path in root.rglob("*.py"):
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", path.read_text(), re.M)
    assert not [m for m in imports if m.startswith("cenas_jax.cluster")], path
