"""playlog's use cases, free of gRPC: each write gathers facts inside one store
write transaction, lets the domain decide, writes the override record first,
then the artifact, and commits; every refusal is logged with its evidence.

Methods are synchronous (SQLite and psycopg calls block); the servicers run
them on a thread pool so the event loop never waits on disk.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from playlog import metrics
from playlog.clock import Clock, ManualClock
from playlog.domain import channels as channel_rules
from playlog.domain import schedule_days as day_rules
from playlog.domain import validation
from playlog.domain.channels import guide_id_of
from playlog.domain.model import (
    Channel,
    ErrorCode,
    OverrideRecord,
    PublishRecord,
    ScheduleDay,
)
from playlog.domain.paging import PageCursor, WindowChanged
from playlog.domain.publish import (
    PublishFacts,
    PublishPlan,
    PublishRequest,
    ReplaceEntryFacts,
    ReplaceEntryRequest,
    decide_publish,
    decide_replace_entry,
)
from playlog.domain.rejection import Evidence, FieldViolation, MalformedRequest, Rejection
from playlog.domain.windows import locked_until
from playlog.events import log_malformed, log_metadata_change, log_rejection
from playlog.store.base import (
    CLOCK_KEY,
    IntegrityFinding,
    OverrideRecordPersistError,
    ReadView,
    Store,
    StoredEntry,
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
    # Set for a dry run (validate_only): what the write would have done.
    dry_run: DryRun | None = None


@dataclass(frozen=True)
class DryRun:
    """A write that passed every check and was rolled back (AIP-163)."""

    plan: PublishPlan
    record: PublishRecord  # its entries' wire forms as they would be stored


class _DryRunDone(Exception):
    """Unwinds (and so rolls back) a dry run that passed every check."""

    def __init__(self, dry_run: DryRun) -> None:
        self.dry_run = dry_run


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
    entries: list[StoredEntry]
    now_utc_ms: int

    @property
    def locked_until_utc_ms(self) -> int:
        return locked_until(self.now_utc_ms, self.channel.locked_window_ms)

    @property
    def generation_id(self) -> int:
        return max((e.generation_id for e in self.entries), default=0)


PublishListener = Callable[[PublishRecord], None]


class _Plan(Protocol):
    """What every write decision has: the override record to persist first, if any."""

    @property
    def override_record(self) -> OverrideRecord | None: ...


_P = TypeVar("_P", bound=_Plan)
_R = TypeVar("_R")


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
        history_retention_publishes: int = 100_000,
        event_encoder: Callable[[PublishRecord], bytes] | None = None,
        max_event_bytes: int = 0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_entries_per_publish = max_entries_per_publish
        self.history_retention_publishes = history_retention_publishes
        # Serializes a publish's watch event (the edge's wire form), so that a
        # publish too large for any watcher is refused before it commits.
        self.event_encoder = event_encoder
        self.max_event_bytes = max_event_bytes
        self._publish_listeners: list[PublishListener] = []
        # The manual clock of replicas sharing a store is the store's.
        self._clock_in_store = store.shared and getattr(clock, "manual", False)
        self._channel_listeners: list[Callable[[Channel], None]] = []

    def add_publish_listener(self, listener: PublishListener) -> None:
        """Called with each committed publish, after its commit (so it is durable)."""
        self._publish_listeners.append(listener)

    def add_channel_listener(self, listener: Callable[[Channel], None]) -> None:
        """Called with a channel after a declaration changed it (and committed)."""
        self._channel_listeners.append(listener)

    # -- the one write skeleton ---------------------------------------------------

    def _write(
        self,
        rpc: str,
        channel_id: str,
        operator_override: bool,
        principal: str,
        decide: Callable[[WriteView, int], _P | Rejection],
        apply: Callable[[WriteView, _P, int], _R],
        validate: Callable[[], None] | None = None,
        after_commit: Callable[[_R], None] | None = None,
        dry_run: bool = False,
    ) -> _R | Rejection:
        """Every write, one shape (DESIGN-NOTES "one skeleton per concern"):
        check the request, take the store's write transaction (group-committed
        with other writes arriving together, each in its own savepoint), read
        "now" under it, let the domain decide from the facts, persist the
        override record first, apply, note the instant acted on, commit. A refusal changes
        nothing and is logged with its evidence; a storage failure of a write
        that carries an override record is OVERRIDE_RECORD_PERSIST_FAILED (the
        record and its artifact commit together, so neither exists)."""
        state = {"now": 0, "carries_record": operator_override, "began": False}

        def job(w: WriteView) -> _R:
            state["began"] = True
            # "now" is read under the write lock: the windows it defines hold
            # for the whole decision and commit.
            now = state["now"] = self.now_in(w)
            decision = decide(w, now)
            if isinstance(decision, Rejection):
                raise _Refused(decision)
            record = decision.override_record
            if record is not None:
                state["carries_record"] = True
                self._persist_record(w, record)
            result = apply(w, decision, now)
            # "Now" never moves backwards, restarts included: the clock's
            # floor is the latest instant a write acted on.
            w.note_acted_at(now, channel_id)
            return result

        try:
            if validate is not None:
                validate()
            return self._run_write(rpc, job, after_commit, channel_id)
        except _Refused as refused:
            if not dry_run:  # a dry run attempts no change: nothing to log
                self._log(refused.rejection, rpc, channel_id, operator_override, principal, state["now"])
            return refused.rejection
        except MalformedRequest as exc:
            if not dry_run:
                log_malformed(rpc, channel_id, exc, operator_override, principal)
            raise
        except StoreError as exc:
            # A store that could not even begin the write (unreachable) is
            # UNAVAILABLE for every write: nothing was attempted.
            if not state["carries_record"] or not state["began"]:
                raise
            rejection = _persist_failed(exc)
            self._log(rejection, rpc, channel_id, operator_override, principal, state["now"])
            return rejection

    # -- channels -------------------------------------------------------------

    def declare_channel(
        self,
        channel_id: str,
        locked_window_ms: int,
        reason_code: str,
        principal: str,
        actor_note: str,
        metadata: Mapping[str, str] | None = None,
    ) -> DeclareOutcome:
        """`metadata`: the guide fields the declaration sets (the others keep
        their value). A metadata change writes no override record (it changes
        no air) but is logged once committed."""

        def decide(w: WriteView, now: int) -> channel_rules.DeclarePlan:
            in_use = (
                {guide_id_of(c): c.channel_id for c in w.list_channels() if c.channel_id != channel_id}
                if metadata is not None or w.get_channel(channel_id) is None
                else {}
            )
            return channel_rules.decide_declare(
                channel_id,
                locked_window_ms,
                w.get_channel(channel_id),
                now,
                new_id(),
                reason_code,
                principal,
                actor_note,
                metadata,
                in_use,
            )

        def apply(w: WriteView, plan: channel_rules.DeclarePlan, now: int) -> channel_rules.DeclarePlan:
            if plan.created:
                w.insert_channel(plan.channel)
                return plan
            if plan.override_record is not None:
                w.update_channel_locked_window(channel_id, locked_window_ms)
            if plan.metadata_change is not None:
                w.update_channel_metadata(channel_id, plan.channel.metadata)
            return plan

        outcome = self._write(
            "DeclareChannel",
            channel_id,
            False,
            principal,
            decide,
            apply,
            lambda: channel_rules.validate_declare(channel_id, locked_window_ms, metadata),
        )
        if isinstance(outcome, Rejection):
            existing = self.get_channel(channel_id)
            return DeclareOutcome(existing or Channel(channel_id, locked_window_ms), False, "", outcome)
        if outcome.metadata_change is not None:
            log_metadata_change(channel_id, principal, *outcome.metadata_change, created=outcome.created)
        if outcome.changed:
            for listener in self._channel_listeners:
                listener(outcome.channel)
        record_id = outcome.override_record.id if outcome.override_record else ""
        return DeclareOutcome(outcome.channel, outcome.changed, record_id)

    def get_channel(self, channel_id: str) -> Channel | None:
        with self.store.read() as r:
            return r.get_channel(channel_id)

    def list_channels(self) -> list[Channel]:
        with self.store.read() as r:
            return r.list_channels()

    # -- execution window writes -------------------------------------------------

    def publish(self, request: PublishRequest, validate_only: bool = False) -> PublishOutcome:
        def validate() -> None:
            validation.validate_publish(
                request.channel_id,
                request.range_start_utc_ms,
                request.range_end_utc_ms,
                request.entries,
                request.operator_override,
                request.reason_code,
                self.max_entries_per_publish,
            )

        def decide(w: WriteView, now: int) -> PublishPlan | Rejection:
            c = request.channel_id
            rs, re_ = request.range_start_utc_ms, request.range_end_utc_ms
            channel = w.get_channel(c)
            if channel is None:
                return decide_publish(request, PublishFacts(None), now, "")
            affected = tuple(w.entry_spans_overlapping(c, rs, re_))
            facts = PublishFacts(
                channel=channel,
                affected=affected,
                spanning_range_start=(
                    w.entry_at(c, rs) if affected and affected[0].start_utc_ms < rs else None
                ),
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

        return self._write_publish(
            "PublishAtomicReplace", request.channel_id, request, decide, validate, validate_only
        )

    def replace_entry(self, request: ReplaceEntryRequest, validate_only: bool = False) -> PublishOutcome:
        def validate() -> None:
            validation.validate_replace_entry(
                request.channel_id,
                request.block_id,
                request.entry,
                request.operator_override,
                request.reason_code,
            )

        def decide(w: WriteView, now: int) -> PublishPlan | Rejection:
            c = request.channel_id
            facts = ReplaceEntryFacts(
                channel=w.get_channel(c),
                existing=w.current_span(c, request.block_id),
                dates_with_schedule_day=w.dates_with_schedule_day(c, [request.entry.programming_day_date]),
            )
            return decide_replace_entry(request, facts, now, new_id())

        return self._write_publish(
            "ReplaceEntry", request.channel_id, request, decide, validate, validate_only
        )

    def _write_publish(
        self,
        rpc: str,
        channel_id: str,
        request: PublishRequest | ReplaceEntryRequest,
        decide: Callable[[WriteView, int], PublishPlan | Rejection],
        validate: Callable[[], None],
        validate_only: bool = False,
    ) -> PublishOutcome:
        def apply(w: WriteView, plan: PublishPlan, now: int) -> PublishRecord:
            committed = w.apply_publish(plan)
            if self.event_encoder is not None:
                committed = self._encoded_within_limit(committed)
            if validate_only:
                # Every check has run, the store's included: undo it all.
                raise _DryRunDone(DryRun(plan, committed))
            if self.history_retention_publishes:
                w.prune_history(channel_id, self.history_retention_publishes)
            return committed

        def tell_listeners(committed: PublishRecord) -> None:
            # Runs right after the commit, in commit order: subscribers hear of
            # publishes in generation order.
            for listener in self._publish_listeners:
                listener(committed)

        try:
            outcome = self._write(
                rpc,
                channel_id,
                request.operator_override,
                request.actor,
                decide,
                apply,
                validate,
                tell_listeners,
                dry_run=validate_only,
            )
        except _DryRunDone as done:
            plan = done.dry_run.plan
            return PublishOutcome(True, plan.generation_id, dry_run=done.dry_run)
        if isinstance(outcome, Rejection):
            return PublishOutcome(False, rejection=outcome)
        return PublishOutcome(True, outcome.generation_id, outcome.override_record_id)

    def _encoded_within_limit(self, committed: PublishRecord) -> PublishRecord:
        """The publish's watch event, serialized once for every subscriber; a
        publish whose event no watcher could receive is malformed (SPEC section 6)."""
        assert self.event_encoder is not None
        encoded = self.event_encoder(committed)
        if self.max_event_bytes and len(encoded) > self.max_event_bytes:
            raise MalformedRequest(
                [
                    FieldViolation(
                        "entries",
                        f"the publish's watch event would be {len(encoded)} bytes, above the server's "
                        f"message limit of {self.max_event_bytes} bytes: no watcher could receive it; "
                        "split it into several publishes of smaller ranges",
                    )
                ]
            )
        return dataclasses.replace(committed, encoded_event=encoded)

    def _run_write(
        self,
        operation: str,
        fn: Callable[[WriteView], _R],
        after_commit: Callable[[_R], None] | None = None,
        channel_id: str = "",
    ) -> _R:
        """fn in a store write serialized with the channel's other writes, timed
        for the commit-latency metric; a write whose caller's deadline passed
        while it waited gives up unchanged, so a caller told DEADLINE_EXCEEDED
        never finds it committed."""
        deadline = call_deadline.get()

        def within_deadline(w: WriteView) -> _R:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{operation}: the deadline passed before the write could start")
            return fn(w)

        with metrics.store_commit(operation):
            return self.store.run_write(within_deadline, after_commit, channel_id)

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
            now = self.now_in(r)
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            return Snapshot(channel, r.stored_overlapping(channel_id, start_utc_ms, end_utc_ms), now)

    def read_window_page(
        self, channel_id: str, start_utc_ms: int, end_utc_ms: int, cursor: PageCursor | None, limit: int
    ) -> tuple[Snapshot, bool]:
        """One page of a paged read (AIP-158) and whether more entries follow.
        Every page is read at the generation the first page saw (WindowChanged)."""
        with self.store.read() as r:
            now = self.now_in(r)
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            if cursor is not None and cursor.channel_generation_id != channel.current_generation_id:
                raise WindowChanged(channel_id, cursor.channel_generation_id, channel.current_generation_id)
            after = cursor.after_start_utc_ms if cursor is not None else None
            entries = r.stored_overlapping_page(channel_id, start_utc_ms, end_utc_ms, after, limit + 1)
        return Snapshot(channel, entries[:limit], now), len(entries) > limit

    def snapshot_from_now(self, channel_id: str, page: int = 1000) -> Snapshot:
        """The entries that end after now, read in one consistent snapshot."""
        with self.store.read() as r:
            now = self.now_in(r)
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            entries: list[StoredEntry] = []
            after: int | None = None
            while True:
                batch = r.stored_ending_after(channel_id, now, after, page)
                entries.extend(batch)
                if len(batch) < page:
                    return Snapshot(channel, entries, now)
                after = batch[-1].start_utc_ms

    def entry_at(self, channel_id: str, at_utc_ms: int, include_flexible: bool) -> StoredEntry | None:
        with self.store.read() as r:
            now = self.now_in(r)
            channel = r.get_channel(channel_id)
            if channel is None:
                raise UnknownChannel(channel_id)
            entry = r.stored_entry_at(channel_id, at_utc_ms)
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

    def force_regenerate(
        self, day: ScheduleDay, reason_code: str, principal: str, note: str, caller_is_operator: bool = False
    ) -> DayOutcome:
        return self._write_day(
            day_rules.DayWrite.FORCE_REGENERATE, day, reason_code, principal, note, caller_is_operator
        )

    def operator_override_day(
        self, day: ScheduleDay, reason_code: str, principal: str, note: str
    ) -> DayOutcome:
        return self._write_day(day_rules.DayWrite.OPERATOR_OVERRIDE, day, reason_code, principal, note)

    def update_schedule_day(self, day: ScheduleDay, principal: str) -> DayOutcome:
        rejection = day_rules.update_refused(day)
        self._log(rejection, "UpdateScheduleDay", day.channel_id, False, principal)
        return DayOutcome(False, rejection=rejection)

    def _write_day(
        self,
        write: str,
        day: ScheduleDay,
        reason_code: str,
        principal: str,
        note: str,
        caller_is_operator: bool = False,
    ) -> DayOutcome:
        override = write == day_rules.DayWrite.OPERATOR_OVERRIDE

        def decide(w: WriteView, now: int) -> day_rules.DayPlan | Rejection:
            known = w.get_channel(day.channel_id) is not None
            current = w.authoritative_day(day.channel_id, day.programming_day_date)
            if write == day_rules.DayWrite.STORE:
                return day_rules.decide_store(day, known, current, new_id(), now)
            if write == day_rules.DayWrite.FORCE_REGENERATE:
                return day_rules.decide_force_regenerate(
                    day,
                    known,
                    current,
                    new_id(),
                    now,
                    caller_is_operator=caller_is_operator,
                    record_id=new_id(),
                    reason_code=reason_code,
                    actor=principal,
                    actor_note=note,
                )
            return day_rules.decide_operator_override(
                day, known, current, new_id(), new_id(), now, reason_code, principal, note
            )

        def apply(w: WriteView, plan: day_rules.DayPlan, now: int) -> day_rules.DayPlan:
            w.insert_schedule_day(plan.day, plan.superseded.id if plan.superseded else "")
            return plan

        try:
            outcome = self._write(
                write,
                day.channel_id,
                override,
                principal,
                decide,
                apply,
                lambda: day_rules.validate_schedule_day(day, write, reason_code),
            )
        except day_rules.OperatorRoleRequired as refused:
            log_rejection(
                write,
                day.channel_id,
                Rejection(
                    ErrorCode.SCHEDULE_DAY_IMMUTABLE,
                    str(refused),
                    Evidence(programming_day_date=day.programming_day_date),
                ),
                override,
                principal,
                self.clock.now_utc_ms(),
            )
            raise
        if isinstance(outcome, Rejection):
            return DayOutcome(False, rejection=outcome)
        record_id = outcome.override_record.id if outcome.override_record else ""
        return DayOutcome(True, outcome.day, record_id)

    def get_schedule_day(self, channel_id: str, date: str) -> ScheduleDay | None:
        with self.store.read() as r:
            return r.authoritative_day(channel_id, date)

    def schedule_day_history(self, channel_id: str, date: str) -> list[ScheduleDay]:
        with self.store.read() as r:
            return r.schedule_day_history(channel_id, date)

    # -- now, and the manual clock --------------------------------------------------

    def now_in(self, view: ReadView) -> int:
        """Now, for a decision or a read made in `view`. On a store replicas
        share, the manual clock lives in the store: a move made on another
        replica counts at once, not when its notification arrives."""
        now = self.clock.now_utc_ms()
        if self._clock_in_store:
            stored = view.manual_clock_utc_ms()
            if stored is not None and stored > now:
                now = cast(ManualClock, self.clock).advance_to(stored)
        return now

    def manual_now(self) -> int:
        """The manual clock's time, as every replica sees it."""
        if not self._clock_in_store:
            return self.clock.now_utc_ms()
        with self.store.read() as r:
            return self.now_in(r)

    def move_manual_clock(self, target: Callable[[int], int]) -> int:
        """Moves the manual clock to target(current) (which refuses a move
        backwards), saved in the store before the clock moves, so that it
        never goes back, restarts and other replicas included. Moves take
        turns in the store: two replicas cannot both move from the same time."""

        def move(w: WriteView) -> int:
            # The stored time too: a move committed in the same group commit
            # (SQLite) is in the store before the clock object hears of it.
            now = target(max(self.now_in(w), w.manual_clock_utc_ms() or 0))
            w.save_manual_clock_utc_ms(now)
            w.note_acted_at(now)
            return now

        now = self._run_write("manual_clock", move, channel_id=CLOCK_KEY)
        # (A later move of the same batch may have advanced it further: this
        # move's answer is the time it moved to.)
        cast(ManualClock, self.clock).advance_to(now)
        return now

    def note_acted_at(self, now_utc_ms: int) -> None:
        """Keeps `now_utc_ms` as the clock's floor (clean shutdown)."""
        self._run_write("clock_floor", lambda w: w.note_acted_at(now_utc_ms))

    # -- watching ------------------------------------------------------------------

    def publishes_after(
        self, channel_id: str, after_generation_id: int, limit: int
    ) -> tuple[int, Sequence[PublishRecord]]:
        """(history floor, publishes after the generation) in one snapshot."""
        with self.store.read() as r:
            return r.history_floor(channel_id), r.publishes_after(channel_id, after_generation_id, limit)
