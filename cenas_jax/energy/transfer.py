"""Transfer of the per-kernel model to a new device from a few of its measurements (NB201).

``run(TransferConfig(), workdir)`` fits the per-kernel model on one device with many measured
cells (the *source*, e.g. the Jetson TX2 latency of HW-NAS-Bench) and recalibrates it on another
(the *held-out* target) from a small random share of the target's cells (``fractions``, several
``seeds`` of the draw), then scores it on the target's held-out 30 % (``metrics.train_mask``,
``split_seed``), next to a FLOPs-linear fit on the same few cells.

Recalibration: the source model prices each cell's kernels; its prediction is split into groups
(one per kernel class, plus the cell-structure edge kernels of ``nb201_kernels.edge_kernels``) and
the target is fitted, by relative least squares, as ``a + sum_g w_g S_g`` with the group weights
shrunk towards one common scale (``grouped``; ridge chosen by CV on the few cells); ``scalar``
fits ``a + b S`` alone, ``blend`` adds MACs (``a + b S + c MACs``). ``transfer`` is whichever of the
three has the lowest 5-fold CV RMSPE on the few cells, so the reported curve uses no test cell for
any choice. Held-out targets of the source's own device (e.g. Jetson energy when the source is
Jetson latency) take ``fallback_source`` instead, so every target is a new device.

Writes ``transfer.csv`` (one row per target x fraction x seed x model), ``summary.json`` (median
over seeds per target and fraction, the ratio to FLOPs-linear, which targets transfer) and
``transfer_curves.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cenas_jax.errors import ConfigError

MODELS = ("flops_linear", "scalar", "grouped", "blend", "transfer")
_RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # group-weight shrinkage per cell (relative), CV-chosen


@dataclasses.dataclass(frozen=True)
class TransferConfig:
  """Settings of one transfer study (field names are the binary's flag names).

  Attributes:
    source: HW-NAS-Bench target the source model is fitted on (all its cells).
    fallback_source: source for held-out targets measured on the source's device.
    targets: held-out targets (``validate_targets.ALL_TABLE_TARGETS`` names, or ``all``).
    fractions: shares of a target's cells the recalibration sees, each in (0, 0.7).
    seeds: number of random draws of the few cells per fraction.
    split_seed: seed of the 70/30 split whose 30 % every model is scored on.
    device_spec: ``DEVICE_SPECS`` key of the source model's prior.
    edge_kernels: edge-kernel keys of the source model (``nb201_kernels.EDGE_KEYS`` or ``none``).
    table: ``'+'``-joined signature levels and ridge of the source model's table.
    limit: use only the first N cells of each target (0: all); for quick runs.
  """

  source: str = "edgegpu_latency"
  fallback_source: str = "raspi4_latency"
  targets: tuple[str, ...] = ("all",)
  fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
  seeds: int = 5
  split_seed: int = 0
  device_spec: str = "jetson-tx2"
  edge_kernels: str = "graph"
  table: str = "class+shape+full@0.001"
  limit: int = 0

  def __post_init__(self) -> None:
    from cenas_jax.energy.nb201_kernels import EDGE_KEYS  # pylint: disable=g-import-not-at-top
    from cenas_jax.energy.specs import DEVICE_SPECS  # pylint: disable=g-import-not-at-top
    from cenas_jax.energy.validate_targets import ALL_TABLE_TARGETS  # pylint: disable=g-import-not-at-top

    for field in ("source", "fallback_source"):
      if getattr(self, field) not in ALL_TABLE_TARGETS:
        raise ConfigError(field, f"unknown {getattr(self, field)!r}; known: "
                          f"{', '.join(ALL_TABLE_TARGETS)}")
    if _device(self.source) == _device(self.fallback_source):
      raise ConfigError("fallback_source", "must be measured on another device than --source")
    bad = [t for t in self.targets if t != "all" and t not in ALL_TABLE_TARGETS]
    if not self.targets or bad:
      raise ConfigError("targets", f"unknown {bad}; known: all, {', '.join(ALL_TABLE_TARGETS)}")
    if not self.fractions or any(not 0 < f < 0.7 for f in self.fractions):
      raise ConfigError("fractions", f"each must be in (0, 0.7), got {self.fractions}")
    if self.seeds < 1:
      raise ConfigError("seeds", f"must be >= 1, got {self.seeds}")
    if self.device_spec not in DEVICE_SPECS:
      raise ConfigError("device_spec", f"unknown {self.device_spec!r}")
    if self.edge_kernels not in EDGE_KEYS + ("none",):
      raise ConfigError("edge_kernels", f"must be one of {EDGE_KEYS + ('none',)}")
    _parse_table(self.table)
    if self.limit < 0 or 0 < self.limit < 20:
      raise ConfigError("limit", f"must be 0 (all) or >= 20, got {self.limit}")


def _device(target: str) -> str:
  return target.split("_")[0]


def _parse_table(text: str) -> tuple[tuple[str, ...], float]:
  from cenas_jax.energy.validate import table_candidates  # pylint: disable=g-import-not-at-top

  levels, _, ridge = text.partition("@")
  try:
    return table_candidates([levels], [float(ridge)])[0]
  except ValueError:
    raise ConfigError("table", f"expected LEVELS@RIDGE (e.g. class+full@0.001), got {text!r}"
                      ) from None


# ----------------------------------------------------------------------------------------------------
# Recalibration fits (relative least squares on a few cells).


def _rel_lstsq(x: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None,
               ridge: float = 0.0) -> np.ndarray:
  """``coef`` minimising ``sum(((x coef - y) / y)^2) + ridge * n * sum((coef - prior)^2)`` over
  the columns ``prior`` covers (``NaN`` entries of ``prior`` are not shrunk)."""
  a = x / y[:, None]
  b = np.ones_like(y)
  if prior is not None and ridge > 0:
    rows = [j for j in range(x.shape[1]) if np.isfinite(prior[j])]
    pen = np.zeros((len(rows), x.shape[1]))
    for i, j in enumerate(rows):
      pen[i, j] = np.sqrt(ridge * len(y))
    a = np.vstack([a, pen])
    b = np.concatenate([b, np.sqrt(ridge * len(y)) * prior[rows]])
  return np.linalg.lstsq(a, b, rcond=None)[0]


def _design(name: str, groups: np.ndarray, macs: np.ndarray) -> np.ndarray:
  one = np.ones((len(macs), 1))
  total = groups.sum(axis=1, keepdims=True)
  if name == "flops_linear":
    return np.hstack([one, macs[:, None]])
  if name == "scalar":
    return np.hstack([one, total])
  if name == "blend":
    return np.hstack([one, total, macs[:, None]])
  return np.hstack([one, groups])


@dataclasses.dataclass(frozen=True)
class Recalibrated:
  """One recalibration candidate fitted on a few cells (columns scaled by ``scale``)."""

  name: str
  coef: np.ndarray
  scale: np.ndarray

  def predict(self, groups: np.ndarray, macs: np.ndarray) -> np.ndarray:
    return (_design(self.name, groups, macs) / self.scale) @ self.coef


def fit_candidate(name: str, groups: np.ndarray, macs: np.ndarray, y: np.ndarray,
                  ridge: float = 0.0) -> Recalibrated:
  """Fits ``name`` (``flops_linear``, ``scalar``, ``blend`` or ``grouped``) on the few cells.

  ``grouped`` shrinks every group weight towards the ``scalar`` fit's common scale with
  ``ridge`` (per cell): at large ridge it is ``scalar``; at 0 every group has its own weight.
  """
  x = _design(name, groups, macs)
  scale = np.maximum(np.abs(x).max(axis=0), 1e-300)
  xs = x / scale
  if name != "grouped":
    return Recalibrated(name, _rel_lstsq(xs, y), scale)
  scalar = fit_candidate("scalar", groups, macs, y)
  # The scalar fit in the grouped columns' scaling: raw weight b / max(S) on every group column.
  prior = np.concatenate([[np.nan], scalar.coef[1] / scalar.scale[1] * scale[1:]])
  return Recalibrated(name, _rel_lstsq(xs, y, prior, ridge), scale)


def _cv_rmspe(name: str, groups: np.ndarray, macs: np.ndarray, y: np.ndarray, ridge: float,
              folds: int, seed: int) -> float:
  fold = np.random.default_rng(seed).permutation(len(y)) % folds
  errs = []
  for k in range(folds):
    tr, va = fold != k, fold == k
    m = fit_candidate(name, groups[tr], macs[tr], y[tr], ridge)
    p = m.predict(groups[va], macs[va])
    errs.append(float(np.sqrt(np.mean(((p - y[va]) / y[va])**2))))
  return float(np.mean(errs))


def recalibrate(groups: np.ndarray, macs: np.ndarray, y: np.ndarray, *, folds: int = 5,
                seed: int = 0) -> tuple[dict[str, Recalibrated], dict[str, float]]:
  """Every candidate fitted on the few cells, and ``transfer`` = the kernel-based one (``scalar``,
  ``grouped`` with its CV-chosen ridge, ``blend``) with the lowest CV RMSPE on them.

  Returns:
    ``({model: fitted}, {candidate label: CV RMSPE})``.
  """
  folds = min(folds, len(y))
  cv = {f"grouped@{r:g}": _cv_rmspe("grouped", groups, macs, y, r, folds, seed) for r in _RIDGES}
  best_ridge = _RIDGES[int(np.argmin([cv[f"grouped@{r:g}"] for r in _RIDGES]))]
  for name in ("scalar", "blend"):
    cv[name] = _cv_rmspe(name, groups, macs, y, 0.0, folds, seed)
  fitted = {"flops_linear": fit_candidate("flops_linear", groups, macs, y),
            "scalar": fit_candidate("scalar", groups, macs, y),
            "grouped": fit_candidate("grouped", groups, macs, y, best_ridge),
            "blend": fit_candidate("blend", groups, macs, y)}
  pick = min(("scalar", f"grouped@{best_ridge:g}", "blend"), key=cv.get)
  fitted["transfer"] = fitted[pick.split("@")[0]]
  cv["transfer_choice"] = pick  # type: ignore[assignment]
  return fitted, cv


# ----------------------------------------------------------------------------------------------------
# The study.


def source_groups(model: Any, counts: Any, kind: str) -> tuple[np.ndarray, list[str]]:
  """``(n_cells, n_groups)`` source-model cost of each cell per kernel group, and the group names.

  Groups: the kernel classes with any launch, and ``edges`` (the ``nb201_kernels`` cell-structure
  kernels). Each distinct kernel is priced once (``model.predict_kernel_energy_j``: time or energy
  of one launch, table corrections, launch gap and static share included).
  """
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top

  which = 0 if kind == "latency" else 1
  cost = np.array([em.predict_kernel_energy_j(model, k)[which] for k in counts.kernels])
  group = ["edges" if k.target in (nk.EDGE_TARGET, nk.NODE_SUM_TARGET) else k.kernel_class
           for k in counts.kernels]
  names = sorted(set(group))
  cols = []
  for g in names:
    cols.append(np.asarray(counts.counts @ (cost * np.array([x == g for x in group]))).reshape(-1))
  x = np.stack(cols, axis=1)
  keep = np.abs(x).sum(axis=0) > 0
  return x[:, keep], [n for n, k in zip(names, keep) if k]


def run(config: TransferConfig, workdir: str | Path) -> dict[str, Any]:
  """Runs the study; returns ``summary.json``'s ``curves`` (target -> fraction -> model ->
  median test RMSPE over the seeds)."""
  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import fitting  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.metrics import regression_metrics, train_mask  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.specs import get_spec  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.validate import _cached_kernel_counts  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.validate_targets import ALL_TABLE_TARGETS, table_targets  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  spec = get_spec(config.device_spec)
  table = load_nb201_table()
  names = tuple(ALL_TABLE_TARGETS) if "all" in config.targets else tuple(dict.fromkeys(
      config.targets))
  by_name = {t.name: t for t in table_targets(table, tuple(dict.fromkeys(
      names + (config.source, config.fallback_source))))}
  if config.limit:
    by_name = {n: dataclasses.replace(t, arch_index=t.arch_index[:config.limit],
                                      value_si=t.value_si[:config.limit])
               for n, t in by_name.items()}
  net = nk.NB201NetConfig(batch_size=1)
  timings: dict[str, float] = {}
  arch_index, xla_all = _cached_kernel_counts(wd / "features.npz", nk.cache_key(spec.name, net),
                                              list(by_name.values()), table, net, 2, timings)
  row_of = {int(i): r for r, i in enumerate(arch_index)}
  counts_of = lambda t: xla_all.rows(np.array([row_of[int(i)] for i in t.arch_index]))  # noqa: E731
  with_edges = lambda t: (counts_of(t) if config.edge_kernels == "none" else  # noqa: E731
                          nk.with_edge_kernels(counts_of(t), table.ops[t.arch_index], net,
                                               keys=config.edge_kernels))
  prior = em.prior_model(spec)
  sources = {}
  for name in dict.fromkeys((config.source, config.fallback_source)):
    t1 = time.perf_counter()
    src = by_name[name]
    sources[name] = fitting.fit_table_model(with_edges(src), src.value_si, prior, kind=src.kind,
                                            class_ridge=1e-6, table=_parse_table(config.table),
                                            class_counts=counts_of(src))
    timings[f"source_fit_{name}_s"] = time.perf_counter() - t1
  rows: list[dict[str, Any]] = []
  for name in names:
    target = by_name[name]
    source = config.source if _device(name) != _device(config.source) else config.fallback_source
    groups, group_names = source_groups(sources[source], with_edges(target),
                                        by_name[source].kind)
    macs = np.array([nk.macs(tuple(o), net) for o in table.ops[target.arch_index]], np.float64)
    y = target.value_si
    test = ~train_mask(len(y), train_fraction=0.7, seed=config.split_seed)
    pool = np.flatnonzero(~test)
    for frac in config.fractions:
      k = min(len(pool), max(10, int(round(frac * len(y)))))
      for seed in range(config.seeds):
        rng = np.random.default_rng([config.split_seed, seed, int(round(frac * 1e4))])
        few = rng.choice(pool, size=k, replace=False)
        fitted, cv = recalibrate(groups[few], macs[few], y[few], seed=seed)
        for model in MODELS:
          p = fitted[model].predict(groups[test], macs[test])
          m = regression_metrics(predicted=p, measured=y[test])
          rows.append({"target": name, "source": source, "fraction": frac, "n_cells": k,
                       "seed": seed, "model": model, "rmspe": m["rmspe"], "acc10": m["acc10"],
                       "spearman": m["spearman"],
                       "choice": cv["transfer_choice"] if model == "transfer" else model,
                       "groups": "+".join(group_names)})
  timings["total_s"] = time.perf_counter() - t0
  summary = _summarize(rows, config)
  _write(wd, config, rows, summary, timings, table)
  return summary["curves"]


def _summarize(rows: Sequence[Mapping[str, Any]], config: TransferConfig) -> dict[str, Any]:
  curves: dict[str, dict[str, dict[str, float]]] = {}
  spearman: dict[str, dict[str, dict[str, float]]] = {}
  for r in rows:
    key = f"{r['fraction']:g}"
    curves.setdefault(r["target"], {}).setdefault(key, {}).setdefault(r["model"], [])
    curves[r["target"]][key][r["model"]].append(r["rmspe"])
    spearman.setdefault(r["target"], {}).setdefault(key, {}).setdefault(r["model"], [])
    spearman[r["target"]][key][r["model"]].append(r["spearman"])
  med = lambda d: {t: {f: {m: float(np.median(v)) for m, v in ms.items()}  # noqa: E731
                       for f, ms in fs.items()} for t, fs in d.items()}
  curves, spearman = med(curves), med(spearman)
  ratio = {t: {f: ms["transfer"] / ms["flops_linear"] for f, ms in fs.items()}
           for t, fs in curves.items()}
  two = "0.02" if "0.02" in next(iter(ratio.values()), {}) else None
  verdict = {}
  if two:
    verdict = {t: {"ratio_2pct": r[two], "transfers": r[two] <= 0.8} for t, r in ratio.items()}
  sources = {r["target"]: r["source"] for r in rows}
  return {"curves": curves, "spearman": spearman, "ratio_transfer_to_flops": ratio,
          "two_percent": verdict,
          "two_percent_majority_met": (sum(v["transfers"] for v in verdict.values()) >
                                       len(verdict) / 2) if verdict else None,
          "sources": sources, "config": dataclasses.asdict(config)}


def _write(wd: Path, config: TransferConfig, rows: Sequence[Mapping[str, Any]],
           summary: dict[str, Any], timings: dict[str, float], table: Any) -> None:
  from cenas_jax import results as results_io  # pylint: disable=g-import-not-at-top

  results_io.write_csv(wd / "transfer.csv", rows, list(rows[0]))
  results_io.write_summary(wd, {**summary, "timings": timings}, {
      "seed": config.split_seed, "energy_source": "HW-NAS-Bench (measured) vs recalibrated "
      f"kernel_model({config.device_spec})", "ci_source": None,
      "data_hashes": {name: sha for name, _, sha in table.sources}})
  _plot(wd / "transfer_curves.png", rows)
  print(f"\n{'target':<17}{'source':<17}" + "".join(f"{f'{f * 100:g}%':>16}"
                                                      for f in config.fractions)
        + "   (median test RMSPE: transfer / FLOPs-linear)")
  for t, fs in summary["curves"].items():
    print(f"{t:<17}{summary['sources'][t]:<17}" + "".join(
        f"{fs[f'{f:g}']['transfer']:>8.3f}/{fs[f'{f:g}']['flops_linear']:<7.3f}"
        for f in config.fractions))
  print(f"timings: {', '.join(f'{k}={v:.1f}' for k, v in timings.items())}")


def _plot(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  targets = list(dict.fromkeys(r["target"] for r in rows))
  ncol = min(3, len(targets))
  nrow = -(-len(targets) // ncol)
  fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
  for ax, t in zip(axes.flat, targets):
    for model, style in (("flops_linear", "k--o"), ("scalar", "C1:^"), ("transfer", "C0-s")):
      sel = [r for r in rows if r["target"] == t and r["model"] == model]
      fr = sorted({r["fraction"] for r in sel})
      v = [[r["rmspe"] for r in sel if r["fraction"] == f] for f in fr]
      x = [f * 100 for f in fr]
      ax.plot(x, [np.median(a) for a in v], style, label=model, ms=4)
      ax.fill_between(x, [min(a) for a in v], [max(a) for a in v], alpha=0.15,
                      color=style[:2] if style[0] == "C" else "k")
    ax.set_xscale("log")
    everything = [r["rmspe"] for r in rows if r["target"] == t]
    if max(everything) > 20 * min(everything):
      ax.set_yscale("log")  # a few draws with constant-output cells blow RMSPE up
    ax.set_title(f"{t} (from {sel[0]['source']})", fontsize=9)
    ax.set_xlabel("% of the device's cells measured")
    ax.set_ylabel("test RMSPE")
  for ax in list(axes.flat)[len(targets):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=8)
  fig.suptitle("Kernel model recalibrated on a new device vs FLOPs-linear on the same cells "
               "(median, min-max over draws)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
