"""ChannelService and ClockService in-process."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import types_pb2 as pb
from tests.builders import HOUR, T0
from tests.conftest import Running


async def declare(r: Running, channel_id: str, lock: int, reason: str = "") -> ch.DeclareChannelResponse:
    return await r.stubs.channel.DeclareChannel(
        ch.DeclareChannelRequest(
            channel_id=channel_id, locked_window_ms=lock, reason_code=reason, actor="ops desk"
        )
    )


async def test_declaring_again_with_the_same_values_is_a_no_op(running: Running) -> None:
    first = await declare(running, "ch1", HOUR)
    assert first.changed and not first.override_record_id
    again = await declare(running, "ch1", HOUR)
    assert not again.changed and not again.override_record_id
    records = await running.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest())
    assert list(records.records) == []


async def test_changing_the_lock_depth_is_audited_by_a_record(running: Running) -> None:
    await declare(running, "ch1", HOUR)
    changed = await declare(running, "ch1", 2 * HOUR, reason="LONGER_LOOKAHEAD")
    assert changed.changed and changed.channel.locked_window_ms == 2 * HOUR
    record = (
        await running.stubs.audit.GetOverrideRecord(
            audit.GetOverrideRecordRequest(id=changed.override_record_id)
        )
    ).record
    assert record.layer == pb.OVERRIDE_LAYER_CHANNEL
    assert record.superseded.previous_locked_window_ms == HOUR
    assert (
        record.reason_code == "LONGER_LOOKAHEAD"
        and record.actor == "local"
        and record.actor_note == "ops desk"
    )
    got = await running.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id="ch1"))
    assert got.channel.locked_window_ms == 2 * HOUR


@pytest.mark.parametrize(
    ("channel_id", "lock", "field"),
    [("", HOUR, "channel_id"), ("ch 1", HOUR, "channel_id"), ("ch1", 0, "locked_window_ms")],
)
async def test_bad_declarations_name_the_field(
    running: Running, channel_id: str, lock: int, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await declare(running, channel_id, lock)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
    assert list((await running.stubs.channel.ListChannels(ch.ListChannelsRequest())).channels) == []


async def test_get_of_an_unknown_channel_is_not_found(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_manual_clock_moves_only_forward_when_told(running: Running) -> None:
    assert (await running.stubs.clock.GetTime(clk.GetTimeRequest())).now_utc_ms == T0
    assert (
        await running.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=HOUR))
    ).now_utc_ms == T0 + HOUR
    assert (
        await running.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=T0 + 2 * HOUR))
    ).now_utc_ms == T0 + 2 * HOUR
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=T0))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "backwards" in (info.value.details() or "")
    assert running.clock.now_utc_ms() == T0 + 2 * HOUR


async def test_moves_arriving_together_each_count_once(running: Running) -> None:
    """Concurrent AdvanceTime calls (on SQLite committed in one group commit,
    on PostgreSQL taking turns in the database) add up: none is lost."""
    moved = await asyncio.gather(
        *(running.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=1000)) for _ in range(8))
    )
    assert sorted(m.now_utc_ms for m in moved) == [T0 + 1000 * i for i in range(1, 9)]
    assert (await running.stubs.clock.GetTime(clk.GetTimeRequest())).now_utc_ms == T0 + 8000
    assert running.clock.now_utc_ms() == T0 + 8000
