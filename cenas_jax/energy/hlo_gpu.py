"""GPU mode: XLA-GPU-like fusion rules on un-optimized HLO (the NVIDIA kernels, predicted).

``gpu_kernels(module, config)`` runs these passes over one ``_FusionState``:

1. ``_prepare``: inline calls (``_flatten``), resolve tuples, merge identical pure instructions
   (``_cse``), merge dots that share an operand (``_dot_merger``), then index users and categories.
2. ``_library_calls``: one kernel per dot / convolution / custom-call, with its epilogue.
3. ``_own_kernels``: one kernel per reduction and per unfusible op.
4. ``_forced_materializations``: elementwise values that must be written to memory (function
   outputs, library-call and unfusible-op operands).
5. ``_loop_fusion``: elementwise ops into the kernels that read them (reverse topological).
6. ``_multi_output_fusion``: a value materialized only for several consumers into one consumer.
7. ``_build_kernels``: the ``Kernel`` of every surviving group, in launch order, with its edges.

``gpu_kernels_from_graph`` starts after the inlining, from a graph the caller assembled (the NB201
composer builds it from pre-inlined fragments).

The module docstring of ``hlo`` says which XLA passes each rule mirrors and what is not modelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from typing import Container, Iterable, Mapping, Sequence

from cenas_jax.energy.hlo_cost import (
    CHEAP,
    COLLECTIVE_PREFIXES,
    DATA_MOVEMENT,
    FREE,
    LIB,
    NOOP_CUSTOM_CALLS,
    OWN,
    RED,
    SIDE_EFFECT,
    VIEW,
    GpuFusionConfig,
    Kernel,
    custom_class,
    custom_target,
    dims_attr,
    gemm_bmnk,
    op_cost,
    post_order,
    trip_count,
)
from cenas_jax.energy.hlo_ir import HloInstr, HloModuleIR, TensorType


class _Node:
  """A mutable working copy of an instruction in the flattened gpu-mode graph.

  Attributes:
    instr: the instruction as read (for its opcode, types, attributes and literal; its own name and
      operands are those of the computation it came from).
    operands: graph names of the operands (rewired by tuple resolution, CSE and the dot merger).
    repeat: launches per call (trip count of the enclosing while loops).
    name: graph name (``instr.name`` under the prefix of the call it was inlined from).
    opcode: ``instr.opcode``.
  """

  __slots__ = ("instr", "operands", "repeat", "name", "opcode")

  def __init__(self, instr: HloInstr, operands: list[str], repeat: int = 1,
               name: str | None = None) -> None:
    self.instr = instr
    self.operands = operands
    self.repeat = repeat
    self.name = instr.name if name is None else name
    self.opcode = instr.opcode



class _Graph:
  """Flattened, mutable data-flow graph of one computation (calls inlined).

  The passes from CSE on replace a node rather than change it, so a node may be shared between
  graphs (``nb201_compose`` reuses the nodes of a call site that read nothing outside the call).
  """

  def __init__(self) -> None:
    self.nodes: dict[str, _Node] = {}
    self.roots: list[str] = []

  def add(self, node: _Node) -> None:
    self.nodes[node.name] = node

  def type(self, name: str) -> TensorType:
    return self.nodes[name].instr.type


def _flatten(module: HloModuleIR, comp_name: str, graph: _Graph, bindings: Mapping[str, str],
             prefix: str, repeat: int, warnings: list[str]) -> str:
  """Copies ``comp_name`` into ``graph`` (inlining calls); returns the graph name of its root."""
  comp = module.computations[comp_name]
  rename: dict[str, str] = {}
  for instr in comp.instrs:
    new_name = prefix + instr.name
    if instr.opcode == "parameter" and bindings:
      rename[instr.name] = bindings[instr.literal]
      continue
    ops = [rename.get(o, prefix + o) for o in instr.operands]
    if instr.opcode == "call":
      callee = instr.attr("to_apply", "").lstrip("%")
      binds = {str(i): o for i, o in enumerate(ops)}
      rename[instr.name] = _flatten(module, callee, graph, binds, f"{new_name}/", repeat, warnings)
      continue
    if instr.opcode == "while":
      trip = trip_count(instr)
      if trip is None:
        warnings.append(f"while loop {instr.name}: trip count unknown, body counted once")
      body = instr.attr("body", "").lstrip("%")
      # The loop state enters the body as parameter 0; the while result aliases the body root.
      rename[instr.name] = _flatten(module, body, graph, {"0": ops[0]}, f"{new_name}/",
                                    repeat * (trip or 1), warnings)
      continue
    if instr.opcode == "conditional":
      warnings.append(f"conditional {instr.name}: every branch counted")
      outs = []
      for i, branch in enumerate(instr.called):
        outs.append(_flatten(module, branch, graph, {"0": ops[i + 1]} if i + 1 < len(ops) else {},
                             f"{new_name}/{i}/", repeat, warnings))
      rename[instr.name] = outs[0]
      continue
    rename[instr.name] = new_name
    graph.add(_Node(instr, ops, repeat, new_name))
  return rename.get(comp.root, prefix + comp.root)


def _resolve_tuples(graph: _Graph) -> None:
  """Rewires ``get-tuple-element(tuple(...))`` to the tuple element; removes the indirection."""
  def resolve(name: str) -> str:
    seen = 0
    while seen < 1000:
      seen += 1
      node = graph.nodes.get(name)
      if node is None or node.opcode != "get-tuple-element":
        return name
      src = graph.nodes.get(node.operands[0])
      if src is None or src.opcode != "tuple":
        return name
      name = src.operands[int(node.instr.attr("index", "0"))]
    return name

  for node in graph.nodes.values():
    node.operands = [resolve(o) for o in node.operands]
  graph.roots = [resolve(r) for r in graph.roots]


def _cse(graph: _Graph, order: list[str], unique: Container[str] = frozenset()
         ) -> dict[str, str]:
  """Merges pure instructions with the same opcode, type, operands and attributes.

  ``order`` is ``post_order`` of the graph; each class of merged nodes is represented by its first
  node in ``order``. ``unique``: nodes the caller knows no other node equals (only their operands
  are rewired). Returns the merged nodes' representatives (node -> representative).
  """
  canon: dict[str, str] = {}
  table: dict[tuple, str] = {}
  # Inlined call sites share their ``HloInstr`` objects: the operand-independent part of the key
  # (opcode, types, attributes, literal) is numbered once per distinct value, and kept per
  # instruction across calls (graphs assembled from cached pieces reuse their instructions).
  _INSTR_MEMO.trim()
  static_ids, static_of = _INSTR_MEMO.static_ids, _INSTR_MEMO.static_of
  nodes = graph.nodes
  merged = canon.keys()
  for name in order:
    node = nodes[name]
    ops = node.operands
    if ops and ((ops[0] in canon) if len(ops) == 1 else not merged.isdisjoint(ops)):
      # A new node rather than an update: graphs assembled from cached pieces share nodes.
      ops = [canon.get(o, o) for o in ops]
      node = nodes[name] = _Node(node.instr, ops, node.repeat, name)
    if name in unique or node.opcode in SIDE_EFFECT:
      continue
    instr = node.instr
    hit = static_of.get(id(instr))
    if hit is not None and hit[0] is instr:
      sid = hit[1]
    else:
      attrs = tuple((k, v) for k, v in instr.attrs if k not in ("metadata", "sharding"))
      sid = static_ids.setdefault((node.opcode, instr.types, attrs, instr.literal),
                                  len(static_ids))
      static_of[id(instr)] = (instr, sid)
    key = (sid, tuple(ops), node.repeat)
    rep = table.get(key)
    if rep is not None:
      canon[name] = rep
    else:
      table[key] = name
  graph.roots = [canon.get(r, r) for r in graph.roots]
  return canon


class _InstrMemo:
  """Values that depend on one ``HloInstr`` alone, kept across passes and graphs.

  Keyed by ``id(instr)``; each entry holds the instruction itself, so an id cannot be reused by
  another object while its entry lives (a hit is checked with ``is``). Cleared whole when it grows
  past ``limit`` entries (between passes only, so the numbering of a running CSE stays valid).

  Attributes:
    static_ids: CSE's operand-independent key (opcode, types, attributes, literal) -> number.
    static_of: id(instr) -> ``(instr, number)``.
    cost_of: id(instr) -> ``(instr, (flops, transcendentals))`` (``op_cost``; an instruction's
      operand types are those of the computation it was read from).
  """

  def __init__(self, limit: int = 1 << 14) -> None:
    self.limit = limit
    self.static_ids: dict[tuple, int] = {}
    self.static_of: dict[int, tuple[HloInstr, int]] = {}
    self.cost_of: dict[int, tuple[HloInstr, tuple[int, int]]] = {}

  def trim(self) -> None:
    if len(self.static_of) + len(self.cost_of) > self.limit:
      self.static_ids.clear()
      self.static_of.clear()
      self.cost_of.clear()


_INSTR_MEMO = _InstrMemo()


def _ancestors(graph: _Graph, order: list[str]) -> dict[str, int]:
  """Bitset of ancestors (by position in ``order``) for every node."""
  pos = {n: i for i, n in enumerate(order)}
  anc: dict[str, int] = {}
  for n in order:
    bits = 0
    for o in graph.nodes[n].operands:
      if o in pos:
        bits |= anc[o] | (1 << pos[o])
    anc[n] = bits
  return anc


def _dot_merger(graph: _Graph, order: list[str], threshold_bytes: int) -> list[tuple[str, ...]]:
  """XLA DotMerger: merges independent dots sharing an operand into one dot. Returns groups."""
  if threshold_bytes <= 0:
    return []
  nodes = graph.nodes
  if [nodes[n].opcode for n in order].count("dot") < 2:
    return []  # nothing to merge
  pos = {n: i for i, n in enumerate(order)}
  anc = _ancestors(graph, order)
  groups: dict[tuple, list[list[str]]] = {}
  sizes: dict[str, int] = {}
  for name in order:
    node = graph.nodes[name]
    if node.opcode != "dot" or len(node.operands) != 2:
      continue
    dims = tuple(node.instr.attr(k) for k in ("lhs_contracting_dims", "rhs_contracting_dims",
                                              "lhs_batch_dims", "rhs_batch_dims"))
    lhs_t, rhs_t = graph.type(node.operands[0]), graph.type(node.operands[1])
    size = node.instr.out_bytes + lhs_t.nbytes + rhs_t.nbytes
    sizes[name] = size
    for side in (0, 1):
      other = node.operands[1 - side]
      other_t = graph.type(other)
      n_fixed = len(dims_attr(node.instr, ("lhs", "rhs")[1 - side] + "_contracting_dims")) + len(
          dims_attr(node.instr, ("lhs", "rhs")[1 - side] + "_batch_dims"))
      if len(other_t.dims) - n_fixed != 1:
        continue
      key = (side, node.operands[side], dims, lhs_t.dtype, rhs_t.dtype, node.instr.type.dtype,
             node.repeat)
      placed = False
      for group in groups.setdefault(key, []):
        independent = all(not (anc[name] >> pos[g]) & 1 and not (anc[g] >> pos[name]) & 1
                          for g in group)
        small = size <= threshold_bytes or any(sizes[g] <= threshold_bytes for g in group)
        if independent and small and name not in group:
          group.append(name)
          placed = True
          break
      if not placed:
        groups[key].append([name])
  merged: list[tuple[str, ...]] = []
  used: set[str] = set()
  for key, lists in groups.items():
    side = key[0]
    for group in lists:
      group = [g for g in group if g not in used]
      if len(group) < 2:
        continue
      used.update(group)
      merged.append(tuple(group))
      _apply_merge(graph, group, side)
  return merged


def _apply_merge(graph: _Graph, group: list[str], side: int) -> None:
  """Rewrites dots ``d_i = dot(shared, w_i)`` into ``z = dot(shared, concat(w_i))``, ``d_i = slice(z)``."""
  first = graph.nodes[group[0]].instr
  shared = graph.nodes[group[0]].operands[side]
  others = [graph.nodes[g].operands[1 - side] for g in group]
  prefix = ("lhs", "rhs")[1 - side]
  fixed = set(dims_attr(first, prefix + "_contracting_dims")) | set(
      dims_attr(first, prefix + "_batch_dims"))
  other_t = graph.type(others[0])
  free_dim = [d for d in range(len(other_t.dims)) if d not in fixed][0]
  cat_dims = list(other_t.dims)
  cat_dims[free_dim] = sum(graph.type(o).dims[free_dim] for o in others)
  cat_name = f"concatenate({','.join(group)})"
  cat_instr = HloInstr(cat_name, "concatenate", (TensorType(other_t.dtype, tuple(cat_dims)),),
                       tuple(others), (("dimensions", f"{{{free_dim}}}"),))
  graph.add(_Node(cat_instr, list(others), graph.nodes[group[0]].repeat))
  out_t = first.type
  # The non-shared operand's free dim is the last of the lhs (side 1) or rhs (side 0) free dims.
  out_dim = len(out_t.dims) - 1 if side == 0 else len(out_t.dims) - 2
  if side == 1:
    lhs_free = len(other_t.dims) - len(fixed)
    out_dim = len(dims_attr(first, "lhs_batch_dims")) + lhs_free - 1
  out_dims = list(out_t.dims)
  out_dims[out_dim] = sum(graph.nodes[g].instr.type.dims[out_dim] for g in group)
  merged_name = f"merged({','.join(group)})"
  ops = [shared, cat_name] if side == 0 else [cat_name, shared]
  merged_instr = dataclasses.replace(first, name=merged_name, operands=tuple(ops),
                                     types=(TensorType(out_t.dtype, tuple(out_dims)),))
  graph.add(_Node(merged_instr, ops, graph.nodes[group[0]].repeat))
  for g in group:
    node = graph.nodes[g]
    graph.add(_Node(HloInstr(g, "slice", node.instr.types, (merged_name,), (("merged_from", "1"),)),
                    [merged_name], node.repeat))


def _is_scalar_constant(graph: _Graph, name: str, value: float | None = None) -> bool:
  """True when ``name`` is (a broadcast/reshape/convert chain of) a scalar constant."""
  while name in graph.nodes and graph.nodes[name].opcode in ("broadcast", "reshape", "bitcast",
                                                             "convert"):
    name = graph.nodes[name].operands[0]
  node = graph.nodes.get(name)
  if node is None or node.opcode != "constant" or node.instr.type.elements != 1:
    return False
  if value is None:
    return True
  try:
    return float(node.instr.literal.strip("{} ")) == value
  except ValueError:
    return False


def _view_source(graph: _Graph, name: str, through: frozenset[str]) -> str:
  while name in graph.nodes and graph.nodes[name].opcode in through and graph.nodes[name].operands:
    name = graph.nodes[name].operands[0]
  return name


def _conv_feature_dim(instr: HloInstr) -> int:
  labels = instr.attr("dim_labels") or ""
  out = labels.split("->")[-1] if "->" in labels else ""
  return out.index("f") if "f" in out else len(instr.type.dims) - 1


@contextlib.contextmanager
def _gc_paused():
  """Pauses Python's cyclic garbage collector for the block (restored if it was enabled).

  The gpu-mode pass allocates some 10^5 short-lived objects per NB201-sized network, all freed by
  reference counting; with JAX loaded the collector's scans of the whole heap took about as long as
  the pass itself.
  """
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


# ----------------------------------------------------------------------------------------------------
# The fusion passes over one explicit state.

# Ops a value flows through unchanged (a tuple is handled operand by operand in ``_force``).
_FREE_THROUGH = frozenset(op for op in FREE if op not in ("parameter", "constant", "tuple"))
_VIEW_OR_FREE = VIEW | _FREE_THROUGH
# What a bias addend of a library call is seen through.
_BIAS_VIEW = frozenset({"broadcast", "reshape", "bitcast"})


@dataclasses.dataclass(eq=False)
class _Group:
  """A kernel being formed.

  Attributes:
    kind: ``lib`` (library call and its epilogue), ``red`` (reduction), ``own`` (an unfusible op
      alone) or ``loop`` (a loop fusion rooted at a materialized elementwise value).
    root: graph name of the kernel's root.
    members: graph names of the instructions the kernel executes.
    outputs: graph names of the values it writes (more than one after multi-output fusion).
    cls: kernel class (``KERNEL_CLASSES``).
    epilogue: epilogue steps fused into a library call.
    target: library target or fusion kind.
    lib: for ``lib`` groups, the library call itself.
  """

  kind: str
  root: str
  members: list[str]
  outputs: list[str]
  cls: str
  epilogue: tuple[str, ...]
  target: str
  lib: str | None = None


class _FusionState:
  """What the passes share: the (then fixed) graph, its indexes and the kernels formed so far.

  Attributes:
    graph: the flattened graph (fixed once ``_prepare`` returns).
    nodes: ``graph.nodes``.
    order: topological order of the live nodes.
    pos: position of each node in ``order``.
    users: the distinct users of each node.
    cat: category of each node: ``free``, ``lib``, ``red``, ``own`` or ``ew`` (elementwise).
    of_cat: the nodes of each category, in ``order``.
    merge_groups: the dots the dot merger combined.
    warnings: what could not be modelled exactly.
    groups: the kernels formed so far (index = kernel id).
    owner: node -> kernel id, for library/reduction/own members and materialized roots.
    materialized: elementwise values written to memory.
    kernel_of: elementwise node -> the kernels it is fused into.
    multi: values materialized only because several kernels read them.
    alive: per kernel id, False once merged into another kernel by multi-output fusion.
  """

  def __init__(self, graph: _Graph, order: list[str], merge_groups: list[tuple[str, ...]],
               warnings: list[str]) -> None:
    self.graph = graph
    self.nodes = graph.nodes
    self.order = order
    self.pos = dict(zip(order, range(len(order))))
    self.merge_groups = merge_groups
    self.warnings = warnings
    nodes = self.nodes
    users: dict[str, list[str]] = {n: [] for n in order}
    self.users = users
    # The category is the opcode's, except for custom-calls (by target).
    by_opcode: dict[str, str] = {}
    cat: dict[str, str] = {}
    of_cat: dict[str, list[str]] = {c: [] for c in ("free", "lib", "red", "own", "ew")}
    users_get = users.get
    # ``_view_source`` through ``_FREE_THROUGH`` of every node, from its first operand's (which the
    # post-order lists first): what kernels read, looked up for every operand of every member.
    free_view: dict[str, str] = {}
    for n in order:
      node = nodes[n]
      ops = node.operands
      if ops and node.opcode in _FREE_THROUGH:
        free_view[n] = free_view.get(ops[0], ops[0])
      else:
        free_view[n] = n
      if len(ops) == 1:  # the common case: no repeated operand to skip
        us = users_get(ops[0])
        if us is not None:
          us.append(n)
      else:
        for o in ops:
          us = users_get(o)
          if us is not None and n not in us:
            us.append(n)
      op = node.opcode
      c = by_opcode.get(op)
      if c is None:
        c = _category(node)
        if op != "custom-call":
          by_opcode[op] = c
      cat[n] = c
      of_cat[c].append(n)
    self.cat = cat
    self.of_cat = of_cat  # the nodes of each category, in order
    self.groups: list[_Group] = []
    self.owner: dict[str, int] = {}
    self.materialized: set[str] = set()
    self.kernel_of: dict[str, set[int]] = {}
    self.multi: set[str] = set()
    self.alive: list[bool] = []
    self._view_memo: dict[frozenset[str], dict[str, str]] = {_FREE_THROUGH: free_view}
    self._eff_users_memo: dict[str, tuple[str, ...]] = {}

  def view_memo(self, through: frozenset[str]) -> dict[str, str]:
    """The memo of ``view_source`` for ``through`` (callers may fill it with ``_view_source``)."""
    return self._view_memo.setdefault(through, {})

  def view_source(self, name: str, through: frozenset[str]) -> str:
    """``_view_source`` memoized per set of see-through ops (the graph no longer changes)."""
    memo = self._view_memo.setdefault(through, {})
    src = memo.get(name)
    if src is None:
      src = memo[name] = _view_source(self.graph, name, through)
    return src

  def eff_users(self, n: str) -> tuple[str, ...]:
    """Users of ``n`` seen through free ops (reshape, bitcast, tuple, get-tuple-element)."""
    hit = self._eff_users_memo.get(n)
    if hit is not None:
      return hit
    users, cat, nodes = self.users, self.cat, self.nodes
    direct = users[n]
    for u in direct:
      if cat[u] == "free" and nodes[u].opcode != "parameter":
        break
    else:
      # No free op to see through: the walk below would give the (distinct) users, last first.
      self._eff_users_memo[n] = hit = tuple(reversed(direct))
      return hit
    out, stack, seen = [], list(direct), set()
    while stack:
      u = stack.pop()
      if u in seen:
        continue
      seen.add(u)
      if cat[u] == "free" and nodes[u].opcode != "parameter":
        stack.extend(users[u])
      else:
        out.append(u)
    self._eff_users_memo[n] = hit = tuple(out)
    return hit

  def new_group(self, kind: str, root: str, members: list[str], *, cls: str,
                epilogue: tuple[str, ...], target: str, lib: str | None = None) -> int:
    """Adds a kernel owning ``members``; returns its id."""
    gid = len(self.groups)
    self.groups.append(_Group(kind, root, list(members), [root], cls, epilogue, target, lib))
    for m in members:
      self.owner[m] = gid
    return gid


def _category(node: _Node) -> str:
  op = node.opcode
  if op == "custom-call":
    return "free" if custom_target(node.instr) in NOOP_CUSTOM_CALLS else "lib"
  if op in FREE:
    return "free"
  if op in LIB:
    return "lib"
  if op in RED:
    return "red"
  if op in OWN or op.startswith(COLLECTIVE_PREFIXES):
    return "own"
  return "ew"


def _prepare(module: HloModuleIR, config: GpuFusionConfig) -> _FusionState:
  """Flattens the entry computation, resolves tuples, runs CSE and the dot merger; indexes it."""
  warnings: list[str] = []
  graph = _Graph()
  graph.roots = [_flatten(module, module.entry, graph, {}, "", 1, warnings)]
  _resolve_tuples(graph)
  return _prepare_graph(graph, config, warnings)


def _prepare_graph(graph: _Graph, config: GpuFusionConfig, warnings: list[str],
                   order: list[str] | None = None, unique: Container[str] = frozenset()
                   ) -> _FusionState:
  """CSE and the dot merger on a flattened graph without tuples; indexes it.

  ``order``, when given, must be what ``post_order`` of ``graph.roots`` gives (a caller that built
  the graph from pieces whose orders it knows can compose it without walking the graph);
  ``unique``: see ``_cse``.
  """
  def order_now() -> list[str]:
    nodes = graph.nodes

    def operands_of(n: str) -> Sequence[str]:
      node = nodes.get(n)
      return () if node is None else node.operands

    return post_order(graph.roots, operands_of)

  if order is None:
    order = order_now()
  canon = _cse(graph, order, unique)
  # The post-order of the merged graph is ``order`` without the merged nodes: merged nodes are
  # structurally equal, so none reaches another, and the walk of the merged graph meets each
  # representative where the walk of the original met it (a merged node's subtree holds nothing
  # that was not already seen under its representative).
  order = [n for n in order if n not in canon]
  merge_groups = _dot_merger(graph, order, config.dot_merger_threshold_bytes)
  if merge_groups:
    order = order_now()
  return _FusionState(graph, order, merge_groups, warnings)


def _epilogue(state: _FusionState, n: str, config: GpuFusionConfig
              ) -> tuple[list[str], list[str], str]:
  """The epilogue a dot / convolution ``n`` absorbs: ``(members, epilogue steps, last member)``.

  In order, each only while the value so far has a single user of the same type: ``multiply`` by
  a scalar constant (alpha), ``add`` of a full-shape tensor (beta * C) or, with cuBLASLt / fused
  conv epilogues, of a vector along the feature dimension (bias), then ``maximum(x, 0)`` (ReLU).
  """
  graph, nodes, users = state.graph, state.nodes, state.users
  node = nodes[n]
  members, epilogue, cur = [n], [], n
  if node.opcode not in ("dot", "convolution"):
    return members, epilogue, cur
  is_dot = node.opcode == "dot"
  vec_ok = config.cublaslt_epilogues if is_dot else config.conv_epilogues
  feat = len(node.instr.type.dims) - 1 if is_dot else _conv_feature_dim(node.instr)
  feat_size = node.instr.type.dims[feat] if node.instr.type.dims else 1
  stage = 0  # 0: alpha allowed, 1: bias allowed, 2: relu allowed, 3: done
  while stage < 3:
    us = users[cur]
    if len(us) != 1 or cur in graph.roots:
      break
    u = us[0]
    un = nodes[u]
    if un.instr.types != nodes[cur].instr.types:
      break
    other = [o for o in un.operands if o != cur]
    if len(other) != 1 or len(un.operands) != 2:
      break
    other = other[0]
    if stage == 0 and un.opcode == "multiply" and _is_scalar_constant(graph, other):
      epilogue.append("alpha")
      stage = 1
    elif stage <= 1 and un.opcode == "add":
      src = _view_source(graph, other, _BIAS_VIEW)
      src_t = graph.type(src)
      if graph.type(other) == un.instr.type and src == other and len(state.eff_users(other)) == 1:
        epilogue.append("addend")  # beta * C with a full-shape C
      elif vec_ok and src_t.elements == feat_size and nodes[other].opcode in ("broadcast",
                                                                               "reshape"):
        epilogue.append("bias")
      else:
        break
      stage = 2
    elif vec_ok and un.opcode == "maximum" and _is_scalar_constant(graph, other, 0.0):
      epilogue.append("relu")
      stage = 3
    else:
      break
    members.append(u)
    cur = u
  return members, epilogue, cur


def _library_calls(state: _FusionState, config: GpuFusionConfig) -> None:
  """One kernel per library call (cuBLAS / cuDNN / custom-call) with the epilogue it absorbs."""
  nodes, owner = state.nodes, state.owner
  for n in state.of_cat["lib"]:
    if n in owner:
      continue
    node = nodes[n]
    members, epilogue, cur = _epilogue(state, n, config)
    target = ("__cublas$lt$matmul" if node.opcode == "dot" and config.cublaslt_epilogues else
              "__cublas$gemm" if node.opcode == "dot" else
              "__cudnn$convBiasActivationForward" if node.opcode == "convolution" and epilogue else
              "__cudnn$convForward" if node.opcode == "convolution" else
              custom_target(node.instr) or node.opcode)
    cls = ("gemm" if node.opcode == "dot" else "conv" if node.opcode == "convolution" else
           custom_class(target) if node.opcode == "custom-call" else "other")
    state.new_group("lib", cur, members, cls=cls, epilogue=tuple(epilogue), target=target, lib=n)


def _own_kernels(state: _FusionState) -> None:
  """One kernel per reduction (an input fusion, producers fused later) and per unfusible op."""
  red_own = state.of_cat["red"] + state.of_cat["own"]
  red_own.sort(key=state.pos.__getitem__)  # in order, as the two interleave
  for n in red_own:
    if state.cat[n] == "red" and n not in state.owner:
      state.new_group("red", n, [n], cls="reduction", epilogue=(), target="kInput")
    elif state.cat[n] == "own" and n not in state.owner:
      state.new_group("own", n, [n], cls="other", epilogue=(), target=state.nodes[n].opcode)


def _forced_materializations(state: _FusionState) -> None:
  """Marks the elementwise values that must be written to memory.

  Operands of library calls (seen through layout-only views, which the call absorbs) and of
  unfusible ops, and the function's outputs. Reductions absorb their elementwise producers.
  """
  nodes = state.nodes
  for g in state.groups:
    if g.kind == "red":
      continue  # reductions absorb their elementwise producers (input fusion)
    for m in g.members:
      for o in nodes[m].operands:
        if o in g.members:
          continue
        _force(state, o, _VIEW_OR_FREE if g.kind == "lib" else _FREE_THROUGH)
  for r in state.graph.roots:
    _force(state, r, _FREE_THROUGH)


def _force(state: _FusionState, n: str, through: frozenset[str]) -> None:
  """Marks the elementwise value ``n`` stands for (seen through ``through``) as materialized.

  Module level rather than a closure: a closure that calls itself is a reference cycle, which
  would keep the whole state alive until the cyclic collector frees it (milliseconds per network).
  """
  nodes, cat = state.nodes, state.cat
  src = state.view_source(n, through)
  if src in nodes and cat[src] in ("ew",) and src not in state.owner:
    state.materialized.add(src)
  elif src in nodes and cat[src] == "free" and nodes[src].opcode not in ("parameter", "constant"):
    for o in nodes[src].operands:
      _force(state, o, through)


def _loop_fusion(state: _FusionState) -> None:
  """Fuses each elementwise node into the kernels that read it (reverse topological order).

  A materialized value roots a loop fusion of its own. A non-cheap value read by two kernels is
  materialized too (and noted in ``state.multi``); a cheap one is duplicated into each.
  """
  nodes, owner, groups = state.nodes, state.owner, state.groups
  kernel_of = state.kernel_of
  eff_memo = state._eff_users_memo  # pylint: disable=protected-access
  users, cat = state.users, state.cat
  for n in reversed(state.of_cat["ew"]):
    if n in owner:
      continue
    if n in state.materialized:
      gid = state.new_group("loop", n, [n], cls="loop", epilogue=(), target="kLoop")
      kernel_of[n] = {gid}
      continue
    ks: set[int] = set()
    direct = users[n]
    if len(direct) == 1 and cat[direct[0]] != "free":
      # One user that is not a free op (most nodes): it is the only effective user.
      u = direct[0]
      if u in owner:
        ks.add(owner[u])
      elif u in kernel_of:
        ks |= kernel_of[u]
    else:
      for u in eff_memo.get(n) or state.eff_users(n):
        if u in owner:
          # A reduction absorbs its producers; a library call absorbs views of its operands
          # (anything else feeding it was materialized above).
          ks.add(owner[u])
        elif u in kernel_of:
          ks |= kernel_of[u]
    if len(ks) > 1 and not (nodes[n].opcode in CHEAP or nodes[n].instr.type.elements <= 1):
      state.materialized.add(n)
      state.multi.add(n)
      gid = state.new_group("loop", n, [n], cls="loop", epilogue=(), target="kLoop")
      kernel_of[n] = {gid}
    else:
      kernel_of[n] = ks
      # ``n`` is in no kernel yet: it has no owner, and this loop reaches each node once.
      for k in ks:
        groups[k].members.append(n)


def _multi_output_fusion(state: _FusionState) -> None:
  """Puts a value materialized only for several consumers into one consumer, as an extra output.

  XLA's multi-output fusion: the consumer must be a reduction or loop fusion (reductions first,
  then in order) that does not depend on the value's kernel through another kernel (no cycle).
  Each kernel's external sources (operands of its members seen through free ops, minus the
  members) are computed once and again only when a merge adds members to it; ``readers`` maps a
  source to (a superset of) the kernels reading it.
  """
  nodes, groups, owner, pos = state.nodes, state.groups, state.owner, state.pos
  sources_of: dict[int, frozenset[str]] = {}
  readers: dict[str, set[int]] = {}

  view = state.view_memo(_FREE_THROUGH).__getitem__  # complete: every operand is a node of order

  def update_sources(gid: int) -> None:
    mem = set(groups[gid].members)
    found: set[str] = set()
    for m in mem:
      found.update(map(view, nodes[m].operands))
    srcs = frozenset(found - mem)
    sources_of[gid] = srcs
    for s in srcs:
      r = readers.get(s)
      if r is None:
        readers[s] = {gid}
      else:
        r.add(gid)

  # Entries are dropped when a merge changes the owner of one of their sources.
  inputs_memo: dict[int, set[int]] = {}

  def group_inputs(gid: int) -> set[int]:
    """Kernels whose outputs kernel ``gid`` reads."""
    hit = inputs_memo.get(gid)
    if hit is not None:
      return hit
    srcs: set[int] = set()
    for s in sources_of[gid]:
      o = owner.get(s)
      if o is not None and o != gid and s in groups[o].outputs:
        srcs.add(o)
    inputs_memo[gid] = srcs
    return srcs

  def reaches(a: int, b: int, skip_direct: bool) -> bool:
    """True when kernel ``b`` depends on kernel ``a`` (through another kernel if skip_direct)."""
    stack = [b]
    seen = set()
    while stack:
      x = stack.pop()
      for s in group_inputs(x):
        if s == a and (x != b or not skip_direct):
          return True
        if s not in seen:
          seen.add(s)
          stack.append(s)
    return False

  alive = state.alive = [True] * len(groups)
  if state.multi:
    for k in range(len(groups)):
      update_sources(k)
  for n in sorted(state.multi, key=pos.__getitem__):
    gid = owner[n]
    # Kernel k reads gid only through a source in gid's outputs, so ``readers`` of those outputs
    # hold every candidate; the exact test follows.
    candidates: set[int] = set()
    for out in groups[gid].outputs:
      candidates |= readers.get(out, set())
    consumers = sorted(k for k in candidates if alive[k] and k != gid and gid in
                       group_inputs(k) and groups[k].kind in ("red", "loop"))
    consumers.sort(key=lambda k: (groups[k].kind != "red", pos[groups[k].root]))
    for k in consumers:
      if reaches(gid, k, skip_direct=True):
        continue
      g, src = groups[k], groups[gid]
      g_members = set(g.members)
      moved = []
      for m in src.members:
        if m not in g_members:
          g.members.append(m)
          g_members.add(m)
        if owner.get(m) == gid:
          owner[m] = k
          moved.append(m)
      g.outputs.append(n)
      alive[gid] = False
      # What a kernel reads changes only where a source changed owner or k's sources changed.
      inputs_memo.pop(k, None)
      for m in moved:
        for x in readers.get(m, ()):
          inputs_memo.pop(x, None)
      update_sources(k)
      break


def _build_kernels(state: _FusionState) -> tuple[list[Kernel], list[tuple[int, int]]]:
  """The ``Kernel`` of every live group in launch order, and the producer -> consumer edges."""
  nodes, graph, groups, owner, pos, alive = (state.nodes, state.graph, state.groups, state.owner,
                                             state.pos, state.alive)
  live_groups = [k for k in range(len(groups)) if alive[k]]
  live_groups.sort(key=lambda k: max(pos[o] for o in groups[k].outputs))
  index = {k: i for i, k in enumerate(live_groups)}
  merged_names = {f"merged({','.join(g)})": g for g in state.merge_groups}
  kernels: list[Kernel] = []
  edges: set[tuple[int, int]] = set()
  view = state.view_memo(_FREE_THROUGH).__getitem__  # complete: every operand is a node of order
  # FLOPs of an instruction depend on it and its operands' types, which are those of the
  # computation it was read from: call sites inlined from one computation share the ``HloInstr``
  # and its cost.
  _INSTR_MEMO.trim()
  cost_of = _INSTR_MEMO.cost_of
  # Bytes of each type object (kernels share them): id -> (type, bytes), the type held so that
  # its id stays its own.
  nbytes_of: dict[int, tuple[TensorType, int]] = {}

  def total_bytes(types: Iterable[TensorType]) -> int:
    total = 0
    for t in types:
      hit = nbytes_of.get(id(t))
      if hit is None or hit[0] is not t:
        hit = nbytes_of[id(t)] = (t, t.nbytes)
      total += hit[1]
    return total

  for k in live_groups:
    g = groups[k]
    mem = set(g.members)
    members = sorted(mem, key=pos.__getitem__)
    flops = trans = 0
    rep = 0  # the largest repeat of a member (repeats are >= 0)
    ops: list[str] = []
    inputs: dict[str, TensorType] = {}
    for m in members:
      node = nodes[m]
      instr = node.instr
      hit = cost_of.get(id(instr))
      if hit is not None and hit[0] is instr:
        ft = hit[1]
      else:
        ft = op_cost(instr, [nodes[o].instr.type for o in node.operands])
        cost_of[id(instr)] = (instr, ft)
      flops += ft[0]
      trans += ft[1]
      if node.repeat > rep:
        rep = node.repeat
      if node.opcode not in FREE:
        ops.append(node.opcode)
      for s in map(view, node.operands):
        if s in mem or s in inputs:
          continue
        sn = nodes[s]
        st = sn.instr.type
        if sn.opcode == "constant" and st.elements <= 1:
          continue
        inputs[s] = st
        so = owner.get(s)
        if so is not None and so != k and alive[so]:
          edges.add((index[so], index[k]))
    outs = [nodes[o].instr.type for o in g.outputs]
    root_node = nodes[g.root]
    cls = g.cls
    bmnk = None
    dtype = root_node.instr.type.dtype
    merged_count = 1
    if g.kind == "lib":
      lib = nodes[g.lib]
      if lib.operands:
        dtype = graph.type(lib.operands[0]).dtype
      if lib.opcode == "dot":
        bmnk = gemm_bmnk(lib.instr, graph.type(lib.operands[0]), graph.type(lib.operands[1]))
        merged_count = len(merged_names.get(lib.name, (lib.name,)))
    elif cls == "loop" and set(ops) <= DATA_MOVEMENT:
      cls = "copy"
    kernels.append(Kernel(
        name=g.root, kernel_class=cls, dtype=dtype,
        in_shapes=tuple([t.dims for t in inputs.values()]),
        out_shapes=tuple([t.dims for t in outs]), flops=int(flops), transcendentals=int(trans),
        bytes_read=total_bytes(inputs.values()), bytes_written=total_bytes(outs),
        fused_ops=tuple(ops), repeat=rep, merged_count=merged_count, gemm_bmnk=bmnk,
        epilogue=g.epilogue, target=g.target, hlo_names=tuple(members)))
  return kernels, sorted(edges)


def _run_passes(state: _FusionState, config: GpuFusionConfig) -> tuple[
    list[Kernel], list[tuple[int, int]], list[tuple[str, ...]], list[str]]:
  _library_calls(state, config)
  _own_kernels(state)
  _forced_materializations(state)
  _loop_fusion(state)
  _multi_output_fusion(state)
  kernels, edges = _build_kernels(state)
  return kernels, edges, state.merge_groups, state.warnings


def gpu_kernels(module: HloModuleIR, config: GpuFusionConfig) -> tuple[
    list[Kernel], list[tuple[int, int]], list[tuple[str, ...]], list[str]]:
  """The gpu-mode rules on ``module``: ``(kernels, edges, merge groups, warnings)``.

  ``hlo.kernel_graph_from_module`` is the public form of this.
  """
  with _gc_paused():
    return _run_passes(_prepare(module, config), config)


def gpu_kernels_from_graph(graph: _Graph, config: GpuFusionConfig, *,
                           order: list[str] | None = None,
                           unique: Container[str] = frozenset()) -> tuple[
    list[Kernel], list[tuple[int, int]], list[tuple[str, ...]], list[str]]:
  """``gpu_kernels`` on a graph that is already flattened (calls inlined, tuples resolved).

  The graph must be what ``_flatten`` + ``_resolve_tuples`` give for some module (node names
  included) for the result to equal ``gpu_kernels`` of that module; ``nb201_compose`` builds it
  from pre-flattened pieces. ``order``: see ``_prepare_graph``; ``unique``: see ``_cse``. The graph
  is modified.
  """
  with _gc_paused():
    return _run_passes(_prepare_graph(graph, config, [], order, unique), config)
