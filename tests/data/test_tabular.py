"""Tests for cenas_jax.data.tabular as a package: every public name of its modules stays importable
from ``cenas_jax.data.tabular`` (the module's tests are test_tabular_<module>.py)."""

from __future__ import annotations

import importlib

import pytest

from cenas_jax.data import tabular


@pytest.mark.parametrize("module", ["dataset", "loaders", "arff", "openml", "preprocessing", "folds"])
def test_public_names_are_reexported(module):
  mod = importlib.import_module(f"cenas_jax.data.tabular.{module}")
  own = [n for n, v in vars(mod).items()
         if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__]
  assert own, module
  for name in own:
    assert name in tabular.__all__ and getattr(tabular, name) is getattr(mod, name), name


def test_all_names_exist():
  for name in tabular.__all__:
    assert hasattr(tabular, name), name
