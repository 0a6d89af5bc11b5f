"""A PostgreSQL failover under a served replica loses nothing it acknowledged
(SPEC section 10).

`playlog serve` runs on a multi-host address naming a primary and its
synchronous standby (`target_session_attrs=read-write`, tests/pg_standby.py).
Publishes and overrides go through it without pause; the primary is stopped
at once (`pg_ctl -m immediate`, no shutdown checkpoint) and the standby
promoted. Then: every write the replica acknowledged, and every override
record, is on the new primary; every call that failed in between failed
UNAVAILABLE (never INTERNAL) and left no trace of itself; the replica's health
went NOT_SERVING then SERVING without a restart; its watcher heard every
generation once, in order, with no reset, and a watcher that resumes with
after_generation_id after the switch gets the rest with no reset either. The
seconds from promotion to the first accepted write are printed and written to
the test's log directory (and the test report's properties).

Two neighbours of a failover: a former primary that comes back without being
demoted gets no write (the replica refuses an older WAL timeline), and a
database that turns read-only answers writes UNAVAILABLE, not INTERNAL.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
import pytest

from playlog.clock import ManualClock
from playlog.v1 import audit_service_pb2 as au
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries, schedule_day
from tests.conftest import make_stubs, start_server
from tests.followers import CH, follow
from tests.pg_standby import Pair, primary_and_standby
from tests.postgres import ADMIN_URL, fresh_postgres_database
from tests.test_database_outage import NOT_SERVING, SERVING, HealthWatch
from tests.test_engine_clients import ServerProcess, free_port

DAY1 = T0 + DAY
ACKED_BEFORE_KILL = 12
ACKED_AFTER_PROMOTION = 6


@pytest.fixture
def pair() -> Any:
    with primary_and_standby() as p:
        yield p


@pytest.fixture
def served(tmp_path: Path, pair: Pair) -> Any:
    server = ServerProcess(tmp_path / "data", tmp_path)
    server.start(free_port(), T0, extra=["--database-url", pair.url])
    try:
        yield server
    finally:
        server.stop()


class Writer:
    """Publishes through the replica without pause, alternating plain
    publishes and operator overrides, each named by its attempt number, and
    keeps what each call answered."""

    def __init__(self, stubs: Any) -> None:
        self.stubs = stubs
        self.acked: dict[int, pb.PublishResult] = {}  # attempt -> answer
        self.failed: dict[int, grpc.StatusCode] = {}
        self.acked_at: dict[int, float] = {}
        self.spans: list[tuple[float, float]] = []  # each call's start and end
        self.stop = asyncio.Event()
        self.progressed = asyncio.Event()

    async def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            override = attempt % 3 == 0
            request = ew.PublishAtomicReplaceRequest(
                channel_id=CH,
                range_start_utc_ms=DAY1,
                range_end_utc_ms=DAY1 + DAY,
                entries=day_of_entries(DAY1, f"w{attempt}-"),
                operator_override=override,
                reason_code="BREAKING_NEWS" if override else "",
            )
            started = time.monotonic()
            try:
                result = await self.stubs.window.PublishAtomicReplace(request, timeout=15)
            except grpc.aio.AioRpcError as exc:
                self.spans.append((started, time.monotonic()))
                self.failed[attempt] = exc.code()
                await asyncio.sleep(0.02)  # a client's retry pause, not a wait for the test's sake
                continue
            self.spans.append((started, time.monotonic()))
            assert result.ok, result
            self.acked[attempt] = result
            self.acked_at[attempt] = time.monotonic()
            self.progressed.set()

    async def until_acked(self, count: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        async def wait() -> None:
            while len(self.acked) < count:
                self.progressed.clear()
                await self.progressed.wait()

        await asyncio.wait_for(wait(), timeout)


async def _read_throughout(stubs: Any, stop: asyncio.Event, codes: list[grpc.StatusCode]) -> None:
    """Reads as an engine or console makes them, during the switch too."""
    while not stop.is_set():
        try:
            await stubs.window.ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY),
                timeout=15,
            )
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            await asyncio.sleep(0.02)  # a client's retry pause


def _on_new_primary(pair: Pair) -> tuple[dict[int, str], set[str], list[str]]:
    """Straight from the promoted server: generation -> override record id
    ('' for none), the override records' ids, the current window's entry ids."""
    with psycopg.connect(pair.standby.url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        publishes = {
            int(g): r or ""
            for g, r in conn.execute(
                "SELECT generation_id, override_record_id FROM publishes WHERE channel_id = %s", (CH,)
            )
        }
        records = {
            str(r[0]) for r in conn.execute("SELECT id FROM override_records WHERE channel_id = %s", (CH,))
        }
        current = conn.execute(
            "SELECT current_generation_id FROM channels WHERE channel_id = %s", (CH,)
        ).fetchone()
        entries = [
            str(r[0])
            for r in conn.execute(
                "SELECT block_id FROM entries WHERE channel_id = %s AND generation_id = %s "
                "ORDER BY start_utc_ms",
                (CH, current[0] if current else 0),
            )
        ]
    return publishes, records, entries


async def _prepared(stubs: Any) -> None:
    await stubs.channel.DeclareChannel(ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR))
    stored = await stubs.days.StoreScheduleDay(
        sd.StoreScheduleDayRequest(schedule_day=schedule_day(CH, date_of(DAY1)))
    )
    assert stored.ok, stored


async def _publish(stubs: Any, prefix: str) -> pb.PublishResult:
    return await stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=DAY1,
            range_end_utc_ms=DAY1 + DAY,
            entries=day_of_entries(DAY1, prefix),
        ),
        timeout=15,
    )


def _generations(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT generation_id FROM publishes WHERE channel_id = %s ORDER BY 1", (CH,))
        return [int(r[0]) for r in rows]


async def test_a_promoted_synchronous_standby_holds_every_acknowledged_write_and_the_replica_rides_the_switch(
    pair: Pair, served: ServerProcess, tmp_path: Path, record_property: Any
) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.port}")
    stubs = make_stubs(channel)
    health = HealthWatch(SimpleNamespace(address=f"127.0.0.1:{served.port}"))  # type: ignore[arg-type]
    try:
        await _prepared(stubs)
        await health.until(SERVING)
        watcher = follow(SimpleNamespace(stubs=stubs))  # type: ignore[arg-type]
        await watcher.until(lambda: watcher.snapshots())

        writer = Writer(stubs)
        writing = asyncio.create_task(writer.run())
        read_codes: list[grpc.StatusCode] = []
        reading = asyncio.create_task(_read_throughout(stubs, writer.stop, read_codes))
        await writer.until_acked(ACKED_BEFORE_KILL)

        killed_at = time.monotonic()
        await asyncio.to_thread(pair.kill_primary)
        await health.until(NOT_SERVING)
        acked_before_promotion = set(writer.acked)
        # Timed from the promotion's start: pg_ctl notices the standby took
        # writes only when it next polls, by when this replica may be writing.
        promoted_at = time.monotonic()
        await asyncio.to_thread(pair.promote_standby)
        await health.until(SERVING, timeout=30)
        serving_at = time.monotonic()
        await writer.until_acked(len(writer.acked) + ACKED_AFTER_PROMOTION, timeout=30)
        writer.stop.set()
        await asyncio.wait_for(writing, 20)
        await asyncio.wait_for(reading, 20)

        first_after = min(t for a, t in writer.acked_at.items() if t > promoted_at)
        seconds = first_after - promoted_at
        print(
            f"\nfailover: {seconds:.3f} s from promotion to the first accepted write, "
            f"{serving_at - promoted_at:.3f} s to SERVING; {len(writer.acked)} writes acknowledged, "
            f"{len(writer.failed)} refused UNAVAILABLE during the switch"
        )
        (tmp_path / "failover.json").write_text(
            json.dumps(
                {
                    "promotion_to_first_accepted_write_s": round(seconds, 3),
                    "acknowledged": len(writer.acked),
                    "promotion_to_serving_s": round(serving_at - promoted_at, 3),
                    "refused_during_switch": len(writer.failed),
                }
            )
        )

        record_property("promotion_to_first_accepted_write_s", round(seconds, 3))
        # Calls during the switch: UNAVAILABLE, nothing else (or, for a call
        # that waited for a connection until the new primary took it, OK and
        # on the new primary like every other acknowledged one).
        met = [span for span in writer.spans if span[0] < serving_at and span[1] > killed_at]
        assert met, "no call met the switch: the test proved nothing"
        assert set(writer.failed.values()) <= {grpc.StatusCode.UNAVAILABLE}, writer.failed
        assert set(read_codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(read_codes)
        assert read_codes[-1] == grpc.StatusCode.OK

        # Every acknowledged write and record is on the new primary, under the
        # generation it was acknowledged with.
        publishes, records, entries = _on_new_primary(pair)
        for result in writer.acked.values():
            assert publishes.get(result.published_generation_id) == result.override_record_id, result
            if result.override_record_id:
                assert result.override_record_id in records
        assert any(r.override_record_id for r in writer.acked.values())
        assert acked_before_promotion <= set(writer.acked)

        # Nothing half-applied: the generations are one unbroken chain, and
        # the current one's entries are all of one publish, entirely.
        assert sorted(publishes) == list(range(1, len(publishes) + 1))
        last = max(writer.acked, key=lambda a: writer.acked[a].published_generation_id)
        assert max(publishes) == writer.acked[last].published_generation_id
        assert entries == [e.block_id for e in day_of_entries(DAY1, f"w{last}-")]
        # A refused override left no record behind.
        assert records == {r.override_record_id for r in writer.acked.values() if r.override_record_id}

        # The watcher stayed on through the switch: one snapshot, no reset,
        # each generation once and in order.
        top = max(publishes)
        await watcher.until(lambda: bool(watcher.replaced()) and watcher.replaced()[-1].generation_id == top)
        assert len(watcher.snapshots()) == 1 and not watcher.snapshots()[0].reset
        first = watcher.snapshots()[0].channel_generation_id
        assert [e.generation_id for e in watcher.replaced()] == list(range(first + 1, top + 1))
        watcher.cancel()

        # A watcher resuming after the switch from a generation acknowledged
        # before it gets the rest, no reset.
        resume_from = writer.acked[min(acked_before_promotion)].published_generation_id
        resumed = follow(SimpleNamespace(stubs=stubs), after=resume_from)  # type: ignore[arg-type]
        await resumed.until(lambda: bool(resumed.replaced()) and resumed.replaced()[-1].generation_id == top)
        assert not any(s.reset for s in resumed.snapshots())
        assert [e.generation_id for e in resumed.replaced()] == list(range(resume_from + 1, top + 1))
        resumed.cancel()

        # The replica noticed the promotion (the log an operator of an
        # asynchronous standby would look for) ...
        events = [json.loads(line) for line in served.log.snapshot() if line.startswith("{")]  # type: ignore[union-attr]
        [changed] = [e for e in events if e.get("event") == "database_timeline_changed"]
        assert changed["to_timeline"] == changed["from_timeline"] + 1
        assert not [e for e in events if e.get("level") in ("error", "critical") and "traceback" in e]
        # ... was never restarted, and serves reads from the new primary.
        assert served.starts == 1 and served.proc is not None and served.proc.poll() is None
        snapshot = await stubs.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
        )
        assert snapshot.channel_generation_id == top
        listed = await stubs.audit.ListOverrideRecords(
            au.ListOverrideRecordsRequest(channel_id=CH, page_size=1000)
        )
        assert {r.id for r in listed.records} == records
    finally:
        await health.close()
        await channel.close()


async def test_a_former_primary_back_without_demotion_gets_no_write_from_the_replica(
    pair: Pair, served: ServerProcess
) -> None:
    """The old primary returns on its old timeline, first in the address list,
    taking writes: the replica refuses it (NOT_SERVING, calls UNAVAILABLE)
    rather than fork the history, and writes to the new primary again once
    the old one is gone."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.port}")
    stubs = make_stubs(channel)
    health = HealthWatch(SimpleNamespace(address=f"127.0.0.1:{served.port}"))  # type: ignore[arg-type]
    try:
        await _prepared(stubs)
        assert (await _publish(stubs, "a-")).published_generation_id == 1
        await asyncio.to_thread(pair.kill_primary)
        await asyncio.to_thread(pair.promote_standby)
        await health.until(NOT_SERVING)
        await health.until(SERVING)
        assert (await _publish(stubs, "b-")).published_generation_id == 2

        await asyncio.to_thread(pair.restart_former_primary_alone)
        assert _generations(pair.primary.url) == [1]
        # The replica's connections to the new primary end (a network blip):
        # libpq now reaches the former primary first, and it takes writes.
        with psycopg.connect(pair.standby.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'playlog-%'"
            )
        await health.until(NOT_SERVING)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _publish(stubs, "c-")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _generations(pair.primary.url) == [1]  # nothing written to the forked history

        await asyncio.to_thread(pair.kill_primary)  # fenced at last
        await health.until(SERVING, timeout=30)
        assert (await _publish(stubs, "d-")).published_generation_id == 3
        assert _generations(pair.standby.url) == [1, 2, 3]
    finally:
        await health.close()
        await channel.close()


async def test_a_database_that_turns_read_only_answers_unavailable_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A server that takes no writes on connections that reach it (a standby
    behind a stale address, a managed service's read-only mode when its disk
    fills: default_transaction_read_only) makes writes UNAVAILABLE, not
    INTERNAL; reads go on, and writes resume once it takes them again."""
    with fresh_postgres_database() as url:
        r = await start_server(tmp_path / "data", ManualClock(T0), database_url=url)
        try:
            await _prepared(r.stubs)
            assert (await _publish(r.stubs, "a-")).published_generation_id == 1

            def reconnect_all(read_only: bool) -> None:
                # The setting applies to new connections: end the replica's.
                with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                    name = url.rsplit("/", 1)[1]
                    setting = "on" if read_only else "off"
                    admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = {setting}")
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name LIKE 'playlog-%%'",
                        (name,),
                    )

            await asyncio.to_thread(reconnect_all, True)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _publish(r.stubs, "b-")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "read-only" in (refused.value.details() or "")
            snapshot = await r.stubs.window.ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
            )
            assert snapshot.channel_generation_id == 1 and snapshot.entries[0].block_id == "a-0"

            await asyncio.to_thread(reconnect_all, False)
            assert (await _publish(r.stubs, "c-")).published_generation_id == 2
            assert _generations(url) == [1, 2]
        finally:
            await r.server.stop(0)
