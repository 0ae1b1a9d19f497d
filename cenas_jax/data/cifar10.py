"""CIFAR-10 in its original "python version" format: download, safe extraction, restricted unpickling.

The archive (``cifar-10-python.tar.gz``, Krizhevsky 2009) unpacks to ``cifar-10-batches-py/`` with
``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and ``batches.meta``: Python-2 pickles of dicts
whose ``data`` is a uint8 (n, 3072) array of channel-major 32x32 images and ``labels`` a list of ints.

Nothing here trusts the files: tar members other than plain files and directories, or with absolute
or ``..`` paths, are refused, and the pickles are read by an unpickler that only rebuilds dicts,
lists, strings, bytes, ints and uint8 numpy arrays (any other global is refused before it is
looked up).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cenas_jax.data import paths
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file

# sha256 of the official archive (170,498,071 bytes), as pinned by Keras' cifar10.load_data
# (file_hash) and other public loaders; torchvision lists its md5 (CIFAR10_MD5).
CIFAR10_REMOTE = paths.RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    subdir="cifar10",
)
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

BATCHES_DIRNAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
_ROW_SIZE = 32 * 32 * 3


@dataclasses.dataclass(frozen=True, eq=False)
class Cifar10:
  """CIFAR-10 arrays.

  Attributes:
    x_train: uint8 (n_train, 32, 32, 3) images, NHWC, RGB.
    y_train: int32 (n_train,) labels in [0, 10).
    x_test: uint8 (n_test, 32, 32, 3).
    y_test: int32 (n_test,).
    label_names: the 10 class names from ``batches.meta``.
    source: the archive or folder the data was read from.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  label_names: tuple[str, ...]
  source: str


# --------------------------------------------------------------------------------------------------
# Safe extraction.


def _check_member(member: tarfile.TarInfo, archive: Path, dest: Path) -> None:
  name = member.name
  parts = PurePosixPath(name).parts
  why = None
  if not (member.isfile() or member.isdir()):
    why = "it is not a regular file or directory (link, device or fifo)"
  elif (not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute()
        or (parts and ":" in parts[0])):
    why = "its path is absolute"
  elif ".." in parts or "\\" in name:
    why = "its path leaves the extraction folder"
  else:
    target = (dest / name).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
      why = "its path leaves the extraction folder"
  if why:
    raise DataError(f"{archive}: refusing to extract member {name!r}: {why}. The archive is not a "
                    "genuine CIFAR-10 archive; delete it and download it again.")


def safe_extract_tar(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
  """Extracts a (compressed) tar archive into ``dest``, refusing any unsafe member.

  Every member is checked before anything is written: only regular files and directories with
  relative paths inside ``dest`` are allowed. Extraction also uses tarfile's ``"data"`` filter where
  the Python version has it.

  Raises:
    DataError: an unsafe member, or a corrupt or truncated archive (the message names the file).
  """
  archive, dest = Path(archive), Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  try:
    with tarfile.open(archive, "r:*") as tar:
      members = tar.getmembers()
      for m in members:
        _check_member(m, archive, dest)
      if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
      else:  # pragma: no cover - Python without extraction filters; members were checked above.
        tar.extractall(dest, members=members)  # noqa: S202
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(f"{archive}: corrupt or truncated tar archive ({type(e).__name__}: {e}). Delete "
                    "it and download it again.") from e


def _archive_stem(archive: Path) -> str:
  name = archive.name
  for ext in (".tar.gz", ".tgz", ".tar"):
    if name.endswith(ext):
      return name[: -len(ext)]
  return name


def extract_cifar10(archive: str | os.PathLike[str],
                    extract_dir: str | os.PathLike[str] | None = None) -> Path:
  """Safely extracts a CIFAR-10 python archive once; returns its ``cifar-10-batches-py`` folder.

  The archive is unpacked into ``<extract_dir>/<archive stem>-<sha256 prefix>/`` via a temporary
  folder that is renamed into place only when complete, so a second call (or a call after a crash)
  reuses a complete extraction and never sees a partial one.

  Args:
    archive: the ``.tar.gz`` file.
    extract_dir: where to unpack (default ``cache_dir()/"cifar10"``).
  """
  archive = Path(archive)
  if not archive.is_file():
    raise DataUnavailableError(f"CIFAR-10 archive not found at {archive}. Download it from "
                               f"{CIFAR10_REMOTE.url}.")
  root = Path(extract_dir) if extract_dir is not None else paths.cache_dir() / CIFAR10_REMOTE.subdir
  root.mkdir(parents=True, exist_ok=True)
  target = root / f"{_archive_stem(archive)}-{sha256_file(archive)[:16]}"
  if not target.is_dir():
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=root))
    try:
      safe_extract_tar(archive, tmp)
      try:
        os.rename(tmp, target)
      except OSError:
        if not target.is_dir():  # Not a concurrent extraction that finished first.
          raise
    finally:
      if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
  return _batches_dir(target)


def _batches_dir(folder: Path) -> Path:
  for candidate in (folder / BATCHES_DIRNAME, folder):
    if (candidate / META_FILE).is_file():
      return candidate
  raise DataError(f"{folder}: no {META_FILE} found (neither in {BATCHES_DIRNAME}/ nor directly); not "
                  "a CIFAR-10 python-format folder.")


# --------------------------------------------------------------------------------------------------
# Restricted unpickling.


def _numpy_reconstruct() -> Any:
  try:
    from numpy._core import multiarray  # pylint: disable=g-import-not-at-top
  except ImportError:  # numpy < 2
    from numpy.core import multiarray  # pylint: disable=g-import-not-at-top
  return multiarray._reconstruct  # pylint: disable=protected-access


def _uint8_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
  if isinstance(spec, bytes):
    spec = spec.decode("latin1")
  if spec not in ("u1", "|u1", "uint8"):
    raise pickle.UnpicklingError(f"dtype {spec!r} is not allowed (only uint8 arrays)")
  return np.dtype("u1", bool(align), bool(copy))


def _ndarray_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
  if cls is not np.ndarray:
    raise pickle.UnpicklingError(f"array subclass {cls!r} is not allowed")
  return _numpy_reconstruct()(np.ndarray, shape, typecode)


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds only builtin containers/scalars and numpy uint8 arrays; refuses every other global."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): _uint8_dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def restricted_unpickle(path: str | os.PathLike[str]) -> Any:
  """Loads a CIFAR-style pickle with the restricted unpickler (strings decoded as latin-1).

  Raises:
    DataError: the file is not a pickle, is truncated, or refers to a forbidden global.
  """
  path = Path(path)
  try:
    with open(path, "rb") as f:
      return _RestrictedUnpickler(f, encoding="latin1").load()
  except FileNotFoundError:
    raise DataUnavailableError(f"{path} not found.") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, OverflowError, MemoryError) as e:
    raise DataError(f"{path}: refusing or unable to unpickle ({type(e).__name__}: {e}). Only "
                    "CIFAR-10 python-format batches (dicts, lists, strings, ints, uint8 arrays) are "
                    "accepted.") from e


def _str_keys(d: Any, path: Path) -> dict[str, Any]:
  if not isinstance(d, dict):
    raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}.")
  return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in d.items()}


def load_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """Reads one batch file: returns (x uint8 (n, 32, 32, 3) NHWC, y int32 (n,)).

  Raises:
    DataError: missing ``data``/``labels``, wrong dtype or shape, labels outside [0, 10).
  """
  path = Path(path)
  d = _str_keys(restricted_unpickle(path), path)
  if "data" not in d or "labels" not in d:
    raise DataError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels', found {sorted(d)}.")
  data = d["data"]
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
      data.shape[1] != _ROW_SIZE):
    got = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__)
    raise DataError(f"{path}: 'data' must be a uint8 (n, {_ROW_SIZE}) array, got {got}.")
  labels = d["labels"]
  if not isinstance(labels, (list, np.ndarray)) or not all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
    raise DataError(f"{path}: 'labels' must be a list of ints.")
  y = np.asarray(labels, dtype=np.int64)
  if y.shape != (data.shape[0],):
    raise DataError(f"{path}: {y.shape[0]} labels for {data.shape[0]} images.")
  if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
    raise DataError(f"{path}: labels must be in [0, {NUM_CLASSES}), got [{y.min()}, {y.max()}].")
  x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  return x, y.astype(np.int32)


def load_label_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
  """Reads ``label_names`` from ``batches.meta`` (10 names)."""
  path = Path(path)
  d = _str_keys(restricted_unpickle(path), path)
  names = d.get("label_names")
  if not isinstance(names, list) or len(names) != NUM_CLASSES or not all(
      isinstance(n, (str, bytes)) for n in names):
    raise DataError(f"{path}: 'label_names' must be a list of {NUM_CLASSES} strings.")
  return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def load_batches_dir(folder: str | os.PathLike[str]) -> Cifar10:
  """Loads an extracted ``cifar-10-batches-py`` folder (or a folder that holds one)."""
  folder = _batches_dir(Path(folder))
  lacking = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META_FILE) if not (folder / n).is_file()]
  if lacking:
    raise DataError(f"{folder}: missing {lacking}; not a complete CIFAR-10 python-format folder.")
  train = [load_batch(folder / n) for n in TRAIN_BATCHES]
  x_test, y_test = load_batch(folder / TEST_BATCH)
  return Cifar10(
      x_train=np.concatenate([x for x, _ in train]), y_train=np.concatenate([y for _, y in train]),
      x_test=x_test, y_test=y_test, label_names=load_label_names(folder / META_FILE),
      source=str(folder))


def load_cifar10(archive_or_dir: str | os.PathLike[str] | None = None, *,
                 extract_dir: str | os.PathLike[str] | None = None) -> Cifar10:
  """Loads CIFAR-10: train = ``data_batch_1..5`` concatenated, test = ``test_batch``.

  Args:
    archive_or_dir: a ``cifar-10-python.tar.gz``-style archive, or an extracted folder (the
      ``cifar-10-batches-py`` folder or its parent). ``None``: the official archive, downloaded once
      into ``$CENAS_DATA_DIR/cifar10`` and checked against its sha256.
    extract_dir: where archives are unpacked (default ``cache_dir()/"cifar10"``).

  Raises:
    DataUnavailableError: offline and not cached (the message names the file, where to put it and the
      URL), or the given path does not exist.
    ChecksumError: the downloaded or cached archive has the wrong sha256.
    DataError: unsafe or corrupt archive, bad batch content.
  """
  if archive_or_dir is None:
    archive = paths.fetch(CIFAR10_REMOTE)
    data = load_batches_dir(extract_cifar10(archive, extract_dir))
    return dataclasses.replace(data, source=str(archive))
  path = Path(archive_or_dir).expanduser()
  if path.is_dir():
    return load_batches_dir(path)
  if not path.exists():
    raise DataUnavailableError(f"CIFAR-10 archive or folder not found at {path}. Download "
                               f"{CIFAR10_REMOTE.url} and pass its path (or pass None to download "
                               "it into the cache).")
  data = load_batches_dir(extract_cifar10(path, extract_dir))
  return dataclasses.replace(data, source=str(path))
