"""The CE-NAS GPU-allocation agent: an advantage actor-critic over hourly allocations.

Two modes (``AgentConfig.mode``):

- ``faithful`` reproduces the official code (``cake-lab/CE-NAS`` ``A3C.py``/``RLnet.py``, see
  ``reference/cenas_lamoo.md`` section 2.4), quirks included: a 4-d state
  ``[T_rem / 40, ci_norm - 0.5, HV_0 / HV_max, N_evaluated]`` whose HV entry is frozen at its initial
  value and whose count is not normalized, while the loop runs 80 h; 10 actions ``a -> n_train =
  max(floor(8 a / 10), 1)``; sigmoid MLPs 100-150-200-100 without biases; RMSprop (actor lr 1e-4,
  critic lr 1e-1, alpha 0.9, eps 1e-10 outside the square root); entropy weight 0.5; one update per
  hour with a one-step return ``R = r``.
- ``repaired`` replaces the saturating sigmoid MLP by a tanh actor-critic (64-64, biases), repairs the
  state (live HV, normalized counts, the last hour's
  HV gain) and adds forecast features (the next 24 h median relative to now, and the rank of the
  current intensity within the next 24 h), uses an n-step critic target
  ``sum_{i<n} gamma^i r_{t+i} + gamma^n V(s_{t+n})`` (``n_step``; 1 is TD(0)), Adam
  (actor lr 3e-4, critic lr 1e-3), and an action space that may release GPUs (``release=True``:
  ``n_train`` in 0..8, one GPU keeps sampling while anything is released).

The reward (``reward_mode``) is the official one by default:
``r = alpha dHV/HV_max (0.8 + 0.8 t / T) - beta C_t + gamma_s n_t`` with ``beta = beta_scale / CI_max``,
``C_t`` the hour's carbon per GPU in the official unit (GPU-hours x gCO2/kWh, i.e. grams at 1 kW per
GPU) and ``n_t`` the architectures finished in the hour. Its progress term shrinks as the front
fills (the last 1% of HV pays 1% of the first) while its carbon term does not, so an agent that
learns it well learns to stop training (measured: WORKSPACE.md section 2).

``action_mode="residual"`` (repaired mode) makes the action an adjustment ``delta`` in
``-residual_max..residual_max`` of the heuristic's rule (``n_train = round(1 + (n - 2)(1 - ci_norm))``,
``controller.types.intensity_rule_n_train``): residual policy learning (Silver et al. 2018,
arXiv:1812.06298). The rule supplies the timing that one-step rewards teach poorly (a training hour
pays its carbon at once and its hypervolume hours later); the agent learns how far to lean from it
given progress, queue and forecast. Released GPUs as in the absolute mode. ``residual_base="quantile"``
adjusts ``controller.types.QuantileRule()`` instead (4 training GPUs in hours at or below the median
of the last and next 24 h, else 1: the oracle's kind of schedule, known online).

``reward_mode="progress"`` prices carbon against the hypervolume still to gain instead:
``r = ln(G_t / G_{t+1}) - carbon_price C_t / CI_max`` with ``G = max(HV_max - HV, gap_floor HV_max)``,
so halving the remaining gap is worth the same at any stage, and one hour of the whole pool training
at the trace's highest intensity costs ``carbon_price`` (in units of e-folds of the gap).

Everything is a pure function of explicit pytrees (``features``, ``reward``, ``init_agent``, ``act``,
``update``); ``act`` and ``update`` are jitted once per config. Observations, allocations and outcomes
are the plain records of ``cenas_jax.controller.types``; the runner's adapter that makes the agent a
strategy of the simulated pool is ``cenas_jax.cluster.agent_strategy``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.controller.types import (Allocation, Observation, Outcome, QuantileRule,
                                        intensity_rule_n_train)

FAITHFUL, REPAIRED = "faithful", "repaired"
MODES = (FAITHFUL, REPAIRED)
REWARDS = ("official", "progress")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Hyper-parameters of the allocation agent (defaults: the official code's, and the repaired mode's
  own where it differs)."""

  mode: str = FAITHFUL
  n_gpus: int = 8
  hidden: tuple[int, ...] = (100, 150, 200, 100)
  repaired_hidden: tuple[int, ...] = (64, 64)
  # Learning rates: RMSprop in the faithful mode (official), Adam in the repaired mode.
  actor_lr: float = 1e-4
  critic_lr: float = 1e-1
  repaired_actor_lr: float = 3e-4
  repaired_critic_lr: float = 1e-3
  rms_decay: float = 0.9
  rms_eps: float = 1e-10
  gamma: float = 0.99
  n_step: int = 1  # repaired mode: the critic target's horizon in hours (1: TD(0))
  entropy_weight: float = 0.5
  # Reward (official constants).
  alpha: float = 20.0
  beta_scale: float = 2.0
  gamma_s: float = 0.05
  reward_gpu_power_kw: float = 1.0  # grams -> official "GPU-hours x gCO2/kWh" unit
  reward_mode: str = "official"  # or "progress" (module docstring)
  carbon_price: float = 0.2
  gap_floor: float = 1e-4
  # Faithful quirks.
  state_budget_hours: float = 40.0
  # Repaired mode.
  release: bool = True
  action_mode: str = "absolute"  # or "residual" (repaired mode; module docstring)
  residual_max: int = 3
  residual_base: str = "intensity"  # or "quantile": the online_threshold strategy's QuantileRule()
  use_forecast: bool = True
  frozen: bool = False  # deploy a trained agent without further updates
  greedy: bool = False  # act by the most probable action instead of sampling (deployment)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"AgentConfig.mode must be one of {MODES}, got {self.mode!r}")
    if self.action_mode not in ("absolute", "residual"):
      raise ValueError(f"AgentConfig.action_mode must be absolute or residual, got {self.action_mode!r}")
    if self.n_step < 1 or (self.n_step > 1 and self.mode == FAITHFUL):
      raise ValueError(f"AgentConfig.n_step must be >= 1 (and 1 in the faithful mode, whose return "
                       f"is the reward itself), got {self.n_step}")
    if self.residual_base not in ("intensity", "quantile"):
      raise ValueError(f"AgentConfig.residual_base must be intensity or quantile, got {self.residual_base!r}")
    if self.reward_mode not in REWARDS:
      raise ValueError(f"AgentConfig.reward_mode must be one of {REWARDS}, got {self.reward_mode!r}")

  @property
  def n_actions(self) -> int:
    if self.mode == REPAIRED and self.action_mode == "residual":
      return 2 * self.residual_max + 1
    return self.n_gpus + 1 if (self.mode == REPAIRED and self.release) else 10

  @property
  def obs_dim(self) -> int:
    return 4 if self.mode == FAITHFUL else (6 + (3 if self.use_forecast else 0))


def action_to_allocation(config: AgentConfig, action: int,
                         obs: Observation | None = None) -> Allocation:
  """Maps a discrete action to GPUs per role (``obs``: the hour's observation, which a residual
  action adjusts the heuristic's rule for)."""
  n = config.n_gpus
  if config.mode == REPAIRED and config.action_mode == "residual":
    if obs is None:
      raise ValueError("a residual action needs the hour's observation")
    base = (intensity_rule_n_train(obs, 1, n - 1) if config.residual_base == "intensity"
            else QuantileRule().n_train(obs))
    n_train = int(min(max(base + int(action) - config.residual_max, 0), n))
    return Allocation.releasing(n_train, n)
  if config.mode == FAITHFUL or not config.release:
    n_train = max(int(n * min(int(action), 9) / 10), 1)
    return Allocation(n_train, n - n_train)
  n_train = int(action)
  return Allocation.releasing(n_train, n)


def features(config: AgentConfig, obs: Observation) -> np.ndarray:
  """The agent's state vector for ``obs``."""
  ci_c = obs.ci_norm - 0.5
  span = obs.ci_span
  if config.mode == FAITHFUL:
    t_rem = obs.hours_total - obs.hour
    # Official quirk: the HV entry stays at its value after initialization.
    return np.array([t_rem / config.state_budget_hours, ci_c, obs.hv_init / obs.max_hv,
                     obs.n_evaluated],
                    dtype=np.float32)
  f = [1.0 - obs.hour / obs.hours_total, ci_c, obs.hv / obs.max_hv,
       obs.n_evaluated / 100.0, 10.0 * (obs.hv - obs.hv_prev) / obs.max_hv, obs.n_queued / 10.0]
  if config.use_forecast:
    fc = obs.ci_forecast
    if fc is None or len(fc) == 0:
      raise ValueError("AgentConfig.use_forecast=True but the observation carries no forecast")
    fc = np.asarray(fc[:24], dtype=np.float64)
    f += [(np.median(fc) - obs.ci_g_per_kwh) / span,
          float(np.mean(fc < obs.ci_g_per_kwh)),
          (np.min(fc) - obs.ci_g_per_kwh) / span]
  return np.asarray(f, dtype=np.float32)


def reward(config: AgentConfig, obs: Observation, outcome: Outcome) -> float:
  """The reward for one hour, official or progress-priced (see module docstring)."""
  if config.reward_mode == "progress":
    floor = config.gap_floor * obs.max_hv
    gap_before = max(obs.max_hv - obs.hv, floor)
    gap_after = max(obs.max_hv - obs.hv - outcome.hv_gain, floor)
    c_t = outcome.carbon_g / config.reward_gpu_power_kw / config.n_gpus
    return float(np.log(gap_before / gap_after)
                 - config.carbon_price * c_t / max(obs.ci_ref_max, 1e-9))
  t_frac = (obs.hour + 1) / (config.state_budget_hours if config.mode == FAITHFUL
                              else obs.hours_total)
  beta = config.beta_scale / max(obs.ci_ref_max, 1e-9)
  c_t = outcome.carbon_g / config.reward_gpu_power_kw / config.n_gpus
  return float(config.alpha * outcome.hv_gain / obs.max_hv * (0.8 * t_frac + 0.8)
               - beta * c_t + config.gamma_s * outcome.n_finished)


class _Trunk(nn.Module):
  """The policy / value network.

  ``official=True``: the official MLP (bias-free sigmoid layers, Xavier-uniform init, then a linear
  head). Its four stacked sigmoids saturate: after training, the output hardly depends on the input
  (measured: identical action probabilities for random states), so the repaired mode uses a standard
  actor-critic trunk instead: tanh layers with biases and orthogonal init.
  """

  hidden: tuple[int, ...]
  out: int
  official: bool = True

  @nn.compact
  def __call__(self, x):
    if self.official:
      for h in self.hidden:
        x = nn.sigmoid(nn.Dense(h, use_bias=False, kernel_init=nn.initializers.xavier_uniform())(x))
      return nn.Dense(self.out, kernel_init=nn.initializers.variance_scaling(
          1.0 / 3.0, "fan_in", "uniform"))(x)  # PyTorch's default Linear init
    for h in self.hidden:
      x = nn.tanh(nn.Dense(h, kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)))(x))
    return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(0.01))(x)


def _trunk(config: "AgentConfig", out: int) -> _Trunk:
  if config.mode == FAITHFUL:
    return _Trunk(config.hidden, out, official=True)
  return _Trunk(config.repaired_hidden, out, official=False)


def _optimizers(config: AgentConfig):
  if config.mode == FAITHFUL:
    mk = lambda lr: optax.rmsprop(lr, decay=config.rms_decay, eps=config.rms_eps,
                                  eps_in_sqrt=False)
    return mk(config.actor_lr), mk(config.critic_lr)
  return optax.adam(config.repaired_actor_lr), optax.adam(config.repaired_critic_lr)


@functools.partial(jax.jit, static_argnums=0)
def init_agent(config: AgentConfig, key) -> dict[str, Any]:
  """Parameters and optimizer states of the actor and the critic."""
  ka, kc = jax.random.split(key)
  x = jnp.zeros((1, config.obs_dim), jnp.float32)
  actor = _trunk(config, config.n_actions).init(ka, x)
  critic = _trunk(config, 1).init(kc, x)
  opt_a, opt_c = _optimizers(config)
  agent = {"actor": actor, "critic": critic, "opt_actor": opt_a.init(actor),
           "opt_critic": opt_c.init(critic)}
  if config.n_step > 1:
    agent["pending"] = empty_pending(config)
  return agent


def empty_pending(config: AgentConfig) -> dict[str, Any]:
  """The n-step buffer: the last ``count`` hours' transitions, oldest first, not yet updated."""
  n = config.n_step
  return {"feats": jnp.zeros((n, config.obs_dim), jnp.float32),
          "action": jnp.zeros((n,), jnp.int32), "reward": jnp.zeros((n,), jnp.float32),
          "count": jnp.zeros((), jnp.int32)}


def policy_logits(config: AgentConfig, params, feats):
  return _trunk(config, config.n_actions).apply(params, feats)


@functools.partial(jax.jit, static_argnums=0)
def act(config: AgentConfig, agent: dict, feats, key):
  """Samples an action (the most probable one if ``config.greedy``); returns
  ``(action, log_prob, probs)``."""
  logits = policy_logits(config, agent["actor"], feats[None])[0]
  a = jnp.argmax(logits) if config.greedy else jax.random.categorical(key, logits)
  logp = jax.nn.log_softmax(logits)
  return a, logp[a], jnp.exp(logp)


@functools.partial(jax.jit, static_argnums=0)
def update(config: AgentConfig, agent: dict, feats, action, r, next_feats, done,
           entropy_weight=None, discount=None):
  """One actor-critic update of the transition from ``feats``; returns ``(agent, metrics)``.

  ``r`` is the discounted reward of the h hours from ``feats`` to ``next_feats``
  (``sum_{i<h} gamma^i r_i``; one hour's reward for TD(0)) and ``discount`` is ``gamma^h``
  (``None``: ``gamma``), so the repaired mode's target is ``r + discount (1 - done) V(next_feats)``.
  ``entropy_weight`` and ``discount`` are traced scalars (a schedule or a shorter tail does not
  recompile); ``entropy_weight`` overrides ``config.entropy_weight``.
  """
  ent_w = config.entropy_weight if entropy_weight is None else entropy_weight
  critic_apply = lambda p, x: _trunk(config, 1).apply(p, x[None])[0, 0]
  if config.mode == FAITHFUL:
    ret = r  # batch of one: the discounted return is the reward itself
  else:
    gamma = config.gamma if discount is None else discount
    ret = r + gamma * (1.0 - done) * jax.lax.stop_gradient(
        critic_apply(agent["critic"], next_feats))
  adv = jax.lax.stop_gradient(ret - critic_apply(agent["critic"], feats))

  def actor_loss(p):
    logp = jax.nn.log_softmax(policy_logits(config, p, feats[None])[0])
    entropy = -jnp.sum(jnp.exp(logp) * logp)
    return -logp[action] * adv - ent_w * entropy, entropy

  def critic_loss(p):
    return jnp.square(ret - critic_apply(p, feats))

  (la, ent), ga = jax.value_and_grad(actor_loss, has_aux=True)(agent["actor"])
  lc, gc = jax.value_and_grad(critic_loss)(agent["critic"])
  opt_a, opt_c = _optimizers(config)
  ua, sa = opt_a.update(ga, agent["opt_actor"], agent["actor"])
  uc, sc = opt_c.update(gc, agent["opt_critic"], agent["critic"])
  new = dict(agent, actor=optax.apply_updates(agent["actor"], ua), opt_actor=sa,
             critic=optax.apply_updates(agent["critic"], uc), opt_critic=sc)
  return new, {"actor_loss": la, "critic_loss": lc, "entropy": ent, "advantage": adv}
