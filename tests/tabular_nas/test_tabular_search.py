"""``run(config, workdir)`` of the tabular search end to end on tiny data, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cenas_jax.errors import CenasError, ConfigError
from cenas_jax.spaces.tabular import make_space
from cenas_jax.tabular_nas import experiment
from flagfiles import config_from_flagfile

_REPO = Path(__file__).resolve().parents[2]


def _csv(path: Path, *, n=240, task="binclass", one_class=False, nan_column=False) -> Path:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 3))
  color = rng.choice(["red", "green", "blue"], n)
  if task == "regression":
    y = [f"{v:.4f}" for v in x[:, 0] * 2 + (color == "red")]
  else:
    y = ["yes" if (v > 0 or one_class) else "no" for v in x[:, 0] + 0.3 * x[:, 1]]
  lines = ["a,b,c,color,label" + (",empty" if nan_column else "")]
  for i in range(n):
    lines.append(f"{x[i, 0]:.4f},{x[i, 1]:.4f},{x[i, 2]:.4f},{color[i]},{y[i]}"
                 + (",?" if nan_column else ""))
  path.write_text("\n".join(lines) + "\n")
  return path


def _config(csv: Path, **kw) -> experiment.TabularSearchConfig:
  base = dict(dataset=f"csv:{csv}", target="label", seeds=(0,), depths=(1, 2), widths=(4, 16),
              hidden_widths=(4, 8), dropouts=(0.0, 0.1), batch_size=32, spos_steps=4,
              search_steps=3, candidates=2, val_batch=16, n_mc=16, e0_sweep=(0.5,),
              deploy_batch=64, retrain_epochs=2, patience=1, retrain_steps_per_epoch=3)
  base.update(kw)
  return experiment.TabularSearchConfig(**base)


@pytest.mark.parametrize("space,task", [("mlp", "binclass"), ("resnet", "regression")])
def test_run_writes_summary_front_and_resumes(tmp_path, space, task):
  csv = _csv(tmp_path / "d.csv", task=task)
  wd = tmp_path / "w"
  summary = experiment.run(_config(csv, space=space), str(wd))
  doc = json.loads((wd / "summary.json").read_text())
  assert doc["space"] == space and doc["task"] == task
  seed = doc["seeds"][0]
  # Each seed names the code that ran it (a resumed workdir may mix commits).
  assert set(seed["provenance"]) == {"git_commit", "git_dirty", "time_utc"}
  ea, ao = seed["winners"]["energy_aware"], seed["winners"]["accuracy_only"]
  saving = 1 - ea["energy_per_sample_j_batch64"] / ao["energy_per_sample_j_batch64"]
  assert summary["energy_saving"]["median"] == pytest.approx(saving)
  assert ea["energy_per_sample_j_batch1"] > 0
  # The energy-aware winner respects the budget E0 (TabNAS rejection sampling).
  assert ea["energy_per_sample_j_batch64"] * 64 <= seed["e0_j"] * (1 + 1e-9)
  metric = "rmse" if task == "regression" else "accuracy"
  assert np.isfinite(ea["test"][metric]) and np.isfinite(ao["test"][metric])
  methods = {"accuracy_only", "energy_aware", "random", "evolution", "energy_aware_ladder"}
  assert set(doc["hypervolume"]) == set(doc["hypervolume_search"]) == methods
  # The hypervolume judges each method's front retrained: the winners were among the retrained.
  fronts = seed["fronts"]
  tested = {f["arch_desc"]: f["test_quality"] for m in fronts for f in fronts[m]}
  if task == "binclass" and ao["arch_desc"] in tested:
    assert tested[ao["arch_desc"]] == pytest.approx(ao["test"]["accuracy"])
  for m in methods:
    assert doc["hypervolume"][m]["median"] >= 0 and fronts[m]
  assert len(seed["e0_front"]) == 1
  rows = (wd / "pareto.csv").read_text().splitlines()
  assert rows[0].endswith("is_pareto") and len(rows) > 5
  assert (wd / "pareto.png").stat().st_size > 0 and (wd / "fronts.png").stat().st_size > 0
  # Run again: the finished seed is read back, not recomputed.
  again = experiment.run(_config(csv, space=space), str(wd))
  assert again["energy_saving"] == summary["energy_saving"]


def test_run_ftt_space_embeds_categorical_columns_and_retrains(tmp_path):
  csv = _csv(tmp_path / "d.csv")
  wd = tmp_path / "w"
  summary = experiment.run(_config(csv, space="ftt", widths=(8, 16), heads=(1, 2),
                                   ffn_ratios=(1.0, 2.0)), str(wd))
  assert summary["space"] == "ftt"
  seed = summary["seeds"][0]
  for name in ("energy_aware", "accuracy_only"):
    w = seed["winners"][name]
    d = w["decoded"]
    # 3 numeric tokens, one token for the categorical column 'color', and the CLS token.
    assert d["kind"] == "ftt" and d["n_tokens"] == 5 and d["head_dim"] == 8
    assert w["arch_desc"].startswith("ftt(") and 0.0 <= w["test"]["accuracy"] <= 1.0
    assert w["energy_per_sample_j_batch1"] > w["energy_per_sample_j_batch64"] > 0
  ea = seed["winners"]["energy_aware"]
  assert ea["energy_per_sample_j_batch64"] * 64 <= seed["e0_j"] * (1 + 1e-9)
  assert set(summary["hypervolume"]) >= {"accuracy_only", "energy_aware", "random", "evolution"}
  assert np.isfinite(summary["energy_saving"]["median"])


@pytest.mark.parametrize("kw,field", [
    (dict(dataset="nope"), "dataset"),
    (dict(target=""), "target"),
    (dict(target="missing_column"), None),
])
def test_bad_dataset_flags_are_one_clear_error(tmp_path, kw, field):
  csv = _csv(tmp_path / "d.csv")
  with pytest.raises(CenasError) as e:
    experiment.run(_config(csv, **kw), str(tmp_path / "w"))
  if field:
    assert isinstance(e.value, ConfigError) and e.value.field == field
  assert "missing_column" in str(e.value) or field


def test_leave_one_out_baseline_needs_two_candidates():
  with pytest.raises(ConfigError) as e:
    experiment.TabularSearchConfig(controller_baseline="loo", candidates=1)
  assert e.value.field == "controller_baseline"


def test_score_dropout_needs_a_space_with_dropout_decisions():
  with pytest.raises(ConfigError) as e:
    experiment.TabularSearchConfig(space="ftt", score_dropout=True)
  assert e.value.field == "score_dropout"
  assert experiment.TabularSearchConfig(space="resnet", score_dropout=True).score_dropout


def test_non_numeric_regression_target_is_refused(tmp_path):
  with pytest.raises(CenasError, match="label"):
    experiment.run(_config(_csv(tmp_path / "a.csv"), task="regression"), str(tmp_path / "w"))


def test_one_class_and_nan_only_columns_are_refused(tmp_path):
  with pytest.raises(ConfigError, match="class"):
    experiment.run(_config(_csv(tmp_path / "a.csv", one_class=True)), str(tmp_path / "w"))
  with pytest.raises(ConfigError, match="'empty'.*only missing"):
    experiment.run(_config(_csv(tmp_path / "b.csv", nan_column=True)), str(tmp_path / "w"))


def test_binary_prints_one_line_without_traceback(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(_REPO))
  proc = subprocess.run([sys.executable, "-m", "experiments.tabular_search", "--dataset=nope",
                         f"--workdir={tmp_path}"], cwd=_REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert "error: --dataset: unknown dataset 'nope'" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_binary_auc_matches_the_pairwise_definition():
  from cenas_jax.tabular_nas.retrain import binary_auc  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 60)
  s = np.round(rng.normal(size=60) + y, 1)  # ties included
  pos, neg = s[y == 1], s[y == 0]
  pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  assert binary_auc(y, s) == pytest.approx(pairs)


@pytest.mark.parametrize("task", ["binclass", "regression"])
def test_pooled_metrics_over_folds_equal_the_row_weighted_fold_metrics(tmp_path, task):
  from cenas_jax.tabular_nas import data as data_lib  # pylint: disable=import-outside-toplevel
  from cenas_jax.tabular_nas import retrain  # pylint: disable=import-outside-toplevel

  ds = data_lib.load_dataset(f"csv:{_csv(tmp_path / 'd.csv', task=task)}", "label")
  rng = np.random.default_rng(1)
  parts = []
  for fold in (0, 3, 7):
    split = data_lib.prepare(ds, fold=fold)
    parts.append((split, rng.normal(size=(len(split.test), split.d_out)).astype(np.float32)))
  pooled = retrain.pooled_metrics(parts)
  per_fold = [(retrain.metrics(s, out, s.test), len(s.test)) for s, out in parts]
  n = sum(k for _, k in per_fold)
  if task == "regression":
    # Each fold standardizes the target by its own training rows; pooled errors are in its units.
    assert len({s.y_std for s, _ in parts}) == 3
    want = np.sqrt(sum(m["rmse"] ** 2 * k for m, k in per_fold) / n)
    assert pooled["rmse"] == pytest.approx(want, rel=1e-6)
  else:
    want = sum(m["accuracy"] * k for m, k in per_fold) / n
    assert pooled["accuracy"] == pytest.approx(want) and 0.0 <= pooled["auc"] <= 1.0


def test_with_dropout_sets_every_dropout_decision_and_nothing_else():
  space = make_space("resnet", 5, 2, depths=(1, 2, 3), dropouts=(0.1, 0.5, 0.9))
  arch = space.sample(np.random.default_rng(0))
  out = space.with_dropout(arch, 0.5)
  for i, d in enumerate(space.decisions):
    assert out[i] == (1 if d.name.startswith("dropout") else arch[i])
  assert all(rate == 0.5 for b in space.decode(out)["blocks"] for rate in (b["dropout1"], b["dropout2"]))


def test_with_dropout_refuses_a_foreign_rate_and_a_space_without_dropout_decisions():
  space = make_space("resnet", 5, 2, depths=(1, 2), dropouts=(0.1, 0.5))
  with pytest.raises(ValueError, match="not one of the space's rates"):
    space.with_dropout(space.sample(np.random.default_rng(0)), 0.3)
  ftt = make_space("ftt", 5, 2, widths=(8,), depths=(1,), heads=(1,), ffn_ratios=(1.0,))
  with pytest.raises(ValueError, match="no dropout decisions"):
    ftt.with_dropout(ftt.sample(np.random.default_rng(0)), ftt.dropouts[0])


def test_tabular_flagfiles_parse_to_their_stated_settings(monkeypatch):
  monkeypatch.chdir(_REPO)  # nested --flagfile lines are relative to the repository root
  cfg = experiment.TabularSearchConfig
  adult = config_from_flagfile(cfg, "tabular_adult.flags")
  assert (adult.dataset, adult.space, adult.seeds, adult.dropouts) == ("adult", "mlp", (0, 1, 2), ())
  assert (adult.reward, adult.e0_quantile, adult.deploy_batch) == ("tabnas", 0.01, 4096)
  california = config_from_flagfile(cfg, "tabular_california.flags")
  assert (california.dataset, california.retrain_epochs, california.judge_fronts) == (
      "california_housing", 100, False)
  resnet = config_from_flagfile(cfg, "tabular_resnet.flags", "--dataset=german_credit")
  assert (resnet.dataset, resnet.space, resnet.dropouts) == ("german_credit", "resnet", (0.1,))
  assert resnet.widths == tuple(range(16, 257, 16))
  assert resnet.hidden_widths == tuple(range(32, 513, 32))
  assert resnet.spos_steps == adult.spos_steps and resnet.search_steps == adult.search_steps
  space = make_space("resnet", 14, 2, widths=resnet.widths, hidden_widths=resnet.hidden_widths,
                     dropouts=resnet.dropouts)
  blocks = space.decode(space.sample(np.random.default_rng(0)))["blocks"]
  assert {b[k] for b in blocks for k in ("dropout1", "dropout2")} == {0.1}  # none left to search
