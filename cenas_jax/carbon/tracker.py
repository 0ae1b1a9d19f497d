"""A carbon tracker for blocks of JAX work: energy (measured or predicted) x grid intensity.

``CarbonTracker`` is a context manager and a decorator::

  tracker = CarbonTracker(TraceIntensity(trace, replay_start="2021-07-02T06:00Z"), device="a100",
                          output_dir="runs/exp1")
  step = tracker.wrap(jax.jit(train_step))   # the kernel model's prediction per call
  with tracker:                              # meters the block
    for batch in batches:
      state = step(state, batch)
  print(tracker.last)                        # Emission: energy_j, carbon_g, labelled sources

Energy. With an NVIDIA GPU and NVML (``cenas_jax.energy.meter.NvmlEnergyMeter``) the block's board
energy is measured (``energy_source="measured-nvml"``; the meter synchronizes on ``sync_on`` given
to ``stop`` or on the outputs of wrapped calls). Without one, the energy is the sum over the calls
of wrapped functions of the per-kernel energy model's prediction for ``device``
(``energy_source="predicted-<model>"``, e.g. ``predicted-prior:a100``): a prediction, labelled as
such, never passed off as a measurement. A block with neither is refused.

Intensity. ``TraceIntensity`` charges the time-weighted intensity of a trace over the block (a past
trace is replayed from ``replay_start``); ``LiveIntensity`` asks Electricity Maps for the zone's
latest value (``cenas_jax.data.live_intensity``, token from ``ELECTRICITYMAPS_TOKEN``);
``ConstantIntensity`` is a given number. ``default_intensity`` picks live when a token is set.

Every block appends one row to ``<output_dir>/emissions.csv`` in CodeCarbon's columns and units
(duration s, emissions kg CO2eq, energy kWh, power W), so the file reads like CodeCarbon's, followed
by three columns of ours: ``energy_source``, ``ci_g_per_kwh`` and ``ci_source``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import os
import platform
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cenas_jax.carbon import accounting
from cenas_jax.errors import CenasError, DataError

EMISSIONS_FILE = "emissions.csv"
# CodeCarbon 2.x's emissions.csv header, in its order; then the columns this tracker adds.
CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate", "cpu_power",
    "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model",
    "longitude", "latitude", "ram_total_size", "tracking_mode", "on_cloud", "pue")
EXTRA_COLUMNS = ("energy_source", "ci_g_per_kwh", "ci_source")


class TrackerError(CenasError):
  """A tracked block cannot be charged (nothing metered, intensity unknown for its time)."""


# ---------------------------------------------------------------------------------------------
# Intensity sources: mean gCO2eq/kWh over [start, end] (UTC), and a provenance label.


@dataclasses.dataclass(frozen=True)
class ConstantIntensity:
  """A given intensity (gCO2eq/kWh), e.g. a country average; ``source`` says where it is from."""

  ci_g_per_kwh: float
  source: str = "given"

  def mean_g_per_kwh(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[float, str]:
    del start, end
    return float(self.ci_g_per_kwh), self.source


@dataclasses.dataclass
class TraceIntensity:
  """The time-weighted intensity of an hourly trace over each block.

  Attributes:
    trace: a ``CarbonTrace`` or an hourly Series (gCO2eq/kWh) on a UTC index.
    replay_start: charge the first block as if it started at this UTC time of the trace, and later
      blocks at the same offset (for a trace of the past); ``None``: the blocks' own times.
  """

  trace: Any
  replay_start: Any = None
  _offset: pd.Timedelta | None = dataclasses.field(default=None, init=False, repr=False)

  def _series(self) -> pd.Series:
    return getattr(self.trace, "ci_g_per_kwh", self.trace)

  def mean_g_per_kwh(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[float, str]:
    series = self._series()
    if self.replay_start is not None and self._offset is None:
      self._offset = _utc(self.replay_start) - start
    shift = self._offset if self._offset is not None else pd.Timedelta(0)
    a, b = start + shift, end + shift
    first, last = series.index[0], series.index[-1] + pd.Timedelta(hours=1)
    if a < first or b > last:
      raise TrackerError(f"the trace covers {first} .. {last}, not the block's {a} .. {b}; pass "
                         "replay_start= a time inside it, or use a live or constant intensity.")
    if b <= a:
      return float(series.iloc[series.index.get_indexer([a.floor("h")])[0]]), self.source
    grams = accounting.integrate_carbon_g(series, a, b, power_w=1000.0)  # 1 kW: g = kWh-mean CI x h
    return grams / ((b - a) / pd.Timedelta(hours=1)), self.source

  @property
  def source(self) -> str:
    return str(getattr(self.trace, "source", "trace"))


@dataclasses.dataclass
class LiveIntensity:
  """The zone's latest intensity from Electricity Maps, read once per block (at its end)."""

  client: Any  # cenas_jax.data.live_intensity.ElectricityMapsClient

  def mean_g_per_kwh(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[float, str]:
    del start, end
    reading = self.client.latest()
    return reading.ci_g_per_kwh, f"{reading.source}@{reading.time_utc.isoformat()}"


def default_intensity(zone: str | None = None, trace: Any = None, **trace_kwargs: Any):
  """Live Electricity Maps intensity for ``zone`` when ``ELECTRICITYMAPS_TOKEN`` is set, else the
  ``trace`` (``TraceIntensity(trace, **trace_kwargs)``).

  Raises:
    TrackerError: no token and no trace.
  """
  from cenas_jax.data.live_intensity import ElectricityMapsClient  # pylint: disable=g-import-not-at-top

  if zone:
    client = ElectricityMapsClient(zone=zone)
    if client.available:
      return LiveIntensity(client)
  if trace is None:
    raise TrackerError("no intensity: set ELECTRICITYMAPS_TOKEN (with a zone) or give a trace.")
  return TraceIntensity(trace, **trace_kwargs)


# ---------------------------------------------------------------------------------------------
# The tracker.


@dataclasses.dataclass(frozen=True)
class Emission:
  """One tracked block.

  Attributes:
    duration_s: wall time of the block, s.
    energy_j: IT energy of the block (before PUE), J.
    energy_source: ``measured-nvml``, ``predicted-<model>`` or ``fake`` (tests).
    ci_g_per_kwh: the intensity charged, gCO2eq/kWh.
    ci_source: where it came from (trace source, live zone and hour, or ``given``).
    pue: power usage effectiveness applied.
    carbon_g: ``energy_j * pue / 3.6e6 * ci_g_per_kwh``, gCO2eq.
    start_utc, end_utc: the block's wall-clock interval.
    n_calls: calls of wrapped functions inside the block.
  """

  duration_s: float
  energy_j: float
  energy_source: str
  ci_g_per_kwh: float
  ci_source: str
  pue: float
  carbon_g: float
  start_utc: pd.Timestamp
  end_utc: pd.Timestamp
  n_calls: int


def _utc(value: Any) -> pd.Timestamp:
  ts = pd.Timestamp(value)
  return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _shape_key(args: Any, kwargs: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top

  leaves, treedef = jax.tree.flatten((args, kwargs))
  return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


class CarbonTracker:
  """Meters blocks of work and charges them at a carbon intensity (see the module docstring).

  Args:
    intensity: a ``TraceIntensity``, ``LiveIntensity``, ``ConstantIntensity`` (or any object with
      ``mean_g_per_kwh(start, end) -> (gCO2eq/kWh, source)``).
    device: ``cenas_jax.energy`` device spec for predictions (e.g. ``"a100"``), or an
      ``EnergyModel``; needed when no NVML meter measures.
    meter: an ``EnergyMeter``; ``"auto"`` (default): NVML where it works, else predictions only;
      ``None``: predictions only.
    output_dir: folder of ``emissions.csv`` (``None``: write nothing).
    project_name: CodeCarbon's ``project_name`` column.
    pue: power usage effectiveness of the facility.
    clock: wall clock in seconds (tests pass a simulated one).
  """

  def __init__(self, intensity: Any, *, device: Any = None, meter: Any = "auto",
               output_dir: str | os.PathLike[str] | None = ".", project_name: str = "cenas_jax",
               pue: float = 1.0, clock: Callable[[], float] = time.time):
    if not pue >= 1.0:
      raise ValueError(f"pue must be >= 1, got {pue}.")
    self.intensity = intensity
    self.pue = float(pue)
    self.output_dir = None if output_dir is None else Path(output_dir)
    self.project_name = project_name
    self.clock = clock
    self.run_id = str(uuid.uuid4())
    self._model = None
    if device is not None:
      from cenas_jax import energy  # pylint: disable=g-import-not-at-top

      self._model = device if isinstance(device, energy.EnergyModel) else energy.prior_model(energy.get_spec(device))
    self.meter = _auto_meter() if meter == "auto" else meter
    self._per_call_j: dict[Any, float] = {}
    self._t0: float | None = None
    self._predicted_j = 0.0
    self._calls = 0
    self._last_out: Any = None
    self.emissions: list[Emission] = []

  @property
  def last(self) -> Emission | None:
    """The last block's ``Emission``."""
    return self.emissions[-1] if self.emissions else None

  @property
  def model_label(self) -> str | None:
    return None if self._model is None else f"predicted-{self._model.provenance}"

  # -- metering --------------------------------------------------------------------------------

  def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with each call inside a tracked block adding its predicted energy (the per-kernel
    model of ``device``, kernels extracted once per input shapes). Used when no meter measures."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      out = fn(*args, **kwargs)
      if self._t0 is not None:
        self._calls += 1
        self._last_out = out
        if self.meter is None:
          self._predicted_j += self._call_energy_j(fn, args, kwargs)
      return out

    return wrapped

  def _call_energy_j(self, fn, args, kwargs) -> float:
    if self._model is None:
      raise TrackerError("no NVML meter here, so the energy is predicted: pass device= (e.g. "
                         "'a100') to CarbonTracker.")
    key = (id(fn), _shape_key(args, kwargs))
    if key not in self._per_call_j:
      from cenas_jax import energy  # pylint: disable=g-import-not-at-top

      kernels = energy.extract_kernels(fn, *args, mode="gpu", **kwargs)
      self._per_call_j[key] = float(energy.predict_energy_j(self._model, kernels))
    return self._per_call_j[key]

  def start(self) -> None:
    """Starts a block."""
    if self._t0 is not None:
      raise TrackerError("a block is already being tracked; stop() it first.")
    self._predicted_j, self._calls, self._last_out = 0.0, 0, None
    if self.meter is not None:
      self.meter.begin_window("tracked")
    self._t0 = self.clock()

  def stop(self, sync_on: Any = None) -> Emission:
    """Ends the block, charges it, appends it to ``emissions.csv`` and returns it.

    Args:
      sync_on: outputs of the block's work, for a measuring meter to wait for (default: the
        outputs of the last wrapped call).
    """
    if self._t0 is None:
      raise TrackerError("stop() without start().")
    if self.meter is not None:
      m = self.meter.end_window("tracked", sync_on=sync_on if sync_on is not None else self._last_out)
      energy_j, source = float(m.energy_j), m.energy_source
    else:
      if self._calls == 0:
        self._t0 = None
        raise TrackerError("nothing was metered: no NVML meter here and no wrapped function was "
                           "called in the block; wrap the jitted functions with tracker.wrap(fn).")
      energy_j, source = self._predicted_j, self.model_label
    t0, t1 = self._t0, self.clock()
    self._t0 = None
    start = _utc(dt.datetime.fromtimestamp(t0, dt.timezone.utc))
    end = _utc(dt.datetime.fromtimestamp(t1, dt.timezone.utc))
    ci, ci_source = self.intensity.mean_g_per_kwh(start, end)
    emission = Emission(duration_s=t1 - t0, energy_j=energy_j,
                        energy_source=source, ci_g_per_kwh=float(ci), ci_source=ci_source,
                        pue=self.pue, carbon_g=float(accounting.carbon_g(energy_j, ci, self.pue)),
                        start_utc=start, end_utc=end, n_calls=self._calls)
    self.emissions.append(emission)
    if self.output_dir is not None:
      append_emissions_csv(self.output_dir / EMISSIONS_FILE, self._row(emission))
    return emission

  def __enter__(self) -> CarbonTracker:
    self.start()
    return self

  def __exit__(self, exc_type, *exc: Any) -> None:
    if exc_type is None:
      self.stop()
    else:
      self._t0 = None  # a failed block is not charged

  def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """As a decorator: each call of ``fn`` is one tracked block."""

    @functools.wraps(fn)
    def tracked(*args, **kwargs):
      with self:
        return fn(*args, **kwargs)

    return tracked

  def _row(self, e: Emission) -> dict[str, Any]:
    from cenas_jax import __version__  # pylint: disable=g-import-not-at-top

    kwh = accounting.j_to_kwh(e.energy_j)
    kg = e.carbon_g / 1000.0
    device = self._model.spec.name if self._model is not None else getattr(self.meter, "device_name", "")
    return {
        "timestamp": e.end_utc.strftime("%Y-%m-%dT%H:%M:%S"), "project_name": self.project_name,
        "run_id": self.run_id, "duration": e.duration_s, "emissions": kg,
        "emissions_rate": kg / e.duration_s if e.duration_s > 0 else 0.0,
        # A predicted energy is for the named device, not for the host the block ran on: no power.
        "gpu_power": (e.energy_j / e.duration_s if e.duration_s > 0 else 0.0)
                     if not e.energy_source.startswith("predicted") else "",
        "gpu_energy": kwh, "energy_consumed": kwh * e.pue,
        "os": platform.platform(), "python_version": platform.python_version(),
        "codecarbon_version": f"cenas_jax {__version__} (not codecarbon)", "gpu_count": 1,
        "gpu_model": device, "tracking_mode": "process", "pue": e.pue,
        "energy_source": e.energy_source, "ci_g_per_kwh": e.ci_g_per_kwh, "ci_source": e.ci_source,
    }


def _auto_meter():
  """NVML where it works (an NVIDIA GPU, its driver and ``pynvml``), else ``None``."""
  try:
    from cenas_jax.energy.meter import NvmlEnergyMeter  # pylint: disable=g-import-not-at-top

    return NvmlEnergyMeter(visible_index=0)
  except (CenasError, ImportError, OSError):
    return None


def append_emissions_csv(path: str | os.PathLike[str], row: dict[str, Any]) -> Path:
  """Appends ``row`` to a CodeCarbon-style ``emissions.csv`` (rewritten atomically; a file written by
  CodeCarbon itself is kept, its rows get empty cells in our extra columns).

  Raises:
    DataError: the file has columns this tracker does not write (names them).
  """
  from cenas_jax import results  # pylint: disable=g-import-not-at-top

  path = Path(path)
  columns = list(CODECARBON_COLUMNS + EXTRA_COLUMNS)
  rows: list[dict[str, Any]] = []
  if path.exists():
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      unknown = [c for c in (reader.fieldnames or []) if c not in columns]
      if unknown:
        raise DataError(f"{path}: has columns {unknown} that an emissions.csv of CodeCarbon or of this "
                        "tracker does not; write to another output_dir.")
      rows = list(reader)
  return results.write_csv(path, [*rows, row], columns)
