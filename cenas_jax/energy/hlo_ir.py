"""A small, read-only model of XLA HLO modules, built from text or from jaxlib's HLO objects.

Two readers produce the same ``HloModuleIR``:

- ``module_from_text(text)``: parses the HLO text grammar
  (``[ROOT ]%name = type[shape]{layout} opcode(operands), attr=value, ...`` inside
  ``[ENTRY ]%computation (...) -> ... {`` blocks). Works on the text of any XLA version.
- ``module_from_structured(module)``: walks ``jaxlib._hlo.HloModule`` (``computations()``,
  ``instructions()``, ``operands()``, ``users()``). That API gives structure and operand links but no
  shapes or attributes, so each instruction's own one-line ``to_string()`` is parsed for those.

Only what the kernel extractor needs is kept: names, opcodes, result types, operands, attributes and
the computations an instruction calls.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable, Mapping

# Bytes per element of each HLO primitive type (sub-byte types rounded up to one byte).
DTYPE_BYTES: Mapping[str, int] = {
    "pred": 1, "s2": 1, "s4": 1, "s8": 1, "s16": 2, "s32": 4, "s64": 8,
    "u2": 1, "u4": 1, "u8": 1, "u16": 2, "u32": 4, "u64": 8,
    "f4e2m1fn": 1, "f8e3m4": 1, "f8e4m3": 1, "f8e4m3fn": 1, "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1,
    "f8e5m2": 1, "f8e5m2fnuz": 1, "f8e8m0fnu": 1,
    "bf16": 2, "f16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16, "token": 0,
}

# Attributes whose value names other computations.
_CALL_ATTRS = ("calls", "to_apply", "body", "condition", "branch_computations",
               "true_computation", "false_computation", "called_computations")


class HloParseError(ValueError):
  """The HLO text (or one instruction of it) does not follow the grammar this reader knows."""


@dataclasses.dataclass(frozen=True)
class TensorType:
  """One array type, e.g. ``f32[8,32]``.

  Attributes:
    dtype: HLO primitive type name (``f32``, ``bf16``, ``pred``, ...).
    dims: dimension sizes (bounded dynamic dims ``<=8`` are taken at their bound).
  """

  dtype: str
  dims: tuple[int, ...]

  @property
  def elements(self) -> int:
    return math.prod(self.dims)

  @property
  def nbytes(self) -> int:
    """Size in bytes of a dense array of this type."""
    return self.elements * DTYPE_BYTES.get(self.dtype, 4)


@dataclasses.dataclass(frozen=True)
class HloInstr:
  """One HLO instruction.

  Attributes:
    name: instruction name without the ``%`` sigil.
    opcode: HLO opcode as written in text (``dot``, ``fusion``, ``custom-call``, ...).
    types: result types; one entry for an array, several for a tuple result.
    operands: operand instruction names, in order (empty for ``parameter``/``constant``).
    attrs: attributes as raw text, ``(key, value)`` pairs in order.
    called: names of the computations this instruction calls (fusion, reduce, while, call ...).
    literal: the text inside the parentheses for ``constant``/``parameter`` (value or index).
  """

  name: str
  opcode: str
  types: tuple[TensorType, ...]
  operands: tuple[str, ...]
  attrs: tuple[tuple[str, str], ...] = ()
  called: tuple[str, ...] = ()
  literal: str = ""

  def attr(self, key: str, default: str | None = None) -> str | None:
    for k, v in self.attrs:
      if k == key:
        return v
    return default

  @property
  def type(self) -> TensorType:
    """The first (for arrays: the only) result type."""
    return self.types[0] if self.types else TensorType("token", ())

  @property
  def out_bytes(self) -> int:
    return sum(t.nbytes for t in self.types)


@dataclasses.dataclass(frozen=True)
class HloComputationIR:
  """A computation: instructions in definition order plus the name of its root."""

  name: str
  instrs: tuple[HloInstr, ...]
  root: str

  def by_name(self) -> dict[str, HloInstr]:
    return {i.name: i for i in self.instrs}


@dataclasses.dataclass(frozen=True)
class HloModuleIR:
  """A module: its computations by name and the name of the entry computation."""

  name: str
  computations: Mapping[str, HloComputationIR]
  entry: str

  @property
  def entry_computation(self) -> HloComputationIR:
    return self.computations[self.entry]


# ----------------------------------------------------------------------------------------------------
# Low-level text helpers.


def _match_close(text: str, start: int) -> int:
  """Index just past the bracket that closes ``text[start]`` (quotes respected)."""
  pairs = {"(": ")", "[": "]", "{": "}"}
  stack = [pairs[text[start]]]
  i = start + 1
  in_str = False
  while i < len(text):
    c = text[i]
    if in_str:
      if c == "\\":
        i += 1
      elif c == '"':
        in_str = False
    elif c == '"':
      in_str = True
    elif c in pairs:
      stack.append(pairs[c])
    elif c == stack[-1]:
      stack.pop()
      if not stack:
        return i + 1
    i += 1
  raise HloParseError(f"unbalanced bracket in HLO text: {text[start:start + 80]!r}")


def split_top_level(text: str, sep: str = ",") -> list[str]:
  """Splits on ``sep`` outside brackets and quotes; strips the pieces; drops empty ones."""
  out, depth, cur, in_str, i = [], 0, [], False, 0
  while i < len(text):
    c = text[i]
    if in_str:
      cur.append(c)
      if c == "\\" and i + 1 < len(text):
        cur.append(text[i + 1])
        i += 1
      elif c == '"':
        in_str = False
    elif c == '"':
      in_str = True
      cur.append(c)
    elif c in "([{":
      depth += 1
      cur.append(c)
    elif c in ")]}":
      depth -= 1
      cur.append(c)
    elif c == sep and depth == 0:
      out.append("".join(cur).strip())
      cur = []
    else:
      cur.append(c)
    i += 1
  out.append("".join(cur).strip())
  return [p for p in out if p]


_ARRAY_RE = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")


def parse_types(text: str) -> tuple[TensorType, ...]:
  """Parses ``f32[8,32]{1,0}`` or ``(f32[8]{0}, s32[])`` (nested tuples are flattened)."""
  types = []
  for m in _ARRAY_RE.finditer(re.sub(r"\{[^{}]*\}", "", text)):
    dims = tuple(int(d.strip().lstrip("<=")) for d in m.group(2).split(",") if d.strip())
    types.append(TensorType(m.group(1), dims))
  return tuple(types)


def _read_type(rest: str) -> tuple[str, str]:
  """Splits ``rest`` into (type text, remainder) at the end of the leading result type."""
  rest = rest.lstrip()
  if rest.startswith("("):
    end = _match_close(rest, 0)
  else:
    m = re.match(r"[a-z][a-z0-9]*\[[^\]]*\]", rest)
    if not m:
      raise HloParseError(f"cannot read a result type at {rest[:60]!r}")
    end = m.end()
    if end < len(rest) and rest[end] == "{":
      end = _match_close(rest, end)
  return rest[:end], rest[end:].lstrip()


def _names(value: str) -> tuple[str, ...]:
  value = value.strip()
  if value.startswith("{"):
    value = value[1:-1]
  return tuple(v.strip().lstrip("%") for v in value.split(",") if v.strip())


_INSTR_RE = re.compile(r"^\s*(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")


def parse_instruction(line: str) -> tuple[HloInstr, bool]:
  """Parses one instruction line. Returns ``(instruction, is_root)``.

  Raises:
    HloParseError: the line is not an HLO instruction.
  """
  m = _INSTR_RE.match(line)
  if not m:
    raise HloParseError(f"not an HLO instruction: {line.strip()[:100]!r}")
  is_root, name, rest = bool(m.group(1)), m.group(2), m.group(3)
  type_text, rest = _read_type(rest)
  om = re.match(r"([a-z][a-z0-9\-]*)\(", rest)
  if not om:
    raise HloParseError(f"cannot read the opcode of {name!r}: {rest[:80]!r}")
  opcode = om.group(1)
  close = _match_close(rest, om.end() - 1)
  inner = rest[om.end():close - 1]
  literal = ""
  if opcode in ("constant", "parameter"):
    operands: tuple[str, ...] = ()
    literal = inner.strip()
  else:
    # Operands are ``%a`` or ``a`` or (older text) ``f32[8] %a``: the name is the last token.
    operands = tuple(p.split()[-1].lstrip("%") for p in split_top_level(inner))
  attrs = []
  called: list[str] = []
  for piece in split_top_level(rest[close:]):
    key, eq, value = piece.partition("=")
    if not eq:
      continue
    key = key.strip()
    attrs.append((key, value.strip()))
    if key in _CALL_ATTRS:
      called.extend(_names(value))
  return HloInstr(name, opcode, parse_types(type_text), operands, tuple(attrs), tuple(called),
                  literal), is_root


_COMMENT_RE = re.compile(r"/\*.*?\*/")
_HEADER_RE = re.compile(r"^\s*(ENTRY\s+)?%?([^\s(=]+)\s*(\(.*\))?\s*(->.*)?\{\s*$")


def module_from_text(text: str) -> HloModuleIR:
  """Parses HLO module text (un-optimized ``as_hlo_text()`` or optimized ``as_text()``).

  Raises:
    HloParseError: the text holds no computation, no entry, or a malformed instruction.
  """
  name = "module"
  comps: dict[str, HloComputationIR] = {}
  entry = None
  cur_name, cur_instrs, cur_root, cur_entry = None, [], None, False
  # Newer XLA prints position comments (``/*index=5*/``) inside long operand and tuple lists.
  text = _COMMENT_RE.sub("", text)
  for lineno, line in enumerate(text.splitlines(), start=1):
    stripped = line.strip()
    if cur_name is None:
      if stripped.startswith("HloModule "):
        name = stripped.split()[1].rstrip(",")
        continue
      if stripped.endswith("{") and " = " not in stripped.split("(")[0]:
        hm = _HEADER_RE.match(stripped)
        if hm:
          cur_name, cur_instrs, cur_root = hm.group(2), [], None
          cur_entry = bool(hm.group(1))
      continue
    if stripped == "}":
      if not cur_instrs:
        raise HloParseError(f"computation {cur_name!r} has no instructions")
      root = cur_root or cur_instrs[-1].name
      comps[cur_name] = HloComputationIR(cur_name, tuple(cur_instrs), root)
      if cur_entry:
        entry = cur_name
      cur_name = None
      continue
    if not stripped:
      continue
    try:
      instr, is_root = parse_instruction(stripped)
    except HloParseError as e:
      raise HloParseError(f"line {lineno}: {e}") from None
    cur_instrs.append(instr)
    if is_root:
      cur_root = instr.name
  if not comps:
    raise HloParseError("no HLO computation found in the text (is it StableHLO/MLIR text?)")
  if entry is None:
    entry = _guess_entry(comps)
  return HloModuleIR(name, comps, entry)


def _guess_entry(comps: Mapping[str, HloComputationIR]) -> str:
  called = {c for comp in comps.values() for i in comp.instrs for c in i.called}
  free = [n for n in comps if n not in called]
  if not free:
    raise HloParseError("cannot tell the entry computation (every computation is called)")
  return free[-1]


def module_from_structured(module: Any) -> HloModuleIR:
  """Builds the IR from a ``jaxlib._hlo.HloModule`` (structured API; shapes from ``to_string``).

  Raises:
    HloParseError: an instruction's text cannot be read.
    AttributeError: the object lacks the expected API (caller falls back to text).
  """
  comps: dict[str, HloComputationIR] = {}
  for comp in module.computations():
    instrs = []
    sinks = []
    for inst in comp.instructions():
      parsed, _ = parse_instruction(inst.to_string())
      operands = parsed.operands
      if parsed.opcode not in ("constant", "parameter"):
        operands = tuple(o.name for o in inst.operands())
      instrs.append(dataclasses.replace(parsed, name=inst.name, operands=operands))
      if not inst.users():
        sinks.append(inst.name)
    root = sinks[-1] if sinks else instrs[-1].name
    comps[comp.name] = HloComputationIR(comp.name, tuple(instrs), root)
  if not comps:
    raise HloParseError("the HLO module has no computations")
  return HloModuleIR(module.name, comps, _guess_entry(comps))


def iter_instrs(module: HloModuleIR) -> Iterable[HloInstr]:
  for comp in module.computations.values():
    yield from comp.instrs
