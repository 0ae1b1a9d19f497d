"""Tests for cenas_jax.data.tabular: real files, bad inputs, ARFF/OpenML, preprocessing, folds."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cenas_jax.data import tabular
from cenas_jax.errors import ChecksumError, DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file


@pytest.fixture(scope="module")
def adult(shared_data) -> tabular.TabularDataset:
  return tabular.load_adult(shared_data / "tabular" / "adult")


@pytest.fixture(scope="module")
def housing(shared_data) -> tabular.TabularDataset:
  return tabular.load_california_housing(
      shared_data / "tabular" / "california_housing" / "housing.csv.gz")


# --------------------------------------------------------------------------------------------------
# Real files.


def test_adult_rows_split_and_missing_values(adult, shared_data):
  assert adult.n_rows == 48_842 and adult.task == "binclass"
  np.testing.assert_array_equal(adult.original_split["train"], np.arange(32_561))
  np.testing.assert_array_equal(adult.original_split["test"], np.arange(32_561, 48_842))
  assert adult.class_names == ("<=50K", ">50K")
  assert adult.num_names == ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                             "hours-per-week")
  assert len(adult.cat_names) == 8 and len(adult.feature_names) == 14
  # "?" -> missing code -1; UCI's counts over both files.
  missing = dict(zip(adult.cat_names, (adult.x_cat < 0).sum(axis=0).tolist()))
  assert missing["workclass"] == 2_799 and missing["occupation"] == 2_809
  assert missing["native-country"] == 857
  assert sum(missing.values()) == 2_799 + 2_809 + 857
  assert not np.isnan(adult.x_num).any()
  np.testing.assert_array_equal(np.bincount(adult.y), [37_155, 11_687])
  # First test row: "25, Private, ..., <=50K." (junk first line skipped, final "." removed).
  assert adult.x_num[32_561, 0] == 25 and adult.y[32_561] == 0
  assert adult.y[-1] == 1  # last test row ends with ">50K."
  workclass = adult.cat_categories[adult.cat_names.index("workclass")]
  assert adult.x_cat[0, 0] == workclass.index("State-gov")
  assert adult.source[1].sha256 == sha256_file(shared_data / "tabular" / "adult" / "adult.test.gz")
  with pytest.raises(ValueError):
    adult.x_num[0, 0] = 1.0  # read-only arrays


def test_german_credit_rows_and_class_balance(shared_data):
  ds = tabular.load_german_credit(shared_data / "tabular" / "german_credit")
  assert ds.n_rows == 1_000 and ds.task == "binclass" and ds.class_names == ("good", "bad")
  np.testing.assert_array_equal(np.bincount(ds.y), [700, 300])
  assert len(ds.num_names) == 7 and len(ds.cat_names) == 13
  assert ds.cat_cardinalities[ds.cat_names.index("purpose")] == 11  # all codes of values_maps.json
  # Row 1: "A11 6 A34 A43 1169 ... 1" -> status "... < 0 DM", duration 6, amount 1169, good.
  status = ds.cat_categories[ds.cat_names.index("status")]
  assert status[ds.x_cat[0, ds.cat_names.index("status")]] == "... < 0 DM"
  assert ds.x_num[0, ds.num_names.index("duration_months")] == 6
  assert ds.x_num[0, ds.num_names.index("credit_amount")] == 1169
  assert ds.y[0] == 0 and ds.y[1] == 1


def test_california_housing_rows_nan_and_categories(housing):
  assert housing.n_rows == 20_640 and housing.task == "regression"
  assert housing.target_name == "median_house_value" and housing.y.dtype == np.float32
  nan_counts = dict(zip(housing.num_names, np.isnan(housing.x_num).sum(axis=0).tolist()))
  assert nan_counts.pop("total_bedrooms") == 207 and set(nan_counts.values()) == {0}
  assert housing.cat_names == ("ocean_proximity",) and housing.cat_cardinalities == (5,)
  assert set(housing.cat_categories[0]) == {"<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY",
                                            "NEAR OCEAN"}
  assert float(housing.y.max()) == 500_001.0 and float(housing.y[0]) == 452_600.0


def test_missing_uci_files_name_the_folder_and_url(tmp_path):
  with pytest.raises(DataUnavailableError) as err:
    tabular.load_adult(tmp_path)
  assert str(tmp_path) in str(err.value) and "adult.data" in str(err.value)
  assert tabular.ADULT_URL in str(err.value)


# --------------------------------------------------------------------------------------------------
# Bad inputs.


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
  path = tmp_path / name
  path.write_text(text)
  return path


def test_wrong_column_count_names_file_and_line(tmp_path):
  path = _csv(tmp_path, "a,b,y\n1,2,0\n3,4,5,1\n")
  with pytest.raises(DataError, match=r"t\.csv: line 3: 4 fields, but the header has 3"):
    tabular.load_csv_dataset(path, target="y")
  short = _csv(tmp_path, "a,b,y\n1,2,0\n3,1\n", "short.csv")
  with pytest.raises(DataError, match=r"short\.csv: line 3: 2 fields"):
    tabular.load_csv_dataset(short, target="y")


def test_missing_target_column(tmp_path):
  path = _csv(tmp_path, "a,b\n1,2\n")
  with pytest.raises(DataError, match=r"t\.csv: no target column 'label'"):
    tabular.load_csv_dataset(path, target="label")


def test_non_numeric_value_in_numeric_column_names_column_and_line(tmp_path):
  path = _csv(tmp_path, "x,c,y\n1.5,a,0\n2.5,b,1\noops,a,0\n")
  with pytest.raises(DataError, match=r"t\.csv: line 4: column 'x' must be numeric but holds 'oops'"):
    tabular.load_csv_dataset(path, target="y", categorical=["c"])
  # Auto mode: a mostly numeric column with one stray text value is refused, not made categorical.
  rows = "".join(f"{i}.5,{i % 2}\n" for i in range(20))
  auto = _csv(tmp_path, "x,y\n" + rows + "n/a?,1\n", "auto.csv")
  with pytest.raises(DataError, match=r"auto\.csv: line 22: column 'x' looks numeric"):
    tabular.load_csv_dataset(auto, target="y")


def test_empty_and_header_only_files(tmp_path):
  with pytest.raises(DataError, match=r"e\.csv: the file is empty"):
    tabular.load_csv_dataset(_csv(tmp_path, "", "e.csv"), target="y")
  with pytest.raises(DataError, match=r"h\.csv: no data rows"):
    tabular.load_csv_dataset(_csv(tmp_path, "a,y\n", "h.csv"), target="y")


def test_truncated_gzip_names_the_file(tmp_path, shared_data):
  src = (shared_data / "tabular" / "california_housing" / "housing.csv.gz").read_bytes()
  cut = tmp_path / "housing.csv.gz"
  cut.write_bytes(src[: len(src) // 2])
  with pytest.raises(DataError, match=r"housing\.csv\.gz: the gzip stream is corrupt or truncated"):
    tabular.load_california_housing(cut)


def test_bad_adult_and_german_rows(tmp_path, shared_data):
  adult_dir = tmp_path / "adult"
  adult_dir.mkdir()
  shutil.copy(shared_data / "tabular" / "adult" / "adult.test.gz", adult_dir)
  (adult_dir / "adult.data").write_text(
      "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
      "Male, 2174, 0, 40, United-States, <=50K\n50, Private, 1, 2\n")
  with pytest.raises(DataError, match=r"adult\.data: line 2: expected 15"):
    tabular.load_adult(adult_dir)
  (adult_dir / "adult.data").write_text(
      "x39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
      "Male, 2174, 0, 40, United-States, <=50K\n")
  with pytest.raises(DataError, match=r"adult\.data line 1: column 'age' must be numeric"):
    tabular.load_adult(adult_dir)
  german_dir = tmp_path / "german"
  german_dir.mkdir()
  shutil.copy(shared_data / "tabular" / "german_credit" / "values_maps.json", german_dir)
  lines = (shared_data / "tabular" / "german_credit" / "german.data").read_text().splitlines()
  (german_dir / "german.data").write_text("\n".join(lines[:5] + ["A19" + lines[5][3:]]) + "\n")
  with pytest.raises(DataError, match=r"german\.data: line 6: column 'status' holds code 'A19'"):
    tabular.load_german_credit(german_dir)


def test_parquet_needs_an_engine(tmp_path):
  path = tmp_path / "t.parquet"
  has_engine = any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet"))
  if has_engine:  # Round trip when an engine is installed.
    import pandas as pd  # pylint: disable=g-import-not-at-top
    pd.DataFrame({"x": [1.0, 2.0, np.nan], "c": ["a", "b", None], "y": [0, 1, 1]}).to_parquet(path)
    ds = tabular.load_csv_dataset(path, target="y")
    assert ds.task == "binclass" and ds.cat_names == ("c",) and np.isnan(ds.x_num[2, 0])
  else:
    path.write_bytes(b"PAR1")
    with pytest.raises(tabular.MissingDependencyError, match=r"t\.parquet: .*pyarrow"):
      tabular.load_csv_dataset(path, target="y")


def test_csv_type_and_task_inference(tmp_path):
  path = _csv(tmp_path, "num,cat,code,y,z\n1.0,red,1,yes,0.5\n,blue,2,no,1.5\n3.0,?,1,yes,2.5\n"
                        "4.0,red,3,no,3.5\n")
  ds = tabular.load_csv_dataset(path, target="y")
  assert ds.task == "binclass" and ds.class_names == ("no", "yes")
  np.testing.assert_array_equal(ds.y, [1, 0, 1, 0])
  assert ds.num_names == ("num", "code", "z") and ds.cat_names == ("cat",)
  assert ds.feature_names == ("num", "cat", "code", "z")
  assert np.isnan(ds.x_num[1, 0]) and ds.x_cat[2, 0] == -1
  assert ds.cat_categories == (("blue", "red"),)
  assert tabular.load_csv_dataset(path, target="code").task == "multiclass"
  reg = tabular.load_csv_dataset(path, target="z", categorical=["cat", "y", "code"])
  assert reg.task == "regression" and reg.cat_names == ("cat", "code", "y")
  assert reg.cat_categories[1] == ("1", "2", "3")
  with pytest.raises(DataError, match="requested but target 'y' has 2 classes"):
    tabular.load_csv_dataset(path, target="y", task="multiclass")
  with pytest.raises(DataError, match=r"line 3: the target 'num' is missing"):
    tabular.load_csv_dataset(path, target="num")


# --------------------------------------------------------------------------------------------------
# ARFF and OpenML.

ARFF = """% A small test relation
@RELATION 'tiny data'

@ATTRIBUTE id INTEGER
@ATTRIBUTE 'petal length' REAL
@attribute colour {red, 'dark blue', "x,y"}
@ATTRIBUTE width numeric
@ATTRIBUTE class {neg,pos}

@DATA
% comment inside data
1, 1.5, red, 0.5, pos
2, ?, 'dark blue', 1.0, neg
3, 2.5, "x,y", ?, pos
4, 3.0, ?, 2.0, neg
"""


def test_arff_numeric_nominal_quotes_and_missing(tmp_path):
  path = tmp_path / "tiny.arff"
  path.write_text(ARFF)
  ds = tabular.load_arff_dataset(path, target="class", drop=["id"])
  assert ds.name == "tiny data" and ds.task == "binclass" and ds.class_names == ("neg", "pos")
  np.testing.assert_array_equal(ds.y, [1, 0, 1, 0])
  assert ds.num_names == ("petal length", "width") and ds.cat_names == ("colour",)
  assert ds.cat_categories == (("red", "dark blue", "x,y"),)
  np.testing.assert_array_equal(ds.x_cat[:, 0], [0, 1, 2, -1])
  np.testing.assert_array_equal(np.isnan(ds.x_num), [[0, 0], [1, 0], [0, 1], [0, 0]])
  assert ds.x_num[3, 0] == 3.0


@pytest.mark.parametrize("bad, pattern", [
    (ARFF.replace("width numeric", "width string"), r"line 7: attribute 'width' has type 'string'"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, 3.0, ?, neg"), r"line 15: 4 values, but 5 attributes"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, 3.0, green, 2.0, neg"),
     r"line 15: column 'colour' holds 'green'"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, abc, red, 2.0, neg"),
     r"line 15: column 'petal length' must be numeric"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "{0 4, 4 neg}"), r"line 15: sparse ARFF"),
    ("@relation x\n@attribute a numeric\n", r"no @data section"),
])
def test_arff_bad_inputs(tmp_path, bad, pattern):
  path = tmp_path / "bad.arff"
  path.write_text(bad)
  with pytest.raises(DataError, match=pattern):
    tabular.load_arff_dataset(path, target="class")


def _no_network(monkeypatch):
  def fail(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")

  monkeypatch.setattr(urllib.request, "urlopen", fail)


def test_openml_offline_error_names_id_url_and_place(tmp_path, monkeypatch):
  _no_network(monkeypatch)
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path))
  with pytest.raises(DataUnavailableError) as err:
    tabular.load_openml(31)
  msg = str(err.value)
  assert "OpenML dataset 31" in msg
  assert "https://api.openml.org/api/v1/json/data/31" in msg
  assert str(tmp_path / "openml" / "31" / "description.json") in msg
  # With the description in place, the error names the data file's URL and place.
  desc = {"data_set_description": {"id": "31", "name": "tiny", "format": "ARFF",
                                   "url": "https://api.openml.org/data/v1/download/31/tiny.arff",
                                   "default_target_attribute": "class"}}
  (tmp_path / "openml" / "31").mkdir(parents=True, exist_ok=True)
  (tmp_path / "openml" / "31" / "description.json").write_text(json.dumps(desc))
  with pytest.raises(DataUnavailableError) as err:
    tabular.load_openml(31)
  assert "https://api.openml.org/data/v1/download/31/tiny.arff" in str(err.value)
  assert str(tmp_path / "openml" / "31" / "dataset.arff") in str(err.value)


def test_openml_files_put_in_the_cache_by_hand_load_offline(tmp_path, monkeypatch):
  _no_network(monkeypatch)
  folder = tabular.openml_dir(99, root=tmp_path)
  folder.mkdir(parents=True)
  (folder / "dataset.arff").write_text(ARFF)
  desc = {"data_set_description": {
      "id": "99", "name": "tiny", "format": "ARFF", "url": "https://example.org/tiny.arff",
      "default_target_attribute": "class", "row_id_attribute": "id",
      "md5_checksum": hashlib.md5(ARFF.encode()).hexdigest()}}
  (folder / "description.json").write_text(json.dumps(desc))
  ds = tabular.load_openml(99, root=tmp_path)
  assert ds.name == "tiny" and ds.n_rows == 4 and "id" not in ds.feature_names
  assert ds.source[0].location == "https://example.org/tiny.arff"
  desc["data_set_description"]["md5_checksum"] = "0" * 32
  (folder / "description.json").write_text(json.dumps(desc))
  with pytest.raises(ChecksumError, match="md5"):
    tabular.load_openml(99, root=tmp_path)


# --------------------------------------------------------------------------------------------------
# Preprocessing.


def _synthetic(n: int = 40) -> tabular.TabularDataset:
  rng = np.random.default_rng(0)
  x_num = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
  x_num[[3, 7, 30], 1] = np.nan
  x_cat = rng.integers(0, 3, size=(n, 2))
  x_cat[5, 0] = -1
  x_cat[35, 1] = 3  # category 3 only in the last rows (never in training below)
  return tabular.TabularDataset(
      name="syn", task="binclass", x_num=x_num, x_cat=x_cat, cat_cardinalities=(3, 4),
      y=np.arange(n) % 2, feature_names=("a", "b", "c", "k", "m"), num_names=("a", "b", "c"),
      cat_names=("k", "m"), source=(), class_names=("n", "p"))


def test_preprocessor_uses_training_rows_only():
  ds = _synthetic()
  train = np.arange(30)
  prep = tabular.fit_preprocessor(ds, train, missing_indicator=True)
  # Changing the non-training rows changes nothing in the fitted state.
  x_num = ds.x_num.copy()
  x_num[30:] += 1_000.0
  shifted = dataclasses.replace(ds, x_num=x_num)
  prep2 = tabular.fit_preprocessor(shifted, train, missing_indicator=True)
  np.testing.assert_array_equal(prep.center, prep2.center)
  np.testing.assert_array_equal(prep.scale, prep2.scale)
  out = tabular.apply_preprocessor(prep, ds)
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
  prep = tabular.fit_preprocessor(ds, np.arange(30))
  out = tabular.apply_preprocessor(prep, ds)
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
  ds = tabular.TabularDataset(
      name="q", task="regression", x_num=x, x_cat=np.zeros((n, 0), np.int32), cat_cardinalities=(),
      y=rng.normal(size=n), feature_names=("u", "v"), num_names=("u", "v"), cat_names=(), source=())
  train = np.arange(200)
  prep = tabular.fit_preprocessor(ds, train, numeric="quantile", n_quantiles=50,
                                  quantile_output=output)
  ours = tabular.apply_preprocessor(prep, ds).x_num
  ref = QuantileTransformer(n_quantiles=50, output_distribution=output, subsample=None)
  ref.fit(ds.x_num[train].astype(np.float64))
  np.testing.assert_allclose(ours, ref.transform(ds.x_num.astype(np.float64)), atol=1e-5)


def test_preprocessor_errors():
  ds = _synthetic()
  x_num = ds.x_num.copy()
  x_num[:10, 2] = np.nan
  with pytest.raises(DataError, match="numeric column 'c' has no value in the training rows"):
    tabular.fit_preprocessor(dataclasses.replace(ds, x_num=x_num), np.arange(10))
  with pytest.raises(ValueError, match="train_idx"):
    tabular.fit_preprocessor(ds, np.array([0, 99]))
  other = dataclasses.replace(ds, cat_cardinalities=(3, 5))
  with pytest.raises(ValueError, match="does not have the columns"):
    tabular.apply_preprocessor(tabular.fit_preprocessor(ds, np.arange(30)), other)


def test_preprocessing_real_adult_on_original_train(adult):
  prep = tabular.fit_preprocessor(adult, adult.original_split["train"])
  out = tabular.apply_preprocessor(prep, adult)
  assert out.x_num.shape == (48_842, 6) and np.isfinite(out.x_num).all()
  assert (out.x_cat < np.array(out.cat_cardinalities)).all() and (out.x_cat >= 0).all()
  # native-country "Holand-Netherlands" occurs only once (in the training file) -> seen.
  assert out.cat_cardinalities[adult.cat_names.index("native-country")] == 41 + 2


# --------------------------------------------------------------------------------------------------
# TabZilla folds.


def _check_partition(folds, n):
  tests = np.concatenate([te for _, _, te in folds])
  np.testing.assert_array_equal(np.sort(tests), np.arange(n))  # test folds partition the rows
  for i, (train, val, test) in enumerate(folds):
    np.testing.assert_array_equal(val, folds[(i + 1) % len(folds)][2])  # val = next fold's test
    assert not np.intersect1d(train, val).size and not np.intersect1d(train, test).size
    assert not np.intersect1d(val, test).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(n))


def test_tabzilla_folds_stratified_deterministic_partition(adult):
  folds = tabular.tabzilla_folds(adult.y)
  again = tabular.tabzilla_folds(adult.y)
  assert len(folds) == 10
  for a, b in zip(folds, again):
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)
  _check_partition(folds, adult.n_rows)
  rate = adult.y.mean()
  for _, _, test in folds:
    assert abs(len(test) - adult.n_rows / 10) <= 1
    assert abs(adult.y[test].mean() - rate) < 1e-3  # stratified
  other = tabular.tabzilla_folds(adult.y, seed=1)
  assert not np.array_equal(other[0][2], folds[0][2])


def test_tabzilla_folds_match_sklearn_kfold_splits(housing):
  from sklearn.model_selection import KFold, StratifiedKFold  # pylint: disable=g-import-not-at-top
  y_cls = np.random.default_rng(3).integers(0, 4, size=503)
  ref = [np.sort(te) for _, te in StratifiedKFold(10, shuffle=True, random_state=0).split(
      y_cls, y_cls)]
  ours = tabular.tabzilla_folds(y_cls)
  for r, (_, _, te) in zip(ref, ours):
    np.testing.assert_array_equal(te, r)
  reg = tabular.tabzilla_folds(housing.y, seed=0)  # float target -> plain KFold
  _check_partition(reg, housing.n_rows)
  ref = [np.sort(te) for _, te in KFold(10, shuffle=True, random_state=0).split(housing.y)]
  for r, (_, _, te) in zip(ref, reg):
    np.testing.assert_array_equal(te, r)


def test_tabzilla_folds_bad_arguments():
  with pytest.raises(ValueError, match="n_folds"):
    tabular.tabzilla_folds(np.arange(5), n_folds=10)
  with pytest.raises(ValueError, match="n_folds"):
    tabular.tabzilla_folds(np.arange(50), n_folds=2)
  with pytest.raises(ValueError, match="1-D"):
    tabular.tabzilla_folds(np.zeros((4, 4), np.int32))
