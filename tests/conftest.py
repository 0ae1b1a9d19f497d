"""Shared pytest fixtures.

Tests that need the real data read it from ``$CENAS_SHARED_DATA`` (default ``../shared/data`` from
the repository root). When it is missing they fail (not skip) with a message saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep JAX on the CPU with 8 fake devices for multi-device tests; must happen before JAX is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_xla = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _xla:
  os.environ["XLA_FLAGS"] = (_xla + " --xla_force_host_platform_device_count=8").strip()

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
