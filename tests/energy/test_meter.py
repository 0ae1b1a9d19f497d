"""Tests of cenas_jax.energy.meter: the fake meter, and the NVML backend against a fake pynvml."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
import types
from collections.abc import Callable

import pytest

from cenas_jax.energy import meter as meter_lib
from cenas_jax.energy.meter import (
    EnergyMeter,
    EnergyMeterUnavailable,
    FakeEnergyMeter,
    NvmlEnergyMeter,
    PowerIntegrator,
    SimulatedClock,
    resolve_nvml_index,
)

# -- a fake pynvml module -----------------------------------------------------------------------------

_NOT_SUPPORTED = 3
_LIBRARY_NOT_FOUND = 12


class _FakeNVMLError(Exception):

  _names = {_NOT_SUPPORTED: "Not Supported", _LIBRARY_NOT_FOUND: "NVML Shared Library Not Found"}

  def __init__(self, value: int):
    super().__init__(value)
    self.value = value

  def __str__(self) -> str:
    return self._names.get(self.value, f"NVML error {self.value}")


@dataclasses.dataclass
class FakeDevice:
  name: str = "NVIDIA H100 80GB HBM3"
  uuid: str = "GPU-00000000-aaaa-bbbb-cccc-000000000000"
  power_w: Callable[[float], float] = lambda t: 300.0
  has_counter: bool = True
  mig_mode: int | None = None  # None: MIG not supported by the device.
  counter_period_s: float = 0.1


def make_fake_pynvml(
    devices: list[FakeDevice], clock: Callable[[], float], init_error: int | None = None
) -> types.ModuleType:
  """A stand-in for `pynvml` whose readings are functions of `clock`."""
  m = types.ModuleType("pynvml")
  m.NVMLError = _FakeNVMLError
  m.NVML_ERROR_NOT_SUPPORTED = _NOT_SUPPORTED
  m.NVML_ERROR_FUNCTION_NOT_FOUND = 13
  m.NVML_DEVICE_MIG_ENABLE = 1
  m.NVML_CLOCK_SM = 1
  m.NVML_CLOCK_MEM = 2
  m.NVML_TEMPERATURE_GPU = 0
  m.calls = []

  def dev(h: int) -> FakeDevice:
    return devices[h]

  def nvmlInit():
    m.calls.append("init")
    if init_error is not None:
      raise _FakeNVMLError(init_error)

  def nvmlShutdown():
    m.calls.append("shutdown")

  def nvmlDeviceGetMigMode(h):
    if dev(h).mig_mode is None:
      raise _FakeNVMLError(_NOT_SUPPORTED)
    return [dev(h).mig_mode, dev(h).mig_mode]

  def nvmlDeviceGetTotalEnergyConsumption(h):
    d = dev(h)
    if not d.has_counter:
      raise _FakeNVMLError(_NOT_SUPPORTED)
    # Constant-power devices only: the counter holds the energy up to the last update tick.
    tick_s = math.floor(clock() / d.counter_period_s + 1e-9) * d.counter_period_s
    return int(round(d.power_w(tick_s) * tick_s * 1000.0)) + 123_456_789  # mJ since driver load

  m.nvmlInit = nvmlInit
  m.nvmlShutdown = nvmlShutdown
  m.nvmlDeviceGetCount = lambda: len(devices)
  m.nvmlDeviceGetHandleByIndex = lambda i: i
  m.nvmlDeviceGetUUID = lambda h: dev(h).uuid
  m.nvmlDeviceGetName = lambda h: dev(h).name.encode()  # old pynvml versions return bytes
  m.nvmlSystemGetDriverVersion = lambda: "580.65.06"
  m.nvmlDeviceGetMigMode = nvmlDeviceGetMigMode
  m.nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetTotalEnergyConsumption
  m.nvmlDeviceGetPowerUsage = lambda h: int(round(dev(h).power_w(clock()) * 1000.0))
  m.nvmlDeviceGetClockInfo = lambda h, kind: {1: 1980, 2: 2619}[kind]
  m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
  m.nvmlDeviceGetTemperature = lambda h, sensor: 41
  return m


@pytest.fixture
def sim() -> SimulatedClock:
  return SimulatedClock(start_s=1000.0)


def _install(monkeypatch, module) -> None:
  monkeypatch.setitem(sys.modules, "pynvml", module)
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _nvml_meter(sim: SimulatedClock, **kw) -> NvmlEnergyMeter:
  return NvmlEnergyMeter(poll_period_s=0, clock=sim, sleep=sim.advance, **kw)


# -- fake meter -------------------------------------------------------------------------------------


def test_fake_meter_constant_power_is_exact():
  m = FakeEnergyMeter(250.0, counter_period_s=0.1)
  assert isinstance(m, EnergyMeter)
  m.begin_window("a")
  m._clock.advance(2.0)
  r = m.end_window("a")
  assert r.energy_j == pytest.approx(500.0)
  assert r.duration_s == pytest.approx(2.0)
  assert r.power_w == pytest.approx(250.0)
  assert r.n_updates == 20
  assert r.energy_source == "fake" and r.method == "energy_counter"


def test_fake_meter_power_model_is_integrated_and_deterministic():
  def run() -> tuple[float, float]:
    clock = SimulatedClock()
    m = FakeEnergyMeter(lambda t: 100.0 + 50.0 * t, counter_period_s=0.0, clock=clock,
                        sleep=clock.advance)
    m.begin_window("ramp")
    clock.advance(2.0)
    r = m.end_window("ramp")
    return r.energy_j, r.power_w

  e1, p1 = run()
  assert e1 == pytest.approx(300.0, rel=1e-9)  # integral of 100 + 50 t over [0, 2]
  assert p1 == pytest.approx(150.0, rel=1e-9)
  assert run() == (e1, p1)


def test_fake_meter_short_window_reads_zero_and_warns(caplog):
  m = FakeEnergyMeter(250.0, counter_period_s=0.1)
  m._clock.advance(0.01)
  m.begin_window("short")
  m._clock.advance(0.05)
  with caplog.at_level(logging.WARNING, logger=meter_lib.__name__):
    r = m.end_window("short")
  assert r.energy_j == 0.0 and r.n_updates == 0
  assert "too short" in caplog.text


def test_fake_meter_overlapping_windows_and_name_errors():
  m = FakeEnergyMeter(100.0, counter_period_s=0.0)
  m.begin_window("outer")
  m._clock.advance(1.0)
  m.begin_window("inner")
  with pytest.raises(ValueError, match="already open"):
    m.begin_window("inner")
  m._clock.advance(1.0)
  inner = m.end_window("inner")
  m._clock.advance(1.0)
  outer = m.end_window("outer")
  assert inner.energy_j == pytest.approx(100.0)
  assert outer.energy_j == pytest.approx(300.0)
  with pytest.raises(ValueError, match="never opened"):
    m.end_window("outer")


def test_fake_meter_idle_power_and_provenance():
  m = FakeEnergyMeter(250.0, idle_power_w=55.0)
  t0 = m._clock()
  assert m.idle_power_w(5.0) == 55.0
  assert m._clock() - t0 == pytest.approx(5.0)
  with pytest.raises(ValueError):
    m.idle_power_w(0.0)
  p = m.provenance()
  assert p.energy_source == "fake" and p.sm_clock_mhz == 1980.0 and p.power_limit_w == 700.0


def test_sync_blocks_on_outputs_and_calls_callback(monkeypatch):
  import jax
  import jax.numpy as jnp

  blocked = []
  real = jax.block_until_ready
  monkeypatch.setattr(jax, "block_until_ready", lambda x: blocked.append(x) or real(x))
  calls = []
  m = FakeEnergyMeter(10.0, sync=lambda: calls.append(1))
  x = jnp.ones((4,))
  m.begin_window("w", sync_on=x)
  y = x * 2
  m.end_window("w", sync_on=y)
  assert len(calls) == 2
  assert blocked[0] is x and blocked[1] is y
  _, r = m.measure("fn", lambda: jnp.arange(3))
  assert r.name == "fn" and len(calls) == 4


def test_power_integrator_trapezoid():
  integ = PowerIntegrator()
  for i in range(11):
    t = 0.2 * i
    integ.add(t, 100.0 + 50.0 * t)
  assert integ.energy_j == pytest.approx(300.0)
  assert integ.n_updates == 10 and integ.n_samples == 11
  with pytest.raises(ValueError, match="out of order"):
    integ.add(1.0, 10.0)


# -- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------------------

_UUIDS = [
    "GPU-11111111-0000-0000-0000-000000000000",
    "GPU-22222222-0000-0000-0000-000000000000",
    "GPU-33333333-0000-0000-0000-000000000000",
]


def test_resolve_nvml_index_mapping(monkeypatch):
  monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
  assert resolve_nvml_index(1, None, _UUIDS) == 1
  assert resolve_nvml_index(0, "2,0", _UUIDS) == 2
  assert resolve_nvml_index(1, "2,0", _UUIDS) == 0
  assert resolve_nvml_index(0, " 1 ", _UUIDS) == 1
  assert resolve_nvml_index(0, _UUIDS[2], _UUIDS) == 2
  assert resolve_nvml_index(1, f"{_UUIDS[2]},GPU-1111", _UUIDS) == 0  # unique prefix


@pytest.mark.parametrize(
    "cvd, index, match",
    [
        ("", 0, "hides every GPU"),
        ("-1", 0, "hides every GPU"),
        ("0", 1, "only 1 device"),
        ("7", 0, "NVML sees only 3"),
        ("GPU-9999", 0, "matches no"),
        ("GPU-", 0, "more than one"),
        ("MIG-GPU-11111111-0000-0000-0000-000000000000/1/0", 0, "MIG slice"),
    ],
)
def test_resolve_nvml_index_refusals(cvd, index, match):
  with pytest.raises(EnergyMeterUnavailable, match=match):
    resolve_nvml_index(index, cvd, _UUIDS)


def test_resolve_nvml_index_garbage_entry():
  with pytest.raises(ValueError, match="neither a device index"):
    resolve_nvml_index(0, "abc", _UUIDS)
  with pytest.raises(EnergyMeterUnavailable, match="only 2 device"):
    resolve_nvml_index(5, None, _UUIDS[:2])


# -- NVML backend with a fake pynvml ----------------------------------------------------------------------


def test_nvml_counter_path(monkeypatch, sim):
  fake = make_fake_pynvml([FakeDevice(power_w=lambda t: 300.0)], sim)
  _install(monkeypatch, fake)
  m = _nvml_meter(sim)
  assert m.method == "energy_counter"
  assert m.device_name == "NVIDIA H100 80GB HBM3" and m.driver_version == "580.65.06"
  m.begin_window("k")
  for _ in range(20):
    sim.advance(0.1)
    m.poll()
  r = m.end_window("k")
  assert r.energy_j == pytest.approx(600.0, abs=1e-3)  # 300 W x 2 s
  assert r.duration_s == pytest.approx(2.0)
  assert r.power_w == pytest.approx(300.0, rel=1e-6)
  assert r.n_updates == 20
  assert (r.method, r.energy_source, r.device_index) == ("energy_counter", "measured-nvml", 0)
  p = m.provenance()
  assert (p.sm_clock_mhz, p.mem_clock_mhz, p.power_limit_w, p.temperature_c) == (1980, 2619, 700, 41)
  assert m.clocks().sm_mhz == 1980.0
  m.close()
  assert fake.calls == ["init", "shutdown"]


def test_nvml_idle_power(monkeypatch, sim):
  _install(monkeypatch, make_fake_pynvml([FakeDevice(power_w=lambda t: 70.0)], sim))
  with _nvml_meter(sim) as m:
    assert m.idle_power_w(3.0) == pytest.approx(70.0, rel=1e-6)


def test_nvml_polling_path_without_counter(monkeypatch, sim, caplog):
  t0 = sim()
  ramp = lambda t: 100.0 + 50.0 * (t - t0)  # noqa: E731
  _install(monkeypatch, make_fake_pynvml([FakeDevice(power_w=ramp, has_counter=False)], sim))
  with caplog.at_level(logging.WARNING, logger=meter_lib.__name__):
    m = _nvml_meter(sim)
  assert m.method == "power_polling"
  assert "no energy counter" in caplog.text
  m.begin_window("k")
  for _ in range(20):
    sim.advance(0.1)
    m.poll()
  r = m.end_window("k")
  assert r.method == "power_polling"
  assert r.energy_j == pytest.approx(300.0, rel=1e-6)  # trapezoid is exact on a linear ramp
  assert r.n_updates == 20
  with pytest.raises(EnergyMeterUnavailable, match="no energy counter"):
    _nvml_meter(sim, method="energy_counter")


def test_nvml_forced_polling_on_counter_device(monkeypatch, sim):
  _install(monkeypatch, make_fake_pynvml([FakeDevice(power_w=lambda t: 200.0)], sim))
  m = _nvml_meter(sim, method="power_polling")
  m.begin_window("k")
  sim.advance(1.5)
  r = m.end_window("k")
  assert r.method == "power_polling" and r.energy_j == pytest.approx(300.0)


def test_nvml_background_sampler_counts_updates(monkeypatch):
  dev = FakeDevice(power_w=lambda t: 100.0, counter_period_s=0.001)
  _install(monkeypatch, make_fake_pynvml([dev], time.perf_counter))
  m = NvmlEnergyMeter(poll_period_s=0.002)
  m.begin_window("k")
  assert m.sampler_running
  time.sleep(0.3)
  r = m.end_window("k")
  assert not m.sampler_running
  assert r.n_updates >= 5  # ~150 polls in 0.3 s on an idle machine, each sees a new 1 ms tick
  assert r.power_w == pytest.approx(100.0, rel=0.1)
  m.close()


def test_nvml_respects_cuda_visible_devices(monkeypatch, sim):
  devices = [FakeDevice(name=f"GPU{i}", uuid=u) for i, u in enumerate(_UUIDS)]
  _install(monkeypatch, make_fake_pynvml(devices, sim))
  monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
  assert _nvml_meter(sim).device_index == 2
  m = _nvml_meter(sim, visible_index=1)
  assert (m.device_index, m.device_name, m.uuid) == (0, "GPU0", _UUIDS[0])
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", _UUIDS[1])
  m = _nvml_meter(sim)
  assert (m.device_index, m.device_name) == (1, "GPU1")
  assert m.provenance().visible_index == 0


def test_nvml_refuses_mig(monkeypatch, sim):
  fake = make_fake_pynvml([FakeDevice(mig_mode=1)], sim)
  _install(monkeypatch, fake)
  with pytest.raises(EnergyMeterUnavailable, match="MIG mode"):
    _nvml_meter(sim)
  assert fake.calls == ["init", "shutdown"]  # NVML is released on failure
  _install(monkeypatch, make_fake_pynvml([FakeDevice(mig_mode=0)], sim))
  assert _nvml_meter(sim).method == "energy_counter"  # MIG-capable but disabled is fine
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-3b2c1a/1/0")
  with pytest.raises(EnergyMeterUnavailable, match="MIG slice"):
    _nvml_meter(sim)


def test_nvml_no_driver(monkeypatch, sim):
  _install(monkeypatch, make_fake_pynvml([], sim, init_error=_LIBRARY_NOT_FOUND))
  with pytest.raises(EnergyMeterUnavailable) as e:
    _nvml_meter(sim)
  msg = str(e.value)
  assert "import pynvml: ok" in msg and "nvmlInit()" in msg and "Library Not Found" in msg


def test_nvml_no_gpu(monkeypatch, sim):
  _install(monkeypatch, make_fake_pynvml([], sim))
  with pytest.raises(EnergyMeterUnavailable, match="no GPU found"):
    _nvml_meter(sim)


def test_nvml_no_pynvml(monkeypatch, sim):
  _install(monkeypatch, None)  # `import pynvml` raises ImportError
  with pytest.raises(EnergyMeterUnavailable, match="nvidia-ml-py"):
    _nvml_meter(sim)


def test_nvml_bad_arguments(monkeypatch, sim):
  _install(monkeypatch, make_fake_pynvml([FakeDevice()], sim))
  with pytest.raises(ValueError, match="method"):
    _nvml_meter(sim, method="rapl")
  with pytest.raises(ValueError, match="poll_period_s"):
    NvmlEnergyMeter(poll_period_s=-1)
