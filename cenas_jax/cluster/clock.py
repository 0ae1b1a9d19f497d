"""When the search loop's hours start: an accelerated replay of a trace, or the wall clock.

The loop's unit of work is one hour of the carbon trace: GPUs change role only at its start and the
whole hour is charged at its intensity. What an hour *is* differs:

- ``ReplayClock(hour_s)``: one trace hour is ``hour_s`` seconds of device time (the pool's budget
  per GPU and hour), and the loop goes on as soon as the hour's work is done, so a CPU run replays
  days of a real trace in minutes. With ``pace_wall_s`` it also waits that many wall seconds per
  hour (to watch a run unfold). Nothing depends on the host's speed: a replay is deterministic.
- ``WallClock(start_unix)``: an hour is an hour. ``wait_until(h)`` sleeps until ``start + h`` hours
  of real time; the hour's intensity is the trace's value (or a live source's) for that hour.

``sleep`` and ``now`` are injectable, so tests run a wall clock instantly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from cenas_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ReplayClock:
  """Accelerated replay: ``hour_s`` device-seconds per trace hour."""

  hour_s: float
  pace_wall_s: float = 0.0
  sleep: Callable[[float], None] = time.sleep
  now: Callable[[], float] = time.monotonic
  name: str = "replay"

  def __post_init__(self):
    if not self.hour_s > 0:
      raise ConfigError("hour_s", f"must be > 0, got {self.hour_s}")
    if self.pace_wall_s < 0:
      raise ConfigError("pace_wall_s", f"must be >= 0, got {self.pace_wall_s}")

  def wait_until(self, hour: int, first_hour: int, started: float) -> float:
    """Waits until ``hour`` may start, this process having started ``first_hour`` at ``now()`` =
    ``started``; returns the seconds waited."""
    wait = started + (hour - first_hour) * self.pace_wall_s - self.now()
    if wait > 0:
      self.sleep(wait)
    return max(0.0, wait)


@dataclasses.dataclass(frozen=True)
class WallClock:
  """Real time: hour ``h`` starts ``h`` hours after ``start_unix`` (seconds since the epoch)."""

  start_unix: float
  hour_s: float = 3600.0
  sleep: Callable[[float], None] = time.sleep
  now: Callable[[], float] = time.time
  name: str = "wall"

  def wait_until(self, hour: int, first_hour: int, started: float) -> float:
    """Waits until ``start_unix + hour`` hours (a resumed run catches up on missed hours at once)."""
    del first_hour, started
    wait = self.start_unix + hour * self.hour_s - self.now()
    if wait > 0:
      self.sleep(wait)
    return max(0.0, wait)
