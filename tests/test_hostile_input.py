"""Hostile input at the gRPC edge (issue 8, "no request can break a channel").

Every number of every request has a range, checked before any servicer code
runs (SPEC section 1); a body that is not a message, an id with a trailing
newline, a 20,000-character id or a forged page token is a clear refusal, and
the channel and the server stay usable afterwards, restarts included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from playlog.api.errors import MAX_MESSAGE_BYTES, invalid_argument_status
from playlog.domain.rejection import FieldViolation
from playlog.domain.validation import check_id, quote
from playlog.v1 import (
    audit_service_pb2,
    channel_service_pb2,
    clock_service_pb2,
    execution_window_service_pb2,
    schedule_day_service_pb2,
)
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries, schedule_day
from tests.conftest import Running

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
CH = "ch1"
SERVICE_MODULES = (
    audit_service_pb2,
    channel_service_pb2,
    clock_service_pb2,
    execution_window_service_pb2,
    schedule_day_service_pb2,
)


def request_types() -> dict[str, Descriptor]:
    """The request message of every method of every playlog.v1 service, from
    the generated descriptors."""
    found: dict[str, Descriptor] = {}
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"{service.full_name}/{method.name}"] = method.input_type
    return found


def bad_request(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return [(v.field, v.description) for v in detail.field_violations]


def publish_request(start: int = T0 + DAY, prefix: str = "d", **kw: Any) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=kw.pop("channel_id", CH),
        range_start_utc_ms=start,
        range_end_utc_ms=start + DAY,
        entries=kw.pop("entries", None) or day_of_entries(start, prefix),
        **kw,
    )


async def _prepare(r: Running) -> None:
    await r.declare(CH)
    await r.store_days(CH, T0 + DAY)


async def _still_usable(r: Running) -> None:
    """The clock reads, a publish commits, reads and watches see it."""
    now = await r.stubs.clock.GetTime(clk.GetTimeRequest())
    assert now.now_utc_ms == T0
    channel = await r.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id=CH))
    assert channel.channel.locked_window_ms == HOUR and channel.channel.current_generation_id == 0
    result = await r.publish_day(CH, T0 + DAY, "ok")
    assert result.ok and result.published_generation_id == 1, result
    snap = await r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=T0 + DAY, end_utc_ms=T0 + 2 * DAY)
    )
    assert len(snap.entries) == 48 and snap.channel_generation_id == 1
    stream = r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH))
    first = await stream.read()
    stream.cancel()
    assert first.snapshot.channel_generation_id == 1
    assert list((await r.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest())).records) == []


# -- ids match as a whole ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["fz-a\n", "fz-a\r\n", "\nfz-a", "fz-a\nfz-b"])
def test_an_id_is_matched_as_a_whole(value: str) -> None:
    out: list[FieldViolation] = []
    check_id(value, "channel_id", out)
    assert [v.field for v in out] == ["channel_id"]
    check_id("fz-a", "channel_id", out)
    assert len(out) == 1


async def test_an_id_with_a_trailing_newline_is_not_a_second_channel_or_block(running: Running) -> None:
    await _prepare(running)
    await running.declare("fz-a")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id="fz-a\n", locked_window_ms=HOUR)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(info.value)] == ["channel_id"]
    listed = await running.stubs.channel.ListChannels(ch.ListChannelsRequest())
    assert sorted(c.channel_id for c in listed.channels) == [CH, "fz-a"]
    request = publish_request()
    request.entries[0].block_id = "d0\n"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.window.PublishAtomicReplace(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(info.value)] == ["entries[0].block_id"]
    request = publish_request()
    request.entries[5].segments[1].segment_id = "s\n"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.window.PublishAtomicReplace(request)
    assert [f for f, _ in bad_request(info.value)] == ["entries[5].segments[1].segment_id"]
    day = schedule_day(CH, date_of(T0 + 2 * DAY), plan_id="plan-1\n")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.days.StoreScheduleDay(sd.StoreScheduleDayRequest(schedule_day=day))
    assert [f for f, _ in bad_request(info.value)] == ["schedule_day.plan_id"]


# -- error details are bounded ----------------------------------------------------------

LONG_ID = "x" * 20_000


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.channel.GetChannel(ch.GetChannelRequest(channel_id=LONG_ID)),
        lambda s: s.days.GetScheduleDay(
            sd.GetScheduleDayRequest(channel_id=LONG_ID, programming_day_date="2026-11-22")
        ),
        lambda s: s.days.GetScheduleDay(
            sd.GetScheduleDayRequest(channel_id=CH, programming_day_date=LONG_ID)
        ),
        lambda s: s.audit.GetOverrideRecord(audit.GetOverrideRecordRequest(id=LONG_ID)),
        lambda s: s.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=LONG_ID, start_utc_ms=T0, end_utc_ms=T0 + 1)
        ),
    ],
    ids=["GetChannel", "GetScheduleDay-channel", "GetScheduleDay-date", "GetOverrideRecord", "Read"],
)
async def test_a_20000_character_id_is_answered_not_refused_by_the_transport(
    running: Running, call: Callable[[Any], Awaitable[Any]]
) -> None:
    await _prepare(running)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(running.stubs)
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert len(info.value.details() or "") < 400


async def test_a_48_entry_publish_with_a_129_character_channel_id_is_invalid_argument(
    running: Running,
) -> None:
    await _prepare(running)
    entries = day_of_entries(T0 + DAY)
    for e in entries:
        e.channel_id = CH
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.window.PublishAtomicReplace(
            publish_request(channel_id="c" * 129, entries=entries)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    shown = bad_request(info.value)
    # channel_id, then one violation per entry: the first 20, and how many more.
    assert shown[0][0] == "channel_id" and shown[1][0] == "entries[0].channel_id"
    assert shown[-1] == ("", f"… and {49 - (len(shown) - 1)} more")
    assert len(shown) <= 21
    assert "…(129 chars)" in shown[1][1]


def test_quote_cuts_long_values() -> None:
    assert quote("ch1") == "'ch1'"
    assert quote("a" * 64) == repr("a" * 64)
    assert quote("a" * 65) == f"{'a' * 64!r}…(65 chars)"
    assert quote("é" * 20_000, limit=3) == "'ééé'…(20000 chars)"


def _trailer_bytes(status: grpc.Status) -> int:
    """The size of a status's trailers as grpc sends them."""
    message = status.details.encode()
    encoded = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message)
    binary = sum(len(key) + (len(value) * 4 + 2) // 3 for key, value in status.trailing_metadata)
    return encoded + binary


@pytest.mark.parametrize("text", ["x", "é", "\U0001f4fa", "%"])
def test_an_invalid_argument_status_always_fits_the_trailers(text: str) -> None:
    violations = [
        FieldViolation(
            f"entries[{i}].segments[{i}].segment_id", f"duplicate {quote(text * 5000)} " + text * 400
        )
        for i in range(10_000)
    ]
    status = invalid_argument_status(violations)
    assert _trailer_bytes(status) < 8 * 1024  # grpc's default soft limit
    detail = error_details_pb2.BadRequest()
    proto = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    assert proto.details[0].Unpack(detail)
    shown = [(v.field, v.description) for v in detail.field_violations]
    assert 2 <= len(shown) <= 21
    assert shown[0][0] == "entries[0].segments[0].segment_id"
    assert shown[-1] == ("", f"… and {10_000 - (len(shown) - 1)} more")
    assert status.details.endswith("…")
    assert sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in status.details) <= (
        MAX_MESSAGE_BYTES
    )


def test_a_few_short_violations_are_reported_whole() -> None:
    status = invalid_argument_status([FieldViolation("a", "required"), FieldViolation("b", "must be > 0")])
    assert status.details == "a: required; b: must be > 0"
