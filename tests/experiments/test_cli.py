"""The flags <-> config mechanism shared by the binaries."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from absl import flags

from cenas_jax.errors import ConfigError
from experiments import cli


@dataclasses.dataclass(frozen=True)
class Inner:
  n_gpus: int = 8
  pue: float = 1.0

  def __post_init__(self):
    if self.n_gpus < 1:
      raise ConfigError("n_gpus", f"needs at least 1 GPU, got {self.n_gpus}")


@dataclasses.dataclass(frozen=True)
class Outer:
  seeds: tuple[int, ...] = (0, 1)
  mode: Literal["a", "b"] = "a"
  name: str = "x"
  greedy: bool = False
  inner: Inner = dataclasses.field(default_factory=Inner)


def _parse(argv, cls=Outer, **kw):
  fv = flags.FlagValues()
  cli.define_flags(cls, flag_values=fv, **kw)
  fv(["prog", "--workdir=/w", *argv])
  return fv


def test_flat_flags_rebuild_the_nested_config():
  fv = _parse(["--seeds=3,4,5", "--mode=b", "--n_gpus=2", "--greedy"])
  config = cli.config_from_flags(Outer, flag_values=fv)
  assert config == Outer(seeds=(3, 4, 5), mode="b", greedy=True, inner=Inner(n_gpus=2))


def test_defaults_come_from_the_dataclass():
  fv = _parse([])
  assert cli.config_from_flags(Outer, flag_values=fv) == Outer()
  assert fv["seeds"].default_as_str == "'0,1'"


def test_bad_list_item_names_the_flag():
  fv = flags.FlagValues()
  cli.define_flags(Outer, flag_values=fv)
  with pytest.raises(flags.IllegalFlagValueError, match=r"--seeds=0,abc.*'abc' is not an integer"):
    fv(["prog", "--workdir=/w", "--seeds=0,abc"])


def test_enum_is_checked_by_absl():
  fv = flags.FlagValues()
  cli.define_flags(Outer, flag_values=fv)
  with pytest.raises(flags.IllegalFlagValueError, match="mode"):
    fv(["prog", "--workdir=/w", "--mode=c"])


def test_refused_value_reports_the_field_as_flag(capsys):
  fv = _parse(["--n_gpus=0"])
  with pytest.raises(SystemExit) as e:
    cli.run_main(["prog"], Outer, lambda config, workdir: None, flag_values=fv)
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: --n_gpus: needs at least 1 GPU, got 0\n"


def test_overrides_and_unknown_help():
  fv = _parse([], skip=("seeds",))
  assert "seeds" not in fv
  assert cli.config_from_flags(Outer, flag_values=fv, seeds=(9,)).seeds == (9,)
  with pytest.raises(TypeError, match="unknown flags"):
    cli.define_flags(Outer, flag_values=flags.FlagValues(), help={"nope": "x"})


def test_duplicate_names_in_the_nesting_are_refused():

  @dataclasses.dataclass(frozen=True)
  class Twice:
    n_gpus: int = 1
    inner: Inner = dataclasses.field(default_factory=Inner)

  with pytest.raises(TypeError, match="used twice"):
    cli.leaf_fields(Twice)


def test_run_gets_the_config_and_workdir():
  fv = _parse(["--name=y"])
  got = cli.run_main(["prog"], Outer, lambda config, workdir: (config.name, workdir), flag_values=fv)
  assert got == ("y", "/w")
