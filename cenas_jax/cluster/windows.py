"""The deployed agent on trace windows it was not trained on.

``run(config, workdir)`` pre-trains the ``cenas`` agent once (windows before ``pretrain_end``, as the
HW-NAS-Bench study does), then runs the study's strategies (``ExperimentConfig.strategies``, oracle
excluded) for every seed on evenly spaced windows of each region between ``windows_start`` and
``windows_end``, and on any extra trace files (``windows_trace_paths``, windows spread over the
part of each file after ``pretrain_end``). Every episode is stored as in the study (resumable per
episode). Outputs: ``summary.json`` (per window: the study's summary; over windows: medians and how
often ``cenas`` beats ``heuristic``), ``windows.csv`` and ``summary.md``.

The agent reads the intensity only relative to its trailing week (min-max) and its next 24 h, and
its reward divides carbon by the reference maximum, so a grid at other levels (a trace from
``--windows_trace_paths``) is a new input distribution, not a new scale.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from cenas_jax.cluster import experiment as exp_lib
from cenas_jax.cluster import summary as summary_lib
from cenas_jax.cluster.config import TARGET_KEY, ExperimentConfig, check_utc_time
from cenas_jax.config_tree import flat_config
from cenas_jax.errors import ConfigError
from cenas_jax.fileio import atomic_write_text


@dataclasses.dataclass(frozen=True)
class WindowsConfig:
  """The windows study.

  Attributes:
    study: the HW-NAS-Bench study's settings (strategies, seeds, pool, agent, pre-training); its
      ``region``/``start``/``trace_path`` are replaced by each window's.
    windows_per_region: windows per region (and per extra trace file).
    windows_regions: regions of the shared traces.
    windows_start, windows_end: the windows lie in [start, end) (UTC, ISO 8601 with offset).
    windows_trace_paths: extra trace files (any format the data layer reads), e.g. another grid.
  """

  study: ExperimentConfig = ExperimentConfig(strategies=("vanilla", "heuristic", "cenas"),
                                             seeds=(0, 1, 2))
  windows_per_region: int = 4
  windows_regions: tuple[str, ...] = ("US-CAL-CISO", "DE", "US-MIDA-PJM")
  windows_start: str = "2022-01-01T00:00:00+00:00"
  windows_end: str = "2024-01-01T00:00:00+00:00"
  windows_trace_paths: tuple[str, ...] = ()

  def __post_init__(self):
    if self.windows_per_region < 1:
      raise ConfigError("windows_per_region", f"must be >= 1, got {self.windows_per_region}")
    for name in ("windows_start", "windows_end"):
      check_utc_time(name, getattr(self, name))
    if "oracle" in self.study.strategies:
      raise ConfigError("strategies", "the windows study runs no oracle (24 schedules per window "
                        "and seed); drop it from --strategies")
    if "cenas" not in self.study.strategies or "heuristic" not in self.study.strategies:
      raise ConfigError("strategies", "the windows study compares cenas with heuristic: keep both")


def _spread(lo, hi, n: int, hours: int) -> list:
  """``n`` window starts evenly spread so that every window of ``hours`` ends before ``hi``."""
  import pandas as pd

  last = hi - pd.Timedelta(hours=hours)
  if last < lo:
    return []
  step = (last - lo) / max(n - 1, 1) if n > 1 else pd.Timedelta(0)
  return [(lo + i * step).floor("h") for i in range(n)]


def windows(config: WindowsConfig) -> list[ExperimentConfig]:
  """The study's config for every window (region or trace file, start), in run order."""
  import pandas as pd

  from cenas_jax.data import carbon_traces

  study, hours = config.study, config.study.hours
  out = []
  lo, hi = pd.Timestamp(config.windows_start), pd.Timestamp(config.windows_end)
  for region in config.windows_regions:
    for start in _spread(lo, hi, config.windows_per_region, hours):
      out.append(dataclasses.replace(study, region=region, trace_path="", start=start.isoformat()))
  for path in config.windows_trace_paths:
    trace = carbon_traces.load_trace(path)
    # After the pre-training windows and after a week of history for the agent's features.
    first = max(trace.start + pd.Timedelta(hours=study.search.history_hours),
                pd.Timestamp(study.pretrain.pretrain_end))
    starts = _spread(first, trace.end, config.windows_per_region, hours)
    if not starts:
      raise ConfigError("windows_trace_paths", f"{path} has no {hours} h window after "
                        f"{study.pretrain.pretrain_end} ({trace.start} .. {trace.end})")
    out += [dataclasses.replace(study, trace_path=str(path), start=s.isoformat()) for s in starts]
  return out


def window_name(cfg: ExperimentConfig) -> str:
  where = Path(cfg.trace_path).stem if cfg.trace_path else cfg.region
  return f"{where}_{cfg.start[:13].replace(':', '')}"


def run(config: WindowsConfig, workdir: str | os.PathLike[str]) -> dict:
  """Runs (or resumes) the windows study; returns its summary."""
  from cenas_jax import results

  wd = results.prepare_workdir(workdir, config, kind="hwnas_windows")
  workdir = wd.path
  configs = windows(config)
  inputs = exp_lib.load_inputs(configs[0])  # the problem (every window shares it)
  for c in configs:  # every window inside its trace before the first write
    try:
      exp_lib.trace_window(c)
    except ConfigError as e:
      raise ConfigError("windows_trace_paths" if c.trace_path else "windows_end",
                        f"window {window_name(c)}: {e.message}") from None
  wd.claim()
  study = config.study
  pretrained = None
  if study.pretrain.pretrain_episodes > 0:
    path = exp_lib.pretrain(study, inputs, workdir)
    pretrained = exp_lib._load_pretrained(path, study, inputs)  # pylint: disable=protected-access
  rows, per_window, sources, hashes = [], {}, {}, {}
  jobs = [(c, name, seed) for c in configs for name in study.strategies for seed in study.seeds]
  t0, done = time.time(), 0
  for c in configs:
    win_inputs = exp_lib.load_inputs(c)
    win_dir = workdir / "windows" / window_name(c)
    info = win_inputs.trace_info
    sources[window_name(c)] = info.get("source")
    hashes[str(info.get("path", window_name(c)))] = info.get("sha256")
    records = {}
    for name in study.strategies:
      records[name] = [exp_lib.run_episode(name, s, c, win_inputs, win_dir,
                                           pretrained if name == "cenas" else None, progress=False)
                       for s in study.seeds]
      done += len(study.seeds)
      el = time.time() - t0
      print(f"[{done}/{len(jobs)}] {window_name(c)} {name}: elapsed {el:.0f}s, ETA "
            f"{el / done * (len(jobs) - done):.0f}s", flush=True)
    for recs in records.values():
      for r in recs:
        r.pop("_loaded", None)
    s = summary_lib.summarize(records, c, win_inputs.problem.max_hv)
    per_window[window_name(c)] = s
    ci = win_inputs.ci_g_per_kwh[win_inputs.hour0: win_inputs.hour0 + c.hours]
    row = {"window": window_name(c), "start": c.start, "mean_ci_g_per_kwh": float(ci.mean()),
           "ci_range_g_per_kwh": float(ci.max() - ci.min())}
    for name in study.strategies:
      e = s["strategies"][name]
      row[f"{name}_final_hv_frac"] = float(np.median(e["final_hv_frac"]))
      for acc in ("paper", "full"):
        vals = [x for x in e["carbon_to_target_g"][acc][TARGET_KEY] if x is not None]
        row[f"{name}_to_{TARGET_KEY}_{acc}_g"] = float(np.median(vals)) if vals else None
    for acc in ("paper", "full"):
      c_, h_ = row[f"cenas_to_{TARGET_KEY}_{acc}_g"], row[f"heuristic_to_{TARGET_KEY}_{acc}_g"]
      row[f"heuristic_over_cenas_{acc}"] = (h_ / c_) if c_ and h_ else None
    rows.append(row)
  summary = {"windows": rows, "per_window": per_window, "over_windows": {}}
  for acc in ("paper", "full"):
    ratios = [r[f"heuristic_over_cenas_{acc}"] for r in rows
              if r[f"heuristic_over_cenas_{acc}"] is not None]
    summary["over_windows"][acc] = {
        "median_heuristic_over_cenas": float(np.median(ratios)) if ratios else None,
        "cenas_wins": int(sum(x > 1.0 for x in ratios)), "windows": len(rows)}
  results.write_summary(workdir, summary, dict(
      seed=list(study.seeds), config=flat_config(config), ci_source=sources,
      energy_source="table-hw-nas-bench-edgegpu_energy (objective); GPU power model for carbon "
      "(PoolConfig)", data_hashes={**hashes, **{
          k: v.get("sha256") for k, v in inputs.table_provenance.get("files", {}).items()}}))
  results.write_csv(workdir / "windows.csv", rows)
  atomic_write_text(workdir / "summary.md", summary_markdown(summary, config))
  wd.finish()
  return summary


def summary_markdown(summary: dict, config: WindowsConfig) -> str:
  """The windows table: per window, carbon to 0.98 (median over seeds) and the final HV."""
  names = config.study.strategies
  head = (f"# The deployed agent on {len(summary['windows'])} unseen windows "
          f"({config.study.hours} h, seeds {list(config.study.seeds)})\n\n")
  cols = ["window", "mean CI (g/kWh)"] + [f"{n} to {TARGET_KEY} paper / full (g)" for n in names] + [
      "final HV cenas / heuristic", "heuristic / cenas paper / full"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

  def g(x):
    return "never" if x is None else f"{x:,.0f}"

  def r(x):
    return "n/a" if x is None else f"{x:.2f}"

  for row in summary["windows"]:
    cells = [row["window"], f"{row['mean_ci_g_per_kwh']:.0f}"]
    cells += [f"{g(row[f'{n}_to_{TARGET_KEY}_paper_g'])} / {g(row[f'{n}_to_{TARGET_KEY}_full_g'])}"
              for n in names]
    cells += [f"{row['cenas_final_hv_frac']:.4f} / {row['heuristic_final_hv_frac']:.4f}",
              f"{r(row['heuristic_over_cenas_paper'])} / {r(row['heuristic_over_cenas_full'])}"]
    lines.append("| " + " | ".join(cells) + " |")
  ow = summary["over_windows"]
  tail = "\n".join(
      f"- {acc} accounting: median heuristic / cenas carbon to {TARGET_KEY} = "
      f"{r(ow[acc]['median_heuristic_over_cenas'])} (above 1: cenas spends less); cenas spends less "
      f"in {ow[acc]['cenas_wins']} of {ow[acc]['windows']} windows" for acc in ("paper", "full"))
  return head + "\n".join(lines) + "\n\n" + tail + "\n"
