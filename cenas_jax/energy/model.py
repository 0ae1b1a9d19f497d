"""Per-kernel energy model: E = sum_k e_k + P_static * (sum_k t_k + launch gaps).

For a kernel k of class c (``hlo.KERNEL_CLASSES``) on a device with peak rate ``peak(dtype, c)``
and memory bandwidth ``bw``:

  compute_s_k  = (flops_k + TRANSCENDENTAL_FLOPS * transcendentals_k) / peak      [s]
  memory_s_k   = (bytes_read_k + bytes_written_k) / bw                            [s]
  roofline_s_k = max(compute_s_k, memory_s_k)                                     [s]
  t_k = time_efficiency_c * roofline_s_k                                          [s]
  e_k = compute_power_w_c * compute_s_k + memory_power_w_c * memory_s_k + launch_energy_j_c

and for one call of the function (``repeat`` launches counted):

  T = sum_k t_k + launch_gap_s * n_launches
  E = sum_k e_k + static_power_w * T

Every term is linear in the per-class sums of compute_s, memory_s, roofline_s and launches, so a
network is summarised by ``kernel_features`` (fixed columns, ``FEATURE_NAMES``) and the model is
fitted per class by non-negative least squares on those rows.

Parallel and merged kernels: XLA-GPU runs the kernels of one program in order on one stream, so
times add up. Sibling ops that the compiler merges (dot merger; see ``hlo``) are one kernel with one
launch and the combined shape, and are priced as such; ``Kernel.merged_count`` records how many ops
each launch stands for, and nothing is charged per merged op.

Prior and fit: ``prior_model(spec)`` derives every parameter from the device's datasheet (dynamic
power = a share of TDP - idle, roofline efficiencies per class, launch gap), and
``fit_energy_model`` refines it from measurements, with a ridge penalty that pulls each parameter
towards its prior value (relative scale) and keeps all parameters non-negative. Residuals are
relative (each row divided by its measured value), matching the RMSPE / within-10 % metrics the
model is judged by.

Batch size: kernels are extracted at the batch the function was lowered with, so FLOPs and bytes
already scale with it. ``batch_size`` is stored as the last feature column and
``predict_energy_j(..., per_sample=True)`` divides the per-call energy by it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

import numpy as np

from cenas_jax.energy.hlo import KERNEL_CLASSES, Kernel
from cenas_jax.energy.specs import DEVICE_SPECS, DeviceSpec
from cenas_jax.errors import DataError
from cenas_jax.fileio import atomic_write_json

# One transcendental costs this many FLOPs of issue time (SFU throughput is 1/4 to 1/8 of the FP32
# rate on Pascal..Hopper SMs).
TRANSCENDENTAL_FLOPS = 4.0

CLASS_FEATURES: tuple[str, ...] = ("launches", "flops", "transcendentals", "bytes", "compute_s",
                                   "memory_s", "roofline_s")
FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{c}.{f}" for c in KERNEL_CLASSES for f in CLASS_FEATURES) + ("batch_size",)
_NF = len(CLASS_FEATURES)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Prior roofline efficiency (achieved time / roofline time) per class.
_PRIOR_TIME_EFFICIENCY = {"gemm": 1.5, "conv": 1.7, "attention": 2.0, "loop": 1.25,
                          "reduction": 1.6, "copy": 1.4, "other": 2.5}
# Share of (TDP - idle) drawn while a kernel runs at its compute / memory roofline.
_PRIOR_COMPUTE_SHARE = 0.8
_PRIOR_MEMORY_SHARE = 0.5
# Dynamic energy of one launch, in units of (TDP - idle) * launch_overhead_s.
_PRIOR_LAUNCH_SHARE = 0.1

_FORMAT = "cenas_jax.energy_model/1"


@dataclasses.dataclass(frozen=True)
class ClassParams:
  """Energy/time parameters of one kernel class (all non-negative).

  Attributes:
    compute_power_w: dynamic energy per second of peak-rate compute, in J/s = W.
    memory_power_w: dynamic energy per second of peak-bandwidth traffic, in W.
    launch_energy_j: dynamic energy per launch, in J.
    time_efficiency: kernel time / roofline time (>= 1 for real kernels).
  """

  compute_power_w: float
  memory_power_w: float
  launch_energy_j: float
  time_efficiency: float


@dataclasses.dataclass(frozen=True)
class EnergyModel:
  """A fitted (or prior) per-kernel energy model for one device.

  Attributes:
    spec: the device the features are computed against.
    classes: parameters per kernel class (every class of ``KERNEL_CLASSES``).
    static_power_w: power drawn whether kernels run or not, in W.
    launch_gap_s: idle time per launch between kernels, in s.
    provenance: how the parameters were obtained (``prior:<spec>``, ``fit:...``).
  """

  spec: DeviceSpec
  classes: Mapping[str, ClassParams]
  static_power_w: float
  launch_gap_s: float
  provenance: str = ""

  def to_dict(self) -> dict:
    return {
        "format": _FORMAT,
        "spec": self.spec.to_dict(),
        "classes": {c: dataclasses.asdict(p) for c, p in self.classes.items()},
        "static_power_w": self.static_power_w,
        "launch_gap_s": self.launch_gap_s,
        "provenance": self.provenance,
    }


# ----------------------------------------------------------------------------------------------------
# Features.


def _resolve_spec(spec: DeviceSpec | str) -> DeviceSpec:
  if isinstance(spec, DeviceSpec):
    return spec
  if spec not in DEVICE_SPECS:
    raise KeyError(f"unknown device spec {spec!r}; known: {sorted(DEVICE_SPECS)}")
  return DEVICE_SPECS[spec]


def kernel_roofline(kernel: Kernel, spec: DeviceSpec) -> tuple[float, float, float]:
  """``(compute_s, memory_s, roofline_s)`` of one launch of ``kernel`` on ``spec``."""
  peak = spec.peak_for(kernel.dtype, kernel.kernel_class)
  compute_s = (kernel.flops + TRANSCENDENTAL_FLOPS * kernel.transcendentals) / peak
  memory_s = kernel.bytes_accessed / spec.mem_bandwidth_bytes_per_s
  return compute_s, memory_s, max(compute_s, memory_s)


def kernel_features(kernels: Sequence[Kernel], spec: DeviceSpec | str, *,
                    batch_size: int = 1) -> np.ndarray:
  """Per-class aggregated features of one function's kernels.

  Args:
    kernels: the kernels (``hlo.extract_kernels``).
    spec: device (or its ``DEVICE_SPECS`` key) for the roofline columns.
    batch_size: samples per call the kernels were extracted at (stored as the last column).

  Returns:
    float64 array of shape ``(len(FEATURE_NAMES),)``; column ``i`` is ``FEATURE_NAMES[i]``
    (``<class>.<feature>``: launches, flops, transcendentals, bytes, compute_s, memory_s,
    roofline_s; sums over launches, ``repeat`` included).

  Raises:
    ValueError: ``batch_size`` < 1 or an unknown kernel class.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  spec = _resolve_spec(spec)
  row = np.zeros(len(FEATURE_NAMES), np.float64)
  for k in kernels:
    if k.kernel_class not in KERNEL_CLASSES:
      raise ValueError(f"kernel {k.name!r} has unknown class {k.kernel_class!r}")
    base = KERNEL_CLASSES.index(k.kernel_class) * _NF
    compute_s, memory_s, roof_s = kernel_roofline(k, spec)
    r = k.repeat
    row[base:base + _NF] += (r, r * k.flops, r * k.transcendentals, r * k.bytes_accessed,
                             r * compute_s, r * memory_s, r * roof_s)
  row[-1] = batch_size
  return row


def _as_rows(model: EnergyModel, x: Sequence[Kernel] | np.ndarray, batch_size: int
             ) -> tuple[np.ndarray, bool]:
  if isinstance(x, np.ndarray):
    rows = np.asarray(x, np.float64)
    single = rows.ndim == 1
    rows = np.atleast_2d(rows)
    if rows.shape[1] != len(FEATURE_NAMES):
      raise ValueError(f"feature rows must have {len(FEATURE_NAMES)} columns (FEATURE_NAMES), "
                       f"got shape {rows.shape}")
    return rows, single
  return kernel_features(list(x), model.spec, batch_size=batch_size)[None, :], True


def _cols(rows: np.ndarray, feature: str) -> np.ndarray:
  """``(n_rows, n_classes)`` slice of one per-class feature."""
  j = CLASS_FEATURES.index(feature)
  return rows[:, [i * _NF + j for i in range(len(KERNEL_CLASSES))]]


def _param_arrays(model: EnergyModel) -> dict[str, np.ndarray]:
  ps = [model.classes[c] for c in KERNEL_CLASSES]
  return {f.name: np.array([getattr(p, f.name) for p in ps]) for f in dataclasses.fields(
      ClassParams)}


# ----------------------------------------------------------------------------------------------------
# Prediction.


def predict_time_s(model: EnergyModel, kernels_or_features: Sequence[Kernel] | np.ndarray, *,
                   batch_size: int = 1) -> float | np.ndarray:
  """Predicted time of one call, in s (kernel times plus launch gaps).

  Args:
    model: the energy model.
    kernels_or_features: a kernel list, one feature row, or a 2-D array of rows.
    batch_size: samples per call (used only when kernels are given).

  Returns:
    A float for one function, an array for a 2-D feature input.
  """
  rows, single = _as_rows(model, kernels_or_features, batch_size)
  p = _param_arrays(model)
  t = _cols(rows, "roofline_s") @ p["time_efficiency"] + model.launch_gap_s * _cols(
      rows, "launches").sum(axis=1)
  return float(t[0]) if single else t


def predict_energy_j(model: EnergyModel, kernels_or_features: Sequence[Kernel] | np.ndarray, *,
                     batch_size: int = 1, per_sample: bool = False) -> float | np.ndarray:
  """Predicted energy of one call, in J: dynamic kernel energy plus static power x time.

  Args:
    model: the energy model.
    kernels_or_features: a kernel list, one feature row, or a 2-D array of rows.
    batch_size: samples per call the kernels were extracted at (used only when kernels are
      given; feature rows carry it in their last column).
    per_sample: divide by the batch size (energy per sample instead of per call).

  Returns:
    A float for one function, an array for a 2-D feature input.
  """
  rows, single = _as_rows(model, kernels_or_features, batch_size)
  p = _param_arrays(model)
  dynamic = (_cols(rows, "compute_s") @ p["compute_power_w"] + _cols(rows, "memory_s") @
             p["memory_power_w"] + _cols(rows, "launches") @ p["launch_energy_j"])
  t = _cols(rows, "roofline_s") @ p["time_efficiency"] + model.launch_gap_s * _cols(
      rows, "launches").sum(axis=1)
  e = dynamic + model.static_power_w * t
  if per_sample:
    e = e / rows[:, -1]
  return float(e[0]) if single else e


def predict_kernel_energy_j(model: EnergyModel, kernel: Kernel) -> tuple[float, float]:
  """``(time_s, energy_j)`` of one launch of ``kernel``, its launch gap and static share included."""
  cp = model.classes[kernel.kernel_class]
  compute_s, memory_s, roof_s = kernel_roofline(kernel, model.spec)
  t = cp.time_efficiency * roof_s + model.launch_gap_s
  e = (cp.compute_power_w * compute_s + cp.memory_power_w * memory_s + cp.launch_energy_j +
       model.static_power_w * t)
  return t, e


# ----------------------------------------------------------------------------------------------------
# Prior and fitting.


def prior_model(spec: DeviceSpec | str) -> EnergyModel:
  """Analytical model from datasheet numbers only (the starting point and regularizer of a fit)."""
  spec = _resolve_spec(spec)
  dyn_w = max(spec.tdp_w - spec.idle_power_w, 0.0)
  classes = {
      c: ClassParams(compute_power_w=_PRIOR_COMPUTE_SHARE * dyn_w,
                     memory_power_w=_PRIOR_MEMORY_SHARE * dyn_w,
                     launch_energy_j=_PRIOR_LAUNCH_SHARE * dyn_w * spec.launch_overhead_s,
                     time_efficiency=_PRIOR_TIME_EFFICIENCY[c])
      for c in KERNEL_CLASSES
  }
  return EnergyModel(spec, classes, spec.idle_power_w, spec.launch_overhead_s,
                     provenance=f"prior:{spec.name}")


def nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int | None = None,
         tol: float = 1e-12) -> np.ndarray:
  """Non-negative least squares ``argmin_{x>=0} ||a x - b||`` (Lawson-Hanson active set)."""
  m, n = a.shape
  x = np.zeros(n)
  passive = np.zeros(n, bool)
  max_iter = max_iter or 3 * n + 30
  w = a.T @ (b - a @ x)
  for _ in range(max_iter):
    if passive.all() or w[~passive].max(initial=-np.inf) <= tol * max(1.0, np.abs(w).max()):
      break
    j = int(np.argmax(np.where(passive, -np.inf, w)))
    passive[j] = True
    while True:
      z = np.zeros(n)
      z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
      if (z[passive] > tol).all():
        break
      mask = passive & (z <= tol)
      alpha = np.min(x[mask] / np.maximum(x[mask] - z[mask], 1e-300))
      x = x + alpha * (z - x)
      passive &= x > tol
      x[~passive] = 0.0
      if not passive.any():
        break
    x = z if passive.any() else x
    w = a.T @ (b - a @ x)
  return np.maximum(x, 0.0)


def _ridge_nnls(design: np.ndarray, y: np.ndarray, theta0: np.ndarray, ridge: float) -> np.ndarray:
  """``argmin_{s>=0} sum_i ((design_i . (theta0*s) - y_i)/y_i)^2 + ridge*||s-1||^2``; returns theta."""
  scaled = design * theta0[None, :] / y[:, None]
  a = np.vstack([scaled, np.sqrt(ridge) * np.eye(len(theta0))])
  b = np.concatenate([np.ones(len(y)), np.sqrt(ridge) * np.ones(len(theta0))])
  return theta0 * nnls(a, b)


def fit_energy_model(feature_rows: np.ndarray, measured_energy_j: np.ndarray,
                     prior: EnergyModel, *, ridge: float = 1e-2,
                     measured_time_s: np.ndarray | None = None,
                     static_power_w: float | None = None) -> EnergyModel:
  """Refines ``prior`` on measured whole-function energies (and optionally times).

  Minimises the squared relative error of the predicted energy (and time) plus
  ``ridge * sum_j (theta_j/theta0_j - 1)^2`` over non-negative parameters. With
  ``measured_time_s`` the time parameters (efficiencies, launch gap) are fitted on time first and
  the dynamic-energy parameters on ``E - P_static * T``; without it everything is fitted jointly on
  energy. The static power is held fixed (the prior's idle power, or ``static_power_w``, e.g. a
  measured idle reading). Classes absent from the data keep their prior values.

  Args:
    feature_rows: ``(n, len(FEATURE_NAMES))`` rows from ``kernel_features`` (same device as
      ``prior.spec``).
    measured_energy_j: ``(n,)`` measured energy per call, in J (> 0).
    prior: starting point and regularization target.
    ridge: strength of the pull towards the prior (relative units; > 0).
    measured_time_s: optional ``(n,)`` measured time per call, in s (> 0).
    static_power_w: optional static power to use instead of the prior's.

  Returns:
    The fitted model.

  Raises:
    ValueError: shapes disagree, non-finite or non-positive targets, or ridge <= 0.
  """
  rows = np.atleast_2d(np.asarray(feature_rows, np.float64))
  y = np.asarray(measured_energy_j, np.float64).reshape(-1)
  if rows.shape[1] != len(FEATURE_NAMES):
    raise ValueError(f"feature_rows must have {len(FEATURE_NAMES)} columns, got {rows.shape}")
  if rows.shape[0] != y.shape[0]:
    raise ValueError(f"{rows.shape[0]} feature rows but {y.shape[0]} energies")
  if not np.all(np.isfinite(rows)) or not np.all(np.isfinite(y)) or np.any(y <= 0):
    raise ValueError("feature rows and measured_energy_j must be finite, energies > 0")
  if ridge <= 0:
    raise ValueError(f"ridge must be > 0, got {ridge}")
  p0 = _param_arrays(prior)
  static_w = prior.static_power_w if static_power_w is None else float(static_power_w)
  n_launch = _cols(rows, "launches").sum(axis=1, keepdims=True)
  time_design = np.hstack([_cols(rows, "roofline_s"), n_launch])
  time0 = np.concatenate([p0["time_efficiency"], [prior.launch_gap_s]])
  dyn_design = np.hstack([_cols(rows, "compute_s"), _cols(rows, "memory_s"),
                          _cols(rows, "launches")])
  dyn0 = np.concatenate([p0["compute_power_w"], p0["memory_power_w"], p0["launch_energy_j"]])
  nc = len(KERNEL_CLASSES)
  if measured_time_s is not None:
    t = np.asarray(measured_time_s, np.float64).reshape(-1)
    if t.shape != y.shape or not np.all(np.isfinite(t)) or np.any(t <= 0):
      raise ValueError("measured_time_s must be finite, > 0 and match measured_energy_j")
    time_theta = _ridge_nnls(time_design, t, time0, ridge)
    t_hat = time_design @ time_theta
    target = y - static_w * t_hat
    if np.any(target <= 0):
      raise ValueError("measured energy is below static power x predicted time for some rows; "
                       "check static_power_w or the measurements")
    dyn_theta = _ridge_nnls(dyn_design, target, dyn0, ridge)
  else:
    design = np.hstack([dyn_design, static_w * time_design])
    theta = _ridge_nnls(design, y, np.concatenate([dyn0, time0]), ridge)
    dyn_theta, time_theta = theta[:3 * nc], theta[3 * nc:]
  classes = {
      c: ClassParams(compute_power_w=float(dyn_theta[i]), memory_power_w=float(dyn_theta[nc + i]),
                     launch_energy_j=float(dyn_theta[2 * nc + i]),
                     time_efficiency=float(time_theta[i]))
      for i, c in enumerate(KERNEL_CLASSES)
  }
  how = "energy+time" if measured_time_s is not None else "energy"
  return EnergyModel(prior.spec, classes, static_w, float(time_theta[-1]),
                     provenance=f"fit:{how}:n={len(y)}:ridge={ridge:g}:from={prior.provenance}")


# ----------------------------------------------------------------------------------------------------
# Persistence.


def save_energy_model(model: EnergyModel, path: str | os.PathLike[str]) -> None:
  """Writes the model as JSON (atomically)."""
  atomic_write_json(path, model.to_dict())


def energy_model_from_dict(d: Mapping, *, where: str = "energy model") -> EnergyModel:
  """Rebuilds a model from ``EnergyModel.to_dict()`` output.

  Raises:
    DataError: wrong format tag, missing classes/fields or negative parameters (names ``where``).
  """
  try:
    if d.get("format") != _FORMAT:
      raise DataError(f"{where}: format is {d.get('format')!r}, expected {_FORMAT!r}")
    spec = DeviceSpec.from_dict(d["spec"])
    missing = [c for c in KERNEL_CLASSES if c not in d["classes"]]
    if missing:
      raise DataError(f"{where}: parameters missing for kernel classes {missing}")
    classes = {c: ClassParams(**{k: float(v) for k, v in d["classes"][c].items()})
               for c in KERNEL_CLASSES}
    model = EnergyModel(spec, classes, float(d["static_power_w"]), float(d["launch_gap_s"]),
                        str(d.get("provenance", "")))
  except (KeyError, TypeError, ValueError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"{where}: malformed energy model ({type(e).__name__}: {e}); re-save it with "
                    "save_energy_model") from e
  values = [model.static_power_w, model.launch_gap_s] + [
      v for p in classes.values() for v in dataclasses.astuple(p)]
  if any(not np.isfinite(v) or v < 0 for v in values):
    raise DataError(f"{where}: parameters must be finite and non-negative")
  return model


def load_energy_model(path: str | os.PathLike[str]) -> EnergyModel:
  """Reads a model written by ``save_energy_model``.

  Raises:
    FileNotFoundError: no such file.
    DataError: the file is not valid JSON or not an energy model (the message names the file).
  """
  with open(path, encoding="utf-8") as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: not valid JSON ({e}); re-save it with save_energy_model") from e
  return energy_model_from_dict(d, where=str(path))
