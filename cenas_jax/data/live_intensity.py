"""Carbon intensity of a grid zone right now, from the Electricity Maps API (v3).

``ElectricityMapsClient(zone="DE").latest()`` asks
``GET https://api.electricitymap.org/v3/carbon-intensity/latest?zone=DE`` with the token of the
environment variable ``ELECTRICITYMAPS_TOKEN`` (or ``token=``) in the ``auth-token`` header, and
returns a ``LiveIntensity`` (gCO2eq/kWh, the hour it is for, whether the value is estimated). The
HTTP call is one injectable function (``fetch(url, headers, timeout_s) -> (status, body bytes)``),
so tests replay a stored response (tests/data/fixtures, in the documented v3 format) and no test
needs the network.

Errors name what to do: no token (set ``ELECTRICITYMAPS_TOKEN``), a refused token (HTTP 401/403),
an unknown zone (HTTP 400/404), an unreachable API, or a response without ``carbonIntensity``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from cenas_jax.errors import CenasError, DataError

TOKEN_ENV = "ELECTRICITYMAPS_TOKEN"
API_ROOT = "https://api.electricitymap.org/v3"

Fetch = Callable[[str, Mapping[str, str], float], tuple[int, bytes]]


class LiveIntensityError(CenasError):
  """The live carbon intensity cannot be read (no token, refused token, unknown zone, offline)."""


@dataclasses.dataclass(frozen=True)
class LiveIntensity:
  """One reading of a zone's carbon intensity.

  Attributes:
    zone: the Electricity Maps zone (e.g. ``"DE"``, ``"US-CAL-CISO"``).
    ci_g_per_kwh: carbon intensity, gCO2eq/kWh.
    time_utc: the hour the value is for (UTC).
    emission_factor_type: ``"lifecycle"`` or ``"direct"`` (as the API says).
    is_estimated: the API estimated the value (recent hours usually are).
    source: a label for provenance, e.g. ``"electricitymaps-live:DE:lifecycle"``.
  """

  zone: str
  ci_g_per_kwh: float
  time_utc: pd.Timestamp
  emission_factor_type: str
  is_estimated: bool
  source: str


def urllib_fetch(url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
  """The real HTTP GET: ``(status, body)``; an HTTP error status is returned, not raised."""
  request = urllib.request.Request(url, headers=dict(headers), method="GET")
  try:
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (https only)
      return int(response.status), response.read()
  except urllib.error.HTTPError as e:
    return int(e.code), e.read() or b""


@dataclasses.dataclass
class ElectricityMapsClient:
  """A client of the Electricity Maps carbon-intensity API for one zone.

  Attributes:
    zone: the zone to read.
    token: the API token; default: the ``ELECTRICITYMAPS_TOKEN`` environment variable.
    fetch: the HTTP GET (``urllib_fetch``; tests pass a replay of a recorded response).
    timeout_s: seconds before a request is given up.
    api_root: the API's base URL.
  """

  zone: str
  token: str | None = None
  fetch: Fetch = urllib_fetch
  timeout_s: float = 10.0
  api_root: str = API_ROOT

  def __post_init__(self):
    if self.token is None:
      self.token = os.environ.get(TOKEN_ENV) or None
    if not self.zone:
      raise LiveIntensityError("Electricity Maps needs a zone, e.g. 'DE' or 'US-CAL-CISO'.")

  @property
  def available(self) -> bool:
    """Whether a token is set (nothing is asked from the network)."""
    return bool(self.token)

  def latest(self) -> LiveIntensity:
    """The zone's latest carbon intensity.

    Raises:
      LiveIntensityError: no token, a refused token, an unknown zone or an unreachable API.
      DataError: the response is not the API's JSON (names the URL).
    """
    if not self.token:
      raise LiveIntensityError(f"no Electricity Maps token: set {TOKEN_ENV} (an API token from "
                               "https://api-portal.electricitymaps.com) or pass token=.")
    url = f"{self.api_root}/carbon-intensity/latest?{urllib.parse.urlencode({'zone': self.zone})}"
    try:
      status, body = self.fetch(url, {"auth-token": self.token}, self.timeout_s)
    except (OSError, urllib.error.URLError) as e:
      raise LiveIntensityError(f"{url}: cannot reach Electricity Maps ({e}); check the network or "
                               "use a trace instead.") from None
    text = body.decode("utf-8", errors="replace")
    if status in (401, 403):
      raise LiveIntensityError(f"{url}: the token was refused (HTTP {status}); check {TOKEN_ENV}.")
    if status in (400, 404):
      raise LiveIntensityError(f"{url}: zone {self.zone!r} refused (HTTP {status}: {text[:200]}).")
    if status != 200:
      raise LiveIntensityError(f"{url}: HTTP {status} ({text[:200]}).")
    return parse_latest(text, url=url, zone=self.zone)


def parse_latest(text: str, *, url: str = "response", zone: str | None = None) -> LiveIntensity:
  """A ``LiveIntensity`` from the JSON of ``/v3/carbon-intensity/latest``.

  Raises:
    DataError: not JSON, or ``carbonIntensity`` / ``datetime`` missing or not a positive number.
  """
  try:
    doc: dict[str, Any] = json.loads(text)
    ci = float(doc["carbonIntensity"])
    when = pd.Timestamp(doc["datetime"])
  except (ValueError, KeyError, TypeError) as e:
    raise DataError(f"{url}: not an Electricity Maps carbon-intensity response ({e!r}): "
                    f"{text[:200]}") from None
  if not ci >= 0:
    raise DataError(f"{url}: carbonIntensity={doc['carbonIntensity']!r} is not a number >= 0.")
  when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
  kind = str(doc.get("emissionFactorType") or "lifecycle")
  zone = str(doc.get("zone") or zone or "")
  return LiveIntensity(zone=zone, ci_g_per_kwh=ci, time_utc=when, emission_factor_type=kind,
                       is_estimated=bool(doc.get("isEstimated", False)),
                       source=f"electricitymaps-live:{zone}:{kind}")
