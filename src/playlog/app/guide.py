"""The guide's use cases (SPEC section 14), free of gRPC and HTTP: every
edge (GuideService, the HTTP guide) calls these.

A channel's programmes for a range are derived once per version and shared:
the version is the channel's current generation (every change of its entries
is a publish with a new one) and the ids of the authoritative ScheduleDays of
the range's dates (a regenerated or overridden day is a new row), both read
in the same read transaction as what they version, so no derivation is ever
served under a version other than its own, whichever replica committed the
change. A publish this process hears of (its own, or another replica's
doorbell) also drops the channel's older derivations at once.
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from playlog.app.service import Playlog, UnknownChannel
from playlog.domain import guide as rules
from playlog.domain.guide import Derivation, Programme
from playlog.domain.model import Channel, PublishRecord
from playlog.domain.windows import locked_until
from playlog.events import emit
from playlog.store.base import ALL_CHANNELS, ReadView
from playlog.wire import decode_entry

log = logging.getLogger("playlog.guide")

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Guide consumers refresh daily: a shorter published horizon is warned of.
HORIZON_WARNING_MS = DAY_MS
# How many times a read looks back for the start of the programme containing
# the range's start (one slot, or a chain of filler-only entries).
MAX_LOOKBACK_STEPS = 64
# The dates whose ScheduleDays a range's guide reads: from two days before its
# start to one after its end (a programming day's slots may lie beside its date).
DATES_BEFORE, DATES_AFTER = 2, 1


def _date(utc_ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(utc_ms / 1000, datetime.UTC).date()


def dates_of(start_utc_ms: int, end_utc_ms: int) -> tuple[str, str]:
    first = _date(start_utc_ms) - datetime.timedelta(days=DATES_BEFORE)
    last = _date(max(start_utc_ms, end_utc_ms - 1)) + datetime.timedelta(days=DATES_AFTER)
    return first.isoformat(), last.isoformat()


@dataclass(frozen=True)
class ChannelVersion:
    """What a channel's guide for a range was derived from."""

    channel: Channel
    day_ids: tuple[str, ...]

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        return self.channel.current_generation_id, self.day_ids


@dataclass(frozen=True)
class ChannelGuide:
    version: ChannelVersion
    derivation: Derivation

    @property
    def channel(self) -> Channel:
        return self.version.channel


@dataclass(frozen=True)
class GuideRead:
    now_utc_ms: int
    channels: list[ChannelGuide]

    def locked_until(self, channel: Channel) -> int:
        return locked_until(self.now_utc_ms, channel.locked_window_ms)


@dataclass(frozen=True)
class NowNext:
    channel: Channel
    on_air: Programme | None
    next: Programme | None
    actual_start_utc_ms: int = 0
    actual_start_engine_id: str = ""
    covered_until_utc_ms: int = 0


class Guide:
    def __init__(
        self,
        playlog: Playlog,
        filler_types: frozenset[str] = rules.DEFAULT_FILLER_TYPES,
        cache_size: int = 4096,
    ) -> None:
        self.playlog = playlog
        self.filler_types = filler_types
        self.cache_size = cache_size
        # (channel, start, end) -> (version key, derivation), least recent first.
        self._cache: collections.OrderedDict[tuple[str, int, int], tuple[object, Derivation]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.derivations = 0  # counted for tests: derivations made, not served from the cache
        playlog.add_publish_listener(self._on_commit)

    # -- reads ----------------------------------------------------------------------------

    def _channels(self, r: ReadView, channel_ids: Sequence[str]) -> list[Channel]:
        if not channel_ids:
            return r.list_channels()
        out = []
        for channel_id in channel_ids:
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            out.append(channel)
        return out

    def _versions(
        self, r: ReadView, channel_ids: Sequence[str], start_utc_ms: int, end_utc_ms: int
    ) -> list[ChannelVersion]:
        channels = self._channels(r, channel_ids)
        first, last = dates_of(start_utc_ms, end_utc_ms)
        days = r.day_versions_between([c.channel_id for c in channels], first, last)
        return [ChannelVersion(c, days.get(c.channel_id, ())) for c in channels]

    def versions(
        self, channel_ids: Sequence[str], range_of: Callable[[int], tuple[int, int]]
    ) -> tuple[int, int, int, list[ChannelVersion]]:
        """(now, start, end, versions): the range range_of(now), and what each
        channel's guide of it is derived from. One small read (no entries),
        enough to tell whether what was rendered before is still the guide."""
        with self.playlog.store.read() as r:
            now = self.playlog.now_in(r)
            start, end = range_of(now)
            return now, start, end, self._versions(r, channel_ids, start, end)

    def read(self, channel_ids: Sequence[str], start_utc_ms: int, end_utc_ms: int) -> GuideRead:
        """Each channel's programmes overlapping the range (every channel when
        channel_ids is empty), in one consistent read; derivations of an
        unchanged version are served from the cache."""
        with self.playlog.store.read() as r:
            now = self.playlog.now_in(r)
            versions = self._versions(r, channel_ids, start_utc_ms, end_utc_ms)
            out: list[ChannelGuide] = []
            ends: dict[str, int] | None = None
            for v in versions:
                key = (v.channel.channel_id, start_utc_ms, end_utc_ms)
                derivation = self._cached(key, v.key)
                if derivation is None:
                    if ends is None:
                        ends = r.runway_ends()
                    derivation = self._derive(r, v.channel, start_utc_ms, end_utc_ms, ends)
                    self._keep(key, v.key, derivation)
                out.append(ChannelGuide(v, derivation))
        return GuideRead(now, out)

    def _derive(
        self, r: ReadView, channel: Channel, start: int, end: int, ends: dict[str, int]
    ) -> Derivation:
        c = channel.channel_id
        first, last = dates_of(start, end)
        days = r.authoritative_days_between(c, first, last)
        entries = [decode_entry(s.payload, False) for s in r.stored_overlapping(c, start, end)]
        for _ in range(MAX_LOOKBACK_STEPS):
            back = rules.lookback_from(entries[0], days, self.filler_types) if entries else None
            if back is None:
                break
            before = [
                decode_entry(s.payload, False) for s in r.stored_overlapping(c, back, entries[0].start_utc_ms)
            ]
            if not before or before[-1].end_utc_ms != entries[0].start_utc_ms:
                break  # a gap: the programme starts where the entries do
            entries = before + entries
        self.derivations += 1
        return rules.derive(entries, days, start, end, ends.get(c, 0), self.filler_types)

    def _cached(self, key: tuple[str, int, int], version: object) -> Derivation | None:
        with self._lock:
            found = self._cache.get(key)
            if found is None or found[0] != version:
                return None
            self._cache.move_to_end(key)
            return found[1]

    def _keep(self, key: tuple[str, int, int], version: object, derivation: Derivation) -> None:
        with self._lock:
            self._cache[key] = (version, derivation)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def forget(self, channel_id: str, below_generation: int | None = None) -> None:
        """Drops a channel's derivations (all of them for ALL_CHANNELS, or
        those of generations below `below_generation`): no cache outlives
        a generation this process has heard of."""
        with self._lock:
            for key in [k for k in self._cache if channel_id in (ALL_CHANNELS, k[0])]:
                version = self._cache[key][0]
                generation = version[0] if isinstance(version, tuple) else 0
                if below_generation is None or generation < below_generation:
                    del self._cache[key]

    def _on_commit(self, record: PublishRecord) -> None:
        self.forget(record.channel_id, record.generation_id)

    def on_remote_publish(self, channel_id: str, generation_id: int) -> None:
        """A doorbell from another replica (generation 0 for ALL_CHANNELS:
        any may have changed; versions read with each request still decide)."""
        self.forget(channel_id, generation_id or None)

    # -- now and next --------------------------------------------------------------------

    def now_next(self, channel_ids: Sequence[str]) -> tuple[int, list[NowNext]]:
        """Each channel's programme on air and the next, with the actual start
        of the one on air where an engine's as-run says it. Moves with the
        clock, with no publish: the derivation is of a range around now, and
        the choice is made at now."""
        with self.playlog.store.read() as r:
            now = self.playlog.now_in(r)
        hour = now - now % HOUR_MS
        guide = self.read(channel_ids, hour, hour + 2 * DAY_MS)
        now = max(now, guide.now_utc_ms)
        out = []
        with self.playlog.store.read() as r:
            for g in guide.channels:
                on_air, nxt = rules.now_and_next(g.derivation.programmes, now)
                actual, engine = 0, ""
                if on_air is not None and on_air.block_ids:
                    first_block = on_air.block_ids[0]
                    events = r.as_run_overlapping(g.channel.channel_id, on_air.start_utc_ms, now + 1)
                    starts = [
                        (e.event.started_utc_ms, e.engine_id)
                        for _, e in events
                        if e.event.block_id == first_block
                    ]
                    if starts:
                        actual, engine = min(starts)
                out.append(NowNext(g.channel, on_air, nxt, actual, engine, g.derivation.covered_until_utc_ms))
        return now, out

    # -- the horizon -----------------------------------------------------------------------

    def horizons(self) -> tuple[int, dict[str, int]]:
        """Now, and how far each channel's published window reaches beyond it (ms, 0: nothing ahead)."""
        with self.playlog.store.read() as r:
            now = self.playlog.now_in(r)
            ends = r.runway_ends()
        return now, {c: max(0, end - now) for c, end in ends.items()}


class HorizonWatch:
    """Warns, once per channel until it recovers, when a channel's published
    horizon falls under HORIZON_WARNING_MS (guide consumers refresh daily and
    would run out of programmes before the next refresh)."""

    def __init__(self, guide: Guide, threshold_ms: int = HORIZON_WARNING_MS) -> None:
        self.guide = guide
        self.threshold_ms = threshold_ms
        self.short: set[str] = set()
        self._lock = threading.Lock()

    def check(self) -> set[str]:
        """Logs what changed; returns the channels whose horizon is short."""
        now, horizons = self.guide.horizons()
        with self._lock:
            for channel_id, horizon in sorted(horizons.items()):
                if horizon < self.threshold_ms and channel_id not in self.short:
                    self.short.add(channel_id)
                    emit(
                        log,
                        logging.WARNING,
                        "guide_horizon_short",
                        channel_id=channel_id,
                        horizon_ms=horizon,
                        now_utc_ms=now,
                        threshold_ms=self.threshold_ms,
                        message="the channel's published window reaches less than 24 h ahead: guide "
                        "consumers that refresh daily will run out of programmes; publish further ahead",
                    )
                elif horizon >= self.threshold_ms and channel_id in self.short:
                    self.short.discard(channel_id)
                    emit(
                        log, logging.INFO, "guide_horizon_restored", channel_id=channel_id, horizon_ms=horizon
                    )
            return set(self.short)
