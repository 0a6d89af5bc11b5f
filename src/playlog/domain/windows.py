"""The three windows of a channel at an instant T.

With E = T + locked_window_ms, an entry [start, end) is
- past     if end <= T (never changes again, override or not),
- locked   if end > T and start < E (changes only by operator override),
- flexible if start >= E (normal writes).
Intervals are half-open throughout.
"""

from __future__ import annotations

from playlog.domain.model import WindowStatus


def locked_until(now_utc_ms: int, locked_window_ms: int) -> int:
    """E, the end of the locked window [now, E)."""
    return now_utc_ms + locked_window_ms


def classify(start_utc_ms: int, end_utc_ms: int, now_utc_ms: int, locked_window_ms: int) -> WindowStatus:
    if end_utc_ms <= now_utc_ms:
        return WindowStatus.PAST
    if start_utc_ms < locked_until(now_utc_ms, locked_window_ms):
        return WindowStatus.LOCKED
    return WindowStatus.FLEXIBLE


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Whether [a_start, a_end) and [b_start, b_end) share an instant."""
    return a_start < b_end and b_start < a_end


def overlaps_locked_window(
    range_start_utc_ms: int, range_end_utc_ms: int, now_utc_ms: int, locked_window_ms: int
) -> bool:
    return overlaps(
        range_start_utc_ms,
        range_end_utc_ms,
        now_utc_ms,
        locked_until(now_utc_ms, locked_window_ms),
    )
