"""The NAS-Bench-201 cell search space and its encodings.

A NAS-Bench-201 (NB201) cell is a DAG with 4 nodes (node 0 is the cell input, node 3 the output) and
6 edges, each carrying one of 5 operations. Edge order (e1..e6) and op order are fixed everywhere in
this library:

- Edges, as ``(to_node, from_node)``: e1 = 1<-0, e2 = 2<-0, e3 = 2<-1, e4 = 3<-0, e5 = 3<-1,
  e6 = 3<-2. This is the order in which the NB201 arch string lists them.
- Ops (index: name): 0 ``none``, 1 ``skip_connect``, 2 ``nor_conv_1x1``, 3 ``nor_conv_3x3``,
  4 ``avg_pool_3x3``.

Three equivalent forms of a cell:

- **arch string** (NB201 / NATS-Bench / HW-NAS-Bench)::

    |e1~0|+|e2~0|e3~1|+|e4~0|e5~1|e6~2|

  e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|``
  ``nor_conv_1x1~2|`` (one string, split here for width).
- **ops tuple**: 6 op indices in edge order, e.g. ``(3, 3, 3, 1, 3, 2)``.
- **genotype string**: Python ``str()`` of the NB201 genotype list, the key format of the
  few-shot-NAS supernet tables, e.g. (one string, split here for width)::

    [(('nor_conv_3x3', 0),), (('nor_conv_3x3', 0), ('nor_conv_3x3', 1)),
     (('skip_connect', 0), ('nor_conv_3x3', 1), ('nor_conv_1x1', 2))]

All conversions are pure functions; malformed input raises ``ValueError`` naming the string and the
expected format. Only numpy is used (no JAX), so importing this module is cheap.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""Op vocabulary in index order."""

EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""The 6 edges e1..e6 as ``(to_node, from_node)``."""

NUM_EDGES = 6
NUM_OPS = 5
NUM_NODES = 4
NUM_ARCHS = NUM_OPS**NUM_EDGES  # 15,625
ONE_HOT_SIZE = NUM_EDGES * NUM_OPS  # 30

OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPS)}

NONE, SKIP, CONV1X1, CONV3X3, AVG_POOL = (OP_INDEX[name] for name in OPS)
"""Op indices by name, for code that builds or inspects cells."""

ARCH_STR_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op in " + ", ".join(OPS)
GENOTYPE_STR_FORMAT = (
    "[((op, 0),), ((op, 0), (op, 1)), ((op, 0), (op, 1), (op, 2))] (Python str() of the genotype "
    "list, op a quoted name in " + ", ".join(OPS) + ")"
)

Ops = tuple[int, int, int, int, int, int]


# ------------------------------------------------------------------------------------------------
# Validation helpers.


def _short(s: object, limit: int = 200) -> str:
  text = repr(s)
  return text if len(text) <= limit else text[:limit] + "...'"


def validate_ops(ops: Sequence[int]) -> Ops:
  """Returns ``ops`` as a tuple of 6 Python ints, each in ``[0, 5)``.

  Args:
    ops: 6 op indices in edge order e1..e6 (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

  Raises:
    ValueError: wrong length, non-integer entries or indices out of range.
  """
  try:
    values = tuple(ops)
  except TypeError:
    raise ValueError(
        f"NB201 ops {_short(ops)} must be a sequence of {NUM_EDGES} op indices in [0, {NUM_OPS})."
    ) from None
  if len(values) != NUM_EDGES:
    raise ValueError(
        f"NB201 ops {_short(ops)} has {len(values)} entries; expected {NUM_EDGES} op indices in "
        f"edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."
    )
  out = []
  for v in values:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
      raise ValueError(f"NB201 ops {_short(ops)}: entry {v!r} is not an integer op index.")
    if not 0 <= int(v) < NUM_OPS:
      raise ValueError(
          f"NB201 ops {_short(ops)}: op index {int(v)} is out of range [0, {NUM_OPS}) "
          f"(ops are {OPS})."
      )
    out.append(int(v))
  return tuple(out)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# Arch string <-> ops.


def _format_arch_str(ops: Ops) -> str:
  o = [OPS[i] for i in ops]
  return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def ops_to_arch_str(ops: Sequence[int]) -> str:
  """Formats 6 op indices (edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) as an NB201 arch string."""
  return _format_arch_str(validate_ops(ops))


def _parse_arch_str(arch_str: str) -> Ops:
  """Slow, strict parser; gives a precise reason for malformed strings."""

  def fail(reason: str) -> ValueError:
    return ValueError(
        f"Malformed NB201 arch string {_short(arch_str)}: {reason}. Expected {ARCH_STR_FORMAT}."
    )

  if not isinstance(arch_str, str):
    raise ValueError(
        f"NB201 arch string must be a str, got {type(arch_str).__name__} {_short(arch_str)}. "
        f"Expected {ARCH_STR_FORMAT}."
    )
  nodes = arch_str.split("+")
  if len(nodes) != NUM_NODES - 1:
    raise fail(f"found {len(nodes)} '+'-separated node groups, expected {NUM_NODES - 1}")
  ops: list[int] = []
  for to_node, group in enumerate(nodes, start=1):
    if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
      raise fail(f"node group {to_node} ({group!r}) must start and end with '|'")
    items = group[1:-1].split("|")
    if len(items) != to_node:
      raise fail(f"node {to_node} has {len(items)} input edges, expected {to_node}")
    for from_node, item in enumerate(items):
      name, sep, src = item.partition("~")
      if not sep:
        raise fail(f"edge {item!r} is not of the form op~input")
      if src != str(from_node):
        raise fail(f"edge {item!r} of node {to_node} must come from node {from_node}")
      if name not in OP_INDEX:
        raise fail(f"unknown op {name!r}")
      ops.append(OP_INDEX[name])
  return tuple(ops)  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _arch_str_table() -> dict[str, Ops]:
  return {_format_arch_str(ops): ops for ops in itertools.product(range(NUM_OPS), repeat=NUM_EDGES)}


def arch_str_to_ops(arch_str: str) -> Ops:
  """Parses an NB201 arch string into 6 op indices in edge order e1..e6.

  Args:
    arch_str: e.g. ``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|...~0|...~1|...~2|``.

  Returns:
    The op indices for edges (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

  Raises:
    ValueError: the string is not a well-formed NB201 arch string (the message names it).
  """
  try:
    return _arch_str_table()[arch_str]
  except (KeyError, TypeError):
    return _parse_arch_str(arch_str)  # Raises with a precise reason (or accepts: never here).


# ------------------------------------------------------------------------------------------------
# Genotype string <-> ops.


def _genotype(ops: Ops) -> list[tuple[tuple[str, int], ...]]:
  o = [OPS[i] for i in ops]
  return [
      ((o[0], 0),),
      ((o[1], 0), (o[2], 1)),
      ((o[3], 0), (o[4], 1), (o[5], 2)),
  ]


def _format_genotype_str(ops: Ops) -> str:
  o = [OPS[i] for i in ops]
  return (f"[(('{o[0]}', 0),), (('{o[1]}', 0), ('{o[2]}', 1)), "
          f"(('{o[3]}', 0), ('{o[4]}', 1), ('{o[5]}', 2))]")


def ops_to_genotype(ops: Sequence[int]) -> list[tuple[tuple[str, int], ...]]:
  """The NB201 genotype list of a cell: per node 1..3, a tuple of ``(op_name, input_node)``."""
  return _genotype(validate_ops(ops))


def ops_to_genotype_str(ops: Sequence[int]) -> str:
  """Python ``str()`` of the genotype list (the key format of the few-shot-NAS JSON tables)."""
  return _format_genotype_str(validate_ops(ops))


def _parse_genotype_str(genotype_str: str) -> Ops:
  def fail(reason: str) -> ValueError:
    return ValueError(
        f"Malformed NB201 genotype string {_short(genotype_str)}: {reason}. "
        f"Expected {GENOTYPE_STR_FORMAT}."
    )

  if not isinstance(genotype_str, str):
    raise ValueError(
        f"NB201 genotype string must be a str, got {type(genotype_str).__name__} "
        f"{_short(genotype_str)}. Expected {GENOTYPE_STR_FORMAT}."
    )
  try:
    value = ast.literal_eval(genotype_str)
  except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
    raise fail(f"not a Python literal ({type(e).__name__})") from None
  if not isinstance(value, (list, tuple)) or len(value) != NUM_NODES - 1:
    raise fail(f"expected a list of {NUM_NODES - 1} node tuples")
  ops: list[int] = []
  for to_node, node in enumerate(value, start=1):
    if not isinstance(node, (list, tuple)) or len(node) != to_node:
      raise fail(f"node {to_node} must be a tuple of {to_node} (op, input) pairs")
    for from_node, edge in enumerate(node):
      if not isinstance(edge, (list, tuple)) or len(edge) != 2:
        raise fail(f"edge {edge!r} of node {to_node} is not an (op, input) pair")
      name, src = edge
      if isinstance(src, bool) or src != from_node:
        raise fail(f"edge {edge!r} of node {to_node} must come from node {from_node}")
      if name not in OP_INDEX:
        raise fail(f"unknown op {name!r}")
      ops.append(OP_INDEX[name])
  return tuple(ops)  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _genotype_str_table() -> dict[str, Ops]:
  return {
      _format_genotype_str(ops): ops
      for ops in itertools.product(range(NUM_OPS), repeat=NUM_EDGES)
  }


def genotype_str_to_ops(genotype_str: str) -> Ops:
  """Parses a genotype string (``str()`` of the NB201 genotype list) into 6 op indices.

  Canonical strings (exactly as Python prints them) are looked up in a table; other spellings of the
  same literal (different spaces or quotes) are parsed with ``ast.literal_eval``.

  Raises:
    ValueError: the string is not a well-formed genotype (the message names it).
  """
  try:
    return _genotype_str_table()[genotype_str]
  except (KeyError, TypeError):
    return _parse_genotype_str(genotype_str)


def arch_str_to_genotype_str(arch_str: str) -> str:
  """NB201 arch string -> genotype string."""
  return ops_to_genotype_str(arch_str_to_ops(arch_str))


def genotype_str_to_arch_str(genotype_str: str) -> str:
  """Genotype string -> NB201 arch string."""
  return ops_to_arch_str(genotype_str_to_ops(genotype_str))


# ------------------------------------------------------------------------------------------------
# Integer codes, one-hot and batch encodings.


_CODE_WEIGHTS = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1, dtype=np.int64)  # 5^5 .. 5^0


def ops_to_code(ops: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
  """Base-5 code of cells: ``sum(ops[k] * 5**(5 - k))`` (e1 most significant), in ``[0, 15625)``.

  This is a dense id of the cell for lookup arrays; it is *not* the NB201 arch index.

  Args:
    ops: int array of shape ``(6,)`` or ``(n, 6)``.

  Returns:
    int64 array of shape ``()`` or ``(n,)``.
  """
  arr = _check_ops_array(ops)
  return arr.astype(np.int64) @ _CODE_WEIGHTS


def code_to_ops(code: np.ndarray | int) -> np.ndarray:
  """Inverse of ``ops_to_code``: int8 array of shape ``(..., 6)``."""
  c = np.asarray(code, dtype=np.int64)
  if np.any((c < 0) | (c >= NUM_ARCHS)):
    raise ValueError(f"NB201 cell codes must lie in [0, {NUM_ARCHS}); got {_short(code)}.")
  return ((c[..., None] // _CODE_WEIGHTS) % NUM_OPS).astype(np.int8)


def _check_ops_array(ops: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
  arr = np.asarray(ops)
  if arr.ndim not in (1, 2) or arr.shape[-1] != NUM_EDGES:
    raise ValueError(
        f"NB201 ops array has shape {arr.shape}; expected (6,) or (n, 6) op indices in edge order "
        "(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."
    )
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"NB201 ops array has dtype {arr.dtype}; expected integer op indices.")
  if arr.size and (arr.min() < 0 or arr.max() >= NUM_OPS):
    raise ValueError(
        f"NB201 ops array has op indices outside [0, {NUM_OPS}) (min {arr.min()}, max {arr.max()})."
    )
  return arr


def one_hot(ops: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
  """One-hot encoding of cells: float32 ``(30,)`` or ``(n, 30)``.

  Position ``5 * e + op`` is 1 for edge ``e`` (order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) carrying op
  index ``op`` (order ``OPS``), i.e. the row-major flattening of a 6x5 one-hot matrix.
  """
  arr = _check_ops_array(ops).astype(np.int64)
  out = np.eye(NUM_OPS, dtype=np.float32)[arr]  # (..., 6, 5)
  return out.reshape(arr.shape[:-1] + (ONE_HOT_SIZE,))


def encode_arch_strs(arch_strs: Iterable[str]) -> np.ndarray:
  """Parses many NB201 arch strings into an int8 array of shape ``(n, 6)`` (edge order e1..e6).

  Raises:
    ValueError: on the first malformed string (the message names it and its position).
  """
  table = _arch_str_table()
  rows: list[Ops] = []
  for i, s in enumerate(arch_strs):
    try:
      rows.append(table[s])
    except (KeyError, TypeError):
      try:
        rows.append(_parse_arch_str(s))
      except ValueError as e:
        raise ValueError(f"Arch string at position {i}: {e}") from None
  if not rows:
    return np.zeros((0, NUM_EDGES), dtype=np.int8)
  return np.asarray(rows, dtype=np.int8)


def decode_arch_strs(ops: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
  """Formats an ``(n, 6)`` ops array as a list of NB201 arch strings."""
  arr = _check_ops_array(ops)
  if arr.ndim != 2:
    raise ValueError(f"decode_arch_strs expects an (n, 6) array, got shape {arr.shape}.")
  return [ops_to_arch_str(row.tolist()) for row in arr]


def all_ops() -> np.ndarray:
  """All 15,625 cells as an int8 ``(15625, 6)`` array in code order (``ops_to_code`` = row).

  This is *not* the NB201 arch-index order; use ``NB201Table.ops`` for that.
  """
  return code_to_ops(np.arange(NUM_ARCHS))


# ------------------------------------------------------------------------------------------------
# Graph properties.


def is_connected(ops: Sequence[int]) -> bool:
  """Whether output node 3 is reachable from input node 0 through edges whose op is not ``none``.

  A disconnected cell outputs zeros; NB201 reports chance accuracy (10% on CIFAR-10) for it.
  """
  o = validate_ops(ops)
  reach = [True, False, False, False]
  for (to_node, from_node), op in zip(EDGES, o):
    if op != 0 and reach[from_node]:
      reach[to_node] = True
  return reach[3]


def is_connected_batch(ops: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
  """Vectorized ``is_connected`` over an ``(n, 6)`` ops array; returns bool ``(n,)``."""
  arr = _check_ops_array(ops)
  if arr.ndim != 2:
    raise ValueError(f"is_connected_batch expects an (n, 6) array, got shape {arr.shape}.")
  live = arr != 0
  reach = [np.ones(arr.shape[0], dtype=bool)] + [np.zeros(arr.shape[0], dtype=bool)] * 3
  # EDGES is sorted by to_node, so each node's inputs are final before it is used as a source.
  for e, (to_node, from_node) in enumerate(EDGES):
    reach[to_node] = reach[to_node] | (live[:, e] & reach[from_node])
  return reach[3]
