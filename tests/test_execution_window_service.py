"""The execution-window path through the real servicer, in-process, on a
deterministic clock: the seeds' Required Tests (THLI-001..005, TOR-001..004,
PLAYLOG-IMMUT-001..003) and the atomic-publish guarantees."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from playlog.clock import ManualClock
from playlog.store.base import FaultStep
from playlog.store.sql import SqlView
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, blocks, day_of_entries, entry
from tests.conftest import Running, ViolationCapture, writes_held

LOCK = HOUR
CH = "ch1"


@pytest.fixture
def clock() -> ManualClock:
    """Starts two hours before T0, so that air around T0 can be published first."""
    return ManualClock(T0 - 2 * HOUR)


@pytest.fixture
async def channel(running: Running) -> Running:
    """ch1 with a 1 h lock; ScheduleDays for the days around T0; air from T0 - 1 h
    for 4 h in 30-minute blocks a0..a7 (generation 1), published before now moved."""
    await running.declare(CH, LOCK)
    await running.store_days(CH, T0 - DAY, T0, T0 + DAY, T0 + 2 * DAY)
    # a0..a7 are published while all of them are flexible.
    result = await publish(running, T0 - HOUR, T0 + 3 * HOUR, blocks(T0 - HOUR, 8, 30 * MINUTE, "a"))
    assert result.ok, result
    running.clock.set_utc_ms(T0)
    return running


async def publish(
    r: Running,
    start: int,
    end: int,
    entries: list[pb.ExecutionEntry],
    *,
    override: bool = False,
    generation: int = 0,
    reason: str = "",
    timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
) -> pb.PublishResult:
    return await r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=start,
            range_end_utc_ms=end,
            entries=entries,
            generation_id=generation,
            operator_override=override,
            reason_code=reason or ("OPERATOR_OVERRIDE" if override else "SCHEDULE"),
            actor="note from the request",
        ),
        timeout=timeout,
    )


async def replace_entry(
    r: Running, block_id: str, e: pb.ExecutionEntry, *, override: bool = False
) -> pb.PublishResult:
    return await r.stubs.window.ReplaceEntry(
        ew.ReplaceEntryRequest(
            channel_id=CH,
            block_id=block_id,
            entry=e,
            operator_override=override,
            reason_code="OPERATOR_OVERRIDE" if override else "",
        )
    )


async def read(r: Running, start: int, end: int) -> pb.WindowSnapshot:
    return await r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=start, end_utc_ms=end)
    )


async def records(r: Running) -> list[pb.OverrideRecord]:
    return list(
        (await r.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH))).records
    )


async def state(r: Running) -> tuple[object, ...]:
    """Everything a refused write must leave as it was."""
    snap = await read(r, T0 - DAY, T0 + 3 * DAY)
    return (
        snap.channel_generation_id,
        tuple(e.SerializeToString() for e in snap.entries),
        tuple(x.id for x in await records(r)),
    )


# -- INV-HORIZON-LOCKED-IMMUTABLE-001 -------------------------------------------------------


async def test_THLI_001_write_to_a_locked_entry_without_override_is_rejected(
    channel: Running, violations: ViolationCapture
) -> None:
    before = await state(channel)
    # a2 = [T0, T0 + 30 min) is on air now: locked.
    result = await publish(channel, T0, T0 + 30 * MINUTE, [entry("a2x", T0, T0 + 30 * MINUTE)])
    assert not result.ok
    assert result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    assert "'a2'" in result.error_detail and "operator_override" in result.error_detail
    assert await state(channel) == before
    event = violations.events[-1]
    assert event["invariant"] == "INV-HORIZON-LOCKED-IMMUTABLE-001-VIOLATED"
    assert event["mutated_block_id"] == "a2"
    assert event["block_start_utc_ms"] == T0
    assert event["lock_boundary_T"] == T0
    assert event["operator_override"] is False
    assert event["mutation_source"] == "local"
    assert event["window_status"] == "locked"
    assert event["fault_class"] == "planning"


async def test_THLI_002_automated_in_place_replacement_of_a_locked_entry_is_rejected(
    channel: Running, violations: ViolationCapture
) -> None:
    before = await state(channel)
    # a3 = [T0 + 30 min, T0 + 1 h) starts inside the lock: an automated
    # in-place replacement (no override) is refused.
    result = await replace_entry(channel, "a3", entry("a3", T0 + 30 * MINUTE, T0 + HOUR, title="changed"))
    assert result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    assert await state(channel) == before
    assert violations.events[-1]["mutated_block_id"] == "a3"
    assert violations.events[-1]["window_status"] == "locked"


async def test_THLI_003_operator_override_replaces_atomically_with_a_new_generation(channel: Running) -> None:
    replacement = blocks(T0, 2, 15 * MINUTE, "live")
    result = await publish(channel, T0, T0 + 30 * MINUTE, replacement, override=True)
    assert result.ok, result
    assert result.published_generation_id == 2
    assert result.override_record_id
    snap = await read(channel, T0, T0 + 30 * MINUTE)
    assert [e.block_id for e in snap.entries] == ["live0", "live1"]
    assert all(e.generation_id == 2 and e.is_operator_override for e in snap.entries)
    assert all(e.override_record_id == result.override_record_id for e in snap.entries)


async def test_THLI_004_entry_in_the_flexible_future_accepts_a_write_without_override(
    channel: Running,
) -> None:
    # a4 = [T0 + 1 h, T0 + 1 h 30) starts exactly at E = T0 + 1 h: flexible.
    result = await replace_entry(channel, "a4", entry("a4", T0 + HOUR, T0 + HOUR + 30 * MINUTE, title="new"))
    assert result.ok, result
    assert not result.override_record_id
    snap = await read(channel, T0 + HOUR, T0 + HOUR + 1)
    assert snap.entries[0].segments[0].title == "new"
    assert snap.entries[0].generation_id == result.published_generation_id


async def test_THLI_005_clock_advance_moves_the_lock_boundary(channel: Running) -> None:
    a5 = entry("a5", T0 + HOUR + 30 * MINUTE, T0 + 2 * HOUR, title="first change")
    assert (await replace_entry(channel, "a5", a5)).ok  # flexible now
    channel.clock.advance_ms(31 * MINUTE)  # E passes a5's start: now locked
    again = entry("a5", T0 + HOUR + 30 * MINUTE, T0 + 2 * HOUR, title="second change")
    result = await replace_entry(channel, "a5", again)
    assert result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    snap = await read(channel, T0 + HOUR + 30 * MINUTE, T0 + HOUR + 31 * MINUTE)
    assert snap.entries[0].segments[0].title == "first change"
    assert snap.locked_until_utc_ms == T0 + 31 * MINUTE + HOUR


# -- INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001 ---------------------------------------------


async def test_TOR_001_the_override_record_is_written_before_its_artifact(
    channel: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    for method in ("insert_override_record", "apply_publish"):
        original = getattr(SqlView, method)

        def spy(self: SqlView, *args: object, _name: str = method, _original: Any = original) -> Any:
            writes.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(SqlView, method, spy)
    result = await publish(channel, T0, T0 + 30 * MINUTE, [entry("o1", T0, T0 + 30 * MINUTE)], override=True)
    assert result.ok
    assert writes == ["insert_override_record", "apply_publish"]  # in one transaction, record first
    record = (
        await channel.stubs.audit.GetOverrideRecord(
            audit.GetOverrideRecordRequest(id=result.override_record_id)
        )
    ).record
    assert record.layer == pb.OVERRIDE_LAYER_EXECUTION_WINDOW
    assert record.resulting_generation_id == result.published_generation_id
    assert [(s.block_id, s.generation_id) for s in record.superseded.entries] == [("a2", 1)]
    assert record.actor == "local" and record.actor_note == "note from the request"
    assert record.created_utc_ms == T0


async def test_TOR_002_a_failing_record_write_prevents_the_artifact(
    channel: Running, violations: ViolationCapture
) -> None:
    before = await state(channel)
    channel.server.store.faults.fail_next(FaultStep.OVERRIDE_RECORD)
    result = await publish(channel, T0, T0 + 30 * MINUTE, [entry("o1", T0, T0 + 30 * MINUTE)], override=True)
    assert not result.ok
    assert result.error_code == pb.ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED
    assert "nothing was changed" in result.error_detail
    assert await state(channel) == before
    assert violations.events[-1]["invariant"] == "INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001-VIOLATED"
    assert violations.events[-1]["fault_class"] == "runtime"
    # The seam fires once: the retry succeeds.
    assert (
        await publish(channel, T0, T0 + 30 * MINUTE, [entry("o1", T0, T0 + 30 * MINUTE)], override=True)
    ).ok


@pytest.mark.parametrize("step", [FaultStep.ENTRIES, FaultStep.PUBLISH_HISTORY, FaultStep.COMMIT])
async def test_TOR_003_an_override_failing_at_any_later_step_leaves_no_record_and_no_artifact(
    channel: Running, step: FaultStep
) -> None:
    before = await state(channel)
    channel.server.store.faults.fail_next(step)
    result = await publish(channel, T0, T0 + 30 * MINUTE, [entry("o1", T0, T0 + 30 * MINUTE)], override=True)
    assert result.error_code == pb.ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED
    assert await state(channel) == before  # no record for an override that never happened


async def test_TOR_003_a_normal_publish_failing_mid_write_changes_nothing_and_is_internal(
    channel: Running,
) -> None:
    before = await state(channel)
    channel.server.store.faults.fail_next(FaultStep.ENTRIES)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(channel, T0 + 2 * HOUR, T0 + 3 * HOUR, blocks(T0 + 2 * HOUR, 2, 30 * MINUTE, "z"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert await state(channel) == before


async def test_TOR_004_no_override_artifact_exists_without_its_record(channel: Running) -> None:
    await publish(channel, T0, T0 + HOUR, blocks(T0, 4, 15 * MINUTE, "o"), override=True)
    ok = await replace_entry(channel, "o1", entry("o1", T0 + 15 * MINUTE, T0 + 30 * MINUTE), override=True)
    assert ok.ok
    snap = await read(channel, T0 - DAY, T0 + DAY)
    overridden = [e for e in snap.entries if e.is_operator_override]
    assert len(overridden) == 4
    for e in overridden:
        record = (
            await channel.stubs.audit.GetOverrideRecord(
                audit.GetOverrideRecordRequest(id=e.override_record_id)
            )
        ).record
        assert record.resulting_generation_id == e.generation_id
    integrity = await channel.stubs.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(channel_id=CH))
    assert list(integrity.violations) == []


async def test_an_override_without_a_reason_code_is_invalid_and_changes_nothing(channel: Running) -> None:
    before = await state(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.stubs.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id=CH,
                range_start_utc_ms=T0,
                range_end_utc_ms=T0 + 30 * MINUTE,
                entries=[entry("o1", T0, T0 + 30 * MINUTE)],
                operator_override=True,
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason_code" in (info.value.details() or "")
    assert await state(channel) == before


async def test_a_refused_override_leaves_no_record(channel: Running) -> None:
    """The record is written only after every check passed (the seed's system
    wrote it before the generation check)."""
    result = await publish(
        channel, T0, T0 + 30 * MINUTE, [entry("o1", T0, T0 + 30 * MINUTE)], override=True, generation=1
    )
    assert result.error_code == pb.ERROR_CODE_GENERATION_NOT_MONOTONIC
    assert await records(channel) == []


# -- INV-PLAYLOG-LOCKED-IMMUTABLE-001 -------------------------------------------------------


async def test_PLAYLOG_IMMUT_001_in_place_mutation_inside_the_lock_without_override_is_rejected(
    running: Running,
) -> None:
    await running.declare(CH, LOCK)
    await running.store_days(CH, T0)
    target = entry("x", T0 + 15 * MINUTE, T0 + 45 * MINUTE)
    assert (await publish(running, T0 + 15 * MINUTE, T0 + 45 * MINUTE, [target])).ok
    running.clock.set_utc_ms(T0)  # [T0 + 15 min, T0 + 45 min) is now inside the lock
    result = await replace_entry(running, "x", entry("x", T0 + 15 * MINUTE, T0 + 45 * MINUTE, title="edited"))
    assert result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION


async def test_PLAYLOG_IMMUT_002_a_past_entry_is_immutable_even_with_an_override(
    channel: Running, violations: ViolationCapture
) -> None:
    channel.clock.advance_ms(31 * MINUTE)  # a2 [T0, T0 + 30 min) has aired
    before = await state(channel)
    result = await replace_entry(
        channel, "a2", entry("a2", T0, T0 + 30 * MINUTE, title="rewrite"), override=True
    )
    assert result.error_code == pb.ERROR_CODE_PAST_WINDOW_IMMUTABLE
    publish_result = await publish(channel, T0, T0 + HOUR, blocks(T0, 2, 30 * MINUTE, "r"), override=True)
    assert publish_result.error_code == pb.ERROR_CODE_PAST_WINDOW_IMMUTABLE
    assert await state(channel) == before
    event = violations.events[-1]
    assert event["invariant"] == "INV-PLAYLOG-LOCKED-IMMUTABLE-001-VIOLATED"
    assert event["window_status"] == "past"
    assert event["operator_override"] is True
    assert event["fault_class"] == "operator"


async def test_PLAYLOG_IMMUT_003_override_of_a_locked_entry_is_backed_by_a_record_first(
    channel: Running,
) -> None:
    result = await replace_entry(
        channel, "a3", entry("a3", T0 + 30 * MINUTE, T0 + HOUR, title="breaking news"), override=True
    )
    assert result.ok, result
    snap = await read(channel, T0 + 30 * MINUTE, T0 + 31 * MINUTE)
    (a3,) = snap.entries
    assert a3.segments[0].title == "breaking news"
    assert a3.is_operator_override and a3.override_record_id == result.override_record_id
    assert a3.generation_id == result.published_generation_id == 2
    (record,) = await records(channel)
    assert [(s.block_id, s.generation_id) for s in record.superseded.entries] == [("a3", 1)]


# -- atomic publish -------------------------------------------------------------------------


async def test_a_publish_stamps_its_whole_range_and_leaves_the_rest_alone(channel: Running) -> None:
    day = T0 + DAY
    first = await publish(channel, T0 + 3 * HOUR, day + DAY, blocks(T0 + 3 * HOUR, 42 + 48, 30 * MINUTE, "f"))
    assert first.ok, first
    second = await publish(channel, day, day + DAY, day_of_entries(day, "g"))
    assert second.ok and second.published_generation_id == first.published_generation_id + 1
    snap = await read(channel, T0 - HOUR, day + DAY)
    by_gen: dict[int, list[str]] = {}
    for e in snap.entries:
        by_gen.setdefault(e.generation_id, []).append(e.block_id)
    assert by_gen[second.published_generation_id] == [f"g{i}" for i in range(48)]
    assert by_gen[1] == [f"a{i}" for i in range(8)]
    assert len(by_gen[first.published_generation_id]) == 42
    assert snap.generation_id == second.published_generation_id
    assert snap.channel_generation_id == second.published_generation_id


async def test_concurrent_readers_never_see_two_generations_of_one_publish(channel: Running) -> None:
    """Readers racing 30 publishes of one day: every read is the complete tiling
    of exactly one publish (its 48 entries, contiguous, covering the day, all of
    its generation and with its block ids), never a mix and never a part."""
    day = T0 + DAY
    assert (await publish(channel, T0 + 3 * HOUR, day, blocks(T0 + 3 * HOUR, 21, HOUR, "fill"))).ok
    prefix_of: dict[int, str] = {}  # generation -> the block-id prefix of its publish

    async def publish_day(prefix: str) -> None:
        result = await publish(channel, day, day + DAY, day_of_entries(day, prefix))
        assert result.ok, result
        prefix_of[result.published_generation_id] = prefix

    await publish_day("p0-")  # so that every read finds a day
    stop = asyncio.Event()
    reads: list[pb.WindowSnapshot] = []

    async def reader() -> None:
        while not stop.is_set():
            reads.append(await read(channel, day, day + DAY))

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    for i in range(1, 31):
        await publish_day(f"p{i}-")
    stop.set()
    await asyncio.gather(*readers)
    generations = list(prefix_of)
    assert generations == sorted(generations) and len(set(generations)) == 31

    def wrong(snap: pb.WindowSnapshot) -> str | None:
        """What is wrong with one read, or None."""
        gens = {e.generation_id for e in snap.entries}
        if len(gens) != 1:
            return f"generations {sorted(gens)}"
        [generation] = gens
        if generation not in prefix_of:
            return f"generation {generation} is none of the publishes"
        expected = day_of_entries(day, prefix_of[generation])
        got = [(e.block_id, e.start_utc_ms, e.end_utc_ms) for e in snap.entries]
        want = [(e.block_id, e.start_utc_ms, e.end_utc_ms) for e in expected]
        return None if got == want else f"generation {generation}: {got} is not the tiling {want}"

    # The expected tiling itself covers [day, day + DAY) exactly, without gap or overlap.
    tiling = day_of_entries(day, "x")
    assert len(tiling) == 48 and tiling[0].start_utc_ms == day and tiling[-1].end_utc_ms == day + DAY
    assert all(a.end_utc_ms == b.start_utc_ms for a, b in itertools.pairwise(tiling))
    assert reads
    problems = [p for p in map(wrong, reads) if p is not None]
    assert not problems, problems[:3]
    # The reads raced the publishes: they saw several of them, not only the last.
    assert len({snap.entries[0].generation_id for snap in reads}) >= 2


async def test_concurrent_publishers_get_strictly_increasing_generations(channel: Running) -> None:
    day = T0 + DAY
    assert (await publish(channel, T0 + 3 * HOUR, day, blocks(T0 + 3 * HOUR, 21, HOUR, "fill"))).ok
    results = await asyncio.gather(
        *(publish(channel, day, day + DAY, day_of_entries(day, f"c{i}-")) for i in range(12))
    )
    assert all(r.ok for r in results)
    gens = sorted(r.published_generation_id for r in results)
    assert gens == list(range(gens[0], gens[0] + 12))


# -- reads ------------------------------------------------------------------------------------


async def test_get_entry_at_treats_the_flexible_future_as_absent_by_default(channel: Running) -> None:
    now = await channel.stubs.window.GetEntryAt(ew.GetEntryAtRequest(channel_id=CH, at_utc_ms=T0))
    assert now.found and now.entry.block_id == "a2"
    flexible = await channel.stubs.window.GetEntryAt(
        ew.GetEntryAtRequest(channel_id=CH, at_utc_ms=T0 + 2 * HOUR)
    )
    assert not flexible.found
    included = await channel.stubs.window.GetEntryAt(
        ew.GetEntryAtRequest(channel_id=CH, at_utc_ms=T0 + 2 * HOUR, include_flexible=True)
    )
    assert included.found and included.entry.block_id == "a6"
    # The end is exclusive: at the last entry's end there is nothing.
    end = await channel.stubs.window.GetEntryAt(
        ew.GetEntryAtRequest(channel_id=CH, at_utc_ms=T0 + 3 * HOUR, include_flexible=True)
    )
    assert not end.found


async def test_reading_an_undeclared_channel_is_not_found(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read(running, T0, T0 + HOUR)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "DeclareChannel" in (info.value.details() or "")


async def test_publishing_to_an_undeclared_channel_is_refused(running: Running) -> None:
    result = await publish(running, T0 + 2 * HOUR, T0 + 3 * HOUR, [entry("x", T0 + 2 * HOUR, T0 + 3 * HOUR)])
    assert result.error_code == pb.ERROR_CODE_UNKNOWN_CHANNEL


async def test_malformed_input_is_invalid_argument_with_every_field_named(
    channel: Running, violations: ViolationCapture
) -> None:
    before = await state(channel)
    bad = entry("b1", T0 + 2 * HOUR, T0 + 3 * HOUR)
    bad.segments[0].duration_ms += 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(channel, T0 + 2 * HOUR, T0 + 2 * HOUR, [bad])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    fields = {v.field for v in detail.field_violations}
    assert {"range_end_utc_ms", "entries[0].segments"} <= fields
    assert await state(channel) == before
    assert violations.events[-1]["error_code"] == "INVALID_ARGUMENT"


async def test_override_records_page_in_order(channel: Running) -> None:
    ids = []
    for i in range(5):
        r = await replace_entry(
            channel, "a3", entry("a3", T0 + 30 * MINUTE, T0 + HOUR, title=f"v{i}"), override=True
        )
        ids.append(r.override_record_id)
    got, token = [], ""
    while True:
        page = await channel.stubs.audit.ListOverrideRecords(
            audit.ListOverrideRecordsRequest(channel_id=CH, page_size=2, page_token=token)
        )
        got += [r.id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert got == ids
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(page_token="garbage"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_publish_whose_deadline_passes_while_it_waits_for_the_store_changes_nothing(
    channel: Running,
) -> None:
    """The caller was told DEADLINE_EXCEEDED: the write must not commit later."""
    start = T0 + 3 * HOUR
    async with writes_held(channel, CH):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(channel, start, start + HOUR, blocks(start, 2, 30 * MINUTE, "late"), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The next write queues behind the late one, so it has finished when this returns.
    result = await publish(channel, start, start + HOUR, blocks(start, 2, 30 * MINUTE, "next"))
    assert result.ok and result.published_generation_id == 2
    snap = await read(channel, start, start + HOUR)
    assert [e.block_id for e in snap.entries] == ["next0", "next1"]


async def test_a_publish_that_cuts_an_entry_or_leaves_a_gap_is_refused_and_changes_nothing(
    channel: Running, violations: ViolationCapture
) -> None:
    before = await state(channel)
    # a6 = [T0 + 2 h, T0 + 2 h 30): a range starting in its middle cuts it.
    cut = await publish(
        channel,
        T0 + 2 * HOUR + 15 * MINUTE,
        T0 + 3 * HOUR,
        blocks(T0 + 2 * HOUR + 15 * MINUTE, 3, 15 * MINUTE, "c"),
    )
    assert cut.error_code == pb.ERROR_CODE_CONTIGUITY_VIOLATION
    assert "cuts block 'a6'" in cut.error_detail
    # Appending after a gap: the channel's air ends at T0 + 3 h.
    gap = await publish(channel, T0 + 4 * HOUR, T0 + 5 * HOUR, blocks(T0 + 4 * HOUR, 2, 30 * MINUTE, "g"))
    assert gap.error_code == pb.ERROR_CODE_CONTIGUITY_VIOLATION
    assert f"gap [{T0 + 3 * HOUR}, {T0 + 4 * HOUR})" in gap.error_detail
    assert await state(channel) == before
    assert violations.events[-1]["invariant"] == "INV-PLAYLOG-CONTIGUOUS-001-VIOLATED"
