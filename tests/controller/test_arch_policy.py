"""The REINFORCE architecture controller: sampling, rewards, and that it learns."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cenas_jax.controller import arch_policy as ap
from cenas_jax.errors import ConfigError

N_CHOICES = np.array([3, 5, 2])


def test_samples_stay_in_range_and_start_uniform():
  policy = ap.init_policy(ap.PolicyConfig(), N_CHOICES)
  archs = np.asarray(ap.sample(policy, jax.random.key(0), 4000))
  assert archs.shape == (4000, 3)
  assert (archs >= 0).all() and (archs < N_CHOICES).all()
  freq = np.bincount(archs[:, 1], minlength=5) / 4000
  np.testing.assert_allclose(freq, 0.2, atol=0.03)
  lp = np.asarray(ap.log_prob(policy["logits"], policy["valid"], archs[:3]))
  np.testing.assert_allclose(lp, -np.log(30), rtol=1e-5)


def test_rewards():
  q, e = np.array([0.8, 0.8]), np.array([1.0, 2.0])
  np.testing.assert_allclose(ap.reward(ap.PolicyConfig("tunas", beta=-0.5), q, e, 1.0), [0.8, 0.3])
  np.testing.assert_allclose(ap.reward(ap.PolicyConfig("mnasnet"), q, e, 1.0),
                             [0.8, 0.8 * 2 ** -0.07])
  np.testing.assert_allclose(ap.reward(ap.PolicyConfig("accuracy"), q, e, 1.0), q)
  with pytest.raises(ConfigError):
    ap.PolicyConfig("nope")


def _learn(config, quality, steps=150, k=8, energy=None, e0=None):
  policy = ap.init_policy(config, N_CHOICES)
  key = jax.random.key(1)
  for _ in range(steps):
    key, k1, k2 = jax.random.split(key, 3)
    archs = np.asarray(ap.sample(policy, k1, 4 * k))
    mc = mc_ok = None
    if config.reward == "tabnas":
      archs = archs[energy(archs) <= e0][:k]
      mc = np.asarray(ap.sample(policy, k2, 128))
      mc_ok = energy(mc) <= e0
    r = ap.reward(config, quality(archs), energy(archs) if energy else np.ones(len(archs)),
                  e0 or 1.0)
    policy, _ = ap.update(config, policy, archs, r, mc, mc_ok)
  return ap.greedy(policy)


def test_accuracy_only_finds_the_best_architecture():
  quality = lambda a: (a[:, 0] == 2) * 0.5 + (a[:, 1] == 4) * 0.5  # noqa: E731
  np.testing.assert_array_equal(_learn(ap.PolicyConfig("accuracy", lr=0.1), quality)[:2], [2, 4])


def test_tabnas_finds_the_constrained_optimum():
  # Quality grows with both choices; energy too: the best feasible arch under E0 = 4 is (2, 2)
  # (energy 4, quality 4), not the unconstrained (2, 4).
  quality = lambda a: (a[:, 0] + a[:, 1]).astype(float) / 6  # noqa: E731
  energy = lambda a: (a[:, 0] + a[:, 1]).astype(float)  # noqa: E731
  best = _learn(ap.PolicyConfig("tabnas", lr=0.1), quality, energy=energy, e0=4.0, steps=200)
  assert energy(best[None])[0] == 4.0


def test_leave_one_out_baseline_ignores_a_shared_shift():
  # Candidates scored on one hard validation batch all get the same low reward: the moving
  # average (still at an easier batch's level) reads that as "every candidate is bad" and moves
  # the policy; leave-one-out compares the candidates with each other and does not move it.
  archs = np.array([[0, 1, 0], [2, 3, 1], [1, 4, 0], [0, 0, 1]])
  rewards = np.full(4, 0.3)
  moved = {}
  for baseline in ("ema", "loo"):
    config = ap.PolicyConfig("accuracy", baseline=baseline)
    policy = dict(ap.init_policy(config, N_CHOICES), baseline=np.float32(0.8),
                  has_baseline=np.bool_(True))
    new, _ = ap.update(config, policy, archs, rewards)
    moved[baseline] = float(np.abs(np.asarray(new["logits"] - policy["logits"])).max())
  assert moved["loo"] == 0.0 and moved["ema"] > 1e-3


def test_leave_one_out_advantage_is_reward_minus_the_others_mean():
  # With one decision and distinct choices, the REINFORCE gradient of logit j is
  # -(1/K) sum_k adv_k (1[a_k = j] - pi_j); at the uniform policy the loo advantages of rewards
  # (1, 2, 3) are (-1.5, 0, 1.5), so the gradient is (1.5, 0, -1.5) / 3 (minus sign: a loss).
  config = ap.PolicyConfig("accuracy", baseline="loo")
  policy = ap.init_policy(config, np.array([3]))
  archs = np.array([[0], [1], [2]])
  rewards = np.array([1.0, 2.0, 3.0])
  lp = lambda logits: ap.log_prob(logits, policy["valid"], archs)  # noqa: E731
  adv = rewards - (rewards.sum() - rewards) / 2
  grad = jax.grad(lambda lg: -(adv * lp(lg)).mean())(policy["logits"])
  np.testing.assert_allclose(np.asarray(grad)[0], [0.5, 0.0, -0.5], atol=1e-6)
  new, _ = ap.update(config, policy, archs, rewards)
  # Adam's first step moves each logit by lr against the gradient's sign.
  np.testing.assert_allclose(np.asarray(new["logits"])[0], [-0.05, 0.0, 0.05], atol=1e-6)


def test_leave_one_out_learns_and_is_validated():
  quality = lambda a: (a[:, 0] == 2) * 0.5 + (a[:, 1] == 4) * 0.5  # noqa: E731
  best = _learn(ap.PolicyConfig("accuracy", lr=0.1, baseline="loo"), quality)
  np.testing.assert_array_equal(best[:2], [2, 4])
  with pytest.raises(ConfigError, match="baseline"):
    ap.PolicyConfig(baseline="median")
