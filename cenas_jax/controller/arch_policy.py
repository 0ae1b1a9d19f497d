"""The architecture controller: a factorized categorical policy trained by REINFORCE.

``pi(a) = prod_i softmax(theta_i)[a_i]``, one categorical per decision of a search space (padded to
the largest number of choices; padded choices have probability 0), as a ``distrax.Categorical`` with
batch shape ``(n_decisions,)``. Rewards (``reward``), with ``Q`` the quality of an architecture on a
validation batch (accuracy; ``1 - RMSE`` of the standardized target for regression) and ``E`` its
predicted inference energy:

- ``accuracy``: ``r = Q`` (conventional, accuracy-only NAS).
- ``tunas``: TuNAS absolute reward ``r = Q + beta |E / E0 - 1|`` (beta < 0; Bender et al. 2020).
- ``mnasnet``: ``r = Q (E / E0)^w`` (w = -0.07; Tan et al. 2019, the paper's code's form).
- ``tabnas``: rejection sampling (Yang et al. 2022): architectures with ``E > E0`` are dropped
  before any step; the update is ``grad log(pi(a) / P(V)) (Q - b)``, where the feasible mass
  ``P(V)`` is estimated from ``N`` Monte-Carlo samples ``z_j ~ pi`` and differentiated through
  ``P(V) ~= mean_j 1[E(z_j) <= E0] pi(z_j) / stop_gradient(pi(z_j))``.

The baseline ``b`` is either a moving average of the mean reward across steps (``ema``, momentum
``baseline_momentum``; TuNAS, TabNAS) or, per candidate, the mean reward of the step's other K - 1
candidates (``loo``, leave-one-out / RLOO: ``b_k = (sum_j r_j - r_k) / (K - 1)``, unbiased because
``b_k`` does not depend on ``a_k``). The K candidates of a step share one validation batch, so
``loo`` removes that batch's difficulty from every advantage, which a baseline averaged over past
steps cannot. The logits are updated with Adam. Everything is a pure function over an explicit pytree
(``init_policy``, ``sample``, ``log_prob``, ``update``); ``sample`` and ``update`` are jitted.
This module imports nothing from ``cenas_jax.cluster``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.errors import ConfigError

REWARDS = ("accuracy", "tunas", "mnasnet", "tabnas")
BASELINES = ("ema", "loo")
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Controller hyper-parameters (TuNAS / TabNAS-like defaults).

  Attributes:
    reward: one of ``REWARDS``.
    lr: Adam learning rate of the logits.
    baseline: ``ema`` (moving average across steps) or ``loo`` (leave-one-out within a step).
    baseline_momentum: moving-average momentum of the ``ema`` baseline.
    beta: TuNAS cost weight (< 0).
    mnas_w: MnasNet exponent (< 0).
    entropy_weight: entropy bonus (0: none).
  """

  reward: str = "tabnas"
  lr: float = 5e-2
  baseline: str = "ema"
  baseline_momentum: float = 0.9
  beta: float = -0.5
  mnas_w: float = -0.07
  entropy_weight: float = 0.0

  def __post_init__(self):
    if self.reward not in REWARDS:
      raise ConfigError("reward", f"must be one of {REWARDS}, got {self.reward!r}.")
    if self.baseline not in BASELINES:
      raise ConfigError("baseline", f"must be one of {BASELINES}, got {self.baseline!r}.")
    if self.beta >= 0:
      raise ConfigError("beta", f"the TuNAS cost weight must be negative, got {self.beta}.")
    if not 0 <= self.baseline_momentum < 1:
      raise ConfigError("baseline_momentum", f"must be in [0, 1), got {self.baseline_momentum}.")


def _valid(n_choices: np.ndarray) -> np.ndarray:
  n_choices = np.asarray(n_choices)
  return np.arange(int(n_choices.max()))[None, :] < n_choices[:, None]


def init_policy(config: PolicyConfig, n_choices: np.ndarray) -> dict[str, Any]:
  """Uniform policy over the decisions with ``n_choices`` choices each."""
  valid = jnp.asarray(_valid(n_choices))
  logits = jnp.zeros(valid.shape, jnp.float32)
  return {"logits": logits, "valid": valid,
          "opt_state": optax.adam(config.lr).init(logits),
          "baseline": jnp.zeros((), jnp.float32), "has_baseline": jnp.zeros((), bool),
          "step": jnp.zeros((), jnp.int32)}


def distribution(logits: jax.Array, valid: jax.Array) -> distrax.Categorical:
  return distrax.Categorical(logits=jnp.where(valid, logits, _NEG))


def log_prob(logits: jax.Array, valid: jax.Array, archs: jax.Array) -> jax.Array:
  """``log pi(a)`` of each architecture, (K,) for archs (K, n_decisions)."""
  return jnp.sum(distribution(logits, valid).log_prob(archs), axis=-1)


@functools.partial(jax.jit, static_argnums=2)
def sample(policy: dict[str, Any], key: jax.Array, n: int) -> jax.Array:
  """``n`` architectures from the policy, int32 (n, n_decisions)."""
  return distribution(policy["logits"], policy["valid"]).sample(seed=key, sample_shape=(n,)).astype(
      jnp.int32)


def greedy(policy: dict[str, Any]) -> np.ndarray:
  """The most probable architecture (argmax of every decision)."""
  return np.asarray(jnp.argmax(jnp.where(policy["valid"], policy["logits"], _NEG), axis=-1),
                    np.int32)


def reward(config: PolicyConfig, quality: np.ndarray, energy_j: np.ndarray,
           e0_j: float) -> np.ndarray:
  """The reward of each candidate (numpy; TabNAS's is the quality, its constraint acts elsewhere)."""
  q, e = np.asarray(quality, np.float64), np.asarray(energy_j, np.float64)
  if config.reward == "tunas":
    return q + config.beta * np.abs(e / e0_j - 1.0)
  if config.reward == "mnasnet":
    return q * (e / e0_j) ** config.mnas_w
  return q


def _update(config: PolicyConfig, policy: dict[str, Any], archs: jax.Array, rewards: jax.Array,
            mc_archs: jax.Array, mc_feasible: jax.Array) -> tuple[dict[str, Any], dict]:
  b = jnp.where(policy["has_baseline"], policy["baseline"], jnp.mean(rewards))
  k = rewards.shape[0]
  if config.baseline == "loo" and k > 1:
    # r_k - (sum_j r_j - r_k) / (K - 1) = K / (K - 1) (r_k - mean r), computed on rewards
    # centred on one candidate so that equal rewards give exactly zero advantages: Adam is
    # scale-free and would turn rounding noise into a full step.
    c = rewards - rewards[0]
    adv = k / (k - 1) * (c - jnp.mean(c))
  else:  # one candidate has no others to compare with: the moving average serves
    adv = rewards - b
  valid = policy["valid"]

  def loss(logits):
    lp = log_prob(logits, valid, archs)
    if config.reward == "tabnas":
      mc_lp = log_prob(logits, valid, mc_archs)
      ratio = jnp.exp(mc_lp - jax.lax.stop_gradient(mc_lp))
      p_hat = jnp.mean(mc_feasible.astype(jnp.float32) * ratio)
      lp = lp - jnp.log(jnp.maximum(p_hat, 1.0 / mc_archs.shape[0]))
    ent = jnp.sum(distribution(logits, valid).entropy())
    return -jnp.mean(adv * lp) - config.entropy_weight * ent

  value, grads = jax.value_and_grad(loss)(policy["logits"])
  updates, opt_state = optax.adam(config.lr).update(grads, policy["opt_state"], policy["logits"])
  m = config.baseline_momentum
  new = dict(policy, logits=optax.apply_updates(policy["logits"], updates), opt_state=opt_state,
             baseline=m * b + (1 - m) * jnp.mean(rewards), has_baseline=jnp.ones((), bool),
             step=policy["step"] + 1)
  return new, {"loss": value, "baseline": b, "mean_reward": jnp.mean(rewards)}


_jit_update = jax.jit(_update, static_argnums=0)


def update(config: PolicyConfig, policy: dict[str, Any], archs: np.ndarray, rewards: np.ndarray,
           mc_archs: np.ndarray | None = None,
           mc_feasible: np.ndarray | None = None) -> tuple[dict[str, Any], dict]:
  """One REINFORCE step on the candidates ``archs`` (K, n_decisions) with ``rewards`` (K,).

  For ``tabnas``, ``mc_archs`` (N, n_decisions) are fresh samples of the current policy and
  ``mc_feasible`` (N,) whether each is within the energy budget.
  """
  archs = jnp.asarray(archs, jnp.int32)
  if mc_archs is None:
    mc_archs, mc_feasible = archs, jnp.ones(archs.shape[0], bool)
  return _jit_update(config, policy, archs, jnp.asarray(rewards, jnp.float32),
                     jnp.asarray(mc_archs, jnp.int32), jnp.asarray(mc_feasible, bool))
