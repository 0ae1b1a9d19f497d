"""Tests for cenas_jax.data.tabular.openml: the offline cache, error messages and md5 check."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from cenas_jax.data.tabular import openml
from cenas_jax.errors import ChecksumError, DataUnavailableError


ARFF = """@RELATION tiny
@ATTRIBUTE id INTEGER
@ATTRIBUTE x REAL
@ATTRIBUTE colour {red, 'dark blue'}
@ATTRIBUTE class {neg,pos}
@DATA
1, 1.5, red, pos
2, ?, 'dark blue', neg
3, 2.5, red, pos
4, 3.0, ?, neg
"""


def _no_network(monkeypatch):
  def fail(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")

  monkeypatch.setattr(urllib.request, "urlopen", fail)


def test_openml_offline_error_names_id_url_and_place(tmp_path, monkeypatch):
  _no_network(monkeypatch)
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path))
  with pytest.raises(DataUnavailableError) as err:
    openml.load_openml(31)
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
    openml.load_openml(31)
  assert "https://api.openml.org/data/v1/download/31/tiny.arff" in str(err.value)
  assert str(tmp_path / "openml" / "31" / "dataset.arff") in str(err.value)


def test_openml_files_put_in_the_cache_by_hand_load_offline(tmp_path, monkeypatch):
  _no_network(monkeypatch)
  folder = openml.openml_dir(99, root=tmp_path)
  folder.mkdir(parents=True)
  (folder / "dataset.arff").write_text(ARFF)
  desc = {"data_set_description": {
      "id": "99", "name": "tiny", "format": "ARFF", "url": "https://example.org/tiny.arff",
      "default_target_attribute": "class", "row_id_attribute": "id",
      "md5_checksum": hashlib.md5(ARFF.encode()).hexdigest()}}
  (folder / "description.json").write_text(json.dumps(desc))
  ds = openml.load_openml(99, root=tmp_path)
  assert ds.name == "tiny" and ds.n_rows == 4 and "id" not in ds.feature_names
  assert ds.source[0].location == "https://example.org/tiny.arff"
  desc["data_set_description"]["md5_checksum"] = "0" * 32
  (folder / "description.json").write_text(json.dumps(desc))
  with pytest.raises(ChecksumError, match="md5"):
    openml.load_openml(99, root=tmp_path)
