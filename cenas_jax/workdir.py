"""Output directories that are safe to point a run at: the one check every binary makes.

A run's ``--workdir`` is ours when it is new, empty, or holds the marker ``cenas_run.json`` that a
run of the same kind wrote. Anything else is refused before a byte is written: a regular file, a
directory that cannot be written, a non-empty directory of another tool (its ``results.jsonl`` or
``summary.json`` would otherwise be silently replaced), a run of another binary, or a run with other
settings. Use it in two steps, so that a start that fails on bad input writes nothing::

  wd = prepare_workdir(workdir, config, kind="hwnas_search")  # checks only; writes nothing
  inputs = load_inputs(config)  # everything that can fail on bad input or files
  wd.claim()                    # the first write: creates the directory and the marker
  ...                           # the run writes its outputs
  wd.finish()                   # marks the run finished (a rerun can say so instead of redoing it)

``wd.finished`` says whether the same settings already finished in that directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cenas_jax.config_tree import flat_config
from cenas_jax.errors import WorkdirError
from cenas_jax.fileio import atomic_write_json

MARKER_FILE = "cenas_run.json"


@dataclasses.dataclass
class Workdir:
  """A checked output directory (see the module docstring).

  Attributes:
    path: the directory.
    kind: the kind of run (the binary's name).
    config: the flat settings of this run.
    resumed: the directory already holds a run of this kind and these settings (resume it).
    finished: that run finished with exactly these settings (nothing is left to do).
    saved_config: the settings recorded there (``{}`` for a new directory).
  """

  path: Path
  kind: str
  config: dict[str, Any]
  resumed: bool = False
  finished: bool = False
  saved_config: dict[str, Any] = dataclasses.field(default_factory=dict)
  _marker: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

  @property
  def marker_path(self) -> Path:
    return self.path / MARKER_FILE

  def claim(self) -> Path:
    """Creates the directory (and parents) and writes the marker with this run's settings; the
    first write of a run. A finished run claimed again with other ``may_change`` settings (e.g.
    more seeds) is no longer finished. Returns the directory."""
    if self.resumed and self._marker.get("config") == self.config:
      return self.path  # the marker already says so: a resume changes nothing before its work
    self.path.mkdir(parents=True, exist_ok=True)
    from cenas_jax import __version__  # pylint: disable=g-import-not-at-top

    keep_finished = self.finished and self._marker.get("config") == self.config
    self._marker = {
        "kind": self.kind, "package": "cenas_jax", "package_version": __version__,
        "created_utc": self._marker.get("created_utc") or _now(),
        "finished_utc": self._marker.get("finished_utc") if keep_finished else None,
        "config": self.config,
    }
    atomic_write_json(self.marker_path, self._marker)
    return self.path

  def finish(self) -> None:
    """Records that the run finished with these settings."""
    if not self._marker:
      self.claim()
    self._marker["finished_utc"] = _now()
    atomic_write_json(self.marker_path, self._marker)
    self.finished = True


def _now() -> str:
  return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _check_writable(path: Path) -> None:
  """Raises ``WorkdirError`` unless ``path`` (or, when missing, its nearest existing parent) is a
  directory a file can be created in. The probe file is removed at once."""
  probe = path
  while not probe.exists():
    if probe.parent == probe:
      break
    probe = probe.parent
  if not probe.is_dir():
    raise WorkdirError(f"{path}: {probe} is a file, not a directory; choose another --workdir.")
  try:
    with tempfile.TemporaryFile(dir=probe, prefix=".cenas_write_probe."):
      pass
  except OSError as e:
    raise WorkdirError(f"{path}: cannot write in {probe} ({e.strerror or e}); choose a writable "
                       "--workdir.") from None


def prepare_workdir(workdir: str | os.PathLike[str], config: Any, *, kind: str,
                    may_change: Collection[str] = ()) -> Workdir:
  """Checks that ``workdir`` may receive a run of ``kind`` with ``config``; writes nothing.

  Args:
    workdir: the output directory (``~`` is expanded; it may not exist yet).
    config: the run's settings: a config dataclass (nested ones are flattened to flag names) or a
      flat mapping.
    kind: the kind of run, e.g. the binary's name (``"hwnas_search"``); a directory of another kind
      is refused.
    may_change: settings that may differ from the recorded run's (e.g. ``seeds`` when a study gets
      more seeds, ``workers``); any other difference is refused, naming the flags.

  Returns:
    A ``Workdir``; call ``claim()`` before the first write and ``finish()`` at the end.

  Raises:
    WorkdirError: the path is a file, cannot be written, or holds something that is not a run of
      this kind with these settings. The message names the directory and the fix.
  """
  path = Path(workdir).expanduser()
  flat = flat_config(config)
  wd = Workdir(path=path, kind=kind, config=flat)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"{path}: is a file, not a directory; choose another --workdir.")
  _check_writable(path)
  if not path.is_dir():
    return wd
  entries = sorted(p.name for p in path.iterdir())
  if not entries:
    return wd
  marker_path = path / MARKER_FILE
  if MARKER_FILE not in entries:
    if _older_run_of_ours(path):
      raise WorkdirError(f"{path}: holds a run of an earlier version of this package (no {MARKER_FILE}); "
                         "its files stay as they are. Choose a new --workdir.")
    shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
    raise WorkdirError(f"{path}: holds files this package did not write ({shown}; no {MARKER_FILE}); "
                       "refusing to overwrite them. Choose a new or empty --workdir.")
  try:
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    saved_kind, saved = marker["kind"], dict(marker["config"])
  except (ValueError, KeyError, TypeError) as e:
    raise WorkdirError(f"{marker_path}: not a valid run marker ({e}); choose a new --workdir.") from None
  if saved_kind != kind:
    raise WorkdirError(f"{path}: holds a {saved_kind} run, not a {kind} run; choose another --workdir.")
  # A setting added to the package after the run was recorded is not a difference.
  diff = sorted(k for k in flat if k in saved and saved[k] != flat[k] and k not in may_change)
  if diff:
    raise WorkdirError(
        f"{path}: holds a run with other settings ({', '.join(f'--{k}' for k in diff)} differ: "
        f"saved {[saved[k] for k in diff]}, now {[flat[k] for k in diff]}). Use a new --workdir, or "
        "the saved settings to resume.")
  wd.resumed = True
  wd.saved_config = saved
  wd._marker = marker  # pylint: disable=protected-access
  wd.finished = bool(marker.get("finished_utc")) and _same_run(saved, flat, config)
  return wd


def _same_run(saved: dict[str, Any], flat: dict[str, Any], config: Any) -> bool:
  """Whether settings recorded by a run equal ``flat``: a setting the package added after the run
  was recorded counts as equal when it holds its default (the value that run implicitly had), so a
  finished run stays finished across such a release."""
  if any(saved[k] != flat[k] for k in flat if k in saved):
    return False
  added = [k for k in flat if k not in saved]
  if not added:
    return True
  try:
    defaults = flat_config(type(config)()) if dataclasses.is_dataclass(config) else {}
  except TypeError:  # a config class without defaults for every field
    defaults = {}
  return all(k in defaults and defaults[k] == flat[k] for k in added)


def _older_run_of_ours(path: Path) -> bool:
  """Whether ``path`` holds outputs whose provenance names this package (written before markers)."""
  for name in ("summary.json", "metrics.json"):
    try:
      doc = json.loads((path / name).read_text(encoding="utf-8"))
      if doc.get("provenance", {}).get("package", "") == "cenas_jax" or "package_version" in doc.get(
          "provenance", {}):
        return True
    except (OSError, ValueError, AttributeError):
      continue
  return False


def snapshot(path: str | os.PathLike[str]) -> frozenset[str] | None:
  """The names in ``path`` (``None`` when it does not exist): what ``release_if_untouched`` compares."""
  path = Path(path).expanduser()
  try:
    return frozenset(p.name for p in path.iterdir()) if path.is_dir() else None
  except OSError:
    return None


def release_if_untouched(path: str | os.PathLike[str], before: frozenset[str] | None) -> None:
  """Undoes a claim after a start that failed: removes the marker written since ``before``
  (``snapshot`` taken before the run), and the directory if it did not exist, as long as nothing
  else was written there."""
  path = Path(path).expanduser()
  now = snapshot(path)
  if now is None or (before is not None and MARKER_FILE in before):
    return
  if now - (before or frozenset()) <= {MARKER_FILE}:
    if MARKER_FILE in now:
      (path / MARKER_FILE).unlink()
    if before is None and not any(path.iterdir()):
      path.rmdir()


@contextlib.contextmanager
def released_on_failure(path: str | os.PathLike[str] | None):
  """Undoes a failed start's claim (``release_if_untouched``) when the block raises, then re-raises;
  ``None``: no directory to watch."""
  before = snapshot(path) if path else None
  try:
    yield
  except BaseException:
    if path:
      try:
        release_if_untouched(path, before)
      except OSError:
        pass
    raise


def claim_for(path: str | os.PathLike[str], config: Any, *, kind: str) -> Path:
  """Checks and claims ``path`` for a run of ``kind`` whose library does not check its workdir
  itself: only whose directory it is matters here (any setting may change on a resume)."""
  return prepare_workdir(path, config, kind=kind, may_change=tuple(flat_config(config))).claim()
