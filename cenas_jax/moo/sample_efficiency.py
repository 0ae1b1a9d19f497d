"""Sample efficiency of LaMOO on a finite table: samples needed to reach a hypervolume target.

The LaMOO paper's NAS-Bench-201 claim ("up to 225% sample efficiency") compares optimizers by how
many true evaluations each needs to reach a hypervolume. This module runs one optimizer on a finite
candidate set whose true objectives are revealed per sample (no fidelity gap, no cost model), from
the same initial samples for every optimizer, in batches of ``batch_size``:

- ``random``: uniform without replacement among the unseen candidates.
- ``lamoo``: LaMOO's partition tree, UCB region and uniform proposals in the region
  (``lamoo.lamoo_step`` with ``method="rejection"``, exhaustive over the finite set).
- ``lamoo_ehvi``: the same tree and region; inside it, greedy exact 2-D EHVI under per-objective GPs
  (``method="ehvi"``).
- ``ehvi``: the same GP/EHVI over every unseen candidate: ``lamoo_step`` with a tree that may not
  split (``max_height=0``), so the only difference from ``lamoo_ehvi`` is the partitioning.

Samples to a target are counted at **batch ends** (``n_init``, ``n_init + k``, ...), including the
initial samples, so a method is never credited for the order of proposals inside a batch.
Everything here is pure: arrays in, arrays out, randomness from the caller's ``Generator``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from cenas_jax.moo import lamoo
from cenas_jax.moo.hypervolume import hypervolume, hypervolume_2d

Method = Literal["random", "lamoo", "lamoo_ehvi", "ehvi"]
METHODS: tuple[str, ...] = ("random", "lamoo", "lamoo_ehvi", "ehvi")
# (numerator, denominator) of the reported ratios: samples of the first over samples of the second.
RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    ("random", "lamoo"), ("random", "lamoo_ehvi"), ("random", "ehvi"), ("ehvi", "lamoo_ehvi"))


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """How every optimizer of the study runs.

  Attributes:
    n_init: uniform random initial samples (the same ones for every method of a seed).
    budget: total samples per run, initial ones included.
    batch_size: proposals per step (LaMOO's ``sample_num``).
    cp: UCB exploration constant (HV units).
    lamoo_preset: tree rules, ``"cenas"`` or ``"lamoo"`` (``LaMOOConfig.preset``).
    mode: region selection, ``"leaf"`` or ``"path"``.
  """

  n_init: int = 10
  budget: int = 300
  batch_size: int = 5
  cp: float = 30.0
  lamoo_preset: str = "cenas"
  mode: Literal["leaf", "path"] = "leaf"

  def __post_init__(self):
    if self.n_init < 1:
      raise ValueError(f"n_init must be >= 1; got {self.n_init}.")
    if self.budget < self.n_init:
      raise ValueError(f"budget ({self.budget}) must be >= n_init ({self.n_init}).")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")
    if self.cp < 0:
      raise ValueError(f"cp must be >= 0; got {self.cp}.")
    lamoo.LaMOOConfig.preset(self.lamoo_preset)  # raises on an unknown name
    if self.mode not in ("leaf", "path"):
      raise ValueError(f"mode must be 'leaf' or 'path'; got {self.mode!r}.")

  def batch_ends(self) -> np.ndarray:
    """Sample counts after the initial samples and after each batch, e.g. 10, 15, ..., budget."""
    ends = np.arange(self.n_init, self.budget + 1, self.batch_size)
    return ends if ends[-1] == self.budget else np.append(ends, self.budget)


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
  """One run of one optimizer.

  Attributes:
    method: one of ``METHODS``.
    sample_idx: candidate indices in evaluation order, shape ``(budget,)``; the first ``n_init`` are
      the initial samples.
    hv: ``hv[i]`` = hypervolume of the first ``i + 1`` samples (objective units), shape ``(budget,)``.
    batch_ends: sample counts at which a batch (or the initial set) was complete.
  """

  method: str
  sample_idx: np.ndarray
  hv: np.ndarray
  batch_ends: np.ndarray


def initial_samples(n_candidates: int, n_init: int, rng: np.random.Generator) -> np.ndarray:
  """``n_init`` distinct uniform candidate indices (shared by every method of one seed)."""
  if not 1 <= n_init <= n_candidates:
    raise ValueError(f"n_init must be in [1, {n_candidates}]; got {n_init}.")
  return rng.choice(n_candidates, size=n_init, replace=False).astype(np.int64)


def hv_prefix_trace(y: np.ndarray, ref_point: np.ndarray) -> np.ndarray:
  """``out[i]`` = hypervolume of ``y[: i + 1]`` (maximized objectives), shape ``(n,)``, non-decreasing."""
  y = np.asarray(y, dtype=np.float64)
  hv_fn = hypervolume_2d if y.shape[1] == 2 else hypervolume
  hv = np.array([hv_fn(y[: i + 1], ref_point) for i in range(y.shape[0])], dtype=np.float64)
  # A superset's HV is never smaller; the sweep's summation order can make it ~1e-13 smaller.
  return np.maximum.accumulate(hv)


def _tree_config(method: str, settings: OptimizerSettings) -> lamoo.LaMOOConfig:
  config = lamoo.LaMOOConfig.preset(settings.lamoo_preset)
  # A tree that may not split: the whole table is the region, so EHVI runs without partitioning.
  return dataclasses.replace(config, max_height=0) if method == "ehvi" else config


def run_optimizer(method: str, x: np.ndarray, y: np.ndarray, ref_point: np.ndarray,
                  init_idx: np.ndarray, settings: OptimizerSettings,
                  rng: np.random.Generator) -> Trace:
  """Runs one optimizer for ``settings.budget`` samples of a finite table.

  Args:
    method: ``"random"``, ``"lamoo"``, ``"lamoo_ehvi"`` or ``"ehvi"`` (module docstring).
    x: candidate encodings, shape ``(n, d)``.
    y: true objectives (maximized), shape ``(n, m)``; revealed only for sampled rows.
    ref_point: hypervolume reference point, shape ``(m,)``.
    init_idx: the ``settings.n_init`` initial candidate indices.
    settings: budget, batch size and LaMOO settings.
    rng: randomness of the proposals (random draws, UCB ties, uniform picks in a region).

  Returns:
    The ``Trace`` (HV after every sample).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
  x = np.asarray(x)
  y = np.asarray(y, dtype=np.float64)
  ref = np.asarray(ref_point, dtype=np.float64)
  n = x.shape[0]
  if y.shape[0] != n:
    raise ValueError(f"x has {n} rows but y has {y.shape[0]}.")
  if settings.budget > n:
    raise ValueError(f"budget ({settings.budget}) exceeds the {n} candidates.")
  init_idx = np.asarray(init_idx, dtype=np.int64)
  if init_idx.shape != (settings.n_init,) or np.unique(init_idx).size != settings.n_init:
    raise ValueError(f"init_idx must hold {settings.n_init} distinct indices; got {init_idx}.")
  if method in ("lamoo_ehvi", "ehvi") and y.shape[1] != 2:
    raise ValueError(f"method {method!r} needs 2 objectives (exact 2-D EHVI); got {y.shape[1]}.")
  config = _tree_config(method, settings)
  proposal = "ehvi" if method in ("lamoo_ehvi", "ehvi") else "rejection"
  state = lamoo.LaMOOState(sample_idx=init_idx, y=y[init_idx])
  seen = np.zeros(n, dtype=bool)
  seen[init_idx] = True
  while state.sample_idx.size < settings.budget:
    k = min(settings.batch_size, settings.budget - state.sample_idx.size)
    if method == "random":
      batch = rng.choice(np.flatnonzero(~seen), size=k, replace=False).astype(np.int64)
    else:
      batch = lamoo.lamoo_step(state, x, ref, config, k, rng, cp=settings.cp, mode=settings.mode,
                               method=proposal)
    if batch.size != k or seen[batch].any():
      raise RuntimeError(f"{method}: proposed {batch.size} indices (wanted {k} unseen ones).")
    seen[batch] = True
    state = state.add(batch, y[batch])
  return Trace(method=method, sample_idx=state.sample_idx, hv=hv_prefix_trace(state.y, ref),
               batch_ends=settings.batch_ends())


def samples_to_target(trace: Trace, target_hv: float) -> int | None:
  """First batch-end sample count whose HV is >= ``target_hv``; ``None`` if never reached."""
  reached = trace.hv[trace.batch_ends - 1] >= target_hv
  return int(trace.batch_ends[np.argmax(reached)]) if reached.any() else None


def censored_quantile(values: Sequence[int | None], q: float) -> float | None:
  """Linear-interpolated quantile where ``None`` (never reached) ranks above every number.

  Returns ``None`` when the quantile depends on a never-reached run (it is then only known to be
  above the budget).
  """
  vals = np.sort(np.array([math.inf if v is None else float(v) for v in values]))
  if vals.size == 0:
    return None
  pos = q * (vals.size - 1)
  lo, hi = int(math.floor(pos)), int(math.ceil(pos))
  if math.isinf(vals[hi]):
    return None
  return float(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo))


def summarize(traces: Mapping[str, Sequence[Trace]], max_hv: float, targets: Sequence[float],
              budget: int) -> dict[str, Any]:
  """Samples-to-target statistics over seeds and the sample-efficiency ratios.

  Args:
    traces: per method, one trace per seed (same seeds, same order, for every method).
    max_hv: hypervolume of the true front of the whole table.
    targets: HV targets as fractions of ``max_hv``.
    budget: samples per run (a never-reached run is censored at it).

  Returns:
    ``{"targets": {str(t): {"methods": {m: {"samples": [...], "median", "q25", "q75",
    "never_reached"}}, "ratios": {"a/b": {"ratio", "lower_bound"}}}}, "final_hv_frac": {m: {...}}}``.
    ``median`` is ``None`` when over half the seeds never reached the target. A ratio is the median
    samples of ``a`` over that of ``b``; when only ``a``'s median is censored, ``ratio`` is ``None``
    and ``lower_bound`` = ``budget / median_b``.
  """
  out: dict[str, Any] = {"targets": {}, "final_hv_frac": {}}
  for t in targets:
    stats = {}
    for m, tr in traces.items():
      s = [samples_to_target(x, t * max_hv) for x in tr]
      stats[m] = {"samples": s, "median": censored_quantile(s, 0.5),
                  "q25": censored_quantile(s, 0.25), "q75": censored_quantile(s, 0.75),
                  "never_reached": sum(v is None for v in s)}
    ratios = {}
    for a, b in RATIO_PAIRS:
      if a not in stats or b not in stats:
        continue
      ma, mb = stats[a]["median"], stats[b]["median"]
      ratios[f"{a}/{b}"] = {"ratio": ma / mb if ma is not None and mb is not None else None,
                            "lower_bound": budget / mb if ma is None and mb is not None else None}
    out["targets"][f"{t:g}"] = {"methods": stats, "ratios": ratios}
  for m, tr in traces.items():
    final = np.array([x.hv[-1] / max_hv for x in tr])
    out["final_hv_frac"][m] = {"median": float(np.median(final)),
                               "q25": float(np.quantile(final, 0.25)),
                               "q75": float(np.quantile(final, 0.75))}
  return out


def hv_curve_quantiles(traces: Sequence[Trace], max_hv: float,
                       qs: Sequence[float] = (0.5, 0.25, 0.75)) -> np.ndarray:
  """Quantiles over seeds of the normalized HV regret ``1 - HV / max_hv`` per sample count.

  Returns:
    Array of shape ``(len(qs), budget)``.
  """
  regret = 1.0 - np.stack([t.hv for t in traces]) / max_hv
  return np.quantile(regret, np.asarray(qs), axis=0)
