"""Tabular datasets: loaders, preprocessing fitted on training rows, and TabZilla-style folds.

Every public name is importable from here (``from cenas_jax.data import tabular``); the modules:

- ``dataset``: ``TabularDataset`` (missing values kept as ``NaN`` in ``x_num`` and code ``-1`` in
  ``x_cat``), ``SourceFile``, ``TASKS``.
- ``loaders``: ``load_adult`` (UCI Adult, 48,842 rows, original train/test in ``original_split``),
  ``load_german_credit`` (1,000 rows), ``load_california_housing`` (20,640 rows) and
  ``load_csv_dataset`` (any CSV, optionally gzip-compressed, or parquet file with a named target).
- ``arff``: ``read_arff`` (strict reader, no dependency) and ``load_arff_dataset``.
- ``openml``: ``load_openml``, an OpenML dataset by id, downloaded once into
  ``cache_dir()/"openml"/<id>``.
- ``preprocessing``: ``fit_preprocessor`` / ``apply_preprocessor``, pure functions whose state is
  fitted on training rows only (mean imputation with an optional missing indicator, standard or
  quantile normalization, categorical codes with reserved "missing" and "unseen" codes).
- ``folds``: ``tabzilla_folds``, the 10-fold train/validation/test splits of TabZilla (McElfresh et
  al., 2023).
- ``columns``: typing raw string columns into a dataset (shared by the readers; internal).
"""

from cenas_jax.data.tabular.arff import ArffAttribute, load_arff_dataset, read_arff
from cenas_jax.data.tabular.columns import DEFAULT_MISSING_VALUES, MAX_AUTO_CLASSES
from cenas_jax.data.tabular.dataset import (TASKS, MissingDependencyError, SourceFile,
                                            TabularDataset, Task)
from cenas_jax.data.tabular.folds import tabzilla_folds
from cenas_jax.data.tabular.loaders import (ADULT_CLASSES, ADULT_FEATURES, ADULT_URL,
                                            CALIFORNIA_HOUSING_URL, GERMAN_CREDIT_URL,
                                            GERMAN_FEATURES, load_adult, load_california_housing,
                                            load_csv_dataset, load_german_credit)
from cenas_jax.data.tabular.openml import OPENML_DESCRIPTION_URL, load_openml, openml_dir
from cenas_jax.data.tabular.preprocessing import (QUANTILE_BOUNDS, PreprocessedArrays, Preprocessor,
                                                  apply_preprocessor, fit_preprocessor)

__all__ = [
    "ADULT_CLASSES", "ADULT_FEATURES", "ADULT_URL", "ArffAttribute", "CALIFORNIA_HOUSING_URL",
    "DEFAULT_MISSING_VALUES", "GERMAN_CREDIT_URL", "GERMAN_FEATURES", "MAX_AUTO_CLASSES",
    "MissingDependencyError", "OPENML_DESCRIPTION_URL", "PreprocessedArrays", "Preprocessor",
    "QUANTILE_BOUNDS", "SourceFile", "TASKS", "TabularDataset", "Task", "apply_preprocessor",
    "fit_preprocessor", "load_adult", "load_arff_dataset", "load_california_housing",
    "load_csv_dataset", "load_german_credit", "load_openml", "openml_dir", "read_arff",
    "tabzilla_folds",
]
