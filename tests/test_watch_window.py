"""WatchWindow (SPEC section 6) through the in-process server."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import grpc
import pytest

from playlog.clock import ManualClock
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, day_of_entries
from tests.conftest import Running, make_stubs, start_server
from tests.followers import TIMEOUT, Follower, follow

CH = "ch1"
DAY1 = T0 + DAY  # the day the tests publish into (flexible: lock is 1 h, now is T0)


@pytest.fixture
async def channel(running: Running) -> Running:
    await running.declare(CH, HOUR)
    await running.store_days(CH, DAY1, DAY1 + DAY)
    return running


async def publish_day(r: Running, prefix: str, start: int = DAY1) -> pb.PublishResult:
    result = await r.publish_day(CH, start, prefix)
    assert result.ok, result
    return result


def chain_is_unbroken(replaced: list[pb.ReplacedEvent], start: int) -> bool:
    last = start
    for event in replaced:
        if event.previous_generation_id != last or event.generation_id <= last:
            return False
        last = event.generation_id
    return True


async def test_a_snapshot_comes_first_then_every_publish_in_generation_order(channel: Running) -> None:
    await publish_day(channel, "g1-")
    f = follow(channel)
    await f.until(lambda: f.snapshots() and f.snapshots()[-1].complete)
    snap = f.snapshots()[0]
    assert f.events[0].WhichOneof("event") == "snapshot"
    assert snap.channel_generation_id == 1 and len(snap.entries) == 48 and not snap.reset
    for i in range(2, 6):
        await publish_day(channel, f"g{i}-")
    await f.until(lambda: len(f.replaced()) == 4)
    replaced = f.replaced()
    assert [e.generation_id for e in replaced] == [2, 3, 4, 5]
    assert chain_is_unbroken(replaced, 1)
    assert [e.block_id for e in replaced[-1].entries] == [f"g5-{i}" for i in range(48)]
    assert (replaced[-1].range_start_utc_ms, replaced[-1].range_end_utc_ms) == (DAY1, DAY1 + DAY)
    f.cancel()


async def test_order_and_the_previous_generation_chain_hold_under_concurrent_publishers(
    channel: Running,
) -> None:
    f = follow(channel)
    await f.until(lambda: f.snapshots())
    await asyncio.gather(*(publish_day(channel, f"c{i}-") for i in range(20)))
    await f.until(lambda: len(f.replaced()) == 20)
    assert [e.generation_id for e in f.replaced()] == list(range(1, 21))
    assert chain_is_unbroken(f.replaced(), 0)
    f.cancel()


async def test_resume_after_a_dropped_connection_misses_and_repeats_nothing(channel: Running) -> None:
    f = follow(channel)
    await f.until(lambda: f.snapshots())
    for i in range(3):
        await publish_day(channel, f"a{i}-")
    await f.until(lambda: len(f.replaced()) == 3)
    last = f.replaced()[-1].generation_id
    f.cancel()
    for i in range(3, 7):  # published while the engine is away
        await publish_day(channel, f"a{i}-")
    g = follow(channel, after=last)
    await g.until(lambda: len(g.replaced()) == 4)
    await publish_day(channel, "a7-")
    await g.until(lambda: len(g.replaced()) == 5)
    assert [e.generation_id for e in g.replaced()] == [4, 5, 6, 7, 8]
    assert chain_is_unbroken(g.replaced(), last)
    assert g.snapshots() == []  # resumed from history, no snapshot needed
    g.cancel()


async def test_a_resume_older_than_the_kept_history_gets_a_reset_snapshot(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(tmp_path / "data", clock, database_url=database_url, history_retention_publishes=3)
    try:
        await r.declare(CH, HOUR)
        await r.store_days(CH, DAY1)
        for i in range(8):
            await publish_day(r, f"h{i}-")
        stale = follow(r, after=2)  # generations 3..5 are gone: only 6..8 are kept
        await stale.until(lambda: stale.snapshots() and stale.snapshots()[-1].complete)
        snap = stale.snapshots()[0]
        assert snap.reset and snap.channel_generation_id == 8
        assert [e.block_id for e in snap.entries][:1] == ["h7-0"]
        assert stale.replaced() == []
        # Exactly at the boundary: after 5 replays 6..8.
        edge = follow(r, after=5)
        await edge.until(lambda: len(edge.replaced()) == 3)
        assert [e.generation_id for e in edge.replaced()] == [6, 7, 8] and edge.snapshots() == []
        stale.cancel()
        edge.cancel()
    finally:
        await r.server.stop(0)


async def test_a_slow_subscriber_is_reset_while_a_fast_one_keeps_every_event(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(tmp_path / "data", clock, database_url=database_url, watch_queue_events=8)
    # Without BDP probing the slow engine's stream window stays small, so the
    # server cannot hand it more than a few events while it does not read.
    slow_channel = grpc.aio.insecure_channel(r.address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        await r.declare(CH, HOUR)
        await r.store_days(CH, DAY1)
        fast = follow(r)
        await fast.until(lambda: fast.snapshots())
        slow_call = make_stubs(slow_channel).window.WatchWindow(ew.WatchWindowRequest(channel_id=CH))
        assert (await slow_call.read()).snapshot.complete  # then it stops reading
        n = 60
        for i in range(n):
            await publish_day(r, f"s{i}-")
        await fast.until(lambda: len(fast.replaced()) == n)
        assert [e.generation_id for e in fast.replaced()] == list(range(1, n + 1))
        assert len(fast.snapshots()) == 1  # the fast one was never reset
        # The slow one reads again: what its stream still held, then a reset
        # snapshot at the latest generation instead of the events it missed.
        events = []
        while not (events and events[-1].WhichOneof("event") == "snapshot" and events[-1].snapshot.complete):
            events.append(await asyncio.wait_for(slow_call.read(), TIMEOUT))
        replaced = [e.replaced for e in events if e.WhichOneof("event") == "replaced"]
        assert chain_is_unbroken(replaced, 0) and len(replaced) < n
        reset = events[-1].snapshot
        assert reset.reset and reset.channel_generation_id == n
        assert reset.entries[0].block_id == f"s{n - 1}-0"
        slow_call.cancel()
        fast.cancel()
    finally:
        await slow_channel.close()
        await r.server.stop(0)


async def test_progress_events_move_the_locked_boundary_with_the_injected_clock(channel: Running) -> None:
    await publish_day(channel, "p-")
    f = follow(channel)
    await f.until(lambda: f.snapshots())
    channel.clock.advance_ms(10 * MINUTE)
    await f.until(lambda: any(p.now_utc_ms == T0 + 10 * MINUTE for p in f.progress()))
    channel.clock.advance_ms(DAY)
    await f.until(lambda: any(p.now_utc_ms == T0 + DAY + 10 * MINUTE for p in f.progress()))
    latest = f.progress()[-1]
    assert latest.locked_until_utc_ms == T0 + DAY + 10 * MINUTE + HOUR
    assert latest.channel_generation_id == 1
    f.cancel()


async def test_progress_events_arrive_at_the_requested_interval_without_clock_moves(channel: Running) -> None:
    f = follow(channel, interval_ms=20)
    await f.until(lambda: len(f.progress()) >= 3)
    assert all(p.now_utc_ms == T0 and p.locked_until_utc_ms == T0 + HOUR for p in f.progress())
    f.cancel()


async def test_no_stream_sees_an_event_for_a_rejected_publish(channel: Running) -> None:
    f = follow(channel)
    await f.until(lambda: f.snapshots())
    refused = await channel.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH, range_start_utc_ms=T0, range_end_utc_ms=T0 + DAY, entries=day_of_entries(T0)
        )
    )
    assert refused.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    await publish_day(channel, "ok-")
    await f.until(lambda: f.replaced())
    assert [e.generation_id for e in f.replaced()] == [1]
    assert all(not e.entries or e.entries[0].block_id == "ok-0" for e in f.replaced())
    f.cancel()


async def test_a_thousand_subscribers_on_one_channel_all_receive_every_event(channel: Running) -> None:
    channels = [grpc.aio.insecure_channel(channel.address) for _ in range(4)]
    try:
        followers = [follow(channel, stubs=make_stubs(channels[i % 4])) for i in range(1000)]
        await asyncio.wait_for(_all(followers, lambda f: bool(f.snapshots())), 60)
        assert channel.server.watch.subscriber_count(CH) == 1000
        for i in range(3):
            await publish_day(channel, f"k{i}-")
        await asyncio.wait_for(_all(followers, lambda f: len(f.replaced()) == 3), 60)
        for f in followers:
            assert [e.generation_id for e in f.replaced()] == [1, 2, 3]
            f.cancel()
        await asyncio.wait_for(channel.server.watch.wait_until_subscribers(lambda n: n == 0), TIMEOUT)
    finally:
        for c in channels:
            await c.close()


async def _all(followers: list[Follower], predicate: object) -> None:
    await asyncio.gather(*(f.until(lambda f=f: predicate(f)) for f in followers))  # type: ignore[operator]


async def test_cancelling_a_stream_frees_its_subscriber(channel: Running) -> None:
    f = follow(channel)
    await f.until(lambda: f.snapshots())
    assert channel.server.watch.subscriber_count(CH) == 1
    f.cancel()
    await asyncio.wait_for(channel.server.watch.wait_until_subscribers(lambda n: n == 0), TIMEOUT)


async def test_server_shutdown_ends_streams_with_unavailable(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(tmp_path / "data", clock, database_url=database_url)
    await r.declare(CH, HOUR)
    f = follow(r)
    await f.until(lambda: f.snapshots())
    await r.server.stop(5)
    await f.ended()
    assert f.error is not None and f.error.code() == grpc.StatusCode.UNAVAILABLE
    assert "after_generation_id=0" in (f.error.details() or "")


async def test_watching_an_undeclared_channel_is_not_found(running: Running) -> None:
    f = follow(running)
    await f.ended()
    assert f.error is not None and f.error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_change_of_lock_depth_reaches_watchers_at_once(channel: Running) -> None:
    # A progress interval of an hour: only the change itself can send progress.
    f = follow(channel, interval_ms=HOUR)
    await f.until(lambda: f.snapshots())
    await channel.stubs.channel.DeclareChannel(
        ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * HOUR, reason_code="DEEPER_LOOKAHEAD")
    )
    await f.until(lambda: any(p.locked_until_utc_ms == T0 + 2 * HOUR for p in f.progress()))
    assert channel.clock.now_utc_ms() == T0  # the clock never moved
    channel.clock.advance_ms(MINUTE)
    await f.until(lambda: any(p.now_utc_ms == T0 + MINUTE for p in f.progress()))
    assert f.progress()[-1].locked_until_utc_ms == T0 + MINUTE + 2 * HOUR
    f.cancel()


async def test_a_large_snapshot_comes_in_parts_and_only_the_last_is_complete(channel: Running) -> None:
    await channel.store_days(CH, *(DAY1 + i * DAY for i in range(2, 25)))
    result = await channel.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=DAY1,
            range_end_utc_ms=DAY1 + 25 * DAY,
            entries=[e for i in range(25) for e in day_of_entries(DAY1 + i * DAY, f"big{i}-")],
        )
    )
    assert result.ok, result
    f = follow(channel)
    await f.until(lambda: f.snapshots() and f.snapshots()[-1].complete)
    parts = f.snapshots()
    assert len(parts) == 3  # 1,200 entries, 500 per message
    assert [p.complete for p in parts] == [False, False, True]
    assert {p.channel_generation_id for p in parts} == {1}
    blocks = [e.block_id for p in parts for e in p.entries]
    assert len(blocks) == 1200 and blocks[0] == "big0-0" and blocks[-1] == "big24-47"
    f.cancel()


async def test_a_progress_event_is_built_once_per_channel_and_tick_not_per_subscriber(
    channel: Running,
) -> None:
    followers = [follow(channel, interval_ms=HOUR) for _ in range(20)]
    for f in followers:
        await f.until(lambda f=f: f.snapshots())
    builds = channel.server.watch.progress_builds
    channel.clock.advance_ms(MINUTE)
    for f in followers:
        await f.until(lambda f=f: any(p.now_utc_ms == T0 + MINUTE for p in f.progress()))
    assert channel.server.watch.progress_builds == builds + 1
    sent = {f.progress()[-1].SerializeToString() for f in followers}
    assert len(sent) == 1  # the same bytes to every subscriber
    for f in followers:
        f.cancel()


async def test_a_large_fan_out_wakes_its_subscribers_after_the_answer_a_batch_per_loop_turn(
    channel: Running,
) -> None:
    """Fan-out never delays the publish's answer (issue 18): with more
    subscribers than WAKE_BATCH, the event is queued to each at once, in order,
    but nobody is woken until the loop turns that carry the answer out have
    run; then WAKE_BATCH a turn, until every subscriber is woken."""
    from playlog.api.watch import ANSWER_FIRST_TURNS, WAKE_BATCH
    from playlog.domain.model import PublishRecord

    hub = channel.server.watch
    subs = [hub.subscribe(CH) for _ in range(5 * WAKE_BATCH + 3)]
    try:
        records = [PublishRecord(CH, g, g - 1, DAY1, DAY1 + DAY, "", "t", False, "", T0) for g in (1, 2)]
        for record in records:
            hub._deliver(record)
        assert all([r for r, _ in s.pending] == records for s in subs)
        woken: list[int] = []
        for _ in range(ANSWER_FIRST_TURNS + 8):
            woken.append(sum(s.wakeup.is_set() for s in subs))
            await asyncio.sleep(0)  # one loop turn
        assert woken[0] == 0
        assert woken[ANSWER_FIRST_TURNS - 1] == 0
        steps = [b - a for a, b in itertools.pairwise(woken) if b != a]
        assert steps and max(steps) <= WAKE_BATCH
        assert woken[-1] == len(subs)
    finally:
        for s in subs:
            hub.unsubscribe(s)


async def test_a_small_fan_out_is_woken_at_once(channel: Running) -> None:
    from playlog.api.watch import WAKE_BATCH
    from playlog.domain.model import PublishRecord

    hub = channel.server.watch
    subs = [hub.subscribe(CH) for _ in range(WAKE_BATCH)]
    try:
        hub._deliver(PublishRecord(CH, 1, 0, DAY1, DAY1 + DAY, "", "t", False, "", T0))
        assert all(s.wakeup.is_set() for s in subs)
    finally:
        for s in subs:
            hub.unsubscribe(s)
