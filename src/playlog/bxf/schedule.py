"""A BXF schedule as playlog publishes (SPEC section 16): one publish per
broadcast day, block id = EventId, the times computed from frame counts at
the rate the import declares, the house number and name carried, the
secondary events counted. Pure functions: no gRPC, no I/O.

The profile says what the file does not: the zone its local times are in, the
broadcast day's start (a label before it belongs to the next calendar day),
the frame rate and the drop-frame separator. Input that does not fit it is
refused, naming the event, never guessed.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from playlog.bxf.parse import BxfError, BxfEvent, BxfSchedule
from playlog.bxf.timecode import FrameRate, TimecodeError, frame_rate, frames_to_ms, label_to_frames
from playlog.v1 import timecode_pb2 as tc_pb
from playlog.v1 import types_pb2 as pb

SEGMENT_TYPE = "program"


@dataclass(frozen=True, slots=True)
class Profile:
    rate: FrameRate
    zone: dt.tzinfo
    zone_name: str
    day_start_ms: int  # the broadcast day's start, ms after local midnight
    df_separator: str = ";"

    @property
    def day_start(self) -> str:
        return f"{self.day_start_ms // 3_600_000:02d}:{self.day_start_ms // 60_000 % 60:02d}"


def profile(rate: str, zone: str = "UTC", day_start: str = "00:00", df_separator: str = ";") -> Profile:
    """A profile from its declared values, or ValueError naming the one that is wrong."""
    try:
        fr = frame_rate(rate)
    except TimecodeError as exc:
        raise ValueError(f"--frame-rate: {exc}") from None
    try:
        tz: dt.tzinfo = dt.UTC if zone in ("UTC", "Z") else ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--zone {zone!r} is not a time zone name (e.g. UTC, Europe/London)") from None
    parts = day_start.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"--day-start {day_start!r} is not HH:MM")
    hh, mm = int(parts[0]), int(parts[1])
    if hh > 23 or mm > 59:
        raise ValueError(f"--day-start {day_start!r}: hours 00-23, minutes 00-59")
    if df_separator not in (";", ":", ".", ","):
        raise ValueError(f"--df-separator {df_separator!r} is not one of ; : . ,")
    return Profile(fr, tz, zone, (hh * 60 + mm) * 60_000, df_separator)


@dataclass(frozen=True, slots=True)
class DayPublish:
    """One broadcast day of the schedule: one PublishAtomicReplace."""

    broadcast_date: str
    range_start_utc_ms: int
    range_end_utc_ms: int
    entries: tuple[pb.ExecutionEntry, ...]
    secondary: int  # non-primary events of the day: counted, not imported

    def schedule_day(self, channel_id: str, plan_id: str) -> pb.ScheduleDay:
        """The ScheduleDay the day's entries derive from: traffic's schedule is the plan."""
        return pb.ScheduleDay(
            channel_id=channel_id,
            programming_day_date=self.broadcast_date,
            plan_id=plan_id,
            slots=[
                pb.ScheduleSlot(
                    start_utc_ms=e.start_utc_ms,
                    end_utc_ms=e.end_utc_ms,
                    program_id=e.segments[0].asset_uri or e.block_id,
                    asset_uri=e.segments[0].asset_uri,
                    title=e.segments[0].title,
                )
                for e in self.entries
            ],
        )


@dataclass(frozen=True, slots=True)
class Import:
    days: tuple[DayPublish, ...]
    secondary: int
    secondary_ids: tuple[str, ...] = field(default=())

    @property
    def entries(self) -> tuple[pb.ExecutionEntry, ...]:
        return tuple(e for d in self.days for e in d.entries)


def _utc_ms(local: dt.datetime, zone: dt.tzinfo, event: BxfEvent) -> int:
    """The instant of a local wall time, refused where the zone's clock skips
    it or shows it twice (a daylight-saving change): which one was meant is
    not in the file."""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        raise BxfError(
            f"local time {local.isoformat()} is ambiguous or does not exist in the declared zone "
            "(a daylight-saving change): declare --zone UTC if the file is in UTC",
            "SmpteDateTime",
            event.line,
            event.event_id,
        )
    return utc_ms_of(first)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def utc_ms_of(instant: dt.datetime) -> int:
    """Exact milliseconds of an aware datetime (no float on the way)."""
    return (instant - EPOCH) // _MS


def wall_of(ms: int, zone: dt.tzinfo) -> dt.datetime:
    """The local wall time of an instant, naive."""
    return (EPOCH + ms * _MS).astimezone(zone).replace(tzinfo=None)


def _frames(label: str, p: Profile, event: BxfEvent, element: str) -> int:
    try:
        return label_to_frames(label, p.rate, p.df_separator)
    except TimecodeError as exc:
        raise BxfError(str(exc), element, event.line, event.event_id) from None


def event_entry(event: BxfEvent, p: Profile, channel_id: str, message_id: str) -> pb.ExecutionEntry:
    """One primary event as an entry: start from its label's frame count at
    the declared rate, end from start + duration frames."""
    if event.frame_rate:
        try:
            given = frame_rate(event.frame_rate, p.rate.drop_frame)
        except TimecodeError:
            given = None
        if given is None or (given.num, given.den) != (p.rate.num, p.rate.den):
            raise BxfError(
                f"frameRate {event.frame_rate!r} does not fit the declared rate {p.rate}",
                "SmpteTimeCode",
                event.line,
                event.event_id,
            )
    start_frames = _frames(event.start_label, p, event, "SmpteDateTime/SmpteTimeCode")
    duration_frames = _frames(event.duration_label, p, event, "SmpteDuration/SmpteTimeCode")
    if duration_frames <= 0:
        raise BxfError("has a zero duration", "SmpteDuration", event.line, event.event_id)
    offset = frames_to_ms(start_frames, p.rate)
    date = dt.date.fromisoformat(event.broadcast_date)
    # A label before the broadcast day's start is after midnight of the next
    # calendar day. Compared as labels, not milliseconds: 06:00:00;00 at 29.97
    # drop-frame is 21.6 ms before 06:00 of the clock, and is the day's start.
    calendar = date + dt.timedelta(days=1) if event.start_label.strip()[:5] < p.day_start else date
    midnight = dt.datetime.combine(calendar, dt.time())
    start = _utc_ms(midnight + dt.timedelta(milliseconds=offset), p.zone, event)
    length = frames_to_ms(start_frames + duration_frames, p.rate) - offset
    return pb.ExecutionEntry(
        channel_id=channel_id,
        block_id=event.event_id,
        start_utc_ms=start,
        end_utc_ms=start + length,
        programming_day_date=event.broadcast_date,
        transmission_log_ref=f"bxf:{message_id}" if message_id else "bxf",
        segments=[
            pb.Segment(
                segment_id=event.event_id,
                segment_type=SEGMENT_TYPE,
                asset_uri=event.house_number,
                duration_ms=length,
                title=event.name,
            )
        ],
        source_timecode=tc_pb.Timecode(
            label=event.start_label,
            frame_rate=p.rate.name,
            drop_frame=p.rate.drop_frame,
            broadcast_date=event.broadcast_date,
            frames=start_frames,
            duration_label=event.duration_label,
            duration_frames=duration_frames,
        ),
    )


def build_import(schedule: BxfSchedule, p: Profile, channel_id: str) -> Import:
    """The publishes of a schedule, one per broadcast day, or BxfError naming
    the first event that does not fit (duplicate id, overlap, gap)."""
    by_id: dict[str, BxfEvent] = {}
    for e in schedule.events:
        if e.event_id in by_id:
            raise BxfError(
                f"EventId is not unique (also at line {by_id[e.event_id].line})", "ScheduledEvent", e.line,
                e.event_id,
            )  # fmt: skip
        by_id[e.event_id] = e
    if not schedule.primary:
        raise BxfError(f"has no primary event ({len(schedule.secondary)} secondary)", "Schedule")
    built = sorted(
        ((event_entry(e, p, channel_id, schedule.message_id), e) for e in schedule.primary),
        key=lambda pair: pair[0].start_utc_ms,
    )
    for (prev, pe), (cur, ce) in itertools.pairwise(built):
        if cur.start_utc_ms < prev.end_utc_ms:
            raise BxfError(
                f"starts at {iso(cur.start_utc_ms)}, before event {pe.event_id} (line {pe.line}) ends "
                f"at {iso(prev.end_utc_ms)}: events overlap",
                "ScheduledEvent", ce.line, ce.event_id,
            )  # fmt: skip
        if cur.start_utc_ms > prev.end_utc_ms and cur.programming_day_date == prev.programming_day_date:
            raise BxfError(
                f"starts at {iso(cur.start_utc_ms)}, {cur.start_utc_ms - prev.end_utc_ms} ms after event "
                f"{pe.event_id} (line {pe.line}) ends: a gap in the broadcast day would air nothing",
                "ScheduledEvent", ce.line, ce.event_id,
            )  # fmt: skip
    days: dict[str, list[pb.ExecutionEntry]] = {}
    for entry, _ in built:
        days.setdefault(entry.programming_day_date, []).append(entry)
    for entries in days.values():
        for i, entry in enumerate(entries):
            entry.block_index = i
    # A secondary event belongs to the day of the primary event before it in the file.
    secondary: dict[str, int] = {}
    current = built[0][0].programming_day_date
    for e in schedule.events:
        if e.primary:
            current = e.broadcast_date
        else:
            secondary[current] = secondary.get(current, 0) + 1
    return Import(
        days=tuple(
            DayPublish(
                broadcast_date=date,
                range_start_utc_ms=entries[0].start_utc_ms,
                range_end_utc_ms=entries[-1].end_utc_ms,
                entries=tuple(entries),
                secondary=secondary.get(date, 0),
            )
            for date, entries in sorted(days.items())
        ),
        secondary=len(schedule.secondary),
        secondary_ids=tuple(e.event_id for e in schedule.secondary),
    )


def check_window(imp: Import, now_utc_ms: int, locked_until_utc_ms: int, override: bool) -> None:
    """The window's rules as the import can name them by event (the server
    checks them again, and is the authority): nothing starts before now; the
    locked window changes only with an override."""
    for e in imp.entries:
        if e.start_utc_ms < now_utc_ms:
            raise BxfError(
                f"starts at {iso(e.start_utc_ms)}, before now ({iso(now_utc_ms)}): what has aired "
                "is never rewritten, override or not",
                event_id=e.block_id,
            )
    if override:
        return
    for d in imp.days:
        if d.range_start_utc_ms < locked_until_utc_ms:
            first = next(e for e in d.entries if e.start_utc_ms < locked_until_utc_ms)
            raise BxfError(
                f"starts at {iso(first.start_utc_ms)}, and broadcast day {d.broadcast_date} reaches into "
                f"the locked window (until {iso(locked_until_utc_ms)}): it needs --override --reason",
                event_id=first.block_id,
            )


def iso(ms: int) -> str:
    return (EPOCH + ms * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")
