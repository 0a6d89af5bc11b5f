"""Scale-out (SPEC section 10): several replicas share one PostgreSQL database;
writes to a channel are serialized in the database and every replica's
watchers hear every publish (LISTEN/NOTIFY as a doorbell, history as data)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from playlog.clock import ManualClock
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0
from tests.conftest import Running, start_server
from tests.followers import follow
from tests.postgres import fresh_postgres_database

CH = "ch1"
DAY1 = T0 + DAY


@pytest.fixture
async def replicas(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Running, Running]]:
    with fresh_postgres_database() as url:
        a = await start_server(tmp_path / "a", clock, database_url=url)
        b = await start_server(tmp_path / "b", clock, database_url=url)
        try:
            yield a, b
        finally:
            await a.server.stop(0)
            await b.server.stop(0)


async def publish(r: Running, prefix: str) -> pb.PublishResult:
    return await r.publish_day(CH, DAY1, prefix)


async def test_a_watcher_on_one_replica_hears_publishes_committed_on_another(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    await a.declare(CH, HOUR)
    await a.store_days(CH, DAY1)
    watcher = follow(b)
    await watcher.until(lambda: watcher.snapshots())
    for i in range(5):
        assert (await publish(a, f"a{i}-")).ok
    await watcher.until(lambda: len(watcher.replaced()) == 5)
    replaced = watcher.replaced()
    assert [e.generation_id for e in replaced] == [1, 2, 3, 4, 5]
    assert [e.previous_generation_id for e in replaced] == [0, 1, 2, 3, 4]
    assert replaced[-1].entries[0].block_id == "a4-0"
    watcher.cancel()


async def test_concurrent_publishes_on_two_replicas_are_serialized_in_the_database(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    await a.declare(CH, HOUR)
    await b.store_days(CH, DAY1)
    results = await asyncio.gather(*(publish(a if i % 2 else b, f"p{i}-") for i in range(16)))
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert sorted(r.published_generation_id for r in results) == list(range(1, 17))
    snap = await b.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
    )
    assert len(snap.entries) == 48 and {e.generation_id for e in snap.entries} == {16}
