"""What a controller sees of an hour, what it decides, and what came of it.

Controllers (the allocation agent, later an architecture controller) are pure functions over these
plain records; a runner (``cenas_jax.cluster``) builds them from its own state. Nothing here knows
about the runner.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Smallest reference range (gCO2eq/kWh) used to scale intensities; a flat range scales to 0.
_MIN_SPAN = 1e-9


@dataclasses.dataclass(frozen=True)
class Allocation:
  """GPUs per role for one hour; ``n_gpus - n_train - n_sample`` are released (not held)."""

  n_train: int
  n_sample: int

  @classmethod
  def releasing(cls, n_train: int, n_gpus: int) -> "Allocation":
    """``n_train`` GPUs train and, while any GPU is left, one samples (to keep proposals
    flowing); the rest is released."""
    return cls(n_train, min(n_gpus - n_train, 1))


@dataclasses.dataclass(frozen=True)
class Observation:
  """What a controller sees at the start of an hour.

  Attributes:
    hour: index of the coming hour, 0-based.
    hours_total: length of the search (h).
    n_gpus: GPUs the search may hold.
    ci_g_per_kwh: carbon intensity of the coming hour (gCO2eq/kWh), the value that will be charged.
    ci_history: the trailing hours up to and including the coming hour (gCO2eq/kWh).
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
  def ci_span(self) -> float:
    """Width of the reference range (gCO2eq/kWh), at least 1e-9."""
    return max(self.ci_ref_max - self.ci_ref_min, _MIN_SPAN)

  @property
  def ci_norm(self) -> float:
    """The coming hour's intensity scaled by the reference range: 0 at its minimum, 1 at its
    maximum (not clipped; the one intensity normalization every controller uses)."""
    return (self.ci_g_per_kwh - self.ci_ref_min) / self.ci_span


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happened in the hour (the inputs of learning).

  Attributes:
    hv_gain: hypervolume gained this hour.
    carbon_g: carbon charged this hour under the reward's accounting (g).
    n_finished: architectures whose training finished this hour.
    done: the hour was the episode's last (no next observation follows).
  """

  hv_gain: float
  carbon_g: float
  n_finished: int
  done: bool = False


def intensity_rule_n_train(obs: Observation, min_train: int, max_train: int) -> int:
  """The heuristic's rule: ``round(min_train + (max_train - min_train) (1 - ci_norm))`` training
  GPUs, clipped to the pool (the ``heuristic`` strategy, and the base a residual agent adjusts)."""
  n = int(round(min_train + (max_train - min_train) * (1.0 - obs.ci_norm)))
  return int(min(max(n, 0), obs.n_gpus))


@dataclasses.dataclass(frozen=True)
class QuantileRule:
  """Train on ``n_clean`` GPUs when the coming hour's intensity is at or below the ``quantile`` of
  the intensity over the last ``hours`` and the forecast next ``hours``, else on ``n_dirty``.

  An online stand-in for the oracle's threshold schedules, which take their quantile over the whole
  window, future included; here only the trailing history and the forecast the observation carries
  (the history alone when it has none). The ``online_threshold`` strategy, and the other base a
  residual agent can adjust.
  """

  quantile: float = 0.5
  n_clean: int = 4
  n_dirty: int = 1
  hours: int = 24

  def __post_init__(self):
    if not 0 < self.quantile < 1 or self.hours < 1 or min(self.n_clean, self.n_dirty) < 0:
      raise ValueError(f"QuantileRule needs 0 < quantile < 1, hours >= 1 and GPU counts >= 0: {self}")

  def threshold_g_per_kwh(self, obs: Observation) -> float:
    window = np.asarray(obs.ci_history, dtype=np.float64)[-self.hours:]
    if obs.ci_forecast is not None:
      window = np.concatenate([window, np.asarray(obs.ci_forecast, np.float64)[:self.hours]])
    return float(np.quantile(window, self.quantile))

  def n_train(self, obs: Observation) -> int:
    n = self.n_clean if obs.ci_g_per_kwh <= self.threshold_g_per_kwh(obs) else self.n_dirty
    return int(min(n, obs.n_gpus))
