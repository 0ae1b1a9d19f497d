"""Tabular search spaces: sizes, decoding and index encodings."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.errors import ConfigError
from cenas_jax.spaces.tabular import make_space


def test_paper_value_sets_and_sizes():
  mlp = make_space("mlp", 10, 2)
  assert [d.n for d in mlp.decisions[:2]] == [10, 256] and len(mlp.decisions) == 12
  assert mlp.size == sum(256 * 6 ** d for d in range(1, 11))
  res = make_space("resnet", 10, 1)
  assert res.widths == tuple(range(4, 257, 4)) and res.hidden_widths[-1] == 512
  assert len(res.decisions) == 2 + 4 * 10
  assert res.size == sum(64 * (2 * 128 * 36) ** d for d in range(1, 11))


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_flat_index_round_trip_and_decode(kind):
  space = make_space(kind, 5, 3)
  for a in space.sample(np.random.default_rng(0), 50):
    np.testing.assert_array_equal(space.from_flat_index(space.flat_index(a)), a)
    d = space.decode(a)
    depth = d["depth"] if kind == "mlp" else d["n_blocks"]
    assert depth == space.depths[a[0]]
    c = space.canonical(a)
    assert space.decode(c) == d


def test_bad_values_are_refused():
  with pytest.raises(ConfigError):
    make_space("mlp", 5, 2, widths=(8, 4))
  with pytest.raises(ConfigError):
    make_space("ftt", 5, 2)
