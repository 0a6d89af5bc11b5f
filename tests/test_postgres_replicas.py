"""Scale-out (SPEC section 10): several replicas share one PostgreSQL database;
writes to a channel are serialized in the database and every replica's
watchers hear every publish (LISTEN/NOTIFY as a doorbell, history as data)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from playlog.clock import ManualClock
from playlog.store.base import StoreListener
from playlog.store.postgres import PostgresStore
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0
from tests.conftest import Running, start_server
from tests.followers import follow
from tests.postgres import ADMIN_URL, fresh_postgres_database

CH = "ch1"
DAY1 = T0 + DAY


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:
    with fresh_postgres_database() as url:
        # A clock object each: what replicas share, they share through the database.
        a = await start_server(tmp_path / "a", ManualClock(T0), database_url=url)
        b = await start_server(tmp_path / "b", ManualClock(T0), database_url=url)
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


# -- a hole in the chain, and a listener that lost its connection --------------------------


class HeldDoorbells(PostgresStore):
    """A replica's store whose doorbells (NOTIFYs heard by its listener) are
    held back while `hold` is on, as a slow network would delay them; its own
    commits still reach its subscribers at once, from memory."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[tuple[str, int]] = []
        self._listener: StoreListener | None = None

    def listen(self, listener: StoreListener) -> None:
        self._listener = listener
        store = self

        class Held:
            def __getattr__(self, name: str) -> Any:
                return getattr(listener, name)

            def publish_committed(self, channel_id: str, generation_id: int) -> None:
                store._doorbell(channel_id, generation_id)

        super().listen(cast(StoreListener, Held()))

    def _ring(self, channel_id: str, generation: int) -> None:
        if self._listener is not None:
            self._listener.publish_committed(channel_id, generation)

    def _doorbell(self, channel_id: str, generation: int) -> None:
        with self._lock:
            if self._holding:
                self._held.append((channel_id, generation))
                return
        self._ring(channel_id, generation)

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def release(self) -> list[tuple[str, int]]:
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
        for channel_id, generation in held:
            self._ring(channel_id, generation)
        return held


async def test_a_hole_in_the_chain_is_filled_from_the_history_in_order_and_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Replica B's subscriber gets B's own publish from memory before the
    doorbell for A's publish just before it: the event names a previous
    generation the subscriber never got. It must be sent A's publish from the
    durable history first, then B's, each once, the chain unbroken."""
    with fresh_postgres_database() as url:
        a = await start_server(tmp_path / "a", clock, database_url=url)
        b_store = HeldDoorbells(url)
        b = await start_server(tmp_path / "b", clock, database_url=url, store=b_store)
        try:
            await a.declare(CH, HOUR)
            await a.store_days(CH, DAY1)
            watcher = follow(b)
            await watcher.until(lambda: watcher.snapshots())
            assert watcher.snapshots()[-1].channel_generation_id == 0

            b_store.hold()
            assert (await publish(a, "a1-")).published_generation_id == 1  # its doorbell is held
            assert (await publish(b, "b2-")).published_generation_id == 2  # previous: 1, undelivered
            await watcher.until(lambda: len(watcher.replaced()) == 2)
            # Both arrived while every doorbell was still held: the hole was
            # filled from the history, not by a doorbell.
            held = b_store.release()
            assert (CH, 1) in held
            replaced = watcher.replaced()
            assert [e.generation_id for e in replaced] == [1, 2]
            assert [e.previous_generation_id for e in replaced] == [0, 1]
            assert [e.entries[0].block_id for e in replaced] == ["a1-0", "b2-0"]

            # The late doorbells repeat nothing, and the chain goes on from both replicas.
            assert (await publish(a, "a3-")).ok
            assert (await publish(b, "b4-")).ok
            await watcher.until(lambda: len(watcher.replaced()) == 4)
            replaced = watcher.replaced()
            assert [e.generation_id for e in replaced] == [1, 2, 3, 4]
            assert [e.previous_generation_id for e in replaced] == [0, 1, 2, 3]
            assert [e.entries[0].block_id for e in replaced] == ["a1-0", "b2-0", "a3-0", "b4-0"]
            watcher.cancel()
        finally:
            await a.server.stop(0)
            await b.server.stop(0)


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def test_a_publish_made_while_the_listener_was_disconnected_still_reaches_the_watcher(
    replicas: tuple[Running, Running],
) -> None:
    """B's LISTEN connection is terminated and cannot come back while A
    publishes, so that NOTIFY is lost for B; on reconnecting, B's listener rings
    every channel's doorbell and the watcher reads the publish from the history."""
    a, b = replicas
    assert isinstance(b.server.store, PostgresStore)
    db = _database_name(b.server.store.url)
    await a.declare(CH, HOUR)
    await a.store_days(CH, DAY1)
    watcher = follow(b)
    await watcher.until(lambda: watcher.snapshots())
    assert (await publish(a, "a1-")).ok
    await watcher.until(lambda: len(watcher.replaced()) == 1)  # B's listener is up

    def listeners(admin: psycopg.Connection[Any]) -> list[int]:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'playlog-listen'",
            (db,),
        ).fetchall()
        return [int(pid) for (pid,) in rows]

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        # No new connection to the database: the listeners cannot come back yet
        # (the servers' pooled connections stay).
        admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        try:
            pids = listeners(admin)
            assert pids  # at least B's, which just rang
            for pid in pids:
                # Waits (up to 10 s) until the backend has exited.
                assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)
            assert listeners(admin) == []
            # Nobody listens: this publish's NOTIFY reaches no replica.
            assert (await publish(a, "a2-")).published_generation_id == 2
        finally:
            admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")

    await watcher.until(lambda: len(watcher.replaced()) == 2)
    # And the new connection hears the next publish's doorbell as before.
    assert (await publish(a, "a3-")).ok
    await watcher.until(lambda: len(watcher.replaced()) == 3)
    replaced = watcher.replaced()
    assert [e.generation_id for e in replaced] == [1, 2, 3]
    assert [e.previous_generation_id for e in replaced] == [0, 1, 2]
    assert [e.entries[0].block_id for e in replaced] == ["a1-0", "a2-0", "a3-0"]
    watcher.cancel()


# -- one read per (channel, cursor), one reset snapshot per channel --------------------


async def test_subscribers_at_one_cursor_share_one_history_read_per_doorbell(
    replicas: tuple[Running, Running],
) -> None:
    """etcd's syncWatchers: a remote publish costs one history read for all of
    a replica's subscribers at the same cursor, not one each."""
    a, b = replicas
    await a.declare(CH, HOUR)
    await a.store_days(CH, DAY1)
    watchers = [follow(b) for _ in range(50)]
    for w in watchers:
        await w.until(lambda w=w: w.snapshots())
    hub = b.server.watch
    before = hub.history_reads
    for i in range(3):
        assert (await publish(a, f"a{i}-")).ok
        for w in watchers:
            await w.until(lambda w=w, i=i: len(w.replaced()) == i + 1)
    for w in watchers:
        assert [e.generation_id for e in w.replaced()] == [1, 2, 3]
        w.cancel()
    # Without sharing: 50 per publish (150). A doorbell that arrives while a
    # read is in flight may cost one more.
    assert hub.history_reads - before <= 6, hub.history_reads - before


async def test_subscribers_owed_a_reset_at_the_same_time_share_one_snapshot_read(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    await a.declare(CH, HOUR)
    await a.store_days(CH, DAY1)
    assert (await publish(a, "s-")).ok
    hub = b.server.watch
    subscribers = [hub.subscribe(CH) for _ in range(20)]
    try:
        before = hub.snapshot_reads
        results = await asyncio.gather(*(hub._snapshot(sub, True) for sub in subscribers))
        assert hub.snapshot_reads - before == 1
        assert {generation for _, generation in results} == {1}
        assert all(events == results[0][0] for events, _ in results)
    finally:
        for sub in subscribers:
            hub.unsubscribe(sub)
