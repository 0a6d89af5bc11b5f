"""What engines say they applied and what aired (SPEC section 12), and the
rules that judge it: acknowledgements, as-run evidence and its reconciliation
against the log. Plain functions and dataclasses; no gRPC, no SQL.

The log says what should air; an engine's as-run says what did. As-run is
evidence of the past: append-only, idempotent by (engine, event_id) so an
engine can retry after a reconnect, and never about the future.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from playlog.domain.model import Channel, Entry, ErrorCode, OverrideRecord
from playlog.domain.rejection import Evidence, FieldViolation, Rejection
from playlog.domain.validation import MAX_UTC_MS, check_id, check_interval, quote, raise_if_any

# One report carries what aired since the last one: a day of 10-second
# segments is 8640 events, so an engine that was cut off for a day retries in
# a few requests; bounded so that one request is one short transaction.
MAX_EVENTS_PER_REPORT = 1_000
MAX_DETAIL_CHARS = 1_024
MAX_ASSET_URI_CHARS = 2_048
# A reconciliation reads every entry and event of its range at once.
MAX_RECONCILE_MS = 31 * 86_400_000
# START_OFF / END_OFF tolerance by default: a second is well above what a
# frame-accurate playout reports (a frame is 40 ms at 25 fps) plus the rounding
# of wall-clock timestamps, and well below what a viewer or an advertiser
# would call "late" (traffic systems reconcile spots to the second).
DEFAULT_TOLERANCE_MS = 1_000


class AsRunStatus(enum.Enum):
    AIRED = "AIRED"
    CUT_SHORT = "CUT_SHORT"
    FAILED = "FAILED"
    SUBSTITUTED = "SUBSTITUTED"


class DiscrepancyKind(enum.Enum):
    MISSING_AS_RUN = "MISSING_AS_RUN"
    UNTRACED_AS_RUN = "UNTRACED_AS_RUN"
    CONTENT_MISMATCH = "CONTENT_MISMATCH"
    START_OFF = "START_OFF"
    END_OFF = "END_OFF"


@dataclass(frozen=True)
class AsRunEvent:
    """One thing that aired (or failed to), as the engine saw it."""

    event_id: str
    block_id: str
    generation_id: int
    segment_id: str
    asset_uri: str
    started_utc_ms: int
    ended_utc_ms: int
    status: AsRunStatus | None  # None: the request left it unspecified (malformed)
    detail: str = ""


@dataclass(frozen=True)
class AsRunRecord:
    """An as-run event as stored: who reported it, where, when it arrived."""

    event: AsRunEvent
    engine_id: str
    channel_id: str
    received_utc_ms: int
    traced: bool

    def same_content(self, other: AsRunRecord) -> bool:
        """A retry of the same event: everything the engine said is equal
        (when it arrived and whether it traced are playlog's, not the engine's)."""
        return self.event == other.event and self.channel_id == other.channel_id


@dataclass(frozen=True)
class Acknowledgement:
    channel_id: str
    engine_id: str
    generation_id: int
    accepted: bool
    detail: str
    acknowledged_utc_ms: int
    # The channel's generation when it was stored.
    channel_generation_id: int

    @property
    def override_record(self) -> OverrideRecord | None:
        return None  # evidence, not an override: nothing to record first


@dataclass(frozen=True)
class ReportPlan:
    """What a ReportAsRun stores: new records only (retries are counted)."""

    records: tuple[AsRunRecord, ...]
    duplicates: int

    @property
    def untraced_event_ids(self) -> list[str]:
        return [r.event.event_id for r in self.records if not r.traced]

    @property
    def override_record(self) -> OverrideRecord | None:
        return None


@dataclass(frozen=True)
class EngineStatus:
    """One engine on one channel, as ListEngines shows it."""

    engine_id: str
    channel_id: str
    applied_generation_id: int
    channel_generation_id: int
    behind_since_utc_ms: int
    last_acknowledged_utc_ms: int
    last_as_run_received_utc_ms: int
    last_as_run_ended_utc_ms: int
    last_nack_generation_id: int
    last_nack_utc_ms: int
    last_nack_detail: str

    @property
    def generations_behind(self) -> int:
        return max(0, self.channel_generation_id - self.applied_generation_id)


# -- check 1: well-formed requests ----------------------------------------------


def _check_text(value: str, field_name: str, limit: int, out: list[FieldViolation]) -> None:
    if len(value) > limit:
        out.append(FieldViolation(field_name, f"at most {limit} characters, got {len(value)}"))


def validate_acknowledge(channel_id: str, detail: str) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    _check_text(detail, "detail", MAX_DETAIL_CHARS, out)
    raise_if_any(out)


def validate_report(channel_id: str, events: Sequence[AsRunEvent]) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    if not events:
        out.append(FieldViolation("events", "at least one event is required"))
    if len(events) > MAX_EVENTS_PER_REPORT:
        out.append(
            FieldViolation("events", f"at most {MAX_EVENTS_PER_REPORT} events per report, got {len(events)}")
        )
        raise_if_any(out)  # not worth reading further
    seen: set[str] = set()
    for i, e in enumerate(events):
        prefix = f"events[{i}]."
        check_id(e.event_id, f"{prefix}event_id", out)
        if e.event_id and e.event_id in seen:
            out.append(FieldViolation(f"{prefix}event_id", f"duplicate {quote(e.event_id)} in this report"))
        seen.add(e.event_id)
        check_id(e.block_id, f"{prefix}block_id", out)
        if e.generation_id <= 0:
            out.append(
                FieldViolation(
                    f"{prefix}generation_id",
                    "required: the generation of the entry the engine was playing (>= 1)",
                )
            )
        if e.segment_id:  # empty: the event is about the whole block
            check_id(e.segment_id, f"{prefix}segment_id", out)
        _check_text(e.asset_uri, f"{prefix}asset_uri", MAX_ASSET_URI_CHARS, out)
        _check_text(e.detail, f"{prefix}detail", MAX_DETAIL_CHARS, out)
        if e.status is None:
            out.append(FieldViolation(f"{prefix}status", "required: AIRED, CUT_SHORT, FAILED or SUBSTITUTED"))
        # A failure may take no time at all: end == start is allowed.
        if not 0 <= e.started_utc_ms <= MAX_UTC_MS:
            out.append(FieldViolation(f"{prefix}started_utc_ms", f"must be between 0 and {MAX_UTC_MS}"))
        elif e.ended_utc_ms < e.started_utc_ms:
            out.append(
                FieldViolation(
                    f"{prefix}ended_utc_ms",
                    f"must not be before started_utc_ms ({e.started_utc_ms}), got {e.ended_utc_ms}",
                )
            )
    raise_if_any(out)


def validate_reconcile(channel_id: str, start_utc_ms: int, end_utc_ms: int, now_utc_ms: int) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    if check_interval(start_utc_ms, end_utc_ms, "", out):
        if end_utc_ms > now_utc_ms:
            out.append(
                FieldViolation(
                    "end_utc_ms",
                    f"must not be after now ({now_utc_ms}), got {end_utc_ms}: "
                    "only what has aired can be reconciled",
                )
            )
        if end_utc_ms - start_utc_ms > MAX_RECONCILE_MS:
            out.append(
                FieldViolation(
                    "end_utc_ms",
                    f"the range may span at most {MAX_RECONCILE_MS} ms (31 days), "
                    f"got {end_utc_ms - start_utc_ms}: reconcile it in parts",
                )
            )
    raise_if_any(out)


# -- decisions --------------------------------------------------------------------


def _unknown_channel(channel_id: str) -> Rejection:
    return Rejection(
        ErrorCode.UNKNOWN_CHANNEL,
        f"channel {quote(channel_id)} is not declared; nothing was stored",
    )


def decide_acknowledge(
    channel_id: str,
    channel: Channel | None,
    engine_id: str,
    applied_generation_id: int,
    accepted: bool,
    detail: str,
    now_utc_ms: int,
) -> Acknowledgement | Rejection:
    if channel is None:
        return _unknown_channel(channel_id)
    if applied_generation_id > channel.current_generation_id:
        return Rejection(
            ErrorCode.NOT_FOUND,
            f"generation {applied_generation_id} of channel {quote(channel_id)} does not exist: "
            f"the channel's latest is {channel.current_generation_id}; acknowledge only a "
            "generation received from WatchWindow or ReadWindowSnapshot. Nothing was stored",
            Evidence(extra={"applied_generation_id": applied_generation_id, "engine_id": engine_id}),
        )
    return Acknowledgement(
        channel_id,
        engine_id,
        applied_generation_id,
        accepted,
        detail,
        now_utc_ms,
        channel.current_generation_id,
    )


def decide_report(
    channel_id: str,
    channel_known: bool,
    engine_id: str,
    events: Sequence[AsRunEvent],
    stored: Mapping[str, AsRunRecord],
    traced: frozenset[tuple[str, int]],
    now_utc_ms: int,
) -> ReportPlan | Rejection:
    """The whole report is stored or none of it: the first event refused
    refuses the request. `stored` holds this engine's records with the
    report's event ids; `traced` the (block, generation) pairs some entry had."""
    if not channel_known:
        return _unknown_channel(channel_id)
    new: list[AsRunRecord] = []
    duplicates = 0
    for i, e in enumerate(events):
        if e.ended_utc_ms > now_utc_ms:
            return Rejection(
                ErrorCode.AS_RUN_IN_FUTURE,
                f"events[{i}] ({quote(e.event_id)}) ends at {e.ended_utc_ms}, after now ({now_utc_ms}): "
                "as-run is evidence of what has aired; report an event once it has ended. "
                "Nothing of this report was stored",
                Evidence(
                    mutated_block_id=e.block_id,
                    block_start_utc_ms=e.started_utc_ms,
                    lock_boundary_T=now_utc_ms,
                    extra={"event_id": e.event_id, "ended_utc_ms": e.ended_utc_ms, "engine_id": engine_id},
                ),
            )
        record = AsRunRecord(e, engine_id, channel_id, now_utc_ms, (e.block_id, e.generation_id) in traced)
        previous = stored.get(e.event_id)
        if previous is None:
            new.append(record)
        elif previous.same_content(record):
            duplicates += 1  # a retry: already stored, nothing to add
        else:
            return Rejection(
                ErrorCode.AS_RUN_CONFLICT,
                f"events[{i}]: event_id {quote(e.event_id)} of engine {quote(engine_id)} is already "
                f"stored with different content ({_differences(previous, record)}); as-run is "
                "append-only: give a new event a new event_id. Nothing of this report was stored",
                Evidence(
                    mutated_block_id=e.block_id,
                    block_start_utc_ms=e.started_utc_ms,
                    extra={"event_id": e.event_id, "engine_id": engine_id},
                ),
            )
    return ReportPlan(tuple(new), duplicates)


def _differences(stored: AsRunRecord, sent: AsRunRecord) -> str:
    names = ["channel_id"] if stored.channel_id != sent.channel_id else []
    for name in AsRunEvent.__dataclass_fields__:
        if getattr(stored.event, name) != getattr(sent.event, name):
            names.append(name)
    return "differs in " + ", ".join(names)


# -- reconciliation -----------------------------------------------------------------


@dataclass(frozen=True)
class EntryVersion:
    """One version of a block as the store keeps it: current, or superseded
    by a later generation (committed at superseded_utc_ms)."""

    block_id: str
    generation_id: int
    start_utc_ms: int
    end_utc_ms: int
    superseded_by_generation: int = 0
    superseded_utc_ms: int = 0


@dataclass(frozen=True)
class Discrepancy:
    kind: DiscrepancyKind
    block_id: str
    generation_id: int
    engine_id: str = ""
    event_id: str = ""
    expected_utc_ms: int = 0
    actual_utc_ms: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Reconciliation:
    discrepancies: list[Discrepancy]
    tolerance_ms: int
    blocks_due: int
    as_run_events: int
    # What could not be checked, and why (e.g. pruned history): said here
    # rather than reported as a discrepancy that may be false.
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Span:
    segment_id: str
    asset_uri: str
    start_utc_ms: int
    end_utc_ms: int


def _segment_spans(entry: Entry) -> list[_Span]:
    """Each segment's instants on air. A cut entry ends early: its last
    segment is already shortened to end at the cut."""
    spans, at = [], entry.start_utc_ms
    for s in entry.segments:
        end = min(at + s.duration_ms, entry.end_utc_ms)
        spans.append(_Span(s.segment_id, s.asset_uri, at, end))
        at = end
    return spans


def reconcile(
    start_utc_ms: int,
    end_utc_ms: int,
    now_utc_ms: int,
    tolerance_ms: int,
    entries: Iterable[Entry],
    events: Iterable[AsRunRecord],
    versions: Mapping[tuple[str, int], EntryVersion],
    history_floor_generation: int,
) -> Reconciliation:
    """The log against the evidence over [start, end).

    `entries` are the channel's current entries overlapping the range and
    the events' spans: for an instant that has aired they are the ones that
    were authoritative then (the past is never rewritten, and a cut keeps the
    aired part of the entry on air, shortened, under the cut's generation).
    `events` are the as-run overlapping the range; `versions` every stored
    version of the blocks they name. Versions superseded at or below
    `history_floor_generation` may have been pruned: an event naming one that
    is missing cannot be judged.
    """
    entries = list(entries)
    in_range = [e for e in entries if e.start_utc_ms < end_utc_ms and e.end_utc_ms > start_utc_ms]
    due = [e for e in in_range if e.end_utc_ms <= now_utc_ms]
    on_air = [e for e in in_range if e.end_utc_ms > now_utc_ms]
    # An event overlapping the range may be about a block just outside it
    # (a late end): it is judged against that block, which is not due here.
    by_block = {e.block_id: e for e in entries}
    out: list[Discrepancy] = []
    notes: list[str] = []
    covered: set[str] = set()
    unjudged: list[str] = []
    events = list(events)
    for record in events:
        e = record.event
        version = versions.get((e.block_id, e.generation_id))
        if version is None:
            if e.generation_id <= history_floor_generation:
                unjudged.append(e.event_id)
                continue
            out.append(
                Discrepancy(
                    DiscrepancyKind.UNTRACED_AS_RUN,
                    e.block_id,
                    e.generation_id,
                    record.engine_id,
                    e.event_id,
                    actual_utc_ms=e.started_utc_ms,
                    detail=f"no entry of this channel ever had block {quote(e.block_id)} "
                    f"with generation {e.generation_id}",
                )
            )
            continue
        # Current block ids are unique on a channel: the block, if it is in
        # the range, is the one the event is about, early or late.
        target = by_block.get(e.block_id)
        if target is None or _stale(version, e):
            out.append(_aired_what_was_not_authoritative(record, version, entries))
            continue
        covered.add(target.block_id)
        out.extend(_compare(record, target, tolerance_ms))
    for entry in due:
        if entry.block_id not in covered:
            out.append(
                Discrepancy(
                    DiscrepancyKind.MISSING_AS_RUN,
                    entry.block_id,
                    entry.generation_id,
                    expected_utc_ms=entry.start_utc_ms,
                    detail=f"block {quote(entry.block_id)} was due [{entry.start_utc_ms}, "
                    f"{entry.end_utc_ms}) and no engine reported it",
                )
            )
    if unjudged:
        notes.append(
            f"{len(unjudged)} event(s) name a generation at or below {history_floor_generation}, "
            "whose superseded entries were pruned from the history (history_retention_publishes): "
            "they could not be traced or compared and are not reported as discrepancies "
            f"(first: {quote(unjudged[0])})"
        )
    if on_air:
        notes.append(
            f"block {quote(on_air[0].block_id)} is still on air (ends at {on_air[0].end_utc_ms}): "
            "it is not due for as-run yet and is not counted"
        )
    out.sort(key=lambda d: (d.expected_utc_ms or d.actual_utc_ms, d.kind.value, d.event_id))
    return Reconciliation(out, tolerance_ms, len(due), len(events), notes)


def _stale(version: EntryVersion, event: AsRunEvent) -> bool:
    """The version the engine played had been replaced before the event
    started: it aired what was no longer authoritative. (A cut replaces the
    entry on air while it airs: its aired part, before the cut, was still
    authoritative.)"""
    return bool(version.superseded_by_generation) and version.superseded_utc_ms <= event.started_utc_ms


def _aired_what_was_not_authoritative(
    record: AsRunRecord, version: EntryVersion, entries: Iterable[Entry]
) -> Discrepancy:
    e = record.event
    then = next(
        (x for x in entries if x.start_utc_ms <= e.started_utc_ms < x.end_utc_ms),
        None,
    )
    authoritative = (
        f"block {quote(then.block_id)} of generation {then.generation_id} was authoritative then"
        if then is not None
        else "no entry was scheduled then"
    )
    why = (
        f"generation {version.generation_id} of the block was replaced by generation "
        f"{version.superseded_by_generation} at {version.superseded_utc_ms}, before it aired"
        if version.superseded_by_generation and version.superseded_utc_ms <= e.started_utc_ms
        else f"the block was scheduled for [{version.start_utc_ms}, {version.end_utc_ms})"
    )
    return Discrepancy(
        DiscrepancyKind.CONTENT_MISMATCH,
        e.block_id,
        e.generation_id,
        record.engine_id,
        e.event_id,
        expected_utc_ms=then.start_utc_ms if then is not None else 0,
        actual_utc_ms=e.started_utc_ms,
        detail=f"aired block {quote(e.block_id)} (generation {e.generation_id}) at {e.started_utc_ms}, "
        f"but {why}; {authoritative}",
    )


def _compare(record: AsRunRecord, target: Entry, tolerance_ms: int) -> list[Discrepancy]:
    """An event against the entry that was authoritative when it aired: the
    segment and asset, then the start and end (of the segment when it names
    one, else of the block)."""
    e = record.event
    out: list[Discrepancy] = []

    def found(kind: DiscrepancyKind, expected: int, actual: int, detail: str) -> None:
        out.append(
            Discrepancy(kind, e.block_id, target.generation_id, record.engine_id, e.event_id,
                        expected, actual, detail)
        )  # fmt: skip

    spans = _segment_spans(target)
    expected = _Span("", "", target.start_utc_ms, target.end_utc_ms)
    if e.segment_id:
        match = next((s for s in spans if s.segment_id == e.segment_id), None)
        if match is None:
            found(
                DiscrepancyKind.CONTENT_MISMATCH,
                target.start_utc_ms,
                e.started_utc_ms,
                f"segment {quote(e.segment_id)} is not in block {quote(target.block_id)} "
                f"(generation {target.generation_id}); its segments are "
                + ", ".join(quote(s.segment_id) for s in spans),
            )
            return out
        expected = match
        if e.asset_uri and e.asset_uri != match.asset_uri:
            found(
                DiscrepancyKind.CONTENT_MISMATCH,
                match.start_utc_ms,
                e.started_utc_ms,
                f"segment {quote(e.segment_id)} aired asset {quote(e.asset_uri, 200)}, the log has "
                f"{quote(match.asset_uri, 200)} (status {e.status.value if e.status else '?'})",
            )
    elif e.asset_uri and e.asset_uri not in {s.asset_uri for s in spans}:
        found(
            DiscrepancyKind.CONTENT_MISMATCH,
            target.start_utc_ms,
            e.started_utc_ms,
            f"asset {quote(e.asset_uri, 200)} is in no segment of block {quote(target.block_id)} "
            f"(generation {target.generation_id})",
        )
    if abs(e.started_utc_ms - expected.start_utc_ms) > tolerance_ms:
        found(
            DiscrepancyKind.START_OFF,
            expected.start_utc_ms,
            e.started_utc_ms,
            f"started {e.started_utc_ms - expected.start_utc_ms:+d} ms from the log's start "
            f"(tolerance {tolerance_ms} ms)",
        )
    if abs(e.ended_utc_ms - expected.end_utc_ms) > tolerance_ms:
        found(
            DiscrepancyKind.END_OFF,
            expected.end_utc_ms,
            e.ended_utc_ms,
            f"ended {e.ended_utc_ms - expected.end_utc_ms:+d} ms from the log's end "
            f"(tolerance {tolerance_ms} ms; status {e.status.value if e.status else '?'})",
        )
    return out
