"""Fits the per-kernel energy model to a measured kernel dataset and scores it per op class.

``run(FitConfig(dataset=...), workdir)`` reads the ``kernels.csv`` of ``kernel_bench`` (no GPU
needed), rebuilds each row's kernel function from its ``op_class``/``dtype``/``params_json``,
extracts the NVIDIA kernels it launches (``cenas_jax.energy.extract_kernels``, ``kernel_mode``),
turns them into feature rows against the device spec, and fits ``fit_energy_model`` on a training
split (``metrics.train_mask``; measured energy and time per call; static power = the measured idle
power), starting from ``prior_model(spec)``. With ``table_levels`` (e.g. ``class+op``) it then adds
a kernel table of per-signature corrections (``model.fit_kernel_table``, ridge ``table_ridge``) on
the same training rows; kernels of the test rows that were never measured fall back to the class
predictor.

Outputs in the workdir:
- ``energy_model.json``: the fitted model (``cenas_jax.energy.load_energy_model`` reads it);
- ``metrics.csv``: for the prior and the fitted model, on the train and test splits, per op class
  and overall: n, RMSPE %, MAPE %, share within +-10 %, Spearman rank correlation (energy per
  call), plus RMSPE % of time per call (``metrics.regression_metrics``);
- ``predictions.csv``: measured vs predicted energy and time per configuration;
- ``summary.json``: dataset hash and provenance, device spec, fit settings, headline test metrics.

Rows labelled ``energy_source=fake`` (the test-only fake meter) are refused unless
``allow_fake``; the outputs then say ``energy_source: fake`` too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

from absl import logging

from cenas_jax import results
from cenas_jax.data.paths import require_file
from cenas_jax.energy import kernel_bench
from cenas_jax.energy.meter import ENERGY_SOURCE_FAKE
from cenas_jax.errors import CenasError, ConfigError, DataError
from cenas_jax.fileio import sha256_file

_FLOAT_COLUMNS = ("time_per_call_s", "energy_per_call_j", "idle_power_w")

# NVML product-name fragment -> DEVICE_SPECS key.
_SPEC_BY_NAME: tuple[tuple[str, str], ...] = (
    ("H100", "h100-sxm"), ("H200", "h200-sxm"), ("A100", "a100-sxm4-40gb"), ("V100", "v100-sxm2"),
    ("Orin", "jetson-agx-orin"), ("TX2", "jetson-tx2"),
)


class FitError(CenasError, RuntimeError):
  """The fit cannot be done (fake data without --allow_fake, mixed devices, too few rows)."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of one fit (field names are the binary's flag names).

  Attributes:
    dataset: ``kernels.csv`` written by ``kernel_bench.run`` (required).
    device_spec: ``DEVICE_SPECS`` key; empty: inferred from the device name.
    ridge: pull of the fit towards the datasheet prior (relative units, > 0).
    test_fraction: share of configurations held out for the test metrics, in (0, 1).
    seed: seed of the train/test split.
    kernel_mode: how kernels are extracted.
    allow_fake: accept ``energy_source=fake`` rows (tests only).
    table_levels: '+'-joined signature levels of a kernel table fitted on top of the class model
      (``model.SIGNATURE_LEVELS``, e.g. ``class+op``); empty: no table.
    table_ridge: ridge of the kernel table (unitless, > 0).
    min_dynamic_fraction: rows whose measured dynamic energy ``E - P_idle * T`` is below this share
      of their energy ``E`` are left out of the fit and the metrics (and listed in the summary): on
      them the meter sees idle power, so their dynamic energy is not resolved (kernels shorter than
      the host's dispatch gap, or windows within the counter's resolution of idle). 0 keeps all.
  """

  dataset: str = ""
  device_spec: str = ""
  ridge: float = 1e-2
  test_fraction: float = 0.2
  seed: int = 0
  kernel_mode: Literal["gpu", "compiled"] = "gpu"
  allow_fake: bool = False
  table_levels: str = ""
  table_ridge: float = 1e-2
  min_dynamic_fraction: float = 0.0

  def __post_init__(self) -> None:
    from cenas_jax.energy.model import SIGNATURE_LEVELS  # pylint: disable=g-import-not-at-top
    from cenas_jax.energy.specs import DEVICE_SPECS  # pylint: disable=g-import-not-at-top

    if self.device_spec and self.device_spec not in DEVICE_SPECS:
      raise ConfigError("device_spec", f"unknown {self.device_spec!r}; known: {sorted(DEVICE_SPECS)}")
    if not 0 < self.test_fraction < 1:
      raise ConfigError("test_fraction", f"must be in (0, 1), got {self.test_fraction}")
    bad = [lv for lv in self.levels if lv not in SIGNATURE_LEVELS]
    if bad:
      raise ConfigError("table_levels", f"unknown levels {bad}; known: {SIGNATURE_LEVELS}")

  @property
  def levels(self) -> tuple[str, ...]:
    """``table_levels`` as a tuple (empty: no table)."""
    return tuple(lv for lv in self.table_levels.split("+") if lv)


def _load_rows(path: Path) -> list[dict[str, Any]]:
  try:
    rows = kernel_bench.read_dataset(
        path, fix="point --dataset at the kernels.csv that experiments.profile_kernels wrote")
  except kernel_bench.ProfileError as e:
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
      spec = kernel_bench.KernelSpec.make(row["op_class"], row["dtype"], **params)
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


def run(config: FitConfig, workdir: str | Path) -> dict[str, Any]:
  """Fits the model on ``config.dataset`` and writes the outputs into ``workdir``; returns the summary.

  Raises:
    DataUnavailableError: the dataset file is missing.
    DataError: the dataset is malformed (names file and line).
    FitError: fake data without ``allow_fake``, several devices in one file, too few rows.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  from cenas_jax import energy  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.metrics import regression_metrics, train_mask  # pylint: disable=g-import-not-at-top

  if not config.dataset:
    raise ConfigError("dataset", "required: the kernels.csv written by profile_kernels.")
  path = require_file(config.dataset, what="Kernel energy dataset (--dataset)")
  rows = _load_rows(path)
  if not 0.0 <= config.min_dynamic_fraction < 1.0:
    raise ConfigError("min_dynamic_fraction", f"must be in [0, 1), got {config.min_dynamic_fraction}.")
  unresolved = [r["config_id"] for r in rows if r["energy_per_call_j"] - r["idle_power_w"] *
                r["time_per_call_s"] < config.min_dynamic_fraction * r["energy_per_call_j"]]
  if unresolved:
    print(f"Leaving out {len(unresolved)} of {len(rows)} configurations whose dynamic energy is under "
          f"{config.min_dynamic_fraction:.0%} of their energy: {', '.join(unresolved)}", flush=True)
    left_out = set(unresolved)
    rows = [r for r in rows if r["config_id"] not in left_out]
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
    program = kernel_bench.build_kernel(r["spec"])
    kernels = energy.extract_kernels(program.fn, *program.arg_shapes, mode=config.kernel_mode)
    kernel_lists.append(kernels)
    print(f"[{i + 1}/{len(rows)}] {r['config_id']}: {len(kernels)} kernel(s)", flush=True)
  counts = em.count_kernels(kernel_lists, batch_size=1)
  x = counts.features(spec)
  y = np.array([r["energy_per_call_j"] for r in rows])
  t = np.array([r["time_per_call_s"] for r in rows])
  idle_w = float(np.median([r["idle_power_w"] for r in rows]))
  if len(rows) < 2:
    raise FitError(f"Need at least 2 measured configurations to fit and test, got {len(rows)}.")
  mask = train_mask(len(rows), train_fraction=1 - config.test_fraction, seed=config.seed)
  train, test = np.flatnonzero(mask).tolist(), np.flatnonzero(~mask).tolist()
  prior = energy.prior_model(spec)
  try:
    fitted = energy.fit_energy_model(x[train], y[train], prior, ridge=config.ridge,
                                     measured_time_s=t[train], static_power_w=idle_w)
    if config.levels:
      fitted = em.fit_kernel_table(fitted, counts.rows(train), measured_energy_j=y[train],
                                   measured_time_s=t[train], levels=config.levels,
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
        m = regression_metrics(predicted=e_hat[sel], measured=y[sel])
        metric_rows.append({
            "model": model_name, "split": split_name, "op_class": cls, "n": m["n"],
            "rmspe_pct": 100 * m["rmspe"], "mape_pct": 100 * m["mape"],
            "within_10pct": m["acc10"], "spearman": m["spearman"],
            "time_rmspe_pct": 100 * regression_metrics(predicted=t_hat[sel],
                                                       measured=t[sel])["rmspe"]})
  results.write_csv(workdir / "metrics.csv", metric_rows)
  test_set = set(test)
  results.write_csv(workdir / "predictions.csv", [
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
      "left_out_unresolved": unresolved,
      "static_power_w": idle_w,
      "model_provenance": fitted.provenance,
      "table_provenance": None if fitted.table is None else fitted.table.provenance,
      "test_metrics": headline,
      "config": dataclasses.asdict(config),
  }
  results.write_summary(workdir, summary, {
      "seed": config.seed, "energy_source": sources[0], "ci_source": None,
      "data_hashes": {str(path): summary["dataset_sha256"]}})
  for r in metric_rows:
    if r["split"] == "test":
      print(f"{r['model']:>6} test {r['op_class']:<11} n={r['n']:<3} RMSPE {r['rmspe_pct']:.1f}% "
            f"within10 {100 * r['within_10pct']:.0f}%", flush=True)
  return summary
