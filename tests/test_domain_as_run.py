"""The reconciliation and as-run rules as pure functions (domain/as_run.py):
no server, no store."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from playlog.domain.as_run import (
    AsRunEvent,
    AsRunRecord,
    AsRunStatus,
    DiscrepancyKind,
    EntryVersion,
    ReportPlan,
    decide_report,
    reconcile,
)
from playlog.domain.model import Entry, ErrorCode, Segment
from playlog.domain.rejection import Rejection

CH = "ch1"


def log_of(durations: list[list[int]], start: int = 1_000_000) -> list[Entry]:
    """Contiguous entries b0, b1, ... whose segments last `durations[i]`."""
    entries, at = [], start
    for i, segs in enumerate(durations):
        segments = tuple(
            Segment(f"b{i}-s{j}", "program", f"asset://b{i}/{j}", 0, d, "") for j, d in enumerate(segs)
        )
        entries.append(Entry(CH, f"b{i}", i, at, at + sum(segs), segments, "2026-11-22", generation_id=1))
        at += sum(segs)
    return entries


def perfect_as_run(entries: list[Entry]) -> list[AsRunRecord]:
    out = []
    for e in entries:
        at = e.start_utc_ms
        for s in e.segments:
            event = AsRunEvent(
                f"{s.segment_id}",
                e.block_id,
                e.generation_id,
                s.segment_id,
                s.asset_uri,
                at,
                at + s.duration_ms,
                AsRunStatus.AIRED,
            )
            out.append(AsRunRecord(event, "engine-1", CH, at + s.duration_ms, True))
            at += s.duration_ms
    return out


def versions_of(entries: list[Entry]) -> dict[tuple[str, int], EntryVersion]:
    return {
        (e.block_id, e.generation_id): EntryVersion(e.block_id, e.generation_id, e.start_utc_ms, e.end_utc_ms)
        for e in entries
    }


DURATIONS = st.lists(st.lists(st.integers(1, 600_000), min_size=1, max_size=4), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(DURATIONS, st.integers(0, 5_000))
def test_a_perfect_as_run_reconciles_to_nothing(durations: list[list[int]], tolerance: int) -> None:
    entries = log_of(durations)
    now = entries[-1].end_utc_ms
    result = reconcile(
        entries[0].start_utc_ms,
        now,
        now,
        tolerance,
        entries,
        perfect_as_run(entries),
        versions_of(entries),
        0,
    )
    assert result.discrepancies == []
    assert result.blocks_due == len(entries)


@settings(max_examples=60, deadline=None)
@given(DURATIONS, st.data())
def test_a_block_without_as_run_is_missing_and_nothing_else(
    durations: list[list[int]], data: st.DataObject
) -> None:
    entries = log_of(durations)
    dropped = data.draw(st.sampled_from(entries))
    events = [r for r in perfect_as_run(entries) if r.event.block_id != dropped.block_id]
    now = entries[-1].end_utc_ms
    result = reconcile(entries[0].start_utc_ms, now, now, 1000, entries, events, versions_of(entries), 0)
    assert [(d.kind, d.block_id) for d in result.discrepancies] == [
        (DiscrepancyKind.MISSING_AS_RUN, dropped.block_id)
    ]


@settings(max_examples=60, deadline=None)
@given(DURATIONS, st.data(), st.integers(0, 5_000), st.integers(-20_000, 20_000))
def test_a_start_off_is_reported_exactly_when_beyond_the_tolerance(
    durations: list[list[int]], data: st.DataObject, tolerance: int, shift: int
) -> None:
    entries = log_of(durations)
    events = perfect_as_run(entries)
    i = data.draw(st.integers(0, len(events) - 1))
    e = events[i].event
    moved = AsRunEvent(
        e.event_id,
        e.block_id,
        e.generation_id,
        e.segment_id,
        e.asset_uri,
        e.started_utc_ms + shift,
        max(e.ended_utc_ms, e.started_utc_ms + shift),
        e.status,
    )
    events[i] = AsRunRecord(moved, "engine-1", CH, 0, True)
    now = entries[-1].end_utc_ms + 30_000
    result = reconcile(entries[0].start_utc_ms, now, now, tolerance, entries, events, versions_of(entries), 0)
    starts = [d for d in result.discrepancies if d.kind == DiscrepancyKind.START_OFF]
    assert len(starts) == (1 if abs(shift) > tolerance else 0)
    assert not [d for d in result.discrepancies if d.kind == DiscrepancyKind.MISSING_AS_RUN]


def test_an_event_naming_a_pruned_generation_is_noted_not_reported() -> None:
    entries = log_of([[1000]])
    ghost = AsRunRecord(
        AsRunEvent("x", "b0", 1, "", "", entries[0].start_utc_ms, entries[0].end_utc_ms, AsRunStatus.AIRED),
        "engine-1",
        CH,
        0,
        False,
    )
    now = entries[0].end_utc_ms
    # Generation 1 of b0 is not among the stored versions, and the floor is 3: pruned.
    pruned = reconcile(entries[0].start_utc_ms, now, now, 1000, entries, [ghost], {}, 3)
    assert [d.kind for d in pruned.discrepancies] == [DiscrepancyKind.MISSING_AS_RUN]
    assert "pruned" in pruned.notes[0]
    # Above the floor, nothing was pruned: it is untraced.
    untraced = reconcile(entries[0].start_utc_ms, now, now, 1000, entries, [ghost], {}, 0)
    assert DiscrepancyKind.UNTRACED_AS_RUN in [d.kind for d in untraced.discrepancies]


def test_a_report_is_stored_whole_or_not_at_all() -> None:
    def event(i: str, end: int = 10) -> AsRunEvent:
        return AsRunEvent(i, "b0", 1, "", "", 0, end, AsRunStatus.AIRED)

    stored = {"a": AsRunRecord(event("a"), "g", CH, 5, True)}
    plan = decide_report(CH, True, "g", [event("a"), event("b")], stored, frozenset({("b0", 1)}), 100)
    assert isinstance(plan, ReportPlan) and plan.duplicates == 1
    assert [r.event.event_id for r in plan.records] == ["b"]
    future = decide_report(CH, True, "g", [event("b"), event("c", 101)], stored, frozenset(), 100)
    assert isinstance(future, Rejection) and future.code == ErrorCode.AS_RUN_IN_FUTURE
    conflict = decide_report(CH, True, "g", [event("b"), event("a", 9)], stored, frozenset(), 100)
    assert isinstance(conflict, Rejection) and conflict.code == ErrorCode.AS_RUN_CONFLICT
    assert "ended_utc_ms" in conflict.detail
