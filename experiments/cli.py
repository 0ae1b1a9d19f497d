"""Flags <-> config dataclasses: the one mechanism every binary uses (not a binary itself).

A binary is three lines over the library::

  cli.define_flags(MyConfig, help={"lr": "Learning rate."})
  def main(argv): cli.run_main(argv, MyConfig, my_lib.run)
  if __name__ == "__main__": app.run(main)

``define_flags`` defines one absl flag per leaf field of a frozen config dataclass, named as the field.
Nested config dataclasses are flattened (``ExperimentConfig.pool.n_gpus`` is ``--n_gpus``), so a
flagfile never spells the nesting and a field name is a flag name; names must therefore be unique
across the nesting. Field types map to flags: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``
(an enum) and ``tuple[int | float | str, ...]`` (comma-separated). A value that does not parse is
absl's one-line "Flags parsing error" naming the flag; a value the config refuses (its
``__post_init__`` raises ``ConfigError(field, message)``) is one ``error: --field: ...`` line;
neither prints a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from absl import flags, logging

from cenas_jax.errors import CenasError, ConfigError

FLAGS = flags.FLAGS
C = TypeVar("C")

_SCALARS = {int: "an integer", float: "a number", str: "a string"}


class _TupleParser(flags.ArgumentParser):
  """Comma-separated values of one scalar type -> tuple (an empty string is the empty tuple)."""

  syntactic_help = "a comma-separated list"

  def __init__(self, item_type: type):
    self.item_type = item_type

  def parse(self, argument: Any) -> tuple:
    items = list(argument) if isinstance(argument, (tuple, list)) else [
        s.strip() for s in str(argument).split(",") if s.strip()]
    out = []
    for item in items:
      try:
        out.append(self.item_type(item))
      except (TypeError, ValueError):
        raise ValueError(f"{item!r} is not {_SCALARS[self.item_type]}") from None
    return tuple(out)

  def flag_type(self) -> str:
    return f"tuple of {self.item_type.__name__}"


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


def define_flags(config_cls: type, *, help: Mapping[str, str] | None = None,  # pylint: disable=redefined-builtin
                 skip: tuple[str, ...] = (), workdir: bool = True,
                 flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines one flag per leaf field of ``config_cls`` (defaults from ``config_cls()``).

  ``help`` gives the text per flag name; ``skip`` names fields the binary defines itself (it passes
  their values to ``config_from_flags``); ``workdir`` adds the required ``--workdir``; tests pass
  their own ``flag_values``.
  """
  help = dict(help or {})
  if workdir:
    flags.DEFINE_string("workdir", None, "Output directory (a run found there is resumed).",
                        required=True, flag_values=flag_values)
  for name, (tp, default) in leaf_fields(config_cls).items():
    if name in skip:
      continue
    text = help.pop(name, "")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
      flags.DEFINE_bool(name, default, text, flag_values=flag_values)
    elif tp in (int, float, str):
      define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}[tp]
      define(name, default, text, flag_values=flag_values)
    elif origin is Literal:
      flags.DEFINE_enum(name, default, [str(a) for a in args], text, flag_values=flag_values)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
      flags.DEFINE(_TupleParser(args[0]), name, default, text, serializer=flags.ListSerializer(","),
                   flag_values=flag_values)
    else:
      raise TypeError(f"{config_cls.__name__}.{name}: no flag type for {tp!r}.")
  if help:
    raise TypeError(f"help given for unknown flags {sorted(help)}")


def config_from_flags(config_cls: type[C], *, flag_values: flags.FlagValues = FLAGS,
                      **overrides: Any) -> C:
  """Builds ``config_cls`` (nested dataclasses included) from the parsed flags and ``overrides``
  (values the binary computes itself, by flag name). Raises ``ConfigError`` for a refused value."""
  values = {name: overrides[name] if name in overrides else flag_values[name].value
            for name in leaf_fields(config_cls)}
  return build_config(config_cls, values)


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


def run_main(argv: list[str], config_cls: type[C], run: Callable[[C, str], Any], *,
             flag_values: flags.FlagValues = FLAGS, **overrides: Any) -> Any:
  """Every binary's ``main``: flags -> config -> ``run(config, FLAGS.workdir)``. A ``CenasError``
  (bad flag value, bad or missing file) ends the process with one ``error: ...`` line on stderr and
  exit status 2, without a traceback; anything else is a bug and keeps its traceback."""
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --helpshort).")
  # The binaries print their own progress; orbax logs several INFO lines per checkpoint.
  logging.set_verbosity(logging.WARNING)
  try:
    config = config_from_flags(config_cls, flag_values=flag_values, **overrides)
    return run(config, flag_values.workdir)
  except ConfigError as e:
    _fail(f"--{e.field}: {e.message}")
  except CenasError as e:
    _fail(str(e))


def _fail(message: str) -> typing.NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)

