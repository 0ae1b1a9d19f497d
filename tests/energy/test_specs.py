"""Tests of the device-spec table (cenas_jax.energy.specs)."""

from __future__ import annotations

import dataclasses

import pytest

from cenas_jax.energy import specs


def test_required_devices_present():
  assert set(specs.DEVICE_SPECS) == {
      "h100-sxm", "a100-sxm4-40gb", "v100-sxm2", "jetson-agx-orin", "jetson-tx2", "rtx2080ti",
      "rtx2080", "rtx3080", "rtx3090", "rtx4080", "rtx4090", "a10", "l4", "l40s", "h200-sxm",
      "b200"}
  for name, spec in specs.DEVICE_SPECS.items():
    assert spec.name == name


@pytest.mark.parametrize("name", sorted(specs.DEVICE_SPECS))
def test_every_number_has_a_source(name):
  spec = specs.DEVICE_SPECS[name]
  numeric = [f.name for f in dataclasses.fields(spec) if f.name not in ("name", "description",
                                                                         "sources")]
  for field in numeric:
    src = spec.sources[field]
    assert src.startswith(("https://", "estimate", "measured:")), (name, field, src)
  assert spec.tdp_w > spec.idle_power_w > 0
  assert spec.mem_bandwidth_bytes_per_s > 1e10 and spec.launch_overhead_s > 0
  assert all(v > 0 for v in spec.peak_flops_per_s.values())


def test_spec_ordering_is_plausible():
  d = specs.DEVICE_SPECS
  bw = [d[n].mem_bandwidth_bytes_per_s for n in ("h100-sxm", "a100-sxm4-40gb", "v100-sxm2",
                                                  "jetson-agx-orin", "jetson-tx2")]
  assert bw == sorted(bw, reverse=True)
  assert d["h100-sxm"].peak_flops_per_s["bf16"] == pytest.approx(989.4e12)
  assert d["jetson-tx2"].peak_flops_per_s["f16"] == pytest.approx(1.33e12)


def test_peak_for_picks_tensor_or_cuda_core_rate():
  h100 = specs.DEVICE_SPECS["h100-sxm"]
  assert h100.peak_for("f32", "gemm") == h100.peak_flops_per_s["tf32"]
  assert h100.peak_for("bf16", "conv") == h100.peak_flops_per_s["bf16"]
  assert h100.peak_for("f32", "loop") == h100.peak_flops_per_s["f32"]
  assert h100.peak_for("bf16", "reduction") == h100.peak_flops_per_s["f32"]
  v100 = specs.DEVICE_SPECS["v100-sxm2"]
  assert v100.peak_for("f32", "gemm") == v100.peak_flops_per_s["f32"]  # no TF32 on Volta
  tx2 = specs.DEVICE_SPECS["jetson-tx2"]
  assert tx2.peak_for("s8", "gemm") == tx2.peak_flops_per_s["f32"]


def test_dict_roundtrip_and_unknown_name():
  spec = specs.DEVICE_SPECS["jetson-agx-orin"]
  assert specs.DeviceSpec.from_dict(spec.to_dict()) == spec
  with pytest.raises(KeyError, match="known"):
    specs.get_spec("rtx-9090")


def test_current_nvidia_parts_by_loose_name_and_estimates_marked():
  assert specs.get_spec("RTX 4090") is specs.get_spec("rtx4090") is specs.get_spec("rtx-4090")
  rtx = specs.get_spec("rtx4090")
  assert rtx.peak_flops_per_s["f32"] == pytest.approx(82.6e12)
  assert rtx.peak_for("f32", "gemm") == pytest.approx(82.6e12)  # GeForce TF32 = FP32-acc rate
  assert rtx.mem_bandwidth_bytes_per_s == pytest.approx(1008e9)
  assert specs.get_spec("h200-sxm").mem_bandwidth_bytes_per_s == pytest.approx(4.8e12)
  # Idle power and launch gap are never vendor figures (estimates, or our own measurement);
  # B200's per-GPU rates are derived.
  for name, fields in specs.ESTIMATED_FIELDS.items():
    spec = specs.get_spec(name)
    assert all(f in fields or spec.sources[f].startswith("measured:")
               for f in ("idle_power_w", "launch_overhead_s")), name
  assert specs.get_spec("h200-sxm").sources["idle_power_w"].startswith("measured:")
  assert "peak_flops_per_s" in specs.ESTIMATED_FIELDS["b200"]
  assert "peak_flops_per_s" not in specs.ESTIMATED_FIELDS["rtx4090"]
  # Desktop parts: bandwidth ordering across generations as published.
  bw = [specs.get_spec(n).mem_bandwidth_bytes_per_s for n in ("rtx2080", "rtx2080ti", "rtx3090",
                                                              "rtx4090")]
  assert bw == sorted(bw)
