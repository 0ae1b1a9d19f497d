"""The NB201 validation of the per-kernel energy model: split, CV choices, ablation, baselines.

``run(ValidateConfig(), workdir)`` extracts the ``gpu``-mode kernels of the NB201 network for every
cell with a measurement (``nb201_kernels``; the distinct kernels and each cell's sparse launch
counts are cached in ``workdir/features.npz``), fits the per-kernel model on a random
``train_fraction`` of the cells (``seed``) and reports on the rest: RMSPE, share within +-10 %,
Spearman and Kendall correlation (``metrics.regression_metrics``), next to linear baselines on
MACs and on parameter count.

The per-kernel model (``kernel_model``) is the per-class roofline model (prior from
``device_spec``, refined by the fit, its ridge chosen by 5-fold CV on the training cells) plus a
kernel table of per-signature corrections shrunk towards it; the table's signature levels and ridge
are chosen by 5-fold CV on the training cells from ``table_levels_grid`` x ``table_ridge_grid``
(``fitting``). ``summary.json`` also holds an ablation on the same split: the roofline (class)
model alone, the table alone (pure lookup, unseen kernels cost nothing) and both, on XLA's kernels
alone and with edge kernels (``nb201_kernels.edge_kernels``, keyed by ``edge_kernels``).

Default targets: HW-NAS-Bench ``edgegpu_energy`` (mJ) and ``edgegpu_latency`` (ms) of a Jetson
TX2; any per-cell column of a CSV keyed by ``arch_index`` or ``arch_str`` works too
(``targets_csv``, ``target_column``, ``target_unit``; ``validate_targets``), and so do one column
per batch size (``target_column=COL@1,COL@256``): then each (cell, batch) pair is a row, one model
of each kind is fitted over every batch, the split and the CV folds are grouped by cell, and every
output also reports each batch (``validate_batches``). ``split=leave_one_cell_out`` scores each
cell with the models fitted on the others (a handful of measured cells).

Writes ``metrics.json`` (``{target: {model: {rmspe, acc10, spearman, kendall}}}``, fractions;
``target@batch`` entries too for per-batch targets), ``predictions.csv`` (a ``batch_size`` column
for per-batch targets), ``summary.json`` (metrics, split, fitted models, timings, provenance),
``kernel_model_<target>.json`` and ``scatter_<target>.png`` for energy targets.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from cenas_jax.energy.validate_targets import (
    ALL_TABLE_TARGETS,
    SCALE,
    Target,
    parse_batch_columns,
    read_targets_csv,
    read_targets_csv_batches,
    table_targets,
)
from cenas_jax.errors import ConfigError

MODELS = ("kernel_model", "flops_linear", "params_linear", "traffic_linear", "blend", "selected")
"""Models scored per target; ``selected`` is the one CV on the training cells picked
(``selection``)."""
EDGE_CHOICES = ("none", "op", "graph", "position")
ABLATION = ("roofline_only", "table_only", "roofline_and_table", "roofline_table_and_op_edges",
            "roofline_table_and_graph_edges", "roofline_table_and_position_edges")
METRIC_KEYS = ("rmspe", "acc10", "spearman", "kendall")
"""The metrics reported per model (fractions; see ``metrics.regression_metrics``)."""


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
  """Settings of one validation run (field names are the binary's flag names).

  Attributes:
    seed: seed of the train/test split and of the CV folds.
    train_fraction: share of cells the models are fitted on, in (0, 1).
    device_spec: ``DEVICE_SPECS`` key of the analytical prior.
    batch_size: images per call the kernels are extracted at.
    targets_csv: CSV with one row per cell (``arch_index`` or ``arch_str`` column); empty: the
      HW-NAS-Bench table's ``edgegpu_energy`` and ``edgegpu_latency``.
    target_column: column of ``targets_csv`` to fit and validate against, measured at
      ``batch_size``; or one column per batch size, ``COL@B[,COL@B...]`` (e.g.
      ``time_b1_ms@1,time_b256_ms@256``): one model over every (cell, batch) pair
      (``validate_batches``).
    target_unit: unit of ``target_column`` (``auto``: from a suffix or the name).
    ridge: pull of the class model towards its prior (relative); 0: chosen by CV from
      ``ridge_grid``.
    ridge_grid: candidates for ``ridge=0``.
    table_levels_grid: candidate signature levels of the kernel table ('+'-joined
      ``model.SIGNATURE_LEVELS``; ``none``: no table).
    table_ridge_grid: candidate ridge strengths of the kernel table (unitless, > 0).
    edge_kernels: add edge kernels keyed by edge position and op, by op and data flow
      (``graph``), by op only, or not at all (``nb201_kernels.edge_kernels``); ``auto``: fit all
      and keep the one with the lowest CV RMSPE on the training cells.
    targets: HW-NAS-Bench targets of the table to validate on (``validate_targets.ALL_TABLE_TARGETS``
      names, or ``all``); ignored with ``targets_csv``.
    limit: use only the first N cells of each target (0: all; a cell's every batch is kept).
    workers: processes for kernel extraction (spawn).
    split: ``random``: fit on ``train_fraction`` of the cells, score the rest;
      ``leave_one_cell_out``: fit once per cell without it and score the pooled held-out
      predictions (for a few measured cells, where a 70/30 split says nothing).
    cv_folds: folds of every cross-validated choice on the training cells (grouped by cell).
  """

  seed: int = 0
  train_fraction: float = 0.7
  device_spec: str = "jetson-tx2"
  batch_size: int = 1
  targets_csv: str = ""
  target_column: str = ""
  target_unit: Literal["auto", "J", "mJ", "s", "ms", "us"] = "auto"
  ridge: float = 0.0
  ridge_grid: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0)
  table_levels_grid: tuple[str, ...] = ("class+full", "class+shape+full")
  table_ridge_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
  edge_kernels: Literal["auto", "position", "graph", "op", "none"] = "auto"
  targets: tuple[str, ...] = ("edgegpu_energy", "edgegpu_latency")
  limit: int = 0
  workers: int = 2
  split: Literal["random", "leave_one_cell_out"] = "random"
  cv_folds: int = 5

  def __post_init__(self) -> None:
    from cenas_jax.energy.specs import DEVICE_SPECS  # pylint: disable=g-import-not-at-top

    if not 0 < self.train_fraction < 1:
      raise ConfigError("train_fraction", f"must be in (0, 1), got {self.train_fraction}")
    if self.device_spec not in DEVICE_SPECS:
      raise ConfigError("device_spec", f"unknown {self.device_spec!r}; known: {sorted(DEVICE_SPECS)}")
    if self.batch_size < 1 or self.workers < 1 or self.limit < 0:
      raise ConfigError("batch_size" if self.batch_size < 1 else
                        "workers" if self.workers < 1 else "limit",
                        "batch_size and workers must be >= 1, limit >= 0")
    if self.ridge < 0:
      raise ConfigError("ridge", f"must be >= 0 (0: cross-validated), got {self.ridge}")
    if not self.ridge_grid or any(not r > 0 for r in self.ridge_grid):
      raise ConfigError("ridge_grid", f"needs values > 0, got {self.ridge_grid}")
    if self.targets_csv and not self.target_column:
      raise ConfigError("target_column", "--targets_csv needs --target_column")
    if self.target_column and not self.targets_csv:
      raise ConfigError("targets_csv", "--target_column needs --targets_csv")
    if parse_batch_columns(self.target_column) and self.batch_size != 1:  # raises ConfigError
      raise ConfigError("batch_size", "the batch sizes come from --target_column's @<batch> "
                        "suffixes; leave --batch_size at 1")
    if self.cv_folds < 2:
      raise ConfigError("cv_folds", f"must be >= 2, got {self.cv_folds}")
    table_candidates(self.table_levels_grid, self.table_ridge_grid)  # raises ConfigError
    bad = [t for t in self.targets if t != "all" and t not in ALL_TABLE_TARGETS]
    if not self.targets or bad:
      raise ConfigError("targets", f"unknown {bad}; known: all, {', '.join(ALL_TABLE_TARGETS)}")

  @property
  def table_candidates(self) -> list[tuple[tuple[str, ...], float]]:
    return table_candidates(self.table_levels_grid, self.table_ridge_grid)


def table_candidates(levels_grid: Sequence[str], ridge_grid: Sequence[float]
                     ) -> list[tuple[tuple[str, ...], float]]:
  """``table_levels_grid`` x ``table_ridge_grid`` as ``fitting.select_table`` candidates.

  Raises:
    ConfigError: an empty grid, unknown or repeated levels, or a ridge <= 0.
  """
  from cenas_jax.energy.model import SIGNATURE_LEVELS  # pylint: disable=g-import-not-at-top

  if not levels_grid or not ridge_grid:
    raise ConfigError("table_levels_grid" if not levels_grid else "table_ridge_grid",
                      "must not be empty")
  out: list[tuple[tuple[str, ...], float]] = []
  for item in levels_grid:
    item = item.strip()
    if item == "none":
      out.append(((), 0.0))
      continue
    levels = tuple(lv.strip() for lv in item.split("+"))
    bad = [lv for lv in levels if lv not in SIGNATURE_LEVELS]
    if bad or len(set(levels)) != len(levels):
      raise ConfigError("table_levels_grid", f"entry {item!r}: levels must be distinct members of "
                        f"{SIGNATURE_LEVELS} joined by '+', or 'none'")
    for r in ridge_grid:
      if not r > 0:
        raise ConfigError("table_ridge_grid", f"values must be > 0, got {r}")
      out.append((levels, float(r)))
  return out


def run(config: ValidateConfig, workdir: str | Path) -> dict[str, Any]:
  """Runs the validation; returns the metrics dict written to ``workdir/metrics.json``.

  Raises:
    DataUnavailableError / DataError: a missing or bad targets CSV or table file.
    ConfigError: the targets CSV's unit cannot be told.
  """
  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import validate_batches as vb  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.specs import get_spec  # pylint: disable=g-import-not-at-top

  spec = get_spec(config.device_spec)
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  table = load_nb201_table()
  entries = parse_batch_columns(config.target_column)
  if entries:
    targets = [read_targets_csv_batches(config.targets_csv, entries, config.target_unit, table)]
  elif config.targets_csv:
    targets = [read_targets_csv(config.targets_csv, config.target_column, config.target_unit,
                                table)]
  else:
    names = (tuple(ALL_TABLE_TARGETS) if "all" in config.targets else
             tuple(dict.fromkeys(config.targets)))
    targets = table_targets(table, names)
  if config.limit:
    targets = [vb.first_cells(t, config.limit) for t in targets]
  net = nk.NB201NetConfig(batch_size=config.batch_size)
  key = nk.cache_key(spec.name, net)
  batches = sorted({int(b) for t in targets for b in vb.row_batches(t, config.batch_size)})
  cached = {}  # batch -> (arch_index, KernelCounts), the cells each target needs at that batch
  for b in batches:
    net_b = dataclasses.replace(net, batch_size=b)
    needed = np.unique(np.concatenate([t.arch_index[vb.row_batches(t, config.batch_size) == b]
                                       for t in targets]))
    cached[b] = _cached_kernel_counts(
        wd / ("features.npz" if b == config.batch_size else f"features_b{b}.npz"),
        nk.cache_key(spec.name, net_b), needed, table, net_b, config.workers, timings)
  if batches != [config.batch_size]:
    key = {str(b): nk.cache_key(spec.name, dataclasses.replace(net, batch_size=b))
           for b in batches}

  results: dict[str, dict[str, Any]] = {}
  pred_rows: list[dict[str, Any]] = []
  for target in targets:
    t1 = time.perf_counter()
    xla_counts = vb.target_counts(target, config.batch_size, cached)
    ops = table.ops[target.arch_index]
    if config.split == "leave_one_cell_out":
      res = vb.leave_one_cell_out(config, target, ops, xla_counts, spec, net)
    else:
      res = evaluate_target(config, target, ops, xla_counts, spec, net)
    timings[f"fit_{target.name}_s"] = time.perf_counter() - t1
    results[target.name] = res
    _save_target_outputs(wd, target, res)
    pred_rows += _prediction_rows(target, table, res)
  timings["total_s"] = time.perf_counter() - t0
  return _write_outputs(wd, config, spec.name, key, table, results, pred_rows, timings)


def _cached_kernel_counts(cache_path: Path, key: str, needed: np.ndarray | Sequence[Target],
                          table: Any, net: Any, workers: int, timings: dict[str, float]
                          ) -> tuple[np.ndarray, Any]:
  """Kernel counts at ``net``'s batch of the cells ``needed`` (arch indices, or the targets whose
  cells are needed): those in ``cache_path`` plus the missing ones (extracted now, added to the
  cache). Returns ``(arch_index, KernelCounts)``, one row each; ``timings`` adds up over calls
  (one per batch size)."""
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top

  if not isinstance(needed, np.ndarray):  # the targets themselves (``transfer`` passes them)
    needed = np.unique(np.concatenate([t.arch_index for t in needed]))
  t1 = time.perf_counter()
  cached = nk.load_feature_cache(str(cache_path), key)
  idx, counts = cached if cached is not None else (np.zeros(0, np.int64), None)
  have = set(idx.tolist())
  missing = np.array([i for i in needed if int(i) not in have], np.int64)
  timings["fragments_s"] = timings.get("fragments_s", 0.0) + time.perf_counter() - t1
  print(f"{len(needed)} cells at batch {net.batch_size}, {len(needed) - len(missing)} cached in "
        f"{cache_path}")
  t1 = time.perf_counter()
  if len(missing):
    new_counts = nk.compute_kernel_counts(table.ops[missing], net, workers=workers,
                                          progress=_progress(t1))
    counts = em.KernelCounts.concat([c for c in (counts, new_counts) if c is not None])
    idx = np.concatenate([idx, missing])
    nk.save_feature_cache(str(cache_path), key, idx, counts)
  timings["extract_s"] = timings.get("extract_s", 0.0) + time.perf_counter() - t1
  timings["extracted_cells"] = timings.get("extracted_cells", 0) + int(len(missing))
  return idx, counts


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
  """``METRIC_KEYS`` of ``metrics.regression_metrics``."""
  from cenas_jax.energy.metrics import regression_metrics  # pylint: disable=g-import-not-at-top

  m = regression_metrics(predicted=predicted, measured=measured)
  return {k: m[k] for k in METRIC_KEYS}


def evaluate_target(config: ValidateConfig, target: Target, ops: np.ndarray, xla_counts: Any,
                    spec: Any, net: Any) -> dict[str, Any]:
  """Fits and scores every model (and the ablation) on one target; one seeded split of the cells
  (``validate_batches.cell_split``: a cell's every batch on one side).

  Args and the fit: as ``fit_target``.

  Returns:
    ``fit_target``'s dict plus ``{"metrics", "ablation", "noise_floor", "split"}`` (scores on the
    test rows) and, when the rows span batch sizes, ``"per_batch"``
    (``validate_batches.per_batch_scores``).
  """
  from cenas_jax.energy import validate_batches as vb  # pylint: disable=g-import-not-at-top

  train = vb.cell_split(target, config.train_fraction, config.seed)
  n_train = len(np.unique(target.arch_index[train]))
  if n_train < config.cv_folds:
    raise ConfigError("cv_folds", f"{target.name}: the split leaves {n_train} training cells for "
                      f"{config.cv_folds} CV folds; pass --cv_folds <= {n_train}, measure more "
                      "cells or use --split=leave_one_cell_out")
  res = fit_target(config, target, ops, xla_counts, spec, net, train)
  test = ~train
  y = target.value_si
  res.update(
      ablation={m: scores(p[test], y[test]) for m, p in res["ablation_preds"].items()},
      noise_floor=duplicate_noise_floor(ops, y, target.batch_size),
      metrics={m: scores(res["preds"][m][test], y[test]) for m in MODELS},
      split=vb.split_info(target, train, test))
  if target.batch_size is not None:
    res["per_batch"] = vb.per_batch_scores(target, ops, res, test)
  return res


def fit_target(config: ValidateConfig, target: Target, ops: np.ndarray, xla_counts: Any,
               spec: Any, net: Any, train: np.ndarray) -> dict[str, Any]:
  """Fits every model (and the ablation) on the rows ``train`` of one target.

  The kernel model is fitted with each edge-kernel variant of ``edge_variants(config)`` (its table
  chosen by CV per variant); ``edge_kernels="auto"`` keeps the variant with the lowest CV RMSPE
  (a runtime that pays per cell edge, like the Jetson's, picks ``position``; one whose compiler
  fuses the cell away picks ``none``). Then ``selection.select`` scores the kernel model, the
  proxy baselines and their blend by CV on the training cells and keeps the best (``selected``).

  Args:
    config: the run's settings.
    target: the measurements (SI units).
    ops: ``(n, 6)`` cells of ``target.arch_index``.
    xla_counts: XLA's kernel counts of those cells (``model.KernelCounts``).
    spec: the device spec of the prior.
    net: the ``nb201_kernels.NB201NetConfig`` the counts were extracted with (each row's batch
      is ``xla_counts.batch_size``).
    train: boolean ``(n,)`` rows to fit on.

  With (cell, batch) rows (``target.batch_size``), the CV folds are grouped by cell, and the
  proxies are per call: ``a + b * x * batch + c * batch`` with ``x`` the per-image MACs or
  parameter count (``c`` absorbs per-image costs the proxy misses), ``a + b * traffic + c * batch``
  with ``traffic`` the bytes per call of the batch's kernels; one model over every batch.

  Returns:
    ``{"coverage", "fitted", "preds", "ablation_preds", "train", "kernel_model"}``.
  """
  from cenas_jax.energy import fitting, selection  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import validate_batches as vb  # pylint: disable=g-import-not-at-top
  from cenas_jax.spaces import nb201_net  # pylint: disable=g-import-not-at-top

  kind, seed = target.kind, config.seed
  y = target.value_si
  feats = xla_counts.features(spec)
  proxies = {"flops": np.array([nk.macs(tuple(o), net) for o in ops], np.float64),
             "params": np.array([nb201_net.count_params(tuple(o), num_classes=net.num_classes,
                                                        C=net.C, N=net.N) for o in ops],
                                np.float64),
             "traffic": selection.traffic_bytes(xla_counts)}
  extra = None
  if target.batch_size is not None:
    batch = np.asarray(xla_counts.batch_size, np.float64)
    proxies["flops"], proxies["params"] = proxies["flops"] * batch, proxies["params"] * batch
    extra = {"batch": batch}
  groups = None if target.batch_size is None else fitting.group_ids(target.arch_index[train])
  cv = {"seed": seed, "folds": config.cv_folds, "groups": groups}
  x_train, y_train = xla_counts.rows(train), y[train]
  prior = em.prior_model(spec)
  ridge_cv: dict[float, float] = {}
  use_ridge = config.ridge
  if use_ridge <= 0:
    use_ridge, ridge_cv = fitting.select_ridge(feats[train], y_train, prior, kind=kind,
                                               grid=config.ridge_grid, **cv)
  # Stage 1: each edge-kernel variant's CV RMSPE at one reference table (the richest levels, the
  # middle ridge); stage 2: the table grid for the variant kept. The grid for every variant would
  # cost len(grid) times more for choices that, on the Jetson data, rank the variants the same way.
  reference = reference_table(config)
  variants: dict[str, dict[str, Any]] = {}
  for edge in edge_variants(config):
    counts = xla_counts if edge == "none" else vb.with_edge_kernels(xla_counts, ops, net,
                                                                    keys=edge)
    _, scores = fitting.select_table(counts.rows(train), y_train, prior, kind=kind,
                                     class_ridge=use_ridge, candidates=[reference],
                                     class_counts=x_train, **cv)
    variants[edge] = {"counts": counts, "choice": reference, "cv": scores}
  edge_cv = {e: v["cv"][fitting.table_label(reference)] for e, v in variants.items()}
  edge = (min(edge_cv, key=edge_cv.get) if config.edge_kernels == "auto" else
          config.edge_kernels)
  chosen = variants[edge]
  oof: dict[str, np.ndarray] = {}
  chosen["choice"], chosen["cv"] = fitting.select_table(
      chosen["counts"].rows(train), y_train, prior, kind=kind, class_ridge=use_ridge,
      candidates=config.table_candidates, class_counts=x_train, oof=oof, **cv)
  for v in variants.values():
    v["model"] = fitting.fit_table_model(v["counts"].rows(train), y_train, prior, kind=kind,
                                         class_ridge=use_ridge, table=v["choice"],
                                         class_counts=x_train)
    v["pred"] = np.asarray(fitting.predict_table_model(v["model"], v["counts"], kind=kind))
  kmodel, counts, choice = chosen["model"], chosen["counts"], chosen["choice"]
  sel = selection.select(oof["pred"], min(chosen["cv"].values()),
                         {p: v[train] for p, v in proxies.items()}, y_train, oof["fold"],
                         extra=None if extra is None else {n: c[train] for n, c in extra.items()})
  preds = sel.predict(chosen["pred"], {**proxies, **(extra or {})})
  # Ablation on the same split: the class (roofline) model alone; the table alone (pure lookup;
  # its ridge cross-validated at the chosen levels, on the chosen edge kernels); roofline + table
  # on XLA's kernels only and with each edge-kernel variant fitted.
  roof = fitting.fit_table_model(x_train, y_train, prior, kind=kind, class_ridge=use_ridge,
                                 table=((), 0.0))
  ridge_candidates = [(choice[0] or ("full",), float(r)) for r in config.table_ridge_grid]
  only_choice, only_cv = fitting.select_table(counts.rows(train), y_train, prior, kind=kind,
                                              class_ridge=None, candidates=ridge_candidates,
                                              **cv)
  only = fitting.fit_table_model(counts.rows(train), y_train, prior, kind=kind, class_ridge=None,
                                 table=only_choice)
  ablation_preds = {"roofline_only": fitting.predict_table_model(roof, xla_counts, kind=kind),
                    "table_only": fitting.predict_table_model(only, counts, kind=kind)}
  for e, v in variants.items():
    ablation_preds["roofline_and_table" if e == "none" else
                   f"roofline_table_and_{e}_edges"] = v["pred"]
  model_dict = kmodel.to_dict()
  model_dict["table"] = (None if kmodel.table is None else
                         f"kernel_model_{target.name}.json ({kmodel.table.n_entries()} entries)")
  lin = lambda m: {"intercept": m.intercept, "slope": m.coef[0],  # noqa: E731
                   **({"per_image": m.coef[1]} if len(m.coef) > 1 else {})}
  fitted = {"kernel_model": model_dict,
            **{name: lin(m) for name, m in sel.linear.items()},
            "blend": dataclasses.asdict(sel.blend),
            "selected": sel.choice, "cv_rmspe": dict(sel.cv_rmspe),
            "flops_unit": "MACs per image" if extra is None else "MACs per call (per image x "
                          "batch); per_image: target SI units per image",
            "traffic_unit": "bytes per call",
            "kind": kind, "ridge": use_ridge,
            "ridge_cv_rmspe": {f"{r:g}": v for r, v in ridge_cv.items()},
            "table": fitting.table_label(choice),
            "table_entries": 0 if kmodel.table is None else kmodel.table.n_entries(),
            "table_cv_rmspe": chosen["cv"],
            "table_only": fitting.table_label(only_choice),
            "table_only_cv_rmspe": only_cv,
            "edge_kernels": edge, "edge_kernels_flag": config.edge_kernels,
            "edge_kernels_cv_rmspe": edge_cv,
            "edge_kernels_reference_table": fitting.table_label(reference),
            "edge_tables": {e: fitting.table_label(v["choice"]) for e, v in variants.items()},
            "si_unit": "J" if kind == "energy" else "s",
            "source": target.source, "source_unit": target.unit}
  return {"coverage": table_coverage(counts, train, ~train, choice[0]),
          "fitted": fitted, "preds": preds, "ablation_preds": ablation_preds, "train": train,
          "kernel_model": kmodel}


def reference_table(config: ValidateConfig) -> tuple[tuple[str, ...], float]:
  """The table the edge-kernel variants are compared at: the last levels of the grid (the
  richest by convention) with the middle ridge."""
  cands = [c for c in config.table_candidates if c[0]] or config.table_candidates
  levels = cands[-1][0]
  ridges = sorted(r for lv, r in cands if lv == levels)
  return levels, ridges[len(ridges) // 2]


def edge_variants(config: ValidateConfig) -> tuple[str, ...]:
  """Edge-kernel variants fitted: all for ``auto``, else XLA's kernels alone and the one asked."""
  if config.edge_kernels == "auto":
    return EDGE_CHOICES
  return tuple(dict.fromkeys(("none", config.edge_kernels)))


def table_coverage(counts: Any, train: np.ndarray, test: np.ndarray, levels: Sequence[str]
                   ) -> dict[str, float]:
  """Share of the test cells' launches whose signature was seen in training, per level."""
  out = {}
  for lv in levels:
    kc, _ = counts.key_counts(lv)
    seen = np.asarray(kc[np.flatnonzero(train)].sum(axis=0)).reshape(-1) > 0
    test_launches = np.asarray(kc[np.flatnonzero(test)].sum(axis=0)).reshape(-1)
    out[lv] = float(test_launches[seen].sum() / max(test_launches.sum(), 1.0))
  return out


def duplicate_noise_floor(ops_rows: np.ndarray, measured: np.ndarray,
                          batch_size: np.ndarray | None = None) -> dict[str, float]:
  """What a perfect predictor of each live cell's mean would score, from repeated live cells.

  Cells with the same ``live_ops`` run the same network, so their measurements differ only by
  noise. For each group of ``n >= 2`` such cells, ``(y - mean) * sqrt(n / (n - 1))`` estimates a
  measurement's deviation from the (unknown) true mean; the RMSPE and share within +-10 % of those
  deviations (relative to the measurement, as ``regression_metrics``) bound what any predictor of
  the network can reach on these cells. With ``batch_size`` (``(n,)``), only rows at one batch
  size form a group.

  Returns:
    ``{"n_groups", "n_cells", "rmspe", "acc10", "median_abs_rel"}`` (NaN rates when no cell
    repeats).
  """
  from cenas_jax.energy.nb201_kernels import live_ops  # pylint: disable=g-import-not-at-top

  y = np.asarray(measured, np.float64)
  batch = np.zeros(len(y), np.int64) if batch_size is None else np.asarray(batch_size)
  groups: dict[tuple[int, ...], list[float]] = {}
  for row, b, v in zip(np.asarray(ops_rows), batch, y):
    groups.setdefault(live_ops(tuple(int(o) for o in row)) + (int(b),), []).append(float(v))
  devs = []
  for values in groups.values():
    if len(values) > 1:
      g = np.array(values)
      d = (g - g.mean()) * np.sqrt(len(g) / (len(g) - 1))
      devs.append(d / (g.mean() + d))  # (mean - y) / y with y = mean + d, sign irrelevant
  if not devs:
    return {"n_groups": 0, "n_cells": 0, "rmspe": float("nan"), "acc10": float("nan"),
            "median_abs_rel": float("nan")}
  rel = np.concatenate(devs)
  return {"n_groups": len(devs), "n_cells": int(len(rel)), "rmspe": float(np.sqrt(np.mean(rel**2))),
          "acc10": float(np.mean(np.abs(rel) <= 0.1)),
          "median_abs_rel": float(np.median(np.abs(rel)))}


# ----------------------------------------------------------------------------------------------------
# Outputs.


def _save_target_outputs(wd: Path, target: Target, res: dict[str, Any]) -> None:
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

  if res["kernel_model"] is not None:  # leave_one_cell_out keeps no single model
    em.save_energy_model(res["kernel_model"], wd / f"kernel_model_{target.name}.json")
  if target.kind == "energy":
    test = ~res["train"]
    _scatter(wd / f"scatter_{target.name}.png", target, target.value_si[test],
             {m: p[test] for m, p in res["preds"].items()}, res["metrics"])


def _prediction_rows(target: Target, table: Any, res: dict[str, Any]) -> list[dict[str, Any]]:
  """``predictions.csv`` rows of one target, in the target's unit (floats as ``%.9g`` text)."""
  scale = 1.0 / SCALE[target.unit]
  fmt = lambda v: f"{v:.9g}"  # noqa: E731
  preds, train = res["preds"], res["train"]
  batch = ({} if target.batch_size is None else
           {"batch_size": lambda j: int(target.batch_size[j])})
  return [{"arch_index": int(i), "arch_str": str(table.arch_str[i]), "target": target.name,
           "unit": target.unit, **{k: f(j) for k, f in batch.items()},
           "measured": fmt(target.value_si[j] * scale),
           **{f"pred_{m}": fmt(preds[m][j] * scale) for m in MODELS},
           "split": "train" if train[j] else "test"}
          for j, i in enumerate(target.arch_index)]


def _write_outputs(wd: Path, config: ValidateConfig, spec_name: str, key: str, table: Any,
                   results: dict[str, dict[str, Any]], pred_rows: list[dict[str, Any]],
                   timings: dict[str, float]) -> dict[str, Any]:
  """``metrics.json``, ``predictions.csv`` and ``summary.json``; prints the table of results and
  returns the metrics written."""
  from cenas_jax import fileio, results as results_io  # pylint: disable=g-import-not-at-top

  # Targets over several batch sizes also report each batch as "<name>@<batch>".
  flat = lambda field: {k: v for name, r in results.items() for k, v in  # noqa: E731
                        ((name, r[field]), *((f"{name}@{b}", p[field]) for b, p in
                                             r.get("per_batch", {}).items()))}
  metrics = flat("metrics")
  # NaN rank correlations (fewer than 3 test rows in a batch) are written as null.
  fileio.atomic_write_json(wd / "metrics.json", results_io.to_json_safe(metrics))
  by_batch = any("batch_size" in row for row in pred_rows)
  columns = (["arch_index", "arch_str", "target", "unit"] + ["batch_size"] * by_batch +
             ["measured"] + [f"pred_{m}" for m in MODELS] + ["split"])
  results_io.write_csv(wd / "predictions.csv", pred_rows, columns)
  hashes = {name: sha for name, _, sha in table.sources}
  if config.targets_csv:
    hashes[config.targets_csv] = fileio.sha256_file(config.targets_csv)
  per = lambda field: {name: r[field] for name, r in results.items()}  # noqa: E731
  summary = {"metrics": metrics, "ablation": flat("ablation"), "table_coverage": per("coverage"),
             "noise_floor": flat("noise_floor"),
             "split": flat("split"), "models": per("fitted"), "timings": timings,
             "device_spec": spec_name, "batch_size": config.batch_size,
             "ridge_flag": config.ridge, "train_fraction": config.train_fraction,
             "feature_cache_key": key, "targets_met": _targets_met(metrics, flat("ablation"))}
  batches = {name: sorted(r["per_batch"]) for name, r in results.items() if "per_batch" in r}
  if batches or config.split != "random":
    summary.update(batches=batches, split_protocol=config.split, cv_folds=config.cv_folds)
  import jax  # pylint: disable=g-import-not-at-top,unused-import  (records the JAX version/backend)
  results_io.write_summary(wd, summary, {
      "seed": config.seed, "energy_source": f"predicted-kernel_model({spec_name})",
      "ci_source": None, "data_hashes": hashes})
  _print_table(metrics, flat("ablation"), per("fitted"), timings)
  return metrics


def _targets_met(metrics: dict[str, Any], ablation: dict[str, Any]) -> dict[str, Any]:
  """Issue targets per target: the CV-selected model at least as good as the best proxy baseline
  in RMSPE and Spearman (strictly better RMSPE on the edge GPU), the kernel model's share within
  +-10 %, and that of the pure kernel model (no per-position cell costs: XLA's kernels plus
  ``graph``-keyed edge kernels) on the edge GPU."""
  from cenas_jax.energy.selection import best_proxy  # pylint: disable=g-import-not-at-top

  out = {}
  for name, m in metrics.items():
    s, k = m["selected"], m["kernel_model"]
    out[name] = {"selected_rmspe_le_best_proxy": s["rmspe"] <= best_proxy(m, "rmspe"),
                 "selected_spearman_ge_best_proxy": s["spearman"] >= best_proxy(m, "spearman"),
                 "kernel_acc10_ge_0.90": k["acc10"] >= 0.9}
    if name.startswith("edgegpu"):
      out[name]["selected_rmspe_below_best_proxy"] = s["rmspe"] < best_proxy(m, "rmspe")
      pure = ablation.get(name, {}).get("roofline_table_and_graph_edges")
      if pure is not None:
        out[name]["pure_kernel_acc10_ge_0.90"] = pure["acc10"] >= 0.9
  return out


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


def _print_table(metrics: dict[str, Any], ablation: dict[str, Any], fitted: dict[str, Any],
                 timings: dict[str, float]) -> None:
  print(f"\n{'target':<18}{'model':<20}{'RMSPE':>8}{'+-10%':>8}{'Spearman':>10}{'Kendall':>9}")
  for name, m in metrics.items():
    for model, v in list(m.items()) + [(f"[{k}]", v) for k, v in ablation.get(name, {}).items()]:
      print(f"{name:<18}{model:<20}{v['rmspe']:>8.4f}{v['acc10']:>8.3f}{v['spearman']:>10.4f}"
            f"{v['kendall']:>9.4f}")
    if "ridge" in fitted.get(name, {}):
      f = fitted[name]
      print(f"{name:<18}class ridge {f['ridge']:g}, table {f['table']} ({f['table_entries']} "
            f"entries), table only {f['table_only']}")
  print("timings: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in timings.items()))
