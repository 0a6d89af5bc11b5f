"""The write skeleton's rules on every write path, and a "now" that never
moves backwards (SPEC sections 1, 2, 4 and 7)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from playlog.clock import ManualClock, SystemClock, host_clock_utc_ms
from playlog.config import Settings
from playlog.server import PlaylogServer, initial_clock
from playlog.store.base import FaultStep
from playlog.store.sqlite import SqliteStore
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, date_of, schedule_day
from tests.conftest import Running, ViolationCapture

CH = "ch1"


async def record_count(r: Running) -> int:
    page = await r.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest())
    return len(page.records)


# -- channel re-declaration ------------------------------------------------------------------


async def test_changing_the_lock_depth_without_a_reason_is_malformed_and_changes_nothing(
    running: Running, violations: ViolationCapture
) -> None:
    await running.declare(CH, HOUR)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * HOUR)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("reason_code: required")
    got = await running.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id=CH))
    assert got.channel.locked_window_ms == HOUR
    assert await record_count(running) == 0
    assert [e["rpc"] for e in violations.events if e["event"] == "mutation_rejected"] == ["DeclareChannel"]


@pytest.mark.parametrize("step", [FaultStep.OVERRIDE_RECORD, FaultStep.CHANNEL, FaultStep.COMMIT])
async def test_a_store_failure_in_a_re_declaration_is_override_record_persist_failed(
    running: Running, step: FaultStep, violations: ViolationCapture
) -> None:
    await running.declare(CH, HOUR)
    running.server.store.faults.fail_next(step)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * HOUR, reason_code="DEEPER")
        )
    assert refused.value.code() == grpc.StatusCode.INTERNAL
    assert (refused.value.details() or "").startswith("ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED")
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED"
    got = await running.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id=CH))
    assert got.channel.locked_window_ms == HOUR
    assert await record_count(running) == 0
    [event] = [e for e in violations.events if e["event"] == "mutation_rejected"]
    assert event["error_code"] == "ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED"


# -- ForceRegenerate over an operator's override ----------------------------------------------


@pytest.fixture
async def overridden_day(running: Running) -> Running:
    await running.declare(CH, HOUR)
    await running.store_days(CH, T0)
    manual = await running.stubs.days.OperatorOverride(
        sd.OperatorOverrideRequest(
            schedule_day=schedule_day(CH, date_of(T0), plan_id=""), reason_code="SPORT"
        )
    )
    assert manual.ok, manual
    return running


async def test_force_regenerate_over_an_override_day_needs_a_reason_and_writes_a_record(
    overridden_day: Running,
) -> None:
    r = overridden_day
    before = await r.stubs.days.GetScheduleDay(
        sd.GetScheduleDayRequest(channel_id=CH, programming_day_date=date_of(T0))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await r.stubs.days.ForceRegenerate(
            sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, date_of(T0)))
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason_code" in (refused.value.details() or "")
    assert await record_count(r) == 1  # the override's own
    result = await r.stubs.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, date_of(T0)), reason_code="PLAN_RESTORED")
    )
    assert result.ok and result.override_record_id, result
    record = (
        await r.stubs.audit.GetOverrideRecord(audit.GetOverrideRecordRequest(id=result.override_record_id))
    ).record
    assert record.layer == pb.OVERRIDE_LAYER_SCHEDULE_DAY
    assert record.superseded.schedule_day_id == before.schedule_day.id
    assert result.schedule_day.override_record_id == record.id
    assert not result.schedule_day.is_manual_override and result.schedule_day.plan_id == "plan-1"


async def test_force_regenerate_of_a_plan_day_needs_no_record(running: Running) -> None:
    await running.declare(CH, HOUR)
    await running.store_days(CH, T0)
    result = await running.stubs.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, date_of(T0), plan_id="plan-2"))
    )
    assert result.ok and not result.override_record_id, result
    assert await record_count(running) == 0


# -- the manual clock -------------------------------------------------------------------------


class ClockLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append({"event": getattr(record, "event", ""), **getattr(record, "fields", {})})


@pytest.fixture
def clock_log() -> Iterator[ClockLog]:
    capture = ClockLog()
    for name in ("playlog.api", "playlog.clock"):
        logging.getLogger(name).addHandler(capture)
        logging.getLogger(name).setLevel(logging.INFO)
    yield capture
    for name in ("playlog.api", "playlog.clock"):
        logging.getLogger(name).removeHandler(capture)


async def test_a_refused_clock_move_is_logged_and_moves_nothing(
    running: Running, clock_log: ClockLog
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=T0 - 1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [event] = [e for e in clock_log.events if e["event"] == "clock_move_refused"]
    assert event["rpc"] == "SetTime" and event["now_utc_ms"] == T0 and event["principal"] == "local"
    assert running.clock.now_utc_ms() == T0


async def test_the_manual_clock_cannot_be_moved_past_year_9999(running: Running) -> None:
    await running.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=253_402_300_799_999 - HOUR))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=2 * HOUR))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await running.stubs.clock.GetTime(clk.GetTimeRequest())).now_utc_ms == 253_402_300_799_999 - HOUR


# -- the system clock never moves backwards ---------------------------------------------------


class SteppedHost:
    """A host clock the test sets, as NTP or a person would."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_a_host_clock_stepped_back_holds_now_still_until_it_catches_up(clock_log: ClockLog) -> None:
    host = SteppedHost(T0)
    clock = SystemClock(host=host)
    assert clock.now_utc_ms() == T0
    host.now = T0 - 10 * MINUTE  # NTP steps the host clock back
    assert clock.now_utc_ms() == T0
    assert clock.now_utc_ms() == T0
    host.now = T0 + 1
    assert clock.now_utc_ms() == T0 + 1
    assert [e["event"] for e in clock_log.events] == ["clock_behind", "clock_caught_up"]  # logged once
    assert clock_log.events[0]["behind_ms"] == 10 * MINUTE


def test_now_starts_no_earlier_than_the_latest_instant_acted_on_before_a_restart(tmp_path: Path) -> None:
    # The server acted a day ahead of this host's clock (the host was since
    # stepped back): after a restart, now is still no earlier.
    acted = host_clock_utc_ms() + DAY
    store = SqliteStore(tmp_path)
    try:
        with store.write() as w:
            w.note_acted_at(acted)
        with store.write() as w:
            w.note_acted_at(acted - HOUR)  # never lowered
        clock = initial_clock(Settings(data_dir=str(tmp_path)), store)
    finally:
        store.close()
    assert isinstance(clock, SystemClock)
    assert clock.now_utc_ms() == acted


async def test_every_write_and_a_clean_stop_keep_the_clock_floor(tmp_path: Path) -> None:
    ahead = host_clock_utc_ms() + DAY  # later than the host clock will be during the test
    settings = Settings(data_dir=str(tmp_path), listen="127.0.0.1:0", clock="manual")
    clock = ManualClock(ahead)
    server = PlaylogServer(settings, clock=clock)
    await server.start()
    server.playlog.declare_channel(CH, HOUR, "", "local", "")
    with server.store.read() as r:
        assert r.clock_floor_utc_ms() == ahead
    clock.advance_ms(HOUR)  # moved without a write: kept at the stop
    await server.stop(0)
    store = SqliteStore(tmp_path)
    try:
        with store.read() as r:
            assert r.clock_floor_utc_ms() == ahead + HOUR
        system = initial_clock(Settings(data_dir=str(tmp_path)), store)
    finally:
        store.close()
    assert system.now_utc_ms() == ahead + HOUR
