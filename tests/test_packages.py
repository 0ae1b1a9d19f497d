"""The packages a newcomer imports first say what they hold and export their main names."""

from __future__ import annotations

import cenas_jax.carbon
import cenas_jax.data


def test_carbon_and_data_have_docstrings_and_exports():
  for pkg in (cenas_jax.carbon, cenas_jax.data):
    assert pkg.__doc__ and len(pkg.__doc__) > 200
    for name in pkg.__all__:
      assert getattr(pkg, name) is not None, (pkg.__name__, name)
  assert cenas_jax.carbon.carbon_g(3.6e6, 250.0) == 250.0
  assert {"CarbonTracker", "restore_forecaster", "TrainedForecaster"} <= set(cenas_jax.carbon.__all__)
  assert {"region_trace", "load_nb201_table", "ElectricityMapsClient"} <= set(cenas_jax.data.__all__)
