"""Tests for cenas_jax.data.tabular.preprocessing: training-rows-only fitting, codes, quantiles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cenas_jax.data.tabular import dataset, preprocessing
from cenas_jax.errors import DataError


def _synthetic(n: int = 40) -> dataset.TabularDataset:
  rng = np.random.default_rng(0)
  x_num = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
  x_num[[3, 7, 30], 1] = np.nan
  x_cat = rng.integers(0, 3, size=(n, 2))
  x_cat[5, 0] = -1
  x_cat[35, 1] = 3  # category 3 only in the last rows (never in training below)
  return dataset.TabularDataset(
      name="syn", task="binclass", x_num=x_num, x_cat=x_cat, cat_cardinalities=(3, 4),
      y=np.arange(n) % 2, feature_names=("a", "b", "c", "k", "m"), num_names=("a", "b", "c"),
      cat_names=("k", "m"), source=(), class_names=("n", "p"))


def test_preprocessor_uses_training_rows_only():
  ds = _synthetic()
  train = np.arange(30)
  prep = preprocessing.fit_preprocessor(ds, train, missing_indicator=True)
  # Changing the non-training rows changes nothing in the fitted state.
  x_num = ds.x_num.copy()
  x_num[30:] += 1_000.0
  shifted = dataclasses.replace(ds, x_num=x_num)
  prep2 = preprocessing.fit_preprocessor(shifted, train, missing_indicator=True)
  np.testing.assert_array_equal(prep.center, prep2.center)
  np.testing.assert_array_equal(prep.scale, prep2.scale)
  out = preprocessing.apply_preprocessor(prep, ds)
  tr = out.x_num[train, :3]
  np.testing.assert_allclose(tr.mean(axis=0), 0.0, atol=1e-5)
  present = ~np.isnan(ds.x_num[train, 1])
  np.testing.assert_allclose(tr[present, 1].std(), 1.0, atol=1e-5)
  np.testing.assert_allclose(tr[:, 0].std(), 1.0, atol=1e-5)
  # Missing -> training mean (0 after scaling) + indicator column for "b" (NaN in training).
  assert out.num_names == ("a", "b", "c", "b__missing")
  assert out.x_num[30, 1] == 0.0 and out.x_num[30, 3] == 1.0 and out.x_num[0, 3] == 0.0
  assert not np.isnan(out.x_num).any() and out.x_num.dtype == np.float32


def test_categorical_codes_reserve_missing_and_unknown():
  ds = _synthetic()
  prep = preprocessing.fit_preprocessor(ds, np.arange(30))
  out = preprocessing.apply_preprocessor(prep, ds)
  assert prep.cat_cardinalities == (3 + 2, 3 + 2)  # seen categories + missing + unknown
  assert out.x_cat[5, 0] == 3  # missing -> k
  assert out.x_cat[35, 1] == 4  # category never seen in training -> k + 1
  assert (out.x_cat >= 0).all() and (out.x_cat < np.array(prep.cat_cardinalities)).all()
  seen = out.x_cat[:30, 1]
  np.testing.assert_array_equal(seen, ds.x_cat[:30, 1])  # codes 0..2 all seen -> unchanged


@pytest.mark.parametrize("output", ["normal", "uniform"])
def test_quantile_normalization_matches_sklearn(output):
  from sklearn.preprocessing import QuantileTransformer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  n = 300
  x = np.round(rng.lognormal(size=(n, 2)), 1)  # repeated values exercise both interpolations
  ds = dataset.TabularDataset(
      name="q", task="regression", x_num=x, x_cat=np.zeros((n, 0), np.int32), cat_cardinalities=(),
      y=rng.normal(size=n), feature_names=("u", "v"), num_names=("u", "v"), cat_names=(), source=())
  train = np.arange(200)
  prep = preprocessing.fit_preprocessor(ds, train, numeric="quantile", n_quantiles=50,
                                  quantile_output=output)
  ours = preprocessing.apply_preprocessor(prep, ds).x_num
  ref = QuantileTransformer(n_quantiles=50, output_distribution=output, subsample=None)
  ref.fit(ds.x_num[train].astype(np.float64))
  np.testing.assert_allclose(ours, ref.transform(ds.x_num.astype(np.float64)), atol=1e-5)


def test_preprocessor_errors():
  ds = _synthetic()
  x_num = ds.x_num.copy()
  x_num[:10, 2] = np.nan
  with pytest.raises(DataError, match="numeric column 'c' has no value in the training rows"):
    preprocessing.fit_preprocessor(dataclasses.replace(ds, x_num=x_num), np.arange(10))
  with pytest.raises(ValueError, match="train_idx"):
    preprocessing.fit_preprocessor(ds, np.array([0, 99]))
  other = dataclasses.replace(ds, cat_cardinalities=(3, 5))
  with pytest.raises(ValueError, match="does not have the columns"):
    preprocessing.apply_preprocessor(preprocessing.fit_preprocessor(ds, np.arange(30)), other)


def test_preprocessing_real_adult_on_original_train(adult):
  prep = preprocessing.fit_preprocessor(adult, adult.original_split["train"])
  out = preprocessing.apply_preprocessor(prep, adult)
  assert out.x_num.shape == (48_842, 6) and np.isfinite(out.x_num).all()
  assert (out.x_cat < np.array(out.cat_cardinalities)).all() and (out.x_cat >= 0).all()
  # native-country "Holand-Netherlands" occurs only once (in the training file) -> seen.
  assert out.cat_cardinalities[adult.cat_names.index("native-country")] == 41 + 2
