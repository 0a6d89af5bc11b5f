"""ScheduleDays (SPEC section 7; seeds 003 and 004) through the in-process servicer."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from playlog.store.base import FaultStep
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries, schedule_day
from tests.conftest import Running, ViolationCapture, start_server

CH = "ch1"
DATE = date_of(T0 + 2 * DAY)


@pytest.fixture
async def channel(running: Running) -> Running:
    await running.declare(CH, HOUR)
    return running


async def store(r: Running, day: pb.ScheduleDay) -> pb.ScheduleDayResult:
    return await r.stubs.days.StoreScheduleDay(
        sd.StoreScheduleDayRequest(schedule_day=day, reason_code="PLAN")
    )


async def get(r: Running, date: str = DATE) -> pb.ScheduleDay:
    return (
        await r.stubs.days.GetScheduleDay(sd.GetScheduleDayRequest(channel_id=CH, programming_day_date=date))
    ).schedule_day


async def history(r: Running, date: str = DATE) -> list[pb.ScheduleDay]:
    resp = await r.stubs.days.ListScheduleDayHistory(
        sd.ListScheduleDayHistoryRequest(channel_id=CH, programming_day_date=date)
    )
    return list(resp.schedule_days)


async def override_day(
    r: Running, day: pb.ScheduleDay, reason: str = "SPORTS_OVERRUN"
) -> pb.ScheduleDayResult:
    return await r.stubs.days.OperatorOverride(
        sd.OperatorOverrideRequest(schedule_day=day, reason_code=reason, actor="desk 3")
    )


def manual(date: str = DATE) -> pb.ScheduleDay:
    day = schedule_day(CH, date, plan_id="")
    del day.slots[12:]
    return day


# -- INV-SCHEDULEDAY-DERIVATION-TRACEABLE-001 ------------------------------------------------


async def test_a_day_with_no_plan_and_no_override_is_refused(
    channel: Running, violations: ViolationCapture
) -> None:
    result = await store(channel, schedule_day(CH, DATE, plan_id=""))
    assert not result.ok
    assert result.error_code == pb.ERROR_CODE_DERIVATION_UNTRACEABLE
    assert "plan_id" in result.error_detail
    assert await history(channel) == []
    assert violations.events[-1]["invariant"] == "INV-SCHEDULEDAY-DERIVATION-TRACEABLE-001-VIOLATED"
    assert violations.events[-1]["programming_day_date"] == DATE


async def test_a_manual_override_with_a_superseded_reference_is_accepted(channel: Running) -> None:
    original = await store(channel, schedule_day(CH, DATE))
    assert original.ok
    result = await override_day(channel, manual())
    assert result.ok, result
    day = result.schedule_day
    assert day.is_manual_override and day.plan_id == ""
    assert day.supersedes_id == original.schedule_day.id
    assert day.override_record_id == result.override_record_id
    record = (
        await channel.stubs.audit.GetOverrideRecord(
            audit.GetOverrideRecordRequest(id=result.override_record_id)
        )
    ).record
    assert record.layer == pb.OVERRIDE_LAYER_SCHEDULE_DAY
    assert record.superseded.schedule_day_id == original.schedule_day.id
    assert record.actor == "local" and record.actor_note == "desk 3"
    assert (await get(channel)).id == day.id
    # The superseded day stays readable, no longer authoritative.
    versions = await history(channel)
    assert [v.id for v in versions] == [day.id, original.schedule_day.id]
    assert [v.is_authoritative for v in versions] == [True, False]


async def test_an_override_with_nothing_to_supersede_is_refused(channel: Running) -> None:
    result = await override_day(channel, manual())
    assert result.error_code == pb.ERROR_CODE_NOT_FOUND
    assert await history(channel) == []


async def test_an_override_naming_a_day_that_is_not_current_is_refused(channel: Running) -> None:
    await store(channel, schedule_day(CH, DATE))
    day = manual()
    day.supersedes_id = "not-the-current-day"
    result = await override_day(channel, day)
    assert result.error_code == pb.ERROR_CODE_NOT_FOUND


async def test_an_override_without_a_reason_code_is_invalid(channel: Running) -> None:
    await store(channel, schedule_day(CH, DATE))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await override_day(channel, manual(), reason="")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason_code" in (info.value.details() or "")


# -- INV-SCHEDULEDAY-IMMUTABLE-001 -------------------------------------------------------------


async def test_updating_a_slots_wall_clock_time_is_refused(
    channel: Running, violations: ViolationCapture
) -> None:
    stored = (await store(channel, schedule_day(CH, DATE))).schedule_day
    changed = pb.ScheduleDay()
    changed.CopyFrom(stored)
    changed.slots[3].start_utc_ms += 5 * 60_000
    result = await channel.stubs.days.UpdateScheduleDay(sd.UpdateScheduleDayRequest(schedule_day=changed))
    assert result.error_code == pb.ERROR_CODE_SCHEDULE_DAY_IMMUTABLE
    assert "ForceRegenerate" in result.error_detail and "OperatorOverride" in result.error_detail
    assert await get(channel) == stored
    assert violations.events[-1]["invariant"] == "INV-SCHEDULEDAY-IMMUTABLE-001-VIOLATED"


async def test_force_regeneration_replaces_the_day_atomically_with_no_intermediate_state(
    channel: Running,
) -> None:
    first = (await store(channel, schedule_day(CH, DATE, plan_id="plan-1"))).schedule_day
    stop = asyncio.Event()
    seen: list[str] = []

    async def reader() -> None:
        while not stop.is_set():
            try:
                seen.append((await get(channel)).plan_id)
            except grpc.aio.AioRpcError as exc:  # zero days would be NOT_FOUND
                seen.append(f"error {exc.code().name}")

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    plan_ids = []
    for i in range(2, 22):
        result = await channel.stubs.days.ForceRegenerate(
            sd.ForceRegenerateRequest(
                schedule_day=schedule_day(CH, DATE, plan_id=f"plan-{i}"), reason_code="REPLAN"
            )
        )
        assert result.ok, result
        plan_ids.append(result.schedule_day.plan_id)
    stop.set()
    await asyncio.gather(*readers)
    assert seen and all(p.startswith("plan-") for p in seen), [p for p in seen if not p.startswith("plan-")]
    current = await get(channel)
    assert current.plan_id == "plan-21" and current.id != first.id
    versions = await history(channel)
    assert len(versions) == 21 and sum(v.is_authoritative for v in versions) == 1
    assert versions[-1].id == first.id  # newest first


async def test_force_regeneration_needs_a_plan_and_an_existing_day(channel: Running) -> None:
    missing = await channel.stubs.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, DATE))
    )
    assert missing.error_code == pb.ERROR_CODE_NOT_FOUND
    await store(channel, schedule_day(CH, DATE))
    no_plan = await channel.stubs.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, DATE, plan_id=""))
    )
    assert no_plan.error_code == pb.ERROR_CODE_DERIVATION_UNTRACEABLE


async def test_one_day_per_channel_and_date(channel: Running) -> None:
    assert (await store(channel, schedule_day(CH, DATE))).ok
    again = await store(channel, schedule_day(CH, DATE, plan_id="plan-2"))
    assert again.error_code == pb.ERROR_CODE_SCHEDULE_DAY_EXISTS
    assert "ForceRegenerate" in again.error_detail
    assert len(await history(channel)) == 1
    await channel.declare("ch2", HOUR)
    other = await channel.stubs.days.StoreScheduleDay(
        sd.StoreScheduleDayRequest(schedule_day=schedule_day("ch2", DATE))
    )
    assert other.ok


async def test_concurrent_stores_of_one_date_leave_exactly_one_day(channel: Running) -> None:
    results = await asyncio.gather(
        *(store(channel, schedule_day(CH, DATE, plan_id=f"p{i}")) for i in range(8))
    )
    assert sum(r.ok for r in results) == 1
    assert {r.error_code for r in results if not r.ok} == {pb.ERROR_CODE_SCHEDULE_DAY_EXISTS}


async def test_TOR_a_failing_record_write_leaves_the_day_unchanged_and_creates_no_override_day(
    channel: Running, violations: ViolationCapture
) -> None:
    stored = (await store(channel, schedule_day(CH, DATE))).schedule_day
    channel.server.store.faults.fail_next(FaultStep.OVERRIDE_RECORD)
    result = await override_day(channel, manual())
    assert result.error_code == pb.ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED
    assert await get(channel) == stored
    assert [d.id for d in await history(channel)] == [stored.id]
    records = await channel.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH))
    assert list(records.records) == []
    assert violations.events[-1]["invariant"] == "INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001-VIOLATED"


async def test_TOR_a_failing_day_write_after_the_record_leaves_no_record(channel: Running) -> None:
    stored = (await store(channel, schedule_day(CH, DATE))).schedule_day
    channel.server.store.faults.fail_next(FaultStep.SCHEDULE_DAY)
    result = await override_day(channel, manual())
    assert result.error_code == pb.ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED
    assert await get(channel) == stored
    records = await channel.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH))
    assert list(records.records) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: setattr(d, "programming_day_date", "2026-13-01"), "schedule_day.programming_day_date"),
        (lambda d: setattr(d, "id", "client-chosen"), "schedule_day.id"),
        (lambda d: setattr(d, "is_manual_override", True), "schedule_day.is_manual_override"),
        (
            lambda d: setattr(d.slots[1], "start_utc_ms", d.slots[0].start_utc_ms),
            "schedule_day.slots[1].start_utc_ms",
        ),
        (
            lambda d: setattr(d.slots[2], "end_utc_ms", d.slots[2].start_utc_ms),
            "schedule_day.slots[2].end_utc_ms",
        ),
    ],
)
async def test_malformed_days_name_the_field_and_store_nothing(channel: Running, mutate, field) -> None:  # type: ignore[no-untyped-def]
    day = schedule_day(CH, DATE)
    mutate(day)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await store(channel, day)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
    assert (
        await history(
            channel, day.programming_day_date if field != "schedule_day.programming_day_date" else DATE
        )
        == []
    )


async def test_get_of_a_missing_day_is_not_found(channel: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(channel)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_days_and_their_ids_survive_a_restart(tmp_path, clock) -> None:  # type: ignore[no-untyped-def]
    first = await start_server(tmp_path / "data", clock)
    await first.declare(CH, HOUR)
    stored = (await store(first, schedule_day(CH, DATE))).schedule_day
    overridden = (await override_day(first, manual())).schedule_day
    await first.server.stop(0)
    second = await start_server(tmp_path / "data", clock)
    try:
        assert (await get(second)).id == overridden.id
        assert [d.id for d in await history(second)] == [overridden.id, stored.id]
    finally:
        await second.server.stop(0)


# -- derivation of execution entries (SPEC section 3, check 7) ---------------------------------


async def test_a_publish_naming_a_day_without_schedule_day_is_untraceable(channel: Running) -> None:
    start = T0 + 2 * DAY
    request = ew.PublishAtomicReplaceRequest(
        channel_id=CH, range_start_utc_ms=start, range_end_utc_ms=start + DAY, entries=day_of_entries(start)
    )
    refused = await channel.stubs.window.PublishAtomicReplace(request)
    assert refused.error_code == pb.ERROR_CODE_DERIVATION_UNTRACEABLE
    assert DATE in refused.error_detail and "StoreScheduleDay" in refused.error_detail
    await store(channel, schedule_day(CH, DATE))
    assert (await channel.stubs.window.PublishAtomicReplace(request)).ok


async def test_override_entries_are_exempt_from_derivation(channel: Running) -> None:
    result = await channel.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=T0,
            range_end_utc_ms=T0 + DAY,
            entries=day_of_entries(T0),
            operator_override=True,
            reason_code="EMERGENCY_SCHEDULE",
        )
    )
    assert result.ok, result
