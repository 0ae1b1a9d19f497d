"""One kernel model over several batch sizes of a device: (cell, batch) rows for the validation.

A targets CSV may give one column per batch size (``--target_column=time_b1_ms@1,time_b256_ms@256``,
``validate_targets.read_targets_csv_batches``). Each (cell, batch) pair is then one row: its
kernels are extracted at that batch (``nb201_kernels``, one ``features_b<batch>.npz`` cache per
batch, batch 1 in ``features.npz``), and ONE model of each kind is fitted over every row:

* the kernel model: the same per-kernel model as for one batch (``validate.fit_target``); the
  batch enters through the kernels themselves (FLOPs and bytes per call scale with it; the launch
  count does not), and the kernel table's ``shape``/``full`` signatures differ per batch while its
  ``class``/``op`` entries are shared;
* the proxies: per-call linear models ``a + b * x * batch + c * batch`` (``x``: MACs or parameter
  count per image) and ``a + b * traffic + c * batch`` (``traffic``: bytes per call), one
  coefficient set for all batches (``selection.select``'s ``extra`` column); the blend likewise.

The train/test split (``cell_split``) and every CV fold (``fitting.fold_assignment``) are grouped
by cell, so no cell's other batch is seen when it is scored. Metrics are reported over all test rows
and per batch (``per_batch_scores``; ``<name>@<batch>`` in ``metrics.json``). For a few measured
cells ``leave_one_cell_out`` fits once per cell without it and scores the pooled predictions.

Both regimes are in the analytical prior (``model.prior_model``): a launch-bound one, where each of
the network's launches pays ``launch_gap_s`` (its count does not grow with the batch), and a
compute/memory-bound one, where each kernel's time is ``time_efficiency_c * roofline_s`` and
``roofline_s`` grows with the batch. For an NB201 network (C=16, N=5) on an H200, the prior's
launch gaps are most of the time at batch 1 and the rooflines most of it at batch 256
(``tests/energy/test_batch_validate.py::test_prior_is_launch_bound_at_batch_1_roofline_bound_at_256``
measures the shares), so one fitted model can cover both ends.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cenas_jax.energy import fitting
from cenas_jax.energy.validate_targets import Target
from cenas_jax.errors import ConfigError


def row_batches(target: Target, batch_size: int) -> np.ndarray:
  """Batch of each row of ``target`` (``batch_size`` for a one-batch target)."""
  if target.batch_size is not None:
    return np.asarray(target.batch_size, np.int64)
  return np.full(len(target.arch_index), batch_size, np.int64)


def first_cells(target: Target, limit: int) -> Target:
  """``target`` restricted to its first ``limit`` cells (every batch of each kept)."""
  keep = fitting.group_ids(target.arch_index) < limit
  return dataclasses.replace(
      target, arch_index=target.arch_index[keep], value_si=target.value_si[keep],
      batch_size=None if target.batch_size is None else target.batch_size[keep])


def target_counts(target: Target, batch_size: int, cached: dict[int, tuple[np.ndarray, Any]]
                  ) -> Any:
  """``model.KernelCounts`` of the rows of ``target``, from ``cached[batch] = (arch_index,
  KernelCounts)`` (each row at its batch; ``batch_size`` for a one-batch target)."""

  def rows_of(b: int, arch_index: np.ndarray) -> Any:
    idx, counts = cached[b]
    row_of = {int(i): r for r, i in enumerate(idx)}
    return counts.rows(np.array([row_of[int(i)] for i in arch_index], np.int64))

  if target.batch_size is None:
    return rows_of(batch_size, target.arch_index)
  return _per_batch(target.batch_size, lambda b, sel: rows_of(b, target.arch_index[sel]))


def _per_batch(batches: np.ndarray, counts_of) -> Any:
  """``KernelCounts`` of every row, built batch by batch (``counts_of(batch, row indices)``) and
  put back in row order."""
  from cenas_jax.energy.model import KernelCounts  # pylint: disable=g-import-not-at-top

  parts, order = [], []
  for b in np.unique(batches):
    sel = np.flatnonzero(batches == b)
    parts.append(counts_of(int(b), sel))
    order.append(sel)
  perm = np.concatenate(order)
  inverse = np.empty_like(perm)
  inverse[perm] = np.arange(len(perm))
  return KernelCounts.concat(parts).rows(inverse)


def with_edge_kernels(counts: Any, ops: np.ndarray, net: Any, *, keys: str) -> Any:
  """``nb201_kernels.with_edge_kernels`` with each row's edge kernels at its own batch."""
  import scipy.sparse  # pylint: disable=g-import-not-at-top

  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.model import KernelCounts  # pylint: disable=g-import-not-at-top

  batches = np.unique(counts.batch_size)
  if len(batches) == 1 and int(batches[0]) == net.batch_size:
    return nk.with_edge_kernels(counts, ops, net, keys=keys)
  extra = _per_batch(counts.batch_size, lambda b, sel: nk.edge_kernel_counts(
      ops[sel], dataclasses.replace(net, batch_size=b), keys=keys))
  return KernelCounts(counts.kernels + extra.kernels,
                      scipy.sparse.hstack([counts.counts, extra.counts]).tocsr(),
                      counts.batch_size)


def cell_split(target: Target, train_fraction: float, seed: int) -> np.ndarray:
  """Boolean train mask of the rows: ``metrics.train_mask`` over the cells (in order of first
  appearance), so a cell's every batch is on one side (one row per cell: the rows' own split)."""
  from cenas_jax.energy.metrics import train_mask  # pylint: disable=g-import-not-at-top

  groups = fitting.group_ids(target.arch_index)
  return train_mask(int(groups.max()) + 1, train_fraction=train_fraction, seed=seed)[groups]


def split_info(target: Target, train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
  """``summary.json``'s split of one target (cells; rows too when they span batch sizes)."""
  if target.batch_size is None:
    return {"n_cells": int(len(target.value_si)), "n_train": int(train.sum()),
            "n_test": int(test.sum())}
  cells = lambda m: int(len(np.unique(target.arch_index[m])))  # noqa: E731
  return {"n_cells": cells(np.ones(len(train), bool)), "n_train": cells(train),
          "n_test": cells(test), "n_rows": int(len(train)), "n_train_rows": int(train.sum()),
          "n_test_rows": int(test.sum()), "grouped_by": "cell"}


def per_batch_scores(target: Target, ops: np.ndarray, res: dict[str, Any], test: np.ndarray
                     ) -> dict[int, dict[str, Any]]:
  """Per batch size (with test rows): ``{"metrics", "ablation", "noise_floor", "split"}`` on its
  test rows, as the overall ones."""
  from cenas_jax.energy.validate import duplicate_noise_floor, scores  # pylint: disable=g-import-not-at-top

  y = target.value_si
  out = {}
  for b in np.unique(target.batch_size):
    rows = target.batch_size == b
    t = rows & test
    if not t.any():
      continue
    out[int(b)] = {
        "metrics": {m: scores(p[t], y[t]) for m, p in res["preds"].items()},
        "ablation": {m: scores(p[t], y[t]) for m, p in res["ablation_preds"].items()},
        "noise_floor": duplicate_noise_floor(ops[rows], y[rows]),
        "split": {"n_rows": int(rows.sum()), "n_test_rows": int(t.sum()),
                  "n_train_rows": int((rows & ~test).sum())}}
  return out


def leave_one_cell_out(config: Any, target: Target, ops: np.ndarray, xla_counts: Any, spec: Any,
                       net: Any) -> dict[str, Any]:
  """``validate.evaluate_target``'s result with every cell predicted by the models fitted on the
  other cells (``validate.fit_target`` once per cell; each fit chooses its own ridge, table, edge
  kernels and proxy-or-kernel selection by ``cv_folds``-fold CV grouped by cell), scored on the
  pooled predictions. ``fitted`` holds each fold's choices; there is no single ``kernel_model``.

  Raises:
    ConfigError: (``cv_folds``) fewer training cells than CV folds.
  """
  from cenas_jax.energy import validate as v  # pylint: disable=g-import-not-at-top

  groups = fitting.group_ids(target.arch_index)
  n_cells, n = int(groups.max()) + 1, len(groups)
  if n_cells - 1 < config.cv_folds:
    raise ConfigError("cv_folds", f"leave_one_cell_out over {n_cells} cells trains on "
                      f"{n_cells - 1}; pass --cv_folds <= {n_cells - 1}")
  preds: dict[str, np.ndarray] = {}
  ablation: dict[str, np.ndarray] = {}
  folds, coverage = [], []
  for g in range(n_cells):
    train = groups != g
    res = v.fit_target(config, target, ops, xla_counts, spec, net, train)
    for out, got in ((preds, res["preds"]), (ablation, res["ablation_preds"])):
      for m, p in got.items():
        out.setdefault(m, np.zeros(n))[~train] = np.asarray(p)[~train]
    f = res["fitted"]
    folds.append({"held_out_arch_index": int(target.arch_index[~train][0]),
                  **{k: f[k] for k in ("selected", "cv_rmspe", "edge_kernels", "table", "ridge",
                                       "flops_linear", "blend")}})
    coverage.append(res["coverage"])
  test = np.ones(n, bool)
  y = target.value_si
  out = {"preds": preds, "ablation_preds": ablation, "train": ~test, "kernel_model": None,
         "fitted": {"protocol": "leave_one_cell_out", "kind": target.kind, "folds": folds},
         "coverage": {lv: float(np.mean([c[lv] for c in coverage if lv in c]))
                      for lv in coverage[0]},
         "metrics": {m: v.scores(p, y) for m, p in preds.items()},
         "ablation": {m: v.scores(p, y) for m, p in ablation.items()},
         "noise_floor": v.duplicate_noise_floor(ops, y, target.batch_size),
         "split": {**split_info(target, test, test), "n_train": n_cells - 1,
                   "protocol": "leave_one_cell_out"}}
  if target.batch_size is not None:
    out["per_batch"] = per_batch_scores(target, ops, out, test)
  return out
