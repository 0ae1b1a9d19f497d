"""The allocation agent (``cenas_jax.controller.allocation_agent``) as a strategy of the pool.

The agent itself is pure functions over explicit pytrees; this adapter holds its config, acts on the
hour's observation and, unless frozen, makes one actor-critic update per hour from the outcome. With
``n_step = n > 1`` the update of hour t waits for hour t + n, whose state bootstraps the return of
the n rewards between; the transitions waiting live in the agent's ``pending`` buffer (so they are
checkpointed with it), and the episode's last hour updates every one still waiting, without a
bootstrap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from cenas_jax.controller import allocation_agent as agent_lib
from cenas_jax.controller.types import Observation, Outcome


@dataclasses.dataclass(frozen=True)
class AgentStrategy:
  """The ``cenas`` strategy: the agent decides, and (unless frozen) learns online every hour.

  State pytree: the agent (``init_agent``); ``init_params`` deploys pre-trained parameters.
  """

  config: agent_lib.AgentConfig = agent_lib.AgentConfig()
  init_params: Any = None
  name: str = "cenas"
  trains: bool = True
  entropy_weight: float | None = None  # overrides the config's (a pre-training schedule sets it)

  @property
  def learns(self) -> bool:
    """Whether the state changes during an episode (a frozen, deployed agent's does not)."""
    return not self.config.frozen

  def init(self, key):
    return self.init_params if self.init_params is not None else agent_lib.init_agent(self.config, key)

  def act(self, state, obs: Observation, key):
    a, logp, _ = agent_lib.act(self.config, state, jnp.asarray(agent_lib.features(self.config, obs)),
                               key)
    return state, agent_lib.action_to_allocation(self.config, int(a), obs), {"action": int(a),
                                                                        "logp": float(logp)}

  def learn(self, state, obs: Observation, info: dict, outcome: Outcome,
            next_obs: Observation | None):
    if self.config.frozen:
      return state
    r = agent_lib.reward(self.config, obs, outcome)
    feats = agent_lib.features(self.config, obs)
    # The last hour has no next state: its bootstrap term is masked out by ``done``.
    next_feats = feats if outcome.done else agent_lib.features(self.config, next_obs)
    if self.config.n_step == 1:
      return self._update(state, feats, info["action"], r, next_feats, outcome.done, 1)
    pend = state["pending"]
    count = int(pend["count"])
    fs = np.concatenate([np.asarray(pend["feats"])[:count], feats[None]])
    acts = np.append(np.asarray(pend["action"])[:count], info["action"])
    rs = np.append(np.asarray(pend["reward"], np.float64)[:count], r)
    disc = self.config.gamma ** np.arange(len(rs))
    if outcome.done:  # every waiting hour's return ends with the episode
      for i in range(len(rs)):
        state = self._update(state, fs[i], acts[i], float(np.sum(rs[i:] * disc[:len(rs) - i])),
                             next_feats, True, len(rs) - i)
      fs, acts, rs = fs[:0], acts[:0], rs[:0]
    elif len(rs) == self.config.n_step:  # the oldest hour's n rewards are in: bootstrap from now
      state = self._update(state, fs[0], acts[0], float(np.sum(rs * disc)), next_feats, False,
                           len(rs))
      fs, acts, rs = fs[1:], acts[1:], rs[1:]
    # Built as JAX arrays like ``init_agent``'s buffer: numpy leaves would make ``update``, which
    # takes the whole agent, compile a second time.
    empty = agent_lib.empty_pending(self.config)
    k = len(rs)
    return dict(state, pending={
        "feats": empty["feats"].at[:k].set(fs), "action": empty["action"].at[:k].set(acts),
        "reward": empty["reward"].at[:k].set(rs), "count": jnp.int32(k)})

  def _update(self, state, feats, action, r, next_feats, done, horizon):
    agent, _ = agent_lib.update(self.config, state, jnp.asarray(feats, jnp.float32),
                                jnp.int32(action), jnp.float32(r),
                                jnp.asarray(next_feats, jnp.float32), jnp.float32(done),
                                None if self.entropy_weight is None
                                else jnp.float32(self.entropy_weight),
                                None if self.config.n_step == 1
                                else jnp.float32(self.config.gamma ** horizon))
    return agent
