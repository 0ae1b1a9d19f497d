"""Shared pytest fixtures.

Tests that need the real data read it from ``$CENAS_SHARED_DATA`` (default ``../shared/data`` from
the repository root). When it is missing they fail (not skip) with a message saying where to put it.
"""

from __future__ import annotations

import os

# Keep JAX on the CPU with 8 fake devices for the multi-device tests. Both must be set before any
# JAX backend is initialised (the option refuses a change afterwards), so this comes first. The
# environment variable is for the binaries some tests start as subprocesses: they must see the same
# devices as the in-process runs they are compared with.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cenas_jax.data.paths import shared_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
  """Root of the shared real data; fails loudly when it is absent."""
  root = shared_data_dir()
  if not root.is_dir():
    pytest.fail(
        f"Shared real data not found at {root}. Set CENAS_SHARED_DATA to the folder holding "
        "carbon_intensity/, hw_nas_bench/, nas_bench_201/, nb201_supernet_acc/, tabular/ and "
        "cifar10_subset/.",
        pytrace=False,
    )
  return root


# The real tabular datasets, loaded once per session: the loader, preprocessing and folds tests all
# read them.


@pytest.fixture(scope="session")
def adult(shared_data):
  """UCI Adult from the shared data (a ``TabularDataset``, read-only arrays)."""
  from cenas_jax.data import tabular  # pylint: disable=g-import-not-at-top
  return tabular.load_adult(shared_data / "tabular" / "adult")


@pytest.fixture(scope="session")
def housing(shared_data):
  """California housing from the shared data (a ``TabularDataset``, read-only arrays)."""
  from cenas_jax.data import tabular  # pylint: disable=g-import-not-at-top
  return tabular.load_california_housing(
      shared_data / "tabular" / "california_housing" / "housing.csv.gz")
