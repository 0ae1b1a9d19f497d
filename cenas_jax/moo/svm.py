"""Binary kernel SVM (C-SVC) with a polynomial kernel, trained by a jitted SMO solver in JAX.

The solver is libsvm's (and so scikit-learn's ``SVC``): SMO on the dual

  min_a  1/2 a^T Q a - sum(a),  0 <= a_i <= C,  sum_i y_i a_i = 0,  Q_ij = y_i y_j K(x_i, x_j),

with second-order working-set selection (Fan, Chen and Lin, JMLR 2005), stopping when the maximal
KKT violation drops below ``tol``, and libsvm's rule for the bias ``rho``. The decision function is
``f(x) = sum_i y_i a_i K(x_i, x) - rho`` and the predicted label is ``f(x) > 0``.

Kernel: ``K(a, b) = (gamma * <a, b> + coef0) ** degree``; ``gamma="scale"`` means
``1 / (n_features * X.var())`` as in scikit-learn. Defaults (degree 4, ``gamma="scale"``,
``coef0=0``, ``C=1``) are those of LaMOO and CE-NAS.

Speed: the whole SMO loop is one ``lax.while_loop`` under ``jax.jit``; the training set is padded
to a power of two (at least 16) with masked rows, so a handful of shapes compile once per process.
A fit on 300 points takes a few milliseconds on one CPU core. JAX is imported on first use only.
Prediction of large batches (all candidates of a search space) is a jitted JAX function on padded
shapes; small batches use numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np

_MIN_PAD = 16
_PREDICT_ROWS = 2048
_JAX_MIN_KERNEL_ENTRIES = 1 << 18
_JAX_MIN_ROWS = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class KernelSVM:
  """A fitted polynomial-kernel SVM.

  Attributes:
    support_x: support vectors, shape ``(n_sv, d)``, float32.
    dual_coef: ``y_i * a_i`` for each support vector, shape ``(n_sv,)``.
    rho: bias; ``f(x) = dual_coef @ K(support_x, x) - rho``.
    gamma: kernel scale actually used.
    degree: polynomial degree.
    coef0: kernel offset.
    n_iter: SMO iterations run.
    converged: whether the KKT violation fell below ``tol`` before ``max_iter``.
  """

  support_x: np.ndarray
  dual_coef: np.ndarray
  rho: float
  gamma: float
  degree: int
  coef0: float
  n_iter: int
  converged: bool


def poly_kernel(a: np.ndarray, b: np.ndarray, gamma: float, degree: int,
                coef0: float) -> np.ndarray:
  """Polynomial kernel matrix ``(gamma * a @ b.T + coef0) ** degree``, shape ``(len(a), len(b))``.

  The integer power is taken by in-place repeated squaring (``np.power`` with a float array is
  an order of magnitude slower on the 12,554 x n_sv matrices of candidate classification).
  """
  base = a @ b.T
  base *= gamma
  if coef0:
    base += coef0
  return _int_power_inplace(base, int(degree))


def _int_power_inplace(base: np.ndarray, degree: int) -> np.ndarray:
  """``base ** degree`` for a positive int ``degree``; ``base`` is overwritten."""
  result = None
  while True:
    if degree & 1:
      result = base.copy() if result is None else np.multiply(result, base, out=result)
    degree >>= 1
    if not degree:
      return result
    np.multiply(base, base, out=base)


def resolve_gamma(x: np.ndarray, gamma: float | str) -> float:
  """``"scale"`` -> ``1 / (d * x.var())`` (1.0 for constant ``x``), ``"auto"`` -> ``1 / d``."""
  d = x.shape[1]
  if gamma == "scale":
    var = float(np.asarray(x, dtype=np.float64).var())
    return 1.0 / (d * var) if var > 0 else 1.0
  if gamma == "auto":
    return 1.0 / d
  if isinstance(gamma, str) or not np.isfinite(gamma) or gamma <= 0:
    raise ValueError(f"gamma must be 'scale', 'auto' or a positive number; got {gamma!r}.")
  return float(gamma)


@functools.lru_cache(maxsize=None)
def _smo_solver(degree: int, max_iter: int) -> Any:
  """Builds (once per degree and iteration cap) the jitted SMO solver."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  tau = 1e-12

  def solve(x, y, valid, gamma, c, coef0, tol):
    kmat = (gamma * (x @ x.T) + coef0) ** degree
    q = (y[:, None] * y[None, :]) * kmat
    qd = jnp.diag(q)
    cap = jnp.where(valid, c, 0.0)
    neg_inf = jnp.array(-jnp.inf, x.dtype)

    def select(a, g):
      up = a < cap
      low = a > 0
      yg = y * g
      # i: the maximal violator in I_up (libsvm's -y_t G_t over I_up).
      score_i = jnp.where(jnp.where(y > 0, up, low), -yg, neg_inf)
      i = jnp.argmax(score_i)
      g_max = score_i[i]
      cand_j = jnp.where(y > 0, low, up)
      g_max2 = jnp.max(jnp.where(cand_j, yg, neg_inf))
      grad_diff = g_max + yg
      quad = qd[i] + qd - 2.0 * kmat[i]
      quad = jnp.where(quad > 0, quad, tau)
      obj = jnp.where(cand_j & (grad_diff > 0), -(grad_diff**2) / quad, jnp.inf)
      j = jnp.argmin(obj)
      done = (g_max + g_max2 < tol) | ~jnp.isfinite(obj[j])
      return i, j, done

    def body(state):
      a, g, it, _ = state
      i, j, done = select(a, g)
      ci, cj, ai, aj, qij = cap[i], cap[j], a[i], a[j], q[i, j]
      # Opposite labels: a_i - a_j is kept constant.
      quad = jnp.maximum(qd[i] + qd[j] + 2.0 * qij, tau)
      delta = (-g[i] - g[j]) / quad
      diff = ai - aj
      di, dj = ai + delta, aj + delta
      m = (diff > 0) & (dj < 0)
      di, dj = jnp.where(m, diff, di), jnp.where(m, 0.0, dj)
      m = (diff <= 0) & (di < 0)
      di, dj = jnp.where(m, 0.0, di), jnp.where(m, -diff, dj)
      m = (diff > ci - cj) & (di > ci)
      di, dj = jnp.where(m, ci, di), jnp.where(m, ci - diff, dj)
      m = (diff <= ci - cj) & (dj > cj)
      di, dj = jnp.where(m, cj + diff, di), jnp.where(m, cj, dj)
      # Equal labels: a_i + a_j is kept constant.
      quad = jnp.maximum(qd[i] + qd[j] - 2.0 * qij, tau)
      delta = (g[i] - g[j]) / quad
      total = ai + aj
      si, sj = ai - delta, aj + delta
      m = (total > ci) & (si > ci)
      si, sj = jnp.where(m, ci, si), jnp.where(m, total - ci, sj)
      m = (total <= ci) & (sj < 0)
      si, sj = jnp.where(m, total, si), jnp.where(m, 0.0, sj)
      m = (total > cj) & (sj > cj)
      si, sj = jnp.where(m, total - cj, si), jnp.where(m, cj, sj)
      m = (total <= cj) & (si < 0)
      si, sj = jnp.where(m, 0.0, si), jnp.where(m, total, sj)
      same = y[i] == y[j]
      ni = jnp.where(done, ai, jnp.where(same, si, di))
      nj = jnp.where(done, aj, jnp.where(same, sj, dj))
      g = g + q[i] * (ni - ai) + q[j] * (nj - aj)
      a = a.at[i].set(ni).at[j].set(nj)
      return a, g, it + jnp.where(done, 0, 1), done

    def cond(state):
      return (~state[3]) & (state[2] < max_iter)

    a0 = jnp.zeros_like(y)
    g0 = jnp.where(valid, -1.0, 0.0).astype(x.dtype)
    a, g, n_iter, done = jax.lax.while_loop(cond, body, (a0, g0, jnp.int32(0), jnp.array(False)))
    # libsvm's calculate_rho.
    yg = y * g
    at_ub = a >= cap
    at_lb = a <= 0
    free = valid & ~at_ub & ~at_lb
    n_free = free.sum()
    ub_mask = valid & ((at_ub & (y < 0)) | (~at_ub & at_lb & (y > 0)))
    lb_mask = valid & ((at_ub & (y > 0)) | (~at_ub & at_lb & (y < 0)))
    ub = jnp.min(jnp.where(ub_mask, yg, jnp.inf))
    lb = jnp.max(jnp.where(lb_mask, yg, -jnp.inf))
    rho = jnp.where(n_free > 0, jnp.where(free, yg, 0.0).sum() / jnp.maximum(n_free, 1),
                    0.5 * (ub + lb))
    return a * y, rho, n_iter, done

  return jax.jit(solve)


def padded_size(n: int) -> int:
  """The padded training-set size used for ``n`` points (a power of two, at least 16)."""
  return max(_MIN_PAD, 1 << int(np.ceil(np.log2(max(n, 1)))))


def fit_svm(x: np.ndarray, labels: np.ndarray, *, degree: int = 4, gamma: float | str = "scale",
            coef0: float = 0.0, c: float = 1.0, tol: float = 1e-3,
            max_iter: int | None = None) -> KernelSVM:
  """Fits a binary polynomial-kernel C-SVC (scikit-learn ``SVC(kernel="poly")`` semantics).

  Args:
    x: training inputs, shape ``(n, d)``.
    labels: bool (or 0/1) labels, shape ``(n,)``; both classes must be present. ``True`` is the
      positive class: ``predict`` returns ``True`` where ``f(x) > 0``.
    degree: polynomial degree (positive int).
    gamma: ``"scale"``, ``"auto"`` or a positive float.
    coef0: kernel offset.
    c: box constraint ``C`` (> 0).
    tol: stopping tolerance on the maximal KKT violation (libsvm ``eps``).
    max_iter: SMO iteration cap; default ``max(10_000, 100 * padded n)``. Hitting it gives a
      warning and ``converged=False``.

  Returns:
    The fitted ``KernelSVM``.

  Raises:
    ValueError: on bad shapes, non-finite inputs, a single class, or bad hyperparameters.
  """
  x = np.asarray(x)
  labels = np.asarray(labels)
  if x.ndim != 2 or labels.shape != (x.shape[0],):
    raise ValueError(f"fit_svm needs x of shape (n, d) and labels of shape (n,); got {x.shape} "
                     f"and {labels.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("fit_svm: x holds NaN or inf.")
  lab = labels.astype(bool)
  if lab.all() or not lab.any():
    raise ValueError("fit_svm needs both classes in labels; got a single class.")
  if int(degree) != degree or degree < 1:
    raise ValueError(f"degree must be a positive integer; got {degree!r}.")
  if not c > 0:
    raise ValueError(f"c must be positive; got {c!r}.")
  n, d = x.shape
  gamma_value = resolve_gamma(x, gamma)
  n_pad = padded_size(n)
  cap = int(max_iter) if max_iter is not None else max(10_000, 100 * n_pad)
  xp = np.zeros((n_pad, d), np.float32)
  xp[:n] = x
  yp = np.ones(n_pad, np.float32)
  yp[:n] = np.where(lab, 1.0, -1.0)
  valid = np.zeros(n_pad, bool)
  valid[:n] = True
  solver = _smo_solver(int(degree), cap)
  coef, rho, n_iter, done = solver(xp, yp, valid, np.float32(gamma_value), np.float32(c),
                                   np.float32(coef0), np.float32(tol))
  coef = np.asarray(coef)[:n]
  converged = bool(done)
  if not converged:
    warnings.warn(f"fit_svm: SMO stopped at max_iter={cap} before reaching tol={tol} on {n} "
                  "points; the classifier may be inaccurate.", RuntimeWarning, stacklevel=2)
  sv = coef != 0
  return KernelSVM(support_x=np.ascontiguousarray(xp[:n][sv]), dual_coef=coef[sv].astype(np.float32),
                   rho=float(rho), gamma=gamma_value, degree=int(degree), coef0=float(coef0),
                   n_iter=int(n_iter), converged=converged)


@functools.lru_cache(maxsize=None)
def _jax_decision(degree: int) -> Any:
  """Jitted ``(gamma * x @ sv.T + coef0) ** degree @ coef`` (elementwise work fused by XLA)."""
  import jax  # pylint: disable=g-import-not-at-top

  def dec(x, sv, coef, gamma, coef0):
    return ((gamma * (x @ sv.T) + coef0) ** degree) @ coef

  return jax.jit(dec)


def decision_function(model: KernelSVM, x: np.ndarray) -> np.ndarray:
  """Signed score ``f(x)``, shape ``(n,)``; positive means the positive class.

  Large batches (``n * n_sv >= 2^18`` kernel entries, e.g. classifying all NB201 candidates) run
  through a jitted JAX function on inputs padded to power-of-two sizes (rows >= 4096), which is
  several times faster than numpy on a CPU; small ones use numpy directly (no compilation).
  """
  x = np.asarray(x, dtype=np.float32)
  n_sv, d = model.support_x.shape
  if x.ndim != 2 or x.shape[1] != d:
    raise ValueError(f"decision_function: x must have shape (n, {d}); got {x.shape}.")
  n = x.shape[0]
  gamma, coef0 = np.float32(model.gamma), np.float32(model.coef0)
  if n * n_sv >= _JAX_MIN_KERNEL_ENTRIES:
    rows = max(_JAX_MIN_ROWS, 1 << int(np.ceil(np.log2(n))))
    xp = np.zeros((rows, d), np.float32)
    xp[:n] = x
    k = padded_size(n_sv)
    svp = np.zeros((k, d), np.float32)
    svp[:n_sv] = model.support_x
    coefp = np.zeros(k, np.float32)
    coefp[:n_sv] = model.dual_coef
    out = np.asarray(_jax_decision(model.degree)(xp, svp, coefp, gamma, coef0))[:n]
    return out - np.float32(model.rho)
  out = np.empty(n, np.float32)
  # Row chunks keep each kernel block cache-resident during the in-place powers.
  for start in range(0, n, _PREDICT_ROWS):
    kmat = poly_kernel(x[start:start + _PREDICT_ROWS], model.support_x, gamma, model.degree, coef0)
    out[start:start + _PREDICT_ROWS] = kmat @ model.dual_coef
  return out - np.float32(model.rho)


def predict(model: KernelSVM, x: np.ndarray) -> np.ndarray:
  """Predicted labels (bool, ``True`` = positive class), shape ``(n,)``."""
  return decision_function(model, x) > 0
