"""Shared fixtures: the real servicer in-process (grpc.aio server on a free
loopback port, real generated stubs) on a deterministic manual clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from playlog.clock import ManualClock
from playlog.config import Settings
from playlog.server import PlaylogServer
from playlog.store.base import Store
from playlog.store.postgres import WRITE_LOCK_NAMESPACE, PostgresStore
from playlog.v1 import (
    audit_service_pb2_grpc,
    channel_service_pb2,
    channel_service_pb2_grpc,
    clock_service_pb2_grpc,
    engine_service_pb2_grpc,
    execution_window_service_pb2,
    execution_window_service_pb2_grpc,
    guide_service_pb2_grpc,
    schedule_day_service_pb2,
    schedule_day_service_pb2_grpc,
)
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, T0, date_of, day_of_entries, schedule_day
from tests.postgres import fresh_postgres_database


@dataclasses.dataclass
class Stubs:
    channel: channel_service_pb2_grpc.ChannelServiceStub
    window: execution_window_service_pb2_grpc.ExecutionWindowServiceStub
    days: schedule_day_service_pb2_grpc.ScheduleDayServiceStub
    audit: audit_service_pb2_grpc.AuditServiceStub
    clock: clock_service_pb2_grpc.ClockServiceStub
    engine: engine_service_pb2_grpc.EngineServiceStub
    guide: guide_service_pb2_grpc.GuideServiceStub


def make_stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(
        channel=channel_service_pb2_grpc.ChannelServiceStub(channel),
        window=execution_window_service_pb2_grpc.ExecutionWindowServiceStub(channel),
        days=schedule_day_service_pb2_grpc.ScheduleDayServiceStub(channel),
        audit=audit_service_pb2_grpc.AuditServiceStub(channel),
        clock=clock_service_pb2_grpc.ClockServiceStub(channel),
        engine=engine_service_pb2_grpc.EngineServiceStub(channel),
        guide=guide_service_pb2_grpc.GuideServiceStub(channel),
    )


@dataclasses.dataclass
class Running:
    server: PlaylogServer
    clock: ManualClock
    address: str
    stubs: Stubs
    data_dir: Path

    async def declare(self, channel_id: str = "ch1", locked_window_ms: int = 3_600_000) -> None:
        await self.stubs.channel.DeclareChannel(
            channel_service_pb2.DeclareChannelRequest(
                channel_id=channel_id, locked_window_ms=locked_window_ms
            )
        )

    async def publish_day(self, channel_id: str, start: int, prefix: str) -> pb.PublishResult:
        """Replaces [start, start + 1 day) by a day of 48 entries named prefix0..47."""
        return await self.stubs.window.PublishAtomicReplace(
            execution_window_service_pb2.PublishAtomicReplaceRequest(
                channel_id=channel_id,
                range_start_utc_ms=start,
                range_end_utc_ms=start + DAY,
                entries=day_of_entries(start, prefix),
            )
        )

    async def store_days(self, channel_id: str, *dates_or_instants: str | int) -> None:
        for d in dates_or_instants:
            date = d if isinstance(d, str) else date_of(d)
            result = await self.stubs.days.StoreScheduleDay(
                schedule_day_service_pb2.StoreScheduleDayRequest(schedule_day=schedule_day(channel_id, date))
            )
            assert result.ok or result.error_code == 9, result  # 9: already exists


async def start_server(
    data_dir: Path, clock: ManualClock, *, store: Store | None = None, **overrides: Any
) -> Running:
    settings = dataclasses.replace(
        Settings(), data_dir=str(data_dir), listen="127.0.0.1:0", clock="manual", **overrides
    )
    server = PlaylogServer(settings, clock=clock, store=store)
    port = await server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    return Running(server, clock, address, make_stubs(channel), data_dir)


@contextlib.asynccontextmanager
async def writes_held(r: Running, channel_id: str) -> AsyncIterator[None]:
    """Another writer holds the channel: on SQLite the store's one writer, on
    PostgreSQL the channel's write lock in the database (as a replica in the
    middle of a long write to it would)."""
    store = r.server.store
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (WRITE_LOCK_NAMESPACE, channel_id))
            yield
        return
    lock = store._write_lock  # type: ignore[attr-defined]
    await asyncio.to_thread(lock.acquire)
    try:
        yield
    finally:
        lock.release()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The store behind `running`: every servicer test runs on both (SPEC section 10).
    A test that needs one parametrizes `backend` itself."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str) -> Iterator[str]:
    """ "" for SQLite; for PostgreSQL, a fresh database, dropped afterwards."""
    if backend == "sqlite":
        yield ""
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def running(tmp_path: Path, clock: ManualClock, database_url: str) -> AsyncIterator[Running]:
    r = await start_server(tmp_path / "data", clock, database_url=database_url)
    yield r
    await r.server.stop(0)


class ViolationCapture(logging.Handler):
    """Captures the structured violation events (SPEC section 8)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, "fields", {}))
        fields["event"] = getattr(record, "event", record.getMessage())
        json.dumps(fields, default=str)  # every event must serialize as one JSON line
        self.events.append(fields)


@pytest.fixture
def violations() -> Any:
    capture = ViolationCapture()
    logger = logging.getLogger("playlog.violations")
    logger.addHandler(capture)
    logger.setLevel(logging.WARNING)
    yield capture
    logger.removeHandler(capture)
