"""Allocation strategies: how many GPUs train and how many sample, hour by hour.

A strategy is a small object with pure methods over an explicit state pytree:

- ``init(key) -> state``;
- ``act(state, obs, key) -> (state, Allocation, info)``: the allocation for the coming hour;
- ``learn(state, obs, info, outcome, next_obs) -> state``: called after the hour (only strategies
  with ``learns`` do anything; ``outcome.done`` marks the episode's last hour, whose ``next_obs`` is
  None).

``Observation`` (``cenas_jax.controller.types``) is everything a strategy may look at when it
decides; strategies that use the future (``oracle``, a perfect forecast) say so in their name and
docstring. The allocation agent's adapter is ``cenas_jax.cluster.agent_strategy``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from cenas_jax.controller.types import (Allocation, Observation, Outcome, QuantileRule,
                                        intensity_rule_n_train)

__all__ = ["Allocation", "Observation", "Outcome", "Strategy", "Vanilla", "OneShot", "Fixed",
           "Heuristic", "Threshold", "OnlineThreshold"]


class Strategy(Protocol):
  name: str
  trains: bool  # False for strategies that never train (one-shot only)
  learns: bool  # True when ``learn`` changes the state (it is then checkpointed every hour)

  def init(self, key) -> Any: ...

  def act(self, state, obs: Observation, key) -> tuple[Any, Allocation, dict]: ...

  def learn(self, state, obs: Observation, info: dict, outcome: Outcome,
            next_obs: Observation | None) -> Any: ...


class _Stateless:
  trains = True
  learns = False

  def init(self, key):
    del key
    return {}

  def learn(self, state, obs, info, outcome, next_obs):
    del obs, info, outcome, next_obs
    return state


@dataclasses.dataclass(frozen=True)
class Vanilla(_Stateless):
  """Every GPU trains LaMOO's proposals (no supernet screening); vanilla NAS."""

  name: str = "vanilla"

  def act(self, state, obs, key):
    del key
    return state, Allocation(obs.n_gpus, 0), {}


@dataclasses.dataclass(frozen=True)
class OneShot(_Stateless):
  """Every GPU samples: LaMOO runs on supernet estimates only, nothing is trained."""

  name: str = "oneshot"
  trains: bool = False

  def act(self, state, obs, key):
    del key
    return state, Allocation(0, obs.n_gpus), {}


@dataclasses.dataclass(frozen=True)
class Fixed(_Stateless):
  """A constant split (e.g. the agent's most frequent choice); useful as an ablation."""

  n_train: int = 1
  n_sample: int = 7
  name: str = "fixed"

  def act(self, state, obs, key):
    del key
    return state, Allocation(self.n_train, self.n_sample), {}


@dataclasses.dataclass(frozen=True)
class Heuristic(_Stateless):
  """The evaluation share falls linearly as normalized carbon intensity rises.

  ``n_train = round(min_train + (max_train - min_train) * (1 - ci_norm))`` with ``obs.ci_norm`` the
  current intensity scaled by the observation's reference range (the min and max of the trailing
  history, known online, unless the runner sets another); the rest sample.
  """

  min_train: int = 1
  max_train: int = 7
  name: str = "heuristic"

  def act(self, state, obs, key):
    del key
    n_train = intensity_rule_n_train(obs, self.min_train, self.max_train)
    return state, Allocation(n_train, obs.n_gpus - n_train), {}


@dataclasses.dataclass(frozen=True)
class Threshold(_Stateless):
  """Train on ``n_hi`` GPUs in hours at or below ``threshold_g_per_kwh``, else on ``n_lo``.

  With ``release`` the GPUs that do not train are released instead of sampling (except
  ``n_sample_min``, which keep proposals flowing). The oracle searches over these schedules with the
  whole trace known in advance.
  """

  threshold_g_per_kwh: float
  n_hi: int = 8
  n_lo: int = 1
  n_sample_min: int = 1
  release: bool = True
  name: str = "threshold"

  def act(self, state, obs, key):
    del key
    n_train = self.n_hi if obs.ci_g_per_kwh <= self.threshold_g_per_kwh else self.n_lo
    n_train = min(n_train, obs.n_gpus)
    rest = obs.n_gpus - n_train
    n_sample = min(rest, self.n_sample_min) if self.release else rest
    return state, Allocation(n_train, n_sample), {}


@dataclasses.dataclass(frozen=True)
class OnlineThreshold(_Stateless):
  """The oracle's kind of schedule with only what is known online: ``rule`` (a ``QuantileRule``)
  sets the training GPUs from the trailing and forecast intensity; one GPU keeps sampling while
  anything is released, the rest is released."""

  rule: QuantileRule = QuantileRule()
  name: str = "online_threshold"

  def act(self, state, obs, key):
    del key
    n_train = self.rule.n_train(obs)
    return state, Allocation.releasing(n_train, obs.n_gpus), {}
