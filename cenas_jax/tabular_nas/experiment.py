"""Energy-aware vs accuracy-only NAS on a tabular dataset: ``run(config, workdir)``.

Per seed: SPOS-train one masked supernet; on copies of it, run the accuracy-only controller, the
energy-aware controller (TabNAS / TuNAS / MnasNet reward, budget E0) and the energy-aware controller
at every E0 of ``e0_sweep``; to compare front-finders like with like, random search, and the
controller and regularized evolution each over the ladder of budgets ``front_quantiles`` (the
budgets share the step count: ``search.run_ladder``); all for the same number of steps. Retrain
the energy-aware and accuracy-only winners from scratch on the TabZilla training rows (early
stopping on the validation fold), and with ``judge_fronts`` every method's front; price the
winners at batch 1 and at ``deploy_batch`` with the per-layer energy lookup on the materialized
networks.

Writes ``summary.json`` (both architectures, ``energy_saving`` = 1 - E_energy / E_accuracy,
``accuracy_delta`` in percentage points or the relative RMSE change, medians and spread over
seeds, hypervolume per method of its retrained front and as scored during the search, the
E0-swept front), ``pareto.csv`` (every candidate evaluated), ``pareto.png``, ``fronts.png`` (the
first seed's retrained fronts) and ``seeds/seed_<s>.json``; a finished seed is not run again when
the same workdir is used again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from cenas_jax import energy, plots, results
from cenas_jax import workdir as workdir_lib
from cenas_jax.controller import arch_policy
from cenas_jax.errors import ConfigError
from cenas_jax.fileio import atomic_write_json
from cenas_jax.moo.hypervolume import hypervolume_2d
from cenas_jax.spaces.tabular import make_space
from cenas_jax.tabular_nas import data as data_lib
from cenas_jax.tabular_nas import energy_lut, retrain, search
from cenas_jax.training import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class TabularSearchConfig:
  """Flags of ``experiments.tabular_search`` (see its help)."""

  dataset: str = "adult"
  target: str = ""
  task: Literal["auto", "binclass", "multiclass", "regression"] = "auto"
  space: Literal["mlp", "resnet", "ftt"] = "mlp"
  seeds: tuple[int, ...] = (0, 1, 2)
  fold: int = 0
  depths: tuple[int, ...] = ()
  widths: tuple[int, ...] = ()
  hidden_widths: tuple[int, ...] = ()
  dropouts: tuple[float, ...] = ()
  heads: tuple[int, ...] = ()
  ffn_ratios: tuple[float, ...] = ()
  batch_size: int = 256
  lr: float = 1e-3
  spos_steps: int = 300
  search_steps: int = 100
  candidates: int = 8
  val_batch: int = 256
  score_dropout: bool = False
  n_mc: int = 256
  reward: Literal["tabnas", "tunas", "mnasnet"] = "tabnas"
  controller_lr: float = 0.05
  controller_baseline: Literal["ema", "loo"] = "ema"
  beta: float = -0.5
  e0_quantile: float = 0.05
  e0_sweep: tuple[float, ...] = (0.02, 0.2, 0.5)
  front_quantiles: tuple[float, ...] = (0.01, 0.05, 0.2, 0.5)
  judge_fronts: bool = True
  baselines: bool = True
  device: str = "h100-sxm"
  deploy_batch: int = 4096
  retrain_epochs: int = 30
  patience: int = 5
  retrain_steps_per_epoch: int = 0

  def __post_init__(self):
    if not self.seeds:
      raise ConfigError("seeds", "needs at least one seed.")
    for name in ("spos_steps", "search_steps", "candidates", "val_batch", "batch_size",
                 "deploy_batch", "retrain_epochs", "n_mc"):
      if getattr(self, name) < 1:
        raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}.")
    if self.controller_baseline == "loo" and self.candidates < 2:
      raise ConfigError("controller_baseline", "loo compares each candidate with the step's "
                        "others: it needs --candidates >= 2.")
    if self.score_dropout and self.space == "ftt":
      raise ConfigError("score_dropout", "the FT-Transformer space has no dropout decisions to "
                        "score (its dropout is fixed); use it with --space=mlp or resnet.")
    if not self.front_quantiles:
      raise ConfigError("front_quantiles", "needs at least one quantile.")
    for name in ("e0_quantile", "front_quantiles", *(["e0_sweep"] if self.e0_sweep else [])):
      vals = getattr(self, name)
      vals = vals if isinstance(vals, tuple) else (vals,)
      if any(not 0 < v < 1 for v in vals):
        raise ConfigError(name, f"quantiles must be in (0, 1), got {vals}.")
    if self.device not in energy.DEVICE_SPECS:
      raise ConfigError("device", f"unknown device {self.device!r}; one of "
                        f"{sorted(energy.DEVICE_SPECS)}.")

  def space_for(self, split: data_lib.Split):
    """The search space of these settings over ``split``'s columns (one-hot widths follow its
    training rows)."""
    return make_space(self.space, split.d_in, split.d_out, depths=self.depths, widths=self.widths,
                      hidden_widths=self.hidden_widths, dropouts=self.dropouts, heads=self.heads,
                      ffn_ratios=self.ffn_ratios, cat_cardinalities=split.cat_cardinalities)


class _Progress:
  def __init__(self, total: int, label: str):
    self.total, self.label, self.t0, self.last = total, label, time.perf_counter(), 0.0

  def __call__(self, done: int) -> None:
    now = time.perf_counter()
    if now - self.last < 10 and done + 1 < self.total:
      return
    self.last = now
    rate = (done + 1) / max(now - self.t0, 1e-9)
    print(f"  {self.label}: {done + 1}/{self.total} steps, ETA {(self.total - done - 1) / rate:.0f} s",
          flush=True)


def _front_hv(q: np.ndarray, e: np.ndarray, q_ref: float, e_ref: float) -> float:
  return hypervolume_2d(np.stack([q, -e / e_ref], 1), np.array([q_ref, -1.0]))


def _test_quality(split: data_lib.Split, test: dict) -> float:
  """A retrained network's test metrics on the search's quality scale (accuracy, or
  ``1 - RMSE`` of the standardized target)."""
  return 1.0 - test["rmse"] / split.y_std if split.task == "regression" else test["accuracy"]


def _constant_quality(split: data_lib.Split) -> float:
  """Test quality of the best constant prediction (the training majority class or mean): the
  hypervolume's quality reference, so it does not depend on which methods ran."""
  y_train, y_test = split.y[split.train], split.y[split.test]
  if split.task == "regression":
    return float(1.0 - np.sqrt(np.mean(np.square(y_test - y_train.mean()))))
  majority = np.bincount(y_train.astype(np.int64)).argmax()
  return float(np.mean(y_test == majority))


def _search_front(space, records: list[dict]) -> list[dict]:
  """The records non-dominated in (search-time quality, energy), one per architecture."""
  by_arch: dict = {}
  for r in records:
    by_arch.setdefault(tuple(space.canonical(np.asarray(r["arch"]))), r)
  sel = list(by_arch.values())
  q = np.array([r["quality"] for r in sel])
  e = np.array([r["energy_j"] for r in sel])
  return [r for r, qi, ei in zip(sel, q, e)
          if not np.any((q >= qi) & (e <= ei) & ((q > qi) | (e < ei)))]


def _method_fronts(records: list[dict], space, split: data_lib.Split, retrained: Callable,
                   e_ref: float) -> tuple[dict, dict]:
  """Each method's front, judged by retraining: the architectures a method found non-dominated
  by its search-time scores (one random validation batch each, so the best of many is biased
  upwards, and each method's own supernet copy) are retrained from scratch, and the hypervolume
  of their (test quality, -energy / e_ref) points is taken against the constant prediction's
  quality. Returns the hypervolume per method and the retrained fronts."""
  q_ref = _constant_quality(split)
  hv, fronts = {}, {}
  for m in sorted({r["method"] for r in records}):
    front = _search_front(space, [r for r in records if r["method"] == m])
    q = np.array([_test_quality(split, retrained(np.asarray(r["arch"]))["test"]) for r in front])
    e = np.array([r["energy_j"] for r in front])
    hv[m] = _front_hv(q, e, q_ref, e_ref)
    fronts[m] = [{"arch": r["arch"], "arch_desc": space.describe(np.asarray(r["arch"])),
                  "search_quality": r["quality"], "test_quality": float(qi),
                  "energy_j": float(ei)} for r, qi, ei in zip(front, q, e)]
  return hv, fronts


def _run_seed(config: TabularSearchConfig, split: data_lib.Split, space, luts, seed: int) -> dict:
  mesh = mesh_lib.make_data_mesh()
  n_dev = mesh_lib.data_size(mesh)
  bs = -(-config.batch_size // n_dev) * n_dev
  lut = luts[config.deploy_batch]
  energy_fn = lut.energy_j
  rng = np.random.default_rng(seed)
  uniform_e = energy_fn(space.sample(rng, 512))
  e_ref = float(uniform_e.max())

  def e0(qv):
    return float(np.quantile(uniform_e, qv))

  t0 = time.perf_counter()
  net = search.Supernet(space, split, mesh, bs, config.candidates, config.val_batch, lr=config.lr,
                        seed=seed, score_dropout=config.score_dropout)
  print(f"[seed {seed}] SPOS supernet training ({config.spos_steps} steps)", flush=True)
  search.spos(net, config.spos_steps, _Progress(config.spos_steps, f"seed {seed} spos"))
  pconf = arch_policy.PolicyConfig(reward=config.reward, lr=config.controller_lr, beta=config.beta,
                                   baseline=config.controller_baseline)
  aconf = arch_policy.PolicyConfig(reward="accuracy", lr=config.controller_lr,
                                   baseline=config.controller_baseline)
  obj = search.Objective(config.reward, energy_fn, e0(config.e0_quantile))
  acc_obj = search.Objective("accuracy", energy_fn, e0(config.e0_quantile))
  steps = config.search_steps
  out: dict = {"seed": seed, "e0_j": obj.e0_j, "records": []}

  def go(label, fn):
    print(f"[seed {seed}] {label} ({steps} steps)", flush=True)
    return fn(_Progress(steps, f"seed {seed} {label}"))

  acc_arch, rec, _ = go("accuracy-only controller", lambda p: search.run_controller(
      net.copy(seed + 10), acc_obj, aconf, steps, seed + 10, method="accuracy_only", progress=p))
  out["records"] += rec
  en_arch, rec, info = go(f"energy-aware controller ({config.reward})", lambda p: search.run_controller(
      net.copy(seed + 20), obj, pconf, steps, seed + 20, method="energy_aware", n_mc=config.n_mc,
      progress=p))
  out["records"] += rec
  out["skipped_steps"] = info["skipped_steps"]
  if config.baselines:
    ladder = [search.Objective(config.reward, energy_fn, e0(qv)) for qv in config.front_quantiles]
    _, rec = go("random search", lambda p: search.run_random(net.copy(seed + 30), obj, pconf, steps,
                                                             seed + 30, progress=p))
    out["records"] += rec
    _, rec = go("regularized evolution over the budget ladder", lambda p: search.run_ladder(
        search.run_evolution, net.copy(seed + 40), ladder, pconf, steps, seed + 40,
        method="evolution", progress=p))
    out["records"] += rec
    _, rec = go("energy-aware controller over the budget ladder", lambda p: search.run_ladder(
        search.run_controller, net.copy(seed + 60), ladder, pconf, steps, seed + 60,
        method="energy_aware_ladder", n_mc=config.n_mc, progress=p))
    out["records"] += rec
  sweep = []
  for i, qv in enumerate(config.e0_sweep):
    o = search.Objective(config.reward, energy_fn, e0(qv))
    arch, rec, _ = go(f"E0 sweep q={qv}", lambda p: search.run_controller(
        net.copy(seed + 50 + i), o, pconf, steps, seed + 50 + i, method=f"sweep_q{qv}",
        n_mc=config.n_mc, progress=p))
    sweep.append({"e0_quantile": qv, "e0_j": o.e0_j, "arch": arch})
  # Winners' supernet quality on the whole validation fold, for the E0 front.
  if sweep:
    archs = np.array([s["arch"] for s in sweep])
    for s, qi, ei in zip(sweep, search.score_on_val(net, archs), energy_fn(archs)):
      s.update(arch=s["arch"].tolist(), arch_desc=space.describe(np.asarray(s["arch"])),
               supernet_val_quality=float(qi), energy_j=float(ei))
  out["e0_front"] = sweep
  out["search_s"] = time.perf_counter() - t0

  # Hypervolume of the (quality, -energy) front of every method's evaluated candidates: as
  # scored during the search (reference: the worst record) and, with judge_fronts, retrained.
  recs = out["records"]
  q_ref = float(min(r["quality"] for r in recs))
  out["hypervolume_search"] = {}
  for m in sorted({r["method"] for r in recs}):
    sel = [r for r in recs if r["method"] == m]
    out["hypervolume_search"][m] = _front_hv(np.array([r["quality"] for r in sel]),
                                             np.array([r["energy_j"] for r in sel]), q_ref, e_ref)
  cache: dict = {}

  def retrained(arch: np.ndarray) -> dict:
    """Retrains ``arch`` once per seed (the same seed and settings for every method)."""
    key = tuple(space.canonical(arch))
    if key not in cache:
      print(f"[seed {seed}] retraining {space.describe(arch)} ({len(cache) + 1} so far)",
            flush=True)
      cache[key] = retrain.retrain(
          space, split, arch, mesh=mesh, seed=seed, batch_size=bs, lr=config.lr,
          max_epochs=config.retrain_epochs, patience=config.patience,
          max_steps_per_epoch=config.retrain_steps_per_epoch)
    return dict(cache[key])

  if config.judge_fronts:
    t1 = time.perf_counter()
    out["hypervolume"], out["fronts"] = _method_fronts(recs, space, split, retrained, e_ref)
    out["fronts_retrain_s"] = time.perf_counter() - t1
  winners = {}
  for name, arch in (("energy_aware", en_arch), ("accuracy_only", acc_arch)):
    r = retrained(arch)
    r["arch"] = arch.tolist()
    r["arch_desc"] = space.describe(arch)
    r["decoded"] = space.decode(arch)
    for b, l in luts.items():
      r[f"energy_per_sample_j_batch{b}"] = float(l.energy_j(arch)) / b
    winners[name] = r
  out["winners"] = winners
  for b in luts:
    key = f"energy_per_sample_j_batch{b}"
    out[f"energy_saving_batch{b}"] = 1 - winners["energy_aware"][key] / winners["accuracy_only"][key]
  ta, tb = winners["energy_aware"]["test"], winners["accuracy_only"]["test"]
  if split.task == "regression":
    out["rmse_rel_change"] = ta["rmse"] / tb["rmse"] - 1
  else:
    out["accuracy_delta_pt"] = 100 * (ta["accuracy"] - tb["accuracy"])
    out["auc_delta"] = ta["auc"] - tb["auc"]
  out["seed_s"] = time.perf_counter() - t0
  return out


def _spread(values: list[float]) -> dict:
  v = np.asarray(values, float)
  return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
          "values": v.tolist()}


def run(config: TabularSearchConfig, workdir: str) -> dict:
  """Runs every seed (skipping finished ones found in ``workdir``) and writes the summary."""
  # Check the workdir and load every input before the first write, so a bad start writes nothing.
  guard = workdir_lib.prepare_workdir(workdir, config, kind="tabular_search",
                                      may_change=("seeds",))
  ds = data_lib.load_dataset(config.dataset, config.target, config.task)
  split = data_lib.prepare(ds, fold=config.fold)
  space = config.space_for(split)
  model = energy.prior_model(config.device)
  guard.claim()
  wd = Path(workdir)
  (wd / "seeds").mkdir(parents=True, exist_ok=True)
  luts = {}
  for b in sorted({1, config.deploy_batch}):
    luts[b] = energy_lut.EnergyLookup(space, model, b)
    luts[b].load(wd / f"energy_lut_batch{b}.json")
  print(f"{ds.name}: {split.task}, {len(split.train)}/{len(split.val)}/{len(split.test)} rows "
        f"(train/val/test), d_in={split.d_in}; {space.kind} space of {space.size:.3g} "
        f"architectures; energy {luts[config.deploy_batch].label}", flush=True)
  per_seed = []
  t0 = time.perf_counter()
  for i, seed in enumerate(config.seeds):
    path = wd / "seeds" / f"seed_{seed}.json"
    if path.exists():
      per_seed.append(json.loads(path.read_text()))
      print(f"[seed {seed}] found in {path}, not run again", flush=True)
      continue
    res = _run_seed(config, split, space, luts, seed)
    # The summary's provenance names the code that wrote the summary; a resumed workdir may
    # hold seeds run by older code, so each seed records its own.
    res["provenance"] = {k: v for k, v in results.collect_provenance().items()
                         if k in ("git_commit", "git_dirty", "time_utc")}
    for b, l in luts.items():
      l.save(wd / f"energy_lut_batch{b}.json")
    atomic_write_json(path, results.to_json_safe(res))
    per_seed.append(res)
    done = time.perf_counter() - t0
    left = len(config.seeds) - i - 1
    print(f"[seed {seed}] done in {res['seed_s']:.0f} s; ETA for the {left} seeds left "
          f"{done / (i + 1) * left:.0f} s", flush=True)
  return _summarize(config, split, space, luts, per_seed, wd)


def _summarize(config, split, space, luts, per_seed, wd: Path) -> dict:
  summary: dict = {"dataset": split.name, "task": split.task, "space": space.kind,
                   "space_size": float(space.size), "device": config.device,
                   "energy_source": luts[config.deploy_batch].label,
                   "deploy_batch": config.deploy_batch, "reward": config.reward,
                   "config": dataclasses.asdict(config)}
  keys = [k for k in per_seed[0] if k.startswith("energy_saving") or k in (
      "accuracy_delta_pt", "auc_delta", "rmse_rel_change", "seed_s", "search_s")]
  for k in keys:
    summary[k] = _spread([s[k] for s in per_seed])
  summary["energy_saving"] = summary[f"energy_saving_batch{config.deploy_batch}"]
  if "accuracy_delta_pt" in summary:
    summary["accuracy_delta"] = summary["accuracy_delta_pt"]
  else:
    summary["accuracy_delta"] = summary["rmse_rel_change"]
  for key in ("hypervolume", "hypervolume_search"):
    if all(key in s for s in per_seed):
      summary[key] = {m: _spread([s[key][m] for s in per_seed]) for m in sorted(per_seed[0][key])}
  if "hypervolume" not in summary:
    summary["hypervolume_note"] = ("fronts not retrained (--judge_fronts=false): only the "
                                   "search-time hypervolume, biased by batch noise, is given")
  summary["seeds"] = [{k: v for k, v in s.items() if k != "records"} for s in per_seed]
  rows = []
  seen = set()
  for s in per_seed:
    for r in s["records"]:
      key = (s["seed"], r["method"], tuple(space.canonical(np.asarray(r["arch"]))))
      if key in seen:
        continue
      seen.add(key)
      rows.append({"seed": s["seed"], "method": r["method"], "step": r["step"],
                   "arch": space.describe(np.asarray(r["arch"])),
                   "supernet_val_quality": r["quality"],
                   "energy_per_sample_j": r["energy_j"] / config.deploy_batch})
  mask = results.write_pareto_csv(wd / "pareto.csv", rows, ["supernet_val_quality",
                                                            "energy_per_sample_j"],
                                  maximize=[True, False])
  pts = np.array([[r["energy_per_sample_j"], r["supernet_val_quality"]] for r in rows])
  plots.plot_pareto(wd / "pareto.png", pts, mask,
                    (f"predicted energy per sample at batch {config.deploy_batch} (J)",
                     "supernet validation quality"),
                    title=f"{split.name} / {space.kind}: every candidate evaluated")
  first = per_seed[0]
  if "fronts" in first:
    hv = summary["hypervolume"]
    plots.plot_fronts(
        wd / "fronts.png",
        {f"{m} (HV {hv[m]['median']:.4f})": (
            [f["energy_j"] / config.deploy_batch for f in first["fronts"][m]],
            [f["test_quality"] for f in first["fronts"][m]]) for m in sorted(first["fronts"])},
        (f"predicted energy per sample at batch {config.deploy_batch} (J)",
         "test quality, retrained" + (" (1 - RMSE / std)" if split.task == "regression" else "")),
        title=f"{split.name} / {space.kind}: each method's front retrained",
        note=f"seed {first['seed']}; HV: median over {len(per_seed)} seed(s)")
  results.write_summary(wd, summary, {
      "seed": list(config.seeds), "energy_source": summary["energy_source"], "ci_source": None,
      "data_hashes": split.data_hashes})
  return summary
