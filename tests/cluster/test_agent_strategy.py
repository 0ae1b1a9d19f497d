"""Tests of the allocation agent as a strategy of the pool (``cluster.agent_strategy``)."""

from __future__ import annotations

import dataclasses

import jax
import pytest
import numpy as np

from cenas_jax.cluster.agent_strategy import AgentStrategy
from cenas_jax.controller import allocation_agent as aa
from cenas_jax.controller.allocation_agent import AgentConfig
from cenas_jax.controller.types import Observation, Outcome


def _obs(**kw) -> Observation:
  base = dict(hour=0, hours_total=80, n_gpus=8, ci_g_per_kwh=200.0,
              ci_history=np.array([150.0, 200.0]), ci_forecast=None, ci_ref_min=100.0,
              ci_ref_max=500.0, hv=3000.0, hv_prev=2900.0, hv_init=2821.26, max_hv=4152.71,
              n_evaluated=15, n_queued=4)
  base.update(kw)
  return Observation(**base)


# The same small configuration as the controller's tests (compiled once per process).
SMALL = AgentConfig(mode="repaired", n_gpus=4, hidden=(32, 32), use_forecast=False)


def test_faithful_strategy_acts_within_the_official_range():
  config = AgentConfig(mode="faithful", hidden=(8,))
  strategy = AgentStrategy(config=config)
  state = strategy.init(jax.random.key(0))
  seen = set()
  for hour in range(12):
    state2, alloc, info = strategy.act(state, _obs(hour=hour), jax.random.key(hour))
    assert state2 is state  # acting does not change the agent
    assert 1 <= alloc.n_train <= 7 and alloc.n_train + alloc.n_sample == 8
    assert alloc == aa.action_to_allocation(config, info["action"])
    assert info["logp"] < 0.0
    seen.add(info["action"])
  assert len(seen) > 1  # a fresh policy is stochastic


def test_update_is_compiled_once_across_calls():
  strategy = AgentStrategy(config=SMALL)
  state = strategy.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  sizes = []
  for hour in range(5):
    obs = _obs(hour=hour, n_gpus=4, ci_g_per_kwh=float(rng.uniform(100, 500)),
               hv=3000.0 + 10 * hour, n_evaluated=15 + hour)
    nxt = _obs(hour=hour + 1, n_gpus=4, hv=3010.0 + 10 * hour, n_evaluated=16 + hour)
    state, alloc, info = strategy.act(state, obs, jax.random.key(hour))
    assert alloc.n_train + alloc.n_sample <= 4
    state = strategy.learn(state, obs, info, Outcome(hv_gain=10.0 * hour, carbon_g=500.0 * hour,
                                                     n_finished=hour), nxt)
    sizes.append((aa.act._cache_size(), aa.update._cache_size()))
  # Different observations, rewards and actions (Python floats and ints on the way in) reuse the
  # executables compiled in the first hour.
  assert sizes[0][0] >= 1 and sizes[0][1] >= 1
  assert all(s == sizes[0] for s in sizes), sizes


def test_frozen_agent_does_not_learn():
  agent = aa.init_agent(SMALL, jax.random.key(0))
  strategy = AgentStrategy(config=dataclasses.replace(SMALL, frozen=True), init_params=agent)
  state = strategy.init(jax.random.key(1))
  assert state is agent  # deploys the given parameters
  after = strategy.learn(state, _obs(n_gpus=4), {"action": 2}, Outcome(1.0, 1.0, 1),
                         _obs(hour=1, n_gpus=4))
  assert after is state


def test_learns_and_the_episode_end():
  strategy = AgentStrategy(config=SMALL)
  assert strategy.learns and not AgentStrategy(dataclasses.replace(SMALL, frozen=True)).learns
  state = strategy.init(jax.random.key(0))
  state, _, info = strategy.act(state, _obs(n_gpus=4), jax.random.key(1))
  # The last hour has no next observation; its update does not bootstrap.
  end = strategy.learn(state, _obs(n_gpus=4), info, Outcome(1.0, 10.0, 1, done=True), None)
  feats = jax.numpy.asarray(aa.features(SMALL, _obs(n_gpus=4)))
  r = aa.reward(SMALL, _obs(n_gpus=4), Outcome(1.0, 10.0, 1, done=True))
  want, _ = aa.update(SMALL, state, feats, jax.numpy.int32(info["action"]), jax.numpy.float32(r),
                      feats, jax.numpy.float32(1.0))
  for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_n_step_updates_each_hour_once_with_its_n_step_return(monkeypatch):
  # Hours 0..4, the last one ends the episode, n = 3: hour t is updated at hour t + 2 with the
  # return r_t + g r_{t+1} + g^2 r_{t+2} bootstrapped from hour t + 3's state (discount g^3); the
  # last hour updates the hours still waiting with what is left of the episode, no bootstrap.
  config = dataclasses.replace(SMALL, n_step=3)
  strategy = AgentStrategy(config=config)
  calls = []

  def fake_update(cfg, agent, feats, action, r, next_feats, done, ent, discount):
    calls.append((float(feats[0]), int(action), float(r), float(next_feats[0]), float(done),
                  float(discount)))
    return agent, {}

  monkeypatch.setattr(aa, "update", fake_update)
  state = strategy.init(jax.random.key(0))
  g = config.gamma
  rewards = []
  for hour in range(5):
    obs = _obs(hour=hour, n_gpus=4, hv=3000.0 + 10 * hour)
    nxt = None if hour == 4 else _obs(hour=hour + 1, n_gpus=4, hv=3010.0 + 10 * hour)
    outcome = Outcome(hv_gain=10.0, carbon_g=100.0 * (hour + 1), n_finished=hour, done=hour == 4)
    rewards.append(aa.reward(config, obs, outcome))
    state = strategy.learn(state, obs, {"action": hour % 3}, outcome, nxt)
    assert int(state["pending"]["count"]) == (min(hour + 1, 2) if hour < 4 else 0)
  t_rem = lambda h: aa.features(config, _obs(hour=h, n_gpus=4))[0]  # noqa: E731
  ret = lambda t, n: sum(g ** i * rewards[t + i] for i in range(n))  # noqa: E731
  expected = [(t_rem(0), 0, ret(0, 3), t_rem(3), 0.0, g ** 3),
              (t_rem(1), 1, ret(1, 3), t_rem(4), 0.0, g ** 3),
              (t_rem(2), 2, ret(2, 3), t_rem(4), 1.0, g ** 3),
              (t_rem(3), 0, ret(3, 2), t_rem(4), 1.0, g ** 2),
              (t_rem(4), 1, ret(4, 1), t_rem(4), 1.0, g)]
  assert len(calls) == len(expected)
  for got, want in zip(calls, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_n_step_agent_compiles_once_and_is_refused_in_the_official_mode():
  config = dataclasses.replace(SMALL, n_step=4)
  strategy = AgentStrategy(config=config)
  state = strategy.init(jax.random.key(0))
  sizes = []
  for hour in range(8):
    obs = _obs(hour=hour, n_gpus=4, hv=3000.0 + 10 * hour)
    done = hour == 7
    state, _, info = strategy.act(state, obs, jax.random.key(hour))
    state = strategy.learn(state, obs, info, Outcome(5.0, 50.0, 1, done=done),
                           None if done else _obs(hour=hour + 1, n_gpus=4))
    sizes.append(aa.update._cache_size())
  assert sizes[3] >= 1 and sizes[-1] == sizes[3]  # the tail's shorter returns reuse it
  with pytest.raises(ValueError, match="n_step"):
    AgentConfig(mode="faithful", n_step=2)
