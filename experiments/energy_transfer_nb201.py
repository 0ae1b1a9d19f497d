r"""Transfer of the per-kernel model to a new device from 1-10 % of its NB201 cells (HW-NAS-Bench).

  python -m experiments.energy_transfer_nb201 --workdir=W [--targets=all] [--seeds=5]

Fits the kernel model on the source device's cells (default: Jetson TX2 latency), recalibrates it
on a few cells of every other HW-NAS-Bench target and scores it on that target's held-out 30 %,
next to a FLOPs-linear fit on the same few cells (``cenas_jax.energy.transfer``). Writes
``transfer.csv``, ``summary.json`` and ``transfer_curves.png``; reuses ``W/features.npz`` (the
kernel counts of ``experiments.energy_model_nb201``) when present.
"""

from __future__ import annotations

import os

from absl import app

from cenas_jax.energy import transfer
from experiments import cli

cli.define_flags(transfer.TransferConfig, help={
    "source": "HW-NAS-Bench target the source kernel model is fitted on (all its cells).",
    "fallback_source": "Source for held-out targets of the source's own device.",
    "targets": "Held-out targets ('all' or names such as fpga_latency, pixel3_latency).",
    "fractions": "Shares of a target's cells the recalibration sees.",
    "seeds": "Random draws of the few cells per fraction.",
    "split_seed": "Seed of the 70/30 split; every model is scored on its 30 %.",
    "device_spec": "DEVICE_SPECS key of the source model's prior.",
    "edge_kernels": "Edge-kernel keys of the source model (position, op, graph or none).",
    "table": "Signature levels and ridge of the source model's kernel table (LEVELS@RIDGE).",
    "limit": "Use only the first N cells of each target (0: all); for quick runs.",
})


def main(argv):
  cli.run_main(argv, transfer.TransferConfig, transfer.run)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main)
