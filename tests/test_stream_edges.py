"""The last edges of hostile input: a request stream (reflection's
ServerReflectionInfo, the server's one stream-request method) whose message
does not parse is INVALID_ARGUMENT like a unary one, never grpc's UNKNOWN; and
a request with thousands of violations is logged as one bounded line (the
first violations and a count), not one line as long as the request; and a
method a servicer never implemented is UNIMPLEMENTED, not INTERNAL."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from playlog.api.errors import abort_for
from playlog.events import MAX_LOGGED_VIOLATIONS
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, T0
from tests.conftest import Running

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
GARBAGE = b"\xff\xff\xff\xff\x0f"  # a truncated varint: no message parses from it
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # host (a string) with invalid UTF-8


@pytest.mark.parametrize("body", [GARBAGE, BAD_UTF8], ids=["truncated", "bad-utf8"])
async def test_an_undecodable_reflection_request_is_invalid_argument_after_the_good_ones(
    running: Running, violations: Any, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    async with grpc.aio.insecure_channel(running.address) as channel:
        call = channel.stream_stream(REFLECTION, request_serializer=None, response_deserializer=None)
        stream = call(iter([good, body, good]))
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for answer in stream:
                answers.append(reflection_pb2.ServerReflectionResponse.FromString(answer))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(
            "request body is not a valid grpc.reflection.v1alpha.ServerReflectionRequest: "
        )
        # The message before the bad one was answered; none after it.
        assert len(answers) == 1
        assert "playlog.v1.ExecutionWindowService" in {
            s.name for s in answers[0].list_services_response.service
        }
        # Reflection still works on the same channel.
        again = [
            reflection_pb2.ServerReflectionResponse.FromString(a)
            async for a in channel.stream_stream(
                REFLECTION, request_serializer=None, response_deserializer=None
            )(iter([good]))
        ]
        assert len(again) == 1
    refused = [e for e in violations.events if e.get("message_type")]
    assert [(e["rpc"], e["message_type"], e["error_code"]) for e in refused] == [
        ("ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflectionRequest", "INVALID_ARGUMENT")
    ]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_a_request_with_ten_thousand_violations_is_logged_as_one_bounded_line(
    running: Running, violations: Any
) -> None:
    await running.declare()
    # 10,000 entries, each with an empty block id and nothing else: at least
    # one violation apiece.
    request = ew.PublishAtomicReplaceRequest(
        channel_id="ch1",
        range_start_utc_ms=T0 + DAY,
        range_end_utc_ms=T0 + 2 * DAY,
        entries=[pb.ExecutionEntry(block_id="x" * 500 if i == 0 else "") for i in range(10_000)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stubs.window.PublishAtomicReplace(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [event] = [e for e in violations.events if e.get("error_code") == "INVALID_ARGUMENT"]
    assert event["field_violations_total"] >= 10_000
    assert len(event["field_violations"]) == MAX_LOGGED_VIOLATIONS
    assert event["detail"].endswith(f"… and {event['field_violations_total'] - MAX_LOGGED_VIOLATIONS} more")
    assert all(len(v["field"]) <= 200 and len(v["rule"]) <= 200 for v in event["field_violations"])
    assert len(json.dumps(event)) < 12_000


class _Aborted(Exception):
    pass


class _Context:
    """What abort_for needs of a servicer context: abort, which ends the call."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted


async def test_a_method_nobody_implemented_is_unimplemented_not_internal() -> None:
    """A generated servicer base class raises NotImplementedError for a method
    without an implementation (grpc's asyncio health servicer had no List):
    the caller is told UNIMPLEMENTED, as grpc itself would, not INTERNAL."""
    context = _Context()
    with pytest.raises(_Aborted):
        await abort_for(NotImplementedError("Method not implemented!"), context, "/x.v1.S/M")  # type: ignore[arg-type]
    assert context.aborted == (grpc.StatusCode.UNIMPLEMENTED, "/x.v1.S/M is not implemented by this server")


async def test_health_list_answers_every_service(running: Running) -> None:
    async with grpc.aio.insecure_channel(running.address) as channel:
        statuses = (await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())).statuses
    assert statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    assert statuses["playlog.v1.ChannelService"].status == health_pb2.HealthCheckResponse.SERVING
