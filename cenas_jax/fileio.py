"""Small file helpers: atomic writes and content hashes.

Atomic writes go to a temporary file in the destination directory, are flushed and fsync'ed, then
renamed over the destination with ``os.replace``: a reader (or a run killed half-way) sees either the
old file or the new one, never a half-written file. The file gets the permissions of a plain
``open(path, "w")`` (``0o666`` less the process umask), not the ``0o600`` of ``tempfile``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
  """The process umask, read without changing it where Linux allows (``/proc``)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
  os.umask(mask)
  return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
  """Writes ``data`` to ``path`` atomically (temp file + fsync + rename). Returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
  """Writes UTF-8 ``text`` to ``path`` atomically."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
  """Writes ``obj`` as JSON atomically (NaN/inf are refused: JSON has no such numbers)."""
  text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n"
  return atomic_write_text(path, text)


def sha256_file(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
  """Returns the hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(chunk_bytes):
      h.update(chunk)
  return h.hexdigest()
