r"""The predicted cost of a CIFAR-10 search before running it (GPU-hours, kWh, lbs CO2).

  python -m experiments.project_cifar_cost --flagfile=experiments/flags/cifar10_paper.flags --workdir=W

Takes the flags of ``experiments.cifar_search`` and writes W/projection.json and W/prices.json.
"""

from __future__ import annotations

from absl import app

from cenas_jax.cifar_nas import config as config_lib
from cenas_jax.cifar_nas import projection
from experiments import cli
from experiments.cifar_search import _HELP  # noqa: F401  (defines the search's flags)


def main(argv):
  cli.run_main(argv, config_lib.CifarSearchConfig, projection.project, workdir_kind="project_cifar_cost")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
