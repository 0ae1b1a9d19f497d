"""Tests for cenas_jax.data.tabular.loaders: the shared real files and bad CSV/UCI inputs."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from cenas_jax.data.tabular import dataset, loaders
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file


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
  ds = loaders.load_german_credit(shared_data / "tabular" / "german_credit")
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
    loaders.load_adult(tmp_path)
  assert str(tmp_path) in str(err.value) and "adult.data" in str(err.value)
  assert loaders.ADULT_URL in str(err.value)


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
  path = tmp_path / name
  path.write_text(text)
  return path


def test_wrong_column_count_names_file_and_line(tmp_path):
  path = _csv(tmp_path, "a,b,y\n1,2,0\n3,4,5,1\n")
  with pytest.raises(DataError, match=r"t\.csv: line 3: 4 fields, but the header has 3"):
    loaders.load_csv_dataset(path, target="y")
  short = _csv(tmp_path, "a,b,y\n1,2,0\n3,1\n", "short.csv")
  with pytest.raises(DataError, match=r"short\.csv: line 3: 2 fields"):
    loaders.load_csv_dataset(short, target="y")


def test_missing_target_column(tmp_path):
  path = _csv(tmp_path, "a,b\n1,2\n")
  with pytest.raises(DataError, match=r"t\.csv: no target column 'label'"):
    loaders.load_csv_dataset(path, target="label")


def test_non_numeric_value_in_numeric_column_names_column_and_line(tmp_path):
  path = _csv(tmp_path, "x,c,y\n1.5,a,0\n2.5,b,1\noops,a,0\n")
  with pytest.raises(DataError, match=r"t\.csv: line 4: column 'x' must be numeric but holds 'oops'"):
    loaders.load_csv_dataset(path, target="y", categorical=["c"])
  # Auto mode: a mostly numeric column with one stray text value is refused, not made categorical.
  rows = "".join(f"{i}.5,{i % 2}\n" for i in range(20))
  auto = _csv(tmp_path, "x,y\n" + rows + "n/a?,1\n", "auto.csv")
  with pytest.raises(DataError, match=r"auto\.csv: line 22: column 'x' looks numeric"):
    loaders.load_csv_dataset(auto, target="y")


def test_empty_and_header_only_files(tmp_path):
  with pytest.raises(DataError, match=r"e\.csv: the file is empty"):
    loaders.load_csv_dataset(_csv(tmp_path, "", "e.csv"), target="y")
  with pytest.raises(DataError, match=r"h\.csv: no data rows"):
    loaders.load_csv_dataset(_csv(tmp_path, "a,y\n", "h.csv"), target="y")


def test_truncated_gzip_names_the_file(tmp_path, shared_data):
  src = (shared_data / "tabular" / "california_housing" / "housing.csv.gz").read_bytes()
  cut = tmp_path / "housing.csv.gz"
  cut.write_bytes(src[: len(src) // 2])
  with pytest.raises(DataError, match=r"housing\.csv\.gz: the gzip stream is corrupt or truncated"):
    loaders.load_california_housing(cut)


def test_bad_adult_and_german_rows(tmp_path, shared_data):
  adult_dir = tmp_path / "adult"
  adult_dir.mkdir()
  shutil.copy(shared_data / "tabular" / "adult" / "adult.test.gz", adult_dir)
  (adult_dir / "adult.data").write_text(
      "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
      "Male, 2174, 0, 40, United-States, <=50K\n50, Private, 1, 2\n")
  with pytest.raises(DataError, match=r"adult\.data: line 2: expected 15"):
    loaders.load_adult(adult_dir)
  (adult_dir / "adult.data").write_text(
      "x39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
      "Male, 2174, 0, 40, United-States, <=50K\n")
  with pytest.raises(DataError, match=r"adult\.data line 1: column 'age' must be numeric"):
    loaders.load_adult(adult_dir)
  german_dir = tmp_path / "german"
  german_dir.mkdir()
  shutil.copy(shared_data / "tabular" / "german_credit" / "values_maps.json", german_dir)
  lines = (shared_data / "tabular" / "german_credit" / "german.data").read_text().splitlines()
  (german_dir / "german.data").write_text("\n".join(lines[:5] + ["A19" + lines[5][3:]]) + "\n")
  with pytest.raises(DataError, match=r"german\.data: line 6: column 'status' holds code 'A19'"):
    loaders.load_german_credit(german_dir)


def test_parquet_needs_an_engine(tmp_path):
  path = tmp_path / "t.parquet"
  has_engine = any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet"))
  if has_engine:  # Round trip when an engine is installed.
    import pandas as pd  # pylint: disable=g-import-not-at-top
    pd.DataFrame({"x": [1.0, 2.0, np.nan], "c": ["a", "b", None], "y": [0, 1, 1]}).to_parquet(path)
    ds = loaders.load_csv_dataset(path, target="y")
    assert ds.task == "binclass" and ds.cat_names == ("c",) and np.isnan(ds.x_num[2, 0])
  else:
    path.write_bytes(b"PAR1")
    with pytest.raises(dataset.MissingDependencyError, match=r"t\.parquet: .*pyarrow"):
      loaders.load_csv_dataset(path, target="y")


def test_csv_type_and_task_inference(tmp_path):
  path = _csv(tmp_path, "num,cat,code,y,z\n1.0,red,1,yes,0.5\n,blue,2,no,1.5\n3.0,?,1,yes,2.5\n"
                        "4.0,red,3,no,3.5\n")
  ds = loaders.load_csv_dataset(path, target="y")
  assert ds.task == "binclass" and ds.class_names == ("no", "yes")
  np.testing.assert_array_equal(ds.y, [1, 0, 1, 0])
  assert ds.num_names == ("num", "code", "z") and ds.cat_names == ("cat",)
  assert ds.feature_names == ("num", "cat", "code", "z")
  assert np.isnan(ds.x_num[1, 0]) and ds.x_cat[2, 0] == -1
  assert ds.cat_categories == (("blue", "red"),)
  assert loaders.load_csv_dataset(path, target="code").task == "multiclass"
  reg = loaders.load_csv_dataset(path, target="z", categorical=["cat", "y", "code"])
  assert reg.task == "regression" and reg.cat_names == ("cat", "code", "y")
  assert reg.cat_categories[1] == ("1", "2", "3")
  with pytest.raises(DataError, match="requested but target 'y' has 2 classes"):
    loaders.load_csv_dataset(path, target="y", task="multiclass")
  with pytest.raises(DataError, match=r"line 3: the target 'num' is missing"):
    loaders.load_csv_dataset(path, target="num")
