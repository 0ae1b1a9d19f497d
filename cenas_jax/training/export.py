"""Exported architectures: a trained DARTS network as four files that :func:`load_network` reads back.

An export directory holds:
- ``genotype.json``: the cells (``spaces.darts.Genotype.to_json``);
- ``recipe.json``: the :class:`~cenas_jax.training.cifar.RecipeConfig` it was trained with (which
  fixes the network's channels, cells and auxiliary head);
- ``variables.msgpack``: the parameters and BatchNorm statistics, ``{"params": ..., "batch_stats":
  ...}`` in flax's msgpack serialization (arrays only: no pickle);
- ``metrics.json``: what the caller measured (test accuracy, parameter count, energy, ...).

Every file is written atomically, ``metrics.json`` last, so a directory with a ``metrics.json`` is
complete. ``load_network`` checks every array's path, shape and dtype against the network the
genotype and recipe build, and a missing or damaged file gives one :class:`DataError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax import fileio
from cenas_jax.errors import DataError
from cenas_jax.spaces.darts import Genotype
from cenas_jax.spaces.darts_net import NetworkCIFAR
from cenas_jax.training import cifar
from cenas_jax.training import step as step_lib

GENOTYPE_FILE = "genotype.json"
RECIPE_FILE = "recipe.json"
VARIABLES_FILE = "variables.msgpack"
METRICS_FILE = "metrics.json"


def export_network(path: str | Path, genotype: Genotype, config: cifar.RecipeConfig,
                   state: step_lib.TrainState, metrics: dict[str, Any]) -> Path:
  """Writes a trained network to the directory ``path`` (created if needed; files replaced).

  Args:
    path: the export directory.
    genotype: the network's cells.
    config: the recipe it was trained with.
    state: its training state (parameters and BatchNorm statistics are kept; the optimizer's state
      is not).
    metrics: JSON-safe measurements to keep beside it (no NaN).

  Returns:
    The directory.
  """
  path = Path(path)
  variables = jax.device_get({"params": state.params, **state.model_state})
  fileio.atomic_write_json(path / GENOTYPE_FILE, genotype.to_json())
  fileio.atomic_write_json(path / RECIPE_FILE, dataclasses.asdict(config))
  fileio.atomic_write_bytes(path / VARIABLES_FILE, flax.serialization.to_bytes(variables))
  fileio.atomic_write_json(path / METRICS_FILE, dict(metrics))  # last: marks the export complete
  return path


def _read_json(path: Path) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise DataError(f"{path}: missing; an export directory holds {GENOTYPE_FILE}, {RECIPE_FILE}, "
                    f"{VARIABLES_FILE} and {METRICS_FILE} as export_network writes them.") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: corrupt or unreadable ({e}).") from None


def read_metrics(path: str | Path) -> dict[str, Any]:
  """The ``metrics.json`` of an export directory."""
  file = Path(path) / METRICS_FILE
  metrics = _read_json(file)
  if not isinstance(metrics, dict):
    raise DataError(f"{file}: expected a JSON object, got {type(metrics).__name__}.")
  return metrics


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(p): (tuple(np.shape(x)), str(np.dtype(x.dtype))) for p, x in leaves}


def load_network(path: str | Path) -> tuple[NetworkCIFAR, dict[str, Any]]:
  """The network of an export directory and its variables, in one call.

  ``model.apply(variables, augment.normalize(images), train=False)`` returns ``(logits, None)``, the
  trained network's inference-mode outputs (uint8 images normalized as in training).

  Raises:
    DataError: a file is missing, corrupt, or does not match the network its genotype and recipe
      build (the message names the file).
  """
  path = Path(path)
  g_file, r_file, v_file = path / GENOTYPE_FILE, path / RECIPE_FILE, path / VARIABLES_FILE
  try:
    genotype = Genotype.from_json(_read_json(g_file))
  except DataError as e:
    raise DataError(f"{g_file}: {e}") from None
  recipe = _read_json(r_file)
  try:
    config = cifar.RecipeConfig(**recipe)
  except (TypeError, ValueError) as e:
    raise DataError(f"{r_file}: not a RecipeConfig ({e}).") from None
  model = cifar.make_model(genotype, config)
  try:
    data = v_file.read_bytes()
  except FileNotFoundError:
    raise DataError(f"{v_file}: missing; export_network writes the parameters there.") from None
  except OSError as e:
    raise DataError(f"{v_file}: unreadable ({e}).") from None
  try:
    variables = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types on damaged bytes
    raise DataError(f"{v_file}: corrupt ({type(e).__name__}: {e}).") from None
  expected = _layout(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                       train=False)))
  try:
    found = _layout(variables)
  except (AttributeError, TypeError):
    found = {}
  if found != expected:
    wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
    raise DataError(f"{v_file}: its arrays do not match the network of {g_file} and {r_file} "
                    f"({len(wrong)} differ, first {wrong[:3]}).")
  return model, variables
