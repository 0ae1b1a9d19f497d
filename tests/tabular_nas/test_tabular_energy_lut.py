"""The per-layer energy lookup against whole-network extraction of the materialized network."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax import energy
from cenas_jax.spaces.tabular import make_space
from cenas_jax.tabular_nas import energy_lut


@pytest.mark.parametrize("kind,batch", [("mlp", 1), ("mlp", 512), ("resnet", 1), ("resnet", 512)])
def test_lookup_within_2_percent_of_whole_network(kind, batch):
  space = make_space(kind, 9, 2, widths=(8, 64), hidden_widths=(16, 96), depths=(1, 2, 3))
  lut = energy_lut.EnergyLookup(space, energy.prior_model("h100-sxm"), batch)
  archs = space.sample(np.random.default_rng(0), 6)
  archs[0, 2:] = 0  # ResNet: BatchNorm in every block (the add + BatchNorm fusion)
  check = energy_lut.check_against_whole_network(lut, archs)
  assert check["max_rel_err"] <= 0.02, check


@pytest.mark.parametrize("batch", [1, 512])
def test_ftt_lookup_within_2_percent_of_whole_network(batch):
  # Tiny preset token dims and depths, fewer head and ratio values (fewer segments to extract).
  space = make_space("ftt", 9, 2, heads=(3, 8), ffn_ratios=(2.0, 4.0), cat_cardinalities=(3, 2))
  lut = energy_lut.EnergyLookup(space, energy.prior_model("h100-sxm"), batch)
  archs = space.sample(np.random.default_rng(0), 6)
  archs[0, :2] = (0, 0)  # depth 2: the first block next to the last
  check = energy_lut.check_against_whole_network(lut, archs)
  assert check["max_rel_err"] <= 0.02, check
  # Costlier architectures cost more: 5 blocks of 8 heads and ratio 4 over 2 blocks of 3 and 2.
  small = np.array([0, 2] + [0, 0] * 5, np.int32)
  big = np.array([3, 2] + [1, 1] * 5, np.int32)
  e = lut.energy_j(np.stack([small, big]))
  assert e[1] > 1.5 * e[0], e


def test_energy_grows_with_depth_and_width_and_saves_and_loads(tmp_path):
  space = make_space("mlp", 9, 2, widths=(8, 512), depths=(1, 4))
  lut = energy_lut.EnergyLookup(space, energy.prior_model("h100-sxm"), 256)
  small, deep, wide = [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]
  e = lut.energy_j(np.array([small, deep, wide]))
  assert e[0] < e[1] and e[0] < e[2]
  lut.save(tmp_path / "lut.json")
  again = energy_lut.EnergyLookup(space, energy.prior_model("h100-sxm"), 256)
  again.load(tmp_path / "lut.json")
  np.testing.assert_array_equal(again.energy_j(np.array([small, deep, wide])), e)
  assert again.extractions == 0
