r"""Measures the energy of single kernels on an NVIDIA GPU and writes a per-kernel dataset.

  python -m experiments.profile_kernels --workdir=/tmp/kernels_h100

Writes ``kernels.csv`` (one row per kernel configuration; an existing one in ``--workdir`` is
resumed) and ``summary.json``: see ``cenas_jax.energy.kernel_bench``. Without an NVIDIA GPU the
binary says so in one line and exits non-zero: it never writes invented numbers. ``--fake_meter``
(with ``--allow_fake``) exists only to test this binary; its rows say ``energy_source=fake``.
"""

from __future__ import annotations

from absl import app

from cenas_jax.energy import kernel_bench
from experiments import cli

cli.define_flags(kernel_bench.ProfileConfig, help={
    "preset": "Which kernel configurations.",
    "min_window_s": "Shortest measured window, seconds.",
    "repeats": "Measured windows per configuration.",
    "idle_s": "Idle-power measurement before/after the run, seconds.",
    "cooldown_s": "Pause before each window, seconds.",
    "device": "GPU index as CUDA/JAX see it (CUDA_VISIBLE_DEVICES).",
    "method": "NVML reading: energy counter (Volta+) or polled power.",
    "max_configs": "Only the first N configurations (0: all).",
    "seed": "Seed of the input data.",
    "fake_meter": "TESTS ONLY: simulated energy, rows labelled energy_source=fake.",
    "allow_fake": "Required with --fake_meter.",
    "fake_power_w": "Power of the fake meter, watts.",
    "fake_idle_power_w": "Idle power of the fake meter, watts.",
})


def main(argv):
  cli.run_main(argv, kernel_bench.ProfileConfig, kernel_bench.run, workdir_kind="profile_kernels")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
