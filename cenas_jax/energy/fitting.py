"""Fitting the per-kernel model for validation: class model, kernel table, baselines, CV choices.

On top of ``cenas_jax.energy.model`` (``fit_energy_model``, ``fit_kernel_table``): one entry point
per target kind (``kind="energy"``: energies in J; ``kind="latency"``: times in s), the time-only
fit (``fit_time_model``), a class model plus a kernel table (``fit_table_model``), k-fold
cross-validated choices of the class ridge (``select_ridge``) and of the table's signature levels
and ridge (``select_table``), and the linear baselines on one scalar (``fit_linear_baseline``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from cenas_jax.energy import model as em
from cenas_jax.energy.model import KernelCounts


@dataclasses.dataclass(frozen=True)
class LinearBaseline:
  """``y = intercept + slope * x``, fitted by relative least squares (each row weighted 1/y)."""

  intercept: float
  slope: float

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.intercept + self.slope * np.asarray(x, np.float64)


def fit_linear_baseline(x: np.ndarray, y: np.ndarray) -> LinearBaseline:
  """Fits ``LinearBaseline`` minimising ``sum(((a + b x - y) / y)^2)`` (the RMSPE objective)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  a = np.stack([np.ones_like(x), x], axis=1) / y[:, None]
  coef = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
  return LinearBaseline(float(coef[0]), float(coef[1]))


def fit_time_model(feature_rows: np.ndarray, measured_time_s: np.ndarray, prior: Any, *,
                   ridge: float = 1e-2) -> Any:
  """The prior with its time parameters (per-class efficiency, launch gap) fitted on times.

  Same objective as ``model.fit_energy_model``'s time stage: squared relative error plus
  ``ridge * sum_j (theta_j / theta0_j - 1)^2``, non-negative. Energy parameters stay at the prior.

  Args:
    feature_rows: ``(n, len(FEATURE_NAMES))`` rows.
    measured_time_s: ``(n,)`` measured time per call, in s (> 0).
    prior: an ``EnergyModel`` (starting point and regularization target).
    ridge: pull towards the prior (> 0).

  Returns:
    An ``EnergyModel``; use ``model.predict_time_s`` with it.
  """
  rows = np.atleast_2d(np.asarray(feature_rows, np.float64))
  t = np.asarray(measured_time_s, np.float64).reshape(-1)
  if rows.shape != (len(t), len(em.FEATURE_NAMES)) or np.any(t <= 0) or not np.all(np.isfinite(t)):
    raise ValueError("feature rows must match measured_time_s, times finite and > 0")
  if ridge <= 0:
    raise ValueError(f"ridge must be > 0, got {ridge}")
  nf, nc = len(em.CLASS_FEATURES), len(em.KERNEL_CLASSES)
  j_roof, j_launch = em.CLASS_FEATURES.index("roofline_s"), em.CLASS_FEATURES.index("launches")
  roof = rows[:, [i * nf + j_roof for i in range(nc)]]
  launches = rows[:, [i * nf + j_launch for i in range(nc)]].sum(axis=1, keepdims=True)
  design = np.hstack([roof, launches])
  theta0 = np.array([prior.classes[c].time_efficiency for c in em.KERNEL_CLASSES] +
                    [prior.launch_gap_s])
  theta = em.ridge_nnls(design, t, theta0, ridge)
  classes = {c: dataclasses.replace(prior.classes[c], time_efficiency=float(theta[i]))
             for i, c in enumerate(em.KERNEL_CLASSES)}
  return dataclasses.replace(prior, classes=classes, launch_gap_s=float(theta[-1]),
                             provenance=f"fit:time:n={len(t)}:ridge={ridge:g}:from="
                                        f"{prior.provenance}")


def fit_kernel_model(feature_rows: np.ndarray, measured: np.ndarray, prior: Any, *, kind: str,
                     ridge: float) -> Any:
  """Fits the per-kernel model on energies in J (``kind="energy"``) or times in s (``latency``)."""
  if kind == "energy":
    return em.fit_energy_model(feature_rows, measured, prior, ridge=ridge)
  if kind == "latency":
    return fit_time_model(feature_rows, measured, prior, ridge=ridge)
  raise ValueError(f"kind must be 'energy' or 'latency', got {kind!r}")


def predict_kernel_model(fitted: Any, feature_rows: np.ndarray, *, kind: str) -> np.ndarray:
  """Energies in J or times in s of ``feature_rows`` under a ``fit_kernel_model`` result."""
  rows = np.atleast_2d(feature_rows)
  if kind == "energy":
    return np.asarray(em.predict_energy_j(fitted, rows))
  return np.asarray(em.predict_time_s(fitted, rows))


def group_ids(keys: np.ndarray) -> np.ndarray:
  """Group of each row: ``0, 1, ...`` in order of first appearance of its key (distinct keys give
  ``arange(n)``)."""
  _, first, inverse = np.unique(np.asarray(keys), return_index=True, return_inverse=True)
  rank = np.empty(len(first), np.int64)
  rank[np.argsort(first, kind="stable")] = np.arange(len(first))
  return rank[inverse.reshape(-1)]


def fold_assignment(n: int, folds: int, seed: int, groups: np.ndarray | None = None
                    ) -> np.ndarray:
  """CV fold of each of ``n`` rows: a seeded permutation modulo ``folds`` over the rows, or over
  the groups of ``groups`` (``group_ids``) so that all rows of a group (a cell measured at several
  batch sizes) share one fold. With one row per group both give the same folds.

  Raises:
    ValueError: ``folds < 2`` or fewer rows (groups) than folds.
  """
  n_groups = n if groups is None else int(np.max(groups)) + 1 if n else 0
  if folds < 2 or n_groups < folds:
    raise ValueError(f"need folds >= 2 and at least `folds` cells, got {folds} folds for "
                     f"{n_groups} cells")
  fold = np.random.default_rng(seed).permutation(n_groups) % folds
  return fold if groups is None else fold[np.asarray(groups)]


def select_ridge(feature_rows: np.ndarray, measured: np.ndarray, prior: Any, *, kind: str,
                 grid: Sequence[float], folds: int = 5, seed: int = 0,
                 groups: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
  """The ridge strength with the lowest k-fold cross-validated RMSPE (training cells only).

  ``groups`` (``group_ids``): rows of one group stay in one fold (``fold_assignment``).

  Returns:
    ``(best ridge, {ridge: mean held-out-fold RMSPE})``.
  """
  y = np.asarray(measured, np.float64)
  if not grid:
    raise ValueError("need a non-empty grid")
  fold = fold_assignment(len(y), folds, seed, groups)
  scores = {}
  for r in grid:
    errs = []
    for k in range(folds):
      tr, va = fold != k, fold == k
      fitted = fit_kernel_model(feature_rows[tr], y[tr], prior, kind=kind, ridge=float(r))
      p = predict_kernel_model(fitted, feature_rows[va], kind=kind)
      errs.append(float(np.sqrt(np.mean(((p - y[va]) / y[va])**2))))
    scores[float(r)] = float(np.mean(errs))
  return min(scores, key=scores.get), scores


# ----------------------------------------------------------------------------------------------------
# The kernel table on top of the class model.

TableChoice = tuple[tuple[str, ...], float]
"""``(signature levels, ridge)`` of a kernel table; ``((), 0.0)`` means no table."""


def _table_kwargs(kind: str, measured: np.ndarray) -> dict[str, np.ndarray]:
  if kind == "energy":
    return {"measured_energy_j": measured}
  if kind == "latency":
    return {"measured_time_s": measured}
  raise ValueError(f"kind must be 'energy' or 'latency', got {kind!r}")


def zero_model(prior: Any) -> Any:
  """``prior`` with every class parameter, the static power and the launch gap at 0.

  With a kernel table on it, predictions are the table's lookups alone (nn-Meter's pure kernel
  lookup: an unseen signature costs nothing), the "table only" ablation.
  """
  zero = em.ClassParams(0.0, 0.0, 0.0, 0.0)
  return dataclasses.replace(prior, classes={c: zero for c in prior.classes}, static_power_w=0.0,
                             launch_gap_s=0.0, provenance=f"zero:{prior.spec.name}")


def fit_table_model(counts: KernelCounts, measured: np.ndarray, prior: Any, *, kind: str,
                    class_ridge: float | None, table: TableChoice,
                    class_counts: KernelCounts | None = None) -> Any:
  """Class model (``fit_kernel_model``) plus a kernel table (``model.fit_kernel_table``).

  Args:
    counts: launch counts of the training cells.
    measured: ``(n,)`` energies in J (``kind="energy"``) or times in s (``latency``).
    prior: the analytical prior (``model.prior_model``).
    kind: ``energy`` or ``latency``.
    class_ridge: ridge of the class fit; ``None``: no class part (``zero_model``: table only).
    table: ``(levels, ridge)`` of the table; no levels: the class model alone.
    class_counts: the kernels the class part is fitted on, when they differ from ``counts``
      (e.g. ``counts`` with ``edge_kernels`` added for the table, XLA's kernels alone here).

  Returns:
    An ``EnergyModel`` (predict with ``predict_table_model``).
  """
  kwargs = _table_kwargs(kind, measured)
  levels, ridge = table
  if class_ridge is None:
    if not levels:
      raise ValueError("a model without class part needs table levels")
    base = zero_model(prior)
  else:
    class_rows = (counts if class_counts is None else class_counts).features(prior.spec)
    base = fit_kernel_model(class_rows, measured, prior, kind=kind, ridge=class_ridge)
  if not levels:
    return base
  return em.fit_kernel_table(base, counts, levels=levels, ridge=ridge, **kwargs)


def predict_table_model(fitted: Any, counts: KernelCounts, *, kind: str) -> np.ndarray:
  """Energies in J or times in s of the cells of ``counts`` under ``fit_table_model``'s result."""
  if kind == "energy":
    return np.asarray(em.predict_energy_j(fitted, counts))
  if kind == "latency":
    return np.asarray(em.predict_time_s(fitted, counts))
  raise ValueError(f"kind must be 'energy' or 'latency', got {kind!r}")


def select_table(counts: KernelCounts, measured: np.ndarray, prior: Any, *, kind: str,
                 class_ridge: float | None, candidates: Sequence[TableChoice], folds: int = 5,
                 seed: int = 0, class_counts: KernelCounts | None = None,
                 oof: dict[str, np.ndarray] | None = None, groups: np.ndarray | None = None
                 ) -> tuple[TableChoice, dict[str, float]]:
  """The table (levels, ridge) with the lowest k-fold cross-validated RMSPE (training cells only).

  The class part is refitted on each fold's training cells (with ``class_ridge``, on
  ``class_counts`` when given, as in ``fit_table_model``), then every candidate table on top of it.

  When ``oof`` is a dict, ``oof["pred"]`` receives the best candidate's out-of-fold predictions
  (``(n,)``, each cell predicted by the model fitted without its fold) and ``oof["fold"]`` the fold
  of each cell, for stacking (``selection``). ``groups`` (``group_ids``): rows of one group (a
  cell at several batch sizes) stay in one fold.

  Returns:
    ``(best candidate, {"<levels>@<ridge>": mean held-out-fold RMSPE})``.
  """
  y = np.asarray(measured, np.float64)
  if not candidates:
    raise ValueError("need at least one candidate")
  fold = fold_assignment(len(y), folds, seed, groups)
  errs: dict[int, list[float]] = {i: [] for i in range(len(candidates))}
  preds = np.zeros((len(candidates), len(y))) if oof is not None else None
  for k in range(folds):
    tr, va = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
    c_tr, c_va = counts.rows(tr), counts.rows(va)
    base = (zero_model(prior) if class_ridge is None else
            fit_kernel_model((counts if class_counts is None else class_counts).rows(tr).features(
                prior.spec), y[tr], prior, kind=kind, ridge=class_ridge))
    for i, (levels, ridge) in enumerate(candidates):
      fitted = base if not levels else em.fit_kernel_table(
          base, c_tr, levels=levels, ridge=ridge, **_table_kwargs(kind, y[tr]))
      p = predict_table_model(fitted, c_va, kind=kind)
      errs[i].append(float(np.sqrt(np.mean(((p - y[va]) / y[va])**2))))
      if preds is not None:
        preds[i, va] = p
  scores = {table_label(c): float(np.mean(errs[i])) for i, c in enumerate(candidates)}
  best = min(range(len(candidates)), key=lambda i: np.mean(errs[i]))
  if oof is not None:
    oof["pred"], oof["fold"] = preds[best], fold
  return candidates[best], scores


def table_label(choice: TableChoice) -> str:
  """``"class+op@0.001"`` (``"none"`` for no table)."""
  levels, ridge = choice
  return f"{'+'.join(levels)}@{ridge:g}" if levels else "none"
