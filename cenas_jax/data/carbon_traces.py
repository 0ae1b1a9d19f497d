"""Hourly grid carbon-intensity traces: strict loaders and the `CarbonTrace` container.

A `CarbonTrace` is an hourly, UTC-indexed series of carbon intensity in gCO2eq/kWh, plus where it
came from (file, sha256, column, region) and what the loader had to repair (interpolated hours,
merged duplicate hours). Every loader returns one.

Formats (sniffed from the header by `load_trace`, or chosen with ``fmt=``):

- ``"electricitymaps"``: the Electricity Maps data-portal CSV (also CarbonX ``forecasting-data``).
  ``Datetime (UTC)`` first, then among others ``Carbon Intensity gCO₂eq/kWh (direct)`` and
  ``... (LCA)`` or ``... (Life cycle)``; ``column="direct"`` or ``"lifecycle"`` (default) picks one.
  Naive timestamps are UTC (the column name says so).
- ``"carbonx-benchmark"``: CarbonX ``benchmark-data``: an unnamed index column, ``UTC time``
  (``MM/DD/YYYY HH:MM:SS`` or ``YYYY-MM-DD HH:MM:SS+00:00``), ``carbon_intensity`` and generation
  by source in MWh (kept as `CarbonTrace.generation_mwh`).
- ``"co2signal"``: a CO2Scrap log of co2signal API scrapes: ``timestamp`` (scrape time, epoch s),
  ``zone_datetime`` (the hour the reading is for, ISO with ``Z``), ``status``,
  ``zone_name``, ``carbon_intensity_avg``, ``carbon_intensity_unit``, ... Rows are in scrape order,
  so ``timestamp`` must be non-decreasing while ``zone_datetime`` may repeat or step back (the API
  re-reports an earlier hour); all readings of one hour are merged (mean).
- ``"plain"``: a two-column CSV ``time,value``; every timestamp must carry an explicit UTC offset or
  ``Z``.

Rules shared by every format (each violation raises `DataError` naming the file and the 1-based data
row, the header not counted):

- timestamps must parse and be in non-decreasing order (for co2signal: the scrape ``timestamp``);
- the chosen value column must be numeric, finite, not empty/NaN and >= 0;
- every row has exactly as many fields as the header (a file cut mid-row is caught here) and no
  blank line;
- readings that fall into the same UTC hour (duplicated hours, or sub-hourly data) are averaged;
  the number of hours that had more than one reading is `CarbonTrace.merged_duplicate_hours`;
- runs of at most ``max_gap_hours`` missing hours are filled by linear interpolation, listed in
  `CarbonTrace.interpolated_hours` and reported once with ``logging.warning``; a longer run raises,
  naming the missing hours and the rows on either side.

``start=`` / ``end=`` (half-open, UTC, on the hour) restrict the trace to a window *before* gap
checking, so a gap-free stretch of a gappy file can be loaded; short gaps at the window's edges are
interpolated with the neighbours just outside the window. The window must lie within the file's data.

Nothing is cached on disk; a 26k-row file loads in a fraction of a second.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.data import paths

_LOG = logging.getLogger(__name__)

FORMATS = ("electricitymaps", "carbonx-benchmark", "co2signal", "plain")
KNOWN_REGIONS = ("US-CAL-CISO", "DE", "US-MIDA-PJM")
DATASETS = ("forecasting", "benchmark", "electricitymaps")
ELECTRICITYMAPS_YEARS = (2021, 2022, 2023)

TimeLike = str | dt.datetime | pd.Timestamp
Format = Literal["auto", "electricitymaps", "carbonx-benchmark", "co2signal", "plain"]

_HOUR = pd.Timedelta(hours=1)
_EM_TIME = "Datetime (UTC)"
_EM_CI_RE = re.compile(r"^carbon intensity gco[₂2]eq/kwh \((direct|lca|life cycle)\)$", re.I)
_EM_ZONE_RE = re.compile(r"^zone id$", re.I)
_BENCH_TIME = "UTC time"
_BENCH_CI = "carbon_intensity"
_CO2_COLUMNS = ("timestamp", "zone_datetime", "carbon_intensity_avg")
_CO2_UNIT = "gCO2eq/kWh"
_PLAIN_HEADER = ["time", "value"]
# A time of day followed by "Z" or a UTC offset (a bare date such as 2021-01-01 has none).
_OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_US_DATE_RE = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$")
_REGION_RE = re.compile(r"^[A-Z]{2}(?:-[A-Z0-9]+)*$")
_COLUMN_ALIASES = {"direct": "direct", "lifecycle": "lifecycle", "life cycle": "lifecycle",
                   "lca": "lifecycle"}


# ----------------------------------------------------------------------------------------------
# The container.


@dataclasses.dataclass(frozen=True, eq=False)
class CarbonTrace:
  """An hourly carbon-intensity trace with its provenance.

  Attributes:
    ci_g_per_kwh: carbon intensity in gCO2eq/kWh; float64, no NaN, >= 0, indexed by a contiguous
      hourly ``DatetimeIndex`` in UTC (``freq='h'``); each label is the start of its hour.
    source: ``"<format>:<region or 'unknown'>:<column>"``, e.g.
      ``"electricitymaps:US-CAL-CISO:lifecycle"``.
    path: the file the trace was read from.
    sha256: hex sha256 of that file's bytes (as stored, i.e. of the ``.gz`` for gzip files).
    column: the header of the value column used.
    region: the grid zone (e.g. ``"US-CAL-CISO"``), or ``None`` when the file does not say.
    interpolated_hours: UTC hours (within this trace) filled by linear interpolation.
    merged_duplicate_hours: number of hours of the loaded range that had more than one reading
      (duplicates or sub-hourly data) and were averaged. Counted at load time; `window` and `slice`
      keep the loaded count.
    generation_mwh: generation by source in MWh (CarbonX benchmark files), same index, or ``None``.
  """

  ci_g_per_kwh: pd.Series
  source: str
  path: str
  sha256: str
  column: str
  region: str | None = None
  interpolated_hours: tuple[pd.Timestamp, ...] = ()
  merged_duplicate_hours: int = 0
  generation_mwh: pd.DataFrame | None = None

  def __post_init__(self):
    s = self.ci_g_per_kwh
    if not isinstance(s, pd.Series):
      raise TypeError(f"ci_g_per_kwh must be a pandas Series, got {type(s).__name__}.")
    idx = s.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None or str(idx.tz) != "UTC":
      raise ValueError("ci_g_per_kwh must be indexed by a UTC DatetimeIndex.")
    if len(s) == 0:
      raise ValueError("ci_g_per_kwh is empty.")
    if idx.freq is None or idx.freq != _HOUR:
      raise ValueError("ci_g_per_kwh's index must be contiguous hourly (freq='h').")
    if s.dtype != np.float64:
      raise ValueError(f"ci_g_per_kwh must be float64, got {s.dtype}.")
    values = s.to_numpy()
    if not np.all(np.isfinite(values)) or np.any(values < 0):
      raise ValueError("ci_g_per_kwh must be finite and >= 0 everywhere.")
    if self.generation_mwh is not None and not self.generation_mwh.index.equals(idx):
      raise ValueError("generation_mwh must have the same index as ci_g_per_kwh.")

  @property
  def values(self) -> np.ndarray:
    """Carbon intensity per hour, gCO2eq/kWh, float64 array of shape ``(len(self),)``."""
    return self.ci_g_per_kwh.to_numpy(dtype=np.float64)

  @property
  def start(self) -> pd.Timestamp:
    """Start of the first hour (UTC)."""
    return self.ci_g_per_kwh.index[0]

  @property
  def end(self) -> pd.Timestamp:
    """End of the last hour (UTC, exclusive): the trace covers ``[start, end)``."""
    return self.ci_g_per_kwh.index[-1] + _HOUR

  def __len__(self) -> int:
    return len(self.ci_g_per_kwh)

  def window(self, start: TimeLike, hours: int) -> CarbonTrace:
    """The ``hours`` hours from ``start`` (tz-aware, on the hour).

    Raises:
      DataError: the window is not inside ``[self.start, self.end)``.
      ValueError: ``hours`` < 1, or ``start`` is naive or not on the hour.
    """
    if isinstance(hours, bool) or not isinstance(hours, (int, np.integer)) or hours < 1:
      raise ValueError(f"window(): hours must be a positive integer, got {hours!r}.")
    start_ts = _utc_hour(start, "start")
    return self.slice(start_ts, start_ts + int(hours) * _HOUR)

  def slice(self, start: TimeLike | None = None, end: TimeLike | None = None) -> CarbonTrace:
    """The hours in ``[start, end)`` (tz-aware, on the hour; ``None``: this trace's edge).

    Raises:
      DataError: the range is not inside ``[self.start, self.end)``.
      ValueError: empty range, or a bound that is naive or not on the hour.
    """
    start_ts = self.start if start is None else _utc_hour(start, "start")
    end_ts = self.end if end is None else _utc_hour(end, "end")
    if end_ts <= start_ts:
      raise ValueError(f"slice(): end {end_ts} must be after start {start_ts}.")
    if start_ts < self.start or end_ts > self.end:
      raise DataError(
          f"{self.path}: requested hours [{_iso(start_ts)}, {_iso(end_ts)}) are outside the trace "
          f"{self.source}, which covers [{_iso(self.start)}, {_iso(self.end)}) ({len(self)} h). "
          "Pick a window inside it or load another file."
      )
    i0 = int((start_ts - self.start) // _HOUR)
    i1 = int((end_ts - self.start) // _HOUR)
    index = pd.DatetimeIndex(self.ci_g_per_kwh.index[i0:i1], freq="h")
    ci = pd.Series(self.ci_g_per_kwh.to_numpy()[i0:i1], index=index,
                   name=self.ci_g_per_kwh.name)
    gen = None
    if self.generation_mwh is not None:
      gen = self.generation_mwh.iloc[i0:i1].set_axis(index)
    interp = tuple(t for t in self.interpolated_hours if start_ts <= t < end_ts)
    return dataclasses.replace(self, ci_g_per_kwh=ci, interpolated_hours=interp,
                               generation_mwh=gen)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready provenance (for summary.json): source, file, hash, range and repairs."""
    return {
        "source": self.source,
        "path": self.path,
        "sha256": self.sha256,
        "column": self.column,
        "region": self.region,
        "start": _iso(self.start),
        "end": _iso(self.end),
        "hours": len(self),
        "interpolated_hours": [_iso(t) for t in self.interpolated_hours],
        "merged_duplicate_hours": int(self.merged_duplicate_hours),
        "generation_columns": (None if self.generation_mwh is None
                               else [str(c) for c in self.generation_mwh.columns]),
    }


# ----------------------------------------------------------------------------------------------
# Public loaders.


def sniff_format(path: str | os.PathLike[str]) -> str:
  """Returns the trace format of ``path`` (one of `FORMATS`) from its header line.

  Raises:
    DataError: the header matches no known format.
    DataUnavailableError: the file does not exist.
  """
  path = _existing(path)
  header = _read_rows(path, _read_bytes(path)[0], header_only=True)[0]
  return _sniff(path, header)


def load_trace(
    path: str | os.PathLike[str],
    *,
    fmt: Format = "auto",
    column: str | None = None,
    max_gap_hours: int = 3,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    region: str | None = None,
) -> CarbonTrace:
  """Loads an hourly carbon-intensity trace from a CSV (or .csv.gz) file.

  Args:
    path: the file; gzip content is detected from its bytes, not its name.
    fmt: ``"auto"`` (sniff from the header) or one of `FORMATS`.
    column: value column. Electricity Maps: ``"lifecycle"`` (default; also ``"lca"``,
      ``"life cycle"``) or ``"direct"``. Other formats have one value column (``carbon_intensity``,
      ``carbon_intensity_avg``, ``value``); ``None`` or that name.
    max_gap_hours: longest run of missing hours filled by linear interpolation (>= 0).
    start: first hour to keep (tz-aware, on the hour), or ``None`` for the first hour with data.
    end: end of the window (exclusive), or ``None`` for after the last hour with data.
    region: grid zone to record; overrides what the file says (Electricity Maps ``Zone Id``,
      co2signal ``zone_name``, the file name of a benchmark file).

  Returns:
    The trace, hourly over ``[start, end)`` (or over the data's span).

  Raises:
    DataError: invalid content (see the module docstring), or the window is outside the data.
    DataUnavailableError: the file does not exist.
    ValueError: bad arguments.
  """
  path = _existing(path)
  if fmt != "auto" and fmt not in FORMATS:
    raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}.")
  _check_max_gap(max_gap_hours)
  start_ts = None if start is None else _utc_hour(start, "start")
  end_ts = None if end is None else _utc_hour(end, "end")
  if start_ts is not None and end_ts is not None and end_ts <= start_ts:
    raise ValueError(f"end {_iso(end_ts)} must be after start {_iso(start_ts)}.")
  raw, sha = _read_bytes(path)
  rows = _read_rows(path, raw)
  header = rows[0]
  detected = _sniff(path, header) if fmt == "auto" else fmt
  parse = {
      "electricitymaps": _parse_electricitymaps,
      "carbonx-benchmark": _parse_benchmark,
      "co2signal": _parse_co2signal,
      "plain": _parse_plain,
  }[detected]
  parsed = parse(path, header, rows[1:], column)
  if region is not None:
    parsed.region = region
  return _to_hourly_trace(path, sha, parsed, max_gap_hours=max_gap_hours, start=start_ts,
                          end=end_ts)


def load_electricitymaps_csv(path: str | os.PathLike[str], *, column: str = "lifecycle",
                             **kwargs: Any) -> CarbonTrace:
  """Loads an Electricity Maps portal CSV (``column``: ``"lifecycle"`` or ``"direct"``).

  ``kwargs`` are those of `load_trace` (``max_gap_hours``, ``start``, ``end``, ``region``).
  """
  return load_trace(path, fmt="electricitymaps", column=column, **kwargs)


def load_carbonx_benchmark_csv(path: str | os.PathLike[str], **kwargs: Any) -> CarbonTrace:
  """Loads a CarbonX benchmark-data CSV (``carbon_intensity`` plus ``generation_mwh``).

  The region is taken from the file name (e.g. ``DE.csv``) unless ``region=`` is given.
  ``kwargs`` are those of `load_trace`.
  """
  return load_trace(path, fmt="carbonx-benchmark", **kwargs)


def load_co2signal_csv(path: str | os.PathLike[str], **kwargs: Any) -> CarbonTrace:
  """Loads a CO2Scrap / co2signal scrape log (``carbon_intensity_avg``), merging repeated hours.

  ``kwargs`` are those of `load_trace`. Real scrape logs have gaps of many hours: pass
  ``start=``/``end=`` to load a gap-free stretch, or a larger ``max_gap_hours``.
  """
  return load_trace(path, fmt="co2signal", **kwargs)


def load_plain_csv(path: str | os.PathLike[str], **kwargs: Any) -> CarbonTrace:
  """Loads a ``time,value`` CSV whose timestamps carry a UTC offset or ``Z``.

  ``kwargs`` are those of `load_trace`.
  """
  return load_trace(path, fmt="plain", **kwargs)


def region_trace(
    region: str,
    *,
    dataset: Literal["forecasting", "benchmark", "electricitymaps"] = "forecasting",
    column: str | None = None,
    root: str | os.PathLike[str] | None = None,
    year: int | None = None,
    **kwargs: Any,
) -> CarbonTrace:
  """Loads the shared real trace of ``region``.

  Args:
    region: one of `KNOWN_REGIONS` (``"US-CAL-CISO"``, ``"DE"``, ``"US-MIDA-PJM"``).
    dataset: ``"forecasting"`` (CarbonX forecasting-data, Electricity Maps, 2021-2023),
      ``"benchmark"`` (CarbonX benchmark-data, 2020-2021) or ``"electricitymaps"`` (one
      Electricity Maps file per year; US-CAL-CISO only; needs ``year``).
    column: as in `load_trace` (default ``"lifecycle"`` for Electricity Maps data).
    root: folder holding ``carbon_intensity/``; default `paths.shared_data_dir()`.
    year: the year of the ``"electricitymaps"`` file (2021, 2022 or 2023).
    **kwargs: passed to `load_trace` (``max_gap_hours``, ``start``, ``end``).

  Raises:
    DataUnavailableError: the file is not where it should be.
    ValueError: unknown region or dataset, or ``year`` missing / given where it has no meaning.
  """
  if region not in KNOWN_REGIONS:
    raise ValueError(f"Unknown region {region!r}; known regions: {', '.join(KNOWN_REGIONS)}.")
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
  base = (Path(root).expanduser() if root is not None else paths.shared_data_dir())
  base = base / "carbon_intensity"
  if dataset == "electricitymaps":
    if year is None:
      raise ValueError("dataset='electricitymaps' holds one file per year "
                       f"{ELECTRICITYMAPS_YEARS}: pass year=.")
    rel = Path("electricitymaps") / f"{region}_{int(year)}_hourly.csv.gz"
  else:
    if year is not None:
      raise ValueError(f"year= only applies to dataset='electricitymaps', not {dataset!r}; use "
                       "start=/end= to pick a window.")
    sub = "forecasting-data" if dataset == "forecasting" else "benchmark-data"
    rel = Path("carbonx") / sub / f"{region}.csv"
  path = base / rel
  if not path.is_file():
    raise DataUnavailableError(
        f"{dataset} carbon trace for {region} not found at {path}. Set CENAS_SHARED_DATA (or pass "
        f"root=) to the folder that holds carbon_intensity/{rel.as_posix()}; see "
        "carbon_intensity/PROVENANCE.md for where the file comes from."
    )
  if dataset == "benchmark":
    return load_carbonx_benchmark_csv(path, column=column, **kwargs)
  return load_electricitymaps_csv(path, column=column or "lifecycle", **kwargs)


# ----------------------------------------------------------------------------------------------
# Reading and format-specific parsing.


@dataclasses.dataclass
class _Parsed:
  """Per-row content of a file, before hourly aggregation."""

  times: pd.DatetimeIndex  # UTC, one per data row.
  values: np.ndarray  # float64, one per data row.
  fmt: str
  column: str  # Header of the value column.
  column_key: str  # Short name used in `source`.
  region: str | None
  extra: pd.DataFrame | None = None  # Generation by source, one row per data row.


def _existing(path: str | os.PathLike[str]) -> Path:
  path = Path(path).expanduser()
  if not path.is_file():
    raise DataUnavailableError(f"Carbon-intensity trace {path} not found (or not a file).")
  return path


def _read_bytes(path: Path) -> tuple[bytes, str]:
  """Returns the decompressed bytes of ``path`` and the sha256 of its stored bytes."""
  data = path.read_bytes()
  sha = hashlib.sha256(data).hexdigest()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise DataError(f"{path}: gzip data is corrupt or truncated ({e}). Fetch the file "
                      "again.") from e
  return data, sha


def _read_rows(path: Path, data: bytes, *, header_only: bool = False) -> list[list[str]]:
  """Splits CSV bytes into rows; checks the field count of every row against the header."""
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e}); expected a CSV file.") from e
  if header_only:
    text = text.split("\n", 1)[0]
  try:
    rows = list(csv.reader(io.StringIO(text, newline="")))
  except csv.Error as e:
    raise DataError(f"{path}: malformed CSV ({e}).") from e
  if not rows or not any(f.strip() for f in rows[0]):
    raise DataError(f"{path}: empty file or empty header line; expected a CSV with a header.")
  if header_only:
    return rows
  n = len(rows[0])
  for i, row in enumerate(rows[1:], start=1):
    if len(row) != n:
      what = "is empty" if not row else f"has {len(row)} fields, the header has {n}"
      hint = (" (the file looks truncated: fetch it again)" if i == len(rows) - 1 and row
              else "")
      raise DataError(f"{path}: data row {i} {what}{hint}.")
  if len(rows) < 2:
    raise DataError(f"{path}: header only, no data rows.")
  return rows


def _sniff(path: Path, header: Sequence[str]) -> str:
  if header and header[0] == _EM_TIME:
    return "electricitymaps"
  if len(header) >= 3 and header[0] == "" and header[1] == _BENCH_TIME:
    return "carbonx-benchmark"
  if all(c in header for c in _CO2_COLUMNS):
    return "co2signal"
  if list(header) == _PLAIN_HEADER:
    return "plain"
  raise DataError(
      f"{path}: unrecognized header {','.join(header)[:200]!r}. Known formats: Electricity Maps "
      f"('{_EM_TIME}',...), CarbonX benchmark (',{_BENCH_TIME},{_BENCH_CI},...'), co2signal "
      f"({', '.join(_CO2_COLUMNS)} among the columns) and plain ('time,value')."
  )


def _wrong_header(path: Path, fmt: str, header: Sequence[str], expected: str) -> DataError:
  return DataError(f"{path}: wrong header for format {fmt!r}: {','.join(header)[:200]!r}; "
                   f"expected {expected}.")


def _column_values(rows: list[list[str]], j: int) -> list[str]:
  return [r[j] for r in rows]


def _parse_numbers(path: Path, strings: list[str], name: str, *,
                   nonnegative: bool = True) -> np.ndarray:
  """Parses a column of numbers; raises naming the first bad row."""
  try:  # Fast path; the slow one below only runs to find and describe bad rows.
    nums = np.asarray(strings, dtype=np.float64)
  except ValueError:
    nums = pd.to_numeric(pd.Series(np.asarray(strings, dtype=object)),
                         errors="coerce").to_numpy(dtype=np.float64)
  bad = ~np.isfinite(nums)
  if nonnegative:
    bad |= nums < 0
  if bad.any():
    i = int(np.argmax(bad))
    raw = strings[i]
    if raw.strip() == "" or raw.strip().lower() in ("nan", "na", "n/a", "null", "none"):
      why = f"missing value (NaN: {raw!r})"
    elif np.isnan(nums[i]):
      why = f"non-numeric value {raw!r}"
    elif not np.isfinite(nums[i]):
      why = f"infinite value {raw!r}"
    else:
      why = f"negative value {raw!r}"
    n_bad = int(bad.sum())
    more = f" ({n_bad - 1} more bad rows after it)" if n_bad > 1 else ""
    raise DataError(f"{path}: data row {i + 1}: {why} in column {name!r}{more}. Carbon "
                    "intensity must be a finite number >= 0 in every row.")
  return nums


def _parse_times(path: Path, strings: list[str], name: str, *, fmt: str | None = None,
                 need_offset: bool = False) -> pd.DatetimeIndex:
  """Parses timestamps to UTC; naive ones are UTC unless ``need_offset``. Raises naming the row."""
  ser = pd.Series(np.asarray(strings, dtype=object), dtype=object)
  if need_offset:
    has_offset = ser.str.strip().str.contains(_OFFSET_RE, regex=True).to_numpy(dtype=bool)
    if not has_offset.all():
      i = int(np.argmin(has_offset))
      raise DataError(
          f"{path}: data row {i + 1}: timestamp {strings[i]!r} in column {name!r} has no timezone; "
          "this format needs an explicit UTC offset or 'Z' (e.g. 2021-07-02T06:00:00Z).")
  try:
    times = pd.to_datetime(ser, format=fmt or "ISO8601", utc=True, errors="coerce")
  except (ValueError, TypeError) as e:  # Unusual: errors="coerce" normally returns NaT.
    raise DataError(f"{path}: unparseable timestamps in column {name!r} ({e}).") from e
  nat = times.isna().to_numpy()
  if nat.any():
    i = int(np.argmax(nat))
    expect = fmt or "ISO 8601"
    raise DataError(f"{path}: data row {i + 1}: cannot parse timestamp {strings[i]!r} in column "
                    f"{name!r} (expected {expect}).")
  return pd.DatetimeIndex(times)


def _check_sorted(path: Path, times: pd.DatetimeIndex | np.ndarray, name: str,
                  strings: list[str]) -> None:
  t = np.asarray(times.asi8 if isinstance(times, pd.DatetimeIndex) else times)
  if len(t) > 1:
    back = t[1:] < t[:-1]
    if back.any():
      i = int(np.argmax(back)) + 1  # 0-based index of the row that steps back.
      raise DataError(
          f"{path}: data row {i + 1}: {name} {strings[i]!r} is earlier than row {i}'s "
          f"{strings[i - 1]!r}; rows must be in time order. Sort the file by {name!r}.")


def _single_region(path: Path, strings: list[str], name: str) -> str | None:
  vals = pd.unique(np.asarray(strings, dtype=object))
  vals = [v for v in vals if v != ""]
  if len(vals) > 1:
    raise DataError(f"{path}: column {name!r} holds several zones ({', '.join(map(str, vals[:5]))}"
                    "); a trace file must hold one zone.")
  return str(vals[0]) if vals else None


def _parse_electricitymaps(path: Path, header: list[str], rows: list[list[str]],
                           column: str | None) -> _Parsed:
  expected = (f"'{_EM_TIME}' first and columns 'Carbon Intensity gCO₂eq/kWh (direct)' and "
              "'... (LCA)' or '... (Life cycle)'")
  if not header or header[0] != _EM_TIME:
    raise _wrong_header(path, "electricitymaps", header, expected)
  ci_cols: dict[str, int] = {}
  for j, h in enumerate(header):
    m = _EM_CI_RE.match(h.strip())
    if m:
      ci_cols[_COLUMN_ALIASES[m.group(1).lower()]] = j
  if set(ci_cols) != {"direct", "lifecycle"}:
    raise _wrong_header(path, "electricitymaps", header, expected)
  key = _COLUMN_ALIASES.get((column or "lifecycle").strip().lower())
  if key is None:
    names = {header[j]: k for k, j in ci_cols.items()}
    key = names.get(column)
  if key is None:
    raise ValueError(f"{path}: column must be 'lifecycle' (or 'lca', 'life cycle') or 'direct' "
                     f"for Electricity Maps files, got {column!r}.")
  j = ci_cols[key]
  time_strings = _column_values(rows, 0)
  times = _parse_times(path, time_strings, _EM_TIME)
  _check_sorted(path, times, _EM_TIME, time_strings)
  values = _parse_numbers(path, _column_values(rows, j), header[j])
  zone_j = next((k for k, h in enumerate(header) if _EM_ZONE_RE.match(h.strip())), None)
  region = None if zone_j is None else _single_region(path, _column_values(rows, zone_j),
                                                      header[zone_j])
  return _Parsed(times, values, "electricitymaps", header[j], key, region)


def _parse_benchmark(path: Path, header: list[str], rows: list[list[str]],
                     column: str | None) -> _Parsed:
  if len(header) < 3 or header[0] != "" or header[1] != _BENCH_TIME or header[2] != _BENCH_CI:
    raise _wrong_header(path, "carbonx-benchmark", header,
                        f"',{_BENCH_TIME},{_BENCH_CI},<generation columns...>'")
  if column not in (None, _BENCH_CI):
    raise ValueError(f"{path}: CarbonX benchmark files have one value column, {_BENCH_CI!r}; got "
                     f"column={column!r}.")
  time_strings = _column_values(rows, 1)
  first = time_strings[0].strip()
  fmt = "%m/%d/%Y %H:%M:%S" if _US_DATE_RE.match(first) else None
  times = _parse_times(path, time_strings, _BENCH_TIME, fmt=fmt)
  _check_sorted(path, times, _BENCH_TIME, time_strings)
  values = _parse_numbers(path, _column_values(rows, 2), _BENCH_CI)
  gen_cols = header[3:]
  if len(set(gen_cols)) != len(gen_cols) or any(not c.strip() for c in gen_cols):
    raise _wrong_header(path, "carbonx-benchmark", header, "unique, non-empty generation columns")
  gen = {c: _parse_numbers(path, _column_values(rows, 3 + k), c, nonnegative=False)
         for k, c in enumerate(gen_cols)}
  extra = pd.DataFrame(gen) if gen else None
  stem = path.name.split(".")[0]
  region = stem if _REGION_RE.match(stem) else None
  return _Parsed(times, values, "carbonx-benchmark", _BENCH_CI, _BENCH_CI, region, extra)


def _parse_co2signal(path: Path, header: list[str], rows: list[list[str]],
                     column: str | None) -> _Parsed:
  if not all(c in header for c in _CO2_COLUMNS):
    raise _wrong_header(path, "co2signal", header,
                        f"columns {', '.join(_CO2_COLUMNS)} (and optionally status, zone_name, "
                        "carbon_intensity_unit)")
  if column not in (None, "carbon_intensity_avg"):
    raise ValueError(f"{path}: co2signal files have one value column, 'carbon_intensity_avg'; got "
                     f"column={column!r}.")
  col = {h: j for j, h in enumerate(header)}
  scrape = _column_values(rows, col["timestamp"])
  scrape_s = _parse_numbers(path, scrape, "timestamp")
  _check_sorted(path, scrape_s, "timestamp", scrape)
  if "status" in col:
    status = np.asarray(_column_values(rows, col["status"]), dtype=object)
    bad = status != "ok"
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(f"{path}: data row {i + 1}: status {status[i]!r} (expected 'ok'); drop "
                      "failed scrapes from the file.")
  if "carbon_intensity_unit" in col:
    unit = np.asarray(_column_values(rows, col["carbon_intensity_unit"]), dtype=object)
    bad = unit != _CO2_UNIT
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(f"{path}: data row {i + 1}: unit {unit[i]!r}, expected {_CO2_UNIT!r}.")
  times = _parse_times(path, _column_values(rows, col["zone_datetime"]), "zone_datetime",
                       need_offset=True)
  values = _parse_numbers(path, _column_values(rows, col["carbon_intensity_avg"]),
                          "carbon_intensity_avg")
  region = (_single_region(path, _column_values(rows, col["zone_name"]), "zone_name")
            if "zone_name" in col else None)
  return _Parsed(times, values, "co2signal", "carbon_intensity_avg", "carbon_intensity_avg",
                 region)


def _parse_plain(path: Path, header: list[str], rows: list[list[str]],
                 column: str | None) -> _Parsed:
  if list(header) != _PLAIN_HEADER:
    raise _wrong_header(path, "plain", header, "'time,value'")
  if column not in (None, "value"):
    raise ValueError(f"{path}: plain files have one value column, 'value'; got column={column!r}.")
  time_strings = _column_values(rows, 0)
  times = _parse_times(path, time_strings, "time", need_offset=True)
  _check_sorted(path, times, "time", time_strings)
  values = _parse_numbers(path, _column_values(rows, 1), "value")
  return _Parsed(times, values, "plain", "value", "value", None)


# ----------------------------------------------------------------------------------------------
# Hourly aggregation, windowing and gap filling.


def _to_hourly_trace(path: Path, sha: str, p: _Parsed, *, max_gap_hours: int,
                     start: pd.Timestamp | None, end: pd.Timestamp | None) -> CarbonTrace:
  n = len(p.values)
  row = np.arange(1, n + 1)
  hour = p.times.floor("h")
  frame = pd.DataFrame({"ci": p.values, "row": row}, index=hour)
  if p.extra is not None:
    frame = pd.concat([frame, p.extra.set_axis(hour)], axis=1)
  grouped = frame.groupby(level=0, sort=True)
  counts = grouped.size()
  merged = grouped.mean(numeric_only=True)
  first_row = grouped["row"].min()
  last_row = grouped["row"].max()
  data_start, data_end = merged.index[0], merged.index[-1] + _HOUR
  lo = data_start if start is None else start
  hi = data_end if end is None else end
  if lo < data_start or hi > data_end or hi <= lo:
    raise DataError(
        f"{path}: requested hours [{_iso(lo)}, {_iso(hi)}) are not inside the file's data, which "
        f"covers [{_iso(data_start)}, {_iso(data_end)}). Pick start=/end= inside it.")
  grid = pd.date_range(data_start, data_end - _HOUR, freq="h", tz="UTC")
  full = merged.reindex(grid)
  ci = full["ci"].to_numpy(dtype=np.float64)
  missing = np.isnan(ci)
  fill = np.zeros(len(grid), dtype=bool)
  long_runs: list[tuple[int, int]] = []
  for a, b in _runs(missing):  # Missing positions [a, b); data at a-1 and b (interior runs).
    if b - a <= max_gap_hours:
      fill[a:b] = True
    else:
      long_runs.append((a, b))
  w0 = int((lo - data_start) // _HOUR)
  w1 = int((hi - data_start) // _HOUR)
  for a, b in long_runs:
    if a < w1 and b > w0:
      before, after = grid[a - 1], grid[b]
      raise DataError(
          f"{path}: {b - a} missing hours from {_iso(grid[a])} to {_iso(grid[b - 1])} (more than "
          f"max_gap_hours={max_gap_hours}), between data row {int(last_row[before])} "
          f"({_iso(before)}) and data row {int(first_row[after])} ({_iso(after)}). Pass start=/end= "
          "to load a gap-free stretch, or a larger max_gap_hours to interpolate it.")
  if fill.any():
    pos = np.arange(len(grid))
    have = ~missing
    full = full.copy()
    for name in full.columns:
      if name == "row":
        continue
      col = full[name].to_numpy(dtype=np.float64, copy=True)
      col[fill] = np.interp(pos[fill], pos[have], col[have])
      full[name] = col
  win = full.iloc[w0:w1]
  index = pd.DatetimeIndex(win.index, freq="h")
  ci_series = pd.Series(win["ci"].to_numpy(dtype=np.float64), index=index,
                        name="ci_g_per_kwh")
  interpolated = tuple(grid[np.flatnonzero(fill[w0:w1]) + w0])
  if interpolated:
    _LOG.warning("%s: interpolated %d missing hour(s) (gaps of <= %d h), first at %s.", path,
                 len(interpolated), max_gap_hours, _iso(interpolated[0]))
  counts_win = counts[(counts.index >= lo) & (counts.index < hi)]
  n_merged = int((counts_win > 1).sum())
  gen = None
  if p.extra is not None:
    gen = pd.DataFrame({c: win[c].to_numpy(dtype=np.float64) for c in p.extra.columns},
                       index=index)
  region = p.region
  return CarbonTrace(
      ci_g_per_kwh=ci_series,
      source=f"{p.fmt}:{region or 'unknown'}:{p.column_key}",
      path=str(path),
      sha256=sha,
      column=p.column,
      region=region,
      interpolated_hours=interpolated,
      merged_duplicate_hours=n_merged,
      generation_mwh=gen,
  )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """Half-open ``[a, b)`` index runs where ``mask`` is True."""
  if not mask.any():
    return []
  d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _check_max_gap(max_gap_hours: int) -> None:
  if (isinstance(max_gap_hours, bool) or not isinstance(max_gap_hours, (int, np.integer))
      or max_gap_hours < 0):
    raise ValueError(f"max_gap_hours must be an integer >= 0, got {max_gap_hours!r}.")


def _utc_hour(value: TimeLike, name: str) -> pd.Timestamp:
  """A tz-aware time on the hour, converted to UTC; naive or off-hour values raise ValueError."""
  try:
    ts = pd.Timestamp(value)
  except (ValueError, TypeError) as e:
    raise ValueError(f"{name}={value!r} is not a time ({e}).") from e
  if ts is pd.NaT:
    raise ValueError(f"{name}={value!r} is not a time.")
  if ts.tzinfo is None:
    raise ValueError(f"{name}={value!r} has no timezone; pass a UTC time such as "
                     "'2021-07-02T06:00Z' or a tz-aware timestamp.")
  ts = ts.tz_convert("UTC")
  if ts != ts.floor("h"):
    raise ValueError(f"{name}={value!r} is not on the hour; traces are hourly.")
  return ts


def _iso(ts: pd.Timestamp) -> str:
  return ts.strftime("%Y-%m-%dT%H:%MZ")
