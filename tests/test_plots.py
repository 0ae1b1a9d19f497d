"""Tests for cenas_jax.plots: each figure holds the axes, series and labels it promises, and is
written as a valid PNG."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cenas_jax import plots

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved(monkeypatch):
  """The figures the plot functions save, captured as they are written (in call order)."""
  figures = []
  real_save = plots._save  # pylint: disable=protected-access

  def capture(fig, path):
    figures.append(fig)
    return real_save(fig, path)

  monkeypatch.setattr(plots, "_save", capture)
  return figures


def _legend(ax):
  return [t.get_text() for t in ax.get_legend().get_texts()]


def _assert_png(path, min_width=200):
  data = path.read_bytes()
  assert len(data) > 1000
  assert data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data.rstrip(b"\x00")[-8:-4] == b"IEND"
  width, height = struct.unpack(">II", data[16:24])
  assert width >= min_width and height >= 100


def test_plot_hv_curves(tmp_path, saved):
  x = np.linspace(0, 80, 50)
  y = np.exp(-x / 30) + 0.01
  curves = {"CE-NAS": (x, y, y * 0.8, y * 1.2), "Vanilla": (x, y * 2, y * 1.5, y * 2.5)}
  _assert_png(plots.plot_hv_curves(tmp_path / "hv.png", curves, "time (h)", "HV regret"))
  (ax,) = saved[0].axes
  assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("time (h)", "HV regret", "log")
  assert [line.get_label() for line in ax.get_lines()] == ["CE-NAS", "Vanilla"]
  np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), y * 2)
  assert len(ax.collections) == 2  # one shaded band per curve
  assert _legend(ax) == ["CE-NAS", "Vanilla"]
  _assert_png(plots.plot_hv_curves(tmp_path / "hv_lin.png", {"a": (x, y - 0.5, y - 0.6, y)},
                                   "carbon (g)", "HV", logy=False, title="t"))
  (ax,) = saved[1].axes
  assert (ax.get_title(), ax.get_yscale(), ax.get_xlabel()) == ("t", "linear", "carbon (g)")
  with pytest.raises(ValueError, match="logy=False"):
    plots.plot_hv_curves(tmp_path / "bad.png", {"a": (x, y - 0.5, y - 0.6, y)}, "x", "y")
  with pytest.raises(ValueError, match="expected 50"):
    plots.plot_hv_curves(tmp_path / "bad.png", {"a": (x, y[:3], y, y)}, "x", "y")
  assert not (tmp_path / "bad.png").exists()


def test_plot_allocation_vs_ci(tmp_path, saved):
  hours = np.arange(48)
  ci = 200 + 80 * np.sin(hours / 24 * 2 * np.pi)
  n_train = np.where(ci < 200, 6, 2)
  out = plots.plot_allocation_vs_ci(tmp_path / "alloc.png", hours, 8 - n_train, n_train, ci)
  _assert_png(out)
  ax, ax_ci = saved[0].axes
  assert ax.get_ylabel() == "GPUs held (training + sampling)"
  assert ax.get_xlabel() == "simulated hour of the search"
  assert ax_ci.get_ylabel() == "carbon intensity (gCO2eq/kWh)"
  assert _legend(ax) == ["training GPUs", "sampling GPUs", "carbon intensity"]
  assert len(ax.collections) == 2  # training and sampling stacked
  line = ax_ci.get_lines()[0]
  # Every hour is drawn, the last one included (regression: a 48-hour run drew 47).
  np.testing.assert_allclose(line.get_xdata(), np.arange(49))
  np.testing.assert_allclose(line.get_ydata(), np.append(ci, ci[-1]))


def test_plot_pareto(tmp_path, saved):
  from cenas_jax.results import pareto_mask
  rng = np.random.default_rng(0)
  pts = rng.uniform(size=(200, 2))
  mask = pareto_mask(pts, [False, True])
  _assert_png(plots.plot_pareto(tmp_path / "front.png", pts, mask, ("energy (mJ)", "accuracy (%)")))
  (ax,) = saved[0].axes
  assert (ax.get_xlabel(), ax.get_ylabel()) == ("energy (mJ)", "accuracy (%)")
  assert _legend(ax) == ["evaluated", "Pareto front"]
  (front,) = ax.get_lines()
  assert len(front.get_xdata()) == mask.sum()
  assert np.all(np.diff(front.get_xdata()) >= 0)  # joined left to right
  assert len(ax.collections[0].get_offsets()) == (~mask).sum()
  with pytest.raises(ValueError, match="front_mask"):
    plots.plot_pareto(tmp_path / "f2.png", pts, mask[:5], ("a", "b"))


def test_plot_pareto_colours_a_third_objective(tmp_path, saved):
  from cenas_jax.results import pareto_mask
  rng = np.random.default_rng(1)
  pts, energy = rng.uniform(size=(30, 2)), rng.uniform(1.0, 5.0, 30)
  mask = pareto_mask(np.c_[pts, energy], [False, True, False])
  _assert_png(plots.plot_pareto(tmp_path / "front3.png", pts, mask, ("params (M)", "accuracy (%)"),
                                color=energy, color_label="energy (mJ)"))
  ax = saved[0].axes[0]
  assert _legend(ax) == ["evaluated", "Pareto set (all objectives)"]
  assert ax.get_lines() == []  # a front in three objectives is not joined in two
  np.testing.assert_allclose(ax.collections[0].get_array(), energy)
  assert len(ax.collections[1].get_offsets()) == mask.sum()
  assert saved[0].axes[1].get_ylabel() == "energy (mJ)"  # the colour bar
  with pytest.raises(ValueError, match="color"):
    plots.plot_pareto(tmp_path / "f3.png", pts, mask, ("a", "b"), color=energy[:3])


def test_plot_forecast_with_datetimes(tmp_path, saved):
  t = pd.date_range("2021-07-02", periods=72, freq="h", tz="UTC")
  actual = 200 + 50 * np.sin(np.arange(72) / 4)
  _assert_png(plots.plot_forecast(tmp_path / "fc.png", t.to_numpy(), actual, actual - 20,
                                  actual + 3, actual + 25))
  (ax,) = saved[0].axes
  assert ax.get_ylabel() == "carbon intensity (gCO2eq/kWh)"
  assert _legend(ax) == ["forecast 10th-90th percentile", "forecast median (p50)", "actual"]
  p50, observed = ax.get_lines()
  np.testing.assert_allclose(p50.get_ydata(), actual + 3)
  np.testing.assert_allclose(observed.get_ydata(), actual)
  _assert_png(plots.plot_forecast(tmp_path / "fc2.png", np.arange(72), actual, actual - 20,
                                  actual, actual + 25))


def test_no_pyplot_and_lazy_matplotlib(tmp_path):
  code = (
      "import sys\n"
      "import cenas_jax.plots as p\n"
      "assert 'matplotlib' not in sys.modules, 'imported at module import'\n"
      f"p.plot_pareto({str(tmp_path / 'x.png')!r}, [[0, 1], [1, 0]], [True, True], ('a', 'b'))\n"
      "assert 'matplotlib.pyplot' not in sys.modules\n"
  )
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  _assert_png(tmp_path / "x.png")


def test_every_figure_has_a_title_and_named_band(tmp_path, monkeypatch):
  """Figures explain themselves: a title on each, and the band's definition under it."""
  figs = []
  real_save = plots._save  # pylint: disable=protected-access

  def keep(fig, path):
    figs.append(fig)
    return real_save(fig, path)

  monkeypatch.setattr(plots, "_save", keep)
  x = np.arange(4.0)
  plots.plot_hv_curves(tmp_path / "a.png", {"a": (x, x, x - 1, x + 1)}, "h", "regret (lower is better)",
                       logy=False, band="line: median; band: 25th-75th percentile")
  plots.plot_allocation_vs_ci(tmp_path / "b.png", x, x, x, x + 100)
  plots.plot_pareto(tmp_path / "c.png", np.c_[x, -x], x > 2, ("x", "y"))
  plots.plot_forecast(tmp_path / "d.png", x, x + 1, x, x + 1, x + 2)
  titles = [fig.axes[0].get_title() for fig in figs]
  assert all(titles), titles
  assert titles[0] == "Search progress\nline: median; band: 25th-75th percentile"
  assert "percentile" in figs[3].axes[0].get_legend_handles_labels()[1][0]


def test_plot_fronts(tmp_path, saved):
  fronts = {"a": ([3.0, 1.0, 2.0], [0.9, 0.7, 0.6]), "b": (np.array([1.5]), np.array([0.8]))}
  _assert_png(plots.plot_fronts(tmp_path / "fronts.png", fronts, ("energy (J)", "accuracy")))
  with pytest.raises(ValueError):
    plots.plot_fronts(tmp_path / "bad.png", {"a": ([1.0, 2.0], [0.5])}, ("x", "y"))
  with pytest.raises(ValueError):
    plots.plot_fronts(tmp_path / "bad.png", {}, ("x", "y"))
