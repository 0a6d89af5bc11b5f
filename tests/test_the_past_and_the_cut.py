"""Nothing aired is ever rewritten (SPEC sections 2 and 3, check 3): a range
may not start before now, the entry on air is never replaced whole, and it
changes only by a cut that keeps its aired part. Each test tries to break the
rule through the servicer and checks that a refusal changed nothing."""

from __future__ import annotations

import pytest

from playlog.clock import ManualClock
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, blocks, entry
from tests.conftest import Running, ViolationCapture
from tests.followers import follow

CH = "ch1"
# The air of the tests: b0..b5, one hour each from 02:00, two 30-minute
# segments per block; "now" is 02:30, so b0 = [02:00, 03:00) is on air.
AIR = T0 + 2 * HOUR
NOW = AIR + 30 * MINUTE


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def on_air(running: Running) -> Running:
    await running.declare(CH, HOUR)
    await running.store_days(CH, T0, T0 + DAY)
    result = await running.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=AIR,
            range_end_utc_ms=AIR + 6 * HOUR,
            entries=blocks(AIR, 6, HOUR),
        )
    )
    assert result.ok and result.published_generation_id == 1, result
    running.clock.set_utc_ms(NOW)
    return running


def override(start: int, end: int, entries: list[pb.ExecutionEntry]) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=CH,
        range_start_utc_ms=start,
        range_end_utc_ms=end,
        entries=entries,
        operator_override=True,
        reason_code="BREAKING_NEWS",
    )


async def window(r: Running) -> pb.WindowSnapshot:
    return await r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=T0, end_utc_ms=T0 + DAY)
    )


async def records(r: Running) -> list[pb.OverrideRecord]:
    page = await r.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH))
    return list(page.records)


PAST = pb.ERROR_CODE_PAST_WINDOW_IMMUTABLE


async def test_replace_entry_of_the_entry_on_air_is_refused_and_names_the_cut(on_air: Running) -> None:
    before = await window(on_air)
    for with_override in (True, False):  # check 3 comes before check 4
        result = await on_air.stubs.window.ReplaceEntry(
            ew.ReplaceEntryRequest(
                channel_id=CH,
                block_id="b0",
                entry=entry("b0", AIR, AIR + HOUR, title="rewritten"),
                operator_override=with_override,
                reason_code="BREAKING_NEWS" if with_override else "",
            )
        )
        assert not result.ok and result.error_code == PAST, result
        assert "on air" in result.error_detail and "cut" in result.error_detail
        assert str(NOW) in result.error_detail
    assert await window(on_air) == before
    assert await records(on_air) == []


async def test_an_override_over_the_whole_entry_on_air_is_refused(on_air: Running) -> None:
    before = await window(on_air)
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(
            AIR,
            AIR + HOUR,
            [entry("n0", AIR, AIR + 40 * MINUTE), entry("n1", AIR + 40 * MINUTE, AIR + HOUR)],
        )
    )
    assert not result.ok and result.error_code == PAST, result
    assert "starts before now" in result.error_detail and "cut" in result.error_detail
    assert await window(on_air) == before
    assert await records(on_air) == []


async def test_an_override_may_not_create_an_entry_in_elapsed_time_on_an_empty_channel(
    running: Running,
) -> None:
    await running.declare("empty", HOUR)
    running.clock.set_utc_ms(T0 + 10 * HOUR)
    result = await running.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id="empty",
            range_start_utc_ms=T0 + 9 * HOUR,
            range_end_utc_ms=T0 + 11 * HOUR,
            entries=[entry("late", T0 + 9 * HOUR, T0 + 11 * HOUR)],
            operator_override=True,
            reason_code="BREAKING_NEWS",
        )
    )
    assert not result.ok and result.error_code == PAST, result
    snap = await running.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="empty", start_utc_ms=T0, end_utc_ms=T0 + DAY)
    )
    assert list(snap.entries) == [] and snap.channel_generation_id == 0


async def test_a_cut_keeps_the_aired_part_of_the_entry_on_air(on_air: Running) -> None:
    cut_at = AIR + 40 * MINUTE  # C > T: 02:40, ten minutes into b0's second segment
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(cut_at, AIR + HOUR, [entry("news", cut_at, AIR + HOUR)])
    )
    assert result.ok and result.published_generation_id == 2, result
    snap = await window(on_air)
    b0, news = snap.entries[0], snap.entries[1]
    assert (b0.block_id, b0.start_utc_ms, b0.end_utc_ms) == ("b0", AIR, cut_at)
    # Segments up to C, the one spanning C shortened to end there.
    assert [(s.segment_id, s.duration_ms) for s in b0.segments] == [
        ("b0-s0", 30 * MINUTE),
        ("b0-s1", 10 * MINUTE),
    ]
    assert b0.segments[1].asset_uri == "asset://b0/1"  # otherwise as it was
    assert b0.generation_id == 2 and b0.is_operator_override
    assert b0.override_record_id == result.override_record_id
    assert (news.block_id, news.start_utc_ms, news.generation_id) == ("news", cut_at, 2)
    assert [e.block_id for e in snap.entries[2:]] == ["b1", "b2", "b3", "b4", "b5"]
    # The record names the cut entry with its old generation and span.
    [record] = await records(on_air)
    assert record.id == result.override_record_id
    assert [
        (s.block_id, s.generation_id, s.start_utc_ms, s.end_utc_ms) for s in record.superseded.entries
    ] == [("b0", 1, AIR, AIR + HOUR)]
    assert "cutting block b0" in record.target
    # The audit understands a cut: no mixed generations, no gap.
    verdict = await on_air.stubs.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(channel_id=CH))
    assert list(verdict.violations) == []


async def test_a_cut_at_now_on_a_segment_boundary_keeps_exactly_the_aired_segments(on_air: Running) -> None:
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(NOW, AIR + 2 * HOUR, [entry("live", NOW, AIR + 2 * HOUR)])
    )
    assert result.ok, result
    b0 = (await window(on_air)).entries[0]
    assert (b0.end_utc_ms, [s.segment_id for s in b0.segments]) == (NOW, ["b0-s0"])
    assert b0.segments[0].duration_ms == 30 * MINUTE


async def test_a_cut_needs_the_override(on_air: Running) -> None:
    before = await window(on_air)
    request = override(AIR + 40 * MINUTE, AIR + HOUR, [entry("news", AIR + 40 * MINUTE, AIR + HOUR)])
    request.operator_override = False
    result = await on_air.stubs.window.PublishAtomicReplace(request)
    assert not result.ok and result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION, result
    assert await window(on_air) == before


async def test_a_cut_may_not_give_the_cut_block_id_to_a_new_entry(on_air: Running) -> None:
    before = await window(on_air)
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(AIR + 40 * MINUTE, AIR + HOUR, [entry("b0", AIR + 40 * MINUTE, AIR + HOUR)])
    )
    assert not result.ok and result.error_code == pb.ERROR_CODE_BLOCK_ID_CONFLICT, result
    assert await window(on_air) == before


async def test_a_range_starting_inside_an_entry_not_yet_on_air_still_cuts_nothing(on_air: Running) -> None:
    # b1 = [03:00, 04:00) has not started: a publish replaces it whole or not at all.
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(
            AIR + HOUR + 20 * MINUTE, AIR + 2 * HOUR, [entry("x", AIR + HOUR + 20 * MINUTE, AIR + 2 * HOUR)]
        )
    )
    assert not result.ok and result.error_code == pb.ERROR_CODE_CONTIGUITY_VIOLATION, result


async def test_watchers_and_resumers_receive_the_cut_entry_with_the_new_generation(on_air: Running) -> None:
    live = follow(on_air)
    await live.until(lambda: live.snapshots())
    cut_at = AIR + 40 * MINUTE
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(cut_at, AIR + HOUR, [entry("news", cut_at, AIR + HOUR)])
    )
    assert result.ok, result
    await live.until(lambda: live.replaced())
    resumed = follow(on_air, after=1)
    await resumed.until(lambda: resumed.replaced())
    for event in (live.replaced()[0], resumed.replaced()[0]):
        assert (event.generation_id, event.previous_generation_id) == (2, 1)
        assert (event.range_start_utc_ms, event.range_end_utc_ms) == (cut_at, AIR + HOUR)
        assert [(e.block_id, e.start_utc_ms, e.end_utc_ms) for e in event.entries] == [
            ("b0", AIR, cut_at),
            ("news", cut_at, AIR + HOUR),
        ]
        assert event.operator_override and event.override_record_id == result.override_record_id
    live.cancel()
    resumed.cancel()


async def test_once_aired_a_cut_part_is_past_like_any_other(on_air: Running) -> None:
    cut_at = AIR + 40 * MINUTE
    assert (
        await on_air.stubs.window.PublishAtomicReplace(
            override(cut_at, AIR + HOUR, [entry("news", cut_at, AIR + HOUR)])
        )
    ).ok
    on_air.clock.set_utc_ms(AIR + 50 * MINUTE)  # b0's kept part has aired; news is on air
    before = await window(on_air)
    result = await on_air.stubs.window.PublishAtomicReplace(
        override(cut_at, AIR + HOUR, [entry("other", cut_at, AIR + HOUR)])
    )
    assert not result.ok and result.error_code == PAST, result
    replaced = await on_air.stubs.window.ReplaceEntry(
        ew.ReplaceEntryRequest(
            channel_id=CH,
            block_id="b0",
            entry=entry("b0", AIR, cut_at),
            operator_override=True,
            reason_code="FIX",
        )
    )
    assert not replaced.ok and replaced.error_code == PAST, replaced
    assert await window(on_air) == before


# -- dry runs (AIP-163 validate_only) --------------------------------------------------------


async def test_a_dry_run_of_a_cut_says_what_it_would_do_and_changes_nothing(
    on_air: Running, violations: ViolationCapture
) -> None:
    before = await window(on_air)
    watcher = follow(on_air)
    await watcher.until(lambda: watcher.snapshots())
    cut_at = AIR + 40 * MINUTE
    request = override(cut_at, AIR + HOUR, [entry("news", cut_at, AIR + HOUR)])
    request.validate_only = True
    result = await on_air.stubs.window.PublishAtomicReplace(request)
    assert result.ok and result.validate_only and result.published_generation_id == 2, result
    assert not result.override_record_id  # no record was written
    assert [(s.block_id, s.generation_id, s.start_utc_ms, s.end_utc_ms) for s in result.would_supersede] == [
        ("b0", 1, AIR, AIR + HOUR)
    ]
    assert [(e.block_id, e.start_utc_ms, e.end_utc_ms, e.generation_id) for e in result.would_write] == [
        ("b0", AIR, cut_at, 2),
        ("news", cut_at, AIR + HOUR, 2),
    ]
    assert await window(on_air) == before
    assert await records(on_air) == []
    assert violations.events == []
    # Nothing was published: the next real write gets generation 2, the first
    # event the watcher sees.
    real = await on_air.stubs.window.PublishAtomicReplace(
        override(cut_at, AIR + HOUR, [entry("news", cut_at, AIR + HOUR)])
    )
    assert real.ok and real.published_generation_id == 2 and not real.validate_only
    await watcher.until(lambda: watcher.replaced())
    assert [e.generation_id for e in watcher.replaced()] == [2]
    watcher.cancel()


async def test_a_dry_run_that_would_be_refused_is_refused_and_logs_nothing(
    on_air: Running, violations: ViolationCapture
) -> None:
    request = override(AIR + 40 * MINUTE, AIR + HOUR, [entry("news", AIR + 40 * MINUTE, AIR + HOUR)])
    request.operator_override = False
    request.validate_only = True
    result = await on_air.stubs.window.PublishAtomicReplace(request)
    assert not result.ok and result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION, result
    assert violations.events == []


async def test_a_dry_run_of_replace_entry_names_the_entry_it_would_replace(on_air: Running) -> None:
    before = await window(on_air)
    result = await on_air.stubs.window.ReplaceEntry(
        ew.ReplaceEntryRequest(
            channel_id=CH,
            block_id="b3",
            entry=entry("b3", AIR + 3 * HOUR, AIR + 4 * HOUR, title="revised"),
            validate_only=True,
        )
    )
    assert result.ok and result.validate_only, result
    assert [s.block_id for s in result.would_supersede] == ["b3"]
    assert [seg.title for seg in result.would_write[0].segments] == ["revised", "revised"]
    assert await window(on_air) == before
