"""Checkpoints for every binary: a thin wrapper over ``orbax.checkpoint.CheckpointManager``.

One checkpoint step holds two items:
- ``state``: a pytree of arrays (parameters, optimizer state, JAX PRNG keys, counters), written with
  orbax's ``StandardSave``. Typed PRNG keys (``jax.random.key``) are stored as their raw key data
  (``jax.random.key_data``) and re-wrapped with the same implementation on restore.
- ``extra``: JSON with the state's layout (path, shape, dtype of each leaf, used to check a restore
  target) and the caller's *side state*: any JSON-safe dict (search state, ledgers via
  ``Ledger.to_dict()``, RNG key data as ints, ...).

Saves are synchronous by default: when :meth:`Checkpointer.save` returns, the step directory is
complete and committed (orbax writes into a temporary directory and renames it), so a ``kill -9``
right after leaves a restorable step. Left-over temporary directories from a killed save are removed
when a :class:`Checkpointer` is opened.

Corrupt or incompatible checkpoints:
- A target whose structure, shapes or dtypes differ from the saved layout raises
  :class:`CheckpointError` ("incompatible"), naming the step directory and the first differences.
- A step whose files are missing or damaged raises :class:`CheckpointError` naming the step
  directory, the underlying error, and the previous step. By default nothing falls back silently;
  ``restore(fall_back_to_previous=True)`` instead tries older steps, newest first, logging a warning
  (and a ``RuntimeWarning``) for each step it skips, and the returned :class:`Restored` says which
  step it used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path
from collections.abc import Collection
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from cenas_jax.errors import CenasError

_FORMAT = 1
_STATE = "state"
_EXTRA = "extra"


class CheckpointError(CenasError, RuntimeError):
  """A checkpoint cannot be written or restored (corrupt, incompatible, or out of order)."""


@dataclasses.dataclass(frozen=True)
class Restored:
  """What :meth:`Checkpointer.restore` returns.

  Attributes:
    step: the step restored.
    state: the pytree (same structure and leaf types as the target when one is given).
    side_state: the JSON side state saved with it (JSON types: tuples come back as lists).
    skipped_steps: newer steps that were unreadable and skipped (only with fallback).
  """

  step: int
  state: Any
  side_state: dict[str, Any]
  skipped_steps: tuple[int, ...] = ()


def _path_name(path: tuple[Any, ...]) -> str:
  """A path key that is the same for a dict, a namedtuple or a dataclass with the same names."""
  parts = []
  for p in path:
    for attr in ("key", "name", "idx"):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return "/".join(parts)


def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_layout(leaf: Any) -> dict[str, Any]:
  if _is_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)
    return {"shape": list(leaf.shape), "dtype": str(leaf.dtype), "data_shape": list(data.shape)}
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return {"shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype))}
  arr = leaf if isinstance(leaf, (jax.Array, np.ndarray)) else np.asarray(leaf)
  return {"shape": list(arr.shape), "dtype": str(np.dtype(arr.dtype))}


def _layout(tree: Any) -> dict[str, dict[str, Any]]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_name(p): _leaf_layout(x) for p, x in leaves}


def _to_storable(leaf: Any) -> Any:
  if _is_key(leaf):
    return jax.random.key_data(leaf)
  if isinstance(leaf, jax.Array):
    return leaf
  arr = np.asarray(leaf)
  if arr.dtype == object:
    raise CheckpointError(f"Cannot checkpoint a leaf of type {type(leaf).__name__}; put non-array "
                          "data in side_state instead.")
  return arr


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
  if _is_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)
    # The key's own (concrete) sharding: eval_shape's is over an abstract mesh, which orbax cannot
    # place on devices when the state spans several processes.
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  arr = np.asarray(leaf)
  return jax.ShapeDtypeStruct(arr.shape, arr.dtype)


def _from_restored(target_leaf: Any, value: Any, key_impl: str | None) -> Any:
  if _is_key(target_leaf):
    return jax.random.wrap_key_data(value, impl=key_impl)
  if isinstance(target_leaf, np.ndarray):
    return np.asarray(value)
  if isinstance(target_leaf, (bool, int, float)) and not isinstance(target_leaf, np.generic):
    return type(target_leaf)(np.asarray(value).item())
  if isinstance(target_leaf, np.generic):
    return np.asarray(value).astype(target_leaf.dtype)[()]
  return value


def _check_json(side_state: Any) -> None:
  if not isinstance(side_state, dict):
    raise CheckpointError(f"side_state must be a dict, got {type(side_state).__name__}.")
  try:
    json.dumps(side_state, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise CheckpointError(
        f"side_state is not JSON-safe ({e}); convert arrays with .tolist(), keys with "
        "jax.random.key_data(...).tolist(), and replace NaN/inf.") from e


def _multiprocessing_options(processes: Collection[int] | None) -> ocp.options.MultiprocessingOptions:
  """Orbax's default (every process takes part) on one host or for every process; otherwise only
  ``processes`` (default: this one) save together, the lowest writing what is written once."""
  active = {jax.process_index()} if processes is None else {int(p) for p in processes}
  if jax.process_count() == 1 or len(active) == jax.process_count():
    return ocp.options.MultiprocessingOptions()
  return ocp.options.MultiprocessingOptions(primary_host=min(active), active_processes=active)


class Checkpointer:
  """Save every N steps, keep the last K, restore the latest: one directory per run.

  Example::

    with Checkpointer(workdir / "checkpoints", save_interval_steps=100, max_to_keep=3) as ckpt:
      if ckpt.latest_step() is not None:
        r = ckpt.restore(target=state)
        state, start = r.state, r.step + 1
      for step in range(start, n_steps):
        ...
        ckpt.save(step, state, side_state={"ledger": ledger.to_dict()})
  """

  def __init__(self, directory: str | os.PathLike[str], *, save_interval_steps: int = 1,
               max_to_keep: int | None = 3, async_save: bool = False,
               processes: Collection[int] | None = None):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where step sub-directories go (e.g. ``<workdir>/checkpoints``).
      save_interval_steps: :meth:`save` writes only steps that are multiples of this (unless forced).
      max_to_keep: keep this many most recent steps (``None``: keep all).
      async_save: write in a background thread (then call :meth:`wait_until_finished` before relying
        on a step being on disk). Default synchronous.
      processes: in a multi-process run, the processes that open this checkpoint and save it
        together, each calling the same methods (a state on a mesh over several hosts:
        ``mesh.mesh_processes(mesh)``); ``None``: this process alone (a state on its own devices,
        or host data), which then neither waits for nor blocks the others. Ignored on one host.
    """
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}.")
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}.")
    self.directory = Path(directory).absolute()
    self._async = async_save
    multiprocessing = _multiprocessing_options(processes)
    # A checkpoint of some processes only: orbax creates the directory only when all take part,
    # and refuses their arrays (host-local in a multi-process run), so they are saved as host data.
    self._host_arrays = bool(multiprocessing.active_processes)
    if self._host_arrays:
      self.directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=not multiprocessing.active_processes,
        multiprocessing_options=multiprocessing,
    )
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_handlers={_STATE: ocp.StandardCheckpointHandler(),
                       _EXTRA: ocp.JsonCheckpointHandler()},
    )

  # -- queries ---------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    """Saved steps, ascending."""
    return sorted(int(s) for s in self._mngr.all_steps())

  def latest_step(self) -> int | None:
    """The newest saved step, or ``None`` when the directory has none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def should_save(self, step: int) -> bool:
    """Whether :meth:`save` would write ``step`` (interval reached and newer than the latest)."""
    latest = self.latest_step()
    return (latest is None or step > latest) and bool(self._mngr.should_save(step))

  def step_dir(self, step: int) -> Path:
    return self.directory / str(step)

  # -- save ------------------------------------------------------------------------------------
  def save(self, step: int, state: Any, side_state: dict[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Saves ``state`` and ``side_state`` as ``step`` if the save interval says so (or ``force``).

    Args:
      step: the step number (>= 0, larger than every saved step).
      state: pytree of arrays / scalars / typed PRNG keys.
      side_state: JSON-safe dict stored in the same step.
      force: save even if ``step`` is not a multiple of the interval.

    Returns:
      ``True`` when the step was written (synchronously, unless ``async_save``).

    Raises:
      CheckpointError: ``step`` is not newer than the latest saved step (resume from it or use a new
        directory), or ``side_state`` / a leaf cannot be stored.
    """
    step = int(step)
    if step < 0:
      raise CheckpointError(f"Checkpoint step must be >= 0, got {step}.")
    latest = self.latest_step()
    if latest is not None and step <= latest:
      raise CheckpointError(
          f"Cannot save step {step} in {self.directory}: it already holds step {latest}. Restore the "
          "latest step to resume, or use a new directory for a fresh run.")
    if not force and not self._mngr.should_save(step):
      return False
    side_state = {} if side_state is None else side_state
    _check_json(side_state)
    layout = _layout(state)
    key_impls = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
      if _is_key(leaf):
        key_impls[_path_name(path)] = str(jax.random.key_impl(leaf))
    extra = {"format": _FORMAT, "layout": layout, "key_impls": key_impls, "side_state": side_state}
    items = {_EXTRA: ocp.args.JsonSave(extra)}
    if layout:  # orbax refuses an empty pytree; an empty state is recorded by its empty layout.
      storable = jax.tree.map(_to_storable, state)
      if self._host_arrays:
        storable = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), storable)
      items[_STATE] = ocp.args.StandardSave(storable)
    try:
      saved = self._mngr.save(step, args=ocp.args.Composite(**items), force=force)
      if not self._async:
        self._mngr.wait_until_finished()
    except Exception as e:
      raise CheckpointError(f"Saving step {step} in {self.directory} failed: {e}") from e
    return bool(saved)

  # -- restore ---------------------------------------------------------------------------------
  def restore(self, step: int | None = None, target: Any = None, *,
              fall_back_to_previous: bool = False) -> Restored:
    """Restores a step (default: the latest).

    Args:
      step: which step; ``None`` for the latest.
      target: a pytree like the saved state (concrete arrays or ``jax.ShapeDtypeStruct`` leaves,
        typed PRNG keys allowed). Its structure, shapes and dtypes must match the saved layout;
        the result has its structure, leaf types and (for ``jax.Array`` leaves) shardings. ``None``:
        restore as saved (nested dicts/lists, keys re-wrapped).
      fall_back_to_previous: when the step is unreadable, try older steps (loudly) instead of raising.

    Returns:
      A :class:`Restored`.

    Raises:
      CheckpointError: no checkpoint, unknown step, incompatible target, or a corrupt step (and, with
        fallback, no readable older step).
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"No checkpoint in {self.directory}; nothing to restore.")
    if step is None:
      step = steps[-1]
    if step not in steps:
      raise CheckpointError(f"Step {step} is not in {self.directory}; saved steps: {steps}.")
    candidates = [s for s in reversed(steps) if s <= step]
    if not fall_back_to_previous:
      candidates = candidates[:1]
    skipped: list[int] = []
    errors: list[str] = []
    for s in candidates:
      try:
        state, side = self._restore_step(s, target)
      except _CorruptStep as e:
        errors.append(str(e))
        older = [c for c in steps if c < s]
        if not fall_back_to_previous:
          hint = (f" The previous step is {older[-1]}: delete {self.step_dir(s)} or restore with "
                  "fall_back_to_previous=True to use it." if older else "")
          raise CheckpointError(f"{e}{hint}") from e.__cause__
        msg = f"{e} Falling back to an older step."
        logging.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        skipped.append(s)
        continue
      return Restored(step=s, state=state, side_state=side, skipped_steps=tuple(skipped))
    raise CheckpointError(f"No readable checkpoint in {self.directory}:\n" + "\n".join(errors))

  def _restore_step(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    where = self.step_dir(step)
    try:
      extra = self._mngr.restore(step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))[_EXTRA]
    except Exception as e:
      raise _CorruptStep(f"Checkpoint {where} is corrupt or unreadable (side state: {e}).") from e
    if not isinstance(extra, dict) or extra.get("format") != _FORMAT or "layout" not in extra:
      raise _CorruptStep(f"Checkpoint {where} has no valid layout record; it is corrupt or was not "
                         "written by cenas_jax.")
    saved_layout: dict[str, Any] = extra["layout"]
    key_impls: dict[str, str] = extra.get("key_impls", {})
    if target is not None:
      self._check_compatible(where, saved_layout, _layout(target))
    if not saved_layout:
      return (target if target is not None else {}), extra["side_state"]
    abstract = None if target is None else jax.tree.map(_abstract, target)
    try:
      raw = self._mngr.restore(step, args=ocp.args.Composite(
          **{_STATE: ocp.args.StandardRestore(abstract)}))[_STATE]
    except Exception as e:
      raise _CorruptStep(f"Checkpoint {where} is corrupt or unreadable (arrays: "
                         f"{type(e).__name__}: {e}).") from e
    if target is not None:
      t_paths, treedef = jax.tree_util.tree_flatten_with_path(target)
      r_leaves = jax.tree.leaves(raw)
      if len(r_leaves) != len(t_paths):
        raise _CorruptStep(f"Checkpoint {where} returned {len(r_leaves)} arrays, expected "
                           f"{len(t_paths)}.")
      leaves = [_from_restored(t, r, key_impls.get(_path_name(p)))
                for (p, t), r in zip(t_paths, r_leaves)]
      return jax.tree.unflatten(treedef, leaves), extra["side_state"]
    # No target: re-wrap the saved PRNG keys by path.
    found = set()

    def rewrap(path, value):
      name = _path_name(path)
      if name in key_impls:
        found.add(name)
        return jax.random.wrap_key_data(value, impl=key_impls[name])
      return value

    state = jax.tree_util.tree_map_with_path(rewrap, raw)
    if found != set(key_impls):
      raise CheckpointError(f"Checkpoint {where}: could not locate PRNG keys {sorted(set(key_impls) - found)} "
                            "without a target; pass target= to restore.")
    return state, extra["side_state"]

  @staticmethod
  def _check_compatible(where: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    diffs = []
    for name in sorted(set(saved) | set(wanted)):
      s, w = saved.get(name), wanted.get(name)
      if s is None:
        diffs.append(f"{name or '<root>'}: in target, not in checkpoint")
      elif w is None:
        diffs.append(f"{name or '<root>'}: in checkpoint, not in target")
      elif (s["shape"], s["dtype"]) != (w["shape"], w["dtype"]):
        diffs.append(f"{name or '<root>'}: checkpoint {s['dtype']}{s['shape']} vs target "
                     f"{w['dtype']}{w['shape']}")
    if diffs:
      shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
      raise CheckpointError(
          f"Checkpoint {where} is incompatible with the restore target: {shown}. It was written by "
          "a different model or configuration; use the matching configuration or a new directory.")

  # -- lifecycle -------------------------------------------------------------------------------
  def wait_until_finished(self) -> None:
    """Blocks until pending (async) saves are committed."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


class _CorruptStep(Exception):
  """Internal: one step could not be read."""
