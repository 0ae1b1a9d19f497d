"""Tests for cenas_jax.plots: each figure is written as a valid, non-empty PNG."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cenas_jax import plots

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_width=200):
  data = path.read_bytes()
  assert len(data) > 1000
  assert data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data.rstrip(b"\x00")[-8:-4] == b"IEND"
  width, height = struct.unpack(">II", data[16:24])
  assert width >= min_width and height >= 100


def test_plot_hv_curves(tmp_path):
  x = np.linspace(0, 80, 50)
  y = np.exp(-x / 30) + 0.01
  curves = {"CE-NAS": (x, y, y * 0.8, y * 1.2), "Vanilla": (x, y * 2, y * 1.5, y * 2.5)}
  _assert_png(plots.plot_hv_curves(tmp_path / "hv.png", curves, "time (h)", "HV regret"))
  _assert_png(plots.plot_hv_curves(tmp_path / "hv_lin.png", {"a": (x, y - 0.5, y - 0.6, y)},
                                   "carbon (g)", "HV", logy=False, title="t"))
  with pytest.raises(ValueError, match="logy=False"):
    plots.plot_hv_curves(tmp_path / "bad.png", {"a": (x, y - 0.5, y - 0.6, y)}, "x", "y")
  with pytest.raises(ValueError, match="expected 50"):
    plots.plot_hv_curves(tmp_path / "bad.png", {"a": (x, y[:3], y, y)}, "x", "y")
  assert not (tmp_path / "bad.png").exists()


def test_plot_allocation_vs_ci(tmp_path):
  hours = np.arange(48)
  ci = 200 + 80 * np.sin(hours / 24 * 2 * np.pi)
  n_train = np.where(ci < 200, 6, 2)
  out = plots.plot_allocation_vs_ci(tmp_path / "alloc.png", hours, 8 - n_train, n_train, ci)
  _assert_png(out)


def test_plot_pareto(tmp_path):
  from cenas_jax.results import pareto_mask
  rng = np.random.default_rng(0)
  pts = rng.uniform(size=(200, 2))
  mask = pareto_mask(pts, [False, True])
  _assert_png(plots.plot_pareto(tmp_path / "front.png", pts, mask, ("energy (mJ)", "accuracy (%)")))
  with pytest.raises(ValueError, match="front_mask"):
    plots.plot_pareto(tmp_path / "f2.png", pts, mask[:5], ("a", "b"))


def test_plot_forecast_with_datetimes(tmp_path):
  t = pd.date_range("2021-07-02", periods=72, freq="h", tz="UTC")
  actual = 200 + 50 * np.sin(np.arange(72) / 4)
  _assert_png(plots.plot_forecast(tmp_path / "fc.png", t.to_numpy(), actual, actual - 20,
                                  actual + 3, actual + 25))
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
