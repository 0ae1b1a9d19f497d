"""Flags <-> config dataclasses: the one mechanism every binary uses (not a binary itself).

A binary is three lines over the library::

  cli.define_flags(MyConfig, help={"lr": "Learning rate."})
  def main(argv): cli.run_main(argv, MyConfig, my_lib.run)
  if __name__ == "__main__": app.run(main, flags_parser=cli.parse_flags)

``define_flags`` defines one absl flag per leaf field of a frozen config dataclass, named as the field.
Nested config dataclasses are flattened (``ExperimentConfig.pool.n_gpus`` is ``--n_gpus``), so a
flagfile never spells the nesting and a field name is a flag name; names must therefore be unique
across the nesting. Field types map to flags: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``
(an enum) and ``tuple[int | float | str, ...]`` (comma-separated).

Every failure the user can fix is one line on stderr and exit status 2, without a traceback, and
nothing is written:

- a value that does not parse (``--seeds=0,abc``): ``error: --seeds=0,abc: 'abc' is not an
  integer`` (``parse_flags``, the binaries' ``flags_parser``);
- a value the config refuses (its ``__post_init__`` raises ``ConfigError(field, message)``, where
  ``field`` is the flag's name): ``error: --field: message``;
- a bad or missing input file, a refused ``--workdir`` (``cenas_jax.workdir``), any other
  ``CenasError`` or an ``OSError`` on a file: ``error: <file>: ...`` (``run_main``).
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from absl import flags, logging

from cenas_jax import workdir as workdir_lib
from cenas_jax.config_tree import build_config, leaf_fields  # noqa: F401  (leaf_fields: tests)
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
      define_tuple(name, args[0], default, text, flag_values=flag_values)
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


def define_tuple(name: str, item_type: type, default: tuple, help: str,  # pylint: disable=redefined-builtin
                 flag_values: flags.FlagValues = FLAGS) -> None:
  """A comma-separated flag of ``item_type`` values (``--seeds=0,1,2``) parsed to a tuple; a bad item
  is refused naming the flag and the item."""
  flags.DEFINE(_TupleParser(item_type), name, default, help, serializer=flags.ListSerializer(","),
               flag_values=flag_values)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """The binaries' ``app.run(main, flags_parser=cli.parse_flags)``: absl's parsing, but a bad flag is
  one ``error: --flag=value: ...`` line and exit status 2 (absl prints two lines and exits 1)."""
  try:
    return flag_values(argv)
  except flags.Error as e:
    text = str(e)
    _fail((text[len("flag "):] if text.startswith("flag --") else text) + " (see --helpshort)")


def run_main(argv: list[str], config_cls: type[C], run: Callable[[C, str], Any], *,
             flag_values: flags.FlagValues = FLAGS, workdir_kind: str | None = None,
             **overrides: Any) -> Any:
  """Every binary's ``main``: flags -> config -> ``run(config, FLAGS.workdir)``.

  A ``CenasError`` (refused flag value, bad or missing file, refused workdir) or an ``OSError`` on a
  file ends the process with one ``error: ...`` line on stderr and exit status 2, without a
  traceback, and a workdir the failed start created (holding only the run marker) is removed again;
  anything else is a bug and keeps its traceback.

  Args:
    argv: what absl left after the flags.
    config_cls: the binary's config dataclass.
    run: the library's ``run(config, workdir)``.
    flag_values: the parsed flags (tests pass their own).
    workdir_kind: for a ``run`` that does not check its workdir itself: ``run_main`` checks it
      (``cenas_jax.workdir.prepare_workdir``) and claims it before calling ``run``.
    **overrides: values the binary computes itself, by flag name.
  """
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --helpshort).")
  # The binaries print their own progress; orbax logs several INFO lines per checkpoint.
  logging.set_verbosity(logging.WARNING)
  workdir = flag_values.workdir if "workdir" in flag_values else None
  try:
    with workdir_lib.released_on_failure(workdir):
      config = config_from_flags(config_cls, flag_values=flag_values, **overrides)
      if workdir_kind and workdir:
        workdir_lib.claim_for(workdir, config, kind=workdir_kind)
      return run(config, workdir)
  except ConfigError as e:
    _fail(f"--{e.field}: {e.message}")
  except CenasError as e:
    _fail(str(e))
  except OSError as e:  # a file or the workdir: permissions, a file where a folder is expected, ...
    where = e.filename if e.filename is not None else (workdir or "")
    _fail(f"{where}: {e.strerror or e}" if where else str(e))


def _fail(message: str) -> typing.NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)

