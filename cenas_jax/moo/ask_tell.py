"""Ask-and-tell LaMOO on your own objectives: ``ask`` for points, evaluate them, ``tell`` the values.

Over a finite candidate set (every row an encoding, e.g. one-hot architecture choices)::

  opt = LaMOOSearch(candidates=X, ref_point=[0.0, 10.0], maximize=[True, False], seed=0)
  for _ in range(20):
    xs = opt.ask(4)                    # 4 rows of X never asked before
    opt.tell(xs, [f(x) for x in xs])   # f returns (accuracy, energy_j)
  opt.pareto_x, opt.pareto_y, opt.hypervolume()

Over a space too large to enumerate, give a ``sampler(rng, n) -> (n, d)`` instead: every ``ask``
draws ``pool_size`` fresh points and LaMOO picks among them inside its most promising region.

Objectives keep your units and directions (``maximize`` per objective); ``ref_point`` is a point
worse than every point that should count (below maximized, above minimized objectives). The tree,
region selection and proposals are ``cenas_jax.moo.lamoo``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cenas_jax.moo import lamoo
from cenas_jax.moo.hypervolume import hypervolume
from cenas_jax.moo.pareto import non_dominated_mask


class LaMOOSearch:
  """LaMOO with an ask-and-tell interface (see the module docstring).

  Args:
    candidates: ``(n, d)`` encodings of a finite search space; or ``None`` with ``sampler``.
    sampler: ``sampler(rng, n) -> (n, d)`` random points of a large space.
    ref_point: hypervolume reference point, one value per objective, in your units.
    maximize: one flag for all objectives or one per objective (``False``: minimize it).
    config: tree rules (default ``LaMOOConfig.lamoo()``, the official LaMOO's).
    cp: UCB exploration constant (in hypervolume units: scale it to your objectives).
    method: ``"rejection"`` (uniform in the region) or ``"ehvi"`` (2 objectives).
    pool_size: points drawn per ``ask`` with a sampler.
    seed: seed of every random choice.
  """

  def __init__(self, candidates: Any = None, *, sampler: Callable[[np.random.Generator, int], Any] | None = None,
               ref_point: Sequence[float], maximize: bool | Sequence[bool] = True,
               config: lamoo.LaMOOConfig | None = None, cp: float = 1.0, method: str = "rejection",
               pool_size: int = 1000, seed: int = 0):
    if (candidates is None) == (sampler is None):
      raise ValueError("LaMOOSearch needs exactly one of candidates= (a finite set) or sampler=.")
    self._ref = np.asarray(ref_point, dtype=np.float64)
    flags = np.broadcast_to(np.asarray(maximize, dtype=bool), self._ref.shape)
    self._sign = np.where(flags, 1.0, -1.0)
    self.candidates = None if candidates is None else np.asarray(candidates, dtype=np.float64)
    if self.candidates is not None and self.candidates.ndim != 2:
      raise ValueError(f"candidates must be (n, d), got shape {self.candidates.shape}.")
    self.sampler = sampler
    self.config = config or lamoo.LaMOOConfig.lamoo()
    self.cp, self.method, self.pool_size = cp, method, pool_size
    self.rng = np.random.default_rng(seed)
    self._x: list[np.ndarray] = []
    self._y: list[np.ndarray] = []
    self._asked: set[bytes] = set()

  @property
  def x(self) -> np.ndarray:
    """Every told point, ``(n, d)``."""
    return np.array(self._x)

  @property
  def y(self) -> np.ndarray:
    """Their objectives in your units and directions, ``(n, m)``."""
    return np.array(self._y).reshape(len(self._y), self._ref.size)

  def ask(self, k: int = 1) -> np.ndarray:
    """``k`` new points to evaluate, ``(k, d)`` (fewer only when a finite space runs out)."""
    told = self.x
    if self.candidates is not None:
      pool = self.candidates
      exclude = np.array([row.tobytes() in self._asked for row in pool])
    else:
      fresh = np.asarray(self.sampler(self.rng, self.pool_size), dtype=np.float64)
      pool = np.concatenate([told, fresh]) if len(told) else fresh
      exclude = np.arange(len(pool)) < len(told)
    # LaMOO indexes the told points inside the pool; maximized objectives inside.
    told_idx = self._indices_in(pool, told)
    state = lamoo.LaMOOState(sample_idx=told_idx, y=self.y * self._sign)
    idx = lamoo.lamoo_step(state, pool, self._ref * self._sign, self.config, k, self.rng, cp=self.cp,
                           method=self.method, extra_exclude=exclude)
    out = pool[idx]
    self._asked.update(row.tobytes() for row in out)
    return out

  def tell(self, x: Any, y: Any) -> None:
    """Records objectives ``y`` (``(k, m)``, your units) of points ``x`` (``(k, d)``)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64).reshape(x.shape[0], self._ref.size)
    if not np.all(np.isfinite(y)):
      raise ValueError("tell: objective values must be finite.")
    self._x.extend(x)
    self._y.extend(y)
    self._asked.update(row.tobytes() for row in x)

  def _indices_in(self, pool: np.ndarray, told: np.ndarray) -> np.ndarray:
    if not len(told):
      return np.zeros(0, np.int64)
    where = {row.tobytes(): i for i, row in enumerate(pool)}
    try:
      return np.array([where[row.tobytes()] for row in told], dtype=np.int64)
    except KeyError:
      raise ValueError("tell() got a point that is not one of the candidates.") from None

  @property
  def pareto_mask(self) -> np.ndarray:
    """Which told points are non-dominated."""
    return non_dominated_mask(self.y * self._sign) if self._y else np.zeros(0, bool)

  @property
  def pareto_x(self) -> np.ndarray:
    return self.x[self.pareto_mask]

  @property
  def pareto_y(self) -> np.ndarray:
    return self.y[self.pareto_mask]

  def hypervolume(self) -> float:
    """Hypervolume of the told points w.r.t. ``ref_point`` (product of your objectives' units)."""
    if not self._y:
      return 0.0
    return hypervolume(self.y * self._sign, self._ref * self._sign)
