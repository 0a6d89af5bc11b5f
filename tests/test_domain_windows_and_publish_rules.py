"""The domain rules as plain functions: no server, no store."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playlog.domain.model import Channel, Entry, ErrorCode, Segment, WindowStatus
from playlog.domain.publish import (
    PublishFacts,
    PublishPlan,
    PublishRequest,
    ReplaceEntryFacts,
    ReplaceEntryRequest,
    cut_entry,
    decide_publish,
    decide_replace_entry,
)
from playlog.domain.rejection import MalformedRequest, Rejection
from playlog.domain.validation import validate_publish
from playlog.domain.windows import classify, locked_until, overlaps, overlaps_locked_window

T = 1_000_000
LOCK = 10_000
E = T + LOCK
CH = Channel("ch1", LOCK, 5)


def e(block_id: str, start: int, end: int, generation: int = 1, date: str = "2026-11-22") -> Entry:
    return Entry(
        channel_id="ch1",
        block_id=block_id,
        block_index=0,
        start_utc_ms=start,
        end_utc_ms=end,
        segments=(Segment(f"{block_id}-s", "program", "asset://x", 0, end - start, "t"),),
        programming_day_date=date,
        generation_id=generation,
    )


def req(
    start: int, end: int, entries: list[Entry], override: bool = False, generation: int = 0
) -> PublishRequest:
    return PublishRequest(
        channel_id="ch1",
        range_start_utc_ms=start,
        range_end_utc_ms=end,
        entries=tuple(entries),
        generation_id=generation,
        reason_code="OVERRIDE" if override else "",
        operator_override=override,
        actor="tester",
    )


DATES = frozenset({"2026-11-22"})


def facts(**kw: object) -> PublishFacts:
    base: dict[str, object] = {"channel": CH, "dates_with_schedule_day": DATES}
    base.update(kw)
    return PublishFacts(**base)  # type: ignore[arg-type]


def rejected(decision: PublishPlan | Rejection) -> ErrorCode:
    assert isinstance(decision, Rejection), decision
    return decision.code


# -- windows -------------------------------------------------------------------------


def test_an_entry_ending_exactly_at_now_is_past() -> None:
    assert classify(T - 100, T, T, LOCK) is WindowStatus.PAST


def test_an_entry_ending_just_after_now_is_locked() -> None:
    assert classify(T - 100, T + 1, T, LOCK) is WindowStatus.LOCKED


def test_an_entry_starting_exactly_at_the_lock_end_is_flexible() -> None:
    assert classify(E, E + 100, T, LOCK) is WindowStatus.FLEXIBLE


def test_an_entry_starting_just_before_the_lock_end_is_locked() -> None:
    assert classify(E - 1, E + 100, T, LOCK) is WindowStatus.LOCKED


def test_overlap_is_half_open() -> None:
    assert not overlaps(0, 10, 10, 20)
    assert not overlaps(10, 20, 0, 10)
    assert overlaps(0, 11, 10, 20)
    assert not overlaps_locked_window(E, E + 10, T, LOCK)
    assert not overlaps_locked_window(T - 10, T, T, LOCK)
    assert overlaps_locked_window(T - 10, T + 1, T, LOCK)
    assert locked_until(T, LOCK) == E


@given(
    start=st.integers(0, 3 * E),
    length=st.integers(1, 2 * LOCK),
    now=st.integers(0, 3 * E),
)
def test_every_entry_is_in_exactly_one_window(start: int, length: int, now: int) -> None:
    end = start + length
    status = classify(start, end, now, LOCK)
    assert (status is WindowStatus.PAST) == (end <= now)
    assert (status is WindowStatus.FLEXIBLE) == (end > now and start >= now + LOCK)
    assert (status is WindowStatus.LOCKED) == overlaps(start, end, now, now + LOCK)


# -- publish checks ---------------------------------------------------------------------


def test_a_flexible_publish_with_no_neighbours_is_planned_with_the_next_generation() -> None:
    plan = decide_publish(req(E, E + 200, [e("a", E, E + 100), e("b", E + 100, E + 200)]), facts(), T, "r1")
    assert isinstance(plan, PublishPlan)
    assert plan.generation_id == 6 and plan.previous_generation_id == 5
    assert [x.generation_id for x in plan.entries] == [6, 6]
    assert plan.override_record is None


def test_unknown_channel_is_refused_first() -> None:
    decision = decide_publish(req(T - 100, T, [e("a", T - 100, T)]), PublishFacts(None), T, "r")
    assert rejected(decision) is ErrorCode.UNKNOWN_CHANNEL


def test_a_past_entry_cannot_be_replaced_even_by_override() -> None:
    old = e("old", T - 200, T)
    decision = decide_publish(
        req(T - 200, E + 100, [e("n", T - 200, E + 100)], override=True), facts(affected=(old,)), T, "r"
    )
    assert rejected(decision) is ErrorCode.PAST_WINDOW_IMMUTABLE
    assert isinstance(decision, Rejection)
    assert decision.evidence.mutated_block_id == "old"
    assert decision.evidence.window_status is WindowStatus.PAST


def test_a_new_entry_ending_at_now_is_past() -> None:
    decision = decide_publish(
        req(T - 100, T + 100, [e("n", T - 100, T), e("m", T, T + 100)], override=True), facts(), T, "r"
    )
    assert rejected(decision) is ErrorCode.PAST_WINDOW_IMMUTABLE


def test_a_range_wholly_in_the_past_is_refused_even_when_empty() -> None:
    assert rejected(decide_publish(req(T - 100, T, []), facts(), T, "r")) is ErrorCode.PAST_WINDOW_IMMUTABLE


def test_past_is_checked_before_locked() -> None:
    decision = decide_publish(
        req(T - 100, T + 100, [e("n", T - 100, T + 100)]), facts(affected=(e("old", T - 100, T),)), T, "r"
    )
    assert rejected(decision) is ErrorCode.PAST_WINDOW_IMMUTABLE


def test_a_range_touching_the_locked_window_needs_an_override_even_over_empty_time() -> None:
    decision = decide_publish(req(E - 1, E + 100, [e("n", E - 1, E + 100)]), facts(), T, "r")
    assert rejected(decision) is ErrorCode.LOCKED_WINDOW_VIOLATION


def test_a_range_starting_exactly_at_the_lock_end_needs_no_override() -> None:
    assert isinstance(decide_publish(req(E, E + 100, [e("n", E, E + 100)]), facts(), T, "r"), PublishPlan)


def test_a_locked_entry_reached_by_a_flexible_range_needs_an_override() -> None:
    locked = e("locked", E - 50, E + 50)
    decision = decide_publish(req(E, E + 100, [e("n", E, E + 100)]), facts(affected=(locked,)), T, "r")
    assert rejected(decision) is ErrorCode.LOCKED_WINDOW_VIOLATION


def test_an_override_in_the_locked_window_carries_its_record_and_superseded_entries() -> None:
    old = e("old", T, T + 100, generation=4)
    plan = decide_publish(
        req(T, T + 100, [e("new", T, T + 100)], override=True), facts(affected=(old,)), T, "rec-1"
    )
    assert isinstance(plan, PublishPlan)
    assert plan.override_record is not None
    assert plan.override_record.id == "rec-1"
    assert plan.override_record.resulting_generation_id == plan.generation_id == 6
    assert [(s.block_id, s.generation_id) for s in plan.override_record.superseded_entries] == [("old", 4)]
    assert all(x.is_operator_override and x.override_record_id == "rec-1" for x in plan.entries)


def test_generation_zero_means_next_and_explicit_generations_must_rise() -> None:
    ok = decide_publish(req(E, E + 100, [e("n", E, E + 100)], generation=9), facts(), T, "r")
    assert isinstance(ok, PublishPlan) and ok.generation_id == 9
    for stale in (5, 4, 1):
        decision = decide_publish(req(E, E + 100, [e("n", E, E + 100)], generation=stale), facts(), T, "r")
        assert rejected(decision) is ErrorCode.GENERATION_NOT_MONOTONIC


def test_locked_is_checked_before_generation() -> None:
    decision = decide_publish(req(T, T + 100, [e("n", T, T + 100)], generation=1), facts(), T, "r")
    assert rejected(decision) is ErrorCode.LOCKED_WINDOW_VIOLATION


def test_a_range_that_cuts_an_entry_is_refused() -> None:
    existing = e("long", E, E + 1000)
    decision = decide_publish(
        req(E + 500, E + 1500, [e("n", E + 500, E + 1500)]), facts(affected=(existing,)), T, "r"
    )
    assert rejected(decision) is ErrorCode.CONTIGUITY_VIOLATION
    assert isinstance(decision, Rejection)
    assert "cuts block 'long'" in decision.detail and "widen the range" in decision.detail


def test_new_entries_must_tile_the_range_between_neighbours() -> None:
    left, right = e("l", E, E + 100), e("r", E + 300, E + 400)
    gap = decide_publish(
        req(E + 100, E + 300, [e("n", E + 100, E + 250)]),
        facts(left_neighbour=left, right_neighbour=right),
        T,
        "r",
    )
    assert rejected(gap) is ErrorCode.CONTIGUITY_VIOLATION
    tiled = decide_publish(
        req(E + 100, E + 300, [e("n", E + 100, E + 200), e("m", E + 200, E + 300)]),
        facts(left_neighbour=left, right_neighbour=right),
        T,
        "r",
    )
    assert isinstance(tiled, PublishPlan)


def test_new_entries_must_not_overlap_each_other() -> None:
    decision = decide_publish(
        req(E, E + 300, [e("a", E, E + 200), e("b", E + 100, E + 300)]), facts(), T, "r"
    )
    assert rejected(decision) is ErrorCode.CONTIGUITY_VIOLATION


def test_appending_after_a_gap_is_refused_and_appending_at_the_end_is_accepted() -> None:
    left = e("l", E, E + 100)
    after_gap = decide_publish(
        req(E + 200, E + 300, [e("n", E + 200, E + 300)]), facts(left_neighbour=left), T, "r"
    )
    assert rejected(after_gap) is ErrorCode.CONTIGUITY_VIOLATION
    adjacent = decide_publish(
        req(E + 100, E + 300, [e("n", E + 100, E + 300)]), facts(left_neighbour=left), T, "r"
    )
    assert isinstance(adjacent, PublishPlan)


def test_removing_the_middle_of_the_sequence_is_refused_but_trimming_the_tail_is_not() -> None:
    left, mid, right = e("l", E, E + 100), e("m", E + 100, E + 200), e("r", E + 200, E + 300)
    middle = decide_publish(
        req(E + 100, E + 200, []), facts(affected=(mid,), left_neighbour=left, right_neighbour=right), T, "r"
    )
    assert rejected(middle) is ErrorCode.CONTIGUITY_VIOLATION
    tail = decide_publish(req(E + 200, E + 300, []), facts(affected=(right,), left_neighbour=mid), T, "r")
    assert isinstance(tail, PublishPlan)


def test_a_block_id_used_outside_the_range_is_refused() -> None:
    decision = decide_publish(
        req(E, E + 100, [e("dup", E, E + 100)]), facts(block_ids_in_use_outside=frozenset({"dup"})), T, "r"
    )
    assert rejected(decision) is ErrorCode.BLOCK_ID_CONFLICT


def test_an_entry_naming_a_day_without_schedule_day_is_untraceable_unless_overridden() -> None:
    stray = e("n", E, E + 100, date="2026-12-01")
    assert rejected(decide_publish(req(E, E + 100, [stray]), facts(), T, "r")) is (
        ErrorCode.DERIVATION_UNTRACEABLE
    )
    assert isinstance(decide_publish(req(E, E + 100, [stray], override=True), facts(), T, "r"), PublishPlan)


def test_contiguity_is_checked_before_derivation() -> None:
    stray = e("n", E, E + 50, date="2026-12-01")
    decision = decide_publish(
        req(E, E + 100, [stray]), facts(right_neighbour=e("r", E + 100, E + 200)), T, "r"
    )
    assert rejected(decision) is ErrorCode.CONTIGUITY_VIOLATION


# -- ReplaceEntry -------------------------------------------------------------------------


def replace(entry: Entry, override: bool = False) -> ReplaceEntryRequest:
    return ReplaceEntryRequest(
        "ch1", entry.block_id, entry, override, "OVERRIDE" if override else "", "tester"
    )


def test_replace_entry_of_an_unknown_block_is_not_found() -> None:
    decision = decide_replace_entry(replace(e("x", E, E + 100)), ReplaceEntryFacts(CH, None, DATES), T, "r")
    assert rejected(decision) is ErrorCode.NOT_FOUND


def test_replace_entry_of_a_past_block_is_refused_even_by_override() -> None:
    old = e("x", T - 100, T)
    decision = decide_replace_entry(replace(old, override=True), ReplaceEntryFacts(CH, old, DATES), T, "r")
    assert rejected(decision) is ErrorCode.PAST_WINDOW_IMMUTABLE


def test_replace_entry_of_a_locked_block_needs_an_override() -> None:
    locked = e("x", T, T + 100)
    assert rejected(decide_replace_entry(replace(locked), ReplaceEntryFacts(CH, locked, DATES), T, "r")) is (
        ErrorCode.LOCKED_WINDOW_VIOLATION
    )
    plan = decide_replace_entry(replace(locked, override=True), ReplaceEntryFacts(CH, locked, DATES), T, "r")
    assert isinstance(plan, PublishPlan) and plan.generation_id == CH.current_generation_id + 1


def test_replace_entry_must_keep_the_same_span() -> None:
    existing = e("x", E, E + 100)
    moved = dataclasses.replace(existing, end_utc_ms=E + 90)
    decision = decide_replace_entry(replace(moved), ReplaceEntryFacts(CH, existing, DATES), T, "r")
    assert rejected(decision) is ErrorCode.CONTIGUITY_VIOLATION


# -- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: {**r, "channel_id": ""}, "channel_id"),
        (lambda r: {**r, "range_end_utc_ms": r["range_start_utc_ms"]}, "range_end_utc_ms"),
        (lambda r: {**r, "entries": [e("", E, E + 100)]}, "entries[0].block_id"),
        (lambda r: {**r, "entries": [e("a", E, E + 100), e("a", E + 100, E + 200)]}, "entries[1].block_id"),
        (lambda r: {**r, "entries": [e("a", E - 10, E + 100)]}, "entries[0]"),
        (
            lambda r: {**r, "entries": [dataclasses.replace(e("a", E, E + 100), end_utc_ms=E + 90)]},
            "entries[0].segments",
        ),
        (
            lambda r: {**r, "entries": [e("a", E, E + 100, date="2026-02-30")]},
            "entries[0].programming_day_date",
        ),
        (
            lambda r: {**r, "entries": [dataclasses.replace(e("a", E, E + 100), start_utc_ms=E + 100)]},
            "entries[0].end_utc_ms",
        ),
        (lambda r: {**r, "operator_override": True, "reason_code": ""}, "reason_code"),
    ],
)
def test_malformed_publishes_name_the_field(mutate, field) -> None:  # type: ignore[no-untyped-def]
    base = {
        "channel_id": "ch1",
        "range_start_utc_ms": E,
        "range_end_utc_ms": E + 1000,
        "entries": [e("a", E, E + 100)],
        "operator_override": False,
        "reason_code": "",
    }
    with pytest.raises(MalformedRequest) as info:
        validate_publish(**mutate(base))
    assert field in [v.field for v in info.value.violations], info.value.violations


# -- the cut of the entry on air (SPEC section 2) ------------------------------------------


def three_segments(block_id: str, start: int) -> Entry:
    """[start, start + 300): segments of 100, 150 and 50."""
    segs = tuple(
        Segment(f"{block_id}-{i}", "program", f"asset://{i}", 7, d, "t") for i, d in enumerate((100, 150, 50))
    )
    return dataclasses.replace(e(block_id, start, start + 300), segments=segs)


@given(cut=st.integers(min_value=1, max_value=299))
def test_a_cut_keeps_exactly_the_segments_before_it(cut: int) -> None:
    on_air = three_segments("live", T - 1)  # started just before now
    at = T - 1 + cut
    kept = cut_entry(on_air, at, 9, "rec")
    assert (kept.start_utc_ms, kept.end_utc_ms, kept.block_id) == (T - 1, at, "live")
    assert sum(s.duration_ms for s in kept.segments) == cut  # still sums to the entry's duration
    starts = [T - 1, T + 99, T + 249]
    assert [s.segment_id for s in kept.segments] == [f"live-{i}" for i, s0 in enumerate(starts) if s0 < at]
    assert all(s.asset_uri == f"asset://{i}" and s.asset_offset_ms == 7 for i, s in enumerate(kept.segments))
    assert (kept.generation_id, kept.is_operator_override, kept.override_record_id) == (9, True, "rec")


def test_the_cut_is_planned_only_for_the_entry_on_air_and_only_by_override() -> None:
    on_air = three_segments("live", T - 100)  # [T - 100, T + 200): on air
    after = e("next", T + 200, T + 400)
    request = req(T + 50, T + 200, [e("news", T + 50, T + 200)], override=True)
    plan = decide_publish(
        request,
        facts(affected=(on_air,), spanning_range_start=on_air, right_neighbour=after),
        T,
        "rec",
    )
    assert isinstance(plan, PublishPlan) and plan.cut is not None
    assert (plan.cut.end_utc_ms, plan.cut_block_id) == (T + 50, "live")
    assert [x.block_id for x in plan.entries] == ["live", "news"]
    assert plan.override_record is not None
    assert [(s.block_id, s.generation_id, s.end_utc_ms) for s in plan.override_record.superseded_entries] == [
        ("live", 1, T + 200)
    ]
    without = dataclasses.replace(request, operator_override=False, reason_code="")
    refused = decide_publish(without, facts(affected=(on_air,), spanning_range_start=on_air), T, "")
    assert rejected(refused) is ErrorCode.LOCKED_WINDOW_VIOLATION
    before_now = req(T - 50, T + 200, [e("news", T - 50, T + 200)], override=True)
    assert rejected(
        decide_publish(before_now, facts(affected=(on_air,), spanning_range_start=on_air), T, "r")
    ) is (ErrorCode.PAST_WINDOW_IMMUTABLE)
