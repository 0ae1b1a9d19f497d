"""A committed flagfile parsed to its binary's config, as the binary would (tests import it by name,
like ``jax_processes``)."""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import cli

REPO = Path(__file__).resolve().parents[1]


def config_from_flagfile(config_cls: type, name: str, *extra: str):
  """``config_cls`` built from ``experiments/flags/<name>`` and ``extra`` flags. Nested
  ``--flagfile`` lines are relative to the working directory, as for the binaries."""
  values = flags.FlagValues()
  cli.define_flags(config_cls, flag_values=values)
  values(["prog", f"--flagfile={REPO / 'experiments/flags' / name}", *extra, "--workdir=unused"])
  return cli.config_from_flags(config_cls, flag_values=values)
