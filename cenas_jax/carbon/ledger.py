"""The carbon ledger: one entry for every block of GPU time a search charges.

Each entry records when a block of work started (``t_start_s``, seconds since the search started),
how long it ran (``duration_s``), on how many GPUs, what kind of work it was (``"sampling"``,
``"training"``, ``"idle"``, ``"switch"``, ...), the per-GPU power (W), the IT energy (J), the carbon
intensity applied (gCO2eq/kWh), the PUE and the resulting carbon (g), plus an optional tag and job id.

The API is functional: :func:`ledger_add` returns a new :class:`Ledger` and never changes the one it
was given. Storage is columnar NumPy arrays, shared between a ledger and the ledgers derived from it:

- A :class:`Ledger` is a frozen view ``(buffer, n)`` that only ever reads rows ``[0, n)``.
- Rows ``< buffer.used`` are never written again. Appending to a ledger that is the newest view of
  its buffer (``n == buffer.used``) writes row ``n`` in place and bumps ``used``; capacity doubles when
  full (the arrays are copied), so a chain of appends costs amortized O(1) per entry.
- Appending to an older view (``n < buffer.used``, i.e. someone already appended to it) copies its
  ``n`` rows into a new buffer first, so two branches never see each other's entries.

Column accessors return read-only views. Appends to the same buffer are serialized by a lock, so
sharing a ledger across threads is safe (if slower when branches diverge).

Accounting policies pick which kinds count: ``"full"`` counts every kind; ``"paper"`` counts only
``"training"`` (the CE-NAS code charges no carbon for one-shot sampling). A policy may also be any
collection of kind names.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

from cenas_jax.carbon.accounting import J_PER_KWH

# Kinds of GPU time, in the order the simulated pool charges them within an hour (sums over an hour
# run in this order). Any other non-empty string is a valid kind too.
TRAINING, SAMPLING, IDLE, SWITCH = "training", "sampling", "idle", "switch"
KINDS = (TRAINING, SAMPLING, IDLE, SWITCH)
# Accounting policies by name: the kinds each counts (None: every kind).
POLICIES: Mapping[str, frozenset[str] | None] = {
    "paper": frozenset({TRAINING}),  # the CE-NAS code charges training only
    "full": None,  # every kind
}
_MAX_GPU_ID = 63  # gpu_ids are stored as a uint64 bit mask.

_FLOAT_COLUMNS = ("t_start_s", "duration_s", "power_w", "energy_j", "ci_g_per_kwh", "pue", "carbon_g")
_INT_COLUMNS = ("n_gpus", "job_id")
_CODE_COLUMNS = ("kind", "tag")  # stored as int32 codes into an append-only vocabulary.
_COLUMNS = ("t_start_s", "duration_s", "n_gpus", "gpu_mask", "kind", "power_w", "energy_j",
            "ci_g_per_kwh", "pue", "carbon_g", "tag", "job_id")
_DTYPES = {
    **{c: np.float64 for c in _FLOAT_COLUMNS},
    "n_gpus": np.int64,
    "job_id": np.int64,
    "gpu_mask": np.uint64,
    "kind": np.int32,
    "tag": np.int32,
}
_INITIAL_CAPACITY = 64


class _Buffer:
  """Growable column store shared by ledger views. Rows below ``used`` are immutable."""

  def __init__(self, capacity: int, kinds: list[str] | None = None, tags: list[str] | None = None):
    self.cols = {c: np.zeros(capacity, _DTYPES[c]) for c in _COLUMNS}
    self.used = 0
    self.kinds: list[str] = list(kinds or [])
    self.tags: list[str] = list(tags or [""])
    self.kind_codes = {k: i for i, k in enumerate(self.kinds)}
    self.tag_codes = {t: i for i, t in enumerate(self.tags)}
    self.lock = threading.Lock()

  @property
  def capacity(self) -> int:
    return int(self.cols["t_start_s"].shape[0])

  def grow(self, min_capacity: int) -> None:
    new_cap = max(min_capacity, 2 * self.capacity, _INITIAL_CAPACITY)
    for c, arr in self.cols.items():
      new = np.zeros(new_cap, arr.dtype)
      new[:self.used] = arr[:self.used]
      self.cols[c] = new

  def code(self, vocab: list[str], codes: dict[str, int], name: str) -> int:
    i = codes.get(name)
    if i is None:
      i = len(vocab)
      vocab.append(name)
      codes[name] = i
    return i


@dataclasses.dataclass(frozen=True)
class Totals:
  """Sums over a set of ledger entries.

  Attributes:
    carbon_g: grams CO2eq (facility energy, i.e. PUE applied).
    energy_j: IT energy in joules (before PUE).
    gpu_seconds: GPU-seconds (``n_gpus * duration_s`` summed).
    n_entries: number of entries summed.
  """

  carbon_g: float
  energy_j: float
  gpu_seconds: float
  n_entries: int


@dataclasses.dataclass(frozen=True, eq=False)
class Ledger:
  """An immutable view of the first ``n`` entries of a shared column buffer (see module docstring)."""

  _buf: _Buffer
  n: int

  def __len__(self) -> int:
    return self.n

  def column(self, name: str) -> np.ndarray:
    """Read-only view of a raw column (``kind``/``tag`` as int codes, ``gpu_mask`` as uint64)."""
    if name not in self._buf.cols:
      raise KeyError(f"Unknown ledger column {name!r}; columns are {_COLUMNS}.")
    view = self._buf.cols[name][:self.n]
    view.flags.writeable = False
    return view

  @property
  def kinds(self) -> np.ndarray:
    """Kind of each entry, as an object array of str."""
    vocab = np.array(self._buf.kinds, dtype=object)
    return vocab[self.column("kind")] if self.n else np.zeros(0, dtype=object)

  @property
  def tags(self) -> np.ndarray:
    """Tag of each entry (``""`` when none), as an object array of str."""
    vocab = np.array(self._buf.tags, dtype=object)
    return vocab[self.column("tag")] if self.n else np.zeros(0, dtype=object)

  def gpu_ids(self, i: int) -> tuple[int, ...] | None:
    """GPU ids of entry ``i``, or ``None`` when the entry was added with ``n_gpus`` only."""
    if not 0 <= i < self.n:
      raise IndexError(f"Entry {i} is out of range for a ledger of {self.n} entries.")
    mask = int(self._buf.cols["gpu_mask"][i])
    return tuple(b for b in range(_MAX_GPU_ID + 1) if mask >> b & 1) if mask else None

  def __getattr__(self, name: str) -> np.ndarray:
    if name in _FLOAT_COLUMNS or name in _INT_COLUMNS:
      return self.column(name)
    raise AttributeError(name)

  def to_dict(self) -> dict[str, Any]:
    """JSON-safe dict (see :func:`to_dict`)."""
    return to_dict(self)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "Ledger":
    """Inverse of :meth:`to_dict` (see :func:`from_dict`)."""
    return from_dict(data)

  def to_dataframe(self):
    """One row per entry (see :func:`to_dataframe`)."""
    return to_dataframe(self)

  def __copy__(self) -> "Ledger":
    return self  # immutable view

  def __deepcopy__(self, memo: dict[int, Any]) -> "Ledger":
    return self

  def __reduce__(self):
    return (from_dict, (to_dict(self),))

  def __repr__(self) -> str:
    t = totals(self)
    return f"Ledger(n={self.n}, carbon_g={t.carbon_g:.6g}, energy_j={t.energy_j:.6g})"


def empty_ledger(capacity: int = _INITIAL_CAPACITY) -> Ledger:
  """A ledger with no entries (``capacity`` rows preallocated)."""
  return Ledger(_Buffer(max(int(capacity), 1), list(KINDS)), 0)


def _finite(name: str, value: Any, *, minimum: float | None = 0.0) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"Ledger entry {name} must be a number, got {value!r}.") from None
  if not math.isfinite(v) or (minimum is not None and v < minimum):
    bound = "" if minimum is None else f" and >= {minimum}"
    raise ValueError(f"Ledger entry {name} must be finite{bound}, got {value!r}.")
  return v


def _gpu_fields(n_gpus: int | None, gpu_ids: Iterable[int] | None) -> tuple[int, int]:
  if gpu_ids is None:
    if n_gpus is None:
      raise ValueError("Ledger entry needs n_gpus or gpu_ids.")
    if isinstance(n_gpus, bool) or int(n_gpus) != n_gpus or n_gpus < 0:
      raise ValueError(f"Ledger entry n_gpus must be an integer >= 0, got {n_gpus!r}.")
    return int(n_gpus), 0
  ids = sorted({int(g) for g in gpu_ids})
  if not ids or ids[0] < 0 or ids[-1] > _MAX_GPU_ID:
    raise ValueError(
        f"Ledger entry gpu_ids must be a non-empty set of ids in [0, {_MAX_GPU_ID}], got {gpu_ids!r}; "
        "for larger pools pass n_gpus instead.")
  if n_gpus is not None and int(n_gpus) != len(ids):
    raise ValueError(f"Ledger entry n_gpus={n_gpus} disagrees with {len(ids)} gpu_ids {ids}.")
  mask = 0
  for g in ids:
    mask |= 1 << g
  return len(ids), mask


def ledger_add(ledger: Ledger, *, t_start_s: float, duration_s: float, kind: str,
               ci_g_per_kwh: float, n_gpus: int | None = None,
               gpu_ids: Iterable[int] | None = None, power_w: float | None = None,
               energy_j: float | None = None, pue: float = 1.0, tag: str = "",
               job_id: int = -1) -> Ledger:
  """Returns a new ledger with one more entry (``ledger`` itself is unchanged).

  Give ``power_w`` (per-GPU average W; then ``energy_j = power_w * n_gpus * duration_s``), or
  ``energy_j`` (IT joules, e.g. measured; then ``power_w`` is derived per GPU), or both (kept as given;
  carbon uses ``energy_j``). Carbon is ``energy_j * pue / 3.6e6 * ci_g_per_kwh``.

  Args:
    ledger: the ledger to extend.
    t_start_s: start of the work, seconds since the search started (may be negative: warm-up).
    duration_s: wall-clock seconds (>= 0).
    kind: kind of work, a non-empty string (``"sampling"``, ``"training"``, ``"idle"``, ``"switch"``...).
    ci_g_per_kwh: carbon intensity applied to the whole entry (gCO2eq/kWh, >= 0); use
      ``HourlyCarbonIntegrator.mean_ci_g_per_kwh`` for entries that span hours.
    n_gpus: number of GPUs charged (>= 0).
    gpu_ids: ids of the GPUs charged (ids 0..63); sets ``n_gpus``.
    power_w: average power per GPU in watts (>= 0).
    energy_j: IT energy of the whole entry in joules (>= 0).
    pue: power usage effectiveness (>= 0).
    tag: free-form label (e.g. an architecture string or phase name).
    job_id: integer job id (``-1``: none).

  Returns:
    A new :class:`Ledger` with ``len(ledger) + 1`` entries.

  Raises:
    ValueError: a negative or non-finite number, an empty kind, or inconsistent GPU fields.
  """
  duration = _finite("duration_s", duration_s)
  t0 = _finite("t_start_s", t_start_s, minimum=None)
  ci = _finite("ci_g_per_kwh", ci_g_per_kwh)
  pue_v = _finite("pue", pue)
  gpus, mask = _gpu_fields(n_gpus, gpu_ids)
  if not isinstance(kind, str) or not kind:
    raise ValueError(f"Ledger entry kind must be a non-empty string, got {kind!r}.")
  if not isinstance(tag, str):
    raise ValueError(f"Ledger entry tag must be a string, got {tag!r}.")
  gpu_s = gpus * duration
  if power_w is None and energy_j is None:
    raise ValueError("Ledger entry needs power_w (W per GPU) or energy_j (J).")
  if energy_j is None:
    p = _finite("power_w", power_w)
    e = p * gpu_s
  else:
    e = _finite("energy_j", energy_j)
    if power_w is not None:
      p = _finite("power_w", power_w)
    elif gpu_s > 0:
      p = e / gpu_s
    elif e == 0:
      p = 0.0
    else:
      raise ValueError(
          f"Ledger entry has energy_j={e} J but zero GPU-seconds; pass power_w too or a duration > 0.")
  carbon = e * pue_v / J_PER_KWH * ci

  buf = ledger._buf  # pylint: disable=protected-access
  with buf.lock:
    if ledger.n != buf.used:  # an older view: branch off into a private copy
      new = _Buffer(max(2 * ledger.n, _INITIAL_CAPACITY), buf.kinds, buf.tags)
      for c in _COLUMNS:
        new.cols[c][:ledger.n] = buf.cols[c][:ledger.n]
      new.used = ledger.n
      buf = new
    i = buf.used
    if i == buf.capacity:
      buf.grow(i + 1)
    cols = buf.cols
    cols["t_start_s"][i] = t0
    cols["duration_s"][i] = duration
    cols["n_gpus"][i] = gpus
    cols["gpu_mask"][i] = mask
    cols["kind"][i] = buf.code(buf.kinds, buf.kind_codes, kind)
    cols["power_w"][i] = p
    cols["energy_j"][i] = e
    cols["ci_g_per_kwh"][i] = ci
    cols["pue"][i] = pue_v
    cols["carbon_g"][i] = carbon
    cols["tag"][i] = buf.code(buf.tags, buf.tag_codes, tag)
    cols["job_id"][i] = int(job_id)
    buf.used = i + 1
  return Ledger(buf, i + 1)


def _policy_kinds(policy: str | Collection[str] | None) -> frozenset[str] | None:
  if policy is None:
    return None
  if isinstance(policy, str):
    if policy not in POLICIES:
      raise ValueError(
          f"Unknown accounting policy {policy!r}; use one of {sorted(POLICIES)} or a set of kinds.")
    return POLICIES[policy]
  return frozenset(policy)


def policy_mask(ledger: Ledger, policy: str | Collection[str] | None = "full") -> np.ndarray:
  """Boolean mask of the entries a policy counts (``"full"``, ``"paper"`` or a set of kinds)."""
  kinds = _policy_kinds(policy)
  if kinds is None:
    return np.ones(ledger.n, dtype=bool)
  codes = [i for i, k in enumerate(ledger._buf.kinds) if k in kinds]  # pylint: disable=protected-access
  return np.isin(ledger.column("kind"), codes)


def totals(ledger: Ledger, policy: str | Collection[str] | None = "full") -> Totals:
  """Sums of carbon, energy and GPU-seconds over the entries ``policy`` counts."""
  m = policy_mask(ledger, policy)
  return Totals(
      carbon_g=float(ledger.column("carbon_g")[m].sum()),
      energy_j=float(ledger.column("energy_j")[m].sum()),
      gpu_seconds=float((ledger.column("n_gpus")[m] * ledger.column("duration_s")[m]).sum()),
      n_entries=int(m.sum()),
  )


def totals_by_kind(ledger: Ledger) -> dict[str, Totals]:
  """Totals per kind, for every kind present in the ledger (in first-seen vocabulary order)."""
  present = set(np.unique(ledger.column("kind")).tolist())
  return {k: totals(ledger, {k}) for i, k in enumerate(ledger._buf.kinds) if i in present}  # pylint: disable=protected-access


def cumulative_carbon_g(ledger: Ledger, times_s: Any = None, *,
                        policy: str | Collection[str] | None = "full"):
  """Carbon charged up to given times, each entry spread evenly over its duration.

  Args:
    ledger: the ledger.
    times_s: times (s since the search started) at which to evaluate. ``None``: return the step
      curve at entry end times instead.
    policy: which kinds count.

  Returns:
    With ``times_s``: float64 array of cumulative grams at those times (an entry ``[t0, t0 + d]``
    contributes ``carbon * clip((t - t0) / d, 0, 1)``; a zero-length entry counts from ``t0`` on).
    Without: ``(t_end_s, carbon_g)``: entry end times sorted ascending and the running total of
    carbon of entries ending at or before each.
  """
  m = policy_mask(ledger, policy)
  t0 = ledger.column("t_start_s")[m]
  d = ledger.column("duration_s")[m]
  c = ledger.column("carbon_g")[m]
  if times_s is None:
    t_end = t0 + d
    order = np.argsort(t_end, kind="stable")
    return t_end[order], np.cumsum(c[order])
  t = np.asarray(times_s, np.float64)
  # The cumulative curve is piecewise linear: rate c/d switches on at t0 and off at t0 + d, and a
  # zero-length entry is a jump at t0. Evaluate it at the breakpoints, then interpolate.
  pos = d > 0
  rate = np.where(pos, c / np.where(pos, d, 1.0), 0.0)
  bp = np.concatenate([t0, t0 + d])
  d_rate = np.concatenate([rate, -rate])
  jump = np.concatenate([np.where(pos, 0.0, c), np.zeros_like(c)])
  order = np.argsort(bp, kind="stable")
  bp, d_rate, jump = bp[order], d_rate[order], jump[order]
  rate_after = np.cumsum(d_rate)
  seg = np.diff(bp, prepend=bp[:1] if bp.size else bp) * np.concatenate([[0.0], rate_after[:-1]])
  value_after = np.cumsum(seg + jump)
  i = np.searchsorted(bp, t, side="right") - 1
  ic = np.clip(i, 0, max(bp.size - 1, 0))
  if bp.size == 0:
    return np.zeros_like(t)
  out = value_after[ic] + rate_after[ic] * (t - bp[ic])
  out = np.where(i < 0, 0.0, out)
  return np.clip(out, 0.0, None)  # removes -1e-17 float residue before the first entry


def to_dict(ledger: Ledger) -> dict[str, Any]:
  """JSON-safe dict of the ledger (for checkpoints); :func:`from_dict` inverts it exactly."""
  out: dict[str, Any] = {"format": 1, "n": ledger.n, "kinds": list(ledger._buf.kinds),  # pylint: disable=protected-access
                         "tags": list(ledger._buf.tags)}  # pylint: disable=protected-access
  for c in _COLUMNS:
    out[c] = ledger.column(c).tolist()
  return out


def from_dict(data: Mapping[str, Any]) -> Ledger:
  """Rebuilds a ledger from :func:`to_dict` output, checking its shape and values.

  Raises:
    ValueError: the dict is not a ledger of a known format, columns are missing or of the wrong
      length, or values are invalid (negative durations, codes outside the vocabulary, ...).
  """
  if not isinstance(data, Mapping) or data.get("format") != 1:
    raise ValueError("Not a ledger dict (expected the output of ledger.to_dict with format 1).")
  n = int(data["n"])
  missing = [c for c in _COLUMNS if c not in data]
  if missing:
    raise ValueError(f"Ledger dict is missing columns {missing}.")
  buf = _Buffer(max(n, _INITIAL_CAPACITY), list(data["kinds"]), list(data["tags"]))
  for c in _COLUMNS:
    col = np.asarray(data[c], dtype=_DTYPES[c])
    if col.shape != (n,):
      raise ValueError(f"Ledger dict column {c!r} has shape {col.shape}, expected ({n},).")
    buf.cols[c][:n] = col
  cols = {c: buf.cols[c][:n] for c in _COLUMNS}
  for c in ("duration_s", "power_w", "energy_j", "ci_g_per_kwh", "pue", "carbon_g"):
    if (~np.isfinite(cols[c]) | (cols[c] < 0)).any():
      raise ValueError(f"Ledger dict column {c!r} has negative or non-finite values.")
  if not np.isfinite(cols["t_start_s"]).all() or (cols["n_gpus"] < 0).any():
    raise ValueError("Ledger dict has non-finite t_start_s or negative n_gpus.")
  for c, vocab in (("kind", buf.kinds), ("tag", buf.tags)):
    if n and ((cols[c] < 0) | (cols[c] >= len(vocab))).any():
      raise ValueError(f"Ledger dict column {c!r} has codes outside its vocabulary.")
  buf.used = n
  return Ledger(buf, n)


def to_dataframe(ledger: Ledger):
  """A pandas DataFrame with one row per entry (``kind``/``tag`` as strings, ``gpu_ids`` as tuples)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  frame = {c: ledger.column(c).copy() for c in _COLUMNS if c not in ("kind", "tag", "gpu_mask")}
  frame["kind"] = ledger.kinds
  frame["tag"] = ledger.tags
  frame["gpu_ids"] = [ledger.gpu_ids(i) for i in range(ledger.n)]
  order = ["t_start_s", "duration_s", "n_gpus", "gpu_ids", "kind", "power_w", "energy_j",
           "ci_g_per_kwh", "pue", "carbon_g", "tag", "job_id"]
  return pd.DataFrame({c: frame[c] for c in order})
