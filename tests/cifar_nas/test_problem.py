"""The open DARTS problem in the cluster's loop, with fake scores, prices and training jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cenas_jax.cifar_nas.problem import CifarProblem, InferenceCost, StepCost
from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster import search
from cenas_jax.cluster import strategies
from cenas_jax.moo.hypervolume import hypervolume, hypervolume_2d
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


# --- the optional third objective: predicted inference energy -------------------------------------


class FakeEnergy:
  """A stand-in inference cost (mJ per image): 1 + 0.5 per convolution edge; counts its calls."""

  def __init__(self):
    self.calls: list[space.Genotype] = []

  def __call__(self, g: space.Genotype) -> InferenceCost:
    self.calls.append(g)
    code = space.encode(g).reshape(-1, 2)
    convs = np.isin(code[:, 0], [space.OPS.index(o) for o in space.CELL_OPS if "conv" in o]).sum()
    return InferenceCost(energy_mj=1.0 + 0.5 * float(convs), time_s=1e-4, batch_size=1,
                         source="fake")


def make_energy_problem(jobs=None, energy=None, **kw):
  return make_problem(jobs, objectives=("accuracy", "params", "energy"),
                      energy_fn=energy or FakeEnergy(), **kw)


def test_default_problem_keeps_two_objectives_and_never_prices_inference():
  energy = FakeEnergy()
  p = make_problem(energy_fn=energy)
  p.expand(np.random.default_rng(3))
  p.score(np.arange(4))
  p.run_segments([pool_lib.Segment(c, 0, 0.0, p.train_time_s[c], True) for c in (0, 1)])
  assert p.objective_names == ("cifar10_test_acc_pct", "neg_params_m")
  assert p.y_true.shape == p.y_pred.shape == (p.n, 2) and p.ref_point.shape == (2,)
  assert p.max_hv == pytest.approx(100.0 * p.params_max_m)
  assert p.hv([0, 1]) == pytest.approx(hypervolume_2d(p.y_true[[0, 1]], p.ref_point))
  assert energy.calls == [] and p.inference == {}


def test_three_objective_hv_is_the_box_union_of_hand_numbers():
  energy = FakeEnergy()
  light = [("skip_connect", 0), ("max_pool_3x3", 1)] * 4
  v1, v2 = space.GENOTYPES["DARTS_V1"], space.Genotype(light, (2, 3, 4, 5), light, (2, 3, 4, 5))
  p = make_energy_problem(energy=energy, include=[v1, v2])
  assert p.objective_names == ("cifar10_test_acc_pct", "neg_params_m", "neg_inference_energy_mj")
  # The reference point: no accuracy, the widest cell pair's parameters, 1.1 x its energy (16 conv
  # edges: 1 + 0.5 x 16 = 9 mJ), priced once.
  assert p.energy_ref_mj == pytest.approx(1.1 * 9.0) and len(energy.calls) == 1
  np.testing.assert_allclose(p.ref_point, [0.0, -p.params_max_m, -9.9])
  assert p.max_hv == pytest.approx(100.0 * p.params_max_m * 9.9)
  p.run_segments([pool_lib.Segment(c, 0, 0.0, p.train_time_s[c], True) for c in (0, 1)])
  a = np.array([100 * _acc(v1), -space.count_params(v1, 4, 3) / 1e6, -energy(v1).energy_mj])
  b = np.array([100 * _acc(v2), -space.count_params(v2, 4, 3) / 1e6, -energy(v2).energy_mj])
  np.testing.assert_allclose(p.y_true, [a, b])
  # Two boxes from the reference point: their volumes minus the volume they share.
  ref = p.ref_point
  vol = lambda y: float(np.prod(y - ref))  # noqa: E731
  expected = vol(a) + vol(b) - vol(np.minimum(a, b))
  assert not (np.all(a >= b) or np.all(b >= a))  # neither dominates: both boxes count
  assert p.hv([0, 1]) == pytest.approx(expected, rel=1e-12)
  assert p.hv([0, 1]) == pytest.approx(hypervolume(p.y_true, ref), rel=1e-12)
  assert p.hv([0]) == pytest.approx(vol(a))


def test_energy_is_priced_once_and_a_restored_state_does_not_reprice():
  energy = FakeEnergy()
  p = make_energy_problem(energy=energy)
  p.expand(np.random.default_rng(2))
  p.score(np.arange(5))
  p.score(np.arange(3))  # scored again: no new pricing
  p.run_segments([pool_lib.Segment(c, 0, 0.0, p.train_time_s[c], True) for c in (1, 7)])
  assert len(energy.calls) == 6  # candidates 0-4 and 7; the reference only when first needed
  assert p.energy_ref_mj > 0 and len(energy.calls) == 7
  assert sorted(p.inference) == [0, 1, 2, 3, 4, 7]
  np.testing.assert_array_equal(p.y_pred[:5, 2], [-p.inference[c].energy_mj for c in range(5)])
  assert p.y_true[1, 2] == p.y_pred[1, 2] == -p.inference[1].energy_mj
  d = json.loads(json.dumps(p.state_dict()))
  again = FakeEnergy()
  q = make_energy_problem(energy=again)
  q.load_state_dict(d)
  np.testing.assert_array_equal(q.y_true, p.y_true)
  np.testing.assert_array_equal(q.y_pred, p.y_pred)
  assert q.inference == p.inference and q.energy_ref_mj == p.energy_ref_mj
  assert q.hv([1, 7]) == p.hv([1, 7]) and q.max_hv == p.max_hv
  q.score(np.arange(5))
  assert again.calls == []  # the reference and the known candidates come from the state


def test_the_loop_searches_three_objectives_and_resumes_to_the_same_episode():
  def episode(problem, hours, state=None, start_hour=0):
    cfg = search.SearchConfig(hours=hours, n_init=2, pool=pool_lib.PoolConfig(
        n_gpus=3, step_s=0.05, sample_time_s=0.01, queue_capacity=4))
    ci = np.linspace(100.0, 400.0, 200)
    strategy = strategies.Fixed(2, 1)
    if state is None:
      state = search.init_episode(problem, cfg, 0, strategy)
    while state.hour < hours:
      state, _ = search.step_episode(state, problem, ci, 168, strategy, search.LaMOOOptimizer(), cfg)
    return state

  p = make_energy_problem(FakeJobs())
  state = episode(p, 6)
  trained = np.asarray(state.evaluated)
  assert len(trained) > 2 and np.isfinite(p.y_true[trained]).all() and p.y_true.shape[1] == 3
  assert state.history["hv"][-1] == pytest.approx(p.hv(trained)) and state.history["hv"][-1] > 0
  # Stopped after hour 3 and restored from JSON into a new problem: the same episode.
  jobs = FakeJobs()
  q = make_energy_problem(jobs)
  half = episode(q, 3)
  saved = json.loads(json.dumps({"episode": half.to_dict(), "problem": q.state_dict()}))
  jobs2 = FakeJobs()
  jobs2.step = dict(jobs.step)  # the jobs' own checkpoints survive the stop
  energy = FakeEnergy()
  r = make_energy_problem(jobs2, energy=energy)
  r.load_state_dict(saved["problem"])
  resumed = episode(r, 6, search.EpisodeState.from_dict(saved["episode"], {}))
  assert resumed.evaluated == state.evaluated and resumed.history["hv"] == state.history["hv"]
  np.testing.assert_array_equal(r.y_true, p.y_true)
  assert not {space.encode(g).tobytes() for g in energy.calls} & {
      space.encode(q.genotype(c)).tobytes() for c in q.inference}
