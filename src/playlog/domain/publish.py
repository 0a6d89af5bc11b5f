"""The rules of an execution-window write, in the order of SPEC section 3.

`decide_publish` and `decide_replace_entry` take the facts a store gathered
inside its write transaction and answer either a PublishPlan (what to write,
override record first) or a Rejection (nothing changes). They never touch a
store: the facts are all they see.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from playlog.domain.model import (
    Channel,
    Entry,
    ErrorCode,
    OverrideLayer,
    OverrideRecord,
    Segment,
    SupersededEntry,
    WindowStatus,
)
from playlog.domain.rejection import Evidence, Rejection
from playlog.domain.windows import classify, locked_until, overlaps_locked_window


@dataclass(frozen=True)
class PublishRequest:
    channel_id: str
    range_start_utc_ms: int
    range_end_utc_ms: int
    entries: tuple[Entry, ...]
    generation_id: int
    reason_code: str
    operator_override: bool
    actor: str
    actor_note: str = ""


@dataclass(frozen=True)
class PublishFacts:
    """What the store knows, read inside the write transaction."""

    channel: Channel | None
    # Current entries overlapping the range, by start (their spans and ids:
    # segments are not read for the checks).
    affected: tuple[Entry, ...] = ()
    # The whole entry the range starts inside of, if one does (a cut keeps
    # its part before the range start).
    spanning_range_start: Entry | None = None
    # The last current entry ending at or before the range start.
    left_neighbour: Entry | None = None
    # The first current entry starting at or after the range end.
    right_neighbour: Entry | None = None
    # Block ids of the new entries that current entries outside the range use.
    block_ids_in_use_outside: frozenset[str] = frozenset()
    # Dates (named by the new entries) that have an authoritative ScheduleDay.
    dates_with_schedule_day: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PublishPlan:
    """An accepted write: persist override_record first, then the entries.

    `new_entries` are the entries as requested (by start); every one of them is
    written with the plan's generation and override marks (`entries` shows
    them stamped). `cut` is the kept part of the entry on air when the publish
    cuts it (SPEC section 2), already stamped; it lies before the range."""

    channel_id: str
    generation_id: int
    previous_generation_id: int
    range_start_utc_ms: int
    range_end_utc_ms: int
    new_entries: tuple[Entry, ...]
    superseded: tuple[Entry, ...]
    override_record: OverrideRecord | None
    reason_code: str
    actor: str
    committed_utc_ms: int
    cut: Entry | None = None

    @property
    def operator_override(self) -> bool:
        return self.override_record is not None

    @property
    def override_record_id(self) -> str:
        return self.override_record.id if self.override_record is not None else ""

    @property
    def cut_block_id(self) -> str:
        return self.cut.block_id if self.cut is not None else ""

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry the publish writes, as stored: the cut part first."""
        stamped = tuple(
            dataclasses.replace(
                entry,
                channel_id=self.channel_id,
                generation_id=self.generation_id,
                is_operator_override=self.operator_override,
                override_record_id=self.override_record_id,
            )
            for entry in self.new_entries
        )
        return (self.cut, *stamped) if self.cut is not None else stamped


def decide_publish(
    request: PublishRequest, facts: PublishFacts, now_utc_ms: int, override_record_id: str
) -> PublishPlan | Rejection:
    """Checks 2-7 of SPEC section 3 (check 1 is validation.validate_publish)."""
    if facts.channel is None:
        return _unknown_channel(request.channel_id)
    channel = facts.channel
    new_entries = tuple(sorted(request.entries, key=lambda e: e.start_utc_ms))
    on_air = _entry_cut_by(request, facts.spanning_range_start, now_utc_ms)
    rejection = (
        _check_past(request, facts.affected, new_entries, channel, now_utc_ms)
        or _check_locked(request, facts.affected, new_entries, channel, now_utc_ms)
        or _check_generation(request.generation_id, channel)
        or _check_contiguity(request, facts, new_entries, on_air)
        or _check_block_ids(facts.block_ids_in_use_outside, on_air, new_entries)
        or _check_derivation(request, new_entries, facts.dates_with_schedule_day)
    )
    if rejection is not None:
        return rejection
    return _plan(request, facts.affected, new_entries, channel, now_utc_ms, override_record_id, on_air)


def _entry_cut_by(request: PublishRequest, spanning: Entry | None, now: int) -> Entry | None:
    """The entry on air when the range starts inside it, at or after now: a cut.

    Its aired part [start, now) and the part up to the range start stay as they
    are; only what follows the range start is replaced (SPEC section 2).
    """
    rs = request.range_start_utc_ms
    if (
        spanning is not None
        and spanning.start_utc_ms < now < spanning.end_utc_ms
        and now <= rs < spanning.end_utc_ms
    ):
        return spanning
    return None


def cut_entry(entry: Entry, at_utc_ms: int, generation_id: int, override_record_id: str) -> Entry:
    """The part of `entry` before `at_utc_ms`: same block id and segments up to
    the cut, the segment spanning it shortened to end there; stamped with the
    cut's generation and override record."""
    kept = []
    start = entry.start_utc_ms
    for segment in entry.segments:
        if start >= at_utc_ms:
            break
        end = start + segment.duration_ms
        kept.append(
            Segment(
                segment.segment_id,
                segment.segment_type,
                segment.asset_uri,
                segment.asset_offset_ms,
                # The segment spanning the cut ends there.
                min(end, at_utc_ms) - start,
                segment.title,
            )
        )
        start = end
    return dataclasses.replace(
        entry,
        end_utc_ms=at_utc_ms,
        segments=tuple(kept),
        wire=b"",  # its segments changed: encoded anew
        generation_id=generation_id,
        is_operator_override=True,
        override_record_id=override_record_id,
    )


@dataclass(frozen=True)
class ReplaceEntryRequest:
    channel_id: str
    block_id: str
    entry: Entry
    operator_override: bool
    reason_code: str
    actor: str
    actor_note: str = ""


@dataclass(frozen=True)
class ReplaceEntryFacts:
    channel: Channel | None
    existing: Entry | None
    dates_with_schedule_day: frozenset[str] = frozenset()


def decide_replace_entry(
    request: ReplaceEntryRequest, facts: ReplaceEntryFacts, now_utc_ms: int, override_record_id: str
) -> PublishPlan | Rejection:
    """Replaces one entry by one occupying the same [start, end)."""
    if facts.channel is None:
        return _unknown_channel(request.channel_id)
    existing = facts.existing
    if existing is None:
        return Rejection(
            ErrorCode.NOT_FOUND,
            f"block {request.block_id!r} is not a current entry of channel "
            f"{request.channel_id!r}; read the window to find its block ids",
            Evidence(mutated_block_id=request.block_id),
        )
    new_entry = request.entry
    if new_entry.block_id != request.block_id:  # inherits the request's block id
        new_entry = dataclasses.replace(new_entry, block_id=request.block_id, wire=b"")
    as_publish = PublishRequest(
        channel_id=request.channel_id,
        range_start_utc_ms=existing.start_utc_ms,
        range_end_utc_ms=existing.end_utc_ms,
        entries=(new_entry,),
        generation_id=0,
        reason_code=request.reason_code,
        operator_override=request.operator_override,
        actor=request.actor,
        actor_note=request.actor_note,
    )
    channel = facts.channel
    rejection = (
        _check_on_air(as_publish, existing, channel, now_utc_ms)
        or _check_past(as_publish, (existing,), (), channel, now_utc_ms)
        or _check_locked(as_publish, (existing,), (), channel, now_utc_ms)
        or _check_same_span(existing, new_entry)
        or _check_derivation(as_publish, (new_entry,), facts.dates_with_schedule_day)
    )
    if rejection is not None:
        return rejection
    return _plan(as_publish, (existing,), (new_entry,), channel, now_utc_ms, override_record_id)


def _unknown_channel(channel_id: str) -> Rejection:
    return Rejection(
        ErrorCode.UNKNOWN_CHANNEL,
        f"channel {channel_id!r} is not declared; declare it with ChannelService.DeclareChannel",
    )


def _window_evidence(
    entry: Entry | None, request: PublishRequest, channel: Channel, now: int, status: WindowStatus
) -> Evidence:
    return Evidence(
        mutated_block_id=entry.block_id if entry else "",
        block_start_utc_ms=entry.start_utc_ms if entry else None,
        lock_boundary_T=now,
        locked_until_utc_ms=locked_until(now, channel.locked_window_ms),
        window_status=status,
        range_start_utc_ms=request.range_start_utc_ms,
        range_end_utc_ms=request.range_end_utc_ms,
    )


def _check_past(
    request: PublishRequest,
    affected: Sequence[Entry],
    new_entries: Sequence[Entry],
    channel: Channel,
    now: int,
) -> Rejection | None:
    for entry in affected:
        if entry.end_utc_ms <= now:
            return Rejection(
                ErrorCode.PAST_WINDOW_IMMUTABLE,
                f"block {entry.block_id!r} [{entry.start_utc_ms}, {entry.end_utc_ms}) has already "
                f"aired (now is {now}); the past is never rewritten, override or not. "
                f"Start the range at or after {entry.end_utc_ms}",
                _window_evidence(entry, request, channel, now, WindowStatus.PAST),
            )
    for entry in new_entries:
        if entry.end_utc_ms <= now:
            return Rejection(
                ErrorCode.PAST_WINDOW_IMMUTABLE,
                f"new block {entry.block_id!r} [{entry.start_utc_ms}, {entry.end_utc_ms}) would end "
                f"at or before now ({now}); nothing is created in the past",
                _window_evidence(entry, request, channel, now, WindowStatus.PAST),
            )
    if request.range_start_utc_ms < now:
        on_air = next((e for e in affected if e.start_utc_ms < now < e.end_utc_ms), None)
        advice = (
            f"; block {on_air.block_id!r} [{on_air.start_utc_ms}, {on_air.end_utc_ms}) is on air: "
            f"change it by a cut, an override whose range starts at a C with {now} <= C < "
            f"{on_air.end_utc_ms} (its aired part is kept)"
            if on_air is not None
            else ""
        )
        return Rejection(
            ErrorCode.PAST_WINDOW_IMMUTABLE,
            f"range [{request.range_start_utc_ms}, {request.range_end_utc_ms}) starts before now "
            f"({now}); what has aired is never rewritten or re-created, override or not. Start the "
            f"range at or after {now}{advice}",
            _window_evidence(on_air, request, channel, now, WindowStatus.PAST),
        )
    for entry in new_entries:
        if entry.start_utc_ms < now:
            return Rejection(
                ErrorCode.PAST_WINDOW_IMMUTABLE,
                f"new block {entry.block_id!r} [{entry.start_utc_ms}, {entry.end_utc_ms}) would start "
                f"before now ({now}); nothing is created in time that has elapsed",
                _window_evidence(entry, request, channel, now, WindowStatus.PAST),
            )
    return None


def _check_on_air(request: PublishRequest, existing: Entry, channel: Channel, now: int) -> Rejection | None:
    """ReplaceEntry replaces a whole entry: never the entry on air, whose start has aired."""
    if not existing.start_utc_ms < now < existing.end_utc_ms:
        return None
    return Rejection(
        ErrorCode.PAST_WINDOW_IMMUTABLE,
        f"block {existing.block_id!r} [{existing.start_utc_ms}, {existing.end_utc_ms}) is on air "
        f"(now is {now}): its aired part is never rewritten, so it cannot be replaced whole. "
        f"Change it by a cut: PublishAtomicReplace with operator_override = true and a range "
        f"starting at a C with {now} <= C < {existing.end_utc_ms}; the entry keeps [start, C)",
        _window_evidence(existing, request, channel, now, WindowStatus.LOCKED),
    )


def _check_locked(
    request: PublishRequest,
    affected: Sequence[Entry],
    new_entries: Sequence[Entry],
    channel: Channel,
    now: int,
) -> Rejection | None:
    if request.operator_override:
        return None
    lock_end = locked_until(now, channel.locked_window_ms)
    advice = (
        "the locked window changes only by operator override (operator_override = true with a "
        f"reason_code); or publish only from {lock_end} on"
    )
    for entry in affected:
        if classify(entry.start_utc_ms, entry.end_utc_ms, now, channel.locked_window_ms) is (
            WindowStatus.LOCKED
        ):
            return Rejection(
                ErrorCode.LOCKED_WINDOW_VIOLATION,
                f"block {entry.block_id!r} [{entry.start_utc_ms}, {entry.end_utc_ms}) is in the "
                f"locked window [{now}, {lock_end}); {advice}",
                _window_evidence(entry, request, channel, now, WindowStatus.LOCKED),
            )
    if overlaps_locked_window(
        request.range_start_utc_ms, request.range_end_utc_ms, now, channel.locked_window_ms
    ):
        first_locked = next(
            (e for e in new_entries if e.start_utc_ms < lock_end and e.end_utc_ms > now), None
        )
        return Rejection(
            ErrorCode.LOCKED_WINDOW_VIOLATION,
            f"range [{request.range_start_utc_ms}, {request.range_end_utc_ms}) overlaps the locked "
            f"window [{now}, {lock_end}); {advice}",
            _window_evidence(first_locked, request, channel, now, WindowStatus.LOCKED),
        )
    return None


def _check_generation(generation_id: int, channel: Channel) -> Rejection | None:
    if generation_id != 0 and generation_id <= channel.current_generation_id:
        return Rejection(
            ErrorCode.GENERATION_NOT_MONOTONIC,
            f"generation_id {generation_id} is not above the channel's generation "
            f"{channel.current_generation_id}; send 0 for the next one, or a value above "
            f"{channel.current_generation_id}",
            Evidence(
                extra={
                    "requested_generation_id": generation_id,
                    "channel_generation_id": channel.current_generation_id,
                }
            ),
        )
    return None


def _describe(entry: Entry) -> str:
    return f"block {entry.block_id!r} [{entry.start_utc_ms}, {entry.end_utc_ms})"


def _contiguity(detail: str, request: PublishRequest, entry: Entry | None = None) -> Rejection:
    return Rejection(
        ErrorCode.CONTIGUITY_VIOLATION,
        detail,
        Evidence(
            mutated_block_id=entry.block_id if entry else "",
            block_start_utc_ms=entry.start_utc_ms if entry else None,
            range_start_utc_ms=request.range_start_utc_ms,
            range_end_utc_ms=request.range_end_utc_ms,
        ),
    )


def _check_contiguity(
    request: PublishRequest, facts: PublishFacts, new_entries: Sequence[Entry], on_air: Entry | None
) -> Rejection | None:
    """Afterwards the channel's entries must be one gap-free, overlap-free run.

    The stored entries already are one (the store only ever commits plans that
    pass this check), so only the new entries and their joints with the two
    neighbours need checking.
    """
    rs, re_ = request.range_start_utc_ms, request.range_end_utc_ms
    for entry in facts.affected:
        if on_air is not None and entry.block_id == on_air.block_id and entry.end_utc_ms <= re_:
            continue  # a cut: its part before the range start stays
        if entry.start_utc_ms < rs or entry.end_utc_ms > re_:
            return _contiguity(
                f"range [{rs}, {re_}) cuts {_describe(entry)}; a publish replaces whole entries: "
                f"widen the range to [{min(rs, entry.start_utc_ms)}, {max(re_, entry.end_utc_ms)})",
                request,
                entry,
            )
    sequence: list[Entry] = []
    if on_air is not None:
        sequence.append(dataclasses.replace(on_air, end_utc_ms=rs))
    elif facts.left_neighbour is not None:
        sequence.append(facts.left_neighbour)
    sequence.extend(new_entries)
    if facts.right_neighbour is not None:
        sequence.append(facts.right_neighbour)
    for before, after in itertools.pairwise(sequence):
        if after.start_utc_ms > before.end_utc_ms:
            return _contiguity(
                f"gap [{before.end_utc_ms}, {after.start_utc_ms}) between {_describe(before)} and "
                f"{_describe(after)}; entries must tile the range with no gap",
                request,
                after,
            )
        if after.start_utc_ms < before.end_utc_ms:
            return _contiguity(
                f"{_describe(after)} overlaps {_describe(before)}; entries must not overlap",
                request,
                after,
            )
    return None


def _check_block_ids(
    in_use: frozenset[str], on_air: Entry | None, new_entries: Sequence[Entry]
) -> Rejection | None:
    if on_air is not None and any(e.block_id == on_air.block_id for e in new_entries):
        in_use = in_use | {on_air.block_id}  # the cut keeps that id for the aired part
    if in_use:
        ids = ", ".join(repr(b) for b in sorted(in_use))
        return Rejection(
            ErrorCode.BLOCK_ID_CONFLICT,
            f"block ids {ids} already belong to other entries of the channel outside the range; "
            "block ids are unique per channel: choose new ids or widen the range",
            Evidence(mutated_block_id=sorted(in_use)[0]),
        )
    return None


def _check_same_span(existing: Entry, new_entry: Entry) -> Rejection | None:
    if (new_entry.start_utc_ms, new_entry.end_utc_ms) != (
        existing.start_utc_ms,
        existing.end_utc_ms,
    ):
        return Rejection(
            ErrorCode.CONTIGUITY_VIOLATION,
            f"a replacement must occupy the same [start, end) as {_describe(existing)}, got "
            f"[{new_entry.start_utc_ms}, {new_entry.end_utc_ms}); use PublishAtomicReplace to "
            "change timing",
            Evidence(mutated_block_id=existing.block_id, block_start_utc_ms=existing.start_utc_ms),
        )
    return None


def _check_derivation(
    request: PublishRequest, new_entries: Sequence[Entry], dates: frozenset[str]
) -> Rejection | None:
    if request.operator_override:
        return None  # an override's record anchors its entries
    for entry in new_entries:
        if entry.programming_day_date not in dates:
            return Rejection(
                ErrorCode.DERIVATION_UNTRACEABLE,
                f"block {entry.block_id!r} names programming day {entry.programming_day_date} of "
                f"channel {request.channel_id!r}, which has no ScheduleDay; store the day with "
                "ScheduleDayService.StoreScheduleDay first",
                Evidence(
                    mutated_block_id=entry.block_id,
                    block_start_utc_ms=entry.start_utc_ms,
                    programming_day_date=entry.programming_day_date,
                ),
            )
    return None


def _plan(
    request: PublishRequest,
    affected: Sequence[Entry],
    new_entries: Sequence[Entry],
    channel: Channel,
    now: int,
    override_record_id: str,
    on_air: Entry | None = None,
) -> PublishPlan:
    generation = request.generation_id or channel.current_generation_id + 1
    record_id = override_record_id if request.operator_override else ""
    target = f"execution_window [{request.range_start_utc_ms}, {request.range_end_utc_ms})"
    cut = None
    if on_air is not None:
        # The cut entry's aired part stays, under the new generation.
        cut = cut_entry(on_air, request.range_start_utc_ms, generation, record_id)
        target += f", cutting block {on_air.block_id} at {request.range_start_utc_ms}"
    record = None
    if request.operator_override:
        record = OverrideRecord(
            id=record_id,
            layer=OverrideLayer.EXECUTION_WINDOW,
            channel_id=request.channel_id,
            target=target,
            reason_code=request.reason_code,
            actor=request.actor,
            actor_note=request.actor_note,
            created_utc_ms=now,
            resulting_generation_id=generation,
            superseded_entries=tuple(
                SupersededEntry(e.block_id, e.generation_id, e.start_utc_ms, e.end_utc_ms) for e in affected
            ),
            range_start_utc_ms=request.range_start_utc_ms,
            range_end_utc_ms=request.range_end_utc_ms,
        )
    return PublishPlan(
        channel_id=request.channel_id,
        generation_id=generation,
        previous_generation_id=channel.current_generation_id,
        range_start_utc_ms=request.range_start_utc_ms,
        range_end_utc_ms=request.range_end_utc_ms,
        new_entries=tuple(new_entries),
        superseded=tuple(affected),
        override_record=record,
        cut=cut,
        reason_code=request.reason_code,
        actor=request.actor,
        committed_utc_ms=now,
    )
