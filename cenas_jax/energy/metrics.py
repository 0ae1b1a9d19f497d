"""How well predictions match measurements, and the random train/test split they are scored on.

One metrics function for every evaluation of the energy model (the NB201 validation and the fit
on a kernel dataset): keyword-only ``predicted=`` / ``measured=`` so the order cannot be confused.
"""

from __future__ import annotations

import math

import numpy as np


def regression_metrics(*, predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
  """Relative errors and rank agreement of ``predicted`` against ``measured`` (same units).

  All rates are fractions (not percent), with ``rel = (predicted - measured) / measured``:
  ``rmspe = sqrt(mean(rel^2))``, ``mape = mean(|rel|)``, ``acc10 = mean(|rel| <= 0.1)`` (share
  within +-10 %, nn-Meter's metric); ``spearman`` and ``kendall`` rank correlations (NaN for
  fewer than 3 values, where a rank correlation says nothing).

  Args:
    predicted: ``(n,)`` finite predictions.
    measured: ``(n,)`` finite measurements, > 0.

  Returns:
    ``{"n", "rmspe", "mape", "acc10", "spearman", "kendall"}``.

  Raises:
    ValueError: shapes differ or are not 1-D and non-empty, a measurement is <= 0, or a value is
      not finite.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  p = np.asarray(predicted, np.float64)
  y = np.asarray(measured, np.float64)
  if p.shape != y.shape or p.ndim != 1 or len(y) < 1:
    raise ValueError(f"need two equal non-empty 1-D arrays, got {p.shape} and {y.shape}")
  if np.any(y <= 0) or not np.all(np.isfinite(y)) or not np.all(np.isfinite(p)):
    raise ValueError("measured values must be finite and > 0, predictions finite")
  rel = (p - y) / y
  ranks = len(y) >= 3
  return {"n": int(len(y)), "rmspe": float(np.sqrt(np.mean(rel**2))),
          "mape": float(np.mean(np.abs(rel))), "acc10": float(np.mean(np.abs(rel) <= 0.1)),
          "spearman": float(stats.spearmanr(p, y).statistic) if ranks else math.nan,
          "kendall": float(stats.kendalltau(p, y).statistic) if ranks else math.nan}


def train_mask(n: int, *, train_fraction: float, seed: int) -> np.ndarray:
  """Boolean ``(n,)`` train mask: the first ``round(train_fraction * n)`` of a seeded permutation.

  At least one row is in each part.

  Raises:
    ValueError: ``n < 2`` or ``train_fraction`` outside (0, 1).
  """
  if not 0 < train_fraction < 1:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
  if n < 2:
    raise ValueError(f"need at least 2 rows to train and test, got {n}")
  perm = np.random.default_rng(seed).permutation(n)
  mask = np.zeros(n, bool)
  mask[perm[:min(n - 1, max(1, int(round(train_fraction * n))))]] = True
  return mask
