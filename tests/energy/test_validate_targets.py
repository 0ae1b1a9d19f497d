"""Reading the per-cell targets of the NB201 validation (units, strict CSV)."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.energy.validate_targets import infer_kind_unit, read_targets_csv
from cenas_jax.errors import ConfigError, DataError


class _Table:
  index = np.arange(100)

  def index_of(self, arch_str):
    return int(arch_str.split("-")[1])


def test_kind_and_unit_from_suffix_name_or_flag():
  assert infer_kind_unit("edgegpu_energy_mj", "auto") == ("energy", "mJ")
  assert infer_kind_unit("lat_us", "auto") == ("latency", "us")
  assert infer_kind_unit("my_energy", "auto") == ("energy", "mJ")  # HW-NAS-Bench convention
  assert infer_kind_unit("anything", "s") == ("latency", "s")
  with pytest.raises(ConfigError) as e:
    infer_kind_unit("arch_index", "auto")
  assert e.value.field == "target_unit"


def test_read_targets_csv_scales_to_si_and_skips_missing(tmp_path):
  path = tmp_path / "t.csv"
  rows = ["arch_str,cost_ms"] + [f"cell-{i},{i + 1}" for i in range(12)] + ["cell-50,nan"]
  path.write_text("\n".join(rows) + "\n")
  target = read_targets_csv(str(path), "cost_ms", "auto", _Table())
  assert target.kind == "latency" and target.unit == "ms" and len(target.arch_index) == 12
  np.testing.assert_allclose(target.value_si, (np.arange(12) + 1) * 1e-3)


def test_read_targets_csv_refuses_duplicates_and_too_few_cells(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text("arch_index,e_j\n" + "".join(f"{i % 5},1.0\n" for i in range(12)))
  with pytest.raises(DataError, match="more than once"):
    read_targets_csv(str(path), "e_j", "auto", _Table())
  path.write_text("arch_index,e_j\n1,1.0\n2,2.0\n")
  with pytest.raises(DataError, match="need at least 10"):
    read_targets_csv(str(path), "e_j", "auto", _Table())
