r"""Fits the per-kernel energy model to a measured kernel dataset and reports per-class errors.

  python -m experiments.fit_energy_model --dataset=/tmp/kernels_h100/kernels.csv \
      --workdir=/tmp/energy_fit_h100

Reads the ``kernels.csv`` written by ``experiments.profile_kernels`` (no GPU needed), fits the
model on a training split (optionally with a kernel table, ``--table_levels=class+op``) and writes
``energy_model.json``, ``metrics.csv``, ``predictions.csv`` and ``summary.json``: see
``cenas_jax.energy.kernel_fit``. Rows of the test-only fake meter are refused unless
``--allow_fake``.
"""

from __future__ import annotations

from absl import app

from cenas_jax.energy import kernel_fit
from experiments import cli

cli.define_flags(kernel_fit.FitConfig, help={
    "dataset": "kernels.csv written by experiments.profile_kernels (required).",
    "device_spec": "DEVICE_SPECS key; default: inferred from the device name.",
    "ridge": "Pull of the fit towards the datasheet prior (relative units).",
    "test_fraction": "Share of configurations held out for the test metrics.",
    "seed": "Seed of the train/test split.",
    "kernel_mode": "How kernels are extracted.",
    "allow_fake": "Accept energy_source=fake rows (tests of this binary only).",
    "table_levels": "'+'-joined signature levels of a kernel table fitted on top of the class "
                    "model (cenas_jax.energy.model.SIGNATURE_LEVELS, e.g. class+op); empty: no "
                    "table.",
    "table_ridge": "Ridge of the kernel table (unitless, > 0).",
    "min_dynamic_fraction": "Leave out configurations whose dynamic energy (E - idle power x time) is "
                            "under this share of E: the meter does not resolve it.",
})


def main(argv):
  cli.run_main(argv, kernel_fit.FitConfig, kernel_fit.run, workdir_kind="fit_energy_model")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
