"""Writers and readers for a run's outputs: summary.json, results.jsonl and pareto.csv.

Every file is written so that a crash never leaves a corrupt file behind:
- ``summary.json`` and ``pareto.csv`` are written atomically (temp file + fsync + rename).
- ``results.jsonl`` is append-only: each record is one complete JSON line written with a single
  ``write`` call, flushed and fsync'ed. A crash mid-write can only leave a last line without its
  newline; readers and a resuming :class:`ResultsWriter` detect that line, warn, and drop it.

JSON has no NaN or infinity: every float NaN/+inf/-inf in a summary or record is written as
``null``. NumPy scalars and arrays become Python numbers and lists; tuples become lists; paths
become strings.

Before the first write, a run checks its output directory with ``prepare_workdir`` (re-exported
from ``cenas_jax.workdir``): it refuses files, unwritable paths and directories of another tool.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import atomic_write_json, atomic_write_text
from cenas_jax.workdir import Workdir, prepare_workdir  # noqa: F401  (the workdir check, re-exported)

SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.jsonl"
PARETO_FILE = "pareto.csv"
REQUIRED_PROVENANCE_KEYS = ("seed", "energy_source", "ci_source", "data_hashes")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def to_json_safe(obj: Any) -> Any:
  """Returns ``obj`` as plain JSON types; NaN and +-inf floats become ``None`` (JSON ``null``).

  Raises:
    TypeError: a value has no JSON form (e.g. an arbitrary object) or a dict key is not a string.
  """
  if obj is None or isinstance(obj, (bool, str)):
    return obj
  if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    return v if math.isfinite(v) else None
  if isinstance(obj, np.bool_):
    return bool(obj)
  if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and hasattr(obj, "dtype")):
    return to_json_safe(np.asarray(obj).tolist())
  if isinstance(obj, Mapping):
    out = {}
    for k, v in obj.items():
      if not isinstance(k, str):
        raise TypeError(f"JSON object keys must be strings, got {k!r} ({type(k).__name__}).")
      out[k] = to_json_safe(v)
    return out
  if isinstance(obj, (list, tuple)):
    return [to_json_safe(v) for v in obj]
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, (dt.datetime, dt.date)):
    return obj.isoformat()
  raise TypeError(f"Value {obj!r} of type {type(obj).__name__} has no JSON form.")


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10,
                         check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def _jax_info() -> dict[str, Any]:
  """JAX version, and backend/devices only when JAX is already imported (never imports it)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  try:
    version = metadata.version("jax")
  except metadata.PackageNotFoundError:
    version = "not installed"
  info: dict[str, Any] = {"jax_version": version}
  jax = sys.modules.get("jax")
  if jax is None:
    info["jax_backend"] = "not initialized (jax not imported)"
    info["jax_devices"] = []
    return info
  try:
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["jax_process_count"] = jax.process_count()
  except Exception as e:  # pylint: disable=broad-except
    info["jax_backend"] = f"unavailable: {e}"
    info["jax_devices"] = []
  return info


def collect_provenance(**fields: Any) -> dict[str, Any]:
  """Automatic provenance (versions, git commit, host, time, argv) overlaid with ``fields``.

  The git commit is ``"unknown"`` when the package is not in a git checkout or git is missing;
  ``git_dirty`` is then ``"unknown"`` too. JAX backend and devices are recorded only when JAX is
  already imported by the caller (this function never imports JAX).
  """
  from cenas_jax import __version__  # pylint: disable=g-import-not-at-top

  commit = _git("rev-parse", "HEAD")
  status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
  prov: dict[str, Any] = {
      "package": "cenas_jax",
      "package_version": __version__,
      "git_commit": commit or "unknown",
      "git_dirty": "unknown" if status is None else bool(status),
      "python_version": platform.python_version(),
      **_jax_info(),
      "hostname": socket.gethostname(),
      "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
      "argv": list(sys.argv),
  }
  prov.update(fields)
  return prov


def write_summary(workdir: str | os.PathLike[str], summary: Mapping[str, Any],
                  provenance: Mapping[str, Any]) -> Path:
  """Writes ``<workdir>/summary.json``: ``summary`` plus a ``"provenance"`` block, atomically.

  Args:
    workdir: the run's output directory (created if missing).
    summary: the job's final figures (JSON-able; NaN/inf are written as ``null``).
    provenance: caller-known provenance. Must contain ``seed`` (int or list of ints),
      ``energy_source`` (e.g. ``"measured-nvml"``, ``"predicted-<model>"``, ``"table-<name>"``),
      ``ci_source`` (e.g. a trace file and region) and ``data_hashes`` (``{file: sha256}``); use
      ``None`` where a key does not apply. Anything else given is kept. Automatic fields (package
      version, git commit, Python/JAX versions, backend, host, UTC time, argv) are added; given keys
      override them.

  Returns:
    The path written.

  Raises:
    ValueError: a required provenance key is missing, or ``summary`` already has ``"provenance"``.
    TypeError: a value has no JSON form.
  """
  missing = [k for k in REQUIRED_PROVENANCE_KEYS if k not in provenance]
  if missing:
    raise ValueError(
        f"write_summary: provenance is missing {missing}; pass them explicitly (None when a key "
        "does not apply) so every result says where its numbers came from.")
  if "provenance" in summary:
    raise ValueError("write_summary: summary must not contain a 'provenance' key; pass it separately.")
  doc = to_json_safe({**summary, "provenance": collect_provenance(**provenance)})
  return atomic_write_json(Path(workdir) / SUMMARY_FILE, doc)


def load_summary(workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """Reads ``<workdir>/summary.json`` (or the given ``.json`` file).

  Raises:
    DataUnavailableError: the file does not exist.
    DataError: the file is not a JSON object.
  """
  path = Path(workdir)
  if path.is_dir() or path.suffix != ".json":
    path = path / SUMMARY_FILE
  if not path.exists():
    raise DataUnavailableError(f"{path} does not exist; run the experiment that writes it first.")
  try:
    doc = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not valid JSON ({e}); rerun the job or restore the file.") from e
  if not isinstance(doc, dict):
    raise DataError(f"{path} holds a {type(doc).__name__}, expected a JSON object.")
  return doc


def _dumps_line(record: Mapping[str, Any]) -> str:
  if not isinstance(record, Mapping):
    raise TypeError(f"A results record must be a dict, got {type(record).__name__}.")
  return json.dumps(to_json_safe(record), allow_nan=False, separators=(",", ":")) + "\n"


def _results_path(workdir_or_file: str | os.PathLike[str]) -> Path:
  p = Path(workdir_or_file)
  return p if p.suffix == ".jsonl" else p / RESULTS_FILE


def _complete_length(path: Path) -> tuple[int, int]:
  """(bytes up to and including the last newline, total bytes) of ``path``."""
  size = path.stat().st_size
  if size == 0:
    return 0, 0
  with open(path, "rb") as f:
    pos = size
    block = 1 << 16
    while pos > 0:
      start = max(0, pos - block)
      f.seek(start)
      chunk = f.read(pos - start)
      i = chunk.rfind(b"\n")
      if i >= 0:
        return start + i + 1, size
      pos = start
  return 0, size


def _warn_truncated(path: Path, n_bytes: int, action: str) -> None:
  msg = (f"{path}: the last line ({n_bytes} bytes) has no newline: a write was interrupted. "
         f"It is {action}.")
  logging.warning(msg)
  warnings.warn(msg, RuntimeWarning, stacklevel=3)


class ResultsWriter:
  """Appends records to ``results.jsonl``, one complete JSON object per line, fsync'ed.

  Opening an existing file resumes it: a truncated last line left by a crash is removed (with a
  warning) before anything is appended; complete lines are never touched. Use as a context manager
  or call :meth:`close`.
  """

  def __init__(self, workdir: str | os.PathLike[str], *, filename: str = RESULTS_FILE,
               fsync: bool = True):
    """Opens (creating if needed) ``<workdir>/<filename>`` for appending.

    Args:
      workdir: output directory (created if missing).
      filename: file name inside ``workdir``.
      fsync: fsync after every append (durable against power loss; costs about a disk flush).
    """
    self.path = Path(workdir) / filename
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._fsync = fsync
    if self.path.exists():
      complete, size = _complete_length(self.path)
      if complete < size:
        _warn_truncated(self.path, size - complete, "dropped before appending")
        with open(self.path, "r+b") as f:
          f.truncate(complete)
          f.flush()
          os.fsync(f.fileno())
    self._f = open(self.path, "ab")  # pylint: disable=consider-using-with

  def append(self, record: Mapping[str, Any]) -> None:
    """Appends one record (NaN/inf written as null)."""
    self.extend([record])

  def extend(self, records: Iterable[Mapping[str, Any]]) -> int:
    """Appends records (each a complete line) with one write and one fsync; returns the count."""
    lines = [_dumps_line(r) for r in records]  # serialize all first: a bad record writes nothing
    if not lines:
      return 0
    if self._f.closed:
      raise ValueError(f"ResultsWriter for {self.path} is closed.")
    self._f.write("".join(lines).encode("utf-8"))
    self._f.flush()
    if self._fsync:
      os.fsync(self._f.fileno())
    return len(lines)

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()

  def __enter__(self) -> "ResultsWriter":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def append_results(workdir: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> int:
  """Appends records to ``<workdir>/results.jsonl`` (see :class:`ResultsWriter`); returns the count."""
  with ResultsWriter(workdir) as w:
    return w.extend(records)


def rewrite_results(workdir: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
  """Atomically replaces ``<workdir>/results.jsonl`` with ``records`` (e.g. trimmed on resume)."""
  text = "".join(_dumps_line(r) for r in records)
  return atomic_write_text(_results_path(workdir), text)


def read_results(workdir_or_file: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads ``results.jsonl`` (a workdir or the file itself) into a list of dicts.

  A truncated last line (no newline) is skipped with a warning; the file is not modified.

  Raises:
    DataUnavailableError: the file does not exist.
    DataError: a complete line is not a JSON object (the message gives file and line number).
  """
  path = _results_path(workdir_or_file)
  if not path.exists():
    raise DataUnavailableError(f"{path} does not exist; run the experiment that writes it first.")
  data = path.read_bytes()
  complete = data.rfind(b"\n") + 1
  if complete < len(data):
    _warn_truncated(path, len(data) - complete, "ignored")
  out = []
  for lineno, line in enumerate(data[:complete].decode("utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}, line {lineno}: not valid JSON ({e}). The file is damaged; restore it "
                      "or rewrite it with rewrite_results.") from e
    if not isinstance(rec, dict):
      raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}.")
    out.append(rec)
  return out


def pareto_mask(values: Any, maximize: bool | Sequence[bool]) -> np.ndarray:
  """Non-dominated mask of points ``values`` (shape ``(n, k)``), minimizing or maximizing each.

  Point ``a`` dominates ``b`` when it is at least as good in every objective and strictly better in
  one. Points with identical objective vectors do not dominate each other, so all copies of a
  non-dominated point are marked ``True``. (Delegates to ``cenas_jax.moo.pareto`` after turning every
  objective into one to maximize.)

  Args:
    values: ``(n, k)`` objective values, finite.
    maximize: one flag for all objectives or one per objective (``True``: larger is better).

  Returns:
    bool array of shape ``(n,)``.

  Raises:
    ValueError: wrong shape, non-finite values, or a wrong number of ``maximize`` flags.
  """
  from cenas_jax.moo.pareto import non_dominated_mask  # pylint: disable=g-import-not-at-top

  y = np.array(values, dtype=np.float64, ndmin=2)
  if y.ndim != 2:
    raise ValueError(f"values must have shape (n, k), got {y.shape}.")
  flags = np.asarray(maximize, dtype=bool)
  if flags.ndim and flags.shape != (y.shape[1],):
    raise ValueError(f"maximize has {flags.shape[0]} flags for {y.shape[1]} objectives.")
  if not np.isfinite(y).all():
    row = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
    raise ValueError(f"Objective values must be finite; row {row} is {y[row].tolist()}.")
  if y.shape[0] == 0:
    return np.zeros(0, dtype=bool)
  return non_dominated_mask(np.where(flags, y, -y))


def write_pareto_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                     objectives: Sequence[str], *, maximize: bool | Sequence[bool]) -> np.ndarray:
  """Writes ``rows`` as CSV with an added ``is_pareto`` column, atomically.

  Args:
    path: the CSV file (usually ``<workdir>/pareto.csv``); a directory gets ``pareto.csv`` inside.
    rows: one dict per point; columns are the union of keys in first-seen order.
    objectives: the keys that are objectives (each row must have a finite number for each).
    maximize: one flag for all objectives or one per objective.

  Returns:
    The ``is_pareto`` mask (bool array, one per row).

  Raises:
    DataError: a row lacks an objective or has a non-numeric / non-finite one (names the row).
    ValueError: ``objectives`` is empty or ``maximize`` has the wrong length.
  """
  path = Path(path)
  if path.is_dir():
    path = path / PARETO_FILE
  objectives = list(objectives)
  if not objectives:
    raise ValueError("write_pareto_csv: objectives must name at least one column.")
  if not isinstance(maximize, bool) and len(maximize) != len(objectives):
    raise ValueError(f"write_pareto_csv: maximize has {len(maximize)} flags for "
                     f"{len(objectives)} objectives.")
  vals = np.zeros((len(rows), len(objectives)))
  for i, row in enumerate(rows):
    for j, name in enumerate(objectives):
      v = row.get(name)
      try:
        fv = float(v)
      except (TypeError, ValueError):
        fv = float("nan")
      if not math.isfinite(fv):
        raise DataError(f"{path}: row {i} has objective {name!r} = {v!r}; need a finite number.")
      vals[i, j] = fv
  mask = pareto_mask(vals.reshape(len(rows), len(objectives)), maximize) if rows else np.zeros(0, bool)
  if any("is_pareto" in row for row in rows):
    raise ValueError("write_pareto_csv: rows already have an 'is_pareto' column.")
  columns: list[str] = []
  for row in rows:
    columns.extend(c for c in row if c not in columns)
  write_csv(path, [{**row, "is_pareto": bool(m)} for row, m in zip(rows, mask)], [*columns, "is_pareto"])
  return mask


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
  """Writes ``rows`` as a CSV file atomically: the one CSV writer of the library.

  Args:
    path: the CSV file.
    rows: one mapping per row. Values go through ``to_json_safe``: ``None`` and NaN become empty
      cells, lists and dicts become JSON text.
    columns: the header, in order; by default the union of the rows' keys in first-seen order. A
      row's missing column is an empty cell.

  Returns:
    The path written.
  """
  if columns is None:
    columns = []
    for row in rows:
      columns.extend(c for c in row if c not in columns)
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(list(columns))
  for row in rows:
    w.writerow([_csv_cell(row.get(c)) for c in columns])
  return atomic_write_text(path, buf.getvalue())


def _csv_cell(v: Any) -> Any:
  v = to_json_safe(v)
  if v is None:
    return ""
  if isinstance(v, (list, dict)):
    return json.dumps(v)
  return v
