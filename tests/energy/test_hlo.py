"""Tests of HLO kernel extraction (cenas_jax.energy.hlo / hlo_ir) on tiny known functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cenas_jax.energy import hlo, hlo_ir
from cenas_jax.energy.hlo import GpuFusionConfig


def dense_relu(x, w, b):
  return jax.nn.relu(x @ w + b)


def attention(x, wq, wk, wv, wo):
  q, k, v = x @ wq, x @ wk, x @ wv
  p = jax.nn.softmax((q @ k.T) * 0.125, axis=-1)
  return (p @ v) @ wo


def conv_bn_relu(x, kernel, mean, var, gamma, beta):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = (y - mean) * jax.lax.rsqrt(var + 1e-5) * gamma + beta
  return jax.nn.relu(y)


def conv_bias_relu(x, kernel, bias):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y + bias)


def _f32(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


DENSE_ARGS = (_f32(8, 16), _f32(16, 32), _f32(32))
ATTN_ARGS = (_f32(16, 32),) + (_f32(32, 32),) * 4
CONV_ARGS = (_f32(2, 8, 8, 4), _f32(3, 3, 4, 16)) + (_f32(16),) * 4


def _classes(kernels):
  return [k.kernel_class for k in kernels]


# ---------------------------------------------------------------------------------------------------
# gpu mode: XLA-GPU fusion rules on the un-optimized HLO lowered for cuda.


def test_dense_relu_gpu_is_one_gemm_with_bias_relu_epilogue():
  g = hlo.extract_kernel_graph(dense_relu, *DENSE_ARGS, mode="gpu")
  assert g.lowered_for == "cuda"
  assert len(g.kernels) == 1
  k = g.kernels[0]
  assert k.kernel_class == "gemm"
  assert k.epilogue == ("bias", "relu")
  assert k.target == "__cublas$lt$matmul"
  assert k.gemm_bmnk == (1, 8, 32, 16)
  assert k.flops == 2 * 8 * 32 * 16 + 8 * 32 + 8 * 32  # GEMM + bias add + max
  assert k.bytes_read == (8 * 16 + 16 * 32 + 32) * 4
  assert k.bytes_written == 8 * 32 * 4
  assert k.in_shapes == ((8, 16), (16, 32), (32,))


def test_dense_relu_gpu_without_cublaslt_is_gemm_plus_loop():
  ks = hlo.extract_kernels(dense_relu, *DENSE_ARGS, mode="gpu",
                           config=GpuFusionConfig(cublaslt_epilogues=False))
  assert _classes(ks) == ["gemm", "loop"]
  assert ks[0].epilogue == () and ks[0].target == "__cublas$gemm"
  assert ks[1].fused_ops.count("maximum") == 1 and "add" in ks[1].fused_ops
  assert ks[1].bytes_read == (8 * 32 + 32) * 4  # GEMM output + bias vector


def test_attention_gpu_merges_qkv_into_one_gemm():
  g = hlo.extract_kernel_graph(attention, *ATTN_ARGS, mode="gpu")
  assert _classes(g.kernels) == ["copy", "gemm", "gemm", "reduction", "reduction", "loop", "gemm",
                                 "gemm"]
  assert len(g.merge_groups) == 1 and len(g.merge_groups[0]) == 3
  concat, qkv, scores = g.kernels[:3]
  assert concat.fused_ops == ("concatenate",) and concat.out_shapes == ((32, 96),)
  assert qkv.merged_count == 3 and qkv.gemm_bmnk == (1, 16, 96, 32)
  assert qkv.flops == 3 * 2 * 16 * 32 * 32
  assert scores.epilogue == ("alpha",) and scores.gemm_bmnk == (1, 16, 16, 32)
  # Softmax: max-reduce, exp fused into the sum-reduce (multi-output), divide loop.
  assert g.kernels[4].transcendentals == 16 * 16
  assert len(g.kernels[4].out_shapes) == 2
  assert g.kernels[5].fused_ops[-1] == "divide"
  assert g.count_by_class() == {"gemm": 4, "conv": 0, "attention": 0, "loop": 1, "reduction": 2,
                                "copy": 1, "other": 0}
  # Edges follow the data flow: concat -> merged GEMM -> scores GEMM.
  assert (0, 1) in g.edges and (1, 2) in g.edges


def test_attention_gpu_without_dot_merger_has_three_projection_gemms():
  ks = hlo.extract_kernels(attention, *ATTN_ARGS, mode="gpu",
                           config=GpuFusionConfig(dot_merger_threshold_bytes=0))
  assert _classes(ks).count("gemm") == 6
  assert len(ks) == 9 and all(k.merged_count == 1 for k in ks)


def test_dot_merger_respects_threshold():
  # Each projection moves (16*32 + 32*32 + 16*32) * 4 = 8 KiB; a 1 KiB limit blocks the merge.
  g = hlo.extract_kernel_graph(attention, *ATTN_ARGS, mode="gpu",
                               config=GpuFusionConfig(dot_merger_threshold_bytes=1024))
  assert g.merge_groups == ()


def test_conv_bn_relu_gpu_is_conv_plus_one_loop_fusion():
  ks = hlo.extract_kernels(conv_bn_relu, *CONV_ARGS, mode="gpu")
  assert _classes(ks) == ["conv", "loop"]
  conv, bn = ks
  assert conv.flops == 2 * (2 * 8 * 8 * 16) * (3 * 3 * 4)
  assert conv.target == "__cudnn$convForward"
  assert bn.transcendentals == 16  # rsqrt of the per-channel variance
  assert bn.out_shapes == ((2, 8, 8, 16),)


def test_conv_bias_relu_gpu_is_one_fused_cudnn_call():
  ks = hlo.extract_kernels(conv_bias_relu, _f32(2, 8, 8, 4), _f32(3, 3, 4, 16), _f32(16),
                           mode="gpu")
  assert len(ks) == 1
  assert ks[0].epilogue == ("bias", "relu")
  assert ks[0].target == "__cudnn$convBiasActivationForward"


def test_cse_merges_duplicate_relus():
  def two_branches(x, w1, w2):
    return jax.nn.relu(x) @ w1 + jax.nn.relu(x) @ w2

  ks = hlo.extract_kernels(two_branches, _f32(4, 8), _f32(8, 8), _f32(8, 8), mode="gpu")
  # relu(x) once (CSE), one merged GEMM (shared operand), its weight concat, one add loop.
  assert sorted(_classes(ks)) == ["copy", "gemm", "loop", "loop"]
  assert sum(k.fused_ops.count("maximum") for k in ks) == 1


def test_elementwise_chain_is_one_loop_kernel_and_outputs_are_materialized():
  def chain(x):
    y = jnp.tanh(x) * 2.0 + 1.0
    return y, jnp.exp(y)

  ks = hlo.extract_kernels(chain, _f32(64), mode="gpu")
  assert [k.kernel_class for k in ks] == ["loop", "loop"]
  # y is an output; exp(y) reads it back rather than recomputing tanh.
  assert ks[1].bytes_read == 64 * 4
  assert ks[0].transcendentals == 64 and ks[1].transcendentals == 64


def test_while_loop_body_repeats_with_known_trip_count():
  def loop(x):
    return jax.lax.fori_loop(0, 5, lambda i, v: jnp.sin(v) * 2.0, x)

  g = hlo.extract_kernel_graph(loop, _f32(32), mode="compiled")
  assert any(k.repeat == 5 for k in g.kernels)
  assert not any("trip count unknown" in w for w in g.warnings)


def test_gpu_mode_uses_static_kwargs():
  def scaled(x, *, relu):
    return jax.nn.relu(x * 3.0) if relu else x * 3.0

  with_relu = hlo.extract_kernels(scaled, _f32(16), mode="gpu", relu=True)
  without = hlo.extract_kernels(scaled, _f32(16), mode="gpu", relu=False)
  assert "maximum" in with_relu[0].fused_ops and "maximum" not in without[0].fused_ops


# ---------------------------------------------------------------------------------------------------
# compiled mode (CPU backend here) and parser agreement.


@pytest.mark.parametrize("fn,args,count", [(dense_relu, DENSE_ARGS, 2), (attention, ATTN_ARGS, 10),
                                           (conv_bn_relu, CONV_ARGS, 3)])
def test_compiled_cpu_kernel_counts(fn, args, count):
  ks = hlo.extract_kernels(fn, *args, mode="compiled")
  assert len(ks) == count
  assert sum(k.kernel_class in ("gemm", "conv") for k in ks) == {2: 1, 10: 6, 3: 1}[count]


@pytest.mark.parametrize("mode", ["gpu", "compiled"])
@pytest.mark.parametrize("fn,args", [(dense_relu, DENSE_ARGS), (attention, ATTN_ARGS),
                                     (conv_bn_relu, CONV_ARGS)])
def test_structured_and_text_parsers_agree(mode, fn, args):
  s = hlo.extract_kernel_graph(fn, *args, mode=mode, parser="structured")
  t = hlo.extract_kernel_graph(fn, *args, mode=mode, parser="text")
  assert s.parser == "structured" and t.parser == "text"
  assert s.kernels == t.kernels and s.edges == t.edges


def test_results_are_cached_by_hlo_fingerprint():
  hlo.clear_cache()
  a = hlo.extract_kernel_graph(dense_relu, *DENSE_ARGS, mode="gpu")
  b = hlo.extract_kernel_graph(dense_relu, *DENSE_ARGS, mode="gpu")
  assert a is b and len(a.fingerprint) == 64


def test_bad_mode_is_rejected():
  with pytest.raises(ValueError, match="mode"):
    hlo.extract_kernels(dense_relu, *DENSE_ARGS, mode="tpu")


# ---------------------------------------------------------------------------------------------------
# The text reader on hand-written XLA-GPU optimized HLO.

GPU_OPTIMIZED_HLO = """\
HloModule jit_mlp, entry_computation_layout={(f32[8,16]{1,0}, f32[16,32]{1,0})->f32[8]{0}}

%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add = f32[] add(f32[] %a, f32[] %b)
}

%fused_reduce (p0: f32[8,32]) -> f32[8] {
  %p0 = f32[8,32]{1,0} parameter(0)
  %e = f32[8,32]{1,0} exponential(%p0)
  %c = f32[] constant(0)
  ROOT %r = f32[8]{0} reduce(%e, %c), dimensions={1}, to_apply=%region_add
}

ENTRY %main (x: f32[8,16], w: f32[16,32]) -> f32[8] {
  %x = f32[8,16]{1,0} parameter(0)
  %w = f32[16,32]{1,0} parameter(1)
  %gemm = (f32[8,32]{1,0}, s8[4194304]{0}) custom-call(%x, %w), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"epilogue":"RELU"}}
  %gte = f32[8,32]{1,0} get-tuple-element(%gemm), index=0
  ROOT %reduce_fusion = f32[8]{0} fusion(%gte), kind=kInput, calls=%fused_reduce
}
"""


def test_text_reader_on_gpu_optimized_hlo():
  module = hlo_ir.module_from_text(GPU_OPTIMIZED_HLO)
  assert module.entry == "main" and module.name == "jit_mlp"
  g = hlo.kernel_graph_from_hlo(GPU_OPTIMIZED_HLO, mode="compiled", parser="text")
  assert _classes(g.kernels) == ["gemm", "reduction"]
  gemm, red = g.kernels
  assert gemm.target == "__cublas$lt$matmul"
  assert red.transcendentals == 8 * 32 and red.flops == 8 * 32
  assert red.bytes_read == 8 * 32 * 4 and red.bytes_written == 8 * 4
  assert g.edges == ((0, 1),)


def test_text_reader_ignores_position_comments_of_newer_xla():
  """XLA 0.11's optimized HLO writes ``/*index=5*/`` inside long operand and tuple lists."""
  commented = GPU_OPTIMIZED_HLO.replace("custom-call(%x, %w)", "custom-call(%x, /*index=1*/%w)").replace(
      "(f32[8,32]{1,0}, s8[4194304]{0})", "(f32[8,32]{1,0}, /*index=1*/s8[4194304]{0})")
  assert commented != GPU_OPTIMIZED_HLO
  plain = hlo.kernel_graph_from_hlo(GPU_OPTIMIZED_HLO, mode="compiled", parser="text")
  assert hlo.kernel_graph_from_hlo(commented, mode="compiled", parser="text").kernels == plain.kernels


TRANSPOSE_HLO = """\
HloModule jit_conv_weights

%wrapped_transpose_computation (p: f32[3,3,16,32]) -> f32[32,3,3,16] {
  %p = f32[3,3,16,32]{3,2,1,0} parameter(0)
  ROOT %t = f32[32,3,3,16]{3,2,1,0} transpose(%p), dimensions={3,0,1,2}
}

ENTRY %main (w: f32[3,3,16,32]) -> f32[32,3,3,16] {
  %w = f32[3,3,16,32]{3,2,1,0} parameter(0)
  ROOT %wrapped_transpose = f32[32,3,3,16]{3,2,1,0} fusion(%w), kind=kInput, calls=%wrapped_transpose_computation
}
"""


def test_xla_gpu_transpose_emitter_fusion_is_data_movement_not_a_reduction():
  """XLA-GPU runs transposes (here a conv's weights into cuDNN's layout) as kInput fusions."""
  g = hlo.kernel_graph_from_hlo(TRANSPOSE_HLO, mode="compiled", parser="text")
  assert _classes(g.kernels) == ["copy"]


def test_parse_instruction_forms():
  instr, root = hlo_ir.parse_instruction(
      "ROOT %t = (f32[2,3]{1,0}, s32[]) tuple(f32[2,3]{1,0} %a, s32[] %b), metadata={op_name=\"x, y\"}")
  assert root and instr.opcode == "tuple" and instr.operands == ("a", "b")
  assert instr.types == (hlo_ir.TensorType("f32", (2, 3)), hlo_ir.TensorType("s32", ()))
  instr, root = hlo_ir.parse_instruction(
      "fusion.1 = bf16[4,8]{1,0:T(8,128)(2,1)} fusion(p.1, p.2), kind=kLoop, calls=fused.3")
  assert not root and instr.called == ("fused.3",) and instr.attr("kind") == "kLoop"
  assert instr.type.nbytes == 4 * 8 * 2
  instr, _ = hlo_ir.parse_instruction("c = f32[] constant(-inf)")
  assert instr.operands == () and instr.literal == "-inf"


def test_text_reader_rejects_stablehlo_and_garbage():
  with pytest.raises(hlo_ir.HloParseError, match="no HLO computation"):
    hlo_ir.module_from_text("module @jit_f { func.func public @main() { } }")
  with pytest.raises(hlo_ir.HloParseError, match="line 2"):
    hlo_ir.module_from_text("ENTRY %m {\n  this is not hlo\n}\n")
