"""Where data lives, and the one download routine every loader uses.

Two roots:
- ``cache_dir()``: ``$CENAS_DATA_DIR`` (default ``~/.cache/cenas_jax``), where downloads go.
- ``shared_data_dir()``: ``$CENAS_SHARED_DATA`` (default ``../shared/data`` from the repository root),
  the offline copies of real data used by tests and benchmarks.

``fetch`` downloads a file once, checks its sha256, and stores it atomically; offline or on a bad
checksum it raises one error that names the file, where to put it by hand, and the URL.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from cenas_jax.errors import ChecksumError, DataUnavailableError
from cenas_jax.fileio import sha256_file

_REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
  """Download cache: ``$CENAS_DATA_DIR`` or ``~/.cache/cenas_jax``."""
  return Path(os.environ.get("CENAS_DATA_DIR", Path.home() / ".cache" / "cenas_jax")).expanduser()


def shared_data_dir() -> Path:
  """Offline real data: ``$CENAS_SHARED_DATA`` or ``<repo>/../shared/data``."""
  env = os.environ.get("CENAS_SHARED_DATA")
  return Path(env).expanduser() if env else (_REPO_ROOT.parent / "shared" / "data")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """A file the library knows how to download.

  Attributes:
    url: where to download it from.
    filename: name of the file in the cache directory.
    sha256: expected hex digest of the downloaded bytes (``None``: not checked, and said so).
    subdir: sub-directory of the cache directory.
  """

  url: str
  filename: str
  sha256: str | None
  subdir: str = ""

  def local_path(self, root: Path | None = None) -> Path:
    return (root or cache_dir()) / self.subdir / self.filename


def fetch(remote: RemoteFile, *, root: Path | None = None, timeout_s: float = 60.0) -> Path:
  """Returns the local path of ``remote``, downloading it into the cache if it is not there yet.

  A file already in the cache is re-hashed; a mismatch raises ``ChecksumError`` (the file is left in
  place for inspection, never overwritten silently).

  Raises:
    DataUnavailableError: the file is missing and the download failed (offline, HTTP error).
    ChecksumError: the downloaded or cached file does not have the expected sha256.
  """
  dest = remote.local_path(root)
  if dest.exists():
    _check_sha256(dest, remote)
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
  os.close(fd)
  try:
    try:
      with urllib.request.urlopen(remote.url, timeout=timeout_s) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
      raise DataUnavailableError(
          f"Could not download {remote.filename!r} from {remote.url} ({e}). "
          f"Download it by hand and put it at {dest} (or set CENAS_DATA_DIR to the folder that "
          f"holds {Path(remote.subdir) / remote.filename})."
      ) from e
    _check_sha256(Path(tmp), remote, shown_as=dest)
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return dest


def _check_sha256(path: Path, remote: RemoteFile, shown_as: Path | None = None) -> None:
  if remote.sha256 is None:
    return
  got = sha256_file(path)
  if got != remote.sha256.lower():
    raise ChecksumError(
        f"{shown_as or path}: sha256 {got} does not match the expected {remote.sha256} for "
        f"{remote.url}. Delete the file and download it again."
    )


def require_file(path: str | os.PathLike[str], *, what: str, url: str | None = None) -> Path:
  """Returns ``path`` if it exists, else raises ``DataUnavailableError`` naming ``what`` and ``url``."""
  path = Path(path).expanduser()
  if not path.exists():
    hint = f" Download it from {url} and put it there." if url else ""
    raise DataUnavailableError(f"{what} not found at {path}.{hint}")
  return path


def shared_file(*parts: str) -> Path:
  """A file under ``shared_data_dir()``; raises a clear error naming CENAS_SHARED_DATA if missing."""
  path = shared_data_dir().joinpath(*parts)
  if not path.exists():
    raise DataUnavailableError(
        f"{path} not found. Set CENAS_SHARED_DATA to the folder that holds the shared real data "
        f"(it must contain {Path(*parts)})."
    )
  return path
