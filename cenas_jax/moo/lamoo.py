"""LaMOO: multi-objective optimization by learning space partitions (Zhao et al., ICLR 2022).

One LaMOO step over a **finite** candidate set (e.g. the NAS-Bench-201 cells):

1. ``build_tree``: from the evaluated samples ``(X, Y)`` (objectives maximized), recursively split
   nodes. A node's samples are ranked by dominance number (how many other samples in the node
   dominate each one); the better half is labelled "good", a polynomial-kernel SVM is fitted on
   the encodings against these labels, and the good / bad children get the good / bad *samples*
   (by label, as in the official code). A node splits only when it holds more than
   ``min_samples_to_split`` samples, the depth / node-count limits allow it, and the SVM predicts
   both classes on its own samples. The SVM only routes *new* points.
2. ``select_path``: node value = hypervolume of the node's samples; ``UCB = HV + 2 Cp
   sqrt(2 ln n_parent / n)`` (infinite at the root). ``mode="leaf"`` takes the best-UCB leaf over
   the whole tree (the code's default), ``mode="path"`` descends by best-UCB child (paper Alg. 1).
   Ties are broken at random with the caller's ``numpy.random.Generator``.
3. ``propose``: the selected region is the intersection of the SVM half-spaces along the path.
   Because the candidate set is finite, rejection sampling is done exhaustively: every candidate is
   classified once, candidates in ``exclude_mask`` (already evaluated or queued) are removed, and
   ``k`` distinct indices are drawn uniformly without replacement (the same distribution as
   rejection sampling of uniform candidates, without duplicates and without an unbounded loop).
   When the region holds fewer than ``k`` available candidates, the path is relaxed by dropping
   its last node, repeatedly (as LaMOO does). ``method="ehvi"`` instead ranks the in-region
   candidates by exact 2-D expected hypervolume improvement under independent exact GPs
   (``cenas_jax.moo.gp``), greedily for ``k > 1`` (each chosen candidate's predicted mean joins the
   front: the "Kriging believer" heuristic).

Presets: ``LaMOOConfig.cenas()`` (CE-NAS's embedded LaMOO: split when > 10 samples, tree height
<= 3, weak dominance counts, floor(n/2) good) and ``LaMOOConfig.lamoo()`` (official LaMOO: > 15
samples, at most 50 nodes, strict dominance counts, floor(n/2) + 1 good). Both use
SVC(poly, degree 4, gamma="scale", C=1).

State is plain arrays (``LaMOOState``: candidate indices of the evaluated samples and their
objectives), so it round-trips through JSON; the tree is rebuilt from it on every step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from cenas_jax.moo import gp as gp_lib
from cenas_jax.moo import svm as svm_lib
from cenas_jax.moo.hypervolume import hypervolume
from cenas_jax.moo.pareto import as_objectives, dominance_counts


@dataclasses.dataclass(frozen=True)
class LaMOOConfig:
  """How LaMOO partitions the samples.

  Attributes:
    min_samples_to_split: a node splits only if it holds strictly more samples than this.
    max_height: deepest level that leaves may reach (root depth 0); ``None``: unlimited.
      CE-NAS's ``MAX_TREE_HEIGHT = 3`` allows at most 8 leaves.
    max_nodes: stop splitting once the tree would exceed this many nodes; ``None``: unlimited.
    weak_dominance: rank by counts of weakly dominating samples (CE-NAS) instead of strictly
      dominating ones (LaMOO, pygmo).
    extra_good: the ``floor(n / 2) + extra_good`` best-ranked samples are labelled good
      (0 in CE-NAS, 1 in LaMOO).
    svm_degree: polynomial kernel degree.
    svm_gamma: ``"scale"``, ``"auto"`` or a positive float.
    svm_coef0: polynomial kernel offset.
    svm_c: SVM box constraint.
  """

  min_samples_to_split: int = 10
  max_height: int | None = 3
  max_nodes: int | None = None
  weak_dominance: bool = True
  extra_good: int = 0
  svm_degree: int = 4
  svm_gamma: float | str = "scale"
  svm_coef0: float = 0.0
  svm_c: float = 1.0

  def __post_init__(self):
    if self.min_samples_to_split < 1:
      raise ValueError(f"min_samples_to_split must be >= 1; got {self.min_samples_to_split}.")
    if self.max_height is not None and self.max_height < 0:
      raise ValueError(f"max_height must be >= 0 or None; got {self.max_height}.")
    if self.max_nodes is not None and self.max_nodes < 1:
      raise ValueError(f"max_nodes must be >= 1 or None; got {self.max_nodes}.")
    if self.extra_good not in (0, 1):
      raise ValueError(f"extra_good must be 0 or 1; got {self.extra_good}.")

  @classmethod
  def cenas(cls) -> LaMOOConfig:
    """CE-NAS's LaMOO (``lamoo/SearchEngine.py``, ``Classifier.py``)."""
    return cls(min_samples_to_split=10, max_height=3, max_nodes=None, weak_dominance=True,
               extra_good=0)

  @classmethod
  def lamoo(cls) -> LaMOOConfig:
    """The official LaMOO (``aoiang/LaMOO``)."""
    return cls(min_samples_to_split=15, max_height=None, max_nodes=50, weak_dominance=False,
               extra_good=1)

  @classmethod
  def preset(cls, name: str) -> LaMOOConfig:
    """``"cenas"`` or ``"lamoo"``."""
    if name == "cenas":
      return cls.cenas()
    if name == "lamoo":
      return cls.lamoo()
    raise ValueError(f"Unknown LaMOO preset {name!r}; use 'cenas' or 'lamoo'.")


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
  """One node of the partition tree.

  Attributes:
    node_id: index in ``Tree.nodes`` (breadth-first order; root is 0).
    parent: parent id, -1 for the root.
    depth: 0 for the root.
    sample_idx: indices (into ``Tree.x`` / ``Tree.y``) of the samples in this node.
    hv: hypervolume of those samples w.r.t. ``Tree.ref_point``.
    good_child: id of the child holding the good samples, -1 for a leaf.
    bad_child: id of the other child, -1 for a leaf.
    svm: classifier routing new points (``True`` -> good child); ``None`` for a leaf.
  """

  node_id: int
  parent: int
  depth: int
  sample_idx: np.ndarray
  hv: float
  good_child: int = -1
  bad_child: int = -1
  svm: svm_lib.KernelSVM | None = None

  @property
  def is_leaf(self) -> bool:
    return self.good_child < 0

  @property
  def n_samples(self) -> int:
    return int(self.sample_idx.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Tree:
  """A LaMOO partition tree (rebuilt from the samples at every step).

  Attributes:
    x: sample encodings, shape ``(n, d)``.
    y: sample objectives, shape ``(n, m)``, maximized.
    ref_point: hypervolume reference point, shape ``(m,)``.
    nodes: all nodes, breadth-first.
    config: the configuration used to build it.
  """

  x: np.ndarray
  y: np.ndarray
  ref_point: np.ndarray
  nodes: tuple[Node, ...]
  config: LaMOOConfig

  @property
  def leaves(self) -> tuple[int, ...]:
    return tuple(nd.node_id for nd in self.nodes if nd.is_leaf)

  @property
  def height(self) -> int:
    return max(nd.depth for nd in self.nodes)


def split_labels(y: np.ndarray, config: LaMOOConfig) -> np.ndarray:
  """Good/bad labels of a node's samples: the best ``floor(n/2) + extra_good`` by dominance number.

  Args:
    y: objectives of the node's samples, shape ``(n, m)``, maximized.
    config: labelling rule.

  Returns:
    Bool array of shape ``(n,)``, ``True`` = good. Ties keep sample order (stable sort).
  """
  counts = dominance_counts(y, weak=config.weak_dominance)
  order = np.argsort(counts, kind="stable")
  labels = np.zeros(y.shape[0], dtype=bool)
  labels[order[:y.shape[0] // 2 + config.extra_good]] = True
  return labels


def _validate_samples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x)
  y = as_objectives(y, "Y_samples")
  if x.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"X_samples must have shape (n, d) with n = len(Y_samples) = {y.shape[0]}; "
                     f"got {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("X_samples holds NaN or inf.")
  return x, y


def build_tree(x_samples: np.ndarray, y_samples: np.ndarray, ref_point: np.ndarray,
               config: LaMOOConfig) -> Tree:
  """Builds the LaMOO partition tree from scratch (deterministic).

  Nodes are split breadth-first; with ``max_nodes`` set, splitting stops as soon as another split
  would exceed it.

  Args:
    x_samples: encodings of the evaluated samples, shape ``(n, d)``.
    y_samples: their objectives, shape ``(n, m)``, maximized.
    ref_point: hypervolume reference point, shape ``(m,)``.
    config: split rules and SVM settings.

  Returns:
    The tree (a single root leaf when nothing can be split, e.g. ``n <= min_samples_to_split``).
  """
  x, y = _validate_samples(x_samples, y_samples)
  ref = np.asarray(ref_point, dtype=np.float64)
  if ref.shape != (y.shape[1],):
    raise ValueError(f"ref_point must have shape ({y.shape[1]},); got {ref.shape}.")
  # Mutable drafts: [parent, depth, sample_idx, good, bad, svm].
  drafts: list[list[Any]] = [[-1, 0, np.arange(y.shape[0]), -1, -1, None]]
  frontier = [0]
  while frontier:
    next_frontier = []
    for nid in frontier:
      parent, depth, idx, _, _, _ = drafts[nid]
      if idx.shape[0] <= config.min_samples_to_split:
        continue
      if config.max_height is not None and depth >= config.max_height:
        continue
      if config.max_nodes is not None and len(drafts) + 2 > config.max_nodes:
        continue
      labels = split_labels(y[idx], config)
      if labels.all() or not labels.any():
        continue
      model = svm_lib.fit_svm(x[idx], labels, degree=config.svm_degree, gamma=config.svm_gamma,
                              coef0=config.svm_coef0, c=config.svm_c)
      pred = svm_lib.predict(model, x[idx])
      if pred.all() or not pred.any():
        continue
      good_id, bad_id = len(drafts), len(drafts) + 1
      drafts.append([nid, depth + 1, idx[labels], -1, -1, None])
      drafts.append([nid, depth + 1, idx[~labels], -1, -1, None])
      drafts[nid][3:6] = [good_id, bad_id, model]
      next_frontier += [good_id, bad_id]
    frontier = next_frontier
  nodes = tuple(
      Node(node_id=i, parent=p, depth=dep, sample_idx=idx, hv=hypervolume(y[idx], ref),
           good_child=g, bad_child=b, svm=m)
      for i, (p, dep, idx, g, b, m) in enumerate(drafts))
  return Tree(x=x, y=y, ref_point=ref, nodes=nodes, config=config)


def node_ucb(tree: Tree, node_id: int, cp: float) -> float:
  """``HV + 2 Cp sqrt(2 ln n_parent / n)``; ``inf`` for the root or an empty node."""
  node = tree.nodes[node_id]
  if node.parent < 0 or node.n_samples == 0:
    return math.inf
  n_parent = tree.nodes[node.parent].n_samples
  return node.hv + 2.0 * cp * math.sqrt(2.0 * math.log(n_parent) / node.n_samples)


def _argmax_random_tie(values: Sequence[float], rng: np.random.Generator) -> int:
  vals = np.asarray(values, dtype=np.float64)
  best = np.flatnonzero(vals == vals.max())
  return int(best[0]) if best.size == 1 else int(rng.choice(best))


def path_to(tree: Tree, node_id: int) -> tuple[int, ...]:
  """Node ids from the root down to ``node_id``."""
  out = [node_id]
  while tree.nodes[out[-1]].parent >= 0:
    out.append(tree.nodes[out[-1]].parent)
  return tuple(reversed(out))


def select_path(tree: Tree, cp: float, rng: np.random.Generator,
                mode: Literal["leaf", "path"] = "leaf") -> tuple[int, ...]:
  """Selects the region to sample: node ids from the root to the chosen leaf.

  Args:
    tree: the partition tree.
    cp: UCB exploration constant (objective-HV units; CE-NAS uses 30, LaMOO advises ~10% of the
      maximal HV).
    rng: breaks UCB ties.
    mode: ``"leaf"`` (best-UCB leaf anywhere, CE-NAS/LaMOO code default) or ``"path"`` (descend by
      best-UCB child).

  Returns:
    The path as a tuple of node ids, starting with the root (0).
  """
  if cp < 0:
    raise ValueError(f"cp must be >= 0; got {cp}.")
  if mode == "leaf":
    leaves = tree.leaves
    return path_to(tree, leaves[_argmax_random_tie([node_ucb(tree, i, cp) for i in leaves], rng)])
  if mode == "path":
    path = [0]
    while not tree.nodes[path[-1]].is_leaf:
      node = tree.nodes[path[-1]]
      kids = (node.good_child, node.bad_child)
      path.append(kids[_argmax_random_tie([node_ucb(tree, k, cp) for k in kids], rng)])
    return tuple(path)
  raise ValueError(f"mode must be 'leaf' or 'path'; got {mode!r}.")


def _check_path(tree: Tree, path: Sequence[int]) -> None:
  if not path or path[0] != 0:
    raise ValueError(f"path must start at the root (0); got {tuple(path)}.")
  for parent, child in zip(path[:-1], path[1:]):
    node = tree.nodes[parent]
    if child not in (node.good_child, node.bad_child):
      raise ValueError(f"path {tuple(path)}: node {child} is not a child of node {parent}.")


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
  """Candidates available inside a (possibly relaxed) path region.

  Attributes:
    mask: bool, shape ``(n_candidates,)``: in the region and not excluded.
    depth_used: how many path constraints were applied (``len(path) - 1`` when not relaxed).
    path: the path as requested.
  """

  mask: np.ndarray
  depth_used: int
  path: tuple[int, ...]

  @property
  def relaxed(self) -> bool:
    return self.depth_used < len(self.path) - 1

  @property
  def indices(self) -> np.ndarray:
    return np.flatnonzero(self.mask)


def region_candidates(tree: Tree, path: Sequence[int], x_candidates: np.ndarray,
                      exclude_mask: np.ndarray | None = None, min_count: int = 1) -> Region:
  """Classifies the candidates along ``path`` and relaxes the path until ``min_count`` remain.

  Args:
    tree: the partition tree.
    path: node ids from the root (from ``select_path``).
    x_candidates: candidate encodings, shape ``(n_candidates, d)`` (same encoding as the samples).
    exclude_mask: bool, shape ``(n_candidates,)``; ``True`` = not allowed (evaluated or queued).
    min_count: the region is relaxed (last path node dropped, repeatedly) while it holds fewer
      available candidates than this; at the root every available candidate qualifies.

  Returns:
    The ``Region``; its mask may hold fewer than ``min_count`` candidates only when fewer than
    that are available at all.
  """
  path = tuple(int(p) for p in path)
  _check_path(tree, path)
  x_c = np.asarray(x_candidates)
  if x_c.ndim != 2 or x_c.shape[1] != tree.x.shape[1]:
    raise ValueError(f"X_candidates must have shape (n, {tree.x.shape[1]}) like the samples; got "
                     f"{x_c.shape}.")
  avail = np.ones(x_c.shape[0], dtype=bool)
  if exclude_mask is not None:
    excl = np.asarray(exclude_mask)
    if excl.shape != (x_c.shape[0],) or excl.dtype != bool:
      raise ValueError(f"exclude_mask must be a bool array of shape ({x_c.shape[0]},); got dtype "
                       f"{excl.dtype}, shape {excl.shape}.")
    avail &= ~excl
  masks = [avail]
  for parent, child in zip(path[:-1], path[1:]):
    node = tree.nodes[parent]
    prev = masks[-1]
    cur = np.zeros_like(prev)
    if prev.any():
      go_good = svm_lib.predict(node.svm, x_c[prev])
      cur[prev] = go_good if child == node.good_child else ~go_good
    masks.append(cur)
  depth = len(masks) - 1
  while depth > 0 and int(masks[depth].sum()) < min_count:
    depth -= 1
  return Region(mask=masks[depth], depth_used=depth, path=path)


def propose(tree: Tree, path: Sequence[int], x_candidates: np.ndarray,
            exclude_mask: np.ndarray | None, k: int, rng: np.random.Generator,
            method: Literal["rejection", "ehvi"] = "rejection") -> np.ndarray:
  """Proposes ``k`` distinct candidate indices inside the region of ``path``.

  Args:
    tree: the partition tree.
    path: node ids from the root (``select_path``).
    x_candidates: candidate encodings, shape ``(n_candidates, d)``.
    exclude_mask: bool, shape ``(n_candidates,)``, ``True`` = never propose (evaluated / queued);
      ``None`` excludes nothing.
    k: number of proposals (>= 1).
    rng: randomness of the uniform draw (``"rejection"``) or of nothing (``"ehvi"`` is
      deterministic: ties go to the lowest index).
    method: ``"rejection"`` (uniform without replacement in the region) or ``"ehvi"`` (greedy exact
      2-D EHVI under per-objective GPs fitted to all samples; needs 2 objectives).

  Returns:
    Int64 indices into ``x_candidates``, distinct, of length ``min(k, available)`` (fewer than
    ``k`` only when fewer candidates are available in the whole space).
  """
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}.")
  region = region_candidates(tree, path, x_candidates, exclude_mask, min_count=k)
  idx = region.indices
  if idx.size <= k:
    return idx.astype(np.int64)
  if method == "rejection":
    return np.sort(rng.choice(idx, size=k, replace=False)).astype(np.int64)
  if method == "ehvi":
    return idx[ehvi_select(tree, np.asarray(x_candidates)[idx], k)].astype(np.int64)
  raise ValueError(f"method must be 'rejection' or 'ehvi'; got {method!r}.")


def ehvi_select(tree: Tree, x_pool: np.ndarray, k: int) -> np.ndarray:
  """Greedy (Kriging-believer) batch of ``k`` pool rows by exact 2-D EHVI; returns row indices."""
  if tree.y.shape[1] != 2:
    raise ValueError(f"method='ehvi' supports 2 objectives (exact 2-D EHVI); got "
                     f"{tree.y.shape[1]}. Use method='rejection'.")
  means, stds = [], []
  for j in range(2):
    model = gp_lib.fit_gp(tree.x, tree.y[:, j])
    mu, sd = gp_lib.gp_predict(model, x_pool)
    means.append(mu)
    stds.append(sd)
  mean = np.stack(means, axis=1)
  std = np.stack(stds, axis=1)
  front = tree.y
  chosen: list[int] = []
  available = np.ones(x_pool.shape[0], dtype=bool)
  for _ in range(k):
    score = gp_lib.expected_hypervolume_improvement_2d(mean, std, front, tree.ref_point)
    score[~available] = -np.inf
    best = int(np.argmax(score))
    chosen.append(best)
    available[best] = False
    front = np.vstack([front, mean[best]])
  return np.asarray(chosen, dtype=np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class LaMOOState:
  """What LaMOO remembers: evaluated candidate indices and their objectives (plain arrays).

  Attributes:
    sample_idx: int64 indices into the candidate set, shape ``(n,)``.
    y: objectives (maximized), shape ``(n, m)``.
  """

  sample_idx: np.ndarray
  y: np.ndarray

  @classmethod
  def empty(cls, n_objectives: int) -> LaMOOState:
    return cls(sample_idx=np.zeros(0, np.int64), y=np.zeros((0, n_objectives)))

  def add(self, idx: np.ndarray, y: np.ndarray) -> LaMOOState:
    """Returns a new state with samples ``idx`` (shape ``(b,)``) and objectives ``y`` appended."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    y = as_objectives(np.asarray(y, dtype=np.float64).reshape(idx.shape[0], -1), "y")
    if y.shape[1] != self.y.shape[1]:
      raise ValueError(f"LaMOOState.add: expected {self.y.shape[1]} objectives; got {y.shape[1]}.")
    return LaMOOState(sample_idx=np.concatenate([self.sample_idx, idx]),
                      y=np.concatenate([self.y, y]))

  def to_json_dict(self) -> dict[str, Any]:
    return {"sample_idx": self.sample_idx.tolist(), "y": self.y.tolist(),
            "n_objectives": int(self.y.shape[1])}

  @classmethod
  def from_json_dict(cls, d: dict[str, Any]) -> LaMOOState:
    try:
      m = int(d["n_objectives"])
      idx = np.asarray(d["sample_idx"], dtype=np.int64).reshape(-1)
      y = np.asarray(d["y"], dtype=np.float64).reshape(-1, m)
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"LaMOOState.from_json_dict: malformed state ({e}); expected keys "
                       "sample_idx, y, n_objectives.") from e
    if idx.shape[0] != y.shape[0]:
      raise ValueError(f"LaMOOState.from_json_dict: {idx.shape[0]} indices but {y.shape[0]} "
                       "objective rows.")
    return cls(sample_idx=idx, y=as_objectives(y, "y") if y.shape[0] else y)


def lamoo_step(state: LaMOOState, x_candidates: np.ndarray, ref_point: np.ndarray,
               config: LaMOOConfig, k: int, rng: np.random.Generator, *, cp: float,
               mode: Literal["leaf", "path"] = "leaf",
               method: Literal["rejection", "ehvi"] = "rejection",
               extra_exclude: np.ndarray | None = None) -> np.ndarray:
  """One LaMOO step: build the tree, select a region, propose ``k`` unseen candidates.

  Args:
    state: evaluated samples (indices into ``x_candidates``) and their objectives.
    x_candidates: candidate encodings, shape ``(n_candidates, d)``.
    ref_point: hypervolume reference point, shape ``(m,)``.
    config: tree settings (``LaMOOConfig.cenas()`` or ``.lamoo()``).
    k: number of proposals.
    rng: explicit randomness.
    cp: UCB exploration constant.
    mode: ``"leaf"`` or ``"path"`` selection.
    method: ``"rejection"`` or ``"ehvi"``.
    extra_exclude: optional bool mask of candidates to skip as well (e.g. queued ones).

  Returns:
    Distinct candidate indices never in ``state.sample_idx`` (nor ``extra_exclude``).
  """
  x_c = np.asarray(x_candidates)
  if state.sample_idx.size and (state.sample_idx.min() < 0 or state.sample_idx.max() >= x_c.shape[0]):
    raise ValueError(f"LaMOOState holds indices outside [0, {x_c.shape[0]}).")
  exclude = np.zeros(x_c.shape[0], dtype=bool)
  exclude[state.sample_idx] = True
  if extra_exclude is not None:
    exclude |= np.asarray(extra_exclude, dtype=bool)
  if state.sample_idx.size == 0:
    idx = np.flatnonzero(~exclude)
    return np.sort(rng.choice(idx, size=min(k, idx.size), replace=False)).astype(np.int64)
  tree = build_tree(x_c[state.sample_idx], state.y, ref_point, config)
  path = select_path(tree, cp, rng, mode)
  return propose(tree, path, x_c, exclude, k, rng, method)
