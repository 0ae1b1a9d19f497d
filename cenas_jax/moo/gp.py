"""Exact Gaussian-process surrogate and exact 2-D expected hypervolume improvement (EHVI).

GP: one independent zero-mean GP per objective on standardized targets, RBF kernel
``k(a, b) = exp(-|a - b|^2 / (2 l^2))`` on the encodings plus Gaussian noise. The lengthscale ``l``
and noise variance are chosen by maximizing the exact log marginal likelihood over a small fixed
grid (lengthscale = factor x median pairwise distance of the training inputs), which is
deterministic, needs no RNG and costs a few Cholesky factorizations of an ``(n, n)`` matrix.

EHVI (maximization, 2 objectives): computed **exactly** in closed form. The region that the
current front ``P`` (sorted by objective 0 ascending: ``p_1 .. p_K``) does not dominate, above the
reference point ``r``, is a union of vertical strips ``[l_j, l_{j+1}) x [h_j, inf)`` with
``l_0 = r_0``, ``l_j = p_j[0]``, ``l_{K+1} = inf``, ``h_j = p_{j+1}[1]`` and ``h_K = r_1``.
The improvement of a point ``y`` is ``sum_j (min(y0, l_{j+1}) - l_j)_+ * (y1 - h_j)_+``, and for
independent Gaussians each factor has a closed-form expectation, ``E[(Y - t)_+] = s * psi((mu - t)
/ s)`` with ``psi(z) = z Phi(z) + phi(z)``, so

  EHVI = sum_j [g0(l_j) - g0(l_{j+1})] * g1(h_j),   g_k(t) = E[(Y_k - t)_+].

SciPy (a dependency of JAX) provides the normal CDF and triangular solves; it is imported on first
use so that importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cenas_jax.moo.pareto import as_objectives, non_dominated_mask

_LENGTHSCALE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
_NOISE_VARIANCES = (1e-4, 1e-2, 1e-1)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianProcess:
  """An exact GP fitted to one objective.

  Attributes:
    x_train: training inputs, shape ``(n, d)``.
    alpha: ``(K + noise I)^-1 y_std``, shape ``(n,)``.
    chol: lower Cholesky factor of ``K + noise I``, shape ``(n, n)``.
    lengthscale: RBF lengthscale (input units).
    noise_var: noise variance (standardized units).
    y_mean: mean used to standardize the targets (objective units).
    y_std: standard deviation used to standardize the targets (objective units).
    log_marginal_likelihood: of the chosen hyperparameters (standardized targets).
  """

  x_train: np.ndarray
  alpha: np.ndarray
  chol: np.ndarray
  lengthscale: float
  noise_var: float
  y_mean: float
  y_std: float
  log_marginal_likelihood: float


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  d2 = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d2, 0.0)


def fit_gp(x: np.ndarray, y: np.ndarray) -> GaussianProcess:
  """Fits an exact RBF GP to one objective (hyperparameters by grid-search type-II ML).

  Args:
    x: inputs, shape ``(n, d)``, ``n >= 1``.
    y: targets, shape ``(n,)`` (objective units).

  Returns:
    The fitted ``GaussianProcess``.
  """
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 1:
    raise ValueError(f"fit_gp needs x of shape (n, d) and y of shape (n,), n >= 1; got {x.shape} "
                     f"and {y.shape}.")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("fit_gp: x or y holds NaN or inf.")
  n = x.shape[0]
  y_mean = float(y.mean())
  y_std = float(y.std())
  if not y_std > 0:
    y_std = 1.0
  ys = (y - y_mean) / y_std
  d2 = _sq_dists(x, x)
  off = d2[~np.eye(n, dtype=bool)]
  positive = off[off > 0]
  median = float(np.sqrt(np.median(positive))) if positive.size else 1.0
  best = None
  for factor in _LENGTHSCALE_FACTORS:
    ell = factor * median
    kmat = np.exp(-0.5 * d2 / ell**2)
    for noise in _NOISE_VARIANCES:
      try:
        chol = np.linalg.cholesky(kmat + noise * np.eye(n))
      except np.linalg.LinAlgError:
        continue
      alpha = _chol_solve(chol, ys)
      lml = float(-0.5 * ys @ alpha - np.sum(np.log(np.diag(chol))) - 0.5 * n * math.log(2 * math.pi))
      if best is None or lml > best[0]:
        best = (lml, ell, noise, chol, alpha)
  if best is None:
    raise ValueError("fit_gp: the kernel matrix is not positive definite for any grid setting.")
  lml, ell, noise, chol, alpha = best
  return GaussianProcess(x_train=x, alpha=alpha, chol=chol, lengthscale=ell, noise_var=noise,
                         y_mean=y_mean, y_std=y_std, log_marginal_likelihood=lml)


def _chol_solve(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
  from scipy.linalg import solve_triangular  # pylint: disable=g-import-not-at-top
  z = solve_triangular(chol, b, lower=True)
  return solve_triangular(chol.T, z, lower=False)


def gp_predict(gp: GaussianProcess, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Posterior mean and standard deviation of the latent function (objective units).

  Args:
    gp: a fitted GP.
    x: query inputs, shape ``(q, d)``.

  Returns:
    ``(mean, std)``, each of shape ``(q,)``.
  """
  from scipy.linalg import solve_triangular  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2 or x.shape[1] != gp.x_train.shape[1]:
    raise ValueError(f"gp_predict: x must have shape (q, {gp.x_train.shape[1]}); got {x.shape}.")
  k_star = np.exp(-0.5 * _sq_dists(x, gp.x_train) / gp.lengthscale**2)
  mean = k_star @ gp.alpha
  v = solve_triangular(gp.chol, k_star.T, lower=True)
  var = np.maximum(1.0 - np.sum(v * v, axis=0), 0.0)
  return gp.y_mean + gp.y_std * mean, gp.y_std * np.sqrt(var)


def _expected_positive_part(mean: np.ndarray, std: np.ndarray, t: np.ndarray) -> np.ndarray:
  """``E[(Y - t)_+]`` for ``Y ~ N(mean, std^2)``, broadcasting; ``t = inf`` gives 0."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  with np.errstate(invalid="ignore"):
    s = np.maximum(std, 1e-12)
    z = (mean - t) / s
    psi = z * special.ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    out = s * psi
  return np.where(np.isposinf(t), 0.0, np.where(std > 0, out, np.maximum(mean - t, 0.0)))


def expected_hypervolume_improvement_2d(mean: np.ndarray, std: np.ndarray, front: np.ndarray,
                                        ref_point: np.ndarray) -> np.ndarray:
  """Exact EHVI of independent Gaussian predictions over a 2-D front (maximization).

  Args:
    mean: predicted means, shape ``(q, 2)`` (objective units).
    std: predicted standard deviations, shape ``(q, 2)`` (>= 0).
    front: objectives observed so far, shape ``(n, 2)``; dominated points and points not strictly
      dominating ``ref_point`` are ignored (``n`` may be 0).
    ref_point: shape ``(2,)``.

  Returns:
    EHVI per query, shape ``(q,)`` (objective units product, e.g. % x mJ).
  """
  mean = np.asarray(mean, dtype=np.float64)
  std = np.asarray(std, dtype=np.float64)
  if mean.ndim != 2 or mean.shape[1] != 2 or std.shape != mean.shape:
    raise ValueError(f"EHVI needs mean and std of shape (q, 2); got {mean.shape} and {std.shape}.")
  if np.any(std < 0):
    raise ValueError("EHVI: std must be non-negative.")
  ref = np.asarray(ref_point, dtype=np.float64)
  if ref.shape != (2,):
    raise ValueError(f"EHVI: ref_point must have shape (2,); got {ref.shape}.")
  front = np.asarray(front, dtype=np.float64).reshape(-1, 2)
  if front.shape[0]:
    front = as_objectives(front, "front")
    front = front[np.all(front > ref, axis=1)]
  if front.shape[0]:
    front = np.unique(front[non_dominated_mask(front)], axis=0)  # sorted by objective 0 ascending
  lower = np.concatenate(([ref[0]], front[:, 0]))
  upper = np.concatenate((front[:, 0], [np.inf]))
  height = np.concatenate((front[:, 1], [ref[1]]))
  m0, s0 = mean[:, :1], std[:, :1]
  m1, s1 = mean[:, 1:], std[:, 1:]
  width = _expected_positive_part(m0, s0, lower[None]) - _expected_positive_part(m0, s0, upper[None])
  tall = _expected_positive_part(m1, s1, height[None])
  return np.sum(width * tall, axis=1)
