r"""Fits the per-kernel energy model to a measured kernel dataset and reports per-class errors.

  python -m experiments.fit_energy_model --dataset=/tmp/kernels_h100/kernels.csv \
      --workdir=/tmp/energy_fit_h100

Reads the ``kernels.csv`` written by ``experiments.profile_kernels`` (no GPU needed), rebuilds each
row's kernel function from its ``op_class``/``dtype``/``params_json``, extracts the NVIDIA kernels
it launches (``cenas_jax.energy.extract_kernels``, ``--kernel_mode``), turns them into feature rows
(``kernel_features``) against the device spec, and fits ``cenas_jax.energy.fit_energy_model`` on a
training split (measured energy and time per call; static power = the measured idle power), starting
from ``prior_model(spec)``. With ``--table_levels`` (e.g. ``class+op``) it then adds a kernel table
of per-signature corrections (``cenas_jax.energy.model.fit_kernel_table``, ridge ``--table_ridge``) on
the same training rows; kernels of the test rows that were never measured fall back to the class
predictor.

Outputs in ``--workdir``:
- ``energy_model.json``: the fitted model (``cenas_jax.energy.load_energy_model`` reads it);
- ``metrics.csv``: for the prior and the fitted model, on the train and test splits, per op class
  and overall: n, RMSPE %, MAPE %, share within +-10 %, Spearman rank correlation (energy per
  call), plus RMSPE % of time per call;
- ``predictions.csv``: measured vs predicted energy and time per configuration;
- ``summary.json``: dataset hash and provenance, device spec, fit settings, headline test metrics.

Rows labelled ``energy_source=fake`` (the test-only fake meter) are refused unless
``--allow_fake``; the outputs then say ``energy_source: fake`` too.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import app, flags, logging

from cenas_jax.data.paths import require_file
from cenas_jax.energy.meter import ENERGY_SOURCE_FAKE
from cenas_jax.errors import CenasError, DataError
from cenas_jax.fileio import atomic_write_json, atomic_write_text, sha256_file
from experiments import profile_kernels

_FLOAT_COLUMNS = ("time_per_call_s", "energy_per_call_j", "idle_power_w")

# NVML product-name fragment -> DEVICE_SPECS key.
_SPEC_BY_NAME: tuple[tuple[str, str], ...] = (
    ("H100", "h100-sxm"), ("H200", "h100-sxm"), ("A100", "a100-sxm4-40gb"), ("V100", "v100-sxm2"),
    ("Orin", "jetson-agx-orin"), ("TX2", "jetson-tx2"),
)


class FitError(CenasError, RuntimeError):
  """The fit cannot be done (fake data without --allow_fake, mixed devices, too few rows)."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of one fit (see the flags)."""

  dataset: str
  device_spec: str = ""
  ridge: float = 1e-2
  test_fraction: float = 0.2
  seed: int = 0
  kernel_mode: str = "gpu"
  allow_fake: bool = False
  table_levels: tuple[str, ...] = ()
  table_ridge: float = 1e-2


def _load_rows(path: Path) -> list[dict[str, Any]]:
  try:
    rows = profile_kernels.read_dataset(path)
  except profile_kernels.ProfileError as e:
    raise DataError(str(e)) from e
  if not rows:
    raise DataError(f"{path}: no measurements in the file.")
  out = []
  for line, row in enumerate(rows, start=2):
    parsed = dict(row)
    for c in _FLOAT_COLUMNS:
      try:
        parsed[c] = float(row[c])
      except ValueError:
        raise DataError(f"{path}, line {line}: column {c}={row[c]!r} is not a number.") from None
      if not math.isfinite(parsed[c]) or parsed[c] <= 0:
        raise DataError(f"{path}, line {line}: column {c}={row[c]!r} must be finite and > 0.")
    try:
      params = json.loads(row["params_json"])
      spec = profile_kernels.KernelSpec.make(row["op_class"], row["dtype"], **params)
    except (ValueError, TypeError) as e:
      raise DataError(f"{path}, line {line}: cannot rebuild the kernel ({e}).") from None
    if spec.config_id != row["config_id"]:
      raise DataError(
          f"{path}, line {line}: config_id {row['config_id']!r} does not match its op_class/dtype/"
          f"params ({spec.config_id!r})."
      )
    parsed["spec"] = spec
    out.append(parsed)
  return out


def _infer_spec(device_name: str) -> str:
  for fragment, key in _SPEC_BY_NAME:
    if fragment.lower() in device_name.lower():
      return key
  raise FitError(
      f"Cannot tell which device spec matches {device_name!r}; pass --device_spec (one of "
      "cenas_jax.energy.DEVICE_SPECS)."
  )


def _split(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
  import numpy as np  # pylint: disable=g-import-not-at-top

  if n < 2:
    raise FitError(f"Need at least 2 measured configurations to fit and test, got {n}.")
  perm = np.random.default_rng(seed).permutation(n)
  n_test = min(n - 1, max(1, round(test_fraction * n)))
  return sorted(perm[n_test:].tolist()), sorted(perm[:n_test].tolist())


def error_metrics(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
  """n, RMSPE %, MAPE %, share within +-10 % and Spearman rank correlation of predictions."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top

  y = np.asarray(measured, np.float64)
  p = np.asarray(predicted, np.float64)
  rel = (p - y) / y
  spearman = (float(pd.Series(y).corr(pd.Series(p), method="spearman")) if len(y) > 2 else math.nan)
  return {
      "n": int(len(y)),
      "rmspe_pct": float(100 * np.sqrt(np.mean(rel**2))),
      "mape_pct": float(100 * np.mean(np.abs(rel))),
      "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
      "spearman": spearman,
  }


def run(config: FitConfig, workdir: str | Path) -> dict[str, Any]:
  """Fits the model on ``config.dataset`` and writes the outputs into ``workdir``; returns the summary.

  Raises:
    DataUnavailableError: the dataset file is missing.
    DataError: the dataset is malformed (names file and line).
    FitError: fake data without ``allow_fake``, several devices in one file, too few rows.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  from cenas_jax import energy  # pylint: disable=g-import-not-at-top

  path = require_file(config.dataset, what="Kernel energy dataset (--dataset)")
  rows = _load_rows(path)
  sources = sorted({r["energy_source"] for r in rows})
  devices = sorted({r["device_name"] for r in rows})
  if ENERGY_SOURCE_FAKE in sources and not config.allow_fake:
    raise FitError(
        f"{path} holds SIMULATED rows (energy_source=fake, written with --fake_meter); refusing to fit "
        "them as measurements. Pass --allow_fake only to test this binary."
    )
  if len(sources) != 1 or len(devices) != 1:
    raise FitError(f"{path} mixes energy sources {sources} / devices {devices}; fit one device at a time.")
  spec_name = config.device_spec or _infer_spec(devices[0])
  spec = energy.get_spec(spec_name)
  workdir = Path(workdir)
  logging.info("Extracting kernels of %d configurations (mode=%s).", len(rows), config.kernel_mode)
  from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

  kernel_lists = []
  for i, r in enumerate(rows):
    program = profile_kernels.build_kernel(r["spec"])
    kernels = energy.extract_kernels(program.fn, *program.arg_shapes, mode=config.kernel_mode)
    kernel_lists.append(kernels)
    print(f"[{i + 1}/{len(rows)}] {r['config_id']}: {len(kernels)} kernel(s)", flush=True)
  counts = em.count_kernels(kernel_lists, batch_size=1)
  x = counts.features(spec)
  y = np.array([r["energy_per_call_j"] for r in rows])
  t = np.array([r["time_per_call_s"] for r in rows])
  idle_w = float(np.median([r["idle_power_w"] for r in rows]))
  train, test = _split(len(rows), config.test_fraction, config.seed)
  prior = energy.prior_model(spec)
  try:
    fitted = energy.fit_energy_model(x[train], y[train], prior, ridge=config.ridge,
                                     measured_time_s=t[train], static_power_w=idle_w)
    if config.table_levels:
      fitted = em.fit_kernel_table(fitted, counts.rows(train), measured_energy_j=y[train],
                                   measured_time_s=t[train], levels=config.table_levels,
                                   ridge=config.table_ridge)
  except ValueError as e:
    raise FitError(f"Fitting {path} failed: {e}") from e
  preds = {name: (np.asarray(energy.predict_energy_j(m, counts)),
                  np.asarray(energy.predict_time_s(m, counts)))
           for name, m in (("prior", prior), ("fitted", fitted))}
  metric_rows = []
  classes = sorted({r["op_class"] for r in rows})
  for model_name, (e_hat, t_hat) in preds.items():
    for split_name, idx in (("train", train), ("test", test)):
      for cls in ["all", *classes]:
        sel = [i for i in idx if cls == "all" or rows[i]["op_class"] == cls]
        if not sel:
          continue
        m = error_metrics(y[sel], e_hat[sel])
        m["time_rmspe_pct"] = error_metrics(t[sel], t_hat[sel])["rmspe_pct"]
        metric_rows.append({"model": model_name, "split": split_name, "op_class": cls, **m})
  _write_csv(workdir / "metrics.csv", metric_rows)
  test_set = set(test)
  _write_csv(workdir / "predictions.csv", [
      {"config_id": r["config_id"], "op_class": r["op_class"],
       "split": "test" if i in test_set else "train", "measured_energy_j": y[i],
       "prior_energy_j": preds["prior"][0][i], "fitted_energy_j": preds["fitted"][0][i],
       "measured_time_s": t[i], "fitted_time_s": preds["fitted"][1][i]}
      for i, r in enumerate(rows)
  ])
  energy.save_energy_model(fitted, workdir / "energy_model.json")
  headline = {f"{r['model']}_{r['op_class']}": {k: r[k] for k in ("n", "rmspe_pct", "within_10pct")}
              for r in metric_rows if r["split"] == "test"}
  summary = {
      "dataset": str(path),
      "dataset_sha256": sha256_file(path),
      "energy_source": sources[0],
      "device_name": devices[0],
      "device_spec": spec_name,
      "n_train": len(train),
      "n_test": len(test),
      "static_power_w": idle_w,
      "model_provenance": fitted.provenance,
      "table_provenance": None if fitted.table is None else fitted.table.provenance,
      "test_metrics": headline,
      "config": dataclasses.asdict(config),
  }
  atomic_write_json(workdir / "summary.json", summary)
  for r in metric_rows:
    if r["split"] == "test":
      print(f"{r['model']:>6} test {r['op_class']:<11} n={r['n']:<3} RMSPE {r['rmspe_pct']:.1f}% "
            f"within10 {100 * r['within_10pct']:.0f}%", flush=True)
  return summary


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
  import csv  # pylint: disable=g-import-not-at-top

  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  atomic_write_text(path, buf.getvalue())


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (only when run as a program)."""
  flags.DEFINE_string("dataset", None, "kernels.csv written by experiments.profile_kernels.")
  flags.DEFINE_string("workdir", None, "Output folder.")
  flags.DEFINE_string("device_spec", "", "DEVICE_SPECS key; default: inferred from the device name.")
  flags.DEFINE_float("ridge", 1e-2, "Pull of the fit towards the datasheet prior (relative units).")
  flags.DEFINE_float("test_fraction", 0.2, "Share of configurations held out for the test metrics.")
  flags.DEFINE_integer("seed", 0, "Seed of the train/test split.")
  flags.DEFINE_enum("kernel_mode", "gpu", ["gpu", "compiled"], "How kernels are extracted.")
  flags.DEFINE_bool("allow_fake", False, "Accept energy_source=fake rows (tests of this binary only).")
  flags.DEFINE_string("table_levels", "", "'+'-joined signature levels of a kernel table fitted on "
                      "top of the class model (cenas_jax.energy.model.SIGNATURE_LEVELS, e.g. "
                      "class+op); empty: no table.")
  flags.DEFINE_float("table_ridge", 1e-2, "Ridge of the kernel table (unitless, > 0).")
  flags.mark_flags_as_required(["dataset", "workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = FitConfig(
      dataset=FLAGS.dataset, device_spec=FLAGS.device_spec, ridge=FLAGS.ridge,
      test_fraction=FLAGS.test_fraction, seed=FLAGS.seed, kernel_mode=FLAGS.kernel_mode,
      allow_fake=FLAGS.allow_fake,
      table_levels=tuple(lv for lv in FLAGS.table_levels.split("+") if lv),
      table_ridge=FLAGS.table_ridge,
  )
  try:
    run(config, FLAGS.workdir)
  except (CenasError, KeyError) as e:
    logging.error("%s", e)
    print(f"fit_energy_model: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
