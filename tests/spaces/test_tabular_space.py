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


@pytest.mark.parametrize("kind", ["mlp", "resnet", "ftt"])
def test_flat_index_round_trip_and_decode(kind):
  space = make_space(kind, 5, 3)
  for a in space.sample(np.random.default_rng(0), 50):
    np.testing.assert_array_equal(space.from_flat_index(space.flat_index(a)), a)
    d = space.decode(a)
    depth = d["n_blocks"] if kind == "resnet" else d["depth"]
    assert depth == space.depths[a[0]]
    c = space.canonical(a)
    assert space.decode(c) == d


def test_bad_values_are_refused():
  with pytest.raises(ConfigError):
    make_space("mlp", 5, 2, widths=(8, 4))
  with pytest.raises(ConfigError):
    make_space("transformer", 5, 2)
  with pytest.raises(ConfigError):
    make_space("ftt", 5, 2, cat_cardinalities=(4, 3))  # 7 one-hot columns in 5 inputs


def test_ftt_tiny_preset_tokens_and_decode():
  space = make_space("ftt", 10, 2, cat_cardinalities=(3, 4))
  assert space.widths == (8, 16, 32) and space.depths == (2, 3, 4, 5)
  assert [d.name for d in space.decisions[:4]] == ["depth", "d_token", "heads_0", "ffn_ratio_0"]
  assert len(space.decisions) == 2 + 2 * 5
  assert space.size == sum(3 * (6 * 5) ** d for d in range(2, 6))
  assert space.n_num == 3 and space.n_tokens == 3 + 2 + 1  # numeric, categorical, CLS
  arch = np.array([1, 2] + [5, 4] + [0, 1] + [3, 3] * 3, np.int32)  # depth 3, d_token 32
  d = space.decode(arch)
  assert d["depth"] == 3 and d["d_token"] == 32 and d["head_dim"] == 8
  assert [b["heads"] for b in d["blocks"]] == [8, 3, 6]
  assert [b["d_hidden"] for b in d["blocks"]] == [128, 80, 112]  # 4.0, 2.5, 3.5 x 32
  assert space.max_ffn_hidden == 128
  np.testing.assert_array_equal(space.canonical(arch)[8:], 0)
  assert space.describe(arch) == "ftt(d_token=32, blocks=[8h128,3h80,6h112])"
