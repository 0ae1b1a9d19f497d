"""Never worse than a proxy: the kernel model against proxy baselines, chosen by cross-validation.

A per-kernel model only helps where kernels carry information the device pays for; on a
compute-bound GPU at a large batch one FLOPs coefficient can predict better. So the fit scores, by
k-fold cross-validation on the training cells (the folds of ``fitting.select_table``), every
candidate:

* ``kernel_model``: the per-kernel model (its out-of-fold predictions from ``select_table``);
* ``flops_linear``, ``params_linear``, ``traffic_linear``: ``a + b x`` on MACs, parameter count
  and the kernels' memory traffic (bytes read + written per call), fitted by relative least
  squares (``fitting.fit_linear_baseline``);
* ``blend``: a stacked relative-least-squares combination ``a + sum_j w_j x_j`` of the kernel
  model's out-of-fold predictions and the three proxies (scored by a second-level CV on the
  out-of-fold predictions);

and keeps the one with the lowest CV RMSPE (``select``). Every candidate's CV score and the choice
go to ``summary.json``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

PROXIES = ("flops", "params", "traffic")
CANDIDATES = ("kernel_model", "flops_linear", "params_linear", "traffic_linear", "blend")


def traffic_bytes(counts) -> np.ndarray:
  """Bytes read + written per call of every function of a ``model.KernelCounts``."""
  per = np.array([k.bytes_read + k.bytes_written for k in counts.kernels], np.float64)
  return np.asarray(counts.counts @ per).reshape(-1)


def folds_of(n: int, folds: int, seed: int) -> np.ndarray:
  """Fold of each of ``n`` rows: the assignment ``fitting.select_table`` uses (same seed)."""
  return np.random.default_rng(seed).permutation(n) % folds


def rmspe(p: np.ndarray, y: np.ndarray) -> float:
  return float(np.sqrt(np.mean(((p - y) / y)**2)))


@dataclasses.dataclass(frozen=True)
class Blend:
  """``y = intercept + sum_j coef[j] * column_j`` over named input columns (relative LS)."""

  names: tuple[str, ...]
  intercept: float
  coef: tuple[float, ...]

  def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    out = np.full(len(columns[self.names[0]]), self.intercept)
    for name, c in zip(self.names, self.coef):
      out = out + c * np.asarray(columns[name], np.float64)
    return out


def fit_blend(columns: Mapping[str, np.ndarray], y: np.ndarray) -> Blend:
  """Fits ``Blend`` minimising ``sum(((pred - y) / y)^2)`` (columns rescaled for conditioning)."""
  names = tuple(columns)
  y = np.asarray(y, np.float64)
  x = np.stack([np.asarray(columns[n], np.float64) for n in names], axis=1)
  scale = np.maximum(np.abs(x).max(axis=0), 1e-300)
  a = np.hstack([np.ones((len(y), 1)), x / scale]) / y[:, None]
  coef = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
  return Blend(names, float(coef[0]), tuple(float(c) for c in coef[1:] / scale))


def _cv(fit, columns: Mapping[str, np.ndarray], y: np.ndarray, fold: np.ndarray) -> float:
  errs = []
  for k in np.unique(fold):
    tr, va = fold != k, fold == k
    m = fit({n: c[tr] for n, c in columns.items()}, y[tr])
    errs.append(rmspe(m.predict({n: c[va] for n, c in columns.items()}), y[va]))
  return float(np.mean(errs))


@dataclasses.dataclass(frozen=True)
class Selection:
  """The candidates' CV scores and fitted proxy models; ``choice`` has the lowest CV RMSPE."""

  cv_rmspe: Mapping[str, float]
  choice: str
  linear: Mapping[str, Blend]  # "flops_linear" etc.: one-column blends
  blend: Blend

  def predict(self, kernel_pred: np.ndarray, proxies: Mapping[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
    """Every candidate's predictions (and ``selected``) from the kernel model's and the proxies."""
    cols = {"kernel_model": np.asarray(kernel_pred, np.float64), **proxies}
    out = {"kernel_model": cols["kernel_model"]}
    for name, m in self.linear.items():
      out[name] = m.predict(cols)
    out["blend"] = self.blend.predict(cols)
    out["selected"] = out[self.choice]
    return out

  def to_dict(self) -> dict:
    return {"choice": self.choice, "cv_rmspe": dict(self.cv_rmspe),
            **{n: dataclasses.asdict(m) for n, m in self.linear.items()},
            "blend": dataclasses.asdict(self.blend)}


def select(kernel_oof: np.ndarray, kernel_cv: float, proxies: Mapping[str, np.ndarray],
           y: np.ndarray, fold: np.ndarray, extra: Mapping[str, np.ndarray] | None = None
           ) -> Selection:
  """Scores every candidate by CV on the training cells and keeps the best.

  Args:
    kernel_oof: ``(n,)`` out-of-fold predictions of the kernel model on the training cells.
    kernel_cv: its mean held-out-fold RMSPE (as ``select_table`` reports it).
    proxies: ``{"flops", "params", "traffic"}`` -> ``(n,)`` proxy values of the training cells.
    y: ``(n,)`` measurements.
    fold: ``(n,)`` fold of each cell (``folds_of``; the folds ``kernel_oof`` came from).
    extra: columns added to every proxy's linear model and to the blend (e.g. ``{"batch": (n,)}``
      when the rows span several batch sizes: ``a + b x + c batch``, one model over all batches);
      ``Selection.predict`` then needs them among its ``proxies``.

  Returns:
    The ``Selection``.
  """
  y = np.asarray(y, np.float64)
  extra = {n: np.asarray(c, np.float64) for n, c in (extra or {}).items()}
  scores = {"kernel_model": float(kernel_cv)}
  linear = {}
  for p in PROXIES:
    cols = {p: np.asarray(proxies[p], np.float64), **extra}
    scores[f"{p}_linear"] = _cv(fit_blend, cols, y, fold)
    linear[f"{p}_linear"] = fit_blend(cols, y)
  # The blend learns from held-out kernel predictions, so it does not trust an in-sample fit.
  blend_cols = {"kernel_model": np.asarray(kernel_oof, np.float64),
                **{p: np.asarray(proxies[p], np.float64) for p in PROXIES}, **extra}
  scores["blend"] = _cv(fit_blend, blend_cols, y, fold)
  blend = fit_blend(blend_cols, y)
  choice = min(CANDIDATES, key=lambda c: (scores[c], CANDIDATES.index(c)))
  return Selection(scores, choice, linear, blend)


def best_proxy(metrics: Mapping[str, Mapping[str, float]], key: str,
               proxies: Sequence[str] = ("flops_linear", "params_linear", "traffic_linear")
               ) -> float:
  """Best test-set value of ``key`` among the proxy baselines (lowest RMSPE, else highest)."""
  vals = [metrics[p][key] for p in proxies if p in metrics]
  return min(vals) if key == "rmspe" else max(vals)
