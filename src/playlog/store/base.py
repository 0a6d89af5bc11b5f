"""The storage interface the application layer depends on.

A Store hands out read views (one consistent snapshot: a read never sees part
of a write) and write views (serialized per store, atomic: everything done in
one write view commits together or not at all). The domain decides; the store
only answers questions and applies plans.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from playlog.domain.as_run import Acknowledgement, AsRunRecord, EngineStatus, EntryVersion
from playlog.domain.model import Channel, ChannelMetadata, Entry, OverrideRecord, PublishRecord, ScheduleDay
from playlog.domain.publish import PublishPlan

_T = TypeVar("_T")


class StoreError(Exception):
    """A storage failure the caller cannot fix (INTERNAL at the edge)."""


class SchemaUnknown(StoreError):
    """The store's schema is not the version this playlog knows (an audit
    that only reads will not migrate it)."""


def check_schema_known(found: int, known: int, store: str) -> None:
    """Raises SchemaUnknown unless the store's schema is this playlog's."""
    if found == 0:
        raise SchemaUnknown(f"{store} holds no playlog schema")
    if found < known:
        raise SchemaUnknown(
            f"{store} has schema version {found}, older than this playlog's {known}: it was last served by "
            "an older playlog. `playlog serve` migrates it on start; verify never changes a store"
        )
    if found > known:
        raise SchemaUnknown(
            f"{store} has schema version {found}, newer than this playlog knows ({known}): verify it with "
            "the playlog that serves it, or upgrade this one"
        )


class StoreUnavailable(StoreError):
    """The database cannot be reached or answered too late (a lost connection,
    a restart, a lock or statement timeout): nothing was applied; retry
    (UNAVAILABLE at the edge)."""


class OverrideRecordPersistError(StoreError):
    """The override record could not be written; the write must not go on."""


class FaultStep(enum.Enum):
    """Steps of a write where tests can inject a failure."""

    OVERRIDE_RECORD = "override_record"
    ENTRIES = "entries"
    PUBLISH_HISTORY = "publish_history"
    SCHEDULE_DAY = "schedule_day"
    CHANNEL = "channel"
    COMMIT = "commit"


class InjectedFault(StoreError):
    pass


class FaultInjector:
    """Failure-injection seam: make the next write of a step fail (tests only)."""

    def __init__(self) -> None:
        self._armed: set[FaultStep] = set()
        self._actions: dict[FaultStep, Callable[[], None]] = {}
        # Writes to different channels run at once on PostgreSQL: one of them
        # is "the next".
        self._lock = threading.Lock()

    def fail_next(self, step: FaultStep) -> None:
        with self._lock:
            self._armed.add(step)

    def before_next(self, step: FaultStep, action: Callable[[], None]) -> None:
        """Runs action when the next write reaches step: a real disruption
        (say, the database terminating the write's connection) at that point."""
        with self._lock:
            self._actions[step] = action

    def check(self, step: FaultStep) -> None:
        with self._lock:
            action = self._actions.pop(step, None)
            armed = step in self._armed
            self._armed.discard(step)
        if action is not None:
            action()
        if armed:
            raise InjectedFault(f"injected failure at step {step.value}")


class StoredEntry(NamedTuple):
    """A current entry as reads send it: its wire form, and what they need to
    know about it without decoding it. (A named tuple: a read makes one per
    entry, and a tuple is made in a fraction of a frozen dataclass's time.)"""

    start_utc_ms: int
    end_utc_ms: int
    generation_id: int
    payload: bytes


@dataclass(frozen=True)
class IntegrityFinding:
    kind: str  # IntegrityViolationKind suffix, e.g. "GAP"
    channel_id: str
    detail: str


class ReadView(Protocol):
    def get_channel(self, channel_id: str) -> Channel | None: ...
    def list_channels(self) -> list[Channel]: ...
    # Spans and ids only (segments are not read): what the checks need.
    def entry_spans_overlapping(self, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> list[Entry]: ...
    def current_span(self, channel_id: str, block_id: str) -> Entry | None: ...
    # Wire forms, as reads send them.
    def stored_overlapping(
        self, channel_id: str, start_utc_ms: int, end_utc_ms: int
    ) -> list[StoredEntry]: ...
    def stored_overlapping_page(
        self, channel_id: str, start_utc_ms: int, end_utc_ms: int, after_start_utc_ms: int | None, limit: int
    ) -> list[StoredEntry]: ...
    def stored_ending_after(
        self, channel_id: str, at_utc_ms: int, after_start_utc_ms: int | None, limit: int
    ) -> list[StoredEntry]: ...
    def stored_entry_at(self, channel_id: str, at_utc_ms: int) -> StoredEntry | None: ...
    # The whole entry, segments included (a cut keeps part of it).
    def entry_at(self, channel_id: str, at_utc_ms: int) -> Entry | None: ...
    def left_neighbour(self, channel_id: str, at_utc_ms: int) -> Entry | None: ...
    def right_neighbour(self, channel_id: str, at_utc_ms: int) -> Entry | None: ...
    def block_ids_in_use_outside(
        self, channel_id: str, block_ids: Sequence[str], start_utc_ms: int, end_utc_ms: int
    ) -> frozenset[str]: ...
    def dates_with_schedule_day(self, channel_id: str, dates: Iterable[str]) -> frozenset[str]: ...
    def get_override_record(self, record_id: str) -> OverrideRecord | None: ...
    def list_override_records(
        self, channel_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, OverrideRecord]]: ...
    def publishes_after(
        self, channel_id: str, after_generation_id: int, limit: int
    ) -> list[PublishRecord]: ...
    def history_floor(self, channel_id: str) -> int: ...
    def authoritative_day(self, channel_id: str, date: str) -> ScheduleDay | None: ...
    def schedule_day_history(self, channel_id: str, date: str) -> list[ScheduleDay]: ...
    def verify_integrity(self, channel_id: str) -> list[IntegrityFinding]: ...
    def manual_clock_utc_ms(self) -> int | None: ...
    def clock_floor_utc_ms(self) -> int: ...
    # Engines' evidence (store/engines_sql.py).
    def as_run_by_event_ids(self, engine_id: str, event_ids: Sequence[str]) -> dict[str, AsRunRecord]: ...
    def traced_versions(
        self, channel_id: str, block_ids: Iterable[str]
    ) -> dict[tuple[str, int], EntryVersion]: ...
    def as_run_overlapping(
        self,
        channel_id: str,
        start_utc_ms: int,
        end_utc_ms: int,
        engine_id: str = "",
        after: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, AsRunRecord]]: ...
    def engine_statuses(self, channel_id: str) -> list[EngineStatus]: ...
    def runway_ends(self) -> dict[str, int]: ...
    # The guide (store/guide_sql.py).
    def authoritative_days_between(
        self, channel_id: str, first_date: str, last_date: str
    ) -> list[ScheduleDay]: ...
    def day_versions_between(
        self, channel_ids: Sequence[str], first_date: str, last_date: str
    ) -> dict[str, tuple[str, ...]]: ...


class WriteView(ReadView, Protocol):
    def insert_override_record(self, record: OverrideRecord) -> None: ...
    def insert_channel(self, channel: Channel) -> None: ...
    def update_channel_locked_window(self, channel_id: str, locked_window_ms: int) -> None: ...
    def update_channel_metadata(self, channel_id: str, metadata: ChannelMetadata) -> None: ...
    def apply_publish(self, plan: PublishPlan) -> PublishRecord: ...
    def insert_schedule_day(self, day: ScheduleDay, superseded_id: str) -> None: ...
    def prune_history(self, channel_id: str, keep_publishes: int) -> None: ...
    def save_manual_clock_utc_ms(self, now_utc_ms: int) -> None: ...
    def note_acted_at(self, now_utc_ms: int, channel_id: str = "") -> None: ...
    def insert_acknowledgement(self, ack: Acknowledgement) -> None: ...
    def insert_as_run(self, records: Sequence[AsRunRecord]) -> None: ...


class StoreListener(Protocol):
    """What a shared store tells every replica (PostgreSQL NOTIFY: doorbells;
    the database stays the truth). Called from the store's own thread."""

    def publish_committed(self, channel_id: str, generation_id: int) -> None:
        """A publish committed (by any replica); ALL_CHANNELS ("*") with
        generation 0 means "maybe any" (after the listener reconnected)."""

    def channel_changed(self, channel_id: str, locked_window_ms: int) -> None: ...
    def clock_moved(self, now_utc_ms: int) -> None: ...
    def availability_changed(self, available: bool, reason: str) -> None: ...


# A doorbell for every channel: notifications may have been missed.
ALL_CHANNELS = "*"
# The serialization key of manual clock moves in run_write (no channel id
# starts with "*").
CLOCK_KEY = "*clock"


class Store(Protocol):
    faults: FaultInjector
    # Whether a small read may run on the caller's event loop (a local file,
    # no network round trip).
    inline_reads: bool
    # Whether other processes share it (replicas): state they can change, the
    # manual clock included, is then read from the store, not from memory.
    shared: bool

    def read(self) -> AbstractContextManager[ReadView]: ...
    def write(self) -> AbstractContextManager[WriteView]: ...
    def run_write(
        self,
        fn: Callable[[WriteView], _T],
        after_commit: Callable[[_T], None] | None = None,
        channel_id: str = "",
    ) -> _T:
        """fn(view) in a write transaction serialized with every other write
        to channel_id (on every replica sharing the store); after_commit(result)
        runs after the commit, in the channel's commit order. A store may
        group-commit writes that arrive together, each in its own savepoint
        (refused or accepted on its own)."""
        ...

    def listen(self, listener: StoreListener) -> None:
        """Tells listener what other processes sharing this store changed."""
        ...

    def close(self) -> None: ...
