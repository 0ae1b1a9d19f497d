"""Real data for the searches, each behind a strict loader that names the file and row of a problem.

Modules (import the one you need; nothing is imported eagerly, so ``import cenas_jax.data`` is cheap):

- ``paths``: where data lives (``cache_dir()`` for downloads, ``shared_data_dir()`` for the shared
  real data) and the one download routine every loader uses.
- ``carbon_traces``: hourly grid carbon-intensity traces (``CarbonTrace``, gCO2eq/kWh, UTC).
- ``nasbench``: the NAS-Bench-201 / HW-NAS-Bench lookup table of all 15,625 NB201 cells.
- ``cifar10``: CIFAR-10 in its original python format (safe extraction, restricted unpickling).
- ``tabular``: tabular datasets (UCI Adult, German credit, California housing, CSV/parquet, ARFF,
  OpenML), preprocessing fitted on training rows, and TabZilla folds.
"""

__all__ = ["carbon_traces", "cifar10", "nasbench", "paths", "tabular"]
