"""The five services of playlog.v1: thin translations between protobuf and the
application layer (app.service.Playlog), whose blocking store calls run on a
thread pool so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from playlog import metrics, wire
from playlog.api import Context, convert
from playlog.api.errors import NotFound, WriteRefused
from playlog.app.service import DayOutcome, Playlog, PublishOutcome
from playlog.auth import Role, current_principal
from playlog.clock import ClockNotAdjustable, ManualClock, SystemClock, TimeMovesForwardOnly
from playlog.domain import paging
from playlog.domain.publish import PublishRequest, ReplaceEntryRequest
from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import check_date, check_id, quote, raise_if_any
from playlog.events import emit
from playlog.v1 import (
    audit_service_pb2 as audit_pb,
)
from playlog.v1 import (
    audit_service_pb2_grpc as audit_grpc,
)
from playlog.v1 import (
    channel_service_pb2 as channel_pb,
)
from playlog.v1 import (
    channel_service_pb2_grpc as channel_grpc,
)
from playlog.v1 import (
    clock_service_pb2 as clock_pb,
)
from playlog.v1 import (
    clock_service_pb2_grpc as clock_grpc,
)
from playlog.v1 import (
    execution_window_service_pb2 as ew_pb,
)
from playlog.v1 import (
    execution_window_service_pb2_grpc as ew_grpc,
)
from playlog.v1 import (
    schedule_day_service_pb2 as day_pb,
)
from playlog.v1 import (
    schedule_day_service_pb2_grpc as day_grpc,
)
from playlog.v1 import types_pb2 as pb

T = TypeVar("T")

log = logging.getLogger("playlog.api")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class _Base:
    def __init__(self, playlog: Playlog, executor: ThreadPoolExecutor) -> None:
        self.playlog = playlog
        self._executor = executor

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Runs a blocking call on the store's threads, with this call's context
        (principal, deadline)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, functools.partial(context.run, fn, *args))

    async def read(self, small: bool, fn: Callable[..., T], *args: object) -> T:
        """A read: a small one on the embedded store runs right here on the
        event loop (an indexed SQLite read of a day's entries takes less time
        than the hand-off to a thread and back); others on the store's threads."""
        if small and self.playlog.store.inline_reads:
            return fn(*args)
        return await self.run(fn, *args)


# A read of at most this span is small enough to run on the event loop.
SMALL_READ_MS = 86_400_000


def _principal() -> str:
    return current_principal.get().name


def _publish_result(outcome: PublishOutcome, rpc: str, override: bool) -> pb.PublishResult:
    if outcome.dry_run is not None:
        # What the write would do; nothing was written, nothing is counted.
        dry = outcome.dry_run
        return convert.dry_run_result(dry.plan.generation_id, dry.plan.superseded, dry.record.payloads)
    if outcome.rejection is not None:
        metrics.REJECTIONS.labels(rpc, outcome.rejection.code.value).inc()
    else:
        metrics.PUBLISHES.labels(rpc, str(override).lower()).inc()
        if override:
            metrics.OVERRIDES.labels("EXECUTION_WINDOW").inc()
    return convert.publish_result(
        outcome.ok, outcome.generation_id, outcome.override_record_id, outcome.rejection
    )


class ChannelServicer(_Base, channel_grpc.ChannelServiceServicer):
    async def DeclareChannel(
        self, request: channel_pb.DeclareChannelRequest, context: Context
    ) -> channel_pb.DeclareChannelResponse:
        outcome = await self.run(
            self.playlog.declare_channel,
            request.channel_id,
            request.locked_window_ms,
            request.reason_code,
            _principal(),
            request.actor,
            convert.metadata_update(request),
        )
        if outcome.rejection is not None:
            # DeclareChannelResponse has no result fields: the refusal (only a
            # failed override record can refuse a declaration) is a status.
            metrics.REJECTIONS.labels("DeclareChannel", outcome.rejection.code.value).inc()
            raise WriteRefused(outcome.rejection)
        if outcome.override_record_id:
            metrics.OVERRIDES.labels("CHANNEL").inc()
        return channel_pb.DeclareChannelResponse(
            channel=convert.channel_to_pb(outcome.channel),
            override_record_id=outcome.override_record_id,
            changed=outcome.changed,
        )

    async def GetChannel(
        self, request: channel_pb.GetChannelRequest, context: Context
    ) -> channel_pb.GetChannelResponse:
        channel = await self.run(self.playlog.get_channel, request.channel_id)
        if channel is None:
            raise NotFound(f"channel {quote(request.channel_id)} is not declared")
        return channel_pb.GetChannelResponse(channel=convert.channel_to_pb(channel))

    async def ListChannels(
        self, request: channel_pb.ListChannelsRequest, context: Context
    ) -> channel_pb.ListChannelsResponse:
        channels = await self.run(self.playlog.list_channels)
        return channel_pb.ListChannelsResponse(channels=[convert.channel_to_pb(c) for c in channels])


class ExecutionWindowServicer(_Base, ew_grpc.ExecutionWindowServiceServicer):
    def __init__(
        self,
        playlog: Playlog,
        executor: ThreadPoolExecutor,
        watch: WatchHandler,
        max_answer_bytes: int = 4 * 1024 * 1024 - 1024,
    ) -> None:
        super().__init__(playlog, executor)
        self._watch = watch
        # What one answer's entries may take (below max_message_bytes).
        self._max_answer_bytes = max_answer_bytes

    async def PublishAtomicReplace(
        self, request: ew_pb.PublishAtomicReplaceRequest, context: Context
    ) -> pb.PublishResult:
        domain_request = PublishRequest(
            channel_id=request.channel_id,
            range_start_utc_ms=request.range_start_utc_ms,
            range_end_utc_ms=request.range_end_utc_ms,
            entries=tuple(convert.entry_from_pb(e) for e in request.entries),
            generation_id=request.generation_id,
            reason_code=request.reason_code,
            operator_override=request.operator_override,
            actor=_principal(),
            actor_note=request.actor,
        )
        outcome = await self.run(self.playlog.publish, domain_request, request.validate_only)
        return _publish_result(outcome, "PublishAtomicReplace", request.operator_override)

    async def ReplaceEntry(self, request: ew_pb.ReplaceEntryRequest, context: Context) -> pb.PublishResult:
        if not request.HasField("entry"):
            raise MalformedRequest([FieldViolation("entry", "required")])
        domain_request = ReplaceEntryRequest(
            channel_id=request.channel_id,
            block_id=request.block_id,
            entry=convert.entry_from_pb(request.entry),
            operator_override=request.operator_override,
            reason_code=request.reason_code,
            actor=_principal(),
            actor_note=request.actor,
        )
        outcome = await self.run(self.playlog.replace_entry, domain_request, request.validate_only)
        return _publish_result(outcome, "ReplaceEntry", request.operator_override)

    async def ReadWindowSnapshot(  # type: ignore[override]  # answers stored bytes
        self, request: ew_pb.ReadWindowSnapshotRequest, context: Context
    ) -> bytes:
        channel_id, start, end = request.channel_id, request.start_utc_ms, request.end_utc_ms
        _check_read_range(channel_id, start, end)
        size = paging.page_size(request.page_size)
        cursor = (
            paging.decode_page_token(request.page_token, channel_id, start, end)
            if request.page_token
            else None
        )
        small = end - start <= SMALL_READ_MS
        if size == 0 and cursor is None:
            # Unpaged: the whole range, or a refusal that says how to page it.
            snap = await self.read(small, self.playlog.read_window, channel_id, start, end)
            payloads = [e.payload for e in snap.entries]
            total = sum(map(len, payloads)) + 6 * len(payloads)  # each with its tag and length
            if total > self._max_answer_bytes:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the {len(payloads)} entries of this range take about {total} bytes, more than one "
                    f"answer may carry ({self._max_answer_bytes}, max_message_bytes); ask with page_size "
                    f"(at most {paging.MAX_WINDOW_PAGE_SIZE}) and follow next_page_token",
                )
            next_token = ""
        else:
            limit = size or paging.MAX_WINDOW_PAGE_SIZE
            snap, more = await self.read(
                small, self.playlog.read_window_page, channel_id, start, end, cursor, limit
            )
            payloads, used = [], 0
            for e in snap.entries:
                used += len(e.payload) + 6  # the field's tag and length
                if payloads and used > self._max_answer_bytes:
                    more = True  # the rest goes on the next page
                    break
                payloads.append(e.payload)
            snap.entries[len(payloads) :] = []
            next_token = ""
            if more:
                generation = cursor.channel_generation_id if cursor else snap.channel.current_generation_id
                last = snap.entries[-1].start_utc_ms
                next_token = paging.encode_page_token(
                    channel_id, start, end, paging.PageCursor(generation, last)
                )
        # The entries' stored wire forms, sent as they are (no decode, no encode).
        header = pb.WindowSnapshot(
            channel_id=snap.channel.channel_id,
            generation_id=snap.generation_id,
            channel_generation_id=snap.channel.current_generation_id,
            now_utc_ms=snap.now_utc_ms,
            locked_until_utc_ms=snap.locked_until_utc_ms,
            next_page_token=next_token,
        )
        return wire.window_snapshot(header, payloads)

    async def GetEntryAt(  # type: ignore[override]  # answers stored bytes
        self, request: ew_pb.GetEntryAtRequest, context: Context
    ) -> ew_pb.GetEntryAtResponse | bytes:
        if not request.channel_id:
            raise MalformedRequest([FieldViolation("channel_id", "required")])
        entry = await self.read(
            True, self.playlog.entry_at, request.channel_id, request.at_utc_ms, request.include_flexible
        )
        if entry is None:
            return ew_pb.GetEntryAtResponse(found=False)
        return wire.entry_found(entry.payload)

    async def WatchWindow(  # type: ignore[override]  # writes its events with context.write
        self, request: ew_pb.WatchWindowRequest, context: Context
    ) -> None:
        await self._watch(request, context)


WatchHandler = Callable[[ew_pb.WatchWindowRequest, Context], Awaitable[None]]


def _check_read_range(channel_id: str, start: int, end: int) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    if start >= end:
        out.append(FieldViolation("end_utc_ms", f"must be after start_utc_ms ({start}), got {end}"))
    raise_if_any(out)


class ScheduleDayServicer(_Base, day_grpc.ScheduleDayServiceServicer):
    def _result(self, outcome: DayOutcome, rpc: str) -> pb.ScheduleDayResult:
        if outcome.rejection is not None:
            metrics.REJECTIONS.labels(rpc, outcome.rejection.code.value).inc()
            return pb.ScheduleDayResult(
                ok=False,
                error_code=convert.error_code_to_pb(outcome.rejection.code),
                error_detail=outcome.rejection.detail,
            )
        assert outcome.day is not None
        if outcome.override_record_id:
            metrics.OVERRIDES.labels("SCHEDULE_DAY").inc()
        return pb.ScheduleDayResult(
            ok=True,
            schedule_day=convert.schedule_day_to_pb(outcome.day),
            override_record_id=outcome.override_record_id,
        )

    async def _write(
        self,
        rpc: str,
        fn: Callable[..., DayOutcome],
        request: day_pb.StoreScheduleDayRequest
        | day_pb.ForceRegenerateRequest
        | day_pb.OperatorOverrideRequest,
    ) -> pb.ScheduleDayResult:
        day = convert.schedule_day_from_pb(request.schedule_day)
        outcome = await self.run(fn, day, request.reason_code, _principal(), request.actor)
        return self._result(outcome, rpc)

    async def StoreScheduleDay(
        self, request: day_pb.StoreScheduleDayRequest, context: Context
    ) -> pb.ScheduleDayResult:
        return await self._write("StoreScheduleDay", self.playlog.store_schedule_day, request)

    async def ForceRegenerate(
        self, request: day_pb.ForceRegenerateRequest, context: Context
    ) -> pb.ScheduleDayResult:
        day = convert.schedule_day_from_pb(request.schedule_day)
        # Over an operator's override day this needs the operator role, known
        # only once the store says who made the day (SPEC section 7).
        caller = current_principal.get()
        outcome = await self.run(
            self.playlog.force_regenerate,
            day,
            request.reason_code,
            caller.name,
            request.actor,
            caller.has(Role.OPERATOR),
        )
        return self._result(outcome, "ForceRegenerate")

    async def OperatorOverride(
        self, request: day_pb.OperatorOverrideRequest, context: Context
    ) -> pb.ScheduleDayResult:
        return await self._write("OperatorOverride", self.playlog.operator_override_day, request)

    async def UpdateScheduleDay(
        self, request: day_pb.UpdateScheduleDayRequest, context: Context
    ) -> pb.ScheduleDayResult:
        day = convert.schedule_day_from_pb(request.schedule_day)
        outcome = await self.run(self.playlog.update_schedule_day, day, _principal())
        return self._result(outcome, "UpdateScheduleDay")

    async def GetScheduleDay(
        self, request: day_pb.GetScheduleDayRequest, context: Context
    ) -> day_pb.GetScheduleDayResponse:
        _check_day_key(request.channel_id, request.programming_day_date)
        day = await self.run(self.playlog.get_schedule_day, request.channel_id, request.programming_day_date)
        if day is None:
            raise NotFound(
                f"channel {quote(request.channel_id)} has no ScheduleDay for {request.programming_day_date}"
            )
        return day_pb.GetScheduleDayResponse(schedule_day=convert.schedule_day_to_pb(day))

    async def ListScheduleDayHistory(
        self, request: day_pb.ListScheduleDayHistoryRequest, context: Context
    ) -> day_pb.ListScheduleDayHistoryResponse:
        _check_day_key(request.channel_id, request.programming_day_date)
        days = await self.run(
            self.playlog.schedule_day_history, request.channel_id, request.programming_day_date
        )
        return day_pb.ListScheduleDayHistoryResponse(
            schedule_days=[convert.schedule_day_to_pb(d) for d in days]
        )


def _check_day_key(channel_id: str, date: str) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    check_date(date, "programming_day_date", out)
    raise_if_any(out)


class AuditServicer(_Base, audit_grpc.AuditServiceServicer):
    async def ListOverrideRecords(
        self, request: audit_pb.ListOverrideRecordsRequest, context: Context
    ) -> audit_pb.ListOverrideRecordsResponse:
        if request.page_size < 0:  # api.limits refuses it first; kept for direct callers
            raise MalformedRequest([FieldViolation("page_size", f"must be >= 0, got {request.page_size}")])
        # AIP-158: a page size above the maximum is clamped, not refused.
        size = min(request.page_size, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        after = _decode_page_token(request.page_token, request.channel_id)
        rows = await self.run(self.playlog.list_override_records, request.channel_id, after, size + 1)
        page, more = rows[:size], len(rows) > size
        return audit_pb.ListOverrideRecordsResponse(
            records=[convert.override_record_to_pb(r) for _, r in page],
            next_page_token=_encode_page_token(page[-1][0], request.channel_id) if more else "",
        )

    async def GetOverrideRecord(
        self, request: audit_pb.GetOverrideRecordRequest, context: Context
    ) -> audit_pb.GetOverrideRecordResponse:
        if not request.id:
            raise MalformedRequest([FieldViolation("id", "required")])
        record = await self.run(self.playlog.get_override_record, request.id)
        if record is None:
            raise NotFound(f"no override record with id {quote(request.id)}")
        return audit_pb.GetOverrideRecordResponse(record=convert.override_record_to_pb(record))

    async def VerifyIntegrity(
        self, request: audit_pb.VerifyIntegrityRequest, context: Context
    ) -> audit_pb.VerifyIntegrityResponse:
        findings = await self.run(self.playlog.verify_integrity, request.channel_id)
        return audit_pb.VerifyIntegrityResponse(
            violations=[
                audit_pb.IntegrityViolation(
                    kind=f"INTEGRITY_VIOLATION_KIND_{f.kind}",
                    channel_id=f.channel_id,
                    detail=f.detail,
                )
                for f in findings
            ]
        )


# Page tokens are opaque: a version, the numbers of the cursor (the last
# row seen) and the scope they were issued for (the request's filters), with
# a checksum so that an edited token is refused instead of read. (The key is
# no secret: the checksum catches edits and mix-ups between RPCs and filters;
# the numbers are range-checked as well.)
_PAGE_TOKEN_VERSION = 1
_PAGE_TOKEN_KEY = b"playlog.v1.AuditService.ListOverrideRecords page token\x00"
_PAGE_TOKEN_CHECKSUM_BYTES = 8
_PAGE_TOKEN_MAX_CHARS = 512  # a token this server issues is under 200
_MAX_SEQ = 2**53 - 1


def _page_token_checksum(key: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(key + payload).digest()[:_PAGE_TOKEN_CHECKSUM_BYTES]


def encode_cursor(key: bytes, numbers: tuple[int, ...], scope: str) -> str:
    payload = bytes([_PAGE_TOKEN_VERSION]) + b"".join(n.to_bytes(8, "big") for n in numbers) + scope.encode()
    return base64.urlsafe_b64encode(payload + _page_token_checksum(key, payload)).decode()


def decode_cursor(
    key: bytes, token: str, count: int, scope: str, issued_for: str = "this request's filters"
) -> tuple[int, ...] | None:
    """The cursor a page token continues after (None: from the start);
    MalformedRequest if this server did not issue it for this scope."""
    if not token:
        return None
    try:
        if len(token) > _PAGE_TOKEN_MAX_CHARS:
            raise ValueError
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if base64.urlsafe_b64encode(raw).decode() != token:  # only the form this server writes
            raise ValueError
    except ValueError:  # incl. binascii.Error and UnicodeEncodeError
        raw = b""
    payload, checksum = raw[:-_PAGE_TOKEN_CHECKSUM_BYTES], raw[-_PAGE_TOKEN_CHECKSUM_BYTES:]
    width = 1 + 8 * count
    if (
        len(payload) >= width
        and payload[0] == _PAGE_TOKEN_VERSION
        and hmac.compare_digest(checksum, _page_token_checksum(key, payload))
        and payload[width:] == scope.encode()
    ):
        numbers = tuple(int.from_bytes(payload[1 + 8 * i : 9 + 8 * i], "big") for i in range(count))
        if all(0 <= n <= _MAX_SEQ for n in numbers):
            return numbers
    raise MalformedRequest(
        [
            FieldViolation(
                "page_token", f"not a token this server issued for {issued_for}: pass next_page_token as is"
            )
        ]
    )


def _encode_page_token(seq: int, channel_id: str) -> str:
    return encode_cursor(_PAGE_TOKEN_KEY, (seq,), channel_id)


def _decode_page_token(token: str, channel_id: str) -> int:
    """The seq a page token continues after (0: from the start)."""
    cursor = decode_cursor(_PAGE_TOKEN_KEY, token, 1, channel_id, "this channel_id")
    return 0 if cursor is None else cursor[0]


class ClockServicer(_Base, clock_grpc.ClockServiceServicer):
    """The manual clock's controls. A move is saved in the store before the
    clock moves, so the clock never goes back, not even across a restart."""

    def __init__(
        self, clock: ManualClock | SystemClock, playlog: Playlog, executor: ThreadPoolExecutor
    ) -> None:
        super().__init__(playlog, executor)
        self.clock = clock

    def _manual(self) -> ManualClock:
        if not isinstance(self.clock, ManualClock):
            # SPEC section 1: the clock service is for the manual clock only.
            raise ClockNotAdjustable("the server runs on the system clock; ClockService needs --clock manual")
        return self.clock

    async def GetTime(self, request: clock_pb.GetTimeRequest, context: Context) -> clock_pb.GetTimeResponse:
        self._manual()
        if self.playlog.store.shared:
            # Replicas share the manual clock through the store.
            now = await self.run(self.playlog.manual_now)
        else:
            now = self.playlog.manual_now()
        return clock_pb.GetTimeResponse(now_utc_ms=now, manual=True)

    async def _move(self, rpc: str, target: Callable[[ManualClock, int], int]) -> int:
        clock = self._manual()

        def checked(current: int) -> int:
            try:
                return target(clock, current)
            except TimeMovesForwardOnly as refused:
                emit(
                    log,
                    logging.WARNING,
                    "clock_move_refused",
                    rpc=rpc,
                    principal=_principal(),
                    now_utc_ms=current,
                    reason=str(refused),
                )
                raise

        return int(await self.run(self.playlog.move_manual_clock, checked))

    async def SetTime(self, request: clock_pb.SetTimeRequest, context: Context) -> clock_pb.SetTimeResponse:
        now = await self._move("SetTime", lambda clock, now: clock.check_target(request.now_utc_ms, now))
        return clock_pb.SetTimeResponse(now_utc_ms=now)

    async def AdvanceTime(
        self, request: clock_pb.AdvanceTimeRequest, context: Context
    ) -> clock_pb.AdvanceTimeResponse:
        now = await self._move("AdvanceTime", lambda clock, now: clock.advance_target(request.delta_ms, now))
        return clock_pb.AdvanceTimeResponse(now_utc_ms=now)
