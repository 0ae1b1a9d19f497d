"""The allocation agent (``cenas_jax.controller.allocation_agent``) as a strategy of the pool.

The agent itself is pure functions over explicit pytrees; this adapter holds its config, acts on the
hour's observation and, unless frozen, makes one actor-critic update per hour from the outcome.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

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
    feats = jnp.asarray(agent_lib.features(self.config, obs))
    # The last hour has no next state: its bootstrap term is masked out by ``done``.
    next_feats = feats if outcome.done else jnp.asarray(agent_lib.features(self.config, next_obs))
    agent, _ = agent_lib.update(self.config, state, feats, jnp.int32(info["action"]),
                                jnp.float32(r), next_feats, jnp.float32(outcome.done),
                                None if self.entropy_weight is None
                                else jnp.float32(self.entropy_weight))
    return agent
