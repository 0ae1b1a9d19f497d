r"""Validates the per-kernel energy model on measured NB201 energy and latency (HW-NAS-Bench).

  python -m experiments.energy_model_nb201 --workdir=W

Extracts the ``gpu``-mode kernels of the NB201 network for every cell with hardware data
(``cenas_jax.energy.nb201_kernels``; the distinct kernels and each cell's sparse launch counts are
cached in ``W/features.npz``), fits the per-kernel model on a random 70 % of the cells (``--seed``)
and reports on the other 30 %: RMSPE, share within +-10 %, Spearman and Kendall correlation, next
to linear baselines on FLOPs (MACs) and on parameter count.

The per-kernel model (``kernel_model``) is the per-class roofline model (prior from
``--device_spec``, refined by the fit, ridge chosen by 5-fold CV on the training cells) plus a
kernel table of per-signature corrections shrunk towards it (``cenas_jax.energy.model
.fit_kernel_table``); the table's signature levels and ridge are chosen by 5-fold CV on the training
cells from ``--table_levels_grid`` x ``--table_ridge_grid``. ``summary.json`` also holds an
ablation on the same split: the roofline (class) model alone, the table alone (pure lookup, unseen
kernels cost nothing) and both, on XLA's kernels alone and with edge kernels.

Edge kernels (``--edge_kernels``, ``nb201_kernels.edge_kernels``): zero-cost placeholder launches,
one per live edge and per node sum of each cell, added to XLA's kernels so that the table can learn
the work that a module-by-module runtime (the Jetson's) does and XLA's fusion hides. Keyed by op
only (``op``: a per-op launch cost, the same wherever the edge sits) or by edge position and op
(``position``, the default: the table then also learns a cost per (position, op), which is a linear
encoding of the cell itself, not a property of its kernels). The ablation reports both.

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
flags.DEFINE_list("table_levels_grid", ["class+op", "class+full", "class+shape+full"],
                  "Candidate signature levels of the kernel table ('+'-joined levels of "
                  "cenas_jax.energy.model.SIGNATURE_LEVELS; 'none': no table).")
flags.DEFINE_list("table_ridge_grid", ["1e-4", "1e-3", "1e-2"],
                  "Candidate ridge strengths of the kernel table (unitless, > 0).")
flags.DEFINE_enum("edge_kernels", "position", ["position", "op", "none"],
                  "Add nb201_kernels.edge_kernels (per-edge and per-node-sum placeholders of the "
                  "cell structure XLA fuses away) to each cell's kernels for the table: keyed by "
                  "edge position and op ('position'), by op only ('op'), or not at all ('none').")
flags.DEFINE_integer("limit", 0, "Use only the first N cells (0: all); for quick runs.")
flags.DEFINE_integer("workers", 2, "Processes for kernel extraction (spawn).")

TABLE_TARGETS = {"edgegpu_energy": "edgegpu_energy_mj", "edgegpu_latency": "edgegpu_latency_ms"}
_SCALE = {"J": 1.0, "mJ": 1e-3, "s": 1.0, "ms": 1e-3, "us": 1e-6}
MODELS = ("kernel_model", "flops_linear", "params_linear")
ABLATION = ("roofline_only", "table_only", "roofline_and_table", "roofline_table_and_op_edges",
            "roofline_table_and_position_edges")


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
        ridge_grid: Sequence[float] = (1e-6, 1e-4, 1e-2, 1.0),
        table_levels_grid: Sequence[str] = ("class+op", "class+full", "class+shape+full"),
        table_ridge_grid: Sequence[float] = (1e-4, 1e-3, 1e-2), edge_kernels: str = "position",
        limit: int = 0, workers: int = 2) -> dict[str, Any]:
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
  table_candidates = _table_candidates(table_levels_grid, table_ridge_grid)
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

  # Kernel counts of every cell any target needs, cached in the workdir.
  config = nk.NB201NetConfig(batch_size=batch_size)
  needed = np.unique(np.concatenate([t.arch_index for t in targets]))
  t1 = time.perf_counter()
  key = nk.cache_key(spec.name, config)
  cache_path = str(wd / "features.npz")
  cached = nk.load_feature_cache(cache_path, key)
  cached_idx, cached_counts = cached if cached is not None else (np.zeros(0, np.int64), None)
  have = set(cached_idx.tolist())
  missing = np.array([i for i in needed if int(i) not in have], np.int64)
  timings["fragments_s"] = time.perf_counter() - t1
  print(f"{len(needed)} cells, {len(needed) - len(missing)} cached in {cache_path}")
  t1 = time.perf_counter()
  if len(missing):
    new_counts = nk.compute_kernel_counts(table.ops[missing], config, workers=workers,
                                          progress=_progress(t1))
    parts = [c for c in (cached_counts, new_counts) if c is not None]
    cached_counts = em.KernelCounts.concat(parts)
    cached_idx = np.concatenate([cached_idx, missing])
    nk.save_feature_cache(cache_path, key, cached_idx, cached_counts)
  timings["extract_s"] = time.perf_counter() - t1
  timings["extracted_cells"] = int(len(missing))
  row_of = {int(i): r for r, i in enumerate(cached_idx)}

  metrics: dict[str, Any] = {}
  ablation: dict[str, Any] = {}
  coverage: dict[str, Any] = {}
  noise_floor: dict[str, Any] = {}
  fitted: dict[str, Any] = {}
  pred_rows: list[dict[str, Any]] = []
  split_info: dict[str, Any] = {}
  for target in targets:
    t1 = time.perf_counter()
    idx, y = target.arch_index, target.value_si
    xla_counts = cached_counts.rows(np.array([row_of[int(i)] for i in idx], np.int64))
    feats = xla_counts.features(spec)
    ops = table.ops[idx]
    counts = (xla_counts if edge_kernels == "none" else
              nk.with_edge_kernels(xla_counts, ops, config, keys=edge_kernels))
    macs = np.array([nk.macs(tuple(o), config) for o in ops], np.float64)
    params = np.array([nk.param_count(tuple(o), C=config.C, N=config.N,
                                      num_classes=config.num_classes) for o in ops], np.float64)
    train = _split(len(idx), seed, train_fraction)
    test = ~train
    c_train, x_train = counts.rows(train), xla_counts.rows(train)
    prior = em.prior_model(spec)
    ridge_cv: dict[float, float] = {}
    use_ridge = ridge
    if ridge <= 0:
      use_ridge, ridge_cv = nk.select_ridge(feats[train], y[train], prior, kind=target.kind,
                                            grid=ridge_grid, seed=seed)
    choice, table_cv = nk.select_table(c_train, y[train], prior, kind=target.kind,
                                       class_ridge=use_ridge, candidates=table_candidates,
                                       seed=seed, class_counts=x_train)
    kmodel = nk.fit_table_model(c_train, y[train], prior, kind=target.kind, class_ridge=use_ridge,
                                table=choice, class_counts=x_train)
    k_pred = nk.predict_table_model(kmodel, counts, kind=target.kind)
    # Ablation on the same split: the class (roofline) model alone; the table alone (pure lookup;
    # its ridge cross-validated at the chosen levels); roofline + table on XLA's kernels only
    # (ridge cross-validated); and with the edge kernels too (= kernel_model unless
    # --edge_kernels=none), position-free ones included when the model uses positional ones.
    roof = nk.fit_table_model(x_train, y[train], prior, kind=target.kind, class_ridge=use_ridge,
                              table=((), 0.0))
    levels = choice[0] or ("full",)
    ridge_candidates = [(levels, float(r)) for r in table_ridge_grid]
    only_choice, only_cv = nk.select_table(c_train, y[train], prior, kind=target.kind,
                                           class_ridge=None, candidates=ridge_candidates,
                                           seed=seed)
    only = nk.fit_table_model(c_train, y[train], prior, kind=target.kind, class_ridge=None,
                              table=only_choice)
    ablation_preds = {"roofline_only": nk.predict_table_model(roof, xla_counts, kind=target.kind),
                      "table_only": nk.predict_table_model(only, counts, kind=target.kind)}
    if edge_kernels != "none":
      xla_choice, xla_cv = nk.select_table(x_train, y[train], prior, kind=target.kind,
                                           class_ridge=use_ridge, candidates=ridge_candidates,
                                           seed=seed)
      xla_model = nk.fit_table_model(x_train, y[train], prior, kind=target.kind,
                                     class_ridge=use_ridge, table=xla_choice)
      ablation_preds["roofline_and_table"] = nk.predict_table_model(xla_model, xla_counts,
                                                                    kind=target.kind)
      ablation_preds[f"roofline_table_and_{edge_kernels}_edges"] = np.asarray(k_pred)
      if edge_kernels == "position":
        # The same model with position-free edge kernels: how much of the gain is per-op launch
        # cost, and how much is the table learning the cell encoding itself.
        op_counts = nk.with_edge_kernels(xla_counts, ops, config, keys="op")
        op_model = nk.fit_table_model(op_counts.rows(train), y[train], prior, kind=target.kind,
                                      class_ridge=use_ridge, table=choice, class_counts=x_train)
        ablation_preds["roofline_table_and_op_edges"] = nk.predict_table_model(
            op_model, op_counts, kind=target.kind)
    else:
      xla_choice, xla_cv = choice, {}
      ablation_preds["roofline_and_table"] = np.asarray(k_pred)
    ablation[target.name] = {m: nk.regression_metrics(p[test], y[test])
                             for m, p in ablation_preds.items()}
    coverage[target.name] = _coverage(counts, train, test, choice[0])
    noise_floor[target.name] = nk.duplicate_noise_floor(ops, y)
    timings[f"fit_{target.name}_s"] = time.perf_counter() - t1
    em.save_energy_model(kmodel, wd / f"kernel_model_{target.name}.json")
    fl = nk.fit_linear_baseline(macs[train], y[train])
    pa = nk.fit_linear_baseline(params[train], y[train])
    preds = {"kernel_model": np.asarray(k_pred), "flops_linear": fl.predict(macs),
             "params_linear": pa.predict(params)}
    metrics[target.name] = {m: nk.regression_metrics(p[test], y[test]) for m, p in preds.items()}
    model_dict = kmodel.to_dict()
    model_dict["table"] = (None if kmodel.table is None else
                           f"kernel_model_{target.name}.json ({kmodel.table.n_entries()} entries)")
    fitted[target.name] = {"kernel_model": model_dict,
                           "flops_linear": dataclasses.asdict(fl),
                           "params_linear": dataclasses.asdict(pa),
                           "flops_unit": "MACs per image", "kind": target.kind,
                           "ridge": use_ridge,
                           "ridge_cv_rmspe": {f"{r:g}": v for r, v in ridge_cv.items()},
                           "table": nk.table_label(choice),
                           "table_entries": (0 if kmodel.table is None else
                                             kmodel.table.n_entries()),
                           "table_cv_rmspe": table_cv,
                           "table_only": nk.table_label(only_choice),
                           "table_only_cv_rmspe": only_cv,
                           "edge_kernels": edge_kernels,
                           "xla_table": nk.table_label(xla_choice),
                           "xla_table_cv_rmspe": xla_cv,
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
  summary = {"metrics": metrics, "ablation": ablation, "table_coverage": coverage,
             "noise_floor": noise_floor,
             "split": split_info, "models": fitted, "timings": timings,
             "device_spec": spec.name, "batch_size": batch_size, "ridge_flag": ridge,
             "train_fraction": train_fraction, "feature_cache_key": key,
             "targets_met": _targets_met(metrics)}
  import jax  # pylint: disable=g-import-not-at-top,unused-import  (records the JAX version/backend)
  results.write_summary(wd, summary, {
      "seed": seed, "energy_source": f"predicted-kernel_model({spec.name})",
      "ci_source": None, "data_hashes": hashes})
  _print_table(metrics, ablation, fitted, timings)
  return metrics


def _targets_met(metrics: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for name, m in metrics.items():
    k, f = m["kernel_model"], m["flops_linear"]
    out[name] = {"acc10_ge_0.90": k["acc10"] >= 0.9, "spearman_ge_0.95": k["spearman"] >= 0.95,
                 "rmspe_2x_below_flops": k["rmspe"] * 2 <= f["rmspe"]}
  return out


def _table_candidates(levels_grid: Sequence[str], ridge_grid: Sequence[float]
                      ) -> list[tuple[tuple[str, ...], float]]:
  """``--table_levels_grid`` x ``--table_ridge_grid`` as ``nk.select_table`` candidates."""
  from cenas_jax.energy.model import SIGNATURE_LEVELS  # pylint: disable=g-import-not-at-top

  if not levels_grid or not ridge_grid:
    raise ValueError("--table_levels_grid and --table_ridge_grid must not be empty")
  out: list[tuple[tuple[str, ...], float]] = []
  for item in levels_grid:
    item = item.strip()
    if item == "none":
      out.append(((), 0.0))
      continue
    levels = tuple(lv.strip() for lv in item.split("+"))
    bad = [lv for lv in levels if lv not in SIGNATURE_LEVELS]
    if bad or len(set(levels)) != len(levels):
      raise ValueError(f"--table_levels_grid entry {item!r}: levels must be distinct members of "
                       f"{SIGNATURE_LEVELS} joined by '+', or 'none'")
    for r in ridge_grid:
      if not r > 0:
        raise ValueError(f"--table_ridge_grid values must be > 0, got {r}")
      out.append((levels, float(r)))
  return out


def _coverage(counts: Any, train: np.ndarray, test: np.ndarray, levels: Sequence[str]
              ) -> dict[str, float]:
  """Share of the test cells' launches whose signature was seen in training, per level."""
  out = {}
  for lv in levels:
    kc, _ = counts.key_counts(lv)
    seen = np.asarray(kc[np.flatnonzero(train)].sum(axis=0)).reshape(-1) > 0
    test_launches = np.asarray(kc[np.flatnonzero(test)].sum(axis=0)).reshape(-1)
    out[lv] = float(test_launches[seen].sum() / max(test_launches.sum(), 1.0))
  return out


def _print_table(metrics: dict[str, Any], ablation: dict[str, Any], fitted: dict[str, Any],
                 timings: dict[str, float]) -> None:
  print(f"\n{'target':<18}{'model':<20}{'RMSPE':>8}{'+-10%':>8}{'Spearman':>10}{'Kendall':>9}")
  for name, m in metrics.items():
    for model, v in list(m.items()) + [(f"[{k}]", v) for k, v in ablation.get(name, {}).items()]:
      print(f"{name:<18}{model:<20}{v['rmspe']:>8.4f}{v['acc10']:>8.3f}{v['spearman']:>10.4f}"
            f"{v['kendall']:>9.4f}")
    if name in fitted:
      f = fitted[name]
      print(f"{name:<18}class ridge {f['ridge']:g}, table {f['table']} ({f['table_entries']} "
            f"entries), table only {f['table_only']}")
  print("timings: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in timings.items()))


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    run(FLAGS.workdir, seed=FLAGS.seed, train_fraction=FLAGS.train_fraction,
        device_spec=FLAGS.device_spec, batch_size=FLAGS.batch_size, targets_csv=FLAGS.targets_csv,
        target_column=FLAGS.target_column, target_unit=FLAGS.target_unit, ridge=FLAGS.ridge,
        ridge_grid=[float(r) for r in FLAGS.ridge_grid],
        table_levels_grid=FLAGS.table_levels_grid,
        table_ridge_grid=[float(r) for r in FLAGS.table_ridge_grid],
        edge_kernels=FLAGS.edge_kernels, limit=FLAGS.limit,
        workers=FLAGS.workers)
  except (DataError, ValueError, KeyError) as e:
    print(f"energy_model_nb201: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main)
