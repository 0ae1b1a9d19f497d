"""A clairvoyant lower bound on the carbon any strategy needs to reach an HV target.

Any search that reaches ``target_hv`` must have trained a set S of architectures (beyond the free
initial ones) whose hypervolume, together with the initial ones, reaches the target; its training
GPU-seconds are at least ``t(S) = sum_{i in S} t_i``, and the pool offers at most ``n_gpus x
step_s`` GPU-seconds per hour at that hour's intensity. So, with the true objectives *and* the whole
trace known,

    carbon >= F(T*),   T* = min { t(S) : HV(init + S) >= target_hv },

where ``F(T)`` is the carbon of T GPU-seconds of training placed in the cleanest GPU-hours of the
window (``carbon_floor_g``). This holds under both accountings (paper charges training only; full
charges at least that) and for a one-shot search charged for training what it reports. It ignores
that a search must first find S, so no strategy can reach it; it says how much room is left.

``T*`` is a knapsack over a 2-D hypervolume, solved exactly by a label-setting dynamic programme
over staircases: for a mutually non-dominated set sorted by the first objective a (ascending; the
second, y, then descends) ``HV = sum_k (a_k - a_{k-1}) (y_k - r_y)`` with ``a_0 = r_a``, a sum over
consecutive pairs, so the chains ending at each architecture carry the Pareto set of their (time,
HV) labels. Only architectures non-dominated in (a, y, -t) can be in an optimal set (a dominated one
is replaced by its dominator at no extra time and no HV loss), which keeps the programme small (about
90 of the 12,554 NB201 cells, under a second).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cenas_jax.moo.pareto import non_dominated_mask


@dataclasses.dataclass(frozen=True)
class TrainTimeBound:
  """``T*`` (GPU-seconds of training beyond the free architectures) and a set that attains it."""

  train_s: float  # inf when no set reaches the target
  plan: np.ndarray  # positions (into the problem) of the cheapest set, free architectures included
  n_candidates: int  # architectures non-dominated in (objectives, -time) that the programme considered


def min_train_time(y: np.ndarray, train_s: np.ndarray, free: np.ndarray, ref: np.ndarray,
                   target_hv: float) -> TrainTimeBound:
  """``T*`` (module docstring) for maximized 2-D objectives ``y`` (n, 2).

  Args:
    y: true objectives of every architecture (both maximized).
    train_s: training time of each (s); ``free`` ones cost nothing (the initial evaluations).
    free: boolean mask of the architectures known without charge.
    ref: HV reference point.
    target_hv: the HV to reach.
  """
  y = np.asarray(y, dtype=np.float64)
  t = np.where(free, 0.0, np.asarray(train_s, dtype=np.float64))
  idx = np.flatnonzero(np.all(y > ref, axis=1))  # outside the reference box adds no HV
  keep = idx[non_dominated_mask(np.column_stack([y[idx], -t[idx]]))]
  order = keep[np.lexsort((-y[keep, 1], y[keep, 0]))]
  a, yy, tt = y[order, 0], y[order, 1], t[order]
  # labels[j] = (time, hv, parent node, parent label) of the Pareto-optimal chains ending at j.
  labels: list[tuple[np.ndarray, ...]] = []
  best_s, best_at = np.inf, None
  for j in range(len(order)):
    height = yy[j] - ref[1]
    parts = [(np.array([tt[j]]), np.array([(a[j] - ref[0]) * height]), np.array([-1]),
              np.array([-1]))]
    for i in np.flatnonzero((yy[:j] > yy[j]) & (a[:j] < a[j])):
      c, h, _, _ = labels[i]
      parts.append((c + tt[j], h + (a[j] - a[i]) * height, np.full(len(c), i), np.arange(len(c))))
    c, h, pn, pl = (np.concatenate(x) for x in zip(*parts))
    ok = c <= best_s  # a chain already dearer than a known solution cannot become one
    o = np.lexsort((-h[ok], c[ok]))
    c, h, pn, pl = c[ok][o], h[ok][o], pn[ok][o], pl[ok][o]
    front = h > np.concatenate([[-np.inf], np.maximum.accumulate(h)[:-1]])
    labels.append((c[front], h[front], pn[front], pl[front]))
    hit = np.flatnonzero(labels[-1][1] >= target_hv)
    if len(hit) and labels[-1][0][hit[0]] < best_s:
      best_s, best_at = float(labels[-1][0][hit[0]]), (j, int(hit[0]))
  plan = []
  while best_at is not None and best_at[0] >= 0:
    j, k = best_at
    plan.append(int(order[j]))
    best_at = (int(labels[j][2][k]), int(labels[j][3][k]))
  return TrainTimeBound(train_s=best_s, plan=np.asarray(plan[::-1], dtype=np.int64),
                        n_candidates=len(order))


def carbon_floor_g(train_s: float, ci_g_per_kwh: np.ndarray, n_gpus: int, power_w: float,
                   pue: float, step_s: float = 3600.0) -> float:
  """Carbon (g) of ``train_s`` GPU-seconds of training placed in the cleanest GPU-hours of the
  window ``ci_g_per_kwh`` (one value per hour, ``n_gpus x step_s`` GPU-seconds each):
  ``sum_h s_h P PUE CI_h / 3.6e6`` with the ``s_h`` filled cleanest hour first."""
  if not np.isfinite(train_s):
    return float("inf")
  g_per_gpu_s = np.sort(np.asarray(ci_g_per_kwh, dtype=np.float64)) * power_w * pue / 3.6e6
  cap = n_gpus * step_s
  if train_s > cap * len(g_per_gpu_s):
    return float("inf")  # more training than the window can hold
  full = min(int(train_s // cap), len(g_per_gpu_s) - 1)
  return float(cap * g_per_gpu_s[:full].sum() + (train_s - full * cap) * g_per_gpu_s[full])
