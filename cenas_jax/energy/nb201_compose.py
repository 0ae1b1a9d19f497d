"""The NB201 network's HLO, assembled from fragments lowered once (``nb201_kernels`` uses it).

Every NB201 network is the same skeleton (stem, 3 stages of N cells, 2 reduction blocks, head)
with the cell's 6 edge ops repeated, so its HLO is assembled here from a few cached *fragments*,
each lowered once (for ``cuda``) from the real Flax modules of ``cenas_jax.spaces.nb201_net``:

- ``stem`` (conv3x3 + BN), ``reduction_2`` / ``reduction_3`` (``ResNetBasicBlock``), ``head``
  (BN + ReLU + global mean + dense);
- per stage: ``ReLUConvBN`` 1x1 and 3x3, ``avg_pool_3x3`` and the ``zeros_like`` of an empty node.

``network_module(ops)`` stitches them into one HLO module: an entry computation that calls the
fragments and adds the edge outputs of each node in ``NB201Cell``'s order, with fresh parameters
for every weight. The gpu-mode rules of ``cenas_jax.energy.hlo`` then run on that module exactly as
on a whole-network lowering (calls are inlined before CSE and fusion). No JAX tracing per cell.

``compose(live, config)`` does not even build the module: each fragment is inlined once into a
template (``_Template``), and a cell's flattened graph and its post-order are assembled from the
templates (``_GraphBuilder``), the same nodes, names and order the pass's own inlining of
``network_module`` gives, so only the passes from CSE on run per cell.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

from cenas_jax.energy import hlo_gpu, hlo_ir
from cenas_jax.energy.hlo import GpuFusionConfig
from cenas_jax.energy.hlo_ir import HloComputationIR, HloInstr, HloModuleIR, TensorType
from cenas_jax.spaces.nb201 import CONV1X1, CONV3X3, EDGES, NONE, SKIP, validate_ops


@dataclasses.dataclass(frozen=True)
class NB201NetConfig:
  """Macro settings of the NB201 network whose kernels are composed.

  Attributes:
    C: channels of the first stage (doubled at each reduction).
    N: cells per stage.
    num_classes: classifier outputs.
    batch_size: images per call the kernels are extracted at.
    input_hw: input height = width, in pixels (32 for CIFAR).
    fusion: gpu-mode fusion rules.
  """

  C: int = 16
  N: int = 5
  num_classes: int = 10
  batch_size: int = 1
  input_hw: int = 32
  fusion: GpuFusionConfig = GpuFusionConfig()

  def __post_init__(self) -> None:
    for name in ("C", "N", "num_classes", "batch_size", "input_hw"):
      v = getattr(self, name)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"NB201NetConfig.{name} must be a positive integer, got {v!r}")
    if self.input_hw % 4:
      raise ValueError(f"NB201NetConfig.input_hw must be divisible by 4, got {self.input_hw}")


# ----------------------------------------------------------------------------------------------------
# Fragments: each piece of the network lowered once for cuda.


@dataclasses.dataclass(frozen=True)
class _Fragment:
  """One lowered piece: its computations (renamed with a unique prefix) and entry signature."""

  entry: str
  computations: Mapping[str, HloComputationIR]
  n_inputs: int  # leading parameters that are activations (the rest are weights)
  param_types: tuple[TensorType, ...]  # by parameter index
  out_type: TensorType
  text_sha256: str
  module: HloModuleIR  # as lowered (names not prefixed)
  clone_per_call: bool  # holds reductions whose reducer names must be unique per call site


# Ops that name a reducer computation. A whole-network lowering gives every such op its own reducer
# computation, and ``hlo``'s CSE keys on that name, so identical pools on one input stay separate
# kernels there; each call site of a fragment holding them gets its own copy of the reducers here.
_REDUCER_OPS = frozenset({"reduce", "reduce-window", "select-and-scatter", "scatter", "sort",
                          "map"})

_NAME_TOKEN = re.compile(r"%?([A-Za-z_][\w.\-]*)")


def _rename_instr(i: HloInstr, names: frozenset[str] | set[str], prefix: str) -> HloInstr:
  """``i`` with ``prefix`` before each computation of ``names`` it names (``i`` if it calls none)."""
  if not i.called:
    return i

  def ren(value: str) -> str:
    return _NAME_TOKEN.sub(lambda m: ("%" if m.group(0).startswith("%") else "") + prefix +
                           m.group(1) if m.group(1) in names else m.group(0), value)

  call_attrs = hlo_ir._CALL_ATTRS  # pylint: disable=protected-access
  attrs = tuple((k, ren(v) if k in call_attrs else v) for k, v in i.attrs)
  return dataclasses.replace(i, attrs=attrs, called=tuple(prefix + c for c in i.called))


def _rename_module(module: HloModuleIR, prefix: str) -> dict[str, HloComputationIR]:
  """Computations of ``module`` with ``prefix`` before every computation name and reference."""
  names = set(module.computations)
  return {prefix + cname: HloComputationIR(
      prefix + cname, tuple(_rename_instr(i, names, prefix) for i in comp.instrs), comp.root)
          for cname, comp in module.computations.items()}


def _lower_fragment(name: str, fn: Callable[..., Any], inputs: Sequence[Any], variables: Any
                    ) -> _Fragment:
  import jax  # pylint: disable=g-import-not-at-top

  lowered = jax.jit(fn, keep_unused=True).trace(*inputs, variables).lower(
      lowering_platforms=("cuda",))
  text = lowered.compiler_ir("hlo").as_hlo_text()
  module = hlo_ir.module_from_text(text)
  prefix = f"{name}::"
  comps = _rename_module(module, prefix)
  entry = comps[prefix + module.entry]
  params = sorted((int(i.literal), i.type) for i in entry.instrs if i.opcode == "parameter")
  if [p[0] for p in params] != list(range(len(params))):
    raise RuntimeError(f"fragment {name}: unexpected parameter numbering {[p[0] for p in params]}")
  n_leaves = len(jax.tree.leaves(variables)) + len(inputs)
  if len(params) != n_leaves:
    raise RuntimeError(f"fragment {name}: {len(params)} HLO parameters for {n_leaves} arguments")
  out_type = entry.by_name()[entry.root].type
  clone = any(i.opcode in _REDUCER_OPS for c in module.computations.values() for i in c.instrs)
  return _Fragment(prefix + module.entry, comps, len(inputs), tuple(t for _, t in params),
                   out_type, hashlib.sha256(text.encode("utf-8")).hexdigest(), module, clone)


@functools.lru_cache(maxsize=8)
def _fragments(C: int, N: int, num_classes: int, batch_size: int, input_hw: int  # noqa: N803
               ) -> dict[str, _Fragment]:
  """All fragments of the network (lowered once per process and configuration)."""
  del N  # the fragments do not depend on the number of cells
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cenas_jax.spaces import nb201_net  # pylint: disable=g-import-not-at-top

  def bn() -> nn.BatchNorm:
    # Same settings as nb201_net's BatchNorm layers, in inference mode.
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5)

  class Stem(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
      x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
      return bn()(x)

  class Head(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
      x = nn.relu(bn()(x))
      x = jnp.mean(x, axis=(1, 2))
      return nn.Dense(self.num_classes)(x)

  def sds(*shape: int) -> Any:
    return jax.ShapeDtypeStruct(shape, jnp.float32)

  def module_fragment(name: str, module: nn.Module, x: Any, **call_kw: Any) -> _Fragment:
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype),
                                                   **call_kw))
    return _lower_fragment(name, lambda x, v: module.apply(v, x, **call_kw), [x], variables)

  b = batch_size
  frags = {"stem": module_fragment("stem", Stem(C), sds(b, input_hw, input_hw, 3))}
  hw, c = input_hw, C
  for stage in range(3):
    if stage > 0:
      x_in = sds(b, hw, hw, c)
      hw, c = hw // 2, c * 2
      frags[f"reduction_{stage + 1}"] = module_fragment(
          f"reduction_{stage + 1}", nb201_net.ResNetBasicBlock(c, 2), x_in, train=False)
    x = sds(b, hw, hw, c)
    s = stage + 1
    frags[f"conv1x1_{s}"] = module_fragment(f"conv1x1_{s}", nb201_net.ReLUConvBN(c, 1), x,
                                            train=False)
    frags[f"conv3x3_{s}"] = module_fragment(f"conv3x3_{s}", nb201_net.ReLUConvBN(c, 3), x,
                                            train=False)
    frags[f"pool_{s}"] = _lower_fragment(f"pool_{s}", lambda x, v: nb201_net.avg_pool_3x3(x),
                                         [x], {})
    frags[f"zeros_{s}"] = _lower_fragment(f"zeros_{s}", lambda x, v: jnp.zeros_like(x), [x], {})
  frags["head"] = module_fragment("head", Head(num_classes), sds(b, hw, hw, c))
  return frags


def fragments(config: NB201NetConfig) -> dict[str, _Fragment]:
  """The lowered fragments of ``config``'s network (cached per process and configuration)."""
  return _fragments(config.C, config.N, config.num_classes, config.batch_size, config.input_hw)


# ----------------------------------------------------------------------------------------------------
# Stitching.


class _EntryBuilder:
  """Accumulates the instructions of the stitched entry computation."""

  def __init__(self) -> None:
    self.instrs: list[HloInstr] = []
    self.types: dict[str, TensorType] = {}
    self.n_params = 0
    self.computations: dict[str, HloComputationIR] = {}

  def param(self, t: TensorType) -> str:
    name = f"p{self.n_params}"
    self.instrs.append(HloInstr(name, "parameter", (t,), (), (), (), str(self.n_params)))
    self.n_params += 1
    self.types[name] = t
    return name

  def call(self, frag: _Fragment, inputs: Sequence[str]) -> str:
    if len(inputs) != frag.n_inputs:
      raise ValueError(f"fragment {frag.entry} takes {frag.n_inputs} inputs")
    operands = list(inputs) + [self.param(t) for t in frag.param_types[frag.n_inputs:]]
    name = f"c{len(self.instrs)}"
    entry = frag.entry
    if frag.clone_per_call:
      prefix = f"{name}::"
      self.computations.update(_rename_module(frag.module, prefix))
      entry = prefix + frag.module.entry
    else:
      self.computations.update(frag.computations)
    self.instrs.append(HloInstr(name, "call", (frag.out_type,), tuple(operands),
                                (("to_apply", "%" + entry),), (entry,)))
    self.types[name] = frag.out_type
    return name

  def add(self, a: str, b: str) -> str:
    name = f"a{len(self.instrs)}"
    self.instrs.append(HloInstr(name, "add", (self.types[a],), (a, b)))
    self.types[name] = self.types[a]
    return name


def network_module(ops: Sequence[int], config: NB201NetConfig = NB201NetConfig()) -> HloModuleIR:
  """The HLO module of the NB201 network for ``ops`` (inference), stitched from cached fragments.

  Mirrors ``NB201Net.__call__`` / ``NB201Cell.__call__`` op by op: the same fragments in the same
  order, node sums accumulated in edge order, empty nodes as ``zeros_like``.

  Raises:
    ValueError: bad ``ops``.
  """
  ops = validate_ops(ops)
  frags = _fragments(config.C, config.N, config.num_classes, config.batch_size, config.input_hw)
  eb = _EntryBuilder()
  root = _walk_network(ops, config, eb.param, lambda name, inputs: eb.call(frags[name], inputs),
                       eb.add)
  comps = dict(eb.computations)
  comps["nb201_entry"] = HloComputationIR("nb201_entry", tuple(eb.instrs), root)
  return HloModuleIR("nb201_network", comps, "nb201_entry")


def _walk_network(ops: Sequence[int], config: NB201NetConfig, param: Callable[[TensorType], str],
                  call: Callable[[str, Sequence[str]], str], add: Callable[[str, str], str]) -> str:
  """Emits the network's entry computation through ``param`` / ``call(fragment, inputs)`` / ``add``
  in ``NB201Net``'s order; returns the result's name."""
  hw = config.input_hw
  x = param(TensorType("f32", (config.batch_size, hw, hw, 3)))
  x = call("stem", [x])
  for stage in range(1, 4):
    if stage > 1:
      x = call(f"reduction_{stage}", [x])
    for _ in range(config.N):
      nodes = [x]
      for j in range(1, 4):
        total = None
        for e, (to_node, from_node) in enumerate(EDGES):
          op = ops[e]
          if to_node != j or op == NONE:
            continue
          h = nodes[from_node]
          if op == SKIP:
            y = h
          elif op == CONV1X1:
            y = call(f"conv1x1_{stage}", [h])
          elif op == CONV3X3:
            y = call(f"conv3x3_{stage}", [h])
          else:
            y = call(f"pool_{stage}", [h])
          total = y if total is None else add(total, y)
        nodes.append(call(f"zeros_{stage}", [x]) if total is None else total)
      x = nodes[3]
  return call("head", [x])


# ----------------------------------------------------------------------------------------------------
# Composing the flattened graph directly.
#
# ``network_module`` builds an HLO module whose entry calls the fragments, and the gpu-mode pass
# then inlines every call (``hlo_gpu._flatten``), resolves tuples and walks the graph for its
# post-order before anything else. All of that is the same for every call site of a fragment up to
# the call's name prefix, so it is done once per fragment (``_Template``); a network's flattened
# graph and its post-order are then assembled from the templates (``_GraphBuilder``), with the
# node names, operands and order the long way gives, and only the passes from CSE on run per cell.


@dataclasses.dataclass(frozen=True)
class _CallSite:
  """What a template gives at one call name, the same in every network that has that call.

  Attributes:
    names: the node names (``<call name>/<name in the fragment>``).
    instrs: the node instructions (reducers renamed for the call site where the fragment clones).
    inner: the nodes all of whose operands are nodes of the call, by name: shared by every graph
      with this call site (the passes replace nodes instead of changing them).
    outer: the other nodes (they read a call operand), made per graph.
    unique: names of the template's ``unique`` nodes.
    walk: ``_Template.walk`` with each run of node references as a tuple of their names (appended
      to the post-order at once); a call operand stays its index ``i`` (``~r``).
  """

  names: tuple[str, ...]
  instrs: tuple[HloInstr, ...]
  inner: Mapping[str, Any]
  outer: tuple[int, ...]
  unique: frozenset[str]
  walk: tuple[tuple[str, ...] | int, ...]


@dataclasses.dataclass(frozen=True)
class _Template:
  """A fragment's entry computation flattened (calls inlined, tuples resolved) once.

  Nodes are numbered in their post-order from the fragment's root (``hlo_cost.post_order``). A
  reference ``r`` in ``walk`` / ``root`` is node ``r`` when ``r >= 0``, else call operand ``~r``
  (the index of the parameter it is bound to); in ``operands`` it indexes the node names followed
  by the call operands.

  Attributes:
    names: node names relative to the call site's prefix.
    instrs: node instructions.
    operands: per node, its operand references.
    repeats: per node, launches per call.
    renamed: nodes whose instruction names computations that get a per-call-site prefix
      (``clone_per_call``).
    walk: the post-order with the call operands in it: node references, and ``~i`` where the
      walk first reaches call operand ``i``.
    root: reference of the fragment's result.
    unique: nodes that no other node of a network equals (CSE can skip them): those that depend
      on a weight when no two of those are equal within the fragment. A weight parameter is read
      by its call alone, so a node equal to one that depends on it reads it too, or reads an
      equal node of the call (the call's nodes are reached from outside through its result only,
      which no node of the call reads): by induction it is a node of the same call.
  """

  names: tuple[str, ...]
  instrs: tuple[HloInstr, ...]
  operands: tuple[tuple[int, ...], ...]
  repeats: tuple[int, ...]
  renamed: tuple[int, ...]
  walk: tuple[int, ...]
  root: int
  unique: tuple[int, ...]
  # Derived (``__post_init__``): ``(j, operands, repeat)`` of the nodes whose operands are all
  # nodes of the call; the other nodes; ``walk`` as runs of node references and operand indexes.
  inner: tuple[tuple[int, tuple[int, ...], int], ...] = dataclasses.field(init=False, repr=False)
  outer: tuple[int, ...] = dataclasses.field(init=False, repr=False)
  walk_runs: tuple[tuple[int, ...] | int, ...] = dataclasses.field(init=False, repr=False)
  # Call name -> its ``_CallSite`` (call names recur between networks).
  sites: dict[str, _CallSite] = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def __post_init__(self) -> None:
    n = len(self.names)
    inner = tuple((j, ops, rep) for j, (ops, rep) in enumerate(zip(self.operands, self.repeats))
                  if all(r < n for r in ops))
    inside = {j for j, _, _ in inner}
    runs: list[tuple[int, ...] | int] = []
    run: list[int] = []
    for r in self.walk:
      if r >= 0:
        run.append(r)
        continue
      if run:
        runs.append(tuple(run))
        run = []
      runs.append(~r)
    if run:
      runs.append(tuple(run))
    object.__setattr__(self, "inner", inner)
    object.__setattr__(self, "outer", tuple(j for j in range(n) if j not in inside))
    object.__setattr__(self, "walk_runs", tuple(runs))


def _template(frag: _Fragment) -> _Template:
  from cenas_jax.energy.hlo_cost import post_order  # pylint: disable=g-import-not-at-top

  # A fragment cloned per call site is inlined from its unprefixed computations, renamed per site.
  module = (frag.module if frag.clone_per_call else
            HloModuleIR("fragment", frag.computations, frag.entry))
  holes = [f"\0{i}" for i in range(len(frag.param_types))]  # never an HLO name
  graph = hlo_gpu._Graph()  # pylint: disable=protected-access
  warnings: list[str] = []
  graph.roots = [hlo_gpu._flatten(  # pylint: disable=protected-access
      module, module.entry, graph, {str(i): h for i, h in enumerate(holes)}, "", 1, warnings)]
  hlo_gpu._resolve_tuples(graph)  # pylint: disable=protected-access
  if warnings:
    raise RuntimeError(f"fragment {frag.entry}: {warnings}")
  nodes = graph.nodes
  ref = {h: ~i for i, h in enumerate(holes)}
  walk, live = [], []
  for name in post_order(graph.roots, lambda n: nodes[n].operands if n in nodes else ()):
    if name not in ref:
      ref[name] = len(live)
      live.append(nodes[name])
    walk.append(ref[name])
  for node in live:
    if node.opcode in ("tuple", "get-tuple-element"):
      # A tuple left after resolution could be resolved across the call boundary the long way.
      raise RuntimeError(f"fragment {frag.entry}: unresolved {node.opcode} {node.name}")
  n_live = len(live)
  # Nodes that depend on a weight (a parameter after the activation inputs), and whether two of
  # them are equal within the fragment (CSE on the fragment alone, the call operands as leaves).
  weights = {holes[i] for i in range(frag.n_inputs, len(holes))}
  dep: set[str] = set()
  for n in live:
    if any(o in weights or o in dep for o in n.operands):
      dep.add(n.name)
  local = hlo_gpu._Graph()  # pylint: disable=protected-access
  node_cls = hlo_gpu._Node  # pylint: disable=protected-access
  for n in live:
    local.add(node_cls(n.instr, list(n.operands), n.repeat, n.name))
  local.roots = list(graph.roots)
  merged = hlo_gpu._cse(local, [n.name for n in live])  # pylint: disable=protected-access
  if any(a in dep or b in dep for a, b in merged.items()):
    dep = set()
  return _Template(
      names=tuple(n.name for n in live), instrs=tuple(n.instr for n in live),
      operands=tuple(tuple(r if (r := ref[o]) >= 0 else n_live + ~r for o in n.operands)
                     for n in live),
      repeats=tuple(n.repeat for n in live),
      renamed=tuple(j for j, n in enumerate(live) if frag.clone_per_call and n.instr.called),
      walk=tuple(walk), root=ref[graph.roots[0]],
      unique=tuple(j for j, n in enumerate(live) if n.name in dep))


@functools.lru_cache(maxsize=8)
def _templates(C: int, N: int, num_classes: int, batch_size: int, input_hw: int  # noqa: N803
               ) -> dict[str, _Template]:
  return {k: _template(f) for k, f in _fragments(C, N, num_classes, batch_size, input_hw).items()}


# (index, id(type)) -> (type, node); the type is kept so that its id stays its own.
_PARAM_NODES: dict[tuple[int, int], tuple[TensorType, Any]] = {}


def _param_node(index: int, t: TensorType) -> Any:
  """The graph node of entry parameter ``p<index>`` of type ``t``, shared between networks (the
  passes never change a node without operands). Fragments hand out the same ``TensorType``
  objects, so they are keyed by identity."""
  hit = _PARAM_NODES.get((index, id(t)))
  if hit is None or hit[0] is not t:
    instr = HloInstr(f"p{index}", "parameter", (t,), (), (), (), str(index))
    hit = _PARAM_NODES[index, id(t)] = (t, hlo_gpu._Node(  # pylint: disable=protected-access
        instr, [], 1, instr.name))
  return hit[1]


class _GraphBuilder:
  """Builds the graph ``hlo_gpu._flatten`` + ``_resolve_tuples`` give for ``network_module``.

  The names follow ``_EntryBuilder`` (``p<i>`` parameters, ``c<i>`` calls, ``a<i>`` adds, ``<i>``
  counting the entry's instructions), a call's nodes are ``c<i>/<name in the fragment>``.
  ``order()`` is ``hlo_cost.post_order`` of the result, composed from the templates' post-orders.
  """

  def __init__(self) -> None:
    self._node = hlo_gpu._Node  # pylint: disable=protected-access
    self.graph = hlo_gpu._Graph()  # pylint: disable=protected-access
    self.n_instrs = 0
    self.n_params = 0
    self.types: dict[str, TensorType] = {}
    self.unique: set[str] = set()  # nodes CSE can skip (``_Template.unique``)
    # Entry-level value -> how the walk expands it: ("add", a, b) or ("call", template, node
    # names, operands, the site's walk); a parameter is a leaf.
    self.defs: dict[str, tuple[Any, ...]] = {}

  def param(self, t: TensorType) -> str:
    node = _param_node(self.n_params, t)
    name = node.name
    self.graph.nodes[name] = node
    self.n_params += 1
    self.n_instrs += 1
    self.types[name] = t
    return name

  def call(self, frag: _Fragment, template: _Template, inputs: Sequence[str]) -> str:
    if len(inputs) != frag.n_inputs:
      raise ValueError(f"fragment {frag.entry} takes {frag.n_inputs} inputs")
    operands = list(inputs)
    nodes, types = self.graph.nodes, self.types
    i = self.n_params
    for t in frag.param_types[frag.n_inputs:]:  # ``param`` inline (a network has ~200)
      node = _param_node(i, t)
      name = node.name
      nodes[name] = node
      types[name] = t
      operands.append(name)
      i += 1
    self.n_instrs += i - self.n_params
    self.n_params = i
    call_name = f"c{self.n_instrs}"
    self.n_instrs += 1
    site = template.sites.get(call_name)
    if site is None:
      site = template.sites[call_name] = self._site(frag, template, call_name)
    names = site.names
    new = self._node
    nodes.update(site.inner)
    self.unique |= site.unique
    refs = names + tuple(operands)
    instrs, node_operands, repeats = site.instrs, template.operands, template.repeats
    for j in site.outer:
      name = names[j]
      nodes[name] = new(instrs[j], [refs[r] for r in node_operands[j]], repeats[j], name)
    root = template.root
    if root < 0:
      return operands[~root]
    value = names[root]
    self.types[value] = frag.out_type
    self.defs[value] = ("call", template, names, operands, site.walk)
    return value

  def _site(self, frag: _Fragment, template: _Template, call_name: str) -> _CallSite:
    prefix = call_name + "/"
    # One string object per node, shared by every reference to it (str caches its hash).
    names = tuple([prefix + n for n in template.names])
    instrs = list(template.instrs)
    for j in template.renamed:
      instrs[j] = _rename_instr(instrs[j], set(frag.module.computations), call_name + "::")
    new = self._node
    inner = {names[j]: new(instrs[j], [names[r] for r in ops], repeat, names[j])
             for j, ops, repeat in template.inner}
    walk = tuple(tuple([names[r] for r in run]) if run.__class__ is tuple else run
                 for run in template.walk_runs)
    return _CallSite(names, tuple(instrs), inner, template.outer,
                     frozenset([names[j] for j in template.unique]), walk)

  def add(self, a: str, b: str) -> str:
    name = f"a{self.n_instrs}"
    self.n_instrs += 1
    t = self.types[a]
    self.graph.nodes[name] = self._node(HloInstr(name, "add", (t,), (a, b)), [a, b], 1, name)
    self.types[name] = t
    self.defs[name] = ("add", a, b)
    return name

  def order(self, root: str) -> list[str]:
    """``post_order([root], operands)`` of the graph, from the templates' post-orders.

    Inside a call every node is reached from the call's result only, so the walk visits them in
    the template's order; where the template first reaches a call operand, the walk descends into
    that entry-level value (if not yet seen) exactly as ``post_order`` would.
    """
    out: list[str] = []
    if len(self.defs) < sys.getrecursionlimit() // 4:  # the walk nests at most once per entry value
      _visit(root, self.defs, {root}, out)
      return out
    return self._order_iterative(root)

  def _order_iterative(self, root: str) -> list[str]:
    """``order`` with an explicit stack (for networks deeper than Python's recursion allows)."""
    defs, out = self.defs, []
    append = out.append

    def steps(v: str) -> Iterable[tuple[bool, str]]:
      """What visiting ``v`` does, in order: ``(False, name)`` emits, ``(True, value)`` visits."""
      d = defs.get(v)
      if d is None:  # a parameter
        yield False, v
      elif d[0] == "add":
        yield True, d[1]
        yield True, d[2]
        yield False, v
      else:
        template, names, operands = d[1:4]
        for r in template.walk:
          yield (False, names[r]) if r >= 0 else (True, operands[~r])

    seen, stack = {root}, [steps(root)]
    while stack:
      for descend, x in stack[-1]:
        if not descend:
          append(x)
        elif x not in seen:
          seen.add(x)
          stack.append(steps(x))
          break
      else:
        stack.pop()
    return out


def _visit(v: str, defs: Mapping[str, tuple[Any, ...]], seen: set[str], out: list[str]) -> None:
  """``_GraphBuilder.order``'s recursive walk from entry value ``v`` (module level: a closure that
  calls itself is a reference cycle, left to the cyclic collector)."""
  d = defs.get(v)
  if d is None:  # a parameter
    out.append(v)
    return
  if d[0] == "add":
    for x in d[1:3]:
      if x not in seen:
        seen.add(x)
        _visit(x, defs, seen, out)
    out.append(v)
    return
  operands = d[3]
  for run in d[4]:
    if run.__class__ is tuple:  # names of nodes of the call, in the walk's order
      out += run
    elif (x := operands[run]) not in seen:
      seen.add(x)
      _visit(x, defs, seen, out)


def compose(live: tuple[int, ...], config: NB201NetConfig) -> tuple[Any, list[str], set[str]]:
  """The flattened graph of ``network_module(live)``, its post-order and the nodes CSE can skip,
  from the templates."""
  key = (config.C, config.N, config.num_classes, config.batch_size, config.input_hw)
  frags, temps = _fragments(*key), _templates(*key)
  gb = _GraphBuilder()
  root = _walk_network(live, config, gb.param,
                       lambda name, inputs: gb.call(frags[name], temps[name], inputs), gb.add)
  gb.graph.roots = [root]
  return gb.graph, gb.order(root), gb.unique
