"""experiments.fit_energy_model with a kernel table on a fake-meter dataset (no GPU needed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cenas_jax import energy
from experiments import fit_energy_model, profile_kernels
from experiments.profile_kernels import ProfileConfig

FAKE = ProfileConfig(preset="tiny", min_window_s=0.02, repeats=2, idle_s=0.01, cooldown_s=0.0,
                     fake_meter=True, allow_fake=True, fake_power_w=250.0)


def test_fit_with_kernel_table_saves_and_reloads_it(tmp_path):
  profile_kernels.run(FAKE, tmp_path / "profile")
  dataset = str(tmp_path / "profile" / "kernels.csv")
  out = tmp_path / "fit"
  summary = fit_energy_model.run(fit_energy_model.FitConfig(
      dataset=dataset, device_spec="h100-sxm", allow_fake=True, table_levels=("class", "op"),
      table_ridge=1e-3), out)
  assert summary["table_provenance"].startswith("fit:energy+time:")
  model = energy.load_energy_model(out / "energy_model.json")
  assert model.table is not None and model.table.levels == ("class", "op")
  assert model.table.n_entries() > 0
  on_disk = json.loads((out / "energy_model.json").read_text())
  assert on_disk["format"] == "cenas_jax.energy_model/2" and on_disk["table"]["levels"] == [
      "class", "op"]
  preds = pd.read_csv(out / "predictions.csv")
  assert (preds["fitted_energy_j"] > 0).all()
  with pytest.raises(fit_energy_model.FitError, match="ridge"):
    fit_energy_model.run(fit_energy_model.FitConfig(
        dataset=dataset, device_spec="h100-sxm", allow_fake=True, table_levels=("op",),
        table_ridge=0.0), tmp_path / "bad")
