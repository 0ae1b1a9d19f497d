"""OpenML datasets by id: description and data file downloaded once into the cache, md5-checked."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.parse
from pathlib import Path

from cenas_jax.data import paths
from cenas_jax.data.tabular.arff import load_arff_dataset
from cenas_jax.data.tabular.columns import source_of
from cenas_jax.data.tabular.dataset import SourceFile, TabularDataset, Task
from cenas_jax.data.tabular.loaders import load_csv_dataset
from cenas_jax.errors import ChecksumError, DataError, DataUnavailableError

OPENML_DESCRIPTION_URL = "https://api.openml.org/api/v1/json/data/{id}"


def openml_dir(dataset_id: int, root: Path | None = None) -> Path:
  """Cache folder of an OpenML dataset: ``cache_dir()/"openml"/<id>``."""
  return (root or paths.cache_dir()) / "openml" / str(int(dataset_id))


def _as_list(v: object) -> list[str]:
  if v is None:
    return []
  if isinstance(v, str):
    return [s.strip() for s in v.split(",") if s.strip()]
  return [str(s) for s in v]  # type: ignore[union-attr]


def load_openml(dataset_id: int, *, target: str | None = None, task: Task | None = None,
                root: Path | None = None, timeout_s: float = 60.0) -> TabularDataset:
  """Loads an OpenML dataset by id, downloading its description and data file once.

  Downloads ``https://api.openml.org/api/v1/json/data/<id>`` (saved as ``description.json``), then
  the data file its ``url`` names (ARFF, saved as ``dataset.arff``; a parquet URL is saved as
  ``dataset.parquet``), both into ``openml_dir(dataset_id)``. The file's md5 is checked against the
  description's ``md5_checksum`` when given. Offline, put both files there by hand.

  Args:
    dataset_id: OpenML dataset id (e.g. 1590 = adult, 31 = credit-g).
    target: target attribute (default: the description's ``default_target_attribute``).
    task: as in ``load_csv_dataset``.
    root: cache root (default ``cache_dir()``).
    timeout_s: network timeout per request, in seconds.

  Raises:
    DataUnavailableError: a file is not cached and cannot be downloaded; the message names the id,
      the URL and where to put the file.
    ChecksumError: the data file's md5 differs from the description's.
  """
  dataset_id = int(dataset_id)
  folder = openml_dir(dataset_id, root)
  desc_url = OPENML_DESCRIPTION_URL.format(id=dataset_id)
  desc_path = _openml_fetch(dataset_id, desc_url, "description.json", folder, root, timeout_s,
                            what="description")
  try:
    desc = json.loads(desc_path.read_text(encoding="utf-8"))["data_set_description"]
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise DataError(f"{desc_path}: not an OpenML data description ({e!r}). Delete it and retry.") \
        from e
  file_url = desc.get("url")
  if not file_url:
    raise DataError(f"{desc_path}: the OpenML description of dataset {dataset_id} names no file url.")
  fmt = str(desc.get("format", "ARFF")).lower()
  if "sparse" in fmt:
    raise DataError(f"OpenML dataset {dataset_id} is in format {desc.get('format')!r}; only dense "
                    "ARFF or parquet is supported.")
  url_path = urllib.parse.urlparse(file_url).path.lower()
  is_parquet = url_path.endswith((".pq", ".parquet")) or fmt == "parquet"
  filename = "dataset.parquet" if is_parquet else "dataset.arff"
  data_path = _openml_fetch(dataset_id, file_url, filename, folder, root, timeout_s,
                            what="data file")
  md5 = desc.get("md5_checksum")
  if md5 and not is_parquet:
    got = _md5_file(data_path)
    if got != str(md5).lower():
      raise ChecksumError(f"{data_path}: md5 {got} does not match {md5} from the OpenML description "
                          f"of dataset {dataset_id} ({file_url}). Delete the file and download it "
                          "again.")
  if target is None:
    defaults = _as_list(desc.get("default_target_attribute"))
    if len(defaults) != 1:
      raise DataError(f"OpenML dataset {dataset_id} has default target(s) {defaults}, not exactly "
                      "one; pass target=.")
    target = defaults[0]
  drop = [a for a in _as_list(desc.get("ignore_attribute")) + _as_list(desc.get("row_id_attribute"))
          if a != target]
  name = str(desc.get("name") or f"openml_{dataset_id}")
  if is_parquet:
    ds = load_csv_dataset(data_path, target=target, task=task, name=name)
    keep = [c for c in ds.feature_names if c not in drop]
    if len(keep) != len(ds.feature_names):
      raise DataError(f"{data_path}: dropping attributes {drop} from parquet data is not supported; "
                      "use the ARFF file.")
  else:
    ds = load_arff_dataset(data_path, target=target, name=name, drop=drop, task=task)
  return dataclasses.replace(ds, source=(SourceFile(file_url, ds.source[0].sha256),
                                         source_of(desc_path)))


def _openml_fetch(dataset_id: int, url: str, filename: str, folder: Path, root: Path | None,
                  timeout_s: float, *, what: str) -> Path:
  remote = paths.RemoteFile(url=url, filename=filename, sha256=None,
                            subdir=str(Path("openml") / str(dataset_id)))
  try:
    return paths.fetch(remote, root=root, timeout_s=timeout_s)
  except DataUnavailableError as e:
    raise DataUnavailableError(
        f"OpenML dataset {dataset_id}: its {what} is not cached and could not be downloaded from "
        f"{url} ({e.__cause__ or e}). Download it by hand and save it as {folder / filename}.") \
        from e


def _md5_file(path: Path) -> str:
  h = hashlib.md5()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()
