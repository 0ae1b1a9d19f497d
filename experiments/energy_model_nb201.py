r"""Validates the per-kernel energy model on measured NB201 energy and latency (HW-NAS-Bench).

  python -m experiments.energy_model_nb201 --workdir=W

Fits the per-kernel model (roofline classes + a kernel table, choices cross-validated on the
training cells) on a random 70 % of the cells with hardware data and reports on the rest, next to
linear baselines on MACs, parameter count and memory traffic and their blend with the kernel model,
with an ablation; the model CV on the training cells selects is reported as ``selected``
(``--targets=all``: every HW-NAS-Bench target of the table). Any per-cell column of a CSV
keyed by ``arch_index`` or ``arch_str`` can be the target instead of the HW-NAS-Bench Jetson TX2
energy and latency::

  python -m experiments.energy_model_nb201 --workdir=W --targets_csv=PATH \
      --target_column=NAME [--target_unit=mJ|J|ms|s|us] --device_spec=NAME --batch_size=N

One model over several batch sizes of a device, from one CSV column per batch (rows become
(cell, batch) pairs; split and CV grouped by cell; metrics overall and per batch as
``<name>@<batch>``; ``cenas_jax.energy.validate_batches``)::

  python -m experiments.energy_model_nb201 --workdir=W --targets_csv=nb201_targets.csv \
      --target_column=time_b1_ms@1,time_b32_ms@32,time_b256_ms@256 --device_spec=h200-sxm

For a few measured cells, ``--split=leave_one_cell_out --cv_folds=K`` (K < cells) scores every
cell with the models fitted without it.

The protocol and its outputs (``metrics.json``, ``predictions.csv``, ``summary.json``, fitted
models, scatter plots) are ``cenas_jax.energy.validate``.
"""

from __future__ import annotations

import os

from absl import app

from cenas_jax.energy import validate
from experiments import cli

cli.define_flags(validate.ValidateConfig, help={
    "seed": "Seed of the 70/30 train/test split.",
    "train_fraction": "Share of cells the models are fitted on.",
    "device_spec": "DEVICE_SPECS key of the analytical prior.",
    "batch_size": "Images per call the kernels are extracted at.",
    "targets_csv": "CSV with one row per cell (arch_index or arch_str column); default: the "
                   "HW-NAS-Bench table's edgegpu_energy and edgegpu_latency.",
    "target_column": "Column of --targets_csv to fit and validate against (at --batch_size), or "
                     "one column per batch size as COL@BATCH,COL@BATCH,... (e.g. "
                     "time_b1_ms@1,time_b256_ms@256): one model over all (cell, batch) pairs.",
    "target_unit": "Unit of --target_column (auto: from a _j/_mj/_s/_ms/_us suffix or the name).",
    "ridge": "Pull of the fitted kernel model towards its prior (relative); 0: chosen by 5-fold "
             "cross-validation on the training cells from --ridge_grid.",
    "ridge_grid": "Candidates for --ridge=0.",
    "table_levels_grid": "Candidate signature levels of the kernel table ('+'-joined levels of "
                         "cenas_jax.energy.model.SIGNATURE_LEVELS; 'none': no table).",
    "table_ridge_grid": "Candidate ridge strengths of the kernel table (unitless, > 0).",
    "edge_kernels": "Add nb201_kernels.edge_kernels (per-edge and per-node-sum placeholders of "
                    "the cell structure XLA fuses away) to each cell's kernels for the table: "
                    "keyed by edge position and op ('position'), by op only ('op'), or not at all "
                    "('none'); 'auto': all three fitted, the lowest CV RMSPE kept.",
    "targets": "HW-NAS-Bench targets of the table ('all' or names such as edgegpu_energy, "
               "raspi4_latency, fpga_energy); ignored with --targets_csv.",
    "limit": "Use only the first N cells (0: all); for quick runs.",
    "workers": "Processes for kernel extraction (spawn).",
    "split": "random: fit on --train_fraction of the cells, score the rest; leave_one_cell_out: "
             "fit once per cell without it, score the pooled held-out predictions.",
    "cv_folds": "Folds of the cross-validated choices on the training cells (grouped by cell).",
})


def main(argv):
  cli.run_main(argv, validate.ValidateConfig, validate.run, workdir_kind="energy_model_nb201")


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main, flags_parser=cli.parse_flags)
