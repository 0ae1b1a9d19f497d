"""Tests of the episode loop: determinism, resume, carbon-to-target, one-shot selection, real problem."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster import search
from cenas_jax.cluster import strategies as strat_lib
from cenas_jax.cluster.problem import SearchProblem, hwnas_problem
from cenas_jax.moo.hypervolume import hypervolume_2d

_HOUR0 = 24


def tiny_problem(n: int = 80, seed: int = 0) -> SearchProblem:
  """A synthetic 2-objective problem whose features determine the objectives (so LaMOO can learn)."""
  rng = np.random.default_rng(seed)
  x = rng.random((n, 6)).astype(np.float32)
  acc = 50.0 + 40.0 * x[:, :3].mean(1) + rng.normal(0, 1.0, n)
  energy = 5.0 + 20.0 * x[:, :3].mean(1) + 10.0 * x[:, 3] + rng.normal(0, 0.5, n)
  y_true = np.stack([acc, -energy], 1).astype(np.float64)
  y_pred = y_true + rng.normal(0, [3.0, 0.0], (n, 2))
  ref = np.array([0.0, -50.0])
  return SearchProblem(
      name="tiny", arch_index=np.arange(n, dtype=np.int64), features=x, y_true=y_true, y_pred=y_pred,
      train_time_s=rng.uniform(1500.0, 5000.0, n), ref_point=ref,
      max_hv=float(hypervolume_2d(y_true, ref)), objective_names=("acc", "neg_energy"),
      sampling_source="synthetic")


def tiny_trace(hours: int = 200) -> np.ndarray:
  t = np.arange(hours)
  return 250.0 + 120.0 * np.sin(2 * np.pi * t / 24.0) + 10.0 * np.cos(t)


def tiny_config(hours: int = 6, n_gpus: int = 4) -> search.SearchConfig:
  return search.SearchConfig(hours=hours, n_init=10, history_hours=24,
                             pool=pool_lib.PoolConfig(n_gpus=n_gpus, queue_capacity=3),
                             oneshot_per_gpu_hour=3)


def run(problem, config, seed, strategy, optimizer, state=None, hours=None, forecast=False):
  ci = tiny_trace()
  fc = (lambda t: ci[t: t + 24]) if forecast else None
  if state is None:
    state = search.init_episode(problem, config, seed, strategy)
  stop = config.hours if hours is None else state.hour + hours
  while state.hour < stop:
    state, _ = search.step_episode(state, problem, ci, _HOUR0, strategy, optimizer, config,
                                   forecast_fn=fc)
  return state


def _agent_strategy():
  from cenas_jax.cluster.agent_strategy import AgentStrategy
  from cenas_jax.controller.allocation_agent import AgentConfig

  return AgentStrategy(AgentConfig(mode="repaired", n_gpus=4, hidden=(16, 16), use_forecast=True))


@pytest.fixture(scope="module")
def problem():
  return tiny_problem()


def _lamoo():
  return search.LaMOOOptimizer()


def test_same_seed_same_history_and_different_seeds_differ(problem):
  config = tiny_config()
  strategy = strat_lib.Heuristic(max_train=3)
  a = run(problem, config, 3, strategy, _lamoo())
  b = run(problem, config, 3, strategy, _lamoo())
  c = run(problem, config, 4, strategy, _lamoo())
  assert a.to_dict() == b.to_dict()
  assert a.evaluated != c.evaluated
  assert len(a.history["hv"]) == config.hours + 1
  assert len(set(a.evaluated)) == len(a.evaluated)  # nothing is trained twice
  # HV never decreases for a strategy that trains, and it is the HV of what was trained.
  assert np.all(np.diff(a.history["hv"]) >= 0)
  assert a.history["hv"][-1] == pytest.approx(problem.hv(a.evaluated))


def test_resume_from_dict_equals_uninterrupted_run(problem):
  import jax
  import jax.numpy as jnp

  config = tiny_config(hours=6)
  strategy = _agent_strategy()
  # LaMOO is stateless between hours (its tree is rebuilt from the evaluated set with an (seed, hour)
  # RNG, checked above); a cheaper optimizer with the same contract keeps this test fast.
  optimizer = search.RandomOptimizer()
  full = run(problem, config, 7, strategy, optimizer, forecast=True)
  part = run(problem, config, 7, strategy, optimizer, hours=3, forecast=True)
  assert part.hour == 3
  # Round trip: JSON for the episode, host numpy for the strategy's pytree (as a checkpoint does).
  saved = json.loads(json.dumps(part.to_dict()))
  sstate = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), part.strategy_state)
  resumed = search.EpisodeState.from_dict(saved, sstate)
  resumed = run(problem, config, 7, strategy, optimizer, state=resumed, forecast=True)
  assert resumed.to_dict() == full.to_dict()
  jax.tree.map(np.testing.assert_array_equal, resumed.strategy_state, full.strategy_state)
  # The agent really acted (its choices are recorded) and learnt (parameters moved).
  assert len(full.history["info_action"]) == 6
  # The agent sees the live HV, the HV of the hour before and the HV after initialization.
  obs = search.observe(full, problem, tiny_trace(), _HOUR0, config, True)
  assert (obs.hv, obs.hv_prev, obs.hv_init) == (full.history["hv"][-1], full.history["hv"][-2],
                                                full.history["hv"][0])
  assert obs.n_evaluated == len(full.evaluated) and obs.hour == 6
  init = strategy.init(search._jax_key(7, 2**30))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                       init["actor"], full.strategy_state["actor"]))
  assert any(moved)


def test_the_ledger_is_the_episode_s_carbon(problem):
  from cenas_jax.carbon import ledger as ledger_lib

  config = tiny_config(hours=5)
  state = run(problem, config, 1, strat_lib.Fixed(2, 1), search.RandomOptimizer())
  h = state.history
  for t in range(config.hours):
    held = h["n_train"][t] + h["n_sample"][t]
    total = sum(h[f"gpu_s_{k}"][t] for k in pool_lib.KINDS)
    assert total == pytest.approx(3600.0 * held)
  assert sum(h["n_finished"]) == len(state.evaluated) - config.n_init
  assert not [k for k in h if k.startswith(("carbon_g_", "energy_j_"))]  # no second copy
  # The ledger charged every hour's GPU-seconds, kind by kind, at the hour's intensity.
  led = state.ledger
  by_kind = ledger_lib.totals_by_kind(led)
  for k in pool_lib.KINDS:
    if k in by_kind:
      assert by_kind[k].gpu_seconds == pytest.approx(sum(h[f"gpu_s_{k}"]))
  hours = np.round(led.t_start_s / 3600.0).astype(int)
  np.testing.assert_array_equal(led.ci_g_per_kwh, np.asarray(h["ci_g_per_kwh"])[hours])
  rec = search.episode_record(state, problem)
  for acc in ("paper", "full"):
    assert rec["carbon_g"][acc] == pytest.approx(ledger_lib.totals(led, acc).carbon_g)
    curve = search.record_carbon_curves(rec)[acc]
    assert len(curve) == config.hours and curve[-1] == pytest.approx(rec["carbon_g"][acc])
  assert rec["carbon_g"]["paper"] < rec["carbon_g"]["full"]
  assert rec["gpu_hours"]["training"] == pytest.approx(sum(h["gpu_s_training"]) / 3600.0)
  assert ledger_lib.from_dict(rec["ledger"]).n == led.n


def test_the_reward_sees_the_hour_s_charge_and_the_episode_end(problem):
  seen = []

  class Recorder(strat_lib.Fixed):
    learns = True

    def learn(self, state, obs, info, outcome, next_obs):
      seen.append((outcome, next_obs))
      return state

  config = tiny_config(hours=3)
  state = run(problem, config, 2, Recorder(2, 1), search.RandomOptimizer())
  curve = search.carbon_curve(state.ledger, "paper", 3)
  assert [o.carbon_g for o, _ in seen] == pytest.approx(np.diff(curve, prepend=0.0).tolist())
  assert [o.done for o, _ in seen] == [False, False, True]
  assert seen[-1][1] is None and seen[0][1].hour == 1


def test_carbon_curve_and_carbon_to_target_on_a_handmade_ledger():
  from cenas_jax.carbon import ledger as ledger_lib

  led = ledger_lib.empty_ledger()
  # Carbon per hour and kind (g) at 1 kW, 1 h, 1000 g/kWh -> grams = the power's kW x 1000.
  for t, per_kind in enumerate([(10.0, 1.0, 0.5, 0.0), (20.0, 2.0, 0.5, 1.0), (30.0, 3.0, 0.5, 0.0)]):
    for kind, c in zip(pool_lib.KINDS, per_kind):
      if c:
        led = ledger_lib.ledger_add(led, t_start_s=3600.0 * t, duration_s=3600.0, kind=kind,
                                    ci_g_per_kwh=1000.0, n_gpus=1, power_w=c)
  paper, full = (search.carbon_curve(led, a, 3) for a in ("paper", "full"))
  np.testing.assert_allclose(paper, [10.0, 30.0, 60.0])
  np.testing.assert_allclose(full, [11.5, 35.0, 68.5])
  np.testing.assert_allclose(search.carbon_curve(led, "paper", 4), [10.0, 30.0, 60.0, 60.0])
  assert search.charged_g(led, "full", start=7) == pytest.approx(33.5)  # the last hour's 3 entries
  hv = [1.0, 2.0, 3.0, 5.0]
  assert search.carbon_to_target(hv, paper, 2.5) == 30.0
  assert search.carbon_to_target(hv, full, 2.5) == 35.0
  assert search.carbon_to_target(hv, paper, 3.0) == 30.0  # reached exactly
  assert search.carbon_to_target(hv, paper, 2.0) == 10.0
  assert search.carbon_to_target(hv, full, 5.0) == 68.5
  assert search.carbon_to_target(hv, paper, 1.0) == 0.0  # already there after init
  assert search.carbon_to_target(hv, paper, 5.1) is None


def test_oneshot_selection_reports_true_values_of_the_predicted_front():
  y_true = np.array([[1.0, 1.0], [2.0, 0.5], [9.0, 9.0], [3.0, 3.0], [8.0, 8.0], [4.0, 7.0]])
  y_pred = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [6.0, 6.0], [5.0, 5.0], [7.0, 2.0]])
  problem = SearchProblem(
      name="hand", arch_index=np.arange(6), features=np.zeros((6, 2), np.float32), y_true=y_true,
      y_pred=y_pred, train_time_s=np.ones(6), ref_point=np.zeros(2),
      max_hv=float(hypervolume_2d(y_true, np.zeros(2))), objective_names=("a", "b"),
      sampling_source="hand")
  state = search.EpisodeState(seed=0, hour=1, evaluated=[0, 1], scored=[2, 3, 4, 5],
                              pool=pool_lib.PoolState(), history={"hv": [0.0]}, strategy_state={})
  # Estimates: init 0 (1,1), 1 (2,0.5) with true values; scored 2 (1,1), 3 (6,6), 4 (5,5), 5 (7,2).
  # Non-dominated estimates: 3 (6,6) and 5 (7,2). Candidate 2 (truly the best) is predicted poorly.
  sel = search.oneshot_selection(state, problem)
  assert sorted(sel.tolist()) == [3, 5]
  # The reported HV uses the true objectives of the selection: (3,3) and (4,7) -> 4*7 = 28.
  assert search.current_hv(state, problem, trains=False) == pytest.approx(28.0)
  assert search.current_hv(state, problem, trains=True) == pytest.approx(
      hypervolume_2d(y_true[[0, 1]], np.zeros(2)))


def test_oneshot_episode_scores_without_training(problem):
  config = tiny_config(hours=3, n_gpus=2)
  state = run(problem, config, 0, strat_lib.OneShot(), search.RandomOptimizer())
  h = state.history
  assert len(state.evaluated) == config.n_init
  assert len(state.scored) == 3 * 2 * 3  # oneshot_per_gpu_hour x GPUs x hours
  assert len(set(state.scored) | set(state.evaluated)) == len(state.scored) + config.n_init
  assert sum(h["gpu_s_training"]) == 0.0 and search.charged_g(state.ledger, "paper") == 0.0
  assert sum(h["gpu_s_sampling"]) == pytest.approx(18 * 60.0)
  sel = search.oneshot_selection(state, problem)
  assert h["hv"][-1] == pytest.approx(problem.hv(sel))


def test_the_final_evaluation_charge_prices_what_a_one_shot_search_reports(problem):
  from cenas_jax.carbon import ledger as ledger_lib

  config = tiny_config(hours=4, n_gpus=2)
  pool = config.pool
  state = run(problem, config, 0, strat_lib.OneShot(), search.RandomOptimizer())
  rec = search.episode_record(state, problem, (0.5, 0.9), pool)
  ci_mean = float(np.mean(state.history["ci_g_per_kwh"]))
  g_per_s = pool.train_power_w * pool.pue * ci_mean / 3.6e6
  # After the last hour: the untrained architectures of the reported front, at the window's mean.
  untrained = [p for p in search.oneshot_selection(state, problem) if p not in state.evaluated]
  assert untrained, "the synthetic problem's one-shot front should hold scored architectures"
  expect = float(np.sum(problem.train_time_s[untrained])) * g_per_s
  assert rec["final_eval_g"][-1] == pytest.approx(expect)
  assert rec["final_eval_g"][0] == 0.0  # only the initial (uncharged) architectures are reported
  assert len(rec["final_eval_g"]) == config.hours + 1
  assert rec["final_eval_gpu_hours"] == pytest.approx(np.sum(problem.train_time_s[untrained]) / 3600)
  # Totals include it under both accountings; paper then charges nothing else.
  assert rec["carbon_g"]["paper"] == pytest.approx(expect)
  assert rec["carbon_g"]["full"] == pytest.approx(search.charged_g(state.ledger, "full") + expect)
  # The hourly curves stop at the last hour, and carbon-to-target adds the hit hour's charge.
  curves = search.record_carbon_curves(rec)
  np.testing.assert_allclose(curves["full"], search.carbon_curve(state.ledger, "full", 4))
  hv = np.asarray(state.history["hv"])
  target = float(hv[1:].max())
  hit = int(np.flatnonzero(hv[1:] >= target)[0])
  assert search.carbon_to_target(hv, curves["paper"], target, rec["final_eval_g"]) == pytest.approx(
      rec["final_eval_g"][hit + 1])
  # A training strategy reports what it trained: no charge, and the record's ledger is the episode's.
  trained = run(problem, config, 0, strat_lib.Fixed(1, 1), search.RandomOptimizer())
  rec2 = search.episode_record(trained, problem, (0.5,), pool)
  assert rec2["final_eval_g"] == [0.0] * (config.hours + 1)
  assert ledger_lib.from_dict(rec2["ledger"]).n == trained.ledger.n


def test_hwnas_problem_on_the_real_table(shared_data):
  from cenas_jax.data.nasbench import load_nb201_table

  table = load_nb201_table(shared_data)
  p = hwnas_problem(table)
  assert p.n == 12_554
  assert p.max_hv == pytest.approx(4152.71, abs=0.1)
  assert p.features.shape == (12_554, 30)
  assert p.y_true.shape == p.y_pred.shape == (12_554, 2)
  np.testing.assert_array_equal(p.y_true[:, 1], p.y_pred[:, 1])  # energy is a lookup
  assert p.train_time_s.min() == pytest.approx(4119.0) and p.train_time_s.max() == pytest.approx(6922.0)
  assert np.all((p.train_time_s >= 4119.0) & (p.train_time_s <= 6922.0))
  flops = np.asarray(table.flops_m, dtype=np.float64)[p.arch_index]
  assert p.train_time_s[np.argmin(flops)] == pytest.approx(4119.0)
  assert p.train_time_s[np.argmax(flops)] == pytest.approx(6922.0)
  # The model is monotone in FLOPs.
  order = np.argsort(flops, kind="stable")
  assert np.all(np.diff(p.train_time_s[order]) >= -1e-9)
  const = hwnas_problem(table, sampling="fewshot", train_time_model="constant")
  assert const.sampling_source == "table-fewshot-supernet"
  np.testing.assert_allclose(const.train_time_s, 0.5 * (4119.0 + 6922.0))
  with pytest.raises(ValueError, match="sampling"):
    hwnas_problem(table, sampling="zero-shot")


def test_calibrated_score_removes_an_error_that_depends_on_the_exact_objective():
  base = tiny_problem()
  energy = -base.y_true[:, 1]
  # The supernet underrates large and small cells, rates mid-size ones better: an error that is a
  # function of energy alone, as on NB201.
  bias = np.where(energy > 20.0, -30.0, np.where(energy < 10.0, -60.0, -25.0))
  y_pred = base.y_true.copy()
  y_pred[:, 0] += bias
  p = SearchProblem(**{**base.__dict__, "y_pred": y_pred})
  evaluated = np.arange(0, 80, 2)
  score = search.calibrated_score(p, evaluated, k=1)
  fresh = np.arange(1, 80, 2)
  got = score(fresh)
  np.testing.assert_array_equal(got[:, 1], y_pred[fresh, 1])  # the exact objective is untouched
  nearest = np.abs(energy[fresh][:, None] - energy[evaluated][None, :]).argmin(1)
  np.testing.assert_allclose(got[:, 0], y_pred[fresh, 0] - bias[evaluated][nearest])
  # Where the neighbour falls in the same band, the error is removed exactly.
  same = bias[evaluated][nearest] == bias[fresh]
  assert same.mean() > 0.8
  np.testing.assert_allclose(got[same, 0], p.y_true[fresh][same, 0])
  # Off by default, and nothing to learn from without an objective both fidelities share.
  assert search.SearchConfig().screen_calibration_k == 0
  noisy = SearchProblem(**{**base.__dict__, "y_pred": base.y_pred + 1.0})
  assert search.calibrated_score(noisy, evaluated, k=3) == noisy.score


def test_an_episode_with_calibrated_screening_runs_and_differs(problem):
  config = tiny_config(hours=4)
  config = dataclasses.replace(config, pool=dataclasses.replace(config.pool, screen_per_gpu_hour=5))
  strategy = strat_lib.Heuristic(max_train=3)
  plain = run(problem, config, 0, strategy, _lamoo())
  calibrated = run(problem, dataclasses.replace(config, screen_calibration_k=3), 0, strategy, _lamoo())
  assert len(calibrated.evaluated) > 10 and calibrated.evaluated != plain.evaluated


def test_online_threshold_trains_in_the_clean_hours_and_releases_the_rest(problem):
  from cenas_jax.controller.types import QuantileRule

  config = tiny_config(hours=24, n_gpus=4)
  strategy = strat_lib.OnlineThreshold(QuantileRule(quantile=0.5, n_clean=3, n_dirty=0))
  state = run(problem, config, 0, strategy, _lamoo(), forecast=True)
  n_train = np.array(state.history["n_train"])
  ci = np.array(state.history["ci_g_per_kwh"])
  assert set(n_train) == {0.0, 3.0} and set(state.history["n_sample"]) == {1.0}
  # With the true next 24 h as forecast, a sinusoidal day puts about half the hours below the median.
  assert 8 <= (n_train == 3).sum() <= 16
  assert ci[n_train == 3].mean() < ci[n_train == 0].mean() - 100.0  # the rule follows the day
  assert len(state.evaluated) > config.n_init
