"""Nested frozen config dataclasses seen flat: every leaf field name is a flag name.

A binary's settings are nested config dataclasses whose leaf names are unique across the nesting, so
``--n_gpus`` names ``ExperimentConfig.search.pool.n_gpus``. ``leaf_fields`` lists the leaves with
their types and defaults, ``build_config`` builds the nesting from flat values, and ``flat_config``
gives the flat JSON form that ``config.json``, run markers and provenance record.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def leaf_fields(config_cls: type) -> dict[str, tuple[Any, Any]]:
  """``{flag name: (type, default)}`` over the flattened config dataclass.

  Raises:
    TypeError: a name used twice in the nesting.
  """
  out: dict[str, tuple[Any, Any]] = {}

  def walk(cls: type, default: Any) -> None:
    hints = typing.get_type_hints(cls)
    for f in (f for f in dataclasses.fields(cls) if f.init):
      tp, value = hints[f.name], getattr(default, f.name)
      if dataclasses.is_dataclass(tp):
        walk(tp, value)
      elif f.name in out:
        raise TypeError(f"{config_cls.__name__}: field name {f.name!r} is used twice in the nesting; "
                        "flag names must be unique.")
      else:
        out[f.name] = (tp, value)

  walk(config_cls, config_cls())
  return out


def build_config(config_cls: type[C], values: Mapping[str, Any]) -> C:
  """``config_cls`` from flat ``{field name: value}`` (missing names keep their defaults)."""
  hints = typing.get_type_hints(config_cls)
  kw = {}
  for f in (f for f in dataclasses.fields(config_cls) if f.init):
    if dataclasses.is_dataclass(hints[f.name]):
      kw[f.name] = build_config(hints[f.name], values)
    elif f.name in values:
      kw[f.name] = values[f.name]
  return config_cls(**kw)


def flat_config(config: Any) -> dict[str, Any]:
  """``{leaf field name: value}`` of a (nested) config dataclass, in JSON types (a mapping is kept
  as it is). Leaf names are the binaries' flag names."""
  from cenas_jax.results import to_json_safe  # pylint: disable=g-import-not-at-top

  if isinstance(config, Mapping):
    return to_json_safe(dict(config))
  out: dict[str, Any] = {}

  def walk(obj: Any) -> None:
    for f in (f for f in dataclasses.fields(obj) if f.init):
      value = getattr(obj, f.name)
      if dataclasses.is_dataclass(value):
        walk(value)
      else:
        out[f.name] = value

  walk(config)
  return to_json_safe(out)
