"""Samples-to-target study of LaMOO: traces, counting at batch ends, censored statistics, and a
synthetic problem where partitioning must beat random search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cenas_jax.moo import lamoo
from cenas_jax.moo import sample_efficiency as se
from cenas_jax.moo.hypervolume import hypervolume_2d


@pytest.fixture(scope="module")
def needle():
  """5^5 one-hot cells; the front lies in the 250 cells with op0 = 0 and op1 <= 1 (8% of the space).

  Inside that region a cell is 10 accuracy points better and 10 mJ cheaper than the same trade-off
  position outside it, so random search rarely samples the front while a partition that learns
  ``op0 = 0, op1 <= 1`` keeps sampling it.
  """
  ops = np.array(list(itertools.product(range(5), repeat=5)))
  x = np.zeros((ops.shape[0], 25), np.float32)
  for e in range(5):
    x[np.arange(ops.shape[0]), e * 5 + ops[:, e]] = 1.0
  t = ops[:, 2:].sum(1) / 12.0
  inside = (ops[:, 0] == 0) & (ops[:, 1] <= 1)
  acc = 50.0 + 40.0 * t + np.where(inside, 10.0, 0.0)
  energy = 10.0 + 30.0 * t**2 + np.where(inside, 0.0, 10.0)
  y = np.stack([acc, -energy], 1)
  ref = np.array([0.0, -60.0])
  return x, y, ref, hypervolume_2d(y, ref)


def _run(needle, method, settings, seed, opt_seed=None):
  x, y, ref, _ = needle
  init = se.initial_samples(x.shape[0], settings.n_init, np.random.default_rng(seed))
  rng = np.random.default_rng(100 + seed if opt_seed is None else opt_seed)
  return se.run_optimizer(method, x, y, ref, init, settings, rng)


_SMALL = se.OptimizerSettings(n_init=10, budget=27, batch_size=5, cp=300.0)


def test_settings_and_batch_ends():
  assert _SMALL.batch_ends().tolist() == [10, 15, 20, 25, 27]
  assert se.OptimizerSettings(n_init=10, budget=20, batch_size=5).batch_ends().tolist() == [10, 15, 20]
  with pytest.raises(ValueError, match="budget"):
    se.OptimizerSettings(n_init=10, budget=5)
  with pytest.raises(ValueError, match="Unknown LaMOO preset"):
    se.OptimizerSettings(lamoo_preset="nope")
  with pytest.raises(ValueError, match="method must be one of"):
    se.run_optimizer("bo", np.zeros((30, 2)), np.zeros((30, 2)), np.zeros(2), np.arange(10),
                     _SMALL, np.random.default_rng(0))


@pytest.mark.parametrize("method", ["random", "lamoo"])
def test_trace_is_reproducible_distinct_and_monotone(needle, method):
  x, y, ref, _ = needle
  a = _run(needle, method, _SMALL, seed=3)
  b = _run(needle, method, _SMALL, seed=3)
  c = _run(needle, method, _SMALL, seed=3, opt_seed=999)
  np.testing.assert_array_equal(a.sample_idx, b.sample_idx)
  np.testing.assert_array_equal(a.hv, b.hv)
  assert not np.array_equal(a.sample_idx, c.sample_idx)  # the proposals do use the rng
  np.testing.assert_array_equal(a.sample_idx[:10], c.sample_idx[:10])  # same initial cells
  assert a.sample_idx.shape == (27,) and np.unique(a.sample_idx).size == 27
  assert np.all(np.diff(a.hv) >= 0)
  # The trace is the HV of the sampled prefixes, with the true objectives.
  for i in (0, 9, 14, 26):
    assert a.hv[i] == pytest.approx(hypervolume_2d(y[a.sample_idx[: i + 1]], ref), rel=1e-12)


def test_random_arm_hv_equals_hv_of_its_sampled_set(needle):
  x, y, ref, max_hv = needle
  tr = _run(needle, "random", se.OptimizerSettings(n_init=10, budget=200, batch_size=7), seed=1)
  assert tr.hv[-1] == pytest.approx(hypervolume_2d(y[tr.sample_idx], ref), rel=1e-12)
  assert 0 < tr.hv[-1] < max_hv


def test_ehvi_is_lamoo_ehvi_without_partitioning(needle):
  x, y, ref, _ = needle
  s = se.OptimizerSettings(n_init=10, budget=15, batch_size=5, cp=300.0)
  init = se.initial_samples(x.shape[0], 10, np.random.default_rng(4))
  # 10 samples: the CE-NAS tree (splits only above 10) is a single root, so both arms coincide.
  full = se.run_optimizer("ehvi", x, y, ref, init, s, np.random.default_rng(0))
  part = se.run_optimizer("lamoo_ehvi", x, y, ref, init, s, np.random.default_rng(0))
  np.testing.assert_array_equal(full.sample_idx, part.sample_idx)
  # And the batch is the greedy EHVI pick over every unseen candidate.
  tree = lamoo.build_tree(x[init], y[init], ref, lamoo.LaMOOConfig(max_height=0))
  unseen = np.setdiff1d(np.arange(x.shape[0]), init)
  np.testing.assert_array_equal(full.sample_idx[10:], unseen[lamoo.ehvi_select(tree, x[unseen], 5)])
  # Past 10 samples the tree splits, and partitioning changes the proposals.
  s2 = se.OptimizerSettings(n_init=10, budget=40, batch_size=5, cp=300.0)
  full = se.run_optimizer("ehvi", x, y, ref, init, s2, np.random.default_rng(0))
  part = se.run_optimizer("lamoo_ehvi", x, y, ref, init, s2, np.random.default_rng(0))
  assert not np.array_equal(full.sample_idx, part.sample_idx)
  assert np.all(np.diff(full.hv) >= 0) and np.all(np.diff(part.hv) >= 0)


def test_samples_to_target_counts_at_batch_ends():
  hv = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 6.0])
  tr = se.Trace(method="x", sample_idx=np.arange(8), hv=hv, batch_ends=np.array([2, 5, 8]))
  assert se.samples_to_target(tr, 1.0) == 2
  assert se.samples_to_target(tr, 2.0) == 5  # reached at sample 3, counted at its batch's end
  assert se.samples_to_target(tr, 5.0) == 8  # reached at sample 6, inside the last batch
  assert se.samples_to_target(tr, 6.5) is None


def test_censored_quantile():
  assert se.censored_quantile([10, 20, 30, None], 0.5) == 25.0
  assert se.censored_quantile([10, 20, 30, None], 0.25) == pytest.approx(17.5)
  assert se.censored_quantile([10, 20, 30, None], 0.75) is None  # between 30 and a censored run
  assert se.censored_quantile([10, None, None], 0.5) is None
  assert se.censored_quantile([40, 10, 20], 0.5) == 20.0


def test_summarize_ratios_and_never_reached():
  def tr(hv):
    hv = np.asarray(hv, float)
    return se.Trace(method="x", sample_idx=np.arange(hv.size), hv=hv,
                    batch_ends=np.arange(1, hv.size + 1))

  traces = {"random": [tr([1, 2, 3, 4]), tr([1, 1, 1, 4]), tr([1, 1, 1, 1])],
            "lamoo": [tr([4, 4, 4, 4]), tr([1, 4, 4, 4]), tr([1, 4, 4, 4])],
            "ehvi": [tr([1, 1, 1, 1])] * 3, "lamoo_ehvi": [tr([1, 1, 4, 4])] * 3}
  out = se.summarize(traces, max_hv=4.0, targets=(1.0,), budget=4)
  row = out["targets"]["1"]
  assert row["methods"]["random"]["samples"] == [4, 4, None]
  assert row["methods"]["random"]["median"] == 4.0
  assert row["methods"]["random"]["never_reached"] == 1
  assert row["methods"]["lamoo"]["median"] == 2.0
  assert row["ratios"]["random/lamoo"] == {"ratio": 2.0, "lower_bound": None}
  assert row["ratios"]["ehvi/lamoo_ehvi"] == {"ratio": None, "lower_bound": pytest.approx(4 / 3)}
  assert row["ratios"]["random/ehvi"] == {"ratio": None, "lower_bound": None}
  assert out["final_hv_frac"]["random"]["median"] == 1.0
  assert out["final_hv_frac"]["ehvi"]["median"] == 0.25
  q = se.hv_curve_quantiles(traces["lamoo"], 4.0)
  assert q.shape == (3, 4)
  np.testing.assert_allclose(q[0], [0.75, 0.0, 0.0, 0.0])


def test_lamoo_beats_random_where_the_front_is_a_learnable_region(needle):
  """On ``needle`` LaMOO must find the region; random search samples it 8% of the time."""
  _, _, _, max_hv = needle
  s = se.OptimizerSettings(n_init=10, budget=80, batch_size=5, cp=0.1 * max_hv)
  runs = {m: [_run(needle, m, s, seed) for seed in range(4)] for m in ("random", "lamoo")}
  final = {m: np.array([t.hv[-1] / max_hv for t in v]) for m, v in runs.items()}
  assert np.all(final["lamoo"] > final["random"])  # seed by seed, same initial cells
  assert np.median(final["lamoo"]) > 0.98 and np.median(final["random"]) < 0.95
  out = se.summarize(runs, max_hv, targets=(0.95,), budget=s.budget)["targets"]["0.95"]
  assert out["methods"]["lamoo"]["never_reached"] == 0
  assert out["methods"]["lamoo"]["median"] <= 70
  assert out["methods"]["random"]["never_reached"] >= 3


def test_study_on_the_real_table_writes_consistent_outputs(shared_data, tmp_path):
  """``benchmarks/lamoo_nb201.run`` on NB201 x HW-NAS-Bench, 2 seeds, 20 samples, in-process."""
  import json

  from benchmarks import lamoo_nb201 as study
  from cenas_jax import results

  config = study.StudyConfig(optimizer=se.OptimizerSettings(budget=20), num_seeds=2, workers=1,
                             targets=(0.9, 0.95))
  summary = study.run(config, tmp_path / "w")
  assert summary["n_candidates"] == 12554
  assert summary["max_hv"] == pytest.approx(4152.71, abs=0.01)
  for name in ("summary.json", "samples_to_target.csv", "hv_regret.csv", "hv_vs_samples.png",
               "summary.md", "results.jsonl"):
    assert (tmp_path / "w" / name).is_file(), name
  recs = results.read_results(tmp_path / "w")
  assert len(recs) == 8 and {r["method"] for r in recs} == set(se.METHODS)
  for seed in (0, 1):  # every method of a seed starts from the same 10 cells
    inits = {json.dumps(r["init_idx"]) for r in recs if r["seed"] == seed}
    assert len(inits) == 1
  for r in recs:
    assert r["batch_ends"] == [10, 15, 20]
    assert np.all(np.diff(r["hv_at_batch_ends"]) >= 0)
    for t, n in r["samples_to_target"].items():
      hv = np.asarray(r["hv_at_batch_ends"])
      reached = hv >= float(t) * summary["max_hv"] - 1e-3  # the record's HV is rounded to 1e-4
      assert n == (r["batch_ends"][int(np.argmax(reached))] if reached.any() else None)
    assert r["samples_to_target"]["0.9"] == summary["targets"]["0.9"]["methods"][r["method"]][
        "samples"][r["seed"]]
  again = study.run(config, tmp_path / "w")  # finished: loaded, not rerun
  assert again["targets"] == json.loads(json.dumps(results.to_json_safe(summary["targets"])))
