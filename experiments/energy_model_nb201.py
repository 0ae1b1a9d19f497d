r"""Validates the per-kernel energy model on measured NB201 energy and latency (HW-NAS-Bench).

  python -m experiments.energy_model_nb201 --workdir=W

Extracts the ``gpu``-mode kernels of the NB201 network for every cell with hardware data
(``cenas_jax.energy.nb201_kernels``, cached in ``W/features.npz``), fits the per-kernel model on a
random 70 % of the cells (``--seed``) and reports on the other 30 %: RMSPE, share within +-10 %,
Spearman and Kendall correlation, next to linear baselines on FLOPs (MACs) and on parameter count.

Default targets: HW-NAS-Bench ``edgegpu_energy`` (mJ) and ``edgegpu_latency`` (ms) of a Jetson TX2
(``--device_spec=jetson-tx2``). Any per-cell column of a CSV keyed by ``arch_index`` or
``arch_str`` works too::

  python -m experiments.energy_model_nb201 --workdir=W --targets_csv=PATH \
      --target_column=NAME [--target_unit=mJ|J|ms|s|us] --device_spec=NAME --batch_size=N

Writes ``W/metrics.json`` (``{target: {model: {rmspe, acc10, spearman, kendall}}}``, fractions),
``W/predictions.csv``, ``W/summary.json`` (metrics, split, fitted models, timings, provenance),
``W/kernel_model_<target>.json`` and ``W/scatter_<target>.png`` for energy targets.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from cenas_jax.errors import DataError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory (features.npz there is reused).",
                    required=True)
flags.DEFINE_integer("seed", 0, "Seed of the 70/30 train/test split.")
flags.DEFINE_float("train_fraction", 0.7, "Share of cells the models are fitted on.")
flags.DEFINE_string("device_spec", "jetson-tx2", "DEVICE_SPECS key of the analytical prior.")
flags.DEFINE_integer("batch_size", 1, "Images per call the kernels are extracted at.")
flags.DEFINE_string("targets_csv", None,
                    "CSV with one row per cell (arch_index or arch_str column); default: the "
                    "HW-NAS-Bench table's edgegpu_energy and edgegpu_latency.")
flags.DEFINE_string("target_column", None, "Column of --targets_csv to fit and validate against.")
flags.DEFINE_enum("target_unit", "auto", ["auto", "J", "mJ", "s", "ms", "us"],
                  "Unit of --target_column (auto: from a _j/_mj/_s/_ms/_us suffix or the name).")
flags.DEFINE_float("ridge", 0.0, "Pull of the fitted kernel model towards its prior (relative); "
                   "0: chosen by 5-fold cross-validation on the training cells from --ridge_grid.")
flags.DEFINE_list("ridge_grid", ["1e-6", "1e-4", "1e-2", "1"], "Candidates for --ridge=0.")
flags.DEFINE_integer("limit", 0, "Use only the first N cells (0: all); for quick runs.")
flags.DEFINE_integer("workers", 2, "Processes for kernel extraction (spawn).")

TABLE_TARGETS = {"edgegpu_energy": "edgegpu_energy_mj", "edgegpu_latency": "edgegpu_latency_ms"}
_SCALE = {"J": 1.0, "mJ": 1e-3, "s": 1.0, "ms": 1e-3, "us": 1e-6}
MODELS = ("kernel_model", "flops_linear", "params_linear")


@dataclasses.dataclass(frozen=True)
class Target:
  """One per-cell measurement to fit and validate against.

  Attributes:
    name: key in metrics.json.
    kind: ``energy`` (fitted with ``fit_energy_model``) or ``latency`` (time model).
    arch_index: int64 ``(n,)`` NB201 indices of the cells that have a value.
    value_si: float64 ``(n,)`` values in J or s.
    unit: unit of the source column.
    source: where the values came from.
  """

  name: str
  kind: str
  arch_index: np.ndarray
  value_si: np.ndarray
  unit: str
  source: str


def _infer_kind_unit(column: str, unit: str) -> tuple[str, str]:
  low = column.lower()
  suffix_units = (("_mj", "mJ"), ("_us", "us"), ("_ms", "ms"), ("_j", "J"), ("_s", "s"))
  if unit == "auto":
    unit = next((u for suf, u in suffix_units if low.endswith(suf)), "")
    if not unit and ("energy" in low or "latency" in low):
      unit = "mJ" if "energy" in low else "ms"  # HW-NAS-Bench convention
    if not unit:
      raise ValueError(f"--target_column={column!r}: cannot tell its unit; pass --target_unit")
  kind = "energy" if unit in ("J", "mJ") else "latency"
  return kind, unit


def _read_targets_csv(path: str, column: str, unit: str, table: Any) -> Target:
  """Reads one target column of a CSV keyed by arch_index or arch_str (strict)."""
  from cenas_jax.data.paths import require_file  # pylint: disable=g-import-not-at-top

  p = require_file(Path(path), what=f"--targets_csv {path}")
  idx, vals = [], []
  with open(p, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    if column not in header:
      raise DataError(f"{p}: no column {column!r} (columns: {header}); pass --target_column")
    key = "arch_index" if "arch_index" in header else "arch_str" if "arch_str" in header else None
    if key is None:
      raise DataError(f"{p}: needs an 'arch_index' or 'arch_str' column to identify cells")
    kind, unit = _infer_kind_unit(column, unit)
    for line, row in enumerate(reader, start=2):
      text = (row.get(column) or "").strip()
      if text == "" or text.lower() in ("nan", "na", "none"):
        continue  # missing measurement: skipped, counted below
      try:
        value = float(text)
        i = int(row[key]) if key == "arch_index" else table.index_of(row[key].strip())
      except (ValueError, KeyError) as e:
        raise DataError(f"{p} line {line}: bad {key!r} or {column!r} value ({e})") from None
      if not math.isfinite(value) or value <= 0:
        raise DataError(f"{p} line {line}: {column}={text!r} must be a positive number")
      if not 0 <= i < len(table.index):
        raise DataError(f"{p} line {line}: arch_index {i} outside 0..{len(table.index) - 1}")
      idx.append(i)
      vals.append(value * _SCALE[unit])
  if len(set(idx)) != len(idx):
    raise DataError(f"{p}: some cells appear more than once")
  if len(idx) < 10:
    raise DataError(f"{p}: only {len(idx)} cells have a {column!r} value; need at least 10")
  return Target(column, kind, np.array(idx, np.int64), np.array(vals), unit, str(p))


def _table_targets(table: Any) -> list[Target]:
  out = []
  for name, field in TABLE_TARGETS.items():
    v = np.asarray(getattr(table, field), np.float64)
    ok = table.has_hw & np.isfinite(v) & (v > 0)
    kind, unit = _infer_kind_unit(field, "auto")
    out.append(Target(name, kind, table.index[ok].astype(np.int64), v[ok] * _SCALE[unit], unit,
                      f"HW-NAS-Bench {name} (cifar10) via load_nb201_table"))
  return out


def _split(n: int, seed: int, train_fraction: float) -> np.ndarray:
  """Boolean train mask: a seeded permutation, the first ``round(train_fraction * n)`` train."""
  if not 0 < train_fraction < 1:
    raise ValueError(f"--train_fraction must be in (0, 1), got {train_fraction}")
  perm = np.random.default_rng(seed).permutation(n)
  mask = np.zeros(n, bool)
  mask[perm[:int(round(train_fraction * n))]] = True
  return mask


def _progress(t0: float):
  def show(done: int, total: int) -> None:
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else float("nan")
    print(f"\r  kernels: {done}/{total} distinct cells, {el:.0f} s elapsed, ETA {eta:.0f} s",
          end="" if done < total else "\n", flush=True)
  return show


def _scatter(path: Path, target: Target, measured: np.ndarray, preds: dict[str, np.ndarray],
             metrics: dict[str, dict[str, float]]) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  scale, unit = (1e3, "mJ") if target.kind == "energy" else (1e3, "ms")
  fig, axes = plt.subplots(1, len(preds), figsize=(5 * len(preds), 4.6), sharey=True)
  lo, hi = measured.min() * scale, measured.max() * scale
  for ax, (name, p) in zip(np.atleast_1d(axes), preds.items()):
    ax.scatter(measured * scale, p * scale, s=3, alpha=0.4)
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="k", alpha=0.08)
    m = metrics[name]
    ax.set_title(f"{name}\nRMSPE {m['rmspe']:.3f}, +-10% {m['acc10']:.2f}, rho {m['spearman']:.3f}")
    ax.set_xlabel(f"measured {target.name} ({unit})")
  np.atleast_1d(axes)[0].set_ylabel(f"predicted ({unit})")
  fig.suptitle(f"NB201 held-out cells (n={len(measured)})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(workdir: str, *, seed: int = 0, train_fraction: float = 0.7,
        device_spec: str = "jetson-tx2", batch_size: int = 1, targets_csv: str | None = None,
        target_column: str | None = None, target_unit: str = "auto", ridge: float = 0.0,
        ridge_grid: Sequence[float] = (1e-6, 1e-4, 1e-2, 1.0), limit: int = 0,
        workers: int = 2) -> dict[str, Any]:
  """Runs the validation; returns the metrics dict written to ``workdir/metrics.json``."""
  from cenas_jax import results  # pylint: disable=g-import-not-at-top
  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.specs import get_spec  # pylint: disable=g-import-not-at-top
  from cenas_jax import fileio  # pylint: disable=g-import-not-at-top

  spec = get_spec(device_spec)
  if ridge < 0:
    raise ValueError(f"--ridge must be >= 0 (0: cross-validated), got {ridge}")
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  table = load_nb201_table()
  if targets_csv is not None:
    if not target_column:
      raise ValueError("--targets_csv needs --target_column")
    targets = [_read_targets_csv(targets_csv, target_column, target_unit, table)]
  elif target_column:
    raise ValueError("--target_column needs --targets_csv")
  else:
    targets = _table_targets(table)
  if limit:
    targets = [dataclasses.replace(t, arch_index=t.arch_index[:limit], value_si=t.value_si[:limit])
               for t in targets]

  # Features of every cell any target needs, cached in the workdir.
  config = nk.NB201NetConfig(batch_size=batch_size)
  needed = np.unique(np.concatenate([t.arch_index for t in targets]))
  t1 = time.perf_counter()
  key = nk.cache_key(spec.name, config)
  cache_path = str(wd / "features.npz")
  cached = nk.load_feature_cache(cache_path, key)
  missing = np.array([i for i in needed if int(i) not in cached], np.int64)
  timings["fragments_s"] = time.perf_counter() - t1
  print(f"{len(needed)} cells, {len(needed) - len(missing)} cached in {cache_path}")
  t1 = time.perf_counter()
  if len(missing):
    rows = nk.compute_features(table.ops[missing], spec.name, config, workers=workers,
                               progress=_progress(t1))
    cached.update({int(i): r for i, r in zip(missing, rows)})
    nk.save_feature_cache(cache_path, key, cached)
  timings["extract_s"] = time.perf_counter() - t1
  timings["extracted_cells"] = int(len(missing))

  metrics: dict[str, Any] = {}
  fitted: dict[str, Any] = {}
  pred_rows: list[dict[str, Any]] = []
  split_info: dict[str, Any] = {}
  for target in targets:
    idx, y = target.arch_index, target.value_si
    feats = np.stack([cached[int(i)] for i in idx])
    ops = table.ops[idx]
    macs = np.array([nk.macs(tuple(o), config) for o in ops], np.float64)
    params = np.array([nk.param_count(tuple(o), C=config.C, N=config.N,
                                      num_classes=config.num_classes) for o in ops], np.float64)
    train = _split(len(idx), seed, train_fraction)
    test = ~train
    prior = em.prior_model(spec)
    ridge_cv: dict[float, float] = {}
    use_ridge = ridge
    if ridge <= 0:
      use_ridge, ridge_cv = nk.select_ridge(feats[train], y[train], prior, kind=target.kind,
                                            grid=ridge_grid, seed=seed)
    kmodel = nk.fit_kernel_model(feats[train], y[train], prior, kind=target.kind, ridge=use_ridge)
    k_pred = nk.predict_kernel_model(kmodel, feats, kind=target.kind)
    em.save_energy_model(kmodel, wd / f"kernel_model_{target.name}.json")
    fl = nk.fit_linear_baseline(macs[train], y[train])
    pa = nk.fit_linear_baseline(params[train], y[train])
    preds = {"kernel_model": np.asarray(k_pred), "flops_linear": fl.predict(macs),
             "params_linear": pa.predict(params)}
    metrics[target.name] = {m: nk.regression_metrics(p[test], y[test]) for m, p in preds.items()}
    fitted[target.name] = {"kernel_model": kmodel.to_dict(),
                           "flops_linear": dataclasses.asdict(fl),
                           "params_linear": dataclasses.asdict(pa),
                           "flops_unit": "MACs per image", "kind": target.kind,
                           "ridge": use_ridge,
                           "ridge_cv_rmspe": {f"{r:g}": v for r, v in ridge_cv.items()},
                           "si_unit": "J" if target.kind == "energy" else "s",
                           "source": target.source, "source_unit": target.unit}
    split_info[target.name] = {"n_cells": int(len(idx)), "n_train": int(train.sum()),
                               "n_test": int(test.sum())}
    scale = 1.0 / _SCALE[target.unit]
    for j in range(len(idx)):
      pred_rows.append({"arch_index": int(idx[j]), "arch_str": str(table.arch_str[idx[j]]),
                        "target": target.name, "unit": target.unit,
                        "measured": y[j] * scale,
                        **{f"pred_{m}": preds[m][j] * scale for m in MODELS},
                        "split": "train" if train[j] else "test"})
    if target.kind == "energy":
      _scatter(wd / f"scatter_{target.name}.png", target, y[test],
               {m: p[test] for m, p in preds.items()}, metrics[target.name])
  timings["total_s"] = time.perf_counter() - t0

  fileio.atomic_write_json(wd / "metrics.json", metrics)
  header = ["arch_index", "arch_str", "target", "unit", "measured"] + [f"pred_{m}" for m in
                                                                       MODELS] + ["split"]
  lines = [",".join(header)]
  for r in pred_rows:
    lines.append(",".join(f"{r[h]:.9g}" if isinstance(r[h], float) else str(r[h]) for h in header))
  fileio.atomic_write_text(wd / "predictions.csv", "\n".join(lines) + "\n")
  hashes = {name: sha for name, _, sha in table.sources}
  if targets_csv is not None:
    hashes[targets_csv] = fileio.sha256_file(targets_csv)
  summary = {"metrics": metrics, "split": split_info, "models": fitted, "timings": timings,
             "device_spec": spec.name, "batch_size": batch_size, "ridge_flag": ridge,
             "train_fraction": train_fraction, "feature_cache_key": key,
             "targets_met": _targets_met(metrics)}
  import jax  # pylint: disable=g-import-not-at-top,unused-import  (records the JAX version/backend)
  results.write_summary(wd, summary, {
      "seed": seed, "energy_source": f"predicted-kernel_model({spec.name})",
      "ci_source": None, "data_hashes": hashes})
  _print_table(metrics, timings)
  return metrics


def _targets_met(metrics: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for name, m in metrics.items():
    k, f = m["kernel_model"], m["flops_linear"]
    out[name] = {"acc10_ge_0.90": k["acc10"] >= 0.9, "spearman_ge_0.95": k["spearman"] >= 0.95,
                 "rmspe_2x_below_flops": k["rmspe"] * 2 <= f["rmspe"]}
  return out


def _print_table(metrics: dict[str, Any], timings: dict[str, float]) -> None:
  print(f"\n{'target':<18}{'model':<15}{'RMSPE':>8}{'+-10%':>8}{'Spearman':>10}{'Kendall':>9}")
  for name, m in metrics.items():
    for model, v in m.items():
      print(f"{name:<18}{model:<15}{v['rmspe']:>8.4f}{v['acc10']:>8.3f}{v['spearman']:>10.4f}"
            f"{v['kendall']:>9.4f}")
  print("timings: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in timings.items()))


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    run(FLAGS.workdir, seed=FLAGS.seed, train_fraction=FLAGS.train_fraction,
        device_spec=FLAGS.device_spec, batch_size=FLAGS.batch_size, targets_csv=FLAGS.targets_csv,
        target_column=FLAGS.target_column, target_unit=FLAGS.target_unit, ridge=FLAGS.ridge,
        ridge_grid=[float(r) for r in FLAGS.ridge_grid], limit=FLAGS.limit,
        workers=FLAGS.workers)
  except (DataError, ValueError, KeyError) as e:
    print(f"energy_model_nb201: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main)
