"""The open DARTS problem in the cluster's loop, with fake scores, prices and training jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cenas_jax.cifar_nas.problem import CifarProblem, StepCost
from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster import search
from cenas_jax.cluster import strategies
from cenas_jax.spaces import darts as space

TOTAL_STEPS = 10


def _acc(g: space.Genotype) -> float:
  """A deterministic stand-in accuracy: more convolutions, more accuracy."""
  code = space.encode(g).reshape(-1, 2)
  convs = np.isin(code[:, 0], [space.OPS.index(o) for o in ("sep_conv_3x3", "sep_conv_5x5")]).mean()
  return 0.5 + 0.4 * float(convs)


class FakeJobs:
  def __init__(self):
    self.step: dict[int, int] = {}
    self.calls: list[list] = []

  def __call__(self, jobs):
    self.calls.append(jobs)
    out = []
    for j in jobs:
      # Idempotent, as the real job: a checkpoint past stop_step trains nothing.
      self.step[j.candidate] = max(self.step.get(j.candidate, 0), j.stop_step)
      done = self.step[j.candidate] == TOTAL_STEPS
      out.append({"step": self.step[j.candidate], "finished": done,
                  "test_accuracy": _acc(space.Genotype.from_json(j.genotype)) if done else None})
    return out


def make_problem(jobs=None, **kw):
  return CifarProblem(
      init_channels=4, layers=3, total_steps=TOTAL_STEPS, candidates_per_hour=kw.pop("k", 30),
      seed=0, jobs_dir="/tmp/unused", score_fn=lambda gs: np.array([_acc(g) - 0.3 for g in gs]),
      cost_fn=lambda g: StepCost(time_s=0.01 * (1 + space.count_params(g, 4, 3) / 2e4), energy_j=1.0,
                                 source="fake"),
      run_jobs=jobs or FakeJobs(), **kw)


def test_expand_deduplicates_and_scores_fill_predictions():
  p = make_problem(include=[space.GENOTYPES["DARTS_V2"]])
  assert p.n == 1
  p.expand(np.random.default_rng(0))
  n = p.n
  assert 1 < n <= 31
  assert p.features.shape == (n, space.features([space.GENOTYPES["DARTS_V2"]]).shape[1])
  p.expand(np.random.default_rng(0))  # the same draws again: nothing new
  assert p.n == n
  y = p.score(np.array([0, 2]))
  assert np.allclose(y[:, 0], [100 * (_acc(p.genotype(0)) - 0.3), 100 * (_acc(p.genotype(2)) - 0.3)])
  assert np.allclose(y[:, 1], -p.params_m[[0, 2]])
  assert np.isnan(p.y_pred[1]).all() and np.isnan(p.y_true).all()
  # Every candidate dominates the reference point.
  assert (p.params_m < p.params_max_m).all()


def test_segments_become_idempotent_step_targets():
  jobs = FakeJobs()
  p = make_problem(jobs)
  p.expand(np.random.default_rng(1))
  full = p.train_time_s[3]
  assert full == pytest.approx(TOTAL_STEPS * p.step_cost(3).time_s)
  p.run_segments([pool_lib.Segment(3, 0, 0.0, 0.4 * full, False)])
  assert jobs.calls[-1][0].stop_step == 4 and np.isnan(p.y_true[3]).all()
  # Carried over to a second GPU in the same hour: one job, to the end of the last stretch.
  p.run_segments([pool_lib.Segment(3, 0, 0.4 * full, 0.7 * full, False),
                  pool_lib.Segment(3, 1, 0.7 * full, full, True)])
  assert [j.stop_step for j in jobs.calls[-1]] == [TOTAL_STEPS]
  assert p.y_true[3, 0] == pytest.approx(100 * _acc(p.genotype(3)))
  assert p.y_true[3, 1] == -p.params_m[3]


def test_state_round_trip_is_json():
  p = make_problem()
  p.expand(np.random.default_rng(2))
  p.score(np.arange(5))
  p.run_segments([pool_lib.Segment(1, 0, 0.0, p.train_time_s[1], True)])
  d = json.loads(json.dumps(p.state_dict()))
  q = make_problem()
  q.load_state_dict(d)
  assert q.n == p.n and (q.codes == p.codes).all()
  np.testing.assert_array_equal(q.y_true, p.y_true)
  np.testing.assert_array_equal(q.y_pred, p.y_pred)
  assert q.costs == p.costs and q.metrics == p.metrics


def _episode(problem, strategy, hours=6):
  cfg = search.SearchConfig(hours=hours, n_init=2, pool=pool_lib.PoolConfig(
      n_gpus=3, step_s=0.05, sample_time_s=0.01, queue_capacity=4))
  ci = np.linspace(100.0, 400.0, 200)
  state = search.init_episode(problem, cfg, 0, strategy)
  opt = search.LaMOOOptimizer()
  while state.hour < hours:
    state, _ = search.step_episode(state, problem, ci, 168, strategy, opt, cfg)
  return state


def test_the_cluster_loop_drives_the_open_problem():
  jobs = FakeJobs()
  p = make_problem(jobs)
  state = _episode(p, strategies.Fixed(2, 1))
  trained = np.asarray(state.evaluated)
  assert len(trained) > 2  # the initial two and some the search proposed
  assert np.isfinite(p.y_true[trained]).all()
  # Only trained candidates have true objectives; every hour sampled fresh candidates.
  assert np.isnan(p.y_true[np.setdiff1d(np.arange(p.n), trained)]).all()
  assert p.n > 6 * 20
  assert state.history["hv"][-1] == pytest.approx(p.hv(trained))
  assert state.history["hv"][-1] >= state.history["hv"][0] > 0
  # The ledger charged training time equal to the training stretches the jobs ran.
  led = state.ledger
  train_s = led.column("duration_s")[led.kinds == "training"].sum()
  assert train_s > 0
  # Same seed, same everything: the loop is deterministic.
  q = make_problem(FakeJobs())
  state2 = _episode(q, strategies.Fixed(2, 1))
  assert state2.evaluated == state.evaluated and (q.codes == p.codes).all()
