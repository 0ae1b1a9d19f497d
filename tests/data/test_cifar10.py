"""Tests for cenas_jax.data.cifar10 (real subset archive + small archives written here)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cenas_jax.data import cifar10
from cenas_jax.errors import ChecksumError, DataError, DataUnavailableError

SUBSET = ("cifar10_subset", "cifar-10-python-subset.tar.gz")
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def subset_dir(shared_data, tmp_path_factory) -> tuple[Path, Path]:
  """Extracts the shared subset archive once for the module; returns (archive, extract_dir)."""
  archive = shared_data.joinpath(*SUBSET)
  extract_dir = tmp_path_factory.mktemp("cifar_extract")
  cifar10.extract_cifar10(archive, extract_dir)
  return archive, extract_dir


def test_subset_archive_loads_with_expected_counts_and_means(subset_dir):
  archive, extract_dir = subset_dir
  data = cifar10.load_cifar10(archive, extract_dir=extract_dir)
  assert data.x_train.shape == (10_000, 32, 32, 3) and data.x_train.dtype == np.uint8
  assert data.x_test.shape == (2_000, 32, 32, 3) and data.x_test.dtype == np.uint8
  assert data.y_train.dtype == np.int32 and data.y_test.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(data.y_train, minlength=10), [1000] * 10)
  np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), [200] * 10)
  # Batches interleave classes round-robin (PROVENANCE.md): labels go 0, 1, ..., 9, 0, ...
  np.testing.assert_array_equal(data.y_train[:20], np.tile(np.arange(10), 2))
  assert list(data.label_names) == LABELS
  means = data.x_train.reshape(-1, 3).mean(axis=0) / 255.0
  np.testing.assert_allclose(means, [0.4934, 0.4831, 0.4470], atol=6e-5)
  assert data.source == str(archive)


def test_extraction_is_idempotent_and_reuses_the_folder(subset_dir):
  archive, extract_dir = subset_dir
  before = sorted(p.name for p in extract_dir.iterdir())
  batches = cifar10.extract_cifar10(archive, extract_dir)
  assert sorted(p.name for p in extract_dir.iterdir()) == before  # nothing new, no leftovers
  assert len(before) == 1 and batches.name == cifar10.BATCHES_DIRNAME
  assert sorted(p.name for p in batches.iterdir()) == sorted(
      [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, cifar10.META_FILE])
  # An extracted folder (or its parent) loads directly too.
  data = cifar10.load_cifar10(batches.parent)
  assert data.x_test.shape == (2_000, 32, 32, 3)


# --------------------------------------------------------------------------------------------------
# Small archives written by the tests.


def _pickle_bytes(obj, protocol: int = 4) -> bytes:
  # Protocol 4 rebuilds arrays with numpy's _reconstruct, like the original Python-2 files.
  return pickle.dumps(obj, protocol=protocol)


def _batch(images_nhwc: np.ndarray, labels: list[int]) -> bytes:
  data = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)  # CHW rows, as CIFAR
  return _pickle_bytes({"data": np.ascontiguousarray(data), "labels": labels,
                        "batch_label": "tiny", "filenames": [f"{i}.png" for i in labels]})


def _write_tar(path: Path, members: dict[str, bytes], prefix: str = "cifar-10-batches-py/") -> Path:
  with tarfile.open(path, "w:gz") as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(prefix + name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return path


def _tiny_members(rng: np.random.Generator) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
  images = rng.integers(0, 256, size=(17, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(17) % 10
  members = {}
  for k, name in enumerate(cifar10.TRAIN_BATCHES):
    sl = slice(3 * k, 3 * k + 3)
    members[name] = _batch(images[sl], labels[sl].tolist())
  members[cifar10.TEST_BATCH] = _batch(images[15:], labels[15:].tolist())
  members[cifar10.META_FILE] = _pickle_bytes({"label_names": LABELS, "num_vis": 3072})
  return members, images, labels


def test_tiny_archive_round_trips_pixels_exactly(tmp_path):
  members, images, labels = _tiny_members(np.random.default_rng(0))
  archive = _write_tar(tmp_path / "tiny.tar.gz", members)
  data = cifar10.load_cifar10(archive, extract_dir=tmp_path / "x")
  np.testing.assert_array_equal(data.x_train, images[:15])
  np.testing.assert_array_equal(data.y_train, labels[:15])
  np.testing.assert_array_equal(data.x_test, images[15:])
  assert data.label_names == tuple(LABELS)


def test_offline_download_names_file_location_and_url(tmp_path, monkeypatch):
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path / "cache"))

  def no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")

  monkeypatch.setattr(urllib.request, "urlopen", no_network)
  with pytest.raises(DataUnavailableError) as err:
    cifar10.load_cifar10()
  msg = str(err.value)
  assert "cifar-10-python.tar.gz" in msg
  assert cifar10.CIFAR10_REMOTE.url in msg
  assert str(tmp_path / "cache" / "cifar10" / "cifar-10-python.tar.gz") in msg
  assert not list((tmp_path / "cache" / "cifar10").glob("*.part"))  # no partial file left


def test_cached_archive_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path))
  bad = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
  bad.parent.mkdir(parents=True)
  bad.write_bytes(b"not the archive")
  with pytest.raises(ChecksumError, match="does not match"):
    cifar10.load_cifar10()
  assert cifar10.CIFAR10_REMOTE.sha256 == (
      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")


def test_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(DataUnavailableError, match="not found"):
    cifar10.load_cifar10(tmp_path / "nope.tar.gz")


def test_tar_with_parent_member_is_refused(tmp_path):
  archive = _write_tar(tmp_path / "evil.tar.gz", {"../evil": b"boom"}, prefix="")
  dest = tmp_path / "out" / "inner"
  with pytest.raises(DataError, match=r"refusing to extract member '\.\./evil'"):
    cifar10.safe_extract_tar(archive, dest)
  assert not (tmp_path / "out" / "evil").exists()
  # Through the loader, nothing is left behind in the extraction folder either.
  with pytest.raises(DataError, match="evil"):
    cifar10.load_cifar10(archive, extract_dir=tmp_path / "cache")
  assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_tar_with_absolute_or_link_member_is_refused(tmp_path):
  abs_archive = _write_tar(tmp_path / "abs.tar.gz", {"/tmp/evil_abs": b"x"}, prefix="")
  with pytest.raises(DataError, match="absolute"):
    cifar10.safe_extract_tar(abs_archive, tmp_path / "a")
  link_archive = tmp_path / "link.tar.gz"
  with tarfile.open(link_archive, "w:gz") as tar:
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    tar.addfile(info)
  with pytest.raises(DataError, match="not a regular file"):
    cifar10.safe_extract_tar(link_archive, tmp_path / "b")
  assert not (tmp_path / "b" / "cifar-10-batches-py" / "data_batch_1").exists()


def test_truncated_archive_is_a_data_error(tmp_path):
  members, _, _ = _tiny_members(np.random.default_rng(1))
  archive = _write_tar(tmp_path / "full.tar.gz", members)
  cut = tmp_path / "cut.tar.gz"
  cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
  with pytest.raises(DataError, match="cut.tar.gz"):
    cifar10.load_cifar10(cut, extract_dir=tmp_path / "x")


class _Evil:

  def __init__(self, target: Path):
    self.target = str(target)

  def __reduce__(self):
    return (os.mkdir, (self.target,))


def test_pickle_with_forbidden_global_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "data_batch_1"
  path.write_bytes(pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2))
  with pytest.raises(DataError, match=r"forbidden global (posix|nt|os)\.mkdir"):
    cifar10.load_batch(path)
  assert not marker.exists()


def test_non_uint8_array_and_bad_labels_are_refused(tmp_path):
  floats = tmp_path / "floats"
  floats.write_bytes(_pickle_bytes({"data": np.zeros((1, 3072), np.float32), "labels": [0]}))
  with pytest.raises(DataError, match="not allowed"):
    cifar10.load_batch(floats)
  bad_labels = tmp_path / "labels"
  bad_labels.write_bytes(_pickle_bytes({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
  with pytest.raises(DataError, match=r"labels must be in \[0, 10\)"):
    cifar10.load_batch(bad_labels)
  bad_shape = tmp_path / "shape"
  bad_shape.write_bytes(_pickle_bytes({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
  with pytest.raises(DataError, match="uint8"):
    cifar10.load_batch(bad_shape)


def test_incomplete_folder_names_missing_batches(tmp_path):
  members, _, _ = _tiny_members(np.random.default_rng(2))
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  for name, payload in members.items():
    if name != "data_batch_3":
      (folder / name).write_bytes(payload)
  with pytest.raises(DataError, match="data_batch_3"):
    cifar10.load_cifar10(tmp_path)
