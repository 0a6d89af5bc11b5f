"""WatchWindow: one asyncio task per subscriber, no thread each.

Publishes reach the hub only after their commit (Playlog calls the listener
after the store committed), in generation order. The hub converts each publish
to its protobuf event once and appends it to every subscriber of the channel;
each subscriber's queue is bounded, and on overflow its pending events are
dropped and it is sent a fresh `reset` snapshot instead, read from the store,
so the server's memory stays bounded and no subscriber misses an event without
being told. A subscriber that finds a hole in the previous-generation chain
(or resumes with after_generation_id) catches up from the durable publish
history, like an etcd watcher, not from memory.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from playlog import metrics, wire
from playlog.api import Context
from playlog.app.service import Playlog, UnknownChannel
from playlog.auth import stream_guard
from playlog.clock import Clock
from playlog.domain.model import Channel, PublishRecord
from playlog.domain.rejection import FieldViolation
from playlog.domain.validation import check_id, raise_if_any
from playlog.domain.windows import locked_until
from playlog.events import emit
from playlog.store.base import ALL_CHANNELS, StoredEntry, StoreUnavailable
from playlog.v1 import execution_window_service_pb2 as ew_pb
from playlog.v1 import types_pb2 as pb

log = logging.getLogger("playlog.watch")

SNAPSHOT_CHUNK_ENTRIES = 500
# Default budget of one snapshot part's entries (the server passes its own,
# below max_message_bytes).
SNAPSHOT_PART_BYTES = 4 * 1024 * 1024 - 1024
REPLAY_BATCH = 200
# A watcher whose catch-up found the database unreachable tries again after
# this (and at once when the database's return rings every doorbell).
RETRY_AFTER_UNAVAILABLE_S = 1.0
# A publish's answer goes out before its fan-out: a channel with more
# subscribers than WAKE_BATCH is woken ANSWER_FIRST_TURNS loop turns after the
# commit reached the loop (the publish call's own continuation and the
# write of its answer are already queued behind the commit), then WAKE_BATCH
# subscribers per turn, so that answers and new calls interleave with a large
# fan-out instead of waiting behind all of it. Events are queued to every
# subscriber at once, in order; only the wakeups are spread.
WAKE_BATCH = 16
ANSWER_FIRST_TURNS = 8


# (history floor, publishes after a cursor with their events)
_History = tuple[int, list[tuple[PublishRecord, bytes]]]
# (the snapshot read, its events)
_SnapshotRead = tuple[Any, list[bytes]]


@dataclass(eq=False)  # identity, so subscribers can live in sets
class Subscriber:
    channel_id: str
    max_pending: int
    # Replaced events, serialized once for every subscriber of the channel.
    pending: collections.deque[tuple[PublishRecord, bytes]] = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    needs_reset: bool = False
    # Another replica committed a publish: catch up from the store.
    poll: bool = False
    closed: bool = False
    # A tick, a clock move or a change of lock depth: send a progress event.
    progress_due: bool = False
    interval: float = 0.0

    def offer(self, record: PublishRecord, event: bytes) -> None:
        """Queues the event; the hub wakes the subscriber (WatchHub._wake)."""
        if self.needs_reset:
            return  # the reset snapshot will carry it
        if len(self.pending) >= self.max_pending:
            self.pending.clear()
            self.needs_reset = True
            metrics.WATCH_RESETS.labels("overflow").inc()
        else:
            self.pending.append((record, event))


class WatchHub:
    def __init__(
        self,
        playlog: Playlog,
        executor: ThreadPoolExecutor,
        clock: Clock,
        *,
        max_pending: int = 1024,
        progress_interval_ms: int = 1000,
        max_streams: int = 2000,
        max_message_bytes: int = SNAPSHOT_PART_BYTES,
    ) -> None:
        self.playlog = playlog
        self._executor = executor
        self.clock = clock
        self.max_pending = max_pending
        self.progress_interval_ms = progress_interval_ms
        self.max_streams = max_streams
        self.max_message_bytes = max_message_bytes
        self._subscribers: dict[str, set[Subscriber]] = collections.defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # Lock depths of watched channels, kept current by re-declarations so
        # that progress ticks need no store read.
        self._lock_depth: dict[str, int] = {}
        # The latest generation handed to subscribers, per channel.
        self._delivered: dict[str, int] = {}
        # Subscribers by progress interval, each group woken by one ticker.
        self._tick_groups: dict[float, set[Subscriber]] = {}
        # Per channel, the last progress event built: (now, depth, generation), bytes.
        self._progress_cache: dict[str, tuple[tuple[int, int, int], bytes]] = {}
        self.progress_builds = 0
        # Reads in flight that every subscriber needing the same answer shares
        # (etcd's syncWatchers): the history after a cursor, per (channel,
        # cursor), and a reset snapshot, per channel. Counted for tests.
        self._history_reads: dict[Any, asyncio.Future[Any]] = {}
        self._snapshot_reads: dict[Any, asyncio.Future[Any]] = {}
        self.reads_started: collections.Counter[str] = collections.Counter()
        # Subscribers with events queued, waiting for their wakeup (in the
        # order their events arrived; a dict as an ordered set).
        self._to_wake: dict[Subscriber, None] = {}
        self._waking = False
        playlog.add_publish_listener(self._on_commit)
        playlog.add_channel_listener(self._on_channel_changed)
        add_listener = getattr(clock, "add_listener", None)
        if add_listener is not None:
            add_listener(self._on_clock_moved)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- from the store's threads -------------------------------------------------

    def _on_commit(self, record: PublishRecord) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, record)

    def on_remote_publish(self, channel_id: str, generation_id: int) -> None:
        """A doorbell from the shared store (PostgreSQL NOTIFY): another replica,
        or this one, committed a publish; ALL_CHANNELS ("*") means "maybe any"."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._doorbell, channel_id, generation_id)

    def _on_channel_changed(self, channel: Channel) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._lock_depth_changed, channel.channel_id, channel.locked_window_ms)

    def on_remote_channel(self, channel_id: str, locked_window_ms: int) -> None:
        """A declaration committed by another replica (or this one) changed
        the channel's lock depth."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._lock_depth_changed, channel_id, locked_window_ms)

    def _on_clock_moved(self, now_utc_ms: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._clock_moved)

    # -- on the event loop ----------------------------------------------------------

    def _doorbell(self, channel_id: str, generation_id: int) -> None:
        if channel_id == ALL_CHANNELS:
            targets = [sub for subs in self._subscribers.values() for sub in subs]
        elif generation_id <= self._delivered.get(channel_id, 0):
            return  # committed here: already delivered from memory
        else:
            targets = list(self._subscribers.get(channel_id, ()))
        for sub in targets:
            sub.poll = True
            sub.wakeup.set()

    def _deliver(self, record: PublishRecord) -> None:
        self._delivered[record.channel_id] = max(
            record.generation_id, self._delivered.get(record.channel_id, 0)
        )
        subscribers = self._subscribers.get(record.channel_id)
        if not subscribers:
            return
        # Converted and serialized once for all subscribers (the interceptor's
        # stream serializer passes bytes through).
        event = record.encoded_event or wire.replaced_event(record)
        for sub in subscribers:
            sub.offer(record, event)
        if len(subscribers) <= WAKE_BATCH and not self._waking:
            for sub in subscribers:
                sub.wakeup.set()
            return
        self._to_wake.update(dict.fromkeys(subscribers))
        if not self._waking:
            self._waking = True
            self._loop_turns(ANSWER_FIRST_TURNS)

    def _loop_turns(self, turns: int) -> None:
        """Wakes the queued subscribers after `turns` loop turns, WAKE_BATCH a turn."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._waking = False
            return
        if turns > 0:
            loop.call_soon(self._loop_turns, turns - 1)
            return
        for _ in range(min(WAKE_BATCH, len(self._to_wake))):
            sub = next(iter(self._to_wake))
            del self._to_wake[sub]
            sub.wakeup.set()
        if self._to_wake:
            loop.call_soon(self._loop_turns, 0)
        else:
            self._waking = False

    def _clock_moved(self) -> None:
        for subs in self._subscribers.values():
            _progress_due(subs)

    def _lock_depth_changed(self, channel_id: str, locked_window_ms: int) -> None:
        """Every watcher of the channel hears the new locked_until at once."""
        subscribers = self._subscribers.get(channel_id)
        if not subscribers or self._lock_depth.get(channel_id) == locked_window_ms:
            return
        self._lock_depth[channel_id] = locked_window_ms
        _progress_due(subscribers)

    def subscribe(self, channel_id: str) -> Subscriber:
        sub = Subscriber(channel_id, self.max_pending)
        self._subscribers[channel_id].add(sub)
        metrics.WATCH_SUBSCRIBERS.inc()
        self._subscribers_changed()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._to_wake.pop(sub, None)
        subs = self._subscribers.get(sub.channel_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            metrics.WATCH_SUBSCRIBERS.dec()
            if not subs:
                del self._subscribers[sub.channel_id]
                self._lock_depth.pop(sub.channel_id, None)
                self._progress_cache.pop(sub.channel_id, None)
        group = self._tick_groups.get(sub.interval)
        if group is not None:
            group.discard(sub)
        self._subscribers_changed()

    def subscriber_count(self, channel_id: str | None = None) -> int:
        if channel_id is not None:
            return len(self._subscribers.get(channel_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    # Set (and dropped) when a subscription starts or ends; made on first wait.
    _subscribers_event: asyncio.Event | None = None

    def _subscribers_changed(self) -> None:
        event, self._subscribers_event = self._subscribers_event, None
        if event is not None:
            event.set()

    async def wait_until_subscribers(self, predicate: Callable[[int], bool]) -> None:
        """Returns once predicate(number of subscriptions) holds, e.g. `lambda n: n == 0`
        to wait until ended streams have let go of their subscriptions. On the
        server's event loop."""
        while not predicate(self.subscriber_count()):
            if self._subscribers_event is None:
                self._subscribers_event = asyncio.Event()
            await self._subscribers_event.wait()

    def close(self) -> None:
        """Server shutdown: every stream ends with UNAVAILABLE."""
        self._closing = True
        for subs in self._subscribers.values():
            for sub in subs:
                sub.closed = True
                sub.wakeup.set()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- one stream ------------------------------------------------------------------

    async def watch(self, request: ew_pb.WatchWindowRequest, context: Context) -> None:
        """One WatchWindow stream: a coroutine writing its events with
        context.write (no async generator or task per event), woken by the
        hub when there is something to send."""
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect")
        channel_id = request.channel_id
        _validate(request)
        if self.subscriber_count() >= self.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server already serves {self.max_streams} WatchWindow streams "
                "(max_concurrent_streams); retry later with backoff",
            )
        interval = (request.progress_interval_ms or self.progress_interval_ms) / 1000
        # Re-checks the caller whenever the auth file was reloaded.
        guard = stream_guard.get()
        write = context.write
        sub = self.subscribe(channel_id)  # before reading: nothing committed after is missed
        try:
            channel = await self._run(self.playlog.get_channel, channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            self._lock_depth.setdefault(channel_id, channel.locked_window_ms)
            last = request.after_generation_id
            if last > channel.current_generation_id:
                # The client knows a generation this store never had (a restore?).
                metrics.WATCH_RESETS.labels("unknown_generation").inc()
                last = 0
                reset = True
            else:
                reset = False
            if last == 0:
                events, last = await self._snapshot(sub, reset)
                for event in events:
                    await write(event)
            else:
                last = await self._catch_up(sub, last, write)
            self._join_ticker(sub, interval)
            while True:
                await sub.wakeup.wait()
                sub.wakeup.clear()
                if guard is not None:
                    guard()
                if sub.closed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the server is shutting down; reconnect with after_generation_id={last}",
                    )
                try:
                    last = await self._step(sub, last, write, context)
                except StoreUnavailable as exc:
                    # The stream stays open at its cursor; it catches up from
                    # the durable history when the database is back.
                    emit(log, logging.WARNING, "watch_waits", channel_id=channel_id, error=str(exc))
                    sub.poll = True
                    asyncio.get_running_loop().call_later(RETRY_AFTER_UNAVAILABLE_S, sub.wakeup.set)
        finally:
            self.unsubscribe(sub)

    async def _step(
        self, sub: Subscriber, last: int, write: Callable[[Any], Awaitable[None]], context: Context
    ) -> int:
        """Sends what woke the subscriber; the generation it is at afterwards."""
        channel_id = sub.channel_id
        if sub.needs_reset:
            sub.needs_reset = False
            emit(
                log,
                logging.INFO,
                "watch_reset",
                channel_id=channel_id,
                reason="overflow",
                peer=context.peer(),
            )
            try:
                events, last = await self._snapshot(sub, True)
            except StoreUnavailable:
                sub.needs_reset = True  # still owed
                raise
            for event in events:
                await write(event)
            return last
        if sub.poll:
            sub.poll = False
            last = await self._catch_up(sub, last, write)
        pending = sub.pending
        while pending and not sub.needs_reset and not sub.closed:
            record, serialized = pending.popleft()
            if record.generation_id <= last:
                continue  # already covered by a snapshot or a catch-up
            if record.previous_generation_id != last:
                # A hole in the chain: fill it from the durable history (which
                # has this record too: it was committed before it was offered).
                last = await self._catch_up(sub, last, write)
                continue
            await write(serialized)
            last = record.generation_id
        if sub.progress_due:
            sub.progress_due = False
            await write(self._progress(channel_id, last))
        return last

    # -- progress: one ticker per interval, one event per channel and tick ----

    def _join_ticker(self, sub: Subscriber, interval: float) -> None:
        sub.interval = interval
        group = self._tick_groups.get(interval)
        if group is None:
            group = self._tick_groups[interval] = set()
            asyncio.get_running_loop().call_later(interval, self._tick, interval)
        group.add(sub)

    def _tick(self, interval: float) -> None:
        group = self._tick_groups.get(interval)
        if not group:
            self._tick_groups.pop(interval, None)  # nobody left: the ticker stops
            return
        _progress_due(group)
        asyncio.get_running_loop().call_later(interval, self._tick, interval)

    def _progress(self, channel_id: str, generation: int) -> bytes:
        """The progress event, built once per channel and instant for every
        subscriber that is sent it."""
        now = self.clock.now_utc_ms()
        key = (now, self._lock_depth[channel_id], generation)
        cached = self._progress_cache.get(channel_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        self.progress_builds += 1
        event = pb.WindowEvent(
            progress=pb.ProgressEvent(
                channel_id=channel_id,
                now_utc_ms=now,
                locked_until_utc_ms=locked_until(now, key[1]),
                channel_generation_id=generation,
            )
        ).SerializeToString()
        self._progress_cache[channel_id] = (key, event)
        return event

    @property
    def history_reads(self) -> int:
        return self.reads_started["history"]

    @property
    def snapshot_reads(self) -> int:
        return self.reads_started["snapshot"]

    def _shared(self, kind: str, key: Any, fn: Callable[[], Any]) -> Any:
        """The read of this kind in flight for `key`, or a new one that later
        callers with the same key share; each caller awaits it shielded, so a
        stream that ends does not cancel it for the others."""
        reads = self._history_reads if kind == "history" else self._snapshot_reads
        read = reads.get(key)
        if read is None:
            self.reads_started[kind] += 1
            read = reads[key] = asyncio.ensure_future(self._run(fn))
            read.add_done_callback(lambda _: reads.pop(key, None))
        return asyncio.shield(read)

    async def _snapshot(self, sub: Subscriber, reset: bool) -> tuple[list[bytes], int]:
        """The state from now on, as snapshot events, and its generation. A
        reset snapshot is read once for every subscriber of the channel that
        needs one at the same time; a resumed subscriber that joins a read
        begun before its trigger finds any hole by the generation chain."""
        if reset:
            snap, events = await self._shared(
                "snapshot", sub.channel_id, functools.partial(self._read_snapshot, sub.channel_id, True)
            )
        else:
            snap, events = await self._run(self._read_snapshot, sub.channel_id, False)
        generation = snap.channel.current_generation_id
        # Events at or below the snapshot's generation are in it already.
        while sub.pending and sub.pending[0][0].generation_id <= generation:
            sub.pending.popleft()
        return events, generation

    def _read_snapshot(self, channel_id: str, reset: bool) -> _SnapshotRead:
        snap = self.playlog.snapshot_from_now(channel_id)
        events = snapshot_events(
            channel_id,
            snap.channel.current_generation_id,
            snap.entries,
            snap.now_utc_ms,
            snap.locked_until_utc_ms,
            reset,
            self.max_message_bytes,
        )
        return snap, events

    def _read_history(self, channel_id: str, last: int) -> _History:
        floor, records = self.playlog.publishes_after(channel_id, last, REPLAY_BATCH)
        # Serialized once for every subscriber that shares this read.
        return floor, [(r, wire.replaced_event(r)) for r in records]

    async def _catch_up(self, sub: Subscriber, last: int, write: Callable[[Any], Awaitable[None]]) -> int:
        """Replays committed publishes after `last` from the durable history,
        or a reset snapshot when that history is no longer kept; the
        generation the subscriber is at afterwards. Subscribers at the same
        cursor share one read."""
        while True:
            floor, records = await self._shared(
                "history", (sub.channel_id, last), functools.partial(self._read_history, sub.channel_id, last)
            )
            if last < floor:
                metrics.WATCH_RESETS.labels("history_gone").inc()
                events, generation = await self._snapshot(sub, True)
                for event in events:
                    await write(event)
                return generation
            for record, event in records:
                await write(event)
                last = record.generation_id
            if len(records) < REPLAY_BATCH:
                return last


def _progress_due(subscribers: Iterable[Subscriber]) -> None:
    """A tick, a clock move or a change of lock depth: each sends a progress event."""
    for sub in subscribers:
        sub.progress_due = True
        sub.wakeup.set()


def _validate(request: ew_pb.WatchWindowRequest) -> None:
    out: list[FieldViolation] = []
    check_id(request.channel_id, "channel_id", out)
    if request.progress_interval_ms < 0:
        out.append(FieldViolation("progress_interval_ms", "must be >= 0 (0: the server's default)"))
    raise_if_any(out)


def snapshot_events(
    channel_id: str,
    generation: int,
    entries: list[StoredEntry],
    now_utc_ms: int,
    locked_until_utc_ms: int,
    reset: bool,
    max_part_bytes: int = SNAPSHOT_PART_BYTES,
) -> list[bytes]:
    """The snapshot as consecutive parts around the entries' stored bytes, each
    within max_part_bytes of entries (and at most SNAPSHOT_CHUNK_ENTRIES), the
    last marked complete."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for entry in entries:
        # A repeated field costs the entry, its length prefix and its tag.
        cost = len(entry.payload) + 6
        part = parts[-1]
        if part and (size + cost > max_part_bytes or len(part) >= SNAPSHOT_CHUNK_ENTRIES):
            parts.append([])
            size = 0
        parts[-1].append(entry.payload)
        size += cost
    return [
        wire.snapshot_event(
            pb.SnapshotEvent(
                channel_id=channel_id,
                channel_generation_id=generation,
                now_utc_ms=now_utc_ms,
                locked_until_utc_ms=locked_until_utc_ms,
                reset=reset,
                complete=i == len(parts) - 1,
            ),
            part,
        )
        for i, part in enumerate(parts)
    ]
