"""Check 1 of every write: is the request well formed?

Each rule names the field it concerns, so the caller can fix it; every
violation found is reported at once.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence

from playlog.domain.model import Entry, ScheduleSlot
from playlog.domain.rejection import FieldViolation, MalformedRequest

# Matched against the whole value (fullmatch): `$` alone would also match
# before a trailing newline, and "ch1\n" would be a second channel beside "ch1".
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
ID_RULE = "must be 1-128 characters: letters, digits and . _ : @ / - (starting with a letter or digit)"

# Instants must be representable and sane: 1970 .. 9999.
MAX_UTC_MS = 253_402_300_799_999


def quote(value: str, limit: int = 64) -> str:
    """A user-supplied string as an error message may quote it: its repr, cut
    to `limit` characters (a detail must never repeat unbounded input: gRPC
    status trailers have a size limit)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}…({len(value)} chars)"


def check_id(value: str, field: str, out: list[FieldViolation]) -> None:
    if not value:
        out.append(FieldViolation(field, "required"))
    elif not _ID.fullmatch(value):
        out.append(FieldViolation(field, ID_RULE))


_VALID_DATES: set[str] = set()


def check_date(value: str, field: str, out: list[FieldViolation]) -> None:
    if value in _VALID_DATES:  # a publish names the same few dates many times
        return
    if not value:
        out.append(FieldViolation(field, "required (YYYY-MM-DD)"))
        return
    try:
        parsed = datetime.date.fromisoformat(value)
    except ValueError:
        out.append(FieldViolation(field, f"must be a calendar date YYYY-MM-DD, got {quote(value)}"))
        return
    if parsed.isoformat() != value:
        out.append(FieldViolation(field, f"must be a calendar date YYYY-MM-DD, got {quote(value)}"))
        return
    if len(_VALID_DATES) < 4096:  # bounded: dates seen valid, not a cache of input
        _VALID_DATES.add(value)


def check_interval(start: int, end: int, prefix: str, out: list[FieldViolation]) -> bool:
    ok = True
    for name, value in ((f"{prefix}start_utc_ms", start), (f"{prefix}end_utc_ms", end)):
        if not 0 <= value <= MAX_UTC_MS:
            out.append(FieldViolation(name, f"must be between 0 and {MAX_UTC_MS}, got {value}"))
            ok = False
    if ok and start >= end:
        out.append(
            FieldViolation(
                f"{prefix}end_utc_ms",
                f"must be after {prefix}start_utc_ms ({start}), got {end}",
            )
        )
        ok = False
    return ok


def check_entry(entry: Entry, channel_id: str, prefix: str, out: list[FieldViolation]) -> bool:
    """Validates one entry; returns whether its interval is usable."""
    if entry.channel_id and entry.channel_id != channel_id:
        out.append(
            FieldViolation(
                f"{prefix}channel_id",
                f"must be empty or the request's channel_id {quote(channel_id)}, "
                f"got {quote(entry.channel_id)}",
            )
        )
    check_id(entry.block_id, f"{prefix}block_id", out)
    check_date(entry.programming_day_date, f"{prefix}programming_day_date", out)
    interval_ok = check_interval(entry.start_utc_ms, entry.end_utc_ms, prefix, out)
    if not entry.segments:
        out.append(FieldViolation(f"{prefix}segments", "at least one segment is required"))
        return interval_ok
    seen: set[str] = set()
    total = 0
    for j, segment in enumerate(entry.segments):
        seg = f"{prefix}segments[{j}]."
        check_id(segment.segment_id, f"{seg}segment_id", out)
        if segment.segment_id in seen:
            out.append(
                FieldViolation(f"{seg}segment_id", f"duplicate {quote(segment.segment_id)} in this entry")
            )
        seen.add(segment.segment_id)
        if segment.duration_ms <= 0:
            out.append(FieldViolation(f"{seg}duration_ms", f"must be > 0, got {segment.duration_ms}"))
        if segment.asset_offset_ms < 0:
            out.append(
                FieldViolation(f"{seg}asset_offset_ms", f"must be >= 0, got {segment.asset_offset_ms}")
            )
        total += segment.duration_ms
    if interval_ok and total != entry.end_utc_ms - entry.start_utc_ms:
        out.append(
            FieldViolation(
                f"{prefix}segments",
                f"durations must sum to the entry's duration "
                f"{entry.end_utc_ms - entry.start_utc_ms} ms, they sum to {total} ms",
            )
        )
    return interval_ok


def validate_publish(
    channel_id: str,
    range_start_utc_ms: int,
    range_end_utc_ms: int,
    entries: Sequence[Entry],
    operator_override: bool,
    reason_code: str,
    max_entries: int | None = None,
) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    range_ok = check_interval(range_start_utc_ms, range_end_utc_ms, "range_", out)
    if max_entries is not None and len(entries) > max_entries:
        out.append(
            FieldViolation("entries", f"at most {max_entries} entries per publish, got {len(entries)}")
        )
    check_override_reason(operator_override, reason_code, out)
    block_ids: set[str] = set()
    for i, entry in enumerate(entries):
        prefix = f"entries[{i}]."
        entry_ok = check_entry(entry, channel_id, prefix, out)
        if entry.block_id and entry.block_id in block_ids:
            out.append(
                FieldViolation(f"{prefix}block_id", f"duplicate {quote(entry.block_id)} in this publish")
            )
        block_ids.add(entry.block_id)
        if (
            range_ok
            and entry_ok
            and (entry.start_utc_ms < range_start_utc_ms or entry.end_utc_ms > range_end_utc_ms)
        ):
            out.append(
                FieldViolation(
                    prefix.rstrip("."),
                    f"[{entry.start_utc_ms}, {entry.end_utc_ms}) lies outside the range "
                    f"[{range_start_utc_ms}, {range_end_utc_ms})",
                )
            )
    raise_if_any(out)


def validate_replace_entry(
    channel_id: str, block_id: str, entry: Entry, operator_override: bool, reason_code: str
) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    check_id(block_id, "block_id", out)
    if entry.block_id and entry.block_id != block_id:
        out.append(
            FieldViolation(
                "entry.block_id",
                f"must be empty or {quote(block_id)}: a replacement keeps the block's id",
            )
        )
    check_entry(entry, channel_id, "entry.", out)
    check_override_reason(operator_override, reason_code, out)
    # check_entry reports a missing block_id on the entry; a replacement may
    # leave it empty and inherit the request's.
    out = [v for v in out if not (v.field == "entry.block_id" and v.rule == "required")]
    raise_if_any(out)


def check_override_reason(operator_override: bool, reason_code: str, out: list[FieldViolation]) -> None:
    if operator_override and not reason_code.strip():
        out.append(FieldViolation("reason_code", "required with operator_override: say why"))


def check_slots(slots: Iterable[ScheduleSlot], out: list[FieldViolation]) -> None:
    previous_end: int | None = None
    for i, slot in enumerate(slots):
        prefix = f"schedule_day.slots[{i}]."
        ok = check_interval(slot.start_utc_ms, slot.end_utc_ms, prefix, out)
        if ok and previous_end is not None and slot.start_utc_ms < previous_end:
            out.append(
                FieldViolation(
                    f"{prefix}start_utc_ms",
                    f"slots must be sorted and must not overlap: starts at {slot.start_utc_ms}, "
                    f"before the previous slot ends ({previous_end})",
                )
            )
        if ok:
            previous_end = slot.end_utc_ms


def raise_if_any(out: list[FieldViolation]) -> None:
    if out:
        raise MalformedRequest(out)
