"""playlog's use cases, free of gRPC: each write gathers facts inside one store
write transaction, lets the domain decide, writes the override record first,
then the artifact, and commits; every refusal is logged with its evidence.

Methods are synchronous (SQLite and psycopg calls block); the servicers run
them on a thread pool so the event loop never waits on disk.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from playlog import metrics
from playlog.clock import Clock
from playlog.domain import channels as channel_rules
from playlog.domain import schedule_days as day_rules
from playlog.domain import validation
from playlog.domain.model import (
    Channel,
    Entry,
    ErrorCode,
    OverrideRecord,
    PublishRecord,
    ScheduleDay,
)
from playlog.domain.publish import (
    PublishFacts,
    PublishPlan,
    PublishRequest,
    ReplaceEntryFacts,
    ReplaceEntryRequest,
    decide_publish,
    decide_replace_entry,
)
from playlog.domain.rejection import MalformedRequest, Rejection
from playlog.domain.windows import locked_until
from playlog.events import log_malformed, log_rejection
from playlog.store.base import (
    IntegrityFinding,
    OverrideRecordPersistError,
    Store,
    StoreError,
    WriteView,
)


class UnknownChannel(LookupError):
    pass


class DeadlineExceeded(Exception):
    """The caller's deadline passed while the write waited for the store."""


# The caller's deadline (time.monotonic()), set at the edge. A write that gets
# the store's lock after it gives up instead of committing a change whose
# caller was already told DEADLINE_EXCEEDED.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


class _Refused(Exception):
    """Unwinds (and so rolls back) a write transaction with a domain refusal."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


@dataclass(frozen=True)
class PublishOutcome:
    ok: bool
    generation_id: int = 0
    override_record_id: str = ""
    rejection: Rejection | None = None


@dataclass(frozen=True)
class DayOutcome:
    ok: bool
    day: ScheduleDay | None = None
    override_record_id: str = ""
    rejection: Rejection | None = None


@dataclass(frozen=True)
class DeclareOutcome:
    channel: Channel
    changed: bool
    override_record_id: str = ""
    rejection: Rejection | None = None


@dataclass(frozen=True)
class Snapshot:
    channel: Channel
    entries: list[Entry]
    now_utc_ms: int

    @property
    def locked_until_utc_ms(self) -> int:
        return locked_until(self.now_utc_ms, self.channel.locked_window_ms)

    @property
    def generation_id(self) -> int:
        return max((e.generation_id for e in self.entries), default=0)


PublishListener = Callable[[PublishRecord], None]


def new_id() -> str:
    return str(uuid.uuid4())


def _persist_failed(exc: Exception) -> Rejection:
    return Rejection(
        ErrorCode.OVERRIDE_RECORD_PERSIST_FAILED,
        f"the override record could not be persisted ({exc}); nothing was changed. "
        "Retry the override; if it keeps failing, check the server's storage",
    )


class Playlog:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        max_entries_per_publish: int = 10_000,
        history_retention_generations: int = 100_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_entries_per_publish = max_entries_per_publish
        self.history_retention_generations = history_retention_generations
        self._publish_listeners: list[PublishListener] = []
        self._commit_order = threading.Lock()
        self._channel_listeners: list[Callable[[Channel], None]] = []

    def add_publish_listener(self, listener: PublishListener) -> None:
        """Called with each committed publish, after its commit (so it is durable)."""
        self._publish_listeners.append(listener)

    def add_channel_listener(self, listener: Callable[[Channel], None]) -> None:
        """Called with a channel after a declaration changed it (and committed)."""
        self._channel_listeners.append(listener)

    # -- channels -------------------------------------------------------------

    def declare_channel(
        self,
        channel_id: str,
        locked_window_ms: int,
        reason_code: str,
        principal: str,
        actor_note: str,
    ) -> DeclareOutcome:
        try:
            channel_rules.validate_declare(channel_id, locked_window_ms)
        except MalformedRequest as exc:
            log_malformed("DeclareChannel", channel_id, exc, False, principal)
            raise
        try:
            with self._writing("declare_channel") as w:
                now = self.clock.now_utc_ms()
                plan = channel_rules.decide_declare(
                    channel_id,
                    locked_window_ms,
                    w.get_channel(channel_id),
                    now,
                    new_id(),
                    reason_code,
                    principal,
                    actor_note,
                )
                if plan.override_record is not None:
                    self._persist_record(w, plan.override_record)
                if plan.created:
                    w.insert_channel(plan.channel)
                elif plan.changed:
                    w.update_channel_locked_window(channel_id, locked_window_ms)
        except _Refused as refused:
            self._log(refused.rejection, "DeclareChannel", channel_id, True, principal)
            existing = self.get_channel(channel_id)
            return DeclareOutcome(existing or plan.channel, False, "", refused.rejection)
        record_id = plan.override_record.id if plan.override_record else ""
        if plan.changed:
            for listener in self._channel_listeners:
                listener(plan.channel)
        return DeclareOutcome(plan.channel, plan.changed, record_id)

    def get_channel(self, channel_id: str) -> Channel | None:
        with self.store.read() as r:
            return r.get_channel(channel_id)

    def list_channels(self) -> list[Channel]:
        with self.store.read() as r:
            return r.list_channels()

    # -- execution window writes -------------------------------------------------

    def publish(self, request: PublishRequest) -> PublishOutcome:
        rpc = "PublishAtomicReplace"
        try:
            validation.validate_publish(
                request.channel_id,
                request.range_start_utc_ms,
                request.range_end_utc_ms,
                request.entries,
                request.operator_override,
                request.reason_code,
                self.max_entries_per_publish,
            )
        except MalformedRequest as exc:
            log_malformed(rpc, request.channel_id, exc, request.operator_override, request.actor)
            raise

        def decide(w: WriteView, now: int) -> PublishPlan | Rejection:
            c = request.channel_id
            rs, re_ = request.range_start_utc_ms, request.range_end_utc_ms
            channel = w.get_channel(c)
            if channel is None:
                return decide_publish(request, PublishFacts(None), now, "")
            facts = PublishFacts(
                channel=channel,
                affected=tuple(w.entries_overlapping(c, rs, re_)),
                left_neighbour=w.left_neighbour(c, rs),
                right_neighbour=w.right_neighbour(c, re_),
                block_ids_in_use_outside=w.block_ids_in_use_outside(
                    c, [e.block_id for e in request.entries], rs, re_
                ),
                dates_with_schedule_day=w.dates_with_schedule_day(
                    c, (e.programming_day_date for e in request.entries)
                ),
            )
            return decide_publish(request, facts, now, new_id())

        return self._write_publish(rpc, request.channel_id, request.operator_override, request.actor, decide)

    def replace_entry(self, request: ReplaceEntryRequest) -> PublishOutcome:
        rpc = "ReplaceEntry"
        try:
            validation.validate_replace_entry(
                request.channel_id,
                request.block_id,
                request.entry,
                request.operator_override,
                request.reason_code,
            )
        except MalformedRequest as exc:
            log_malformed(rpc, request.channel_id, exc, request.operator_override, request.actor)
            raise

        def decide(w: WriteView, now: int) -> PublishPlan | Rejection:
            c = request.channel_id
            facts = ReplaceEntryFacts(
                channel=w.get_channel(c),
                existing=w.current_entry(c, request.block_id),
                dates_with_schedule_day=w.dates_with_schedule_day(c, [request.entry.programming_day_date]),
            )
            return decide_replace_entry(request, facts, now, new_id())

        return self._write_publish(rpc, request.channel_id, request.operator_override, request.actor, decide)

    def _write_publish(
        self,
        rpc: str,
        channel_id: str,
        operator_override: bool,
        principal: str,
        decide: Callable[[WriteView, int], PublishPlan | Rejection],
    ) -> PublishOutcome:
        # Held from before the write until its listeners have been told, so
        # subscribers hear of publishes in generation order.
        with self._commit_order:
            return self._write_publish_ordered(rpc, channel_id, operator_override, principal, decide)

    def _write_publish_ordered(
        self,
        rpc: str,
        channel_id: str,
        operator_override: bool,
        principal: str,
        decide: Callable[[WriteView, int], PublishPlan | Rejection],
    ) -> PublishOutcome:
        now = 0
        try:
            with self._writing(rpc) as w:
                # "now" is read under the write lock: the windows it defines hold
                # for the whole decision and commit.
                now = self.clock.now_utc_ms()
                decision = decide(w, now)
                if isinstance(decision, Rejection):
                    raise _Refused(decision)
                if decision.override_record is not None:
                    self._persist_record(w, decision.override_record)
                committed = w.apply_publish(decision)
                if self.history_retention_generations:
                    w.prune_history(channel_id, self.history_retention_generations)
        except _Refused as refused:
            self._log(refused.rejection, rpc, channel_id, operator_override, principal, now)
            return PublishOutcome(False, rejection=refused.rejection)
        except StoreError as exc:
            if not operator_override:
                raise
            # The record and its artifact commit together; if the commit
            # failed, neither exists.
            rejection = _persist_failed(exc)
            self._log(rejection, rpc, channel_id, operator_override, principal, now)
            return PublishOutcome(False, rejection=rejection)
        for listener in self._publish_listeners:
            listener(committed)
        return PublishOutcome(True, committed.generation_id, committed.override_record_id)

    @contextlib.contextmanager
    def _writing(self, operation: str) -> Iterator[WriteView]:
        """One store write transaction, timed for the commit-latency metric."""
        with metrics.store_commit(operation), self.store.write() as w:
            deadline = call_deadline.get()
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{operation}: the deadline passed before the write could start")
            yield w

    def _persist_record(self, w: WriteView, record: OverrideRecord) -> None:
        try:
            w.insert_override_record(record)
        except OverrideRecordPersistError as exc:
            raise _Refused(_persist_failed(exc)) from exc

    def _log(
        self,
        rejection: Rejection,
        rpc: str,
        channel_id: str,
        operator_override: bool,
        principal: str,
        now: int | None = None,
    ) -> None:
        log_rejection(
            rpc,
            channel_id,
            rejection,
            operator_override,
            principal,
            now if now else self.clock.now_utc_ms(),
        )

    # -- execution window reads ----------------------------------------------------

    def read_window(self, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> Snapshot:
        with self.store.read() as r:
            now = self.clock.now_utc_ms()
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            return Snapshot(channel, r.entries_overlapping(channel_id, start_utc_ms, end_utc_ms), now)

    def snapshot_from_now(self, channel_id: str, page: int = 1000) -> Snapshot:
        """The entries that end after now, read in one consistent snapshot."""
        with self.store.read() as r:
            now = self.clock.now_utc_ms()
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            entries: list[Entry] = []
            after: int | None = None
            while True:
                batch = r.entries_ending_after(channel_id, now, after, page)
                entries.extend(batch)
                if len(batch) < page:
                    return Snapshot(channel, entries, now)
                after = batch[-1].start_utc_ms

    def entry_at(self, channel_id: str, at_utc_ms: int, include_flexible: bool) -> Entry | None:
        with self.store.read() as r:
            now = self.clock.now_utc_ms()
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            entry = r.entry_at(channel_id, at_utc_ms)
        if entry is None:
            return None
        if not include_flexible and entry.start_utc_ms >= locked_until(now, channel.locked_window_ms):
            # Automation consumes only locked data: the flexible future may
            # still change without an override.
            return None
        return entry

    # -- audit ----------------------------------------------------------------------

    def get_override_record(self, record_id: str) -> OverrideRecord | None:
        with self.store.read() as r:
            return r.get_override_record(record_id)

    def list_override_records(
        self, channel_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, OverrideRecord]]:
        with self.store.read() as r:
            return r.list_override_records(channel_id, after_seq, limit)

    def verify_integrity(self, channel_id: str) -> list[IntegrityFinding]:
        with self.store.read() as r:
            return r.verify_integrity(channel_id)

    # -- schedule days -----------------------------------------------------------

    def store_schedule_day(self, day: ScheduleDay, reason_code: str, principal: str, note: str) -> DayOutcome:
        return self._write_day(day_rules.DayWrite.STORE, day, reason_code, principal, note)

    def force_regenerate(self, day: ScheduleDay, reason_code: str, principal: str, note: str) -> DayOutcome:
        return self._write_day(day_rules.DayWrite.FORCE_REGENERATE, day, reason_code, principal, note)

    def operator_override_day(
        self, day: ScheduleDay, reason_code: str, principal: str, note: str
    ) -> DayOutcome:
        return self._write_day(day_rules.DayWrite.OPERATOR_OVERRIDE, day, reason_code, principal, note)

    def update_schedule_day(self, day: ScheduleDay, principal: str) -> DayOutcome:
        rejection = day_rules.update_refused(day)
        self._log(rejection, "UpdateScheduleDay", day.channel_id, False, principal)
        return DayOutcome(False, rejection=rejection)

    def _write_day(
        self, write: str, day: ScheduleDay, reason_code: str, principal: str, note: str
    ) -> DayOutcome:
        override = write == day_rules.DayWrite.OPERATOR_OVERRIDE
        try:
            day_rules.validate_schedule_day(day, write, reason_code)
        except MalformedRequest as exc:
            log_malformed(write, day.channel_id, exc, override, principal)
            raise
        try:
            with self._writing(write) as w:
                now = self.clock.now_utc_ms()
                known = w.get_channel(day.channel_id) is not None
                current = w.authoritative_day(day.channel_id, day.programming_day_date)
                decision: day_rules.DayPlan | Rejection
                if write == day_rules.DayWrite.STORE:
                    decision = day_rules.decide_store(day, known, current, new_id(), now)
                elif write == day_rules.DayWrite.FORCE_REGENERATE:
                    decision = day_rules.decide_force_regenerate(day, known, current, new_id(), now)
                else:
                    decision = day_rules.decide_operator_override(
                        day, known, current, new_id(), new_id(), now, reason_code, principal, note
                    )
                if isinstance(decision, Rejection):
                    raise _Refused(decision)
                if decision.override_record is not None:
                    self._persist_record(w, decision.override_record)
                w.insert_schedule_day(decision.day, decision.superseded.id if decision.superseded else "")
        except _Refused as refused:
            self._log(refused.rejection, write, day.channel_id, override, principal)
            return DayOutcome(False, rejection=refused.rejection)
        except StoreError as exc:
            if not override:
                raise
            rejection = _persist_failed(exc)
            self._log(rejection, write, day.channel_id, override, principal)
            return DayOutcome(False, rejection=rejection)
        record_id = decision.override_record.id if decision.override_record else ""
        return DayOutcome(True, decision.day, record_id)

    def get_schedule_day(self, channel_id: str, date: str) -> ScheduleDay | None:
        with self.store.read() as r:
            return r.authoritative_day(channel_id, date)

    def schedule_day_history(self, channel_id: str, date: str) -> list[ScheduleDay]:
        with self.store.read() as r:
            return r.schedule_day_history(channel_id, date)

    # -- the manual clock -------------------------------------------------------------

    def save_manual_clock(self, now_utc_ms: int) -> None:
        with self._writing("manual_clock") as w:
            w.save_manual_clock_utc_ms(now_utc_ms)

    # -- watching ------------------------------------------------------------------

    def publishes_after(
        self, channel_id: str, after_generation_id: int, limit: int
    ) -> tuple[int, Sequence[PublishRecord]]:
        """(history floor, publishes after the generation) in one snapshot."""
        with self.store.read() as r:
            return r.history_floor(channel_id), r.publishes_after(channel_id, after_generation_id, limit)
