"""The server's clock: the only time authority.

Everything that needs "now" takes a Clock, so tests use a deterministic one and
never sleep, and `playlog serve --clock manual` runs the real service on a
clock that moves only when told.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from playlog import metrics
from playlog.domain.validation import MAX_UTC_MS
from playlog.events import emit

log = logging.getLogger("playlog.clock")


class Clock(Protocol):
    def now_utc_ms(self) -> int: ...


class ClockNotAdjustable(Exception):
    """Raised when the system clock is asked to move."""


class TimeMovesForwardOnly(ValueError):
    """Raised when a manual clock is asked to go backwards."""


def host_clock_utc_ms() -> int:
    return time.time_ns() // 1_000_000


class SystemClock:
    """The host clock, held so that "now" never moves backwards (SPEC section 1).

    Now is the later of the host clock and the latest instant the server has
    returned or acted on (`floor_utc_ms`: the durable floor from the store at
    start). A host clock stepped back, by NTP or by hand, holds now still until
    real time catches up (logged once per step, and a metric) instead of
    reopening time that has already aired.
    """

    manual = False

    def __init__(self, floor_utc_ms: int = 0, host: Callable[[], int] = host_clock_utc_ms) -> None:
        self._host = host
        self._latest = floor_utc_ms
        self._held = False
        self._lock = threading.Lock()

    def now_utc_ms(self) -> int:
        host = self._host()
        with self._lock:
            if host >= self._latest:
                self._latest = host
                if self._held:
                    self._held = False
                    metrics.CLOCK_HELD_MS.set(0)
                    emit(log, logging.INFO, "clock_caught_up", now_utc_ms=host)
                return host
            latest = self._latest
            if not self._held:
                self._held = True
                metrics.CLOCK_STEP_BACKS.inc()
                emit(
                    log,
                    logging.WARNING,
                    "clock_behind",
                    host_utc_ms=host,
                    now_utc_ms=latest,
                    behind_ms=latest - host,
                    message="the host clock is behind the latest instant acted on; now is held "
                    "there until the host clock catches up (time never moves backwards)",
                )
            metrics.CLOCK_HELD_MS.set(latest - host)
            return latest

    def set_utc_ms(self, now_utc_ms: int) -> int:
        raise ClockNotAdjustable("the server runs on the system clock; start it with --clock manual")

    def advance_ms(self, delta_ms: int) -> int:
        raise ClockNotAdjustable("the server runs on the system clock; start it with --clock manual")


class ManualClock:
    """A clock that moves only when told, and never backwards."""

    manual = True

    def __init__(self, start_utc_ms: int) -> None:
        self._now = start_utc_ms
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []

    def now_utc_ms(self) -> int:
        with self._lock:
            return self._now

    def check_target(self, now_utc_ms: int, current: int | None = None) -> int:
        """The time a SetTime would move to from `current` (default: this
        clock's now); TimeMovesForwardOnly if it is earlier."""
        current = self.now_utc_ms() if current is None else current
        if now_utc_ms < current:
            raise TimeMovesForwardOnly(
                f"now_utc_ms: time never moves backwards (now is {current}, asked for {now_utc_ms})"
            )
        return _within_range("now_utc_ms", now_utc_ms)

    def advance_target(self, delta_ms: int, current: int | None = None) -> int:
        """The time an AdvanceTime would move to from `current`."""
        if delta_ms < 0:
            raise TimeMovesForwardOnly(f"delta_ms: must be >= 0, got {delta_ms}")
        current = self.now_utc_ms() if current is None else current
        return _within_range("delta_ms", current + delta_ms)

    def advance_to(self, now_utc_ms: int) -> int:
        """Moves to now_utc_ms if that is later (a move made elsewhere: another
        replica's, read from the store); the clock's time afterwards."""
        with self._lock:
            if now_utc_ms <= self._now:
                return self._now
            self._now = now_utc_ms
            listeners = list(self._listeners)
        for listener in listeners:
            listener(now_utc_ms)
        return now_utc_ms

    def set_utc_ms(self, now_utc_ms: int) -> int:
        with self._lock:
            if now_utc_ms < self._now:
                raise TimeMovesForwardOnly(
                    f"now_utc_ms: time never moves backwards (now is {self._now}, asked for {now_utc_ms})"
                )
            self._now = now_utc_ms
            listeners = list(self._listeners)
        for listener in listeners:
            listener(now_utc_ms)
        return now_utc_ms

    def advance_ms(self, delta_ms: int) -> int:
        if delta_ms < 0:
            raise TimeMovesForwardOnly(f"delta_ms: must be >= 0, got {delta_ms}")
        with self._lock:
            target = self._now + delta_ms
        return self.set_utc_ms(target)

    def add_listener(self, listener: _Listener) -> None:
        """Called with the new time after every move (progress events use it)."""
        with self._lock:
            self._listeners.append(listener)


def _within_range(field: str, target: int) -> int:
    if target > MAX_UTC_MS:
        raise TimeMovesForwardOnly(
            f"{field}: the clock would move to {target}, past the last instant playlog keeps "
            f"({MAX_UTC_MS}, year 9999)"
        )
    return target


class _Listener(Protocol):
    def __call__(self, now_utc_ms: int) -> None: ...
