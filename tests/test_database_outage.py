"""Replicas on PostgreSQL that are interchangeable and survive their database
(SPEC section 10): writes serialized per channel in the database, every piece
of observable state shared through it, and a replica that loses its database
says so (NOT_SERVING, UNAVAILABLE), applies nothing by halves, and serves
again by itself when the database is back, its watchers caught up from the
durable history without a reset."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from playlog.clock import ManualClock
from playlog.store.base import FaultStep
from playlog.store.postgres import RECORD_LOCK_KEY, PostgresStore
from playlog.v1 import audit_service_pb2 as au
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as ck
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0, day_of_entries
from tests.conftest import Running, start_server, writes_held
from tests.followers import follow
from tests.netfault import cuttable_link
from tests.postgres import ADMIN_URL, fresh_postgres_database, stopped_cluster

CH = "ch1"
DAY1 = T0 + DAY
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def replica(
    path: Path, url: str, clock: ManualClock | None = None, **settings: Any
) -> AsyncIterator[Running]:
    # Each replica has its own clock object: what they share, they share
    # through the database.
    r = await start_server(path, clock or ManualClock(T0), database_url=url, **settings)
    try:
        yield r
    finally:
        await r.server.stop(0)


async def publish(r: Running, prefix: str, channel_id: str = CH, **fields: Any) -> pb.PublishResult:
    return await r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=channel_id,
            range_start_utc_ms=DAY1,
            range_end_utc_ms=DAY1 + DAY,
            entries=day_of_entries(DAY1, prefix),
            **fields,
        )
    )


async def prepared(r: Running, *channels: str) -> None:
    for channel_id in channels or (CH,):
        await r.declare(channel_id, HOUR)
        await r.store_days(channel_id, DAY1)


class HealthWatch:
    """The replica's health as a client sees it (Health/Watch: no polling)."""

    def __init__(self, r: Running) -> None:
        self._channel = grpc.aio.insecure_channel(r.address)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service="")
        )

    async def until(self, status: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        async def wait() -> None:
            async for update in self._stream:
                if update.status == status:
                    return
            raise AssertionError("the health stream ended")

        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        self._stream.cancel()
        await self._channel.close()


# -- writes serialized per channel, in the database -------------------------------------


async def test_a_write_to_one_channel_never_waits_for_a_write_to_another(
    tmp_path: Path, database: str
) -> None:
    async with replica(tmp_path / "a", database) as a, replica(tmp_path / "b", database) as b:
        await prepared(a, "ch1", "ch2")
        async with writes_held(a, "ch1"):
            waiting = asyncio.ensure_future(publish(a, "a-", "ch1"))
            # ch2 commits on both replicas while ch1's write waits for its lock.
            assert (await publish(a, "x-", "ch2")).published_generation_id == 1
            assert (await publish(b, "y-", "ch2")).published_generation_id == 2
            assert not waiting.done()
        result = await asyncio.wait_for(waiting, 20)
        assert result.ok and result.published_generation_id == 1


async def test_a_write_that_waits_longer_than_the_lock_timeout_is_unavailable_and_changes_nothing(
    tmp_path: Path, database: str
) -> None:
    async with replica(tmp_path / "a", database, database_lock_timeout_ms=200) as a:
        await prepared(a)
        async with writes_held(a, CH):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await publish(a, "a-")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "lock_timeout" in (err.value.details() or "")
        channel = await a.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id=CH))
        assert channel.channel.current_generation_id == 0
        assert (await publish(a, "b-")).published_generation_id == 1


async def test_generations_stay_strictly_increasing_with_both_replicas_writing_many_channels(
    tmp_path: Path, database: str
) -> None:
    async with replica(tmp_path / "a", database) as a, replica(tmp_path / "b", database) as b:
        channels = [f"ch{i}" for i in range(4)]
        await prepared(a, *channels)
        results = await asyncio.gather(
            *(publish(a if i % 2 else b, f"p{i}-", channels[i % 4]) for i in range(32))
        )
        assert all(r.ok for r in results)
        for c in range(4):
            generations = sorted(r.published_generation_id for i, r in enumerate(results) if i % 4 == c)
            assert generations == list(range(1, 9))
        audit = await b.stubs.audit.VerifyIntegrity(au.VerifyIntegrityRequest())
        assert list(audit.violations) == []


async def test_override_records_of_all_channels_commit_in_sequence_order(
    tmp_path: Path, database: str
) -> None:
    """Records are paged by one sequence across channels: an override takes
    its turn for the record (so a reader paging after seq N never misses a
    record committed later with a lower number); other writes do not wait."""
    async with replica(tmp_path / "a", database) as a:
        await prepared(a, "ch1", "ch2")
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (RECORD_LOCK_KEY,))
            waiting = asyncio.ensure_future(
                publish(a, "ov-", "ch1", operator_override=True, reason_code="BREAKING_NEWS")
            )
            assert (await publish(a, "plain-", "ch2")).ok  # no record: no turn to wait for
            assert not waiting.done()
            other.execute("SELECT pg_advisory_unlock(%s)", (RECORD_LOCK_KEY,))
            result = await asyncio.wait_for(waiting, 20)
        assert result.ok and result.override_record_id


# -- every observable piece of state, from any replica -------------------------------


async def test_the_manual_clock_moved_on_one_replica_is_every_replicas_now(
    tmp_path: Path, database: str
) -> None:
    async with (
        replica(tmp_path / "a", database, ManualClock(T0)) as a,
        replica(tmp_path / "b", database, ManualClock(T0)) as b,
    ):
        await prepared(a)
        watcher = follow(b, interval_ms=3_600_000)  # progress only on change
        await watcher.until(lambda: watcher.snapshots())
        moved = await a.stubs.clock.SetTime(ck.SetTimeRequest(now_utc_ms=DAY1 + HOUR))
        assert moved.now_utc_ms == DAY1 + HOUR
        # B answers with A's move at once (read from the database)...
        assert (await b.stubs.clock.GetTime(ck.GetTimeRequest())).now_utc_ms == DAY1 + HOUR
        # ...judges writes by it (the first hour of DAY1 has aired)...
        refused = await publish(b, "late-")
        assert not refused.ok and refused.error_code == pb.ERROR_CODE_PAST_WINDOW_IMMUTABLE
        # ...refuses a move back from it...
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await b.stubs.clock.SetTime(ck.SetTimeRequest(now_utc_ms=DAY1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # ...and its watchers hear of it (the notification) without a publish.
        await watcher.until(lambda: any(p.now_utc_ms == DAY1 + HOUR for p in watcher.progress()))
        # Moves take turns in the database: no replica moves from a stale now.
        advances = await asyncio.gather(
            *(r.stubs.clock.AdvanceTime(ck.AdvanceTimeRequest(delta_ms=1000)) for r in (a, b, a, b))
        )
        assert sorted(x.now_utc_ms for x in advances) == [DAY1 + HOUR + 1000 * i for i in range(1, 5)]
        assert (await a.stubs.clock.GetTime(ck.GetTimeRequest())).now_utc_ms == DAY1 + HOUR + 4000
        watcher.cancel()


async def test_a_redeclared_lock_depth_reaches_the_other_replicas_watchers_at_once(
    tmp_path: Path, database: str
) -> None:
    async with replica(tmp_path / "a", database) as a, replica(tmp_path / "b", database) as b:
        await prepared(a)
        watcher = follow(b, interval_ms=3_600_000)
        await watcher.until(lambda: watcher.snapshots())
        assert watcher.snapshots()[0].locked_until_utc_ms == T0 + HOUR
        await a.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * HOUR, reason_code="DEEPER")
        )
        await watcher.until(lambda: any(p.locked_until_utc_ms == T0 + 2 * HOUR for p in watcher.progress()))
        snap = await b.stubs.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
        )
        assert snap.locked_until_utc_ms == T0 + 2 * HOUR
        watcher.cancel()


# -- losing the database, and getting it back -----------------------------------------


async def test_a_replica_that_loses_its_database_is_not_serving_applies_nothing_and_recovers_by_itself(
    tmp_path: Path, database: str
) -> None:
    with cuttable_link() as link:
        async with (
            replica(tmp_path / "a", link.url(database)) as a,
            replica(tmp_path / "b", database) as b,
        ):
            await prepared(a)
            health = HealthWatch(a)
            await health.until(SERVING)
            watcher = follow(a)
            await watcher.until(lambda: watcher.snapshots())
            assert (await publish(a, "g1-")).published_generation_id == 1
            await watcher.until(lambda: len(watcher.replaced()) == 1)

            link.cut()
            await health.until(NOT_SERVING)
            for call in (
                publish(a, "lost-"),
                a.stubs.window.ReadWindowSnapshot(
                    ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "database" in (err.value.details() or "")
            # Meanwhile the other replica goes on; A's watcher must not miss it.
            assert (await publish(b, "g2-")).published_generation_id == 2

            link.restore()
            await health.until(SERVING)
            await watcher.until(lambda: len(watcher.replaced()) == 2)
            assert (await publish(a, "g3-")).published_generation_id == 3
            await watcher.until(lambda: len(watcher.replaced()) == 3)
            replaced = watcher.replaced()
            assert [e.generation_id for e in replaced] == [1, 2, 3]
            assert [e.previous_generation_id for e in replaced] == [0, 1, 2]
            assert [e.entries[0].block_id for e in replaced] == ["g1-0", "g2-0", "g3-0"]
            assert len(watcher.snapshots()) == 1 and not watcher.snapshots()[0].reset  # no reset
            watcher.cancel()
            await health.close()


async def test_terminated_backends_in_the_middle_of_publishes_leave_whole_generations_only(
    tmp_path: Path, database: str
) -> None:
    """Every backend of the replica is terminated while publishes stream in:
    each publish commits whole or answers UNAVAILABLE, never INTERNAL; the
    watcher sees each committed generation once, in order, with no reset."""
    db = database.rsplit("/", 1)[1]
    async with replica(tmp_path / "a", database) as a:
        await prepared(a)
        watcher = follow(a)
        await watcher.until(lambda: watcher.snapshots())
        outcomes: list[int | grpc.StatusCode] = []
        five_more = asyncio.Event()

        async def publisher() -> None:
            for i in range(40):
                try:
                    outcomes.append((await publish(a, f"p{i}-")).published_generation_id)
                except grpc.aio.AioRpcError as exc:
                    outcomes.append(exc.code())
                if len(outcomes) % 5 == 0:
                    five_more.set()

        def terminate() -> None:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE 'playlog-%%'",
                    (db,),
                )

        async def terminator() -> None:
            for _ in range(3):  # after 5, 10 and 15 publishes
                await five_more.wait()
                five_more.clear()
                await asyncio.to_thread(terminate)

        await asyncio.gather(publisher(), terminator())
        committed = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if not isinstance(o, int)]
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}, refused
        assert committed == list(range(1, len(committed) + 1))
        # The replica came back by itself: everything after the last
        # termination (after publish 15) committed.
        assert all(isinstance(o, int) for o in outcomes[-15:]), outcomes
        await watcher.until(lambda: len(watcher.replaced()) == len(committed))
        assert [e.generation_id for e in watcher.replaced()] == committed
        assert len(watcher.snapshots()) == 1
        watcher.cancel()


async def test_connections_that_died_while_idle_in_the_pool_cost_the_callers_nothing(
    tmp_path: Path, database: str
) -> None:
    """A firewall's idle timeout, or an administrator, ends the replica's
    idle connections: the next calls find them dead at BEGIN, before anything
    of theirs was sent, and go on on fresh ones instead of failing."""
    db = database.rsplit("/", 1)[1]
    async with replica(tmp_path / "a", database) as a:
        await prepared(a)
        assert (await publish(a, "before-")).ok
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name IN ('playlog-read', 'playlog-write')",
                (db,),
            ).fetchone()
        assert ended is not None and ended[0] >= 2
        for i in range(3):
            assert (await publish(a, f"after{i}-")).ok
            snap = await a.stubs.window.ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
            )
            assert snap.entries[0].block_id == f"after{i}-0"


async def test_a_commit_whose_answer_is_lost_is_resolved_from_the_database(
    tmp_path: Path, database: str
) -> None:
    """The COMMIT reaches the database and is carried out; its answer never
    comes back (the connection is cut). The replica asks the database what
    became of the transaction and answers the truth: committed, and its
    watchers hear of it. (Before, it said UNAVAILABLE, "nothing applied".)"""
    with cuttable_link() as link:
        async with replica(tmp_path / "a", link.url(database)) as a:
            await prepared(a)
            watcher = follow(a)
            await watcher.until(lambda: watcher.snapshots())
            dropped = link.drop_answer(after=b"INSERT INTO publishes", to=b"COMMIT")
            result = await publish(a, "lost-answer-")
            assert dropped.is_set()
            assert result.ok and result.published_generation_id == 1
            await watcher.until(lambda: len(watcher.replaced()) == 1)
            assert watcher.replaced()[0].entries[0].block_id == "lost-answer-0"
            assert (await publish(a, "next-")).published_generation_id == 2
            watcher.cancel()


async def test_an_override_whose_connection_dies_mid_write_is_override_record_persist_failed(
    tmp_path: Path, database: str
) -> None:
    db = database.rsplit("/", 1)[1]
    async with replica(tmp_path / "a", database) as a:
        await prepared(a)
        store = a.server.store
        assert isinstance(store, PostgresStore)

        def terminate_writers() -> None:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'playlog-write' AND state <> 'idle'",
                    (db,),
                )

        store.faults.before_next(FaultStep.ENTRIES, terminate_writers)
        result = await publish(a, "ov-", operator_override=True, reason_code="BREAKING_NEWS")
        assert not result.ok and result.error_code == pb.ERROR_CODE_OVERRIDE_RECORD_PERSIST_FAILED
        records = await a.stubs.audit.ListOverrideRecords(au.ListOverrideRecordsRequest(channel_id=CH))
        assert list(records.records) == []  # neither the record nor its publish
        assert (await publish(a, "ov-", operator_override=True, reason_code="BREAKING_NEWS")).ok


async def test_a_cluster_restart_mid_watch_is_ridden_out(tmp_path: Path, database: str) -> None:
    """The real thing: the PostgreSQL cluster itself stops and starts again."""
    async with replica(tmp_path / "a", database) as a:
        await prepared(a)
        health = HealthWatch(a)
        await health.until(SERVING)
        watcher = follow(a)
        await watcher.until(lambda: watcher.snapshots())
        assert (await publish(a, "g1-")).ok
        async with stopped_cluster():
            await health.until(NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await publish(a, "lost-")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await health.until(SERVING, timeout=60)
        assert (await publish(a, "g2-")).published_generation_id == 2
        await watcher.until(lambda: [e.generation_id for e in watcher.replaced()] == [1, 2])
        assert len(watcher.snapshots()) == 1
        watcher.cancel()
        await health.close()
