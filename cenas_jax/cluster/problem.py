"""The search problem the cluster's loop works on: candidates with two fidelities.

``Problem`` is the protocol the loop (``cluster.search``) reads: candidate positions ``0..n-1`` with
an encoding for LaMOO's classifiers, a sampling fidelity (``score``) and a true fidelity revealed by
training (``run_segments``), and three hooks through which an open problem does real work:

- ``expand(rng)``: add fresh candidates before the hour's proposals (a space too large to enumerate
  is sampled, and LaMOO classifies the samples into its regions);
- ``score(positions)``: the sampling GPUs' estimates (a supernet evaluation), also kept in ``y_pred``;
- ``run_segments(segments)``: run the hour's training stretches (``pool.Segment``); a finished one
  fills the candidate's row of ``y_true``.

A finite table (``SearchProblem``, the HW-NAS-Bench study) implements the hooks as lookups and no-ops,
so the same loop drives the table and real training (``cenas_jax.cifar_nas.problem``). Users plug in a
problem of their own by implementing the protocol.

``SearchProblem`` holds, for every candidate architecture, its encoding (what LaMOO's classifiers see),
its true objectives (what evaluation = training from scratch reveals), its sampling estimate (what a
one-shot or few-shot supernet says), and its full training time. ``hwnas_problem`` builds the CE-NAS
HW-NAS-Bench problem from the NB201 table.

Training time model (NB201 has no per-cell training time): affine in FLOPs, calibrated to the range
seen in the official CE-NAS table (``init_data.pth``: 4,119 s to 6,922 s, i.e. 1.1 to 1.9 GPU-hours per
200-epoch training; the all-conv3x3 cell, the one with most FLOPs, took 6,921.7 s):
``t = t_min + (t_max - t_min) * (flops - flops_min) / (flops_max - flops_min)``.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from cenas_jax.moo.hypervolume import hypervolume_2d

# Calibration of the training-time model (s), from the official CE-NAS init data.
TRAIN_TIME_RANGE_S = (4119.0, 6922.0)


class Problem(Protocol):
  """What the search loop reads of a problem (all objectives maximized; see the module docstring).

  ``features``, ``y_true``, ``y_pred`` and ``train_time_s`` have one row per known candidate;
  ``y_true`` rows are read only for evaluated candidates and ``y_pred`` rows only for scored ones.
  ``max_hv`` normalizes HV (the true front's HV for a table; a stated bound for an open space).
  """

  name: str
  objective_names: tuple[str, ...]
  sampling_source: str
  ref_point: np.ndarray
  max_hv: float

  @property
  def n(self) -> int: ...

  @property
  def features(self) -> np.ndarray: ...

  @property
  def y_true(self) -> np.ndarray: ...

  @property
  def y_pred(self) -> np.ndarray: ...

  @property
  def train_time_s(self) -> np.ndarray: ...

  def hv(self, positions) -> float: ...

  def expand(self, rng: np.random.Generator) -> None: ...

  def score(self, positions: np.ndarray) -> np.ndarray: ...

  def run_segments(self, segments: Sequence) -> None: ...


@dataclasses.dataclass(frozen=True)
class SearchProblem:
  """A finite multi-objective search problem with a cheap and an expensive fidelity.

  All objectives are maximized (costs are negated).

  Attributes:
    name: short name, e.g. "hwnas-nb201-cifar10-edgegpu_energy".
    arch_index: (n,) benchmark index of each candidate (NB201 index).
    features: (n, d) float32 encoding seen by the optimizer's classifiers.
    y_true: (n, m) true objectives (revealed by training).
    y_pred: (n, m) sampling-fidelity estimates (one-shot / few-shot supernet).
    train_time_s: (n,) GPU time of a full training (s).
    ref_point: (m,) hypervolume reference point.
    max_hv: hypervolume of the true front of all candidates.
    objective_names: names of the m objectives (as maximized).
    sampling_source: where ``y_pred`` comes from, e.g. "table-oneshot-supernet".
  """

  name: str
  arch_index: np.ndarray
  features: np.ndarray
  y_true: np.ndarray
  y_pred: np.ndarray
  train_time_s: np.ndarray
  ref_point: np.ndarray
  max_hv: float
  objective_names: tuple[str, ...]
  sampling_source: str

  def __post_init__(self):
    n = len(self.arch_index)
    for field in ("features", "y_true", "y_pred", "train_time_s"):
      if len(getattr(self, field)) != n:
        raise ValueError(f"SearchProblem.{field} has {len(getattr(self, field))} rows, expected {n}")
    if not np.all(np.isfinite(self.y_true)) or not np.all(np.isfinite(self.y_pred)):
      raise ValueError("SearchProblem objectives must be finite (drop candidates without data)")
    if np.any(self.train_time_s <= 0):
      raise ValueError("SearchProblem.train_time_s must be > 0")

  @property
  def n(self) -> int:
    return len(self.arch_index)

  def hv(self, positions) -> float:
    """Hypervolume of the true objectives of the candidates at ``positions``."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
      return 0.0
    return float(hypervolume_2d(self.y_true[positions], self.ref_point))

  # The loop's hooks: a table knows every candidate and both fidelities already.
  def expand(self, rng: np.random.Generator) -> None:
    del rng

  def score(self, positions: np.ndarray) -> np.ndarray:
    return self.y_pred[positions]

  def run_segments(self, segments: Sequence) -> None:
    del segments


def affine_train_time_s(flops: np.ndarray, time_range_s=TRAIN_TIME_RANGE_S) -> np.ndarray:
  """Training time (s) affine in FLOPs between ``time_range_s`` at the min and max FLOPs."""
  flops = np.asarray(flops, dtype=np.float64)
  lo, hi = float(np.min(flops)), float(np.max(flops))
  frac = (flops - lo) / (hi - lo) if hi > lo else np.zeros_like(flops)
  return time_range_s[0] + (time_range_s[1] - time_range_s[0]) * frac


def hwnas_problem(table, *, sampling: str = "oneshot", energy_metric: str = "edgegpu_energy",
                  train_time_model: str = "flops_affine",
                  train_time_range_s: tuple[float, float] = TRAIN_TIME_RANGE_S) -> SearchProblem:
  """The CE-NAS HW-NAS-Bench problem: maximize (CIFAR-10 test acc %, -energy mJ).

  Args:
    table: an ``NB201Table`` (``cenas_jax.data.nasbench.load_nb201_table()``).
    sampling: "oneshot" or "fewshot": which supernet table gives the sampling-fidelity accuracy.
      Energy is a lookup (a hardware measurement), identical at both fidelities.
    energy_metric: HW-NAS-Bench energy column (mJ).
    train_time_model: "flops_affine" (see module docstring) or "constant" (the mean of the range).
    train_time_range_s: calibration range of the training-time model (s).

  Returns:
    The problem over the cells that have the HW-NAS-Bench metric (12,554 with the shared data).
  """
  from cenas_jax.spaces import nb201

  if sampling not in ("oneshot", "fewshot"):
    raise ValueError(f"sampling must be 'oneshot' or 'fewshot', got {sampling!r}")
  column = f"{energy_metric}_mj"
  if not hasattr(table, column):
    raise ValueError(f"unknown HW-NAS-Bench energy metric {energy_metric!r} (e.g. 'edgegpu_energy')")
  energy = np.asarray(getattr(table, column), dtype=np.float64)
  keep = np.flatnonzero(np.isfinite(energy))
  acc = np.asarray(table.test_acc_cifar10, dtype=np.float64)[keep]
  pred_acc = np.asarray(table.oneshot_acc if sampling == "oneshot" else table.fewshot_acc,
                        dtype=np.float64)[keep]
  y_true = np.stack([acc, -energy[keep]], axis=1)
  y_pred = np.stack([pred_acc, -energy[keep]], axis=1)
  if train_time_model == "flops_affine":
    flops = np.asarray(table.flops_m, dtype=np.float64)[keep]
    if not np.all(np.isfinite(flops)):
      raise ValueError("flops_affine training-time model needs FLOPs for every HW-NAS-Bench cell")
    train_time_s = affine_train_time_s(flops, train_time_range_s)
  elif train_time_model == "constant":
    train_time_s = np.full(len(keep), 0.5 * sum(train_time_range_s))
  else:
    raise ValueError(f"train_time_model must be 'flops_affine' or 'constant', got {train_time_model!r}")
  ref_point = np.array([0.0, -50.0])
  return SearchProblem(
      name=f"hwnas-nb201-cifar10-{energy_metric}",
      arch_index=keep.astype(np.int64),
      features=nb201.one_hot(table.ops[keep]).astype(np.float32),
      y_true=y_true,
      y_pred=y_pred,
      train_time_s=train_time_s,
      ref_point=ref_point,
      max_hv=float(hypervolume_2d(y_true, ref_point)),
      objective_names=("cifar10_test_acc_pct", f"neg_{energy_metric}_mj"),
      sampling_source=f"table-{sampling}-supernet",
  )
