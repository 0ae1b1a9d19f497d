"""Tests of one simulated hour of the GPU pool and its charge to the ledger, with hand-computed
expected numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cenas_jax.carbon import ledger as ledger_lib
from cenas_jax.cluster import pool as pool_lib
from cenas_jax.cluster.pool import (IDLE, KINDS, RELEASED, SAMPLE, SWITCH, TRAIN, Job, PoolConfig,
                                    PoolState)
from cenas_jax.errors import ConfigError

NAN = float("nan")


def Q(candidate, *pred):  # pylint: disable=invalid-name
  """A fresh job."""
  return Job(candidate, tuple(map(float, pred)))


def H(candidate, remaining_s, *pred):  # pylint: disable=invalid-name
  """A carried-over job."""
  return Job(candidate, tuple(map(float, pred)), float(remaining_s))


class ListProposer:
  """Proposes candidates from a fixed list, in order, and records what it handed out."""

  def __init__(self, order):
    self.order = list(order)
    self.cursor = 0
    self.calls: list[int] = []

  def __call__(self, k: int) -> np.ndarray:
    self.calls.append(k)
    out = self.order[self.cursor: self.cursor + k]
    self.cursor += len(out)
    return np.asarray(out, dtype=np.int64)


def _no_proposals(k: int) -> np.ndarray:
  del k
  return np.zeros(0, dtype=np.int64)


def _predictor(table: dict[int, tuple[float, float]]):
  return lambda idx: np.array([table[int(i)] for i in idx], dtype=np.float64)


def _step(state, *, config, train_time_s, n_train=1, n_sample=0, propose=_no_proposals,
          predict=None):
  return pool_lib.run_step(state, n_train=n_train, n_sample=n_sample, propose=propose,
                           predict=predict, train_time_s=np.asarray(train_time_s, dtype=np.float64),
                           config=config)


def _charged(rep, config, ci):
  """The hour's ledger entries: (ledger, {kind: carbon_g})."""
  led = pool_lib.charge(ledger_lib.empty_ledger(), rep, hour=0, ci_g_per_kwh=ci, config=config)
  return led, {k: float(t.carbon_g) for k, t in ledger_lib.totals_by_kind(led).items()}


def _total_gpu_s(report) -> float:
  return sum(report.gpu_seconds[k] for k in KINDS)


def test_long_job_is_carried_over_and_has_priority_next_hour():
  # 1 training GPU, 1 sampling GPU, queue refilled while it holds <= 1 job.
  config = PoolConfig(n_gpus=2, queue_capacity=1, sample_time_s=60.0)
  train_time_s = [5000.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0]
  preds = {0: (5, 5), 1: (1, 1), 2: (10, 10), 3: (0, 0), 4: (3, 3), 5: (0, 0)}
  propose = ListProposer(range(6))

  # Hour 1: refill scores 2 (0 and 1); job 0 (least dominated) trains 3600 s of its 5000 s; the
  # final refill scores job 2 (predicted better than job 0).
  state, rep = _step(PoolState(), config=config, train_time_s=train_time_s, n_train=1, n_sample=1,
                     propose=propose, predict=_predictor(preds))
  assert rep.finished == ()
  assert state.halfwork == [H(0, 1400.0, 5, 5)]
  assert [q.candidate for q in state.queue] == [1, 2]
  assert rep.scored == (0, 1, 2) and rep.n_scored == 3
  assert rep.gpu_seconds[TRAIN] == 3600.0
  assert rep.gpu_seconds[SAMPLE] == 3 * 60.0
  assert rep.gpu_seconds[IDLE] == 2 * 3600.0 - 3600.0 - 180.0

  # Hour 2: the carried job goes first although job 2 is predicted better; then 2 (best), then 1
  # (over the newly proposed 3), then 4 (over 3) starts with 200 s left and is carried over.
  state, rep = _step(state, config=config, train_time_s=train_time_s, n_train=1, n_sample=1,
                     propose=propose, predict=_predictor(preds))
  assert rep.finished == (0, 2, 1)
  assert state.halfwork == [H(4, 800.0, 3, 3)]
  assert [q.candidate for q in state.queue] == [3, 5]
  assert rep.scored == (3, 4, 5)
  assert rep.gpu_seconds[TRAIN] == 3600.0
  assert rep.gpu_seconds[SAMPLE] == 180.0
  # The stretches a real backend runs: job 0 resumes at 3600 s of its 5000 s, job 4 starts.
  S = pool_lib.Segment  # pylint: disable=invalid-name
  assert rep.segments == (S(0, 0, 3600.0, 5000.0, True), S(2, 0, 0.0, 1000.0, True),
                          S(1, 0, 0.0, 1000.0, True), S(4, 0, 0.0, 200.0, False))
  assert sum(s.end_s - s.start_s for s in rep.segments) == rep.gpu_seconds[TRAIN]


def test_least_dominated_first_on_predicted_objectives():
  config = PoolConfig(n_gpus=1)
  queue = [[0, 1, 1], [1, 3, 3], [2, 2, 2], [3, 0, 5]]
  state = PoolState(queue=[Q(*q) for q in queue])
  # Dominator counts: 0 -> 2, 1 -> 0, 2 -> 1, 3 -> 0; ties go to the older job.
  new, rep = _step(state, config=config, train_time_s=[900.0] * 4)
  assert rep.finished == (1, 2, 0, 3)
  assert new.queue == [] and new.halfwork == []
  assert rep.gpu_seconds[TRAIN] == 3600.0 and rep.gpu_seconds[IDLE] == 0.0


def test_unscored_jobs_go_after_scored_ones_first_in_first_out():
  config = PoolConfig(n_gpus=1)
  state = PoolState(queue=[Q(0, NAN, NAN), Q(1, 1, 1), Q(2, NAN, NAN), Q(3, 0.5, 2.0)])
  new, rep = _step(state, config=config, train_time_s=[900.0] * 4)
  assert rep.finished == (1, 3, 0, 2)
  assert new.queue == []


def test_vanilla_queue_without_sampling_is_fifo_and_free():
  config = PoolConfig(n_gpus=1, queue_capacity=2)
  propose = ListProposer(range(10))
  new, rep = _step(PoolState(), config=config, train_time_s=[1000.0] * 10, propose=propose)
  # Refill to 3 jobs, train 0, 1, 2 (1000 s each, refilling as the queue drains), 600 s into 3.
  assert rep.finished == (0, 1, 2)
  assert (new.halfwork[0].candidate, new.halfwork[0].remaining_s) == (3, 400.0)
  assert np.isnan(new.halfwork[0].pred).all()
  assert rep.gpu_seconds[SAMPLE] == 0.0
  assert rep.gpu_seconds[TRAIN] == 3600.0


@pytest.mark.parametrize("queued, expect_scored", [(0, 11), (5, 6), (10, 1), (11, 0)])
def test_queue_is_refilled_while_it_holds_at_most_capacity(queued, expect_scored):
  config = PoolConfig(n_gpus=1, queue_capacity=10, sample_time_s=60.0)
  state = PoolState(queue=[Q(100 + i, 1, 1) for i in range(queued)])
  propose = ListProposer(range(50))
  new, rep = _step(state, config=config, train_time_s=[1000.0] * 200, n_train=0, n_sample=1,
                   propose=propose, predict=lambda idx: np.ones((len(idx), 2)))
  assert rep.n_scored == expect_scored
  assert len(new.queue) == max(11, queued)
  assert rep.gpu_seconds[SAMPLE] == 60.0 * expect_scored


def test_sampling_budget_limits_proposals():
  config = PoolConfig(n_gpus=2, queue_capacity=10, sample_time_s=1000.0)
  propose = ListProposer(range(50))
  new, rep = _step(PoolState(), config=config, train_time_s=[1.0] * 50, n_train=0, n_sample=1,
                   propose=propose, predict=lambda idx: np.ones((len(idx), 2)))
  assert rep.n_scored == 3  # floor(3600 / 1000)
  assert len(new.queue) == 3
  assert rep.gpu_seconds[SAMPLE] == 3000.0 and rep.gpu_seconds[IDLE] == 600.0
  # Two sampling GPUs pool their budget: floor(7200 / 1000) = 7.
  new, rep = _step(PoolState(), config=config, train_time_s=[1.0] * 50, n_train=0, n_sample=2,
                   propose=ListProposer(range(50)), predict=lambda idx: np.ones((len(idx), 2)))
  assert rep.n_scored == 7


@pytest.mark.parametrize("n_train, n_sample, roles", [
    (2, 1, []), (4, 2, []), (1, 0, []), (0, 2, []),
    (3, 2, [TRAIN, SAMPLE, SAMPLE, RELEASED, TRAIN, RELEASED]),
])
def test_gpu_seconds_add_up_to_held_gpus_times_step(n_train, n_sample, roles):
  config = PoolConfig(n_gpus=6, queue_capacity=4, sample_time_s=300.0, switch_overhead_s=120.0)
  rng = np.random.default_rng(0)
  preds = {i: tuple(rng.random(2)) for i in range(200)}
  state = PoolState(roles=list(roles))
  for _ in range(3):
    state, rep = _step(state, config=config, train_time_s=rng.uniform(500, 5000, 200),
                       n_train=n_train, n_sample=n_sample, propose=ListProposer(
                           [i for i in range(200) if i not in pool_lib.queued_candidates(state)]),
                       predict=_predictor(preds))
    assert _total_gpu_s(rep) == pytest.approx(3600.0 * (n_train + n_sample), abs=1e-6)
    assert all(v >= 0 for v in rep.gpu_seconds.values())
    assert state.roles == ([TRAIN] * n_train + [SAMPLE] * n_sample
                           + [RELEASED] * (6 - n_train - n_sample))


def test_charge_per_kind_is_gpu_seconds_times_power_pue_ci():
  config = PoolConfig(n_gpus=4, queue_capacity=3, sample_time_s=100.0, train_power_w=300.0,
                      sample_power_w=250.0, idle_power_w=60.0, pue=1.5)
  state = PoolState(queue=[Q(0, 1, 1)])
  _, rep = _step(state, config=config, train_time_s=[2000.0] * 10, n_train=1, n_sample=1,
                 propose=ListProposer(range(1, 10)), predict=lambda idx: np.zeros((len(idx), 2)))
  # Train: job 0 (2000 s), then job 1 for the remaining 1600 s -> 3600 s busy. Sample: the queue
  # (capacity 3) is refilled with 3 proposals, then 1 after job 0 left, then 1 at the end -> 500 s.
  assert rep.gpu_seconds == {TRAIN: 3600.0, SAMPLE: 500.0, IDLE: 3100.0, SWITCH: 0.0}
  led, carbon = _charged(rep, config, 400.0)
  # One entry per kind used (SWITCH was not), in the pool's kind order, for hour 0.
  assert list(led.kinds) == [TRAIN, SAMPLE, IDLE]
  assert set(led.tags) == {"hour0"} and (led.t_start_s == 0.0).all()
  power = {TRAIN: 300.0, SAMPLE: 250.0, IDLE: 60.0}
  by_kind = ledger_lib.totals_by_kind(led)
  for kind in (TRAIN, SAMPLE, IDLE):
    it_j = rep.gpu_seconds[kind] * power[kind]
    assert by_kind[kind].energy_j == pytest.approx(it_j)  # IT energy; PUE enters the carbon
    assert carbon[kind] == pytest.approx(it_j * 1.5 * 400.0 / 3.6e6)
  # Hand check of the training share: 3600 s x 300 W x 1.5 x 400 g/kWh / 3.6e6 J/kWh = 180 g.
  assert carbon[TRAIN] == pytest.approx(180.0)
  assert ledger_lib.totals(led, "paper").carbon_g == pytest.approx(180.0)
  assert ledger_lib.totals(led, "full").carbon_g == pytest.approx(sum(carbon.values()))
  # A later hour starts one step later.
  led2 = pool_lib.charge(led, rep, hour=3, ci_g_per_kwh=400.0, config=config)
  assert list(led2.t_start_s[3:]) == [3 * 3600.0] * 3


def test_released_gpus_cost_nothing():
  kw = dict(queue_capacity=2, sample_time_s=60.0)
  out = {}
  for n_gpus in (1, 8):
    _, rep = _step(PoolState(), config=PoolConfig(n_gpus=n_gpus, **kw), train_time_s=[1000.0] * 20,
                   n_train=1, n_sample=0, propose=ListProposer(range(20)))
    out[n_gpus] = rep
  assert out[8].gpu_seconds == out[1].gpu_seconds
  assert _total_gpu_s(out[8]) == 3600.0
  # 7 released GPUs, and the one that trained 3600 s: 3600 x 300 W x 250 / 3.6e6 = 75 g.
  led, carbon = _charged(out[8], PoolConfig(n_gpus=8, **kw), 250.0)
  assert carbon == {TRAIN: pytest.approx(75.0)}
  assert ledger_lib.totals(led, "full").carbon_g == pytest.approx(75.0)


def test_switch_overhead():
  config = PoolConfig(n_gpus=3, switch_overhead_s=300.0)
  state = PoolState(queue=[Q(0, 2, 2), Q(1, 1, 1)], roles=[TRAIN, SAMPLE, SAMPLE])
  # GPU 0 keeps training (full 3600 s), GPU 1 switches sampling -> training (3300 s left), GPU 2 is
  # released (no overhead, no cost).
  new, rep = _step(state, config=config, train_time_s=[3600.0, 3600.0], n_train=2, n_sample=0)
  assert rep.finished == (0,)
  assert new.halfwork == [H(1, 300.0, 1, 1)]
  assert rep.gpu_seconds == {TRAIN: 6900.0, SAMPLE: 0.0, SWITCH: 300.0, IDLE: 0.0}
  led, _ = _charged(rep, config, 100.0)
  assert ledger_lib.totals(led, {SWITCH}).energy_j == pytest.approx(300.0 * config.sample_power_w)
  assert new.roles == [TRAIN, TRAIN, RELEASED]
  # The first step (no previous roles) never pays the overhead.
  _, rep0 = _step(PoolState(queue=[Q(0, 1, 1)]), config=config, train_time_s=[3600.0],
                  n_train=1)
  assert rep0.gpu_seconds[SWITCH] == 0.0 and rep0.finished == (0,)


def test_screening_keeps_the_least_dominated_capacity_plus_one():
  config = PoolConfig(n_gpus=1, queue_capacity=2, sample_time_s=60.0, screen_per_gpu_hour=5)
  preds = {0: (1, 1), 1: (5, 5), 2: (4, 4), 3: (3, 3), 4: (0, 6)}
  # Dominator counts: 0 -> 3, 1 -> 0, 2 -> 1, 3 -> 2, 4 -> 0: keep 1, 2, 4 in proposal order.
  new, rep = _step(PoolState(), config=config, train_time_s=[1.0] * 5, n_train=0, n_sample=1,
                   propose=ListProposer(range(5)), predict=_predictor(preds))
  assert rep.n_scored == 5 and rep.scored == (0, 1, 2, 3, 4)
  assert [q.candidate for q in new.queue] == [1, 2, 4]
  assert rep.gpu_seconds[SAMPLE] == 300.0
  # Screening is bounded by the sampling budget: at most 3600 / 60 = 60 proposals.
  big = PoolConfig(n_gpus=1, queue_capacity=2, sample_time_s=60.0, screen_per_gpu_hour=100)
  new, rep = _step(PoolState(), config=big, train_time_s=[1.0] * 200, n_train=0, n_sample=1,
                   propose=ListProposer(range(200)), predict=lambda idx: np.ones((len(idx), 2)))
  assert rep.n_scored == 60 and len(new.queue) == 3


def test_exploration_keeps_and_trains_the_optimizer_s_first_proposal():
  # Proposal 0 is the optimizer's first pick but the supernet rates it worst of all.
  preds = {0: (0, 0), 1: (5, 5), 2: (4, 4), 3: (3, 3), 4: (0, 6)}
  base = dict(n_gpus=3, queue_capacity=2, sample_time_s=60.0, screen_per_gpu_hour=5)
  kw = dict(train_time_s=[100.0] * 5, n_train=2, n_sample=1, predict=_predictor(preds))
  off, rep_off = _step(PoolState(), config=PoolConfig(**base), propose=ListProposer(range(5)), **kw)
  assert 0 not in rep_off.finished and 0 not in pool_lib.queued_candidates(off)
  # Every 2nd job started is the exploration job: order 1 (least dominated), 0 (explore), 4, 2.
  on, rep_on = _step(PoolState(), config=PoolConfig(**base, screen_explore_every=2),
                     propose=ListProposer(range(5)), **kw)
  assert rep_on.finished[:2] == (1, 0)
  assert on.n_started == len(rep_on.finished) and not any(j.explore for j in on.queue)
  back = PoolState.from_dict(json.loads(json.dumps(on.to_dict())))
  assert back.n_started == on.n_started
  # With exploration starting after 2 jobs, the first hour is pure screening; the next hour,
  # with 2 jobs started, explores.
  late = PoolConfig(**base, screen_explore_every=2, screen_explore_after=2)
  first, rep_first = _step(PoolState(), config=late, propose=ListProposer(range(5)), **kw)
  assert rep_first.finished == rep_off.finished and first.n_started >= 2
  assert 0 not in pool_lib.queued_candidates(first)
  _, rep_next = _step(first, config=late, propose=ListProposer(range(5, 10)),
                      **{**kw, "train_time_s": [100.0] * 10,
                         "predict": _predictor({**preds, 5: (0, 0), 6: (5, 5), 7: (4, 4),
                                                8: (3, 3), 9: (0, 6)})})
  assert 5 in rep_next.finished
  # Without screening the rule is off (nothing is screened out to begin with).
  fifo, rep = _step(PoolState(), config=PoolConfig(n_gpus=2, queue_capacity=2, screen_explore_every=2),
                    train_time_s=[100.0] * 5, n_train=2, propose=ListProposer(range(5)))
  assert rep.finished[:3] == (0, 1, 2) and not any(j.explore for j in fifo.queue)


@pytest.mark.parametrize("n_train, n_sample", [(5, 4), (-1, 2), (2, -1), (9, 0)])
def test_bad_allocation_raises(n_train, n_sample):
  with pytest.raises(ValueError, match="does not fit 8 GPUs"):
    _step(PoolState(), config=PoolConfig(n_gpus=8), train_time_s=[1.0], n_train=n_train,
          n_sample=n_sample)


def test_state_round_trips_through_json_with_nan_predictions():
  state = PoolState(queue=[Q(3, NAN, NAN), Q(4, 1.5, -2.0)], halfwork=[H(7, 120.0, NAN, NAN)],
                    roles=[TRAIN, SAMPLE, RELEASED])
  back = PoolState.from_dict(json.loads(json.dumps(state.to_dict())))
  assert back.roles == state.roles
  for got, want in zip(back.queue + back.halfwork, state.queue + state.halfwork):
    assert (got.candidate, got.remaining_s) == (want.candidate, want.remaining_s)
    np.testing.assert_array_equal(got.pred, want.pred)
  assert back.queue[0].remaining_s is None and back.halfwork[0].remaining_s == 120.0
  assert pool_lib.queued_candidates(back) == [3, 4, 7]


@pytest.mark.parametrize("field, value", [("n_gpus", 0), ("queue_capacity", -1), ("pue", 0.9),
                                          ("idle_power_w", -1.0), ("sample_time_s", 0.0)])
def test_bad_pool_config_names_the_field(field, value):
  with pytest.raises(ConfigError) as err:
    PoolConfig(**{field: value})
  assert err.value.field == field
