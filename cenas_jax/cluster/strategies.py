"""Allocation strategies: how many GPUs train and how many sample, hour by hour.

A strategy is a small object with pure methods over an explicit state pytree:

- ``init(key) -> state``;
- ``act(state, obs, key) -> (state, Allocation, info)``: the allocation for the coming hour;
- ``learn(state, obs, info, outcome, next_obs) -> state``: called after the hour (only learning
  strategies do anything).

``Observation`` is everything a strategy may look at when it decides; strategies that use the future
(``oracle``, a perfect forecast) say so in their name and docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class Allocation:
  """GPUs per role for one hour; ``n_gpus - n_train - n_sample`` are released (not held)."""

  n_train: int
  n_sample: int


@dataclasses.dataclass(frozen=True)
class Observation:
  """What a strategy sees at the start of an hour.

  Attributes:
    hour: index of the coming hour, 0-based.
    hours_total: length of the search (h).
    n_gpus: GPUs the search may hold.
    ci_g_per_kwh: carbon intensity of the coming hour (gCO2eq/kWh), the value that will be charged.
    ci_history: the trailing ``history`` hours up to and including the coming hour (gCO2eq/kWh).
    ci_forecast: the next hours' intensity (P50) as forecast, starting at the coming hour, or None.
    ci_ref_min: reference minimum intensity used to normalize (gCO2eq/kWh).
    ci_ref_max: reference maximum intensity used to normalize (gCO2eq/kWh).
    hv: hypervolume reached so far; hv_prev: the hour before; hv_init: after the initial random
      evaluations; max_hv: of the whole space.
    n_evaluated: architectures trained so far (including the initial ones).
    n_queued: jobs waiting (fresh + carried over).
  """

  hour: int
  hours_total: int
  n_gpus: int
  ci_g_per_kwh: float
  ci_history: np.ndarray
  ci_forecast: np.ndarray | None
  ci_ref_min: float
  ci_ref_max: float
  hv: float
  hv_prev: float
  hv_init: float
  max_hv: float
  n_evaluated: int
  n_queued: int

  @property
  def ci_norm(self) -> float:
    """Current intensity scaled to [0, 1] by the reference min/max (clipped)."""
    span = max(self.ci_ref_max - self.ci_ref_min, 1e-9)
    return float(np.clip((self.ci_g_per_kwh - self.ci_ref_min) / span, 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happened in the hour (inputs to learning strategies).

  Attributes:
    hv_gain: hypervolume gained this hour.
    carbon_g: carbon charged this hour under the strategy's accounting (g).
    n_finished: architectures whose training finished this hour.
  """

  hv_gain: float
  carbon_g: float
  n_finished: int


class Strategy(Protocol):
  name: str
  trains: bool  # False for strategies that never train (one-shot only)

  def init(self, key) -> Any: ...

  def act(self, state, obs: Observation, key) -> tuple[Any, Allocation, dict]: ...

  def learn(self, state, obs: Observation, info: dict, outcome: Outcome,
            next_obs: Observation) -> Any: ...


class _Stateless:
  trains = True

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

  ``n_train = round(min_train + (max_train - min_train) * (1 - ci_norm))`` with ``ci_norm`` the current
  intensity scaled by the min and max of the trailing history (known online); the rest sample.
  """

  min_train: int = 1
  max_train: int = 7
  name: str = "heuristic"

  def act(self, state, obs, key):
    del key
    lo, hi = float(np.min(obs.ci_history)), float(np.max(obs.ci_history))
    x = 0.5 if hi <= lo else (obs.ci_g_per_kwh - lo) / (hi - lo)
    n_train = int(round(self.min_train + (self.max_train - self.min_train) * (1.0 - x)))
    n_train = int(np.clip(n_train, 0, obs.n_gpus))
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
