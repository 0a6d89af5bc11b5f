"""Times and durations as an operator types and reads them.

Instants: ISO-8601 (`2026-11-22T02:30:00Z`; without an offset it is UTC), epoch
milliseconds (`1795314600000`), or relative to the server's now (`now`, `+30m`,
`-2h`, `+1d`, `now+90s`). Durations: `30m`, `1h`, `90s`, `2d`, `250ms`, combined
as `1h30m`.
"""

from __future__ import annotations

import datetime
import re

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")
_RELATIVE = re.compile(r"(?:now)?([+-])(.+)")


class BadValue(ValueError):
    """A time or duration that does not parse (a usage error)."""


def parse_duration(text: str) -> int:
    """Milliseconds of a duration like `30m`, `1h30m`, `90s`, `2d`."""
    t = text.strip()
    if not _DURATION.fullmatch(t):
        raise BadValue(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 2d, 1h30m)")
    return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(t))


def is_relative(text: str) -> bool:
    t = text.strip()
    return t == "now" or (_RELATIVE.fullmatch(t) is not None and not t.lstrip("+-").isdigit())


def parse_time(text: str, now_ms: int | None) -> int:
    """Epoch milliseconds of an instant; `now_ms` is needed only for relative times."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    if is_relative(t):
        if now_ms is None:
            raise BadValue(f"relative time {text!r} without a current time")
        if t == "now":
            return now_ms
        m = _RELATIVE.fullmatch(t)
        assert m is not None
        delta = parse_duration(m.group(2))
        return now_ms + delta if m.group(1) == "+" else now_ms - delta
    try:
        dt = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise BadValue(
            f"not a time: {text!r} (use ISO-8601 like 2026-11-22T02:30:00Z, epoch ms, now, +30m or -2h)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return int(dt.timestamp() * 1000)


def iso_utc(ms: int) -> str:
    dt = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(ms: int) -> str:
    dt = datetime.datetime.fromtimestamp(ms / 1000).astimezone()
    return dt.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


def human_duration(ms: int) -> str:
    """`1h30m`, `45s`, `-5m`, `0s`; milliseconds only when there are some."""
    if ms == 0:
        return "0s"
    sign, rest = ("-", -ms) if ms < 0 else ("", ms)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, rest = divmod(rest, _UNIT_MS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts)
