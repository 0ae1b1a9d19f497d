"""Per-op cost (XLA HloCostAnalysis convention) and the shared graph helpers of the HLO readers."""

from __future__ import annotations

from cenas_jax.energy.hlo_cost import Kernel, KernelGraph, gemm_bmnk, op_cost, post_order
from cenas_jax.energy.hlo_ir import HloInstr, TensorType


def _instr(opcode, dims, *attrs):
  return HloInstr("x", opcode, (TensorType("f32", dims),), ("a", "b"), tuple(attrs))


def test_op_cost_dot_conv_elementwise_transcendental_and_free():
  dot = _instr("dot", (4, 2), ("lhs_contracting_dims", "{1}"), ("rhs_contracting_dims", "{0}"))
  a, b = TensorType("f32", (4, 3)), TensorType("f32", (3, 2))
  assert op_cost(dot, [a, b]) == (2 * 4 * 2 * 3, 0)
  assert gemm_bmnk(dot, a, b) == (1, 4, 2, 3)
  conv = _instr("convolution", (1, 5, 5, 4), ("dim_labels", "b01f_01io->b01f"))
  assert op_cost(conv, [TensorType("f32", (1, 5, 5, 3)), TensorType("f32", (3, 3, 3, 4))]) == (
      2 * 100 * 27, 0)
  assert op_cost(_instr("add", (10,)), [TensorType("f32", (10,))] * 2) == (10, 0)
  assert op_cost(_instr("tanh", (10,)), [TensorType("f32", (10,))]) == (0, 10)
  assert op_cost(_instr("reshape", (10,)), [TensorType("f32", (2, 5))]) == (0, 0)


def test_post_order_visits_operands_first_once():
  graph = {"out": ["a", "b"], "a": ["p"], "b": ["a", "p"], "p": []}
  assert post_order(["out"], graph.__getitem__) == ["p", "a", "b", "out"]


def test_kernel_graph_counts_launches_by_class():
  k = Kernel("k", "gemm", "f32", ((2, 2),), ((2, 2),), 16, 0, 32, 16, repeat=3)
  graph = KernelGraph((k,), (), (), "gpu", "cuda", "", "ir")
  assert graph.count_by_class()["gemm"] == 3 and k.bytes_accessed == 48
