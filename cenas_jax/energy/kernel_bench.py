"""Kernel microbenchmarks: the kernel configurations, the ``kernels.csv`` schema, the profiling run.

``run(ProfileConfig(), workdir)`` measures the energy of single kernels on an NVIDIA GPU. For each
kernel configuration (GEMMs of many shapes and dtypes, elementwise chains, reductions, attention,
small convolutions): compile and warm up, calibrate how many back-to-back calls fill
``min_window_s`` (>= 1 s, i.e. many NVML counter updates), then measure ``repeats`` windows with
the NVML energy counter (``cenas_jax.energy.meter``), blocking on inputs before and on outputs
after each window. Idle power is measured before and after the run (``idle_s``) and reported.

Outputs in the workdir:
- ``kernels.csv``: one row per configuration (``KERNEL_COLUMNS``): the kernel (``op_class``,
  ``dtype``, ``params_json``, ``shapes_json``, analytical ``flops``/``bytes``/``transcendentals``),
  ``n_calls`` per window, medians (and IQRs) over the repeats of ``time_per_call_s``,
  ``energy_per_call_j`` (gross, idle included) and ``power_w``, ``dyn_energy_per_call_j``
  (gross - idle power x time), the fewest counter updates of a window, and provenance
  (``energy_source``, device, driver, clocks, power limit, temperature, JAX version). The file is
  rewritten atomically after every configuration, so a killed run resumes where it stopped (same
  workdir; rows of another device or energy source are refused).
- ``summary.json``: idle power before/after, counts, the CSV's sha256; the meter's provenance.

Without an NVIDIA GPU (no driver, no pynvml, JAX without a GPU backend) ``run`` raises
``EnergyMeterUnavailable``: it never writes invented numbers. ``fake_meter`` exists only to test the
run: it uses a simulated meter, labels every row ``energy_source=fake`` and needs ``allow_fake``;
``kernel_fit`` refuses such data unless told otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from absl import logging

from cenas_jax import results
from cenas_jax.energy.meter import (
    EnergyMeter,
    EnergyMeterUnavailable,
    FakeEnergyMeter,
    NvmlEnergyMeter,
)
from cenas_jax.errors import CenasError, ConfigError
from cenas_jax.fileio import sha256_file

CSV_NAME = "kernels.csv"
SUMMARY_NAME = "summary.json"

OP_CLASSES: tuple[str, ...] = ("gemm", "elementwise", "reduction", "attention", "conv")

KERNEL_COLUMNS: tuple[str, ...] = (
    "config_id", "op_class", "dtype", "params_json", "shapes_json", "flops", "bytes",
    "transcendentals", "n_calls", "repeats", "window_s", "time_per_call_s", "time_per_call_s_iqr",
    "energy_per_call_j", "energy_per_call_j_iqr", "dyn_energy_per_call_j", "power_w",
    "idle_power_w", "min_counter_updates", "method", "energy_source", "device_name",
    "device_index", "driver_version", "sm_clock_mhz", "mem_clock_mhz", "power_limit_w",
    "temperature_c", "jax_version", "jax_backend", "timestamp_utc",
)
"""Columns of ``kernels.csv``, in order (times in s, energies in J, powers in W, clocks in MHz)."""


class ProfileError(CenasError, RuntimeError):
  """The profiling run cannot go on (a workdir of another device or energy source)."""


# -- kernel configurations ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelSpec:
  """One kernel configuration.

  Attributes:
    op_class: one of ``OP_CLASSES``.
    dtype: JAX dtype name ("float32", "bfloat16", "float16").
    params: sorted ``(name, value)`` pairs of integer sizes (see ``build_kernel``).
  """

  op_class: str
  dtype: str
  params: tuple[tuple[str, int], ...]

  @classmethod
  def make(cls, op_class: str, dtype: str, **params: int) -> KernelSpec:
    if op_class not in OP_CLASSES:
      raise ValueError(f"Unknown op_class {op_class!r}; known: {OP_CLASSES}.")
    return cls(op_class, dtype, tuple(sorted((k, int(v)) for k, v in params.items())))

  @property
  def p(self) -> dict[str, int]:
    return dict(self.params)

  @property
  def config_id(self) -> str:
    return "-".join([self.op_class, self.dtype] + [f"{k}{v}" for k, v in self.params])


@dataclasses.dataclass(frozen=True)
class KernelProgram:
  """A kernel configuration made runnable: the function, its argument shapes and analytical cost.

  Attributes:
    spec: the configuration.
    fn: the (un-jitted) function of the arguments.
    arg_shapes: ``jax.ShapeDtypeStruct`` of each argument (for lowering without data).
    flops: floating-point operations per call (multiply-add = 2).
    bytes: minimal device-memory traffic per call (inputs read once, outputs written once), bytes.
    transcendentals: transcendental operations per call (exp, tanh, ...).
  """

  spec: KernelSpec
  fn: Callable[..., Any]
  arg_shapes: tuple[Any, ...]
  flops: int
  bytes: int
  transcendentals: int


def build_kernel(spec: KernelSpec) -> KernelProgram:
  """The function and analytical cost of ``spec``.

  Sizes by class: gemm ``m, k, n`` (``[m,k] @ [k,n]``); elementwise ``n, chain`` (``chain`` x
  ``tanh(0.5 x + 0.25)`` on ``n`` elements, one fused kernel); reduction ``rows, cols`` (sum over
  ``cols``, f32 accumulation); attention ``b, h, s, d`` (``softmax(q k^T / sqrt(d)) v``); conv
  ``b, hw, cin, cout, k`` (NHWC, stride 1, same padding).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  dt = jnp.dtype(spec.dtype)
  isz = dt.itemsize
  p = spec.p
  sds = lambda *shape: jax.ShapeDtypeStruct(shape, dt)  # noqa: E731
  c = spec.op_class
  if c == "gemm":
    m, k, n = p["m"], p["k"], p["n"]
    return KernelProgram(spec, lambda a, b: a @ b, (sds(m, k), sds(k, n)), 2 * m * k * n,
                         (m * k + k * n + m * n) * isz, 0)
  if c == "elementwise":
    n, chain = p["n"], p["chain"]

    def chain_fn(x):
      for _ in range(chain):
        x = jnp.tanh(x * 0.5 + 0.25)
      return x

    return KernelProgram(spec, chain_fn, (sds(n),), 2 * n * chain, 2 * n * isz, n * chain)
  if c == "reduction":
    rows, cols = p["rows"], p["cols"]
    return KernelProgram(spec, lambda x: jnp.sum(x, axis=-1, dtype=jnp.float32).astype(dt),
                         (sds(rows, cols),), rows * cols, (rows * cols + rows) * isz, 0)
  if c == "attention":
    b, h, s, d = p["b"], p["h"], p["s"], p["d"]

    def attention(q, k, v):
      scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
      return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)

    shape = (b, h, s, d)
    return KernelProgram(spec, attention, (sds(*shape),) * 3, 4 * b * h * s * s * d + 5 * b * h * s * s,
                         4 * b * h * s * d * isz, b * h * s * s)
  if c == "conv":
    b, hw, cin, cout, k = p["b"], p["hw"], p["cin"], p["cout"], p["k"]

    def conv(x, w):
      return jax.lax.conv_general_dilated(
          x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )

    return KernelProgram(
        spec, conv, (sds(b, hw, hw, cin), sds(k, k, cin, cout)),
        2 * b * hw * hw * cout * k * k * cin, (b * hw * hw * (cin + cout) + k * k * cin * cout) * isz, 0,
    )
  raise ValueError(f"Unknown op_class {c!r}.")  # pragma: no cover - KernelSpec.make checks.


def default_kernel_specs() -> list[KernelSpec]:
  """The standard grid (about 90 configurations; ~8 minutes at 1 s x 3 windows each)."""
  mk = KernelSpec.make
  specs = []
  gemm_shapes = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
                 (4096, 4096, 4096), (8192, 8192, 8192), (4096, 1024, 4096), (1024, 4096, 1024),
                 (16384, 1024, 1024), (64, 4096, 4096), (1, 4096, 4096), (128, 768, 3072)]
  for dtype in ("float32", "bfloat16", "float16"):
    specs += [mk("gemm", dtype, m=m, k=k, n=n) for m, k, n in gemm_shapes]
  for dtype in ("float32", "bfloat16"):
    specs += [mk("elementwise", dtype, n=n, chain=ch) for n in (1 << 16, 1 << 20, 1 << 24, 1 << 26)
              for ch in (1, 4, 16)]
    specs += [mk("reduction", dtype, rows=r, cols=c)
              for r, c in ((1024, 1024), (4096, 4096), (16384, 4096), (64, 1 << 20))]
    specs += [mk("attention", dtype, b=b, h=h, s=s, d=d)
              for b, h, s, d in ((8, 12, 128, 64), (8, 12, 512, 64), (4, 16, 1024, 64), (1, 16, 2048, 128))]
    specs += [mk("conv", dtype, b=b, hw=hw, cin=ci, cout=co, k=k)
              for b, hw, ci, co, k in ((64, 32, 16, 16, 3), (64, 32, 16, 16, 1), (64, 16, 32, 32, 3),
                                       (64, 8, 64, 64, 3), (256, 32, 16, 16, 3), (64, 32, 3, 16, 3),
                                       (64, 16, 32, 32, 1))]
  return specs


def short_kernel_specs() -> list[KernelSpec]:
  """Every second configuration of the standard grid (45: every class and dtype, about half the
  sizes), for a lease of a few minutes (~2.5 minutes at 0.5 s x 2 windows each on an H200)."""
  return default_kernel_specs()[::2]


def tiny_kernel_specs() -> list[KernelSpec]:
  """Three tiny configurations (tests)."""
  mk = KernelSpec.make
  return [mk("gemm", "float32", m=8, k=8, n=8), mk("elementwise", "float32", n=64, chain=2),
          mk("conv", "float32", b=1, hw=4, cin=2, cout=2, k=3)]


PRESETS: dict[str, Callable[[], list[KernelSpec]]] = {
    "default": default_kernel_specs,
    "short": short_kernel_specs,
    "tiny": tiny_kernel_specs,
}


# -- configuration ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
  """Settings of one profiling run (field names are the binary's flag names).

  Attributes:
    preset: which kernel configurations (``PRESETS``).
    min_window_s: shortest measured window, s.
    repeats: measured windows per configuration.
    idle_s: idle-power measurement before/after the run, s.
    cooldown_s: pause before each window, s.
    device: GPU index as CUDA/JAX see it (``CUDA_VISIBLE_DEVICES``).
    method: NVML reading: energy counter (Volta+) or polled power.
    max_configs: only the first N configurations (0: all).
    seed: seed of the input data.
    fake_meter: TESTS ONLY: simulated energy, rows labelled ``energy_source=fake``.
    allow_fake: required with ``fake_meter``.
    fake_power_w: power of the fake meter, W.
    fake_idle_power_w: idle power of the fake meter, W.
  """

  preset: Literal["default", "short", "tiny"] = "default"
  min_window_s: float = 1.0
  repeats: int = 3
  idle_s: float = 5.0
  cooldown_s: float = 0.5
  device: int = 0
  method: Literal["auto", "energy_counter", "power_polling"] = "auto"
  max_configs: int = 0
  seed: int = 0
  fake_meter: bool = False
  allow_fake: bool = False
  fake_power_w: float = 250.0
  fake_idle_power_w: float = 60.0

  def __post_init__(self) -> None:
    if self.preset not in PRESETS:
      raise ConfigError("preset", f"{self.preset!r}: known presets are {sorted(PRESETS)}.")
    for name in ("min_window_s", "idle_s"):
      if not getattr(self, name) > 0:
        raise ConfigError(name, f"must be > 0, got {getattr(self, name)}.")
    if self.repeats < 1:
      raise ConfigError("repeats", f"must be >= 1, got {self.repeats}.")
    if self.cooldown_s < 0:
      raise ConfigError("cooldown_s", f"must be >= 0, got {self.cooldown_s}.")
    if self.fake_meter and not self.allow_fake:
      raise ConfigError(
          "allow_fake", "--fake_meter writes SIMULATED energy (for testing this binary only); "
          "refusing without --allow_fake. The rows would be labelled energy_source=fake.")


# -- measurement -----------------------------------------------------------------------------------------


def _make_meter(config: ProfileConfig) -> EnergyMeter:
  if config.fake_meter:
    logging.warning("Using the FAKE energy meter: numbers are simulated, energy_source=fake.")
    return FakeEnergyMeter(
        config.fake_power_w, idle_power_w=config.fake_idle_power_w, counter_period_s=1e-4,
        clock=time.perf_counter, sleep=time.sleep,
    )
  meter = NvmlEnergyMeter(config.device, method=config.method)
  import jax  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  if backend != "gpu":
    meter.close()
    raise EnergyMeterUnavailable(
        f"NVML sees {meter.device_name}, but JAX runs on {backend!r}: the kernels would not run on "
        "the measured GPU. Install a CUDA build of JAX (pip install 'jax[cuda13]')."
    )
  return meter


def _make_args(program: KernelProgram, seed: int) -> tuple[Any, ...]:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  return tuple(
      jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32), s.dtype) for s in program.arg_shapes
  )


def _iqr(xs: Sequence[float]) -> float:
  if len(xs) < 2:
    return 0.0
  q = statistics.quantiles(xs, n=4, method="inclusive")
  return q[2] - q[0]


# How often a window shorter than half the minimum is measured again with more calls.
_WINDOW_ATTEMPTS = 3
# Most calls in one window (a kernel too fast to fill the window with fewer is still measured).
_MAX_CALLS = 1 << 24


def measure_calls(
    meter: EnergyMeter, call: Callable[[], Any], *, name: str, min_window_s: float, repeats: int,
    cooldown_s: float = 0.0,
) -> dict[str, Any]:
  """Energy and time of one call of ``call`` (a thunk that launches device work and returns an output
  to block on), measured over back-to-back calls.

  The first two calls compile and warm up. Then the number of calls ``n`` that fills ``min_window_s``
  is calibrated (doubling until a batch of calls takes >= 5 % of a window), and ``repeats`` windows of
  ``n`` calls are measured, each between two synchronized meter readings; a window shorter than half
  of ``min_window_s`` (a busy host slowed the calibration) is measured again with ``n`` scaled to fill
  it, up to ``_WINDOW_ATTEMPTS`` times. Per call:
  ``time = window_s / n`` (s), ``energy = E_window / n`` (J, gross: idle power included).

  Returns:
    ``n_calls`` (of the last window), ``repeats``, ``window_s`` (median), ``time_per_call_s`` and
    ``energy_per_call_j`` (medians over the windows, with their IQRs ``*_iqr``), ``power_w``
    (median) and ``min_counter_updates`` (the fewest meter updates of a window).
  """
  import jax  # pylint: disable=g-import-not-at-top

  out = jax.block_until_ready(call())  # compile + warm-up
  out = jax.block_until_ready(call())
  n = 1
  while True:
    t0 = time.perf_counter()
    for _ in range(n):
      out = call()
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - t0
    if elapsed >= 0.05 * min_window_s or n >= 1 << 20:
      break
    n *= 2
  per_call_s = max(elapsed / n, 1e-9)
  n_calls = max(1, min(_MAX_CALLS, math.ceil(min_window_s / per_call_s)))
  times, energies, powers, updates, windows = [], [], [], [], []
  for r in range(repeats):
    if cooldown_s > 0:
      time.sleep(cooldown_s)
    window = f"{name}#{r}"
    for attempt in range(_WINDOW_ATTEMPTS):
      meter.begin_window(window, sync_on=out)
      for _ in range(n_calls):
        out = call()
      m = meter.end_window(window, sync_on=out)
      if m.duration_s >= 0.5 * min_window_s or n_calls >= _MAX_CALLS:
        break
      # A busy host slows the calibration batch, so its per-call time can be far too long and the
      # window far too short to read the counter. Rescale the calls to the window just measured.
      logging.warning("%s: window lasted %.4f s (< half of the minimum window)%s.", window,
                      m.duration_s, "" if attempt + 1 == _WINDOW_ATTEMPTS else "; measuring it again")
      n_calls = min(_MAX_CALLS, math.ceil(n_calls * min_window_s / max(m.duration_s, 1e-6)))
    times.append(m.duration_s / n_calls)
    energies.append(m.energy_j / n_calls)
    powers.append(m.power_w)
    updates.append(m.n_updates)
    windows.append(m.duration_s)
  return {
      "n_calls": n_calls,
      "repeats": repeats,
      "window_s": statistics.median(windows),
      "time_per_call_s": statistics.median(times),
      "time_per_call_s_iqr": _iqr(times),
      "energy_per_call_j": statistics.median(energies),
      "energy_per_call_j_iqr": _iqr(energies),
      "power_w": statistics.median(powers),
      "min_counter_updates": min(updates),
  }


def measure_kernel(
    meter: EnergyMeter, program: KernelProgram, config: ProfileConfig, *, idle_power_w: float,
    seed: int,
) -> dict[str, Any]:
  """Measures one configuration; returns its CSV row (without provenance columns)."""
  import jax  # pylint: disable=g-import-not-at-top

  fn = jax.jit(program.fn)
  args = _make_args(program, seed)
  m = measure_calls(meter, lambda: fn(*args), name=program.spec.config_id,
                    min_window_s=config.min_window_s, repeats=config.repeats,
                    cooldown_s=config.cooldown_s)
  return {
      "config_id": program.spec.config_id,
      "op_class": program.spec.op_class,
      "dtype": program.spec.dtype,
      "params_json": json.dumps(program.spec.p, sort_keys=True),
      "shapes_json": json.dumps([list(s.shape) for s in program.arg_shapes]),
      "flops": program.flops,
      "bytes": program.bytes,
      "transcendentals": program.transcendentals,
      **m,
      "dyn_energy_per_call_j": m["energy_per_call_j"] - idle_power_w * m["time_per_call_s"],
      "idle_power_w": idle_power_w,
  }


# -- the dataset file ----------------------------------------------------------------------------------


def read_dataset(path: Path, fix: str = "use a new --workdir") -> list[dict[str, str]]:
  """Rows of an existing ``kernels.csv``; raises ProfileError, ending with ``fix`` (what the
  caller's user should do), when its header is not ours or a line is cut short."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    if tuple(reader.fieldnames or ()) != KERNEL_COLUMNS:
      raise ProfileError(
          f"{path}: header {reader.fieldnames} is not the kernels.csv header {list(KERNEL_COLUMNS)}; "
          f"{fix}."
      )
    rows = list(reader)
  for i, row in enumerate(rows, start=2):
    if None in row or any(row.get(c) is None for c in KERNEL_COLUMNS):
      raise ProfileError(f"{path}, line {i}: wrong number of fields (truncated file?); {fix}.")
  return rows


def _write_dataset(path: Path, rows: Sequence[dict[str, Any]]) -> None:
  results.write_csv(path, rows, KERNEL_COLUMNS)


def _check_resume(path: Path, rows: Sequence[dict[str, str]], energy_source: str, device: str) -> None:
  for i, row in enumerate(rows, start=2):
    if row["energy_source"] != energy_source:
      raise ProfileError(
          f"{path}, line {i}: energy_source={row['energy_source']!r} but this run's meter is "
          f"{energy_source!r}; measured and fake rows are never mixed. Use a new --workdir."
      )
    if row["device_name"] != device:
      raise ProfileError(
          f"{path}, line {i}: measured on {row['device_name']!r}, this run is on {device!r}. "
          "Use a new --workdir per device."
      )


def _fmt(x: float) -> str:
  return f"{x:.4g}"


# -- the run ---------------------------------------------------------------------------------------------


def run(config: ProfileConfig, workdir: str | Path, *, meter: EnergyMeter | None = None) -> dict[str, Any]:
  """Profiles every configuration of ``config.preset`` not yet in ``workdir``; returns the summary.

  Args:
    config: the run's settings.
    workdir: output folder (created); an existing ``kernels.csv`` there is resumed.
    meter: an energy meter to use instead of the one ``config`` selects (tests).

  Raises:
    ProfileError: bad settings or a workdir that holds another device's / energy source's data.
    EnergyMeterUnavailable: no NVIDIA GPU / driver / CUDA JAX (never falls back to invented data).
  """
  workdir = Path(workdir)
  csv_path = workdir / CSV_NAME
  existing = read_dataset(csv_path) if csv_path.exists() else []
  specs = PRESETS[config.preset]()
  if config.max_configs > 0:
    specs = specs[: config.max_configs]
  ids = [s.config_id for s in specs]
  if len(set(ids)) != len(ids):  # pragma: no cover - a bug in a preset
    raise ProfileError(f"Preset {config.preset!r} repeats configurations.")
  import jax  # pylint: disable=g-import-not-at-top

  own_meter = meter is None
  meter = meter or _make_meter(config)
  try:
    _check_resume(csv_path, existing, meter.energy_source, meter.device_name)
    done = {row["config_id"] for row in existing}
    todo = [s for s in specs if s.config_id not in done]
    workdir.mkdir(parents=True, exist_ok=True)
    prov = meter.provenance()
    logging.info("Measuring on %s (driver %s, %s); %d of %d configurations to go.",
                 prov.device_name, prov.driver_version, prov.method, len(todo), len(specs))
    idle_before_w = meter.idle_power_w(config.idle_s)
    print(f"idle power {idle_before_w:.1f} W over {config.idle_s:g} s", flush=True)
    rows = list(existing)
    t_start = time.perf_counter()
    for i, spec in enumerate(todo):
      program = build_kernel(spec)
      row = measure_kernel(meter, program, config, idle_power_w=idle_before_w,
                           seed=config.seed * 100_003 + ids.index(spec.config_id))
      prov = meter.provenance()
      row.update(
          method=prov.method, energy_source=prov.energy_source, device_name=prov.device_name,
          device_index=prov.device_index, driver_version=prov.driver_version,
          sm_clock_mhz=prov.sm_clock_mhz, mem_clock_mhz=prov.mem_clock_mhz,
          power_limit_w=prov.power_limit_w, temperature_c=prov.temperature_c,
          jax_version=jax.__version__, jax_backend=jax.default_backend(),
          timestamp_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      )
      rows.append({k: ("" if row[k] is None else row[k]) for k in KERNEL_COLUMNS})
      _write_dataset(csv_path, rows)
      elapsed = time.perf_counter() - t_start
      eta_s = elapsed / (i + 1) * (len(todo) - i - 1)
      print(
          f"[{len(rows)}/{len(specs)}] {spec.config_id}: {_fmt(row['time_per_call_s'] * 1e3)} ms/call, "
          f"{_fmt(row['energy_per_call_j'])} J/call, {_fmt(row['power_w'])} W, "
          f"{row['min_counter_updates']} updates; ETA {eta_s:.0f} s",
          flush=True,
      )
    idle_after_w = meter.idle_power_w(config.idle_s)
    if not csv_path.exists():
      _write_dataset(csv_path, rows)
    sha = sha256_file(csv_path)
    summary = {
        "energy_source": meter.energy_source,
        "idle_power_w_before": idle_before_w,
        "idle_power_w_after": idle_after_w,
        "n_configs": len(rows),
        "n_measured_this_run": len(todo),
        "dataset": CSV_NAME,
        "dataset_sha256": sha,
        "jax_version": jax.__version__,
        "jax_backend": jax.default_backend(),
        "config": dataclasses.asdict(config),
    }
    results.write_summary(workdir, summary, {
        **prov.as_dict(), "seed": config.seed, "energy_source": meter.energy_source,
        "ci_source": None, "data_hashes": {CSV_NAME: sha}})
    print(f"idle power after: {idle_after_w:.1f} W; wrote {csv_path} ({len(rows)} rows)", flush=True)
    return summary
  finally:
    if own_meter:
      meter.close()
