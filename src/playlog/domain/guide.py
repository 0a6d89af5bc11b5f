"""The guide (EPG) viewers see, derived from what playlog stores and from
nothing else (SPEC section 14): where the execution window has entries, its
entries at the channel's current generation; beyond the window's last entry,
the authoritative ScheduleDays' slots, marked planned. Plain functions.

- One programme per editorial unit: consecutive entries in the same slot of
  their day's authoritative ScheduleDay (the slot containing the entry's
  span) form one programme with the slot's program_id and title (a film over
  three blocks is one programme, RetroVue INV-EPG-PROGRAM-CONTINUITY-001).
- An entry no slot contains is a programme of its own, titled by its first
  segment that is not filler. An entry an operator override made is never a
  slot's: the override changed what the plan said airs there (its insert is
  its own programme, so the guide names what airs).
- Filler segments are never listed; an entry made only of filler joins the
  programme before it (INV-EPG-FILLER-INVISIBLE-001), or, with nothing
  before it, the one after it.
- Programmes never overlap and leave no gap where the window has none
  (INV-EPG-NO-OVERLAP-001, INV-EPG-NO-GAP-001); the same entries and days
  give the same programmes, whatever range is asked
  (INV-EPG-IDENTITY-STABLE-001), given the entries from the start of the
  programme containing the range's start (see `lookback_from`).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from playlog.domain.model import Entry, ScheduleDay, ScheduleSlot
from playlog.domain.rejection import FieldViolation
from playlog.domain.validation import check_id, check_interval, raise_if_any

DEFAULT_FILLER_TYPES = frozenset({"filler", "padding", "bumper"})


class ProgrammeStatus(enum.Enum):
    AIRED = "aired"
    ON_AIR = "on_air"
    LOCKED = "locked"  # certain: only an override can change it
    FLEXIBLE = "flexible"  # published, may change
    PLANNED = "planned"  # from a ScheduleDay, not yet published


@dataclass(frozen=True, slots=True)
class Programme:
    start_utc_ms: int
    end_utc_ms: int
    title: str
    program_id: str = ""
    planned: bool = False
    # Provenance: the highest generation among its entries, its entries,
    # the ScheduleDay and slot it is, the override record that made it.
    generation_id: int = 0
    block_ids: tuple[str, ...] = ()
    schedule_day_id: str = ""
    programming_day_date: str = ""
    slot_index: int = -1
    override_record_id: str = ""
    # The start of its last entry: the programme is locked once that is.
    last_entry_start_utc_ms: int = 0


@dataclass(frozen=True)
class Derivation:
    programmes: tuple[Programme, ...]
    covered_until_utc_ms: int  # end of the published entries (0: none)
    planned_until_utc_ms: int  # latest end of the days' slots (0: none)


def status_of(p: Programme, now_utc_ms: int, locked_until_utc_ms: int) -> ProgrammeStatus:
    if p.planned:
        return ProgrammeStatus.PLANNED
    if p.end_utc_ms <= now_utc_ms:
        return ProgrammeStatus.AIRED
    if p.start_utc_ms <= now_utc_ms:
        return ProgrammeStatus.ON_AIR
    if p.last_entry_start_utc_ms < locked_until_utc_ms:
        return ProgrammeStatus.LOCKED
    return ProgrammeStatus.FLEXIBLE


def now_and_next(
    programmes: Sequence[Programme], now_utc_ms: int
) -> tuple[Programme | None, Programme | None]:
    """The programme containing now, and the first one starting after it (or
    after now when nothing is on air)."""
    starts = [p.start_utc_ms for p in programmes]
    i = bisect.bisect_right(starts, now_utc_ms) - 1
    on_air = programmes[i] if i >= 0 and programmes[i].end_utc_ms > now_utc_ms else None
    j = i + 1
    return on_air, programmes[j] if j < len(programmes) else None


def is_filler_only(entry: Entry, filler_types: frozenset[str]) -> bool:
    return bool(entry.segments) and all(s.segment_type.lower() in filler_types for s in entry.segments)


class _Days:
    """Authoritative days by date, their slots searchable by start."""

    def __init__(self, days: Iterable[ScheduleDay]) -> None:
        self.by_date = {d.programming_day_date: d for d in days if d.is_authoritative}
        self._starts = {date: [s.start_utc_ms for s in d.slots] for date, d in self.by_date.items()}

    def slot_of(self, entry: Entry) -> tuple[ScheduleDay, int] | None:
        """The slot of the entry's day that contains the entry's span."""
        day = self.by_date.get(entry.programming_day_date)
        if day is None:
            return None
        i = bisect.bisect_right(self._starts[entry.programming_day_date], entry.start_utc_ms) - 1
        if i < 0:
            return None
        slot = day.slots[i]
        if slot.start_utc_ms <= entry.start_utc_ms and entry.end_utc_ms <= slot.end_utc_ms:
            return day, i
        return None


def lookback_from(first: Entry, days: Iterable[ScheduleDay], filler_types: frozenset[str]) -> int | None:
    """Where the programme containing `first` may start before it, if it may
    (None: `first` starts its programme whatever came before): the slot's
    start for an entry in a slot, the instant before it for a filler-only one
    (it joins the programme before). The caller reads the entries from there
    and asks again of the new first entry."""
    if is_filler_only(first, filler_types):
        return first.start_utc_ms - 1
    if first.is_operator_override:
        return None
    found = _Days(days).slot_of(first)
    if found is None:
        return None
    slot_start = found[0].slots[found[1]].start_utc_ms
    return slot_start if slot_start < first.start_utc_ms else None


@dataclass
class _Unit:
    start: int
    end: int
    title: str
    key: tuple[str, int] | None = None
    program_id: str = ""
    date: str = ""
    generation: int = 0
    block_ids: list[str] = field(default_factory=list)
    record: str = ""
    last_start: int = 0

    def take(self, e: Entry) -> None:
        self.end = e.end_utc_ms
        self.block_ids.append(e.block_id)
        self.generation = max(self.generation, e.generation_id)
        self.last_start = e.start_utc_ms

    def programme(self) -> Programme:
        day_id, slot = self.key if self.key is not None else ("", -1)
        return Programme(
            self.start, self.end, self.title, self.program_id, False, self.generation,
            tuple(self.block_ids), day_id, self.date if self.key else "", slot, self.record,
            self.last_start,
        )  # fmt: skip


def _own_title(e: Entry, filler_types: frozenset[str]) -> str:
    for s in e.segments:
        if s.segment_type.lower() not in filler_types and s.title:
            return s.title
    return next((s.title for s in e.segments if s.title), e.block_id)


def _slot_key(e: Entry, days: _Days) -> tuple[ScheduleDay, int] | None:
    """The slot an entry is part of (an override's entry is no slot's)."""
    return None if e.is_operator_override else days.slot_of(e)


def _unit_for(e: Entry, found: tuple[ScheduleDay, int] | None, filler_types: frozenset[str]) -> _Unit:
    if found is None:
        return _Unit(e.start_utc_ms, e.end_utc_ms, _own_title(e, filler_types), record=e.override_record_id)
    day, i = found
    slot: ScheduleSlot = day.slots[i]
    return _Unit(
        e.start_utc_ms, e.end_utc_ms, slot.title or slot.program_id or _own_title(e, filler_types),
        (day.id, i), slot.program_id, day.programming_day_date,
    )  # fmt: skip


def _window_programmes(
    entries: Sequence[Entry], days: _Days, filler_types: frozenset[str]
) -> list[Programme]:
    out: list[Programme] = []
    unit: _Unit | None = None
    pending: list[Entry] = []  # filler-only entries with no programme before them

    def flush_pending() -> None:
        nonlocal unit
        if not pending:
            return
        first = pending[0]
        unit = _unit_for(first, _slot_key(first, days), filler_types)
        for e in pending:
            unit.take(e)
        out.append(unit.programme())
        unit = None
        pending.clear()

    for e in entries:
        contiguous = unit is not None and unit.end == e.start_utc_ms
        if is_filler_only(e, filler_types):
            if contiguous:
                assert unit is not None
                unit.take(e)
                continue
            if unit is not None:
                out.append(unit.programme())
                unit = None
            if pending and pending[-1].end_utc_ms != e.start_utc_ms:
                flush_pending()
            pending.append(e)
            continue
        found = _slot_key(e, days)
        if contiguous and unit is not None and found is not None and (found[0].id, found[1]) == unit.key:
            unit.take(e)
            continue
        candidate = _unit_for(e, found, filler_types)
        if unit is not None:
            out.append(unit.programme())
        if pending and pending[-1].end_utc_ms == e.start_utc_ms:
            # Filler with nothing before it joins the programme after it.
            candidate.start = pending[0].start_utc_ms
            candidate.block_ids = [p.block_id for p in pending]
            candidate.generation = max(p.generation_id for p in pending)
            pending.clear()
        else:
            flush_pending()
        candidate.take(e)
        unit = candidate
    if unit is not None:
        out.append(unit.programme())
    flush_pending()
    return out


def _planned_programmes(days: _Days, covered_until: int) -> list[Programme]:
    """The slots beyond the window's last entry (the part of a slot that
    straddles it), by start; a slot overlapping one before it (two days that
    disagree) keeps only what comes after."""
    slots = sorted(
        (
            (s.start_utc_ms, s.end_utc_ms, i, day)
            for day in days.by_date.values()
            for i, s in enumerate(day.slots)
        ),
        key=lambda t: (t[0], t[1]),
    )
    out: list[Programme] = []
    last_end = covered_until
    for start, end, i, day in slots:
        begin = max(start, last_end)
        if begin >= end:
            continue
        s = day.slots[i]
        out.append(
            Programme(
                begin,
                end,
                s.title or s.program_id,
                s.program_id,
                planned=True,
                schedule_day_id=day.id,
                programming_day_date=day.programming_day_date,
                slot_index=i,
            )
        )
        last_end = end
    return out


def derive(
    entries: Sequence[Entry],
    days: Iterable[ScheduleDay],
    start_utc_ms: int,
    end_utc_ms: int,
    covered_until_utc_ms: int = 0,
    filler_types: frozenset[str] = DEFAULT_FILLER_TYPES,
) -> Derivation:
    """The programmes overlapping [start_utc_ms, end_utc_ms), each whole.

    `entries`: the channel's current entries by start, from the start of the
    programme containing start_utc_ms on (see lookback_from);
    `days`: the authoritative ScheduleDays of the dates they and the range
    name; `covered_until_utc_ms`: the end of the channel's last entry (where
    the planned part begins)."""
    known = _Days(days)
    covered = max([covered_until_utc_ms, *(e.end_utc_ms for e in entries[-1:])])
    programmes = _window_programmes(entries, known, filler_types) + _planned_programmes(known, covered)
    planned_until = max((s.end_utc_ms for d in known.by_date.values() for s in d.slots), default=0)
    shown = tuple(p for p in programmes if p.end_utc_ms > start_utc_ms and p.start_utc_ms < end_utc_ms)
    return Derivation(shown, covered, planned_until)


# The longest range one guide read may ask (the HTTP guide asks at most 14
# days from an hour before the current hour).
MAX_RANGE_MS = 15 * 86_400_000


def validate_request(
    channel_ids: Sequence[str],
    start_utc_ms: int | None = None,
    end_utc_ms: int | None = None,
    channel_field: str = "channel_ids",
) -> None:
    out: list[FieldViolation] = []
    for i, channel_id in enumerate(channel_ids):
        check_id(channel_id, f"{channel_field}[{i}]", out)
    if (
        start_utc_ms is not None
        and end_utc_ms is not None
        and check_interval(start_utc_ms, end_utc_ms, "", out)
    ):
        if end_utc_ms - start_utc_ms > MAX_RANGE_MS:
            out.append(
                FieldViolation(
                    "end_utc_ms",
                    f"at most {MAX_RANGE_MS} ms (15 days) after start_utc_ms, got "
                    f"{end_utc_ms - start_utc_ms} ms: ask for several shorter ranges",
                )
            )
    raise_if_any(out)
