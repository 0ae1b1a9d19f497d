"""One-shot search on a masked tabular supernet: SPOS training, controllers and baselines.

``Supernet`` wraps the training core: its train step (``training.step.make_train_step``,
data-parallel over the ``data`` mesh, compiled once) trains the entangled weights on one sampled
architecture, which travels *inside the batch* (one index vector per row), so every architecture
uses the same compiled step. ``score`` rates K candidates on one validation batch in one call of
the compiled eval step (the K x V rows each carry their candidate's index vector).

Search methods, all on copies of the same SPOS-trained supernet and for the same number of steps,
each step = one supernet step on the step's first candidate + scoring K candidates:

- ``run_controller``: the REINFORCE policy of ``cenas_jax.controller.arch_policy`` (accuracy-only,
  TuNAS, MnasNet or TabNAS rejection sampling), policy and supernet steps alternating.
- ``run_random``: K uniform architectures per step.
- ``run_evolution``: regularized evolution (Real et al. 2019): tournament selection, one mutated
  decision per child, the oldest member dies.
- ``run_ladder``: a single-budget method (the controller or evolution) run over a ladder of energy
  budgets, tightest first, splitting the same step count and carrying its state (the policy, the
  population) from one budget to the next: a front-finder with the step count of the others.

Every evaluated candidate is recorded as ``(method, step, arch, quality, energy_j)``. Those
qualities are each step's random validation batch, so the best of many is biased upwards;
``score_on_val`` rates architectures on the whole validation fold instead.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.controller import arch_policy
from cenas_jax.spaces.tabular import TabularSpace
from cenas_jax.supernets import tabular as sn
from cenas_jax.tabular_nas.data import Split
from cenas_jax.training import step as step_lib

EnergyFn = Callable[[np.ndarray], np.ndarray]


def per_example_loss(task: str, out: jax.Array, y: jax.Array) -> jax.Array:
  if task == "regression":
    return jnp.square(out[:, 0] - y)
  return optax.softmax_cross_entropy_with_integer_labels(out, y)


def per_example_quality(task: str, out: jax.Array, y: jax.Array) -> jax.Array:
  """Accuracy per row, or the squared error per row (regression; turned into 1 - RMSE later)."""
  if task == "regression":
    return jnp.square(out[:, 0] - y)
  return (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)


def _apply(module, params, model_state, x, *extra, train, weights, rng=None, dropout=False):
  """The module's output and model state; ``dropout`` (inference mode only, with ``rng``) draws
  the architecture's dropout noise with BatchNorm on its running averages."""
  variables = {"params": params, **model_state}
  kw = {"train": train, "row_weights": weights}
  if not train:
    if dropout:
      return module.apply(variables, x, *extra, **kw, dropout=True, rngs={"dropout": rng}), model_state
    return module.apply(variables, x, *extra, **kw), model_state
  out, upd = module.apply(variables, x, *extra, **kw, rngs={"dropout": rng},
                          mutable=list(model_state))
  return out, {**model_state, **upd}


def make_loss_fn(module, task: str, with_arch: bool):
  def loss_fn(params, model_state, batch, weights, rng):
    extra = (batch["arch"],) if with_arch else ()
    out, model_state = _apply(module, params, model_state, batch["x"], *extra, train=True,
                              weights=weights, rng=rng)
    return per_example_loss(task, out, batch["y"]), (model_state, {})
  return loss_fn


@dataclasses.dataclass
class Supernet:
  """A supernet's train state, compiled train step and K-candidate scorer."""

  space: TabularSpace
  split: Split
  mesh: Any
  batch_size: int
  k: int
  val_batch: int
  lr: float = 1e-3
  weight_decay: float = 1e-5
  seed: int = 0
  # Score with each candidate's dropout noise drawn (``score``'s docstring says why).
  score_dropout: bool = False

  def __post_init__(self):
    if self.score_dropout and self.space.kind == "ftt":
      raise ValueError("score_dropout needs a space with dropout decisions (mlp or resnet); the "
                       "FT-Transformer's dropout is fixed")
    self.module = sn.supernet(self.space)
    key = jax.random.key(self.seed)
    variables = sn.init_supernet(self.space, key)
    optimizer = optax.adamw(self.lr, weight_decay=self.weight_decay)
    self.train_step = step_lib.make_train_step(make_loss_fn(self.module, self.split.task, True),
                                               optimizer, mesh=self.mesh,
                                               batch_size=self.batch_size)
    task, k, v = self.split.task, self.k, self.val_batch
    module, score_dropout, base_key = self.module, self.score_dropout, jax.random.key(self.seed + 2)

    def eval_fn(params, model_state, batch, weights):
      del weights
      # The call's draw number (the same on every row; padding rows carry 0) picks its noise.
      rng = jax.random.fold_in(base_key, jnp.max(batch["draw"])) if score_dropout else None
      out, _ = _apply(module, params, model_state, batch["x"], batch["arch"], train=False,
                      weights=None, rng=rng, dropout=score_dropout)
      q = per_example_quality(task, out, batch["y"])
      owner = batch["cand"]
      return {f"q{j}": q * (owner == j) for j in range(k)}

    self.eval_step = step_lib.make_eval_step(eval_fn, mesh=self.mesh, batch_size=k * v)
    self.state = step_lib.init_train_state(
        variables["params"], optimizer, jax.random.key(self.seed + 1),
        model_state={n: t for n, t in variables.items() if n != "params"}, mesh=self.mesh)
    self.rng = np.random.default_rng(self.seed)
    self.draws = 0  # eval-step calls so far: each draws its own dropout noise

  def copy(self, seed: int) -> "Supernet":
    """A second supernet sharing the compiled steps, with its own copy of the weights."""
    other = object.__new__(Supernet)
    other.__dict__.update(self.__dict__)
    other.state = jax.tree.map(lambda a: a.copy(), self.state)
    other.rng = np.random.default_rng(seed)
    return other

  def train(self, arch: np.ndarray) -> float:
    """One step on ``arch`` with a random training batch; returns the loss."""
    rows = self.split.train[self.rng.integers(0, len(self.split.train), self.batch_size)]
    batch = {"x": self.split.x[rows], "y": self.split.y[rows],
             "arch": np.broadcast_to(arch, (self.batch_size, len(arch))).copy()}
    self.state, metrics = self.train_step(self.state, batch)
    return float(metrics["loss"])

  def score(self, archs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Quality of K candidates on validation ``rows`` (default: a random batch).

    Accuracy for classification; ``1 - RMSE`` of the standardized target for regression.

    By default in inference mode, where dropout is the identity: the score (and the energy) then
    do not depend on the dropout decisions, and a search picks them at random. With
    ``score_dropout`` each row draws its candidate's dropout noise (BatchNorm still on running
    averages), so the score is the expected quality under that noise and high rates score lower.
    Measured why it matters: a 10-block ResNet found on California housing with dropouts 0.2-0.9
    retrains to 132.9k USD RMSE, the same network with every dropout 0.1 to 49.8k (WORKSPACE.md 7.4).
    """
    k, v = self.k, self.val_batch
    assert archs.shape[0] == k, archs.shape
    if rows is None:
      rows = self.split.val[self.rng.integers(0, len(self.split.val), v)]
    total, n = np.zeros(k), 0
    for start in range(0, len(rows), v):
      r = rows[start:start + v]  # a short last chunk is padded (weight 0) by the eval step
      batch = {"x": np.tile(self.split.x[r], (k, 1)), "y": np.tile(self.split.y[r], k),
               "arch": np.repeat(archs, len(r), axis=0),
               "cand": np.repeat(np.arange(k, dtype=np.int32), len(r)),
               "draw": np.full(k * len(r), self.draws, np.int32)}
      self.draws += 1
      sums = self.eval_step(self.state, batch)
      total += np.array([float(sums[f"q{j}"]) for j in range(k)])
      n += len(r)
    q = total / n
    return 1.0 - np.sqrt(q) if self.split.task == "regression" else q


def spos(net: Supernet, steps: int, progress: Callable[[int], None] | None = None) -> list[float]:
  """Single-path one-shot training: a uniform architecture per step."""
  losses = []
  for t in range(steps):
    losses.append(net.train(net.space.sample(net.rng)))
    if progress is not None:
      progress(t)
  return losses


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a search optimizes: the reward kind, the energy function and budget."""

  reward: str  # arch_policy.REWARDS
  energy_fn: EnergyFn
  e0_j: float

  def feasible(self, e: np.ndarray) -> np.ndarray:
    return np.ones_like(e, bool) if self.reward in ("accuracy",) else e <= self.e0_j * (1 + 1e-9)

  def fitness(self, q: np.ndarray, e: np.ndarray, config: arch_policy.PolicyConfig) -> np.ndarray:
    if self.reward == "tabnas":
      return np.where(self.feasible(e), q, q - 10.0)
    return arch_policy.reward(config, q, e, self.e0_j)


def _record(method, t, archs, q, e):
  return [{"method": method, "step": t, "arch": a.tolist(), "quality": float(qi),
           "energy_j": float(ei)} for a, qi, ei in zip(archs, q, e)]


def run_controller(net: Supernet, obj: Objective, config: arch_policy.PolicyConfig, steps: int,
                   seed: int, *, method: str, n_mc: int = 256, oversample: int = 8,
                   max_rounds: int = 16, progress: Callable[[int], None] | None = None,
                   state: dict | None = None) -> tuple[np.ndarray, list[dict], dict]:
  """REINFORCE search; returns the final architecture, the records and ``{"policy": ...}``.

  With the TabNAS reward, each step's k candidates are rejection-sampled from batches of
  ``k * oversample`` (at most ``max_rounds`` batches) so that they all meet the energy budget.
  ``state`` (a previous call's third return) continues that policy instead of a uniform one.
  """
  policy = state["policy"] if state else arch_policy.init_policy(config, net.space.n_choices)
  key = jax.random.key(seed)
  records, skipped = [], 0
  for t in range(steps):
    key, k1, k2 = jax.random.split(key, 3)
    if config.reward == "tabnas":
      # Rejection sampling: draw batches of k x oversample until k candidates are feasible (a
      # tight budget leaves few feasible ones while the policy is still wide); the step is skipped
      # only if max_rounds batches hold none.
      feasible = []
      for r in range(max_rounds):
        batch = np.asarray(arch_policy.sample(policy, jax.random.fold_in(k1, r), net.k * oversample))
        feasible.append(batch[obj.feasible(obj.energy_fn(batch))])
        if sum(len(f) for f in feasible) >= net.k:
          break
      pool = np.concatenate(feasible)
      if not len(pool):
        skipped += 1
        continue
      cand = pool[np.arange(net.k) % len(pool)]
      mc = np.asarray(arch_policy.sample(policy, k2, n_mc))
      mc_ok = obj.feasible(obj.energy_fn(mc))
    else:
      cand = np.asarray(arch_policy.sample(policy, k1, net.k))
      mc = mc_ok = None
    net.train(cand[0])
    q = net.score(cand)
    e = obj.energy_fn(cand)
    policy, _ = arch_policy.update(config, policy, cand, arch_policy.reward(config, q, e, obj.e0_j),
                                   mc, mc_ok)
    records += _record(method, t, cand, q, e)
    if progress is not None:
      progress(t)
  final = arch_policy.greedy(policy)
  if config.reward == "tabnas" and not obj.feasible(obj.energy_fn(final[None]))[0]:
    # TabNAS returns the feasible architecture with the highest probability.
    pool = np.asarray(arch_policy.sample(policy, key, 1024))
    ok = obj.feasible(obj.energy_fn(pool))
    if ok.any():
      pool = pool[ok]
      lp = np.asarray(arch_policy.log_prob(policy["logits"], policy["valid"], pool))
      final = pool[int(np.argmax(lp))]
  # A short search leaves the policy far from converged, so the policy's choice competes with the
  # best candidates it sampled, all re-scored on the whole validation fold.
  if records:
    final = _best(net, obj, config, records, net.k - 1, extra=final)
  return final, records, {"policy": policy, "skipped_steps": skipped}


def _best(net: Supernet, obj: Objective, config, records: list[dict], top: int,
          extra: np.ndarray | None = None) -> np.ndarray:
  """Re-scores the ``top`` best (feasible) recorded candidates, and ``extra``, on the whole
  validation fold; the best under the objective wins."""
  archs = np.array([r["arch"] for r in records], np.int32)
  q = np.array([r["quality"] for r in records])
  e = np.array([r["energy_j"] for r in records])
  fit = obj.fitness(q, e, config)
  _, first = np.unique(np.array([net.space.canonical(a) for a in archs]), axis=0,
                          return_index=True)
  order = first[np.argsort(-fit[first])][:min(top, net.k)]
  cand = archs[order]
  if extra is not None:
    cand = np.concatenate([np.asarray(extra, np.int32)[None], cand])[:net.k]
  full_q = score_on_val(net, cand)
  full_fit = obj.fitness(full_q, obj.energy_fn(cand), config)
  return cand[int(np.argmax(full_fit))]


def run_random(net: Supernet, obj: Objective, config: arch_policy.PolicyConfig, steps: int,
               seed: int, *, progress=None) -> tuple[np.ndarray, list[dict]]:
  rng = np.random.default_rng(seed)
  records = []
  for t in range(steps):
    cand = net.space.sample(rng, net.k)
    net.train(cand[0])
    records += _record("random", t, cand, net.score(cand), obj.energy_fn(cand))
    if progress is not None:
      progress(t)
  return _best(net, obj, config, records, net.k), records


def run_evolution(net: Supernet, obj: Objective, config: arch_policy.PolicyConfig, steps: int,
                  seed: int, *, population: int = 32, tournament: int = 8,
                  method: str = "evolution", progress=None,
                  state: dict | None = None) -> tuple[np.ndarray, list[dict], dict]:
  """Regularized evolution with ``net.k`` children per step (the first steps fill the population
  with uniform samples); returns the best architecture, the records and ``{"members": ...}``.

  ``state`` (a previous call's third return) starts from that population, its members' fitness
  recomputed under ``obj`` from their recorded quality and energy.
  """
  rng = np.random.default_rng(seed)
  n_choices = net.space.n_choices
  pop: collections.deque = collections.deque()
  if state:
    members = state["members"]
    fit = obj.fitness(np.array([m[1] for m in members]), np.array([m[2] for m in members]), config)
    pop.extend((m[0], float(f), m[1], m[2]) for m, f in zip(members, fit))
  records = []
  for t in range(steps):
    if len(pop) < population:
      cand = net.space.sample(rng, net.k)
    else:
      cand = []
      members = list(pop)
      for _ in range(net.k):
        picks = rng.choice(len(members), size=min(tournament, len(members)), replace=False)
        parent = max((members[i] for i in picks), key=lambda m: m[1])[0].copy()
        j = rng.integers(len(n_choices))
        parent[j] = (parent[j] + rng.integers(1, n_choices[j])) % n_choices[j] if n_choices[j] > 1 \
            else parent[j]
        cand.append(parent)
      cand = np.array(cand, np.int32)
    net.train(cand[0])
    q, e = net.score(cand), obj.energy_fn(cand)
    for a, f, qi, ei in zip(cand, obj.fitness(q, e, config), q, e):
      pop.append((a, float(f), float(qi), float(ei)))
      if len(pop) > population:
        pop.popleft()
    records += _record(method, t, cand, q, e)
    if progress is not None:
      progress(t)
  members = [(m[0], m[2], m[3]) for m in pop]
  return _best(net, obj, config, records, net.k), records, {"members": members}


def run_ladder(search_fn: Callable[..., tuple], net: Supernet, objectives: list[Objective],
               config: arch_policy.PolicyConfig, steps: int, seed: int, *, method: str,
               progress: Callable[[int], None] | None = None, **kwargs
               ) -> tuple[list[np.ndarray], list[dict]]:
  """``search_fn`` (``run_controller`` or ``run_evolution``) once per objective, tightest budget
  first, on the one supernet ``net``; the ``steps`` are split evenly and the method's state is
  carried from one budget to the next. Returns each budget's architecture and all records (steps
  numbered across the ladder)."""
  order = sorted(range(len(objectives)), key=lambda i: objectives[i].e0_j)
  bounds = np.linspace(0, steps, len(objectives) + 1).round().astype(int)
  archs, records, state = [None] * len(objectives), [], None
  for rung, i in enumerate(order):
    start, n = int(bounds[rung]), int(bounds[rung + 1] - bounds[rung])
    if n == 0:
      continue
    prog = None if progress is None else (lambda t, s=start: progress(s + t))
    archs[i], rec, state = search_fn(net, objectives[i], config, n, seed + rung, method=method,
                                     progress=prog, state=state, **kwargs)
    records += [dict(r, step=r["step"] + start) for r in rec]
  return archs, records


def score_on_val(net: Supernet, archs: np.ndarray) -> np.ndarray:
  """Quality of any number of architectures on the whole validation fold (K per call)."""
  archs = np.asarray(archs, np.int32)
  k = net.k
  out = [net.score(np.resize(archs[i:i + k], (k, archs.shape[1])), rows=net.split.val)
         [:min(k, len(archs) - i)] for i in range(0, len(archs), k)]
  return np.concatenate(out) if out else np.zeros(0)
