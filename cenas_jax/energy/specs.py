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


# ----------------------------------------------------------------------------------------------------
# Current NVIDIA parts (desktop RTX 20/30/40, data-center Ampere/Ada/Hopper/Blackwell).
#
# GeForce tensor-core rates are the "FP32 accumulate" column of the architecture whitepapers (what
# an XLA f16/bf16 GEMM with f32 accumulation gets; GeForce runs it at half the FP16-accumulate
# rate), dense (half the "with sparsity" figure). Data-center rates are the dense halves of the
# product pages' sparsity figures. Boost clock, reference (not Founders Edition) board.

_TURING_WP = ("https://images.nvidia.com/aem-dam/en-zz/Solutions/design-visualization/technologies/"
              "turing-architecture/NVIDIA-Turing-Architecture-Whitepaper.pdf")
_GA102_WP = ("https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-"
             "whitepaper-v2.pdf")
_ADA_WP = ("https://images.nvidia.com/aem-dam/Solutions/geforce/ada/"
           "nvidia-ada-gpu-architecture.pdf")
_A10_URL = "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"
_L4_URL = "https://www.nvidia.com/en-us/data-center/l4/"
_L40S_URL = "https://www.nvidia.com/en-us/data-center/l40s/"
_H200_URL = "https://www.nvidia.com/en-us/data-center/h200/"
_B200_URL = "https://www.nvidia.com/en-us/data-center/hgx/"
_DESKTOP_LAUNCH = _LAUNCH_NOTE + " (desktop host CPU)"


def _nvidia(name: str, description: str, peaks_t: Mapping[str, float], bw_gb_s: float,
            tdp_w: float, idle_w: float, launch_s: float, src: str, notes: Mapping[str, str]
            ) -> DeviceSpec:
  """A spec whose numbers all come from ``src`` except those ``notes`` annotates (estimates)."""
  peak_note = notes.get("peak_flops_per_s", "dense, boost clock")
  return DeviceSpec(
      name=name, description=description,
      peak_flops_per_s={k: v * _T for k, v in peaks_t.items()},
      mem_bandwidth_bytes_per_s=bw_gb_s * _G, tdp_w=tdp_w, idle_power_w=idle_w,
      launch_overhead_s=launch_s,
      sources={"peak_flops_per_s": (f"{peak_note} ({src})" if peak_note.startswith("estimate")
                                    else f"{src} ({peak_note})"),
               "mem_bandwidth_bytes_per_s": notes.get("mem_bandwidth_bytes_per_s", src),
               "tdp_w": notes.get("tdp_w", src), "idle_power_w": notes.get("idle_power_w", _IDLE_NOTE),
               "launch_overhead_s": notes.get("launch_overhead_s", _DESKTOP_LAUNCH)})


_GEFORCE_NOTE = "dense; tensor f16/bf16 at the FP32-accumulate rate; boost clock, reference board"
_DC_NOTE = "dense = half the 'with sparsity' tensor figures"

_NVIDIA_CURRENT = (
    _nvidia("rtx2080ti", "NVIDIA GeForce RTX 2080 Ti (Turing TU102, 4352 CUDA cores, 1545 MHz "
            "boost, 11 GB GDDR6)", {"f32": 13.4, "f16": 53.8, "s8": 215.2}, 616, 250, 20, 5e-6,
            _TURING_WP, {"peak_flops_per_s": _GEFORCE_NOTE + "; no tf32/bf16 on Turing"}),
    _nvidia("rtx2080", "NVIDIA GeForce RTX 2080 (Turing TU104, 2944 CUDA cores, 1710 MHz boost, "
            "8 GB GDDR6)", {"f32": 10.1, "f16": 40.3, "s8": 161.1}, 448, 215, 15, 5e-6,
            _TURING_WP, {"peak_flops_per_s": _GEFORCE_NOTE + "; no tf32/bf16 on Turing"}),
    _nvidia("rtx3080", "NVIDIA GeForce RTX 3080 10 GB (Ampere GA102, 8704 CUDA cores, 1710 MHz "
            "boost, GDDR6X)", {"f32": 29.8, "tf32": 29.8, "f16": 59.5, "bf16": 59.5, "s8": 238},
            760, 320, 20, 5e-6, _GA102_WP, {"peak_flops_per_s": _GEFORCE_NOTE}),
    _nvidia("rtx3090", "NVIDIA GeForce RTX 3090 (Ampere GA102, 10496 CUDA cores, 1695 MHz boost, "
            "24 GB GDDR6X)", {"f32": 35.6, "tf32": 35.6, "f16": 71, "bf16": 71, "s8": 284},
            936, 350, 25, 5e-6, _GA102_WP, {"peak_flops_per_s": _GEFORCE_NOTE}),
    _nvidia("rtx4080", "NVIDIA GeForce RTX 4080 16 GB (Ada AD103, 9728 CUDA cores, 2505 MHz "
            "boost, GDDR6X)", {"f32": 48.7, "tf32": 48.7, "f16": 97.5, "bf16": 97.5, "f8": 194.9,
                               "s8": 389.9},
            716.8, 320, 15, 5e-6, _ADA_WP, {"peak_flops_per_s": _GEFORCE_NOTE}),
    _nvidia("rtx4090", "NVIDIA GeForce RTX 4090 (Ada AD102, 16384 CUDA cores, 2520 MHz boost, "
            "24 GB GDDR6X)", {"f32": 82.6, "tf32": 82.6, "f16": 165.2, "bf16": 165.2, "f8": 330.3,
                              "s8": 660.6},
            1008, 450, 25, 5e-6, _ADA_WP, {"peak_flops_per_s": _GEFORCE_NOTE}),
    _nvidia("a10", "NVIDIA A10 24 GB (Ampere GA102, PCIe, passive)",
            {"f32": 31.2, "tf32": 62.5, "f16": 125, "bf16": 125, "s8": 250}, 600, 150, 20, 4e-6,
            _A10_URL, {"peak_flops_per_s": _DC_NOTE, "launch_overhead_s": _LAUNCH_NOTE}),
    _nvidia("l4", "NVIDIA L4 24 GB (Ada AD104, PCIe low profile)",
            {"f32": 30.3, "tf32": 60, "f16": 121, "bf16": 121, "f8": 242.5, "s8": 242.5}, 300, 72,
            15, 4e-6, _L4_URL, {"peak_flops_per_s": _DC_NOTE, "launch_overhead_s": _LAUNCH_NOTE}),
    _nvidia("l40s", "NVIDIA L40S 48 GB (Ada AD102, PCIe)",
            {"f32": 91.6, "tf32": 183, "f16": 362, "bf16": 362, "f8": 733, "s8": 733}, 864, 350,
            35, 4e-6, _L40S_URL, {"peak_flops_per_s": _DC_NOTE + " (TF32/BF16 listed dense and "
                                  "sparse)", "launch_overhead_s": _LAUNCH_NOTE}),
    _nvidia("h200-sxm", "NVIDIA H200 SXM 141 GB (Hopper, HBM3e)",
            {"f64": 34, "f32": 67, "tf32": 494.5, "f16": 989.5, "bf16": 989.5, "f8": 1979,
             "s8": 1979}, 4800, 700, 120, 4e-6, _H200_URL,
            {"peak_flops_per_s": _DC_NOTE, "tdp_w": _H200_URL + " (up to 700 W, configurable)",
             "idle_power_w": "measured: NVML board power of one H200 SXM with a JAX process "
                             "attached and no work, 117.6-121.6 W over 2-3 s windows in three "
                             "readings (driver 580.159.04, 700 W limit; workspace/gpu_h200)",
             "launch_overhead_s": _LAUNCH_NOTE}),
    _nvidia("b200", "NVIDIA B200 (Blackwell, one GPU of an HGX B200 8-GPU board, HBM3e)",
            {"f64": 37, "f32": 75, "tf32": 1100, "f16": 2250, "bf16": 2250, "f8": 4500,
             "s8": 4500}, 8000, 1000, 100, 4e-6, _B200_URL,
            {"peak_flops_per_s": "estimate: the HGX B200 page gives 8-GPU totals with sparsity "
                                 "(TF32 18 PF, FP16/BF16 36 PF, FP8/INT8 72 PF, FP64 296 TF); "
                                 "divided by 8 and halved for dense; f32 (CUDA cores) is not "
                                 "published there: estimate",
             "mem_bandwidth_bytes_per_s": "estimate: " + _B200_URL + " (64 TB/s per 8-GPU board, "
                                          "/8)",
             "tdp_w": "estimate: 1000 W per GPU as configured in HGX B200 (vendor board power, "
                      "not a per-GPU datasheet figure)",
             "launch_overhead_s": _LAUNCH_NOTE}),
)
DEVICE_SPECS = {**DEVICE_SPECS, **{s.name: s for s in _NVIDIA_CURRENT}}

ESTIMATED_FIELDS: Mapping[str, tuple[str, ...]] = {
    name: tuple(f for f, src in s.sources.items() if src.startswith("estimate"))
    for name, s in DEVICE_SPECS.items()}
"""Spec name -> the fields whose value is an estimate (not a vendor figure)."""


def _normalize(name: str) -> str:
  return "".join(ch for ch in name.lower() if ch.isalnum())


def get_spec(name: str) -> DeviceSpec:
  """The spec called ``name`` (case, spaces, ``-`` and ``_`` ignored: ``"RTX 4090"`` works).

  Raises:
    KeyError: unknown name (the message lists the known ones).
  """
  if name in DEVICE_SPECS:
    return DEVICE_SPECS[name]
  by_norm = {_normalize(k): v for k, v in DEVICE_SPECS.items()}
  try:
    return by_norm[_normalize(name)]
  except KeyError:
    raise KeyError(f"unknown device spec {name!r}; known: {sorted(DEVICE_SPECS)}") from None
