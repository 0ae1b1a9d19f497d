"""The standard figures, written as PNG files.

Figures are drawn on the Agg canvas directly (``matplotlib.figure.Figure`` +
``matplotlib.backends.backend_agg.FigureCanvasAgg``), so no global matplotlib backend is chosen or
changed, pyplot is never imported, and no display is needed. matplotlib is imported only inside the
functions. Files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.fileio import atomic_write_bytes

_DPI = 120


def _figure(figsize: tuple[float, float] = (6.4, 4.2)):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | os.PathLike[str]) -> Path:
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  return atomic_write_bytes(path, buf.getvalue())

def _finish(fig, ax, path: str | os.PathLike[str], xlabel: str, ylabel: str,
            title: str | None, note: str | None = None) -> Path:
  """Labels, grid, legend and an optional note under the title shared by the single-axis
  figures, then an atomic save."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize="medium")
  elif note:
    ax.set_title(note, fontsize="small")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="best", fontsize="small")
  return _save(fig, path)



def _vec(name: str, x: Any, n: int | None = None) -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {arr.shape}.")
  if n is not None and arr.shape[0] != n:
    raise ValueError(f"{name} has {arr.shape[0]} values, expected {n} (same as the x axis).")
  return arr


def plot_hv_curves(path: str | os.PathLike[str],
                   curves: Mapping[str, tuple[Any, Any, Any, Any]], xlabel: str, ylabel: str, *,
                   logy: bool = True, title: str | None = None, band: str | None = None,
                   styles: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
  """Central curves with shaded bands, one per method (e.g. hypervolume regret vs hours or carbon).

  Args:
    path: PNG file to write.
    curves: ``{name: (x, y_mid, y_lo, y_hi)}``, four 1-D arrays of equal length each.
    xlabel: x-axis label with unit (e.g. ``"search time (h)"``, ``"carbon (g CO2eq)"``).
    ylabel: y-axis label; say which way is better.
    logy: log-scale y axis (every plotted value must then be > 0).
    title: the figure's title.
    band: what the line and the shaded band are, e.g. ``"line: median over 20 seeds; band:
      25th-75th percentile"`` (written under the title).
    styles: per curve name, keyword arguments of ``Axes.plot`` (``color``, ``linestyle``), e.g. to
      draw two accountings of one strategy in one colour.

  Returns:
    The path written.

  Raises:
    ValueError: no curves, ragged arrays, or non-positive values with ``logy``.
  """
  if not curves:
    raise ValueError("plot_hv_curves: curves is empty.")
  fig = _figure()
  ax = fig.add_subplot()
  for name, data in curves.items():
    if len(data) != 4:
      raise ValueError(f"plot_hv_curves: curve {name!r} must be (x, y_mean, y_lo, y_hi).")
    x = _vec(f"{name}.x", data[0])
    y, lo, hi = (_vec(f"{name}.{k}", v, x.shape[0]) for k, v in zip(("y_mean", "y_lo", "y_hi"), data[1:]))
    if logy and (np.nanmin(np.concatenate([y, lo, hi]), initial=np.inf) <= 0):
      raise ValueError(f"plot_hv_curves: curve {name!r} has values <= 0; pass logy=False.")
    (line,) = ax.plot(x, y, label=name, linewidth=1.6, **dict((styles or {}).get(name, {})))
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
  if logy:
    ax.set_yscale("log")
  return _finish(fig, ax, path, xlabel, ylabel, title or "Search progress", band)


def plot_allocation_vs_ci(path: str | os.PathLike[str], hours: Any, n_sampling: Any,
                          n_training: Any, ci_g_per_kwh: Any, *, title: str | None = None) -> Path:
  """GPUs given to sampling and to training each hour (stacked steps), with the carbon intensity.

  Args:
    path: PNG file to write.
    hours: start of each hour (h since the search started), 1-D.
    n_sampling: GPUs sampling in each hour.
    n_training: GPUs training in each hour.
    ci_g_per_kwh: carbon intensity in each hour (gCO2eq/kWh), on a second y axis.
    title: optional title.

  Returns:
    The path written.
  """
  h = _vec("hours", hours)
  s = _vec("n_sampling", n_sampling, h.shape[0])
  t = _vec("n_training", n_training, h.shape[0])
  ci = _vec("ci_g_per_kwh", ci_g_per_kwh, h.shape[0])
  # Post-steps end at the last x value: repeat each series' last value one hour on, so the last hour
  # is drawn as wide as the others.
  width = float(h[-1] - h[-2]) if len(h) > 1 else 1.0
  h, s, t, ci = np.append(h, h[-1] + width), np.append(s, s[-1]), np.append(t, t[-1]), np.append(ci, ci[-1])
  fig = _figure((7.2, 4.2))
  ax = fig.add_subplot()
  ax.stackplot(h, t, s, labels=("training GPUs", "sampling GPUs"), step="post",
               colors=("tab:red", "tab:blue"), alpha=0.6)
  ax.set_xlabel("simulated hour of the search")
  ax.set_ylabel("GPUs held (training + sampling)")
  ax.set_ylim(0, max(1.0, float(np.max(s + t, initial=0.0))) * 1.05)
  ax2 = ax.twinx()
  ax2.step(h, ci, where="post", color="black", linewidth=1.2, label="carbon intensity")
  ax2.set_ylabel("carbon intensity (gCO2eq/kWh)")
  handles = ax.get_legend_handles_labels()
  handles2 = ax2.get_legend_handles_labels()
  ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="upper right", fontsize="small")
  ax.set_title(title or "GPU allocation against the grid's carbon intensity", fontsize="medium")
  return _save(fig, path)


def plot_pareto(path: str | os.PathLike[str], points: Any, front_mask: Any,
                labels: Sequence[str], *, title: str | None = None, color: Any = None,
                color_label: str = "") -> Path:
  """Scatter of all points with the Pareto front highlighted and joined.

  Args:
    path: PNG file to write.
    points: ``(n, 2)`` objective values (x, y).
    front_mask: ``(n,)`` bool, ``True`` for points on the front (e.g. from ``results.pareto_mask``).
    labels: ``(xlabel, ylabel)`` axis labels with units.
    title: optional title.
    color: optional ``(n,)`` values of a third objective: every point is coloured by it (colour
      bar ``color_label``) and the front's points are ringed, not joined (a front in three
      objectives is no staircase in two of them).
    color_label: the colour bar's label with units.

  Returns:
    The path written.
  """
  pts = np.asarray(points, dtype=np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"plot_pareto: points must have shape (n, 2), got {pts.shape}.")
  mask = np.asarray(front_mask, dtype=bool)
  if mask.shape != (pts.shape[0],):
    raise ValueError(f"plot_pareto: front_mask has shape {mask.shape}, expected ({pts.shape[0]},).")
  if len(labels) != 2:
    raise ValueError("plot_pareto: labels must be (xlabel, ylabel).")
  fig = _figure()
  ax = fig.add_subplot()
  if color is not None:
    c = np.asarray(color, dtype=np.float64)
    if c.shape != (pts.shape[0],):
      raise ValueError(f"plot_pareto: color has shape {c.shape}, expected ({pts.shape[0]},).")
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=c, s=18, cmap="viridis", label="evaluated")
    fig.colorbar(sc, ax=ax, label=color_label)
    ax.scatter(pts[mask, 0], pts[mask, 1], s=70, facecolors="none", edgecolors="tab:red",
               linewidths=1.2, label="Pareto set (all objectives)")
    return _finish(fig, ax, path, labels[0], labels[1], title or "Pareto front")
  ax.scatter(pts[~mask, 0], pts[~mask, 1], s=8, color="0.6", alpha=0.6, label="evaluated")
  front = pts[mask]
  front = front[np.argsort(front[:, 0], kind="stable")]
  ax.plot(front[:, 0], front[:, 1], "o-", color="tab:red", markersize=4, linewidth=1.2,
          label="Pareto front")
  return _finish(fig, ax, path, labels[0], labels[1], title or "Pareto front")


def plot_fronts(path: str | os.PathLike[str], fronts: Mapping[str, tuple[Any, Any]],
                labels: Sequence[str], *, title: str | None = None,
                note: str | None = None, logx: bool = True) -> Path:
  """Several methods' fronts (x minimized, y maximized) as staircases over their points.

  Args:
    path: PNG file to write.
    fronts: ``{name: (x, y)}``, two 1-D arrays of equal length each (any order).
    labels: ``(xlabel, ylabel)`` axis labels with units.
    title: optional title; ``note`` goes under it.
    logx: log-scale x axis (energies spanning decades; every x must then be > 0).

  Returns:
    The path written.
  """
  if not fronts:
    raise ValueError("plot_fronts: fronts is empty.")
  fig = _figure()
  ax = fig.add_subplot()
  for name, (x, y) in fronts.items():
    x = _vec(f"{name}.x", x)
    y = _vec(f"{name}.y", y, x.shape[0])
    order = np.argsort(x, kind="stable")
    best = np.maximum.accumulate(y[order])  # the best quality reachable at or below each energy
    (line,) = ax.step(x[order], best, where="post", linewidth=1.4, label=name)
    ax.plot(x, y, "o", color=line.get_color(), markersize=3.5, alpha=0.7)
  if logx:
    ax.set_xscale("log")
  return _finish(fig, ax, path, labels[0], labels[1], title or "Fronts", note)


def plot_forecast(path: str | os.PathLike[str], t: Any, actual: Any, p10: Any, p50: Any, p90: Any,
                  *, xlabel: str = "time (h)", ylabel: str = "carbon intensity (gCO2eq/kWh)",
                  title: str | None = None) -> Path:
  """A forecast's median and 10-90% band against the actual series.

  Args:
    path: PNG file to write.
    t: time axis, 1-D (numbers or datetimes).
    actual: observed values.
    p10: 10% quantile forecast.
    p50: median forecast.
    p90: 90% quantile forecast.
    xlabel: x-axis label.
    ylabel: y-axis label.
    title: optional title.

  Returns:
    The path written.
  """
  tt = np.asarray(t)
  if tt.ndim != 1:
    raise ValueError(f"plot_forecast: t must be 1-D, got shape {tt.shape}.")
  n = tt.shape[0]
  a, lo, mid, hi = (_vec(k, v, n) for k, v in
                    (("actual", actual), ("p10", p10), ("p50", p50), ("p90", p90)))
  fig = _figure((7.2, 4.0))
  ax = fig.add_subplot()
  ax.fill_between(tt, lo, hi, color="tab:blue", alpha=0.25, linewidth=0,
                  label="forecast 10th-90th percentile")
  ax.plot(tt, mid, color="tab:blue", linewidth=1.4, label="forecast median (p50)")
  ax.plot(tt, a, color="black", linewidth=1.2, label="actual")
  return _finish(fig, ax, path, xlabel, ylabel, title or "Carbon-intensity forecast against the actual")
