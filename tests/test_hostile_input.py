"""Hostile input at the gRPC edge (issue 8, "no request can break a channel").

Every number of every request has a range, checked before any servicer code
runs (SPEC section 1); a body that is not a message, an id with a trailing
newline, a 20,000-character id or a forged page token is a clear refusal, and
the channel and the server stay usable afterwards, restarts included."""

from __future__ import annotations

import base64
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playlog.api import limits, servicers
from playlog.api.errors import MAX_MESSAGE_BYTES, invalid_argument_status
from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import MAX_UTC_MS, check_id, quote
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import clock_service_pb2_grpc as clk_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries, entry, schedule_day
from tests.conftest import Running
from tests.request_strategies import every_rpc
from tests.test_served_process import Served, free_port

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
CH = "ch1"


def request_types() -> dict[str, Descriptor]:
    """The request message of every method of every playlog.v1 service, from
    the generated descriptors (the fuzz's walk: a new service is found, not listed)."""
    return {rpc.path.lstrip("/"): rpc.request for rpc in every_rpc() if rpc.path.startswith("/playlog.v1.")}


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


# -- the rule table: every integer field of every request has a range ----------------


def test_every_integer_field_of_every_request_has_a_range() -> None:
    types = request_types()
    # The enumeration itself must see the services (an empty one proves nothing).
    services = {path.split("/")[0] for path in types}
    assert len(types) >= 27 and "playlog.v1.GuideService" in services and len(services) == 7
    assert types["playlog.v1.ExecutionWindowService/PublishAtomicReplace"].name == (
        "PublishAtomicReplaceRequest"
    )
    assert limits.unruled_fields(types.values()) == []


def test_an_integer_field_without_a_rule_is_found_and_accepts_only_zero() -> None:
    # google.protobuf.Duration stands in for a request that gained a number nobody ruled.
    assert limits.unruled_fields([duration_pb2.Duration.DESCRIPTOR]) == [
        "google.protobuf.Duration.seconds",
        "google.protobuf.Duration.nanos",
    ]
    assert limits.violations(duration_pb2.Duration()) == []
    assert [v.field for v in limits.violations(duration_pb2.Duration(seconds=1, nanos=1))] == [
        "seconds",
        "nanos",
    ]


NUMBER_CASES: list[tuple[Callable[[int], Message], str, int, int | None]] = [
    # (request with the value at the field, field path, lowest allowed, highest allowed)
    (lambda v: ew.PublishAtomicReplaceRequest(range_start_utc_ms=v), "range_start_utc_ms", 0, MAX_UTC_MS),
    (lambda v: ew.PublishAtomicReplaceRequest(generation_id=v), "generation_id", 0, 2**52),
    (
        lambda v: ew.PublishAtomicReplaceRequest(
            entries=[pb.ExecutionEntry(), pb.ExecutionEntry(generation_id=v)]
        ),
        "entries[1].generation_id",
        0,
        2**53 - 1,
    ),
    (
        lambda v: ew.PublishAtomicReplaceRequest(entries=[pb.ExecutionEntry(block_index=v)]),
        "entries[0].block_index",
        0,
        2**53 - 1,
    ),
    (
        lambda v: ew.PublishAtomicReplaceRequest(
            entries=[
                pb.ExecutionEntry(segments=[pb.Segment(duration_ms=1)]),
                pb.ExecutionEntry(segments=[pb.Segment(duration_ms=1), pb.Segment(duration_ms=v)]),
            ]
        ),
        "entries[1].segments[1].duration_ms",
        1,
        2_592_000_000,
    ),
    (
        lambda v: ew.ReplaceEntryRequest(
            entry=pb.ExecutionEntry(segments=[pb.Segment(duration_ms=1, asset_offset_ms=v)])
        ),
        "entry.segments[0].asset_offset_ms",
        0,
        2_592_000_000,
    ),
    (
        lambda v: ew.ReplaceEntryRequest(entry=pb.ExecutionEntry(end_utc_ms=v)),
        "entry.end_utc_ms",
        0,
        MAX_UTC_MS,
    ),
    (lambda v: ew.GetEntryAtRequest(at_utc_ms=v), "at_utc_ms", 0, MAX_UTC_MS),
    (lambda v: ew.ReadWindowSnapshotRequest(end_utc_ms=v), "end_utc_ms", 0, MAX_UTC_MS),
    (lambda v: ew.WatchWindowRequest(after_generation_id=v), "after_generation_id", 0, 2**53 - 1),
    (lambda v: ew.WatchWindowRequest(progress_interval_ms=v), "progress_interval_ms", 0, 2_592_000_000),
    (lambda v: ch.DeclareChannelRequest(locked_window_ms=v), "locked_window_ms", 1, 2_592_000_000),
    (lambda v: clk.SetTimeRequest(now_utc_ms=v), "now_utc_ms", 0, MAX_UTC_MS),
    (lambda v: clk.AdvanceTimeRequest(delta_ms=v), "delta_ms", 1, 2_592_000_000),
    (lambda v: audit.ListOverrideRecordsRequest(page_size=v), "page_size", 0, None),
    (
        lambda v: sd.StoreScheduleDayRequest(
            schedule_day=pb.ScheduleDay(slots=[pb.ScheduleSlot(), pb.ScheduleSlot(start_utc_ms=v)])
        ),
        "schedule_day.slots[1].start_utc_ms",
        0,
        MAX_UTC_MS,
    ),
    (
        lambda v: sd.OperatorOverrideRequest(schedule_day=pb.ScheduleDay(resolved_utc_ms=v)),
        "schedule_day.resolved_utc_ms",
        0,
        MAX_UTC_MS,
    ),
]


def _int_limits(message: Message, path: str) -> tuple[int, int]:
    """The range the field's protobuf type can carry at all."""
    descriptor: Any = message.DESCRIPTOR
    field: Any = None
    for part in path.split("."):
        field = descriptor.fields_by_name[part.split("[")[0]]
        descriptor = field.message_type
    unsigned = field.cpp_type in (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64)
    bits = 64 if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64) else 32
    return (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@pytest.mark.parametrize(("build", "path", "low", "high"), NUMBER_CASES, ids=[c[1] for c in NUMBER_CASES])
def test_each_number_is_checked_at_its_bounds_with_its_path_and_range(
    build: Callable[[int], Message], path: str, low: int, high: int | None
) -> None:
    type_low, type_high = _int_limits(build(0), path)
    for value in (low, high if high is not None else type_high):
        assert limits.violations(build(value)) == [], value
        limits.check(build(value))
    candidates = [low - 1, type_low, type_high] + ([high + 1] if high is not None else [])
    refused = [
        v for v in candidates if type_low <= v <= type_high and not (low <= v and (high is None or v <= high))
    ]
    assert refused
    range_text = f"between {low} and {high}" if high is not None else f">= {low}"
    for value in refused:
        found = limits.violations(build(value))
        assert [v.field for v in found] == [path], value
        assert range_text in found[0].rule and found[0].rule.endswith(f"got {value}")
        with pytest.raises(MalformedRequest, match=re.escape(path)):
            limits.check(build(value))


def test_the_rule_names_the_range_and_the_value() -> None:
    request = publish_request()
    request.entries[3].segments[0].duration_ms = INT64_MAX
    request.range_end_utc_ms = INT64_MAX
    assert [(v.field, v.rule) for v in limits.violations(request)] == [
        ("range_end_utc_ms", f"must be between 0 and 253402300799999, got {INT64_MAX}"),
        (
            "entries[3].segments[0].duration_ms",
            f"must be between 1 and 2592000000 (30 days), got {INT64_MAX}",
        ),
    ]


# -- the refusals that used to brick a channel or the server ---------------------------


def _forged_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode()


async def _watch_first(r: Running, request: ew.WatchWindowRequest) -> Any:
    stream = r.stubs.window.WatchWindow(request)
    try:
        return await stream.read()
    finally:
        stream.cancel()


BRICKS: dict[str, tuple[Callable[[Running], Awaitable[Any]], str]] = {
    "publish generation 2^63-1": (
        lambda r: r.stubs.window.PublishAtomicReplace(publish_request(generation_id=INT64_MAX)),
        "generation_id",
    ),
    "publish generation 2^64-1": (
        lambda r: r.stubs.window.PublishAtomicReplace(publish_request(generation_id=UINT64_MAX)),
        "generation_id",
    ),
    "SetTime 2^63-1": (
        lambda r: r.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=INT64_MAX)),
        "now_utc_ms",
    ),
    "AdvanceTime 2^63-1": (
        lambda r: r.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=INT64_MAX)),
        "delta_ms",
    ),
    "DeclareChannel lock 2^63-1": (
        lambda r: r.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=INT64_MAX, reason_code="DEEPER")
        ),
        "locked_window_ms",
    ),
    "WatchWindow after 2^63": (
        lambda r: _watch_first(r, ew.WatchWindowRequest(channel_id=CH, after_generation_id=2**63)),
        "after_generation_id",
    ),
    "page token seq:2^63": (
        lambda r: r.stubs.audit.ListOverrideRecords(
            audit.ListOverrideRecordsRequest(page_token=_forged_token(2**63))
        ),
        "page_token",
    ),
}


@pytest.mark.parametrize("case", list(BRICKS))
async def test_a_value_that_used_to_brick_the_service_is_refused_and_everything_stays_usable(
    running: Running, violations: Any, case: str
) -> None:
    await _prepare(running)
    call, field = BRICKS[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(running)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(info.value)] == [field]
    if field != "page_token":
        # Refused by the interceptor, before the servicer: logged as a malformed request.
        event = violations.events[-1]
        assert event["event"] == "mutation_rejected" and event["error_code"] == "INVALID_ARGUMENT"
        assert event["invariant"] == "INV-PLAYLOG-WELL-FORMED-REQUEST-001-VIOLATED"
        assert event["field_violations"][0]["field"] == field
    await _still_usable(running)


async def test_a_requested_generation_at_the_limit_still_leaves_room_for_later_publishes(
    running: Running,
) -> None:
    await _prepare(running)
    first = await running.stubs.window.PublishAtomicReplace(publish_request(generation_id=2**52))
    assert first.ok and first.published_generation_id == 2**52, first
    second = await running.publish_day(CH, T0 + DAY, "again")
    assert second.ok and second.published_generation_id == 2**52 + 1, second
    stream = running.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH, after_generation_id=2**52))
    event = await stream.read()
    stream.cancel()
    assert event.replaced.generation_id == 2**52 + 1


# -- page tokens ------------------------------------------------------------------------


async def _channel_records(r: Running, count: int) -> list[str]:
    """`count` override records of channel CH (lock depth changes)."""
    await r.declare(CH)
    ids = []
    for i in range(count):
        response = await r.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR + i + 1, reason_code="DEEPER")
        )
        ids.append(response.override_record_id)
    return ids


async def _refused_token(r: Running, token: str, channel_id: str = CH) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await r.stubs.audit.ListOverrideRecords(
            audit.ListOverrideRecordsRequest(channel_id=channel_id, page_size=1, page_token=token)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(info.value) == [
        ("page_token", "not a token this server issued for this channel_id: pass next_page_token as is")
    ]


async def test_page_tokens_are_opaque_checked_and_bound_to_their_channel_filter(running: Running) -> None:
    ids = await _channel_records(running, 3)
    await running.declare("other")
    page = await running.stubs.audit.ListOverrideRecords(
        audit.ListOverrideRecordsRequest(channel_id=CH, page_size=1)
    )
    token = page.next_page_token
    assert [r.id for r in page.records] == ids[:1] and token
    # Passed as is, it continues where the page ended.
    following = await running.stubs.audit.ListOverrideRecords(
        audit.ListOverrideRecordsRequest(channel_id=CH, page_size=5, page_token=token)
    )
    assert [r.id for r in following.records] == ids[1:] and not following.next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token))
    for position in (0, 8, len(raw) - 1):  # the version, the seq, the checksum
        edited = bytearray(raw)
        edited[position] ^= 0x01
        await _refused_token(running, base64.urlsafe_b64encode(bytes(edited)).decode())
    await _refused_token(running, token, channel_id="other")
    await _refused_token(running, token, channel_id="")
    await _refused_token(running, _forged_token(1))
    await _refused_token(running, "not base64 at all!")
    await _refused_token(running, "é")
    await _refused_token(running, token * 10)
    # Even a token with a valid checksum must carry a seq below 2^53.
    await _refused_token(running, servicers._encode_page_token(2**53, CH))
    assert servicers._decode_page_token(servicers._encode_page_token(2**53 - 1, CH), CH) == 2**53 - 1


async def test_page_size_is_clamped_to_the_maximum_and_negative_is_refused(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _channel_records(running, 3)
    everything = await running.stubs.audit.ListOverrideRecords(
        audit.ListOverrideRecordsRequest(page_size=2**31 - 1)
    )
    assert [r.id for r in everything.records] == ids
    monkeypatch.setattr(servicers, "MAX_PAGE_SIZE", 2)
    monkeypatch.setattr(servicers, "DEFAULT_PAGE_SIZE", 1)
    clamped = await running.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(page_size=1000))
    assert [r.id for r in clamped.records] == ids[:2] and clamped.next_page_token
    default = await running.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(page_size=0))
    assert [r.id for r in default.records] == ids[:1]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(page_size=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(info.value)] == ["page_size"]


# -- a body that is not a message -------------------------------------------------------

GARBAGE = b"\xff\xff\xff\xff\x0f"  # a truncated varint: no message parses from it
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # channel_id with invalid UTF-8


@pytest.mark.parametrize("body", [GARBAGE, BAD_UTF8], ids=["truncated", "bad-utf8"])
async def test_a_body_that_is_not_a_message_is_invalid_argument_naming_its_type(
    running: Running, violations: Any, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    await _prepare(running)
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(running.address) as channel:
        publish = channel.unary_unary(
            "/playlog.v1.ExecutionWindowService/PublishAtomicReplace",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(body)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(
            "request body is not a valid playlog.v1.PublishAtomicReplaceRequest: "
        )
        watch = channel.unary_stream(
            "/playlog.v1.ExecutionWindowService/WatchWindow",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in watch(body):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(
            "request body is not a valid playlog.v1.WatchWindowRequest: "
        )
    refused = [e for e in violations.events if e.get("message_type")]
    assert [e["message_type"] for e in refused] == [
        "playlog.v1.PublishAtomicReplaceRequest",
        "playlog.v1.WatchWindowRequest",
    ]
    assert {e["rpc"] for e in refused} == {"PublishAtomicReplace", "WatchWindow"}
    assert all(e["error_code"] == "INVALID_ARGUMENT" for e in refused)
    # A refusal like any other: no error, no traceback anywhere in the log.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    await _still_usable(running)


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


# -- no string carries a NUL character -------------------------------------------------


def test_a_nul_character_in_any_string_is_named_by_its_path() -> None:
    request = publish_request(reason_code="DAILY\x00")
    request.entries[2].segments[1].title = "\x00"
    assert [(v.field, v.rule) for v in limits.violations(request)] == [
        ("reason_code", "must not contain NUL characters (U+0000)"),
        ("entries[2].segments[1].title", "must not contain NUL characters (U+0000)"),
    ]
    with pytest.raises(MalformedRequest):
        limits.check(request)
    limits.check(publish_request(reason_code="DAILY"))


NUL_CALLS: dict[str, tuple[Callable[[Any], Awaitable[Any]], str]] = {
    "GetChannel": (lambda s: s.channel.GetChannel(ch.GetChannelRequest(channel_id="\x00")), "channel_id"),
    "GetEntryAt": (
        lambda s: s.window.GetEntryAt(ew.GetEntryAtRequest(channel_id="ch\x001", at_utc_ms=T0)),
        "channel_id",
    ),
    "ListOverrideRecords": (
        lambda s: s.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id="a\x00")),
        "channel_id",
    ),
    "GetOverrideRecord": (
        lambda s: s.audit.GetOverrideRecord(audit.GetOverrideRecordRequest(id="a\x00")),
        "id",
    ),
    "VerifyIntegrity": (
        lambda s: s.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(channel_id="a\x00")),
        "channel_id",
    ),
    "PublishAtomicReplace": (
        lambda s: s.window.PublishAtomicReplace(publish_request(reason_code="DAILY\x00")),
        "reason_code",
    ),
    "DeclareChannel": (
        lambda s: s.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * HOUR, reason_code="DEEPER\x00")
        ),
        "reason_code",
    ),
}


@pytest.mark.parametrize("case", list(NUL_CALLS))
async def test_a_nul_character_is_invalid_argument_not_a_storage_failure(running: Running, case: str) -> None:
    """PostgreSQL cannot store a NUL in text: these answered INTERNAL there."""
    await _prepare(running)
    call, field = NUL_CALLS[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(running.stubs)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(info.value)] == [field]
    await _still_usable(running)


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


# -- fuzz: every answer is a clear one ----------------------------------------------------

CLEAR = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
EDGES = [0, 1, -1, 2**31, 2**52, 2**53 - 1, 2**53, MAX_UTC_MS, MAX_UTC_MS + 1, INT64_MAX, -(2**63)]
int64s = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), INT64_MAX), st.integers(T0, T0 + 2 * DAY))
uint64s = st.one_of(st.sampled_from([e for e in EDGES if e >= 0] + [UINT64_MAX]), st.integers(0, UINT64_MAX))
ids = st.one_of(
    st.sampled_from([CH, "", "d0", "ch1\n", "ch1\x00", "x" * 129, "x" * 20_000, "é"]), st.text(max_size=40)
)
segments = st.builds(
    pb.Segment, segment_id=ids, asset_offset_ms=int64s, duration_ms=int64s, title=st.text(max_size=10)
)
entries = st.builds(
    pb.ExecutionEntry,
    channel_id=ids,
    block_id=ids,
    block_index=int64s,
    start_utc_ms=int64s,
    end_utc_ms=int64s,
    segments=st.lists(segments, max_size=3),
    programming_day_date=st.one_of(st.just(date_of(T0 + DAY)), st.text(max_size=12)),
    generation_id=uint64s,
)
publishes = st.builds(
    ew.PublishAtomicReplaceRequest,
    channel_id=ids,
    range_start_utc_ms=int64s,
    range_end_utc_ms=int64s,
    entries=st.lists(entries, max_size=3),
    generation_id=uint64s,
    operator_override=st.booleans(),
    reason_code=st.sampled_from(["", "FUZZ"]),
)
INT_MUTATIONS = [
    "range_start_utc_ms",
    "range_end_utc_ms",
    "generation_id",
    "entries.start_utc_ms",
    "entries.end_utc_ms",
    "entries.block_index",
    "entries.generation_id",
    "entries.segments.duration_ms",
    "entries.segments.asset_offset_ms",
]
STR_MUTATIONS = [
    "channel_id",
    "entries.block_id",
    "entries.channel_id",
    "entries.programming_day_date",
    "entries.segments.segment_id",
]


def mutated_publish(path: str, index: int, value: int | str) -> ew.PublishAtomicReplaceRequest:
    """A valid publish of a whole day with one field set to `value`."""
    request = publish_request()
    target: Any = request
    *parents, name = path.split(".")
    for parent in parents:
        items = getattr(target, parent)
        target = items[index % len(items)]
    if isinstance(value, int) and name.endswith("generation_id"):
        value %= 2**64  # an unsigned field
    setattr(target, name, value)
    return request


mutated_publishes = st.one_of(
    st.builds(mutated_publish, st.sampled_from(INT_MUTATIONS), st.integers(0, 95), int64s),
    st.builds(mutated_publish, st.sampled_from(STR_MUTATIONS), st.integers(0, 95), ids),
)
other_requests = st.one_of(
    st.builds(ch.DeclareChannelRequest, channel_id=ids, locked_window_ms=int64s, reason_code=st.just("FUZZ")),
    st.builds(ch.GetChannelRequest, channel_id=ids),
    st.builds(ew.ReadWindowSnapshotRequest, channel_id=ids, start_utc_ms=int64s, end_utc_ms=int64s),
    st.builds(ew.GetEntryAtRequest, channel_id=ids, at_utc_ms=int64s),
    st.builds(
        audit.ListOverrideRecordsRequest,
        channel_id=ids,
        page_size=st.integers(-(2**31), 2**31 - 1),
        page_token=st.text(max_size=30),
    ),
    st.builds(sd.GetScheduleDayRequest, channel_id=ids, programming_day_date=st.text(max_size=12)),
)
METHODS = {
    ch.DeclareChannelRequest: "/playlog.v1.ChannelService/DeclareChannel",
    ch.GetChannelRequest: "/playlog.v1.ChannelService/GetChannel",
    ew.PublishAtomicReplaceRequest: "/playlog.v1.ExecutionWindowService/PublishAtomicReplace",
    ew.ReadWindowSnapshotRequest: "/playlog.v1.ExecutionWindowService/ReadWindowSnapshot",
    ew.GetEntryAtRequest: "/playlog.v1.ExecutionWindowService/GetEntryAt",
    audit.ListOverrideRecordsRequest: "/playlog.v1.AuditService/ListOverrideRecords",
    sd.GetScheduleDayRequest: "/playlog.v1.ScheduleDayService/GetScheduleDay",
}


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=st.one_of(mutated_publishes, publishes, other_requests), raw=st.binary(max_size=64))
async def test_fuzzed_requests_get_clear_answers_and_the_channel_stays_usable(
    running: Running, message: Message, raw: bytes
) -> None:
    if not (await running.stubs.channel.ListChannels(ch.ListChannelsRequest())).channels:
        await _prepare(running)
    # The walker's compiled check of the numbers and its path-naming walk agree.
    number_violations = [v for v in limits.violations(message) if v.rule != limits.NUL_RULE]
    assert limits._admits(message) == (number_violations == [])
    async with grpc.aio.insecure_channel(running.address) as channel:
        method = METHODS[type(message)]
        for body in (message.SerializeToString(), raw):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                await call(body)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
                assert len(error.details() or "") <= MAX_MESSAGE_BYTES
            assert code in CLEAR, (method, code, body[:200])
    time = await running.stubs.clock.GetTime(clk.GetTimeRequest())
    assert time.now_utc_ms == T0
    snap = await running.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=T0, end_utc_ms=T0 + 3 * DAY)
    )
    assert snap.channel_id == CH


# -- the served process: refused, restarted, still usable ---------------------------------


def _expect_invalid_argument(call: Callable[[], Any], field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert [f for f, _ in bad_request(info.value)] == [field]


def test_the_served_process_refuses_brick_values_and_works_after_a_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    manual = ("--clock", "manual", "--start-utc-ms", str(T0))
    server = Served(data_dir, port, *manual)
    try:
        with grpc.insecure_channel(server.address) as channel:
            channels = ch_grpc.ChannelServiceStub(channel)
            window = ew_grpc.ExecutionWindowServiceStub(channel)
            clock = clk_grpc.ClockServiceStub(channel)
            channels.DeclareChannel(ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR))
            sd_grpc.ScheduleDayServiceStub(channel).StoreScheduleDay(
                sd.StoreScheduleDayRequest(schedule_day=schedule_day(CH, date_of(T0 + DAY)))
            )
            _expect_invalid_argument(
                lambda: clock.SetTime(clk.SetTimeRequest(now_utc_ms=INT64_MAX)), "now_utc_ms"
            )
            _expect_invalid_argument(
                lambda: window.PublishAtomicReplace(publish_request(generation_id=INT64_MAX)), "generation_id"
            )
            _expect_invalid_argument(
                lambda: channels.DeclareChannel(
                    ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=INT64_MAX, reason_code="DEEPER")
                ),
                "locked_window_ms",
            )
            assert clock.GetTime(clk.GetTimeRequest()).now_utc_ms == T0
            first = window.PublishAtomicReplace(publish_request(T0 + DAY, "a", generation_id=7))
            assert first.ok and first.published_generation_id == 7, first
        refused = [e for e in server.log_events() if e.get("error_code") == "INVALID_ARGUMENT"]
        assert [e["field_violations"][0]["field"] for e in refused] == [  # type: ignore[index]
            "now_utc_ms",
            "generation_id",
            "locked_window_ms",
        ]
        assert all(e["level"] == "warning" for e in refused)
        assert server.stop(signal.SIGTERM) == 0
        server = Served(data_dir, port, *manual)
        with grpc.insecure_channel(server.address) as channel:
            window = ew_grpc.ExecutionWindowServiceStub(channel)
            assert clk_grpc.ClockServiceStub(channel).GetTime(clk.GetTimeRequest()).now_utc_ms == T0
            got = ch_grpc.ChannelServiceStub(channel).GetChannel(ch.GetChannelRequest(channel_id=CH))
            assert got.channel.locked_window_ms == HOUR and got.channel.current_generation_id == 7
            second = window.PublishAtomicReplace(
                ew.PublishAtomicReplaceRequest(
                    channel_id=CH,
                    range_start_utc_ms=T0 + DAY,
                    range_end_utc_ms=T0 + DAY + HOUR,
                    entries=[entry("b0", T0 + DAY, T0 + DAY + HOUR)],
                )
            )
            assert second.ok and second.published_generation_id == 8, second
            snap = window.ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=T0 + DAY, end_utc_ms=T0 + 2 * DAY)
            )
            assert [e.block_id for e in snap.entries[:2]] == ["b0", "a2"]
            assert snap.channel_generation_id == 8
        assert not [e for e in server.log_events() if e.get("level") == "error"]
        assert server.stop(signal.SIGTERM) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
