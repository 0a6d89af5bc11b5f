"""Test data in the domain's words: channels, days of entries, ScheduleDays."""

from __future__ import annotations

import datetime

from playlog.v1 import types_pb2 as pb

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# 2026-11-22T00:00:00Z
T0 = 1_795_305_600_000


def date_of(utc_ms: int) -> str:
    return datetime.datetime.fromtimestamp(utc_ms / 1000, datetime.UTC).date().isoformat()


def entry(
    block_id: str,
    start: int,
    end: int,
    *,
    day: str | None = None,
    segments: int = 2,
    title: str = "",
) -> pb.ExecutionEntry:
    """One entry whose segments split [start, end) evenly (the last takes the rest)."""
    duration = end - start
    each = duration // segments
    segs = []
    for i in range(segments):
        length = each if i < segments - 1 else duration - each * (segments - 1)
        segs.append(
            pb.Segment(
                segment_id=f"{block_id}-s{i}",
                segment_type="program" if i == 0 else "commercial",
                asset_uri=f"asset://{block_id}/{i}",
                asset_offset_ms=0,
                duration_ms=length,
                title=title or f"{block_id} part {i}",
            )
        )
    return pb.ExecutionEntry(
        block_id=block_id,
        start_utc_ms=start,
        end_utc_ms=end,
        segments=segs,
        programming_day_date=day or date_of(start),
    )


def blocks(start: int, count: int, length: int, prefix: str = "b", **kw: object) -> list[pb.ExecutionEntry]:
    """`count` contiguous entries of `length` ms from `start`."""
    return [
        entry(f"{prefix}{i}", start + i * length, start + (i + 1) * length, **kw)  # type: ignore[arg-type]
        for i in range(count)
    ]


def day_of_entries(day_start: int, prefix: str = "d", count: int = 48) -> list[pb.ExecutionEntry]:
    """A broadcast day of `count` equal blocks (48 half hours by default)."""
    return blocks(day_start, count, DAY // count, prefix=prefix)


def schedule_day(
    channel_id: str, date: str, plan_id: str = "plan-1", start: int | None = None
) -> pb.ScheduleDay:
    day_start = (
        start
        if start is not None
        else int(datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.UTC).timestamp() * 1000)
    )
    return pb.ScheduleDay(
        channel_id=channel_id,
        programming_day_date=date,
        plan_id=plan_id,
        slots=[
            pb.ScheduleSlot(
                start_utc_ms=day_start + i * HOUR,
                end_utc_ms=day_start + (i + 1) * HOUR,
                program_id=f"prog-{i}",
                asset_uri=f"asset://prog-{i}",
                title=f"Program {i}",
            )
            for i in range(24)
        ],
    )
