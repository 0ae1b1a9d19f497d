"""Device specifications for the analytical energy prior: peak FLOP/s, bandwidth, TDP, idle power.

Every number carries its source in ``DeviceSpec.sources`` (field name -> URL or note). Vendor
datasheet values are dense (no structured sparsity) peak rates at boost clock. Idle power and kernel
launch overhead are not published by the vendor: they are marked as estimates and are meant to be
replaced by measurement (``EnergyMeter`` idle readings, profiler traces); the energy model treats
the whole spec only as a prior that fitting refines.

Peak FLOP/s keys: ``f64``, ``f32`` (CUDA cores), ``tf32`` (tensor cores, what XLA uses for f32
GEMMs/convolutions by default on Ampere and newer), ``f16``, ``bf16`` (tensor cores where present)
and ``s8`` (integer ops per second).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

# Elementwise/reduction kernels run on CUDA cores; GEMM-like kernels on tensor cores when present.
_TENSOR_CLASSES = ("gemm", "conv", "attention")


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  """Published (or estimated) limits of one accelerator.

  Attributes:
    name: key in ``DEVICE_SPECS``.
    description: product name and variant.
    peak_flops_per_s: dense peak FLOP/s per dtype key (see module docstring).
    mem_bandwidth_bytes_per_s: peak device-memory bandwidth in bytes/s.
    tdp_w: thermal design power (maximum board/module power) in W.
    idle_power_w: power with the device idle (static power) in W.
    launch_overhead_s: time between two back-to-back kernels (launch gap) in s.
    sources: field name -> URL (or ``estimate: ...`` note) of each number.
  """

  name: str
  description: str
  peak_flops_per_s: Mapping[str, float]
  mem_bandwidth_bytes_per_s: float
  tdp_w: float
  idle_power_w: float
  launch_overhead_s: float
  sources: Mapping[str, str]

  def peak_for(self, dtype: str, kernel_class: str) -> float:
    """Peak FLOP/s a kernel of ``kernel_class`` computing in ``dtype`` can reach.

    GEMM-like classes use tensor-core rates (f32 -> tf32 where the device has it); other classes
    use CUDA-core rates (f16/bf16 elementwise taken at the f32 rate, which is what memory-bound
    elementwise code sees in practice).

    Args:
      dtype: HLO element type (``f32``, ``bf16``, ``f16``, ``s8``, ``f64``, ...).
      kernel_class: one of ``hlo.KERNEL_CLASSES``.

    Returns:
      FLOP/s.
    """
    peaks = self.peak_flops_per_s
    if kernel_class in _TENSOR_CLASSES:
      if dtype == "f32" and "tf32" in peaks:
        return peaks["tf32"]
      if dtype in peaks:
        return peaks[dtype]
      if dtype.startswith("f8") and "f16" in peaks:
        return peaks.get("f8", peaks["f16"])
      if dtype.startswith(("s", "u")) and "s8" in peaks:
        return peaks["s8"]
      return peaks["f32"]
    if dtype == "f64":
      return peaks.get("f64", peaks["f32"])
    return peaks["f32"]

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["peak_flops_per_s"] = dict(self.peak_flops_per_s)
    d["sources"] = dict(self.sources)
    return d

  @classmethod
  def from_dict(cls, d: Mapping) -> "DeviceSpec":
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


_T = 1e12
_G = 1e9

_H100_URL = "https://www.nvidia.com/en-us/data-center/h100/"
_A100_URL = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
             "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_V100_URL = ("https://images.nvidia.com/content/technologies/volta/pdf/"
             "volta-v100-datasheet-update-us-1165301-r5.pdf")
_ORIN_URL = ("https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/"
             "nvidia-jetson-agx-orin-technical-brief.pdf")
_TX2_URL = "https://developer.nvidia.com/embedded/jetson-tx2"
_TX2_DATASHEET = ("https://developer.nvidia.com/embedded/dlc/jetson-tx2-series-modules-data-sheet "
                  "(Jetson TX2 Series Module Data Sheet)")
_IDLE_NOTE = ("estimate: typical nvidia-smi idle reading for this board class, not a vendor figure; "
              "replace with a measured idle power")
_LAUNCH_NOTE = ("estimate: typical gap between back-to-back XLA kernels without CUDA graphs; "
                "replace with profiler-measured gaps")

DEVICE_SPECS: Mapping[str, DeviceSpec] = {
    "h100-sxm": DeviceSpec(
        name="h100-sxm",
        description="NVIDIA H100 SXM5 80 GB (Hopper)",
        peak_flops_per_s={"f64": 34 * _T, "f32": 67 * _T, "tf32": 494.7 * _T, "bf16": 989.4 * _T,
                          "f16": 989.4 * _T, "f8": 1978.9 * _T, "s8": 1978.9 * _T},
        mem_bandwidth_bytes_per_s=3.35e12,
        tdp_w=700.0,
        idle_power_w=70.0,
        launch_overhead_s=4e-6,
        sources={"peak_flops_per_s": _H100_URL + " (datasheet table, SXM column; tensor rates "
                                                 "are the dense halves of the 'with sparsity' "
                                                 "figures)",
                 "mem_bandwidth_bytes_per_s": _H100_URL, "tdp_w": _H100_URL + " (up to 700 W)",
                 "idle_power_w": _IDLE_NOTE, "launch_overhead_s": _LAUNCH_NOTE},
    ),
    "a100-sxm4-40gb": DeviceSpec(
        name="a100-sxm4-40gb",
        description="NVIDIA A100 SXM4 40 GB (Ampere GA100)",
        peak_flops_per_s={"f64": 9.7 * _T, "f32": 19.5 * _T, "tf32": 156 * _T, "bf16": 312 * _T,
                          "f16": 312 * _T, "s8": 624 * _T},
        mem_bandwidth_bytes_per_s=1555 * _G,
        tdp_w=400.0,
        idle_power_w=50.0,
        launch_overhead_s=4e-6,
        sources={"peak_flops_per_s": _A100_URL + " (dense rates)",
                 "mem_bandwidth_bytes_per_s": _A100_URL + " (1,555 GB/s for 40 GB)",
                 "tdp_w": _A100_URL + " (400 W SXM)", "idle_power_w": _IDLE_NOTE,
                 "launch_overhead_s": _LAUNCH_NOTE},
    ),
    "v100-sxm2": DeviceSpec(
        name="v100-sxm2",
        description="NVIDIA V100 SXM2 (Volta GV100)",
        peak_flops_per_s={"f64": 7.8 * _T, "f32": 15.7 * _T, "f16": 125 * _T},
        mem_bandwidth_bytes_per_s=900 * _G,
        tdp_w=300.0,
        idle_power_w=40.0,
        launch_overhead_s=5e-6,
        sources={"peak_flops_per_s": _V100_URL + " (SXM2 column; f16 = tensor performance; no "
                                                 "tf32/bf16 on Volta)",
                 "mem_bandwidth_bytes_per_s": _V100_URL, "tdp_w": _V100_URL,
                 "idle_power_w": _IDLE_NOTE, "launch_overhead_s": _LAUNCH_NOTE},
    ),
    "jetson-agx-orin": DeviceSpec(
        name="jetson-agx-orin",
        description="NVIDIA Jetson AGX Orin 64 GB module (Ampere GA10B GPU, 2048 CUDA cores, "
                    "64 tensor cores, MAXN)",
        peak_flops_per_s={"f32": 5.3 * _T, "tf32": 21.25 * _T, "f16": 42.5 * _T, "bf16": 42.5 * _T,
                          "s8": 85 * _T},
        mem_bandwidth_bytes_per_s=204.8 * _G,
        tdp_w=60.0,
        idle_power_w=10.0,
        launch_overhead_s=10e-6,
        sources={"peak_flops_per_s": _ORIN_URL + " (GPU: 5.3 FP32 TFLOPS, 170 sparse INT8 TOPS; "
                                                 "dense s8 = 170/2, f16 = s8/2, tf32 = f16/2 as "
                                                 "for Ampere tensor cores)",
                 "mem_bandwidth_bytes_per_s": _ORIN_URL + " (204.8 GB/s LPDDR5)",
                 "tdp_w": _ORIN_URL + " (15 W - 60 W module power modes)",
                 "idle_power_w": "estimate: module power at idle; replace with a measured value",
                 "launch_overhead_s": _LAUNCH_NOTE + " (embedded CPUs launch slower)"},
    ),
    "jetson-tx2": DeviceSpec(
        name="jetson-tx2",
        description="NVIDIA Jetson TX2 module (Pascal GP10B GPU, 256 CUDA cores, 1.3 GHz, MAXN) - "
                    "the 'edgegpu' of HW-NAS-Bench",
        peak_flops_per_s={"f32": 0.665 * _T, "f16": 1.33 * _T},
        mem_bandwidth_bytes_per_s=59.7 * _G,
        tdp_w=15.0,
        idle_power_w=1.5,
        launch_overhead_s=20e-6,
        sources={"peak_flops_per_s": _TX2_URL + " (1.33 TFLOPS FP16; FP32 is half on GP10B: "
                                                "256 cores x 2 x 1.3 GHz)",
                 "mem_bandwidth_bytes_per_s": _TX2_DATASHEET + " (128-bit LPDDR4, 59.7 GB/s)",
                 "tdp_w": _TX2_DATASHEET + " (7.5 W Max-Q / 15 W Max-P modes)",
                 "idle_power_w": "estimate: GPU-rail power at idle; replace with a measured value",
                 "launch_overhead_s": _LAUNCH_NOTE + " (embedded CPUs launch slower)"},
    ),
}


def get_spec(name: str) -> DeviceSpec:
  """The spec called ``name``.

  Raises:
    KeyError: unknown name (the message lists the known ones).
  """
  try:
    return DEVICE_SPECS[name]
  except KeyError:
    raise KeyError(f"unknown device spec {name!r}; known: {sorted(DEVICE_SPECS)}") from None
