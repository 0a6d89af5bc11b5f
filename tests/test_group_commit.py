"""Writes that arrive together: each atomic and refused or accepted on its
own, in generation order per channel, acknowledged only after the commit.
On SQLite they are group-committed (issue 9: one transaction and one fsync
for a batch); on PostgreSQL each is its own transaction on its own pooled
connection, serialized per channel in the database (issue 10)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from playlog.api.convert import entry_from_pb
from playlog.app.service import Playlog, PublishOutcome
from playlog.clock import ManualClock
from playlog.config import Settings
from playlog.domain.model import ErrorCode, ScheduleDay
from playlog.domain.publish import PublishRequest
from playlog.server import open_store
from playlog.store.base import FaultStep, Store, StoreError
from playlog.store.postgres import PostgresStore
from playlog.wire import replaced_event
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries

DAY1 = T0 + DAY
WRITERS = 8


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    s = open_store(Settings(data_dir=str(tmp_path / "data"), database_url=database_url))
    yield s
    s.close()


@pytest.fixture
def app(store: Store) -> Playlog:
    playlog = Playlog(store, ManualClock(T0), event_encoder=replaced_event, max_event_bytes=4 << 20)
    for i in range(WRITERS):
        playlog.declare_channel(f"c{i}", HOUR, "", "local", "")
        day = ScheduleDay("", f"c{i}", date_of(DAY1), "plan-1", False, "", (), 0)
        assert playlog.store_schedule_day(day, "", "local", "").ok
    return playlog


def day_publish(channel_id: str, prefix: str, start: int = DAY1) -> PublishRequest:
    return PublishRequest(
        channel_id=channel_id,
        range_start_utc_ms=start,
        range_end_utc_ms=start + DAY,
        entries=tuple(entry_from_pb(e) for e in day_of_entries(start, prefix)),
        generation_id=0,
        reason_code="SCHEDULE",
        operator_override=False,
        actor="local",
    )


class HeldBatches:
    """Holds the first batch's commit until the other writers have queued,
    so that they form the next batch; records every batch's size."""

    def __init__(self, store: Store, queued: int) -> None:
        self.store = store
        self.queued = queued
        self.sizes: list[int] = []
        self.release = threading.Event()
        store.before_batch_commit = self.before_commit  # type: ignore[attr-defined]

    def before_commit(self, size: int) -> None:
        self.sizes.append(size)
        if len(self.sizes) == 1:
            batching = self.store._batching  # type: ignore[attr-defined]
            with batching:
                assert batching.wait_for(lambda: len(self.store._waiting) == self.queued, 20)  # type: ignore[attr-defined]


def publish_together(app: Playlog, requests: list[PublishRequest]) -> list[Future[PublishOutcome]]:
    """On SQLite the first request leads a batch held until every other one
    has queued; on PostgreSQL they all run at once."""
    if isinstance(app.store, PostgresStore):
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(app.publish, r) for r in requests]
            for f in futures:
                f.exception(timeout=30)
        return futures
    held = HeldBatches(app.store, len(requests) - 1)
    with ThreadPoolExecutor(len(requests)) as pool:
        first = pool.submit(app.publish, requests[0])
        batching = app.store._batching  # type: ignore[attr-defined]
        with batching:
            assert batching.wait_for(lambda: held.sizes or app.store._leading, 20)  # type: ignore[attr-defined]
        futures = [first, *(pool.submit(app.publish, r) for r in requests[1:])]
        for f in futures:
            f.exception(timeout=30)
    app.held_sizes = held.sizes  # type: ignore[attr-defined]
    return futures


def test_writers_arriving_together_all_commit_on_sqlite_in_one_batch(app: Playlog) -> None:
    committed: list[tuple[str, int]] = []
    app.add_publish_listener(lambda record: committed.append((record.channel_id, record.generation_id)))
    futures = publish_together(app, [day_publish(f"c{i}", f"p{i}-") for i in range(WRITERS)])
    assert [f.result().ok for f in futures] == [True] * WRITERS
    if not isinstance(app.store, PostgresStore):
        assert app.held_sizes == [1, WRITERS - 1]  # type: ignore[attr-defined]
    # Told after the commit, in commit order, once each.
    assert sorted(committed) == [(f"c{i}", 1) for i in range(WRITERS)]
    for i in range(WRITERS):
        snap = app.read_window(f"c{i}", DAY1, DAY1 + DAY)
        assert len(snap.entries) == 48 and snap.generation_id == 1


def test_a_refused_write_in_a_batch_changes_nothing_and_the_others_commit(app: Playlog) -> None:
    requests = [day_publish(f"c{i}", f"p{i}-") for i in range(WRITERS)]
    # c3's publish reaches into the locked window: refused on its own.
    requests[3] = day_publish("c3", "locked-", start=T0)
    futures = publish_together(app, requests)
    outcomes = [f.result() for f in futures]
    assert not outcomes[3].ok and outcomes[3].rejection is not None
    assert outcomes[3].rejection.code is ErrorCode.LOCKED_WINDOW_VIOLATION
    assert all(o.ok for i, o in enumerate(outcomes) if i != 3)
    assert app.read_window("c3", T0, T0 + 2 * DAY).entries == []
    assert app.get_channel("c3").current_generation_id == 0  # type: ignore[union-attr]


def test_a_store_failure_of_one_write_undoes_only_that_write(app: Playlog) -> None:
    requests = [day_publish(f"c{i}", f"p{i}-") for i in range(WRITERS)]
    app.store.faults.fail_next(FaultStep.ENTRIES)  # the first write to reach it
    futures = publish_together(app, requests)
    failed = [i for i, f in enumerate(futures) if f.exception() is not None]
    assert len(failed) == 1 and isinstance(futures[failed[0]].exception(), StoreError)
    for i in range(WRITERS):
        assert len(app.read_window(f"c{i}", DAY1, DAY1 + DAY).entries) == (0 if i in failed else 48)


@pytest.mark.parametrize("backend", ["sqlite"])  # batches are SQLite's
def test_a_failed_commit_fails_every_write_of_its_batch_and_nothing_exists(app: Playlog) -> None:
    told: list[int] = []
    app.add_publish_listener(lambda record: told.append(record.generation_id))
    assert app.publish(day_publish("c0", "first-")).ok
    requests = [day_publish(f"c{i}", f"p{i}-") for i in range(WRITERS)]
    held = HeldBatches(app.store, WRITERS - 1)

    def fail_the_second_batch(size: int) -> None:
        held.before_commit(size)
        if len(held.sizes) == 2:
            app.store.faults.fail_next(FaultStep.COMMIT)

    app.store.before_batch_commit = fail_the_second_batch  # type: ignore[attr-defined]
    with ThreadPoolExecutor(WRITERS) as pool:
        futures = [pool.submit(app.publish, requests[0])]
        batching = app.store._batching  # type: ignore[attr-defined]
        with batching:
            assert batching.wait_for(lambda: held.sizes or app.store._leading, 20)  # type: ignore[attr-defined]
        futures += [pool.submit(app.publish, r) for r in requests[1:]]
    assert futures[0].result().ok
    for f in futures[1:]:
        with pytest.raises(StoreError):
            f.result()
    assert told == [1, 2]  # only the committed ones were told
    for i in range(1, WRITERS):
        assert app.read_window(f"c{i}", DAY1, DAY1 + DAY).entries == []
        assert app.get_channel(f"c{i}").current_generation_id == 0  # type: ignore[union-attr]


def test_one_channel_s_writes_in_a_batch_keep_generation_order(app: Playlog) -> None:
    generations: list[int] = []
    app.add_publish_listener(lambda record: generations.append(record.generation_id))
    futures = publish_together(app, [day_publish("c0", f"g{i}-") for i in range(WRITERS)])
    got = sorted(f.result().generation_id for f in futures)
    assert got == list(range(1, WRITERS + 1))
    assert generations == list(range(1, WRITERS + 1))  # listeners in commit order
