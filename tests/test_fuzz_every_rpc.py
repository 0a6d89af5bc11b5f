"""Property-based fuzz of every request of every method the server serves, on
SQLite and on PostgreSQL (which refuses bytes SQLite takes: NUL was one).

For each method (walked from the descriptors, tests/request_strategies.py, so
a new RPC is fuzzed without anyone adding it here), the in-process server with
a channel, a stored day and a published day takes drawn requests; every
answer must be one a caller can act on:
- never INTERNAL or UNKNOWN (a bug, or a database error leaking out);
- a refused request (an error status, or an answer with ok = false, or a
  validate_only one) changed nothing: every table of the store, read
  directly, is as it was before the call;
- afterwards the server is still usable: the clock reads, a new channel
  takes a day, a publish commits and reads back.
derandomize=True: the same examples on every run, so CI is deterministic.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import message_factory
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from playlog.domain.validation import MAX_UTC_MS
from playlog.store.sqlite import DB_FILE
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from tests.builders import DAY, T0, date_of, day_of_entries, schedule_day
from tests.conftest import Running
from tests.request_strategies import CH, Rpc, every_rpc, request_bodies

RPCS = every_rpc()
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# A stream is read until its first message: a watch that is open and quiet
# after this long has answered well enough.
FIRST_MESSAGE_S = 1.0
EXAMPLES = 30


def _seeds() -> dict[str, list[Any]]:
    """Valid requests of the methods whose requests a random draw seldom
    makes valid (a day of contiguous entries, a day of slots): each is sent,
    and mutated one field at a time."""
    day = T0 + DAY
    publish = ew.PublishAtomicReplaceRequest(
        channel_id=CH, range_start_utc_ms=day, range_end_utc_ms=day + DAY, entries=day_of_entries(day, "s")
    )
    override = ew.PublishAtomicReplaceRequest()
    override.CopyFrom(publish)
    override.operator_override, override.reason_code = True, "BREAKING_NEWS"
    replace = ew.ReplaceEntryRequest(channel_id=CH, block_id="d47", entry=day_of_entries(day, "d")[47])
    days = [schedule_day(CH, date_of(day + DAY)), schedule_day(CH, date_of(day))]
    return {
        "/playlog.v1.ExecutionWindowService/PublishAtomicReplace": [publish, override],
        "/playlog.v1.ExecutionWindowService/ReplaceEntry": [replace],
        "/playlog.v1.ScheduleDayService/StoreScheduleDay": [sd.StoreScheduleDayRequest(schedule_day=days[0])],
        "/playlog.v1.ScheduleDayService/OperatorOverride": [
            sd.OperatorOverrideRequest(schedule_day=days[1], reason_code="BREAKING_NEWS")
        ],
        "/playlog.v1.ScheduleDayService/UpdateScheduleDay": [
            sd.UpdateScheduleDayRequest(schedule_day=days[1], reason_code="FIX")
        ],
        "/playlog.v1.ScheduleDayService/ForceRegenerate": [
            sd.ForceRegenerateRequest(schedule_day=days[1], reason_code="FIX")
        ],
    }


SEEDS = _seeds()


def test_the_walk_finds_every_service_the_server_serves() -> None:
    """An empty walk would fuzz nothing and pass."""
    from playlog.server import SERVICE_NAMES

    services = {rpc.path.split("/")[1] for rpc in RPCS}
    assert set(SERVICE_NAMES) <= services
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert len(RPCS) >= 28


class Tables:
    """Every row of every table of the store, read beside the server."""

    def __init__(self, running: Running, database_url: str) -> None:
        self._url = database_url
        self._path = running.data_dir / DB_FILE

    def read(self) -> dict[str, list[tuple[Any, ...]]]:
        if self._url:
            with psycopg.connect(self._url, autocommit=True) as conn:
                names = [
                    r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ]
                return {n: sorted(map(tuple, conn.execute(f'SELECT * FROM "{n}"')), key=repr) for n in names}
        conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: sorted(conn.execute(f'SELECT * FROM "{n}"'), key=repr) for n in names}
        finally:
            conn.close()


async def _call(channel: grpc.aio.Channel, rpc: Rpc, body: bytes) -> tuple[grpc.StatusCode, bytes | None]:
    """The status, and the (first) answer's bytes."""
    try:
        if not rpc.client_streaming and not rpc.server_streaming:
            answer = await channel.unary_unary(rpc.path, request_serializer=None, response_deserializer=None)(
                body, timeout=15
            )
            return grpc.StatusCode.OK, answer
        if rpc.client_streaming and not rpc.server_streaming:
            answer = await channel.stream_unary(
                rpc.path, request_serializer=None, response_deserializer=None
            )(iter([body]), timeout=15)
            return grpc.StatusCode.OK, answer
        if rpc.client_streaming:
            call: Any = channel.stream_stream(rpc.path, request_serializer=None, response_deserializer=None)(
                iter([body]), timeout=15
            )
        else:
            call = channel.unary_stream(rpc.path, request_serializer=None, response_deserializer=None)(
                body, timeout=15
            )
        try:
            first = await asyncio.wait_for(call.read(), FIRST_MESSAGE_S)
        except TimeoutError:
            return grpc.StatusCode.OK, None  # open and quiet
        finally:
            call.cancel()
        return grpc.StatusCode.OK, None if first is grpc.aio.EOF else first
    except grpc.aio.AioRpcError as error:
        return error.code(), None


def _refused(rpc: Rpc, code: grpc.StatusCode, answer: bytes | None) -> bool:
    if code != grpc.StatusCode.OK:
        return True
    if answer is None or rpc.server_streaming:
        return False
    message = message_factory.GetMessageClass(rpc.response).FromString(answer)
    fields = message.DESCRIPTOR.fields_by_name
    return ("ok" in fields and not message.ok) or ("validate_only" in fields and message.validate_only)


async def _prepared(r: Running) -> None:
    await r.declare(CH)
    await r.store_days(CH, T0 + DAY)
    assert (await r.publish_day(CH, T0 + DAY, "d")).ok


async def _usable(r: Running, n: int) -> None:
    """The server still answers, and still writes: a new channel takes a day
    and a publish of it reads back (on a clock the fuzz may have moved)."""
    now = (await r.stubs.clock.GetTime(clk.GetTimeRequest())).now_utc_ms
    channel_id = f"usable{n}"
    await r.declare(channel_id)
    got = await r.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id=channel_id))
    assert got.channel.channel_id == channel_id
    day = (now // DAY + 2) * DAY
    if day + DAY > MAX_UTC_MS:
        return  # the fuzz set the clock to the end of time: no day is left ahead to publish
    await r.store_days(channel_id, date_of(day))
    result = await r.publish_day(channel_id, day, "u")
    assert result.ok, result
    snap = await r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=channel_id, start_utc_ms=day, end_utc_ms=day + DAY)
    )
    assert len(snap.entries) == 48 and snap.channel_generation_id == result.published_generation_id


@pytest.fixture
async def fuzzed(running: Running) -> AsyncIterator[Running]:
    """The server with a channel, a stored day and a published day; usable
    still when the fuzz is done with it (checked here, after every example)."""
    await _prepared(running)
    yield running
    await _usable(running, 1)


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.path.lstrip("/") for rpc in RPCS])
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
async def test_every_request_gets_a_clear_answer_and_a_refused_one_changes_nothing(
    fuzzed: Running, database_url: str, rpc: Rpc, data: st.DataObject
) -> None:
    body = data.draw(request_bodies(rpc, SEEDS.get(rpc.path, [])), label="body")
    tables = Tables(fuzzed, database_url)
    before = tables.read()
    async with grpc.aio.insecure_channel(fuzzed.address) as channel:
        code, answer = await _call(channel, rpc, body)
    assert code not in NEVER, (rpc.path, code, body[:300])
    refused = _refused(rpc, code, answer)
    event(
        f"{code.name}{', refused' if refused and code == grpc.StatusCode.OK else ''}"
    )  # --hypothesis-show-statistics
    if refused:
        after = tables.read()
        changed = {t for t in set(before) | set(after) if before.get(t) != after.get(t)}
        assert not changed, (rpc.path, code, changed, body[:300])
