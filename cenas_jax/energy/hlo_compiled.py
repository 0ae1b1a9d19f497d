"""Compiled mode: one kernel per launched instruction of the optimized HLO.

Every fusion, custom-call and unfused op of the entry computation (and of called/while
computations) of ``Compiled.as_text()`` is one kernel: what the compiler really launches on the
machine at hand. ``hlo.kernel_graph_from_module(..., mode="compiled")`` is the public form.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from cenas_jax.energy.hlo_cost import (
    DATA_MOVEMENT,
    FREE,
    LIB,
    NOOP_CUSTOM_CALLS,
    OWN,
    RED,
    Kernel,
    custom_class,
    custom_target,
    gemm_bmnk,
    op_cost,
    post_order,
    trip_count,
)
from cenas_jax.energy.hlo_ir import HloInstr, HloModuleIR, TensorType


def _fusion_class(instr: HloInstr, module: HloModuleIR) -> tuple[str, str]:
  kind = instr.attr("kind") or ""
  cfg = instr.attr("backend_config") or ""
  opcodes: set[str] = set()
  targets: list[str] = []
  stack = list(instr.called)
  while stack:
    comp = module.computations.get(stack.pop())
    if comp is None:
      continue
    for i in comp.instrs:
      opcodes.add(i.opcode)
      if i.opcode == "custom-call":
        targets.append(custom_target(i))
      if i.opcode == "fusion":
        stack.extend(i.called)
  m = re.search(r'"kind"\s*:\s*"([^"]+)"', cfg)
  label = m.group(1) if m else kind
  low = label.lower()
  if any(s in low for s in ("fmha", "attention")) or any(custom_class(t) == "attention"
                                                         for t in targets):
    return "attention", label
  if "convolution" in opcodes:
    return "conv", label
  if "dot" in opcodes or "gemm" in low or any(custom_class(t) == "gemm" for t in targets):
    return "gemm", label
  if "reduce" in opcodes or "scatter" in opcodes:
    return "reduction", label
  # kInput also holds XLA-GPU's transpose emitter (e.g. ``wrapped_transpose`` of a convolution's
  # weights into cuDNN's layout): data movement, not a reduction.
  if kind == "kInput" and not opcodes <= DATA_MOVEMENT:
    return "reduction", label
  if opcodes <= DATA_MOVEMENT:
    return "copy", label
  return "loop", label


def _computation_cost(comp_name: str, module: HloModuleIR, memo: dict) -> tuple[int, int, list]:
  """(flops, transcendentals, opcodes) of a fused computation, nested fusions included."""
  if comp_name in memo:
    return memo[comp_name]
  comp = module.computations[comp_name]
  by_name = comp.by_name()
  types = {i.name: i.type for i in comp.instrs}
  flops = trans = 0
  ops: list[str] = []
  for name in post_order([comp.root], lambda n: by_name[n].operands if n in by_name else ()):
    i = by_name[name]
    if i.opcode == "fusion":
      f, t, o = _computation_cost(i.called[0], module, memo)
      flops, trans = flops + f, trans + t
      ops.extend(o)
      continue
    f, t = op_cost(i, [types.get(o, TensorType("f32", ())) for o in i.operands])
    flops, trans = flops + f, trans + t
    if i.opcode not in FREE:
      ops.append(i.opcode)
  memo[comp_name] = (flops, trans, ops)
  return memo[comp_name]




def compiled_kernels(module: HloModuleIR) -> tuple[list[Kernel], list[tuple[int, int]], list[str]]:
  kernels: list[Kernel] = []
  edges: list[tuple[int, int]] = []
  warnings: list[str] = []
  memo: dict = {}

  def walk(comp_name: str, repeat: int, prefix_inputs: Mapping[str, int] | None = None) -> None:
    comp = module.computations[comp_name]
    by_name = comp.by_name()
    users: dict[str, list[str]] = {}
    for i in comp.instrs:
      for o in i.operands:
        users.setdefault(o, []).append(i.name)
    producer: dict[str, int] = {}  # instruction name -> kernel index (through free ops)
    order = post_order([comp.root], lambda n: by_name[n].operands if n in by_name else ())
    for name in order:
      instr = by_name[name]
      op = instr.opcode

      def src_kernels(names: Iterable[str]) -> set[int]:
        return {producer[o] for o in names if o in producer}

      if op in ("while",):
        trip = trip_count(instr)
        if trip is None:
          warnings.append(f"while loop {name}: trip count unknown, body counted once")
        cond, body = instr.attr("condition", "").lstrip("%"), instr.attr("body", "").lstrip("%")
        walk(body, repeat * (trip or 1))
        if cond in module.computations:
          walk(cond, repeat * (trip or 1))
        continue
      if op in ("call", "conditional"):
        if op == "conditional":
          warnings.append(f"conditional {name}: every branch counted")
        for c in instr.called:
          walk(c, repeat)
        continue
      if op in FREE or (op == "custom-call" and custom_target(instr) in NOOP_CUSTOM_CALLS):
        ks = src_kernels(instr.operands)
        if len(ks) == 1:
          producer[name] = next(iter(ks))
        continue
      in_types = [by_name[o].type if o in by_name else TensorType("f32", ()) for o in
                  instr.operands]
      if op == "fusion":
        cls, label = _fusion_class(instr, module)
        flops, trans, ops = _computation_cost(instr.called[0], module, memo)
      else:
        flops, trans = op_cost(instr, in_types)
        ops = [op]
        label = custom_target(instr) if op == "custom-call" else op
        if op == "dot":
          cls = "gemm"
        elif op == "convolution":
          cls = "conv"
        elif op == "custom-call":
          cls = custom_class(label)
        elif op in RED:
          cls = "reduction"
        elif op in ("copy", "transpose", "concatenate", "pad", "slice", "gather", "dynamic-slice",
                    "broadcast", "iota", "reverse", "convert"):
          cls = "copy"
        elif op in OWN or op in LIB:
          cls = "other"
        else:
          cls = "loop"
      bmnk = None
      if cls == "gemm" and op == "dot":
        bmnk = gemm_bmnk(instr, in_types[0], in_types[1])
      elif cls == "gemm":
        dot = _find_dot(instr, module)
        if dot is not None:
          dot_instr, lhs_t, rhs_t = dot
          bmnk = gemm_bmnk(dot_instr, lhs_t, rhs_t)
      seen_in: dict[str, TensorType] = {}
      for o in instr.operands:
        if o in by_name:
          src = _strip_free(o, by_name)
          t = by_name[src]
          if t.opcode == "constant" and t.type.elements <= 1:
            continue
          seen_in.setdefault(src, by_name[o].type)
      slice_users = [u for u in users.get(name, []) if by_name[u].opcode == "slice"]
      merged = len(slice_users) if cls == "gemm" and len(slice_users) >= 2 and len(
          slice_users) == len(users.get(name, [])) else 1
      idx = len(kernels)
      kernels.append(Kernel(
          name=name, kernel_class=cls, dtype=(in_types[0].dtype if cls in ("gemm", "conv") and
                                              in_types else instr.type.dtype),
          in_shapes=tuple(t.dims for t in seen_in.values()),
          out_shapes=tuple(t.dims for t in instr.types),
          flops=int(flops), transcendentals=int(trans),
          bytes_read=sum(t.nbytes for t in seen_in.values()), bytes_written=instr.out_bytes,
          fused_ops=tuple(ops), repeat=repeat, merged_count=merged, gemm_bmnk=bmnk, target=label,
          hlo_names=(name,)))
      for k in src_kernels(instr.operands):
        edges.append((k, idx))
      producer[name] = idx

  walk(module.entry, 1)
  return kernels, sorted(set(edges)), warnings


def _strip_free(name: str, by_name: Mapping[str, HloInstr]) -> str:
  while name in by_name and by_name[name].opcode in ("bitcast", "reshape", "get-tuple-element",
                                                     "copy") and by_name[name].operands:
    if by_name[name].opcode == "copy":
      break
    name = by_name[name].operands[0]
  return name


def _find_dot(instr: HloInstr, module: HloModuleIR) -> tuple[HloInstr, TensorType, TensorType] | None:
  """The dot inside a GEMM kernel with its operand types (None for opaque custom-calls)."""
  if instr.opcode == "dot":
    return None  # handled by caller through operand types below
  stack = list(instr.called)
  while stack:
    comp = module.computations.get(stack.pop())
    if comp is None:
      continue
    types = {i.name: i.type for i in comp.instrs}
    for i in comp.instrs:
      if i.opcode == "dot":
        return i, types[i.operands[0]], types[i.operands[1]]
      stack.extend(i.called)
  return None
