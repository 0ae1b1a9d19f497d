"""Retraining a found architecture from scratch as a standalone network, and its test metrics.

Trained on the TabZilla training rows with the training core's step (AdamW, data-parallel, compiled
once per network), evaluated on the validation fold after every epoch; training stops after
``patience`` epochs without improvement and the best epoch's weights are kept. Test metrics:
accuracy and ROC AUC (one-vs-rest, macro, for more than two classes) for classification, RMSE in the
target's units for regression.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from scipy.stats import rankdata

from cenas_jax.spaces.tabular import TabularSpace
from cenas_jax.supernets import tabular as sn
from cenas_jax.tabular_nas.data import Split
from cenas_jax.tabular_nas.search import _apply, make_loss_fn
from cenas_jax.training import step as step_lib

import optax


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
  """ROC AUC of scores for the positive labels ``y == 1`` (Mann-Whitney U, ties averaged)."""
  pos = y == 1
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if not n_pos or not n_neg:
    return float("nan")
  ranks = rankdata(score)
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _predict(module, state, x: np.ndarray, batch: int) -> np.ndarray:
  fwd = jax.jit(lambda p, m, xb: _apply(module, p, m, xb, train=False, weights=None)[0])
  outs = [np.asarray(fwd(state.params, state.model_state, x[i:i + batch]))
          for i in range(0, len(x), batch)]
  return np.concatenate(outs)


def metrics(split: Split, out: np.ndarray, rows: np.ndarray) -> dict[str, float]:
  """Accuracy and AUC, or RMSE in the target's units, of outputs ``out`` for ``rows``."""
  y = split.y[rows]
  if split.task == "regression":
    rmse = float(np.sqrt(np.mean(np.square(out[:, 0] - y)))) * split.y_std
    return {"rmse": rmse}
  p = np.asarray(jax.nn.softmax(out, axis=-1), np.float64)
  acc = float(np.mean(np.argmax(p, -1) == y))
  if split.d_out == 2:
    auc = binary_auc(y, p[:, 1])
  else:  # one-vs-rest, macro over the classes present
    aucs = [binary_auc((y == c).astype(int), p[:, c]) for c in range(split.d_out)]
    auc = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan")
  return {"accuracy": acc, "auc": auc}


def pooled_metrics(parts: list[tuple[Split, np.ndarray]]) -> dict[str, float]:
  """Test metrics over the test rows of several folds at once, from (fold's split, its network's
  test outputs) pairs: accuracy and AUC over all rows, or the RMSE of all rows in the target's units.
  Class labels are the same in every fold; a regression fold's outputs are standardized by its own
  training rows, so its errors are put back in the target's units before pooling."""
  first = parts[0][0]
  if first.task == "regression":
    err = np.concatenate([(out[:, 0] - s.y[s.test]) * s.y_std for s, out in parts])
    return {"rmse": float(np.sqrt(np.mean(np.square(err))))}
  rows = np.concatenate([s.test for s, _ in parts])
  return metrics(first, np.concatenate([out for _, out in parts]), rows)


def _score(split: Split, m: dict[str, float]) -> float:
  return -m["rmse"] if split.task == "regression" else m["accuracy"]


def retrain(space: TabularSpace, split: Split, arch: np.ndarray, *, mesh: Any, seed: int,
            batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-5,
            max_epochs: int = 50, patience: int = 5,
            max_steps_per_epoch: int = 0, min_steps_per_epoch: int = 20,
            return_outputs: bool = False) -> dict[str, Any]:
  """Trains ``arch`` from scratch; returns test metrics, the best epoch and the wall time (and,
  with ``return_outputs``, the network's outputs on the test rows as ``test_outputs``, so that
  several folds' test rows can be scored together).

  An "epoch" (the period between validation checks) is a pass over the training rows, cut to
  ``max_steps_per_epoch`` steps when that is set, and stretched to at least
  ``min_steps_per_epoch`` steps (more than one pass) on small datasets such as German credit,
  whose 800 training rows are only a few batches.
  """
  t0 = time.perf_counter()
  module = sn.standalone(space, arch)
  key = jax.random.key(seed)
  # Jitted: op-by-op init of a transformer compiles every op on its own.
  variables = dict(jax.jit(module.init)(key, np.zeros((2, space.d_in), np.float32)))
  optimizer = optax.adamw(lr, weight_decay=weight_decay)
  step = step_lib.make_train_step(make_loss_fn(module, split.task, False), optimizer, mesh=mesh,
                                  batch_size=batch_size)
  state = step_lib.init_train_state(
      variables["params"], optimizer, jax.random.key(seed + 1),
      model_state={n: t for n, t in variables.items() if n != "params"}, mesh=mesh)
  rng = np.random.default_rng(seed)
  best, best_state, best_epoch, bad = -np.inf, None, 0, 0
  n_batches = -(-len(split.train) // batch_size)
  if max_steps_per_epoch:
    n_batches = min(n_batches, max_steps_per_epoch)
  n_batches = max(n_batches, min_steps_per_epoch)
  passes = -(-n_batches * batch_size // len(split.train))
  for epoch in range(max_epochs):
    order = np.concatenate([rng.permutation(split.train) for _ in range(passes)])
    for b in range(n_batches):
      rows = order[b * batch_size:(b + 1) * batch_size]
      state, _ = step(state, {"x": split.x[rows], "y": split.y[rows]})
    val = _score(split, metrics(split, _predict(module, state, split.x[split.val], 1024), split.val))
    if val > best:
      best, best_epoch, bad = val, epoch, 0
      best_state = jax.tree.map(lambda a: np.asarray(a), (state.params, state.model_state))
    else:
      bad += 1
      if bad >= patience:
        break
  state = step_lib.TrainState(params=best_state[0], opt_state=None, model_state=best_state[1],
                              step=state.step, rng=state.rng)
  test_out = _predict(module, state, split.x[split.test], 1024)
  val = metrics(split, _predict(module, state, split.x[split.val], 1024), split.val)
  result = {"test": metrics(split, test_out, split.test), "val": val, "best_epoch": best_epoch,
            "epochs": epoch + 1, "train_s": time.perf_counter() - t0}
  if return_outputs:
    result["test_outputs"] = test_out
  return result
