"""GPU energy measurement: an ``EnergyMeter`` interface, an NVML backend and a deterministic fake.

A meter measures named *windows*::

  meter = NvmlEnergyMeter(visible_index=0)
  meter.begin_window("step", sync_on=inputs)
  outputs = step_fn(inputs)
  m = meter.end_window("step", sync_on=outputs)   # m.energy_j, m.duration_s, m.power_w, ...

Synchronization. JAX dispatches work asynchronously (on the GPU and on the CPU): when ``step_fn``
returns, the GPU may not have started yet. A reading taken then measures the dispatch, not the work.
Every ``begin_window``/``end_window`` therefore first blocks on ``sync_on`` with
``jax.block_until_ready`` and calls the meter's ``sync`` callback (if any), and only then reads the
clock and the counter. **The caller must pass the outputs of the measured work as ``sync_on`` to
``end_window``** (and the inputs, or anything still in flight, to ``begin_window``); a meter cannot
see what is queued on the device otherwise.

NVML backend (``NvmlEnergyMeter``, module ``pynvml`` from the ``nvidia-ml-py`` package, imported
lazily):
- ``method="energy_counter"``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was
  loaded; Volta and newer). Energy of a window = difference of two reads.
- ``method="power_polling"``: ``nvmlDeviceGetPowerUsage`` (mW) sampled by a background thread every
  ``poll_period_s``; energy = trapezoid integral of the samples (plus one sample taken synchronously
  at each window edge).
- ``method="auto"``: the counter where the device supports it, else polling (logged, and recorded
  in every ``Measurement.method``).
In both modes a background thread (``poll_period_s > 0``) counts how many times the reading
changed inside each window (``Measurement.n_updates``): NVML counters update only every 20-100 ms
and power readings on Ampere and newer are 1 s averages, so a window that spans few updates is not
a measurement. Windows with fewer than ``min_updates`` updates are logged as unreliable.

Device selection respects ``CUDA_VISIBLE_DEVICES``: ``visible_index`` is the index as JAX/CUDA see
it; integer entries map to NVML indices (NVML enumerates in PCI bus order, so set
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` on multi-GPU hosts) and ``GPU-<uuid>`` entries (or unique prefixes)
are matched against the NVML UUIDs. MIG slices cannot be measured by NVML: a ``MIG-`` entry or a
device in MIG mode raises ``EnergyMeterUnavailable``.

No GPU, no driver or no ``pynvml`` raises ``EnergyMeterUnavailable`` saying what was tried. This
module never invents a number: the fake meter exists for tests and is labelled
``energy_source="fake"`` in every measurement it returns.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from cenas_jax.errors import CenasError

_log = logging.getLogger(__name__)

Method = Literal["energy_counter", "power_polling"]
METHODS: tuple[str, ...] = ("energy_counter", "power_polling")

ENERGY_SOURCE_NVML = "measured-nvml"
ENERGY_SOURCE_FAKE = "fake"


class EnergyMeterUnavailable(CenasError, RuntimeError):
  """No energy meter can be used here (no pynvml, no driver, no GPU, MIG, unsupported counter)."""


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One measured window.

  Attributes:
    name: the window's name.
    energy_j: board energy over the window, in joules (gross: idle power included).
    duration_s: wall time between the two synchronized readings, in seconds.
    power_w: mean power over the window (energy_j / duration_s), in watts.
    method: "energy_counter" or "power_polling".
    device_index: NVML index of the measured device.
    device_name: NVML product name of the measured device.
    n_updates: how many times the counter (or the power reading) changed inside the window.
    energy_source: "measured-nvml" for real readings, "fake" for the simulated meter.
  """

  name: str
  energy_j: float
  duration_s: float
  power_w: float
  method: str
  device_index: int
  device_name: str
  n_updates: int
  energy_source: str


@dataclasses.dataclass(frozen=True)
class Clocks:
  """Current clocks of a device, in MHz."""

  sm_mhz: float
  mem_mhz: float


@dataclasses.dataclass(frozen=True)
class MeterProvenance:
  """What a measurement was taken on; recorded next to every dataset a meter produces.

  Attributes:
    energy_source: "measured-nvml" or "fake".
    method: "energy_counter" or "power_polling".
    device_name: NVML product name (e.g. "NVIDIA H100 80GB HBM3").
    device_index: NVML index.
    visible_index: index as CUDA/JAX see it (after CUDA_VISIBLE_DEVICES).
    uuid: the device UUID ("" when unknown).
    driver_version: NVIDIA driver version string.
    sm_clock_mhz: current SM clock in MHz (None when the driver does not report it).
    mem_clock_mhz: current memory clock in MHz (None when not reported).
    power_limit_w: enforced power limit in watts (None when not reported).
    temperature_c: GPU temperature in degrees Celsius (None when not reported).
  """

  energy_source: str
  method: str
  device_name: str
  device_index: int
  visible_index: int
  uuid: str
  driver_version: str
  sm_clock_mhz: float | None
  mem_clock_mhz: float | None
  power_limit_w: float | None
  temperature_c: float | None

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Reading:
  time_s: float
  energy_j: float  # cumulative
  n_updates: int  # cumulative


def _block_on(sync_on: Any) -> None:
  if sync_on is None:
    return
  import jax  # pylint: disable=g-import-not-at-top  (lazy: keep `import cenas_jax` cheap)

  jax.block_until_ready(sync_on)


class EnergyMeter(abc.ABC):
  """Measures the energy of named windows on one device.

  Subclasses provide ``_reading()`` (a cumulative energy/update count at the current time) and the
  provenance properties; this class keeps the open windows, synchronizes, and builds
  ``Measurement``s. Windows may overlap and nest as long as their names differ. Open and close
  windows from one thread; the internal lock only guards readings against the sampling thread.
  """

  energy_source: str

  def __init__(
      self,
      *,
      sync: Callable[[], None] | None = None,
      min_updates: int = 10,
      sleep: Callable[[float], None] = time.sleep,
  ):
    """Args:
      sync: called after ``jax.block_until_ready(sync_on)`` before every reading (e.g. a device
        synchronization callback for work the caller cannot pass as ``sync_on``).
      min_updates: windows with fewer counter updates than this are logged as unreliable.
      sleep: how ``idle_power_w`` waits (``time.sleep``; a simulated clock's ``advance`` in tests).
    """
    self._sync = sync
    self._min_updates = int(min_updates)
    self._sleep = sleep
    self._windows: dict[str, _Reading] = {}
    self._lock = threading.RLock()

  # -- what a backend provides ------------------------------------------------------------------

  @abc.abstractmethod
  def _reading(self) -> _Reading:
    """A fresh cumulative reading at the current time."""

  def _on_first_window(self) -> None:
    """Called when the first window opens (start background sampling)."""

  def _on_last_window(self) -> None:
    """Called (outside the lock) when the last open window closes (stop background sampling)."""

  @property
  @abc.abstractmethod
  def method(self) -> str:
    """ "energy_counter" or "power_polling"."""

  @property
  @abc.abstractmethod
  def device_name(self) -> str:
    """Product name of the measured device."""

  @property
  @abc.abstractmethod
  def device_index(self) -> int:
    """NVML index of the measured device."""

  @property
  @abc.abstractmethod
  def driver_version(self) -> str:
    """Driver version string."""

  @property
  @abc.abstractmethod
  def power_limit_w(self) -> float | None:
    """Enforced power limit in watts."""

  @abc.abstractmethod
  def clocks(self) -> Clocks:
    """Current SM and memory clocks in MHz."""

  @abc.abstractmethod
  def provenance(self) -> MeterProvenance:
    """Device, driver, clocks and power limit, read now."""

  # -- windows ----------------------------------------------------------------------------------

  def synchronize(self, sync_on: Any = None) -> None:
    """Blocks until ``sync_on`` (a pytree of JAX arrays, or None) is computed, then calls ``sync``."""
    _block_on(sync_on)
    if self._sync is not None:
      self._sync()

  def begin_window(self, name: str, sync_on: Any = None) -> None:
    """Opens window ``name`` after synchronizing on ``sync_on`` (see the module docstring).

    Raises:
      ValueError: a window of that name is already open.
    """
    with self._lock:
      if name in self._windows:
        raise ValueError(f"Energy window {name!r} is already open; end it first or use another name.")
    self.synchronize(sync_on)
    with self._lock:
      if not self._windows:
        self._on_first_window()
      self._windows[name] = self._reading()

  def end_window(self, name: str, sync_on: Any = None) -> Measurement:
    """Closes window ``name`` after blocking on ``sync_on`` (pass the measured work's outputs).

    Raises:
      ValueError: no window of that name is open.
    """
    with self._lock:
      if name not in self._windows:
        raise ValueError(
            f"Energy window {name!r} was never opened (open windows: {sorted(self._windows)})."
        )
    self.synchronize(sync_on)
    with self._lock:
      end = self._reading()
      start = self._windows.pop(name)
      last = not self._windows
    if last:
      self._on_last_window()
    duration_s = end.time_s - start.time_s
    energy_j = end.energy_j - start.energy_j
    n_updates = end.n_updates - start.n_updates
    if energy_j < 0:
      raise EnergyMeterUnavailable(
          f"Energy window {name!r} on {self.device_name}: the energy counter went backwards "
          f"({start.energy_j:.3f} J -> {end.energy_j:.3f} J); the driver was probably reloaded. "
          "Measure again."
      )
    if n_updates < self._min_updates:
      _log.warning(
          "Energy window %r lasted %.3f s and saw only %d counter updates (< %d): too short for a "
          "reliable reading; lengthen the window or repeat the work inside it.",
          name, duration_s, n_updates, self._min_updates,
      )
    power_w = energy_j / duration_s if duration_s > 0 else math.nan
    return Measurement(
        name=name,
        energy_j=energy_j,
        duration_s=duration_s,
        power_w=power_w,
        method=self.method,
        device_index=self.device_index,
        device_name=self.device_name,
        n_updates=n_updates,
        energy_source=self.energy_source,
    )

  def measure(self, name: str, fn: Callable[[], Any], sync_on: Any = None) -> tuple[Any, Measurement]:
    """Runs ``fn()`` inside window ``name``, blocking on its result; returns (result, measurement)."""
    self.begin_window(name, sync_on=sync_on)
    out = fn()
    return out, self.end_window(name, sync_on=out)

  def idle_power_w(self, duration_s: float) -> float:
    """Mean board power in watts while this process does nothing for ``duration_s`` seconds.

    Measure it with no other work queued on the device; the result is what ``energy - idle x time``
    subtracts to get the dynamic energy of a kernel.
    """
    if not duration_s > 0:
      raise ValueError(f"idle_power_w: duration_s must be > 0, got {duration_s}.")
    name = f"__idle_{id(self)}_{time.monotonic_ns()}"
    self.begin_window(name)
    self._sleep(duration_s)
    return self.end_window(name).power_w

  def close(self) -> None:
    """Releases the backend (stops sampling threads)."""

  def __enter__(self) -> EnergyMeter:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


# -- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------------


def resolve_nvml_index(
    visible_index: int, cuda_visible_devices: str | None, nvml_uuids: Sequence[str]
) -> int:
  """Maps a CUDA-visible device index to the NVML index.

  Args:
    visible_index: the device index as CUDA/JAX see it (0 = first visible device).
    cuda_visible_devices: the value of ``CUDA_VISIBLE_DEVICES`` (None when unset).
    nvml_uuids: UUID of every NVML device, in NVML index order.

  Returns:
    The NVML index of that device.

  Raises:
    EnergyMeterUnavailable: no device is visible, the index is out of range, an entry names a MIG
      slice, or a UUID matches no (or more than one) device.
    ValueError: ``CUDA_VISIBLE_DEVICES`` holds an entry that is neither an index nor a UUID.
  """
  n = len(nvml_uuids)
  if visible_index < 0:
    raise ValueError(f"visible_index must be >= 0, got {visible_index}.")
  if cuda_visible_devices is None:
    if visible_index >= n:
      raise EnergyMeterUnavailable(
          f"GPU index {visible_index} requested but NVML sees only {n} device(s)."
      )
    return visible_index
  entries = [e.strip() for e in cuda_visible_devices.split(",") if e.strip()]
  if not entries or entries[0] in ("-1", "NoDevFiles"):
    raise EnergyMeterUnavailable(
        f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} hides every GPU; nothing to measure."
    )
  if visible_index >= len(entries):
    raise EnergyMeterUnavailable(
        f"GPU index {visible_index} requested but CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} "
        f"makes only {len(entries)} device(s) visible."
    )
  entry = entries[visible_index]
  if entry.upper().startswith("MIG-"):
    raise EnergyMeterUnavailable(
        f"CUDA_VISIBLE_DEVICES entry {entry!r} is a MIG slice: NVML cannot measure the energy of "
        "MIG slices. Measure on a whole GPU (MIG mode disabled)."
    )
  if entry.upper().startswith("GPU-"):
    matches = [i for i, u in enumerate(nvml_uuids) if u.lower().startswith(entry.lower())]
    if len(matches) != 1:
      what = "no" if not matches else "more than one"
      raise EnergyMeterUnavailable(
          f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {what} NVML device "
          f"(NVML UUIDs: {list(nvml_uuids)})."
      )
    return matches[0]
  try:
    idx = int(entry)
  except ValueError:
    raise ValueError(
        f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}: entry {entry!r} is neither a device index "
        "nor a GPU-<uuid>; fix the variable."
    ) from None
  if not 0 <= idx < n:
    raise EnergyMeterUnavailable(
        f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} names device {idx} but NVML sees only {n} "
        "device(s)."
    )
  if n > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
    _log.warning(
        "CUDA_VISIBLE_DEVICES uses indices on a host with %d GPUs but CUDA_DEVICE_ORDER is not "
        "PCI_BUS_ID: CUDA's default order may differ from NVML's. Set CUDA_DEVICE_ORDER=PCI_BUS_ID "
        "or use GPU-<uuid> entries.", n,
    )
  return idx


# -- power integration ------------------------------------------------------------------------------


class PowerIntegrator:
  """Trapezoid integral of power samples: cumulative energy in joules and number of value changes."""

  def __init__(self) -> None:
    self.energy_j = 0.0
    self.n_updates = 0
    self.n_samples = 0
    self._last: tuple[float, float] | None = None

  def add(self, time_s: float, power_w: float) -> None:
    """Adds a sample of ``power_w`` watts taken at ``time_s`` seconds (non-decreasing times)."""
    if self._last is not None:
      t0, p0 = self._last
      if time_s < t0:
        raise ValueError(f"Power samples out of order: {time_s} s after {t0} s.")
      self.energy_j += 0.5 * (p0 + power_w) * (time_s - t0)
      if power_w != p0:
        self.n_updates += 1
    self._last = (time_s, power_w)
    self.n_samples += 1

  @property
  def last_time_s(self) -> float:
    """Time of the latest sample in seconds (NaN before the first)."""
    return math.nan if self._last is None else self._last[0]


# -- NVML ---------------------------------------------------------------------------------------------


def _to_str(x: Any) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


class NvmlEnergyMeter(EnergyMeter):
  """Energy of one NVIDIA GPU from NVML (see the module docstring for methods and caveats)."""

  energy_source = ENERGY_SOURCE_NVML

  def __init__(
      self,
      visible_index: int = 0,
      *,
      method: Literal["auto", "energy_counter", "power_polling"] = "auto",
      poll_period_s: float = 0.02,
      sync: Callable[[], None] | None = None,
      min_updates: int = 10,
      clock: Callable[[], float] = time.perf_counter,
      sleep: Callable[[float], None] = time.sleep,
  ):
    """Opens NVML and selects the device.

    Args:
      visible_index: device index as CUDA/JAX see it (after ``CUDA_VISIBLE_DEVICES``).
      method: "auto" (counter where supported, else polling), "energy_counter" or "power_polling".
      poll_period_s: background sampling period in seconds (power polling, and update counting in
        counter mode); 0 disables the thread (then call ``poll()`` yourself).
      sync: extra synchronization callback called before each reading.
      min_updates: windows with fewer updates than this are logged as unreliable.
      clock: monotonic clock in seconds.
      sleep: how ``idle_power_w`` waits.

    Raises:
      EnergyMeterUnavailable: pynvml missing, NVML/driver missing, no GPU, MIG, or the requested
        method is not supported by the device. The message lists what was tried.
    """
    super().__init__(sync=sync, min_updates=min_updates, sleep=sleep)
    if method not in ("auto", *METHODS):
      raise ValueError(f"method must be 'auto', 'energy_counter' or 'power_polling', got {method!r}.")
    if poll_period_s < 0:
      raise ValueError(f"poll_period_s must be >= 0, got {poll_period_s}.")
    self._clock = clock
    self._poll_period_s = float(poll_period_s)
    self._visible_index = int(visible_index)
    tried: list[str] = []
    try:
      nvml = importlib.import_module("pynvml")
    except ImportError as e:
      raise EnergyMeterUnavailable(
          f"No GPU energy meter: `import pynvml` failed ({e}). Install nvidia-ml-py "
          "(pip install nvidia-ml-py) on a machine with an NVIDIA GPU and driver."
      ) from e
    tried.append("import pynvml: ok")
    self._nvml = nvml
    try:
      nvml.nvmlInit()
    except nvml.NVMLError as e:
      raise EnergyMeterUnavailable(
          f"No GPU energy meter: tried {'; '.join(tried)}; nvmlInit(): failed ({e}). No NVIDIA "
          "driver (libnvidia-ml.so.1) is available on this machine; energy can only be measured on "
          "an NVIDIA GPU."
      ) from e
    self._initialized = True
    try:
      count = int(nvml.nvmlDeviceGetCount())
      tried.append(f"nvmlInit(): ok; nvmlDeviceGetCount(): {count}")
      if count == 0:
        raise EnergyMeterUnavailable(f"No GPU energy meter: tried {'; '.join(tried)}: no GPU found.")
      handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
      uuids = [_to_str(nvml.nvmlDeviceGetUUID(h)) for h in handles]
      self._index = resolve_nvml_index(
          self._visible_index, os.environ.get("CUDA_VISIBLE_DEVICES"), uuids
      )
      self._handle = handles[self._index]
      self._uuid = uuids[self._index]
      self._name = _to_str(nvml.nvmlDeviceGetName(self._handle))
      self._driver = _to_str(nvml.nvmlSystemGetDriverVersion())
      self._check_not_mig()
      self._method = self._select_method(method)
    except BaseException:
      self.close()
      raise
    self._integrator = PowerIntegrator()
    self._last_counter_mj: int | None = None
    self._counter_updates = 0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    _log.info(
        "NVML energy meter on device %d (%s, %s), driver %s, method %s.",
        self._index, self._name, self._uuid, self._driver, self._method,
    )

  def _is_not_supported(self, e: Exception) -> bool:
    nvml = self._nvml
    codes = {getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3), getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)}
    return isinstance(e, nvml.NVMLError) and getattr(e, "value", None) in codes

  def _check_not_mig(self) -> None:
    nvml = self._nvml
    try:
      current, _ = nvml.nvmlDeviceGetMigMode(self._handle)
    except nvml.NVMLError as e:
      if self._is_not_supported(e):
        return  # Not a MIG-capable GPU.
      raise
    if current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
      raise EnergyMeterUnavailable(
          f"GPU {self._index} ({self._name}) is in MIG mode: NVML cannot measure energy per MIG "
          "slice, and whole-board readings would mix other tenants' work. Disable MIG "
          "(nvidia-smi -i N -mig 0) or use another GPU."
      )

  def _select_method(self, method: str) -> str:
    if method == "power_polling":
      self._nvml.nvmlDeviceGetPowerUsage(self._handle)  # Fails loudly if unsupported.
      return method
    try:
      self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
    except self._nvml.NVMLError as e:
      if not self._is_not_supported(e):
        raise
      if method == "energy_counter":
        raise EnergyMeterUnavailable(
            f"GPU {self._index} ({self._name}) has no energy counter "
            f"(nvmlDeviceGetTotalEnergyConsumption: {e}; needs Volta or newer). Use "
            "method='power_polling' or 'auto'."
        ) from e
      _log.warning(
          "GPU %d (%s) has no energy counter (%s): integrating polled power instead "
          "(method=power_polling).", self._index, self._name, e,
      )
      self._nvml.nvmlDeviceGetPowerUsage(self._handle)
      return "power_polling"
    return "energy_counter"

  # -- sampling -----------------------------------------------------------------------------------

  def poll(self) -> None:
    """Takes one sample (power, or the counter for update counting). The sampling thread calls it."""
    with self._lock:
      if self._method == "energy_counter":
        self._read_counter_mj()
      else:
        p_w = self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        self._integrator.add(self._clock(), p_w)

  def _read_counter_mj(self) -> int:
    mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
    if self._last_counter_mj is not None and mj != self._last_counter_mj:
      self._counter_updates += 1
    self._last_counter_mj = mj
    return mj

  def _reading(self) -> _Reading:
    with self._lock:
      if self._method == "energy_counter":
        mj = self._read_counter_mj()
        t = self._clock()
        return _Reading(time_s=t, energy_j=mj / 1000.0, n_updates=self._counter_updates)
      self.poll()
      return _Reading(
          time_s=self._integrator.last_time_s,
          energy_j=self._integrator.energy_j,
          n_updates=self._integrator.n_updates,
      )

  def _run_sampler(self) -> None:
    while not self._stop.wait(self._poll_period_s):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        _log.exception("NVML sampling failed; stopping the sampler.")
        return

  def _on_first_window(self) -> None:
    if self._poll_period_s > 0 and self._thread is None:
      self._stop.clear()
      self._thread = threading.Thread(target=self._run_sampler, name="nvml-sampler", daemon=True)
      self._thread.start()

  def _on_last_window(self) -> None:
    self._stop_sampler()

  def _stop_sampler(self) -> None:
    # Called without holding the lock: the sampler may be waiting for it in poll().
    thread = getattr(self, "_thread", None)
    if thread is not None:
      self._stop.set()
      thread.join()
      self._thread = None

  @property
  def sampler_running(self) -> bool:
    """Whether the background sampling thread is alive."""
    return self._thread is not None and self._thread.is_alive()

  # -- provenance ---------------------------------------------------------------------------------

  @property
  def method(self) -> str:
    return self._method

  @property
  def device_name(self) -> str:
    return self._name

  @property
  def device_index(self) -> int:
    return self._index

  @property
  def uuid(self) -> str:
    return self._uuid

  @property
  def driver_version(self) -> str:
    return self._driver

  def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
    try:
      return fn(*args)
    except self._nvml.NVMLError as e:
      _log.warning("NVML %s not available on GPU %d: %s", fn.__name__, self._index, e)
      return None

  @property
  def power_limit_w(self) -> float | None:
    mw = self._optional(self._nvml.nvmlDeviceGetEnforcedPowerLimit, self._handle)
    return None if mw is None else mw / 1000.0

  def clocks(self) -> Clocks:
    nvml = self._nvml
    sm = self._optional(nvml.nvmlDeviceGetClockInfo, self._handle, nvml.NVML_CLOCK_SM)
    mem = self._optional(nvml.nvmlDeviceGetClockInfo, self._handle, nvml.NVML_CLOCK_MEM)
    return Clocks(sm_mhz=math.nan if sm is None else float(sm),
                  mem_mhz=math.nan if mem is None else float(mem))

  def provenance(self) -> MeterProvenance:
    c = self.clocks()
    temp = self._optional(
        self._nvml.nvmlDeviceGetTemperature, self._handle, self._nvml.NVML_TEMPERATURE_GPU
    )
    return MeterProvenance(
        energy_source=self.energy_source,
        method=self._method,
        device_name=self._name,
        device_index=self._index,
        visible_index=self._visible_index,
        uuid=self._uuid,
        driver_version=self._driver,
        sm_clock_mhz=None if math.isnan(c.sm_mhz) else c.sm_mhz,
        mem_clock_mhz=None if math.isnan(c.mem_mhz) else c.mem_mhz,
        power_limit_w=self.power_limit_w,
        temperature_c=None if temp is None else float(temp),
    )

  def close(self) -> None:
    """Stops the sampler and shuts NVML down (idempotent)."""
    self._stop_sampler()
    with self._lock:
      self._windows.clear()
    if getattr(self, "_initialized", False):
      self._initialized = False
      try:
        self._nvml.nvmlShutdown()
      except self._nvml.NVMLError as e:  # pragma: no cover - shutdown failures are only logged.
        _log.warning("nvmlShutdown failed: %s", e)


# -- fake -----------------------------------------------------------------------------------------------


class SimulatedClock:
  """A clock that moves only when told: ``clock()`` reads it, ``advance(dt)`` (or ``sleep``) moves it."""

  def __init__(self, start_s: float = 0.0):
    self.now_s = float(start_s)

  def __call__(self) -> float:
    return self.now_s

  def advance(self, dt_s: float) -> None:
    if dt_s < 0:
      raise ValueError(f"Cannot move a clock backwards ({dt_s} s).")
    self.now_s += float(dt_s)

  sleep = advance


class FakeEnergyMeter(EnergyMeter):
  """A deterministic meter for tests: energy is the integral of a power model over a clock.

  The simulated board draws ``power_w(t)`` watts at time ``t`` (seconds on ``clock``). Like a real
  NVML counter, the cumulative energy only changes every ``counter_period_s``: the counter at time
  ``t`` holds the integral up to the last update tick ``floor(t / period) * period``, and the
  number of updates in a window is the number of ticks inside it (windows shorter than a period
  read 0 J). ``counter_period_s=0`` gives a continuous counter (one update per reading).

  ``idle_power_w()`` waits ``duration_s`` on the clock and returns the configured ``idle_power_w``
  (the model has no notion of load). Every measurement carries ``energy_source="fake"``.
  """

  energy_source = ENERGY_SOURCE_FAKE

  def __init__(
      self,
      power_w: float | Callable[[float], float] = 250.0,
      *,
      idle_power_w: float = 60.0,
      counter_period_s: float = 0.1,
      clock: Callable[[], float] | None = None,
      sleep: Callable[[float], None] | None = None,
      method: str = "energy_counter",
      device_name: str = "Fake GPU (simulated)",
      driver_version: str = "fake",
      clocks: Clocks = Clocks(sm_mhz=1980.0, mem_mhz=2619.0),
      power_limit_w: float | None = 700.0,
      integration_step_s: float = 1e-3,
      sync: Callable[[], None] | None = None,
      min_updates: int = 10,
  ):
    """Args:
      power_w: board power in watts, a constant or a function of the clock time in seconds.
      idle_power_w: what ``idle_power_w()`` returns, in watts.
      counter_period_s: update period of the simulated counter in seconds (0: continuous).
      clock: time source in seconds; default a fresh ``SimulatedClock`` starting at 0.
      sleep: how ``idle_power_w`` waits; default the simulated clock's ``advance`` (or
        ``time.sleep`` when a custom clock is given).
      method: label reported in measurements ("energy_counter" or "power_polling").
      device_name, driver_version, clocks, power_limit_w: reported provenance.
      integration_step_s: step of the numeric integral when ``power_w`` is a function.
      sync, min_updates: as in ``EnergyMeter``.
    """
    if clock is None:
      sim = SimulatedClock()
      clock, sleep = sim, (sleep or sim.advance)
    super().__init__(sync=sync, min_updates=min_updates, sleep=sleep or time.sleep)
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if counter_period_s < 0:
      raise ValueError(f"counter_period_s must be >= 0, got {counter_period_s}.")
    self._power = power_w
    self._idle_w = float(idle_power_w)
    self._period = float(counter_period_s)
    self._clock = clock
    self._method = method
    self._name = device_name
    self._driver = driver_version
    self._clocks = clocks
    self._limit_w = power_limit_w
    self._step = float(integration_step_s)
    self._t_int = 0.0  # integral of power from 0 to _t_int is _e_int
    self._e_int = 0.0
    self._n_readings = 0

  def _energy_until(self, t_s: float) -> float:
    """Integral of the power model from 0 to ``t_s`` seconds, in joules."""
    if not callable(self._power):
      return float(self._power) * t_s
    if t_s < self._t_int:
      raise ValueError(f"FakeEnergyMeter: time moved backwards ({t_s} < {self._t_int}).")
    n = max(1, math.ceil((t_s - self._t_int) / self._step))
    h = (t_s - self._t_int) / n
    e = 0.0
    for i in range(n):
      a = self._t_int + i * h
      e += 0.5 * (self._power(a) + self._power(a + h)) * h
    self._t_int, self._e_int = t_s, self._e_int + e
    return self._e_int

  def _reading(self) -> _Reading:
    t = float(self._clock())
    self._n_readings += 1
    if self._period > 0:
      ticks = math.floor(t / self._period + 1e-9)
      return _Reading(time_s=t, energy_j=self._energy_until(ticks * self._period), n_updates=ticks)
    return _Reading(time_s=t, energy_j=self._energy_until(t), n_updates=self._n_readings)

  def idle_power_w(self, duration_s: float) -> float:
    if not duration_s > 0:
      raise ValueError(f"idle_power_w: duration_s must be > 0, got {duration_s}.")
    self._sleep(duration_s)
    return self._idle_w

  @property
  def method(self) -> str:
    return self._method

  @property
  def device_name(self) -> str:
    return self._name

  @property
  def device_index(self) -> int:
    return 0

  @property
  def driver_version(self) -> str:
    return self._driver

  @property
  def power_limit_w(self) -> float | None:
    return self._limit_w

  def clocks(self) -> Clocks:
    return self._clocks

  def provenance(self) -> MeterProvenance:
    return MeterProvenance(
        energy_source=self.energy_source,
        method=self._method,
        device_name=self._name,
        device_index=0,
        visible_index=0,
        uuid="",
        driver_version=self._driver,
        sm_clock_mhz=self._clocks.sm_mhz,
        mem_clock_mhz=self._clocks.mem_mhz,
        power_limit_w=self._limit_w,
        temperature_c=None,
    )
