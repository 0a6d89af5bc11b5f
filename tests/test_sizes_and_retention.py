"""What a watcher can be sent always fits the message limit, and resume
history is counted in publishes (SPEC section 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from playlog.clock import ManualClock
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, blocks, entry
from tests.conftest import Running, start_server
from tests.followers import follow

CH = "ch1"
DAY1 = T0 + DAY
LIMIT = 64 * 1024


@pytest.fixture
async def small(tmp_path: Path, clock: ManualClock, database_url: str) -> AsyncIterator[Running]:
    """A server whose messages are at most 64 KiB, on both stores."""
    r = await start_server(tmp_path / "data", clock, database_url=database_url, max_message_bytes=LIMIT)
    await r.declare(CH, HOUR)
    await r.store_days(CH, DAY1)
    yield r
    await r.server.stop(0)


def publish(
    start: int, entries: list[pb.ExecutionEntry], generation: int = 0
) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=CH,
        range_start_utc_ms=start,
        range_end_utc_ms=entries[-1].end_utc_ms,
        entries=entries,
        generation_id=generation,
    )


async def test_snapshot_parts_are_cut_by_size_and_each_fits_the_limit(small: Running) -> None:
    # 48 entries of about 4 KB: some 200 KB, far more than one 64 KiB message.
    for part in range(4):
        start = DAY1 + part * 6 * HOUR
        result = await small.stubs.window.PublishAtomicReplace(
            publish(start, blocks(start, 12, 30 * MINUTE, prefix=f"p{part}-", title="t" * 2000))
        )
        assert result.ok, result
    f = follow(small)
    await f.until(lambda: f.snapshots() and f.snapshots()[-1].complete)
    parts = f.snapshots()
    assert len(parts) >= 4
    assert all(pb.WindowEvent(snapshot=p).ByteSize() <= LIMIT for p in parts)
    assert [p.complete for p in parts] == [False] * (len(parts) - 1) + [True]
    ids = [e.block_id for p in parts for e in p.entries]
    assert ids == [f"p{part}-{i}" for part in range(4) for i in range(12)]
    assert f.error is None
    f.cancel()


async def test_a_publish_whose_event_would_not_fit_is_refused_as_malformed(small: Running) -> None:
    watcher = follow(small)
    await watcher.until(lambda: watcher.snapshots())
    # The request itself fits the limit; the event, which adds the channel and
    # the generation to the entry, would not fit what is left for it.
    big = entry("big", DAY1, DAY1 + HOUR, segments=1, title="x" * (LIMIT - 900))
    request = publish(DAY1, [big])
    assert request.ByteSize() < LIMIT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await small.stubs.window.PublishAtomicReplace(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries" in (refused.value.details() or "") and "message limit" in (refused.value.details() or "")
    channel = await small.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
    )
    assert list(channel.entries) == [] and channel.channel_generation_id == 0
    # The watcher's stream is unharmed and sees the next publish.
    ok = await small.stubs.window.PublishAtomicReplace(publish(DAY1, [entry("fine", DAY1, DAY1 + HOUR)]))
    assert ok.ok, ok
    await watcher.until(lambda: watcher.replaced())
    assert watcher.replaced()[0].generation_id == 1 and watcher.error is None
    watcher.cancel()


async def test_retention_counts_publishes_not_generation_numbers(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(tmp_path / "data", clock, database_url=database_url, history_retention_publishes=3)
    try:
        await r.declare(CH, HOUR)
        await r.store_days(CH, DAY1)
        generations = [1, 2, 10, 1_795_305_600_000, 1_795_305_600_001]
        for i, generation in enumerate(generations):
            result = await r.stubs.window.PublishAtomicReplace(
                publish(DAY1, [entry(f"g{i}", DAY1, DAY1 + HOUR)], generation)
            )
            assert result.ok and result.published_generation_id == generation, result
        # Three publishes are kept (10, 1795305600000, 1795305600001), whatever
        # their numbers: the oldest kept publish's previous generation is 2.
        at_boundary = follow(r, after=2)
        await at_boundary.until(lambda: len(at_boundary.replaced()) == 3)
        assert [e.generation_id for e in at_boundary.replaced()] == generations[2:]
        assert at_boundary.snapshots() == []
        below = follow(r, after=1)
        await below.until(lambda: below.snapshots() and below.snapshots()[-1].complete)
        assert below.snapshots()[0].reset and below.replaced() == []
        assert below.snapshots()[0].channel_generation_id == generations[-1]
        at_boundary.cancel()
        below.cancel()
    finally:
        await r.server.stop(0)


async def test_one_huge_generation_number_keeps_the_history_of_earlier_publishes(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(
        tmp_path / "data", clock, database_url=database_url, history_retention_publishes=100
    )
    try:
        await r.declare(CH, HOUR)
        await r.store_days(CH, DAY1)
        for i, generation in enumerate([0, 0, 1_795_305_600_000]):
            assert (
                await r.stubs.window.PublishAtomicReplace(
                    publish(DAY1, [entry(f"h{i}", DAY1, DAY1 + HOUR)], generation)
                )
            ).ok
        engine = follow(r, after=1)
        await engine.until(lambda: len(engine.replaced()) == 2)
        assert [e.generation_id for e in engine.replaced()] == [2, 1_795_305_600_000]
        assert engine.snapshots() == []
        engine.cancel()
    finally:
        await r.server.stop(0)
