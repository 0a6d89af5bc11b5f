"""The server's clock: the only time authority.

Everything that needs "now" takes a Clock, so tests use a deterministic one and
never sleep, and `playlog serve --clock manual` runs the real service on a
clock that moves only when told.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_utc_ms(self) -> int: ...


class ClockNotAdjustable(Exception):
    """Raised when the system clock is asked to move."""


class TimeMovesForwardOnly(ValueError):
    """Raised when a manual clock is asked to go backwards."""


class SystemClock:
    manual = False

    def now_utc_ms(self) -> int:
        return time.time_ns() // 1_000_000

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

    def check_target(self, now_utc_ms: int) -> int:
        """The time a SetTime would move to; TimeMovesForwardOnly if it is earlier."""
        current = self.now_utc_ms()
        if now_utc_ms < current:
            raise TimeMovesForwardOnly(
                f"now_utc_ms: time never moves backwards (now is {current}, asked for {now_utc_ms})"
            )
        return now_utc_ms

    def advance_target(self, delta_ms: int) -> int:
        """The time an AdvanceTime would move to."""
        if delta_ms < 0:
            raise TimeMovesForwardOnly(f"delta_ms: must be >= 0, got {delta_ms}")
        return self.now_utc_ms() + delta_ms

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


class _Listener(Protocol):
    def __call__(self, now_utc_ms: int) -> None: ...
