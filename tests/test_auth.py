"""Who may do what (SPEC section 9; issue 5): bearer tokens from the auth file,
the role of every RPC of playlog.v1 enforced by the one interceptor before any
servicer code runs, refusals that change nothing and are logged, revocation by
editing the auth file, and the authenticated principal as the actor of record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from playlog import auth
from playlog.clock import ManualClock
from playlog.v1 import (
    audit_service_pb2,
    channel_service_pb2,
    clock_service_pb2,
    engine_service_pb2,
    execution_window_service_pb2,
    guide_service_pb2,
    schedule_day_service_pb2,
)
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import guide_service_pb2 as gd
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, date_of, day_of_entries, entry, schedule_day
from tests.conftest import Running, Stubs, ViolationCapture, make_stubs, start_server

Metadata = tuple[tuple[str, str], ...]

CH = "ch1"
LOCK = HOUR
DAY1 = T0 + DAY  # published in the setup (flexible at T0)
DAY2 = T0 + 2 * DAY  # has a ScheduleDay, no entries
DAY3 = T0 + 3 * DAY  # nothing
DATES = [date_of(d) for d in (T0, DAY1, DAY2, DAY3)]

READER, SCHEDULER, ENGINE, OPERATOR = "reader-1", "scheduler-1", "engine-1", "operator-1"
ROLES = {READER: ["reader"], SCHEDULER: ["scheduler"], ENGINE: ["engine"], OPERATOR: ["operator"]}
NO_TOKEN, WRONG_TOKEN = "<no token>", "<wrong token>"
CALLERS = [NO_TOKEN, WRONG_TOKEN, READER, SCHEDULER, ENGINE, OPERATOR]
# SPEC section 9, written out independently of auth.GRANTS: the RPC roles
# each caller may use. Not a ladder: an engine cannot publish, a scheduler
# cannot report as-run.
MAY_USE = {
    READER: {"reader"},
    SCHEDULER: {"reader", "scheduler"},
    ENGINE: {"reader", "engine"},
    OPERATOR: {"reader", "scheduler", "engine", "operator"},
}


# -- the auth file ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Principal:
    name: str
    roles: list[str]
    token: str = ""
    cert_subject: str = ""


def auth_file_text(principals: Iterable[Principal]) -> str:
    out = []
    for p in principals:
        out.append("[[principal]]")
        out.append(f'name = "{p.name}"')
        out.append("roles = [" + ", ".join(f'"{r}"' for r in p.roles) + "]")
        if p.token:
            out.append(f'token_sha256 = "{auth.hash_token(p.token)}"')
        if p.cert_subject:
            out.append("cert_subject = '" + p.cert_subject + "'")
        out.append("")
    return "\n".join(out)


def write_auth_file(path: Path, principals: Iterable[Principal]) -> Path:
    """Written next to the file and renamed over it, as an operator should."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(auth_file_text(principals))
    os.replace(tmp, path)
    return path


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def details(error: grpc.aio.AioRpcError) -> str:
    return error.details() or ""


@dataclasses.dataclass
class Authed:
    r: Running
    auth_path: Path
    principals: dict[str, Principal]

    def md(self, caller: str) -> Metadata:
        if caller == NO_TOKEN:
            return ()
        if caller == WRONG_TOKEN:
            return bearer(auth.new_token())
        return bearer(self.principals[caller].token)

    @property
    def stubs(self) -> Stubs:
        return self.r.stubs

    @property
    def op(self) -> Metadata:
        return self.md(OPERATOR)


def standard_principals() -> dict[str, Principal]:
    return {name: Principal(name, roles, token=auth.new_token()) for name, roles in ROLES.items()}


@pytest.fixture
async def authed(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Authed]:
    principals = standard_principals()
    path = write_auth_file(tmp_path / "auth.toml", principals.values())
    r = await start_server(tmp_path / "data", clock, auth_file=str(path))
    yield Authed(r, path, principals)
    await r.server.stop(0)


class AuthCapture(logging.Handler):
    """The structured refusal events of the playlog.auth logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, "fields", {}))
        fields["event"] = getattr(record, "event", record.getMessage())
        fields["level"] = record.levelname
        self.events.append(fields)


@pytest.fixture
def auth_log() -> Iterator[AuthCapture]:
    capture = AuthCapture()
    logger = logging.getLogger("playlog.auth")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    yield capture
    logger.removeHandler(capture)
    logger.setLevel(old_level)


# -- the setup every matrix test starts from ------------------------------------------


async def setup_air(a: Authed) -> None:
    """ch1 (1 h lock); ScheduleDays for T0..DAY2; DAY1 published (48 blocks d0..d47)."""
    s, op = a.stubs, a.op
    await s.channel.DeclareChannel(
        ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=LOCK), metadata=op
    )
    for date in DATES[:3]:
        result = await s.days.StoreScheduleDay(
            sd.StoreScheduleDayRequest(schedule_day=schedule_day(CH, date)), metadata=op
        )
        assert result.ok, result
    result = await s.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=DAY1,
            range_end_utc_ms=DAY1 + DAY,
            entries=day_of_entries(DAY1),
            reason_code="SCHEDULE",
        ),
        metadata=op,
    )
    assert result.ok, result


async def state(a: Authed) -> list[bytes]:
    """Everything a caller could have changed, read as the operator."""
    s, op = a.stubs, a.op
    msgs: list[Any] = [
        await s.channel.ListChannels(ch.ListChannelsRequest(), metadata=op),
        await s.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=T0 - DAY, end_utc_ms=T0 + 5 * DAY),
            metadata=op,
        ),
        await s.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(page_size=1000), metadata=op),
        await s.clock.GetTime(clk.GetTimeRequest(), metadata=op),
        await s.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH), metadata=op),
        await s.engine.ListAsRun(
            eng.ListAsRunRequest(channel_id=CH, start_utc_ms=0, end_utc_ms=T0 + 5 * DAY, page_size=1000),
            metadata=op,
        ),
    ]
    for date in DATES:
        msgs.append(
            await s.days.ListScheduleDayHistory(
                sd.ListScheduleDayHistoryRequest(channel_id=CH, programming_day_date=date), metadata=op
            )
        )
    return [m.SerializeToString(deterministic=True) for m in msgs]


# -- one representative call of every RPC (each would change state if allowed) ---------

CallFn = Callable[[Stubs, Metadata], Awaitable[Any]]


async def _watch_first_event(s: Stubs, md: Metadata) -> Any:
    call = s.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH), metadata=md)
    try:
        async for event in call:
            return event
    finally:
        call.cancel()


def _replacement_d3() -> pb.ExecutionEntry:
    e = day_of_entries(DAY1)[3]
    return entry(e.block_id, e.start_utc_ms, e.end_utc_ms, title="replaced by the matrix", segments=1)


@dataclasses.dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    role: str  # from SPEC section 9, written out here independently of auth.REQUIRED_ROLE
    call: CallFn
    mutates: bool

    @property
    def method(self) -> str:
        return f"/playlog.v1.{self.service}/{self.name}"


RPCS = [
    Rpc(
        "ChannelService",
        "DeclareChannel",
        "operator",
        lambda s, md: s.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id="ch2", locked_window_ms=LOCK), metadata=md
        ),
        True,
    ),
    Rpc(
        "ChannelService",
        "GetChannel",
        "reader",
        lambda s, md: s.channel.GetChannel(ch.GetChannelRequest(channel_id=CH), metadata=md),
        False,
    ),
    Rpc(
        "ChannelService",
        "ListChannels",
        "reader",
        lambda s, md: s.channel.ListChannels(ch.ListChannelsRequest(), metadata=md),
        False,
    ),
    Rpc(
        "ExecutionWindowService",
        "PublishAtomicReplace",
        "scheduler",
        lambda s, md: s.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id=CH,
                range_start_utc_ms=DAY2,
                range_end_utc_ms=DAY2 + DAY,
                entries=day_of_entries(DAY2, prefix="e"),
                reason_code="SCHEDULE",
            ),
            metadata=md,
        ),
        True,
    ),
    Rpc(
        "ExecutionWindowService",
        "ReplaceEntry",
        "scheduler",
        lambda s, md: s.window.ReplaceEntry(
            ew.ReplaceEntryRequest(channel_id=CH, block_id="d3", entry=_replacement_d3()), metadata=md
        ),
        True,
    ),
    Rpc(
        "ExecutionWindowService",
        "ReadWindowSnapshot",
        "reader",
        lambda s, md: s.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY), metadata=md
        ),
        False,
    ),
    Rpc(
        "ExecutionWindowService",
        "GetEntryAt",
        "reader",
        lambda s, md: s.window.GetEntryAt(
            ew.GetEntryAtRequest(channel_id=CH, at_utc_ms=DAY1 + 1, include_flexible=True), metadata=md
        ),
        False,
    ),
    Rpc("ExecutionWindowService", "WatchWindow", "reader", _watch_first_event, False),
    Rpc(
        "ScheduleDayService",
        "StoreScheduleDay",
        "scheduler",
        lambda s, md: s.days.StoreScheduleDay(
            sd.StoreScheduleDayRequest(schedule_day=schedule_day(CH, DATES[3])), metadata=md
        ),
        True,
    ),
    Rpc(
        "ScheduleDayService",
        "ForceRegenerate",
        "scheduler",
        lambda s, md: s.days.ForceRegenerate(
            sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, DATES[2], plan_id="plan-2")), metadata=md
        ),
        True,
    ),
    Rpc(
        "ScheduleDayService",
        "OperatorOverride",
        "operator",
        lambda s, md: s.days.OperatorOverride(
            sd.OperatorOverrideRequest(
                schedule_day=schedule_day(CH, DATES[2], plan_id=""), reason_code="SPORTS_OVERRUN"
            ),
            metadata=md,
        ),
        True,
    ),
    Rpc(
        "ScheduleDayService",
        "UpdateScheduleDay",
        "scheduler",
        lambda s, md: s.days.UpdateScheduleDay(
            sd.UpdateScheduleDayRequest(schedule_day=schedule_day(CH, DATES[2])), metadata=md
        ),
        False,  # exists only to refuse
    ),
    Rpc(
        "ScheduleDayService",
        "GetScheduleDay",
        "reader",
        lambda s, md: s.days.GetScheduleDay(
            sd.GetScheduleDayRequest(channel_id=CH, programming_day_date=DATES[1]), metadata=md
        ),
        False,
    ),
    Rpc(
        "ScheduleDayService",
        "ListScheduleDayHistory",
        "reader",
        lambda s, md: s.days.ListScheduleDayHistory(
            sd.ListScheduleDayHistoryRequest(channel_id=CH, programming_day_date=DATES[1]), metadata=md
        ),
        False,
    ),
    Rpc(
        "AuditService",
        "ListOverrideRecords",
        "reader",
        lambda s, md: s.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(), metadata=md),
        False,
    ),
    Rpc(
        "AuditService",
        "GetOverrideRecord",
        "reader",
        lambda s, md: s.audit.GetOverrideRecord(
            audit.GetOverrideRecordRequest(id="no-such-record"), metadata=md
        ),
        False,
    ),
    Rpc(
        "AuditService",
        "VerifyIntegrity",
        "reader",
        lambda s, md: s.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(), metadata=md),
        False,
    ),
    Rpc(
        "ClockService",
        "GetTime",
        "reader",
        lambda s, md: s.clock.GetTime(clk.GetTimeRequest(), metadata=md),
        False,
    ),
    Rpc(
        "ClockService",
        "SetTime",
        "operator",
        lambda s, md: s.clock.SetTime(clk.SetTimeRequest(now_utc_ms=T0 + MINUTE), metadata=md),
        True,
    ),
    Rpc(
        "ClockService",
        "AdvanceTime",
        "operator",
        lambda s, md: s.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=MINUTE), metadata=md),
        True,
    ),
    Rpc(
        "EngineService",
        "AcknowledgeWindow",
        "engine",
        lambda s, md: s.engine.AcknowledgeWindow(
            eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=1, accepted=True), metadata=md
        ),
        True,
    ),
    Rpc(
        "EngineService",
        "ReportAsRun",
        "engine",
        lambda s, md: s.engine.ReportAsRun(
            eng.ReportAsRunRequest(
                channel_id=CH,
                events=[
                    eng.AsRunEvent(
                        event_id="ev-1",
                        block_id="d0",
                        generation_id=1,
                        started_utc_ms=T0 - MINUTE,
                        ended_utc_ms=T0,
                        status=eng.AS_RUN_STATUS_AIRED,
                    )
                ],
            ),
            metadata=md,
        ),
        True,
    ),
    Rpc(
        "EngineService",
        "ListAsRun",
        "reader",
        lambda s, md: s.engine.ListAsRun(
            eng.ListAsRunRequest(channel_id=CH, start_utc_ms=T0 - DAY, end_utc_ms=T0), metadata=md
        ),
        False,
    ),
    Rpc(
        "EngineService",
        "ListEngines",
        "reader",
        lambda s, md: s.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH), metadata=md),
        False,
    ),
    Rpc(
        "EngineService",
        "ReconcileAsRun",
        "reader",
        lambda s, md: s.engine.ReconcileAsRun(
            eng.ReconcileAsRunRequest(channel_id=CH, start_utc_ms=T0 - HOUR, end_utc_ms=T0), metadata=md
        ),
        False,
    ),
    Rpc(
        "GuideService",
        "GetGuide",
        "reader",
        lambda s, md: s.guide.GetGuide(
            gd.GetGuideRequest(channel_ids=[CH], start_utc_ms=T0, end_utc_ms=T0 + DAY), metadata=md
        ),
        False,
    ),
    Rpc(
        "GuideService",
        "GetNowNext",
        "reader",
        lambda s, md: s.guide.GetNowNext(gd.GetNowNextRequest(channel_ids=[CH]), metadata=md),
        False,
    ),
]

SPEC_ROLE = {rpc.method: auth.Role.parse(rpc.role) for rpc in RPCS}
SERVICES = {
    "ChannelService": channel_service_pb2,
    "ExecutionWindowService": execution_window_service_pb2,
    "ScheduleDayService": schedule_day_service_pb2,
    "AuditService": audit_service_pb2,
    "ClockService": clock_service_pb2,
    "EngineService": engine_service_pb2,
    "GuideService": guide_service_pb2,
}


def all_v1_methods() -> set[str]:
    out = set()
    for name, module in SERVICES.items():
        service = module.DESCRIPTOR.services_by_name[name]
        out |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return out


def test_the_matrix_covers_every_rpc_of_playlog_v1() -> None:
    assert {rpc.method for rpc in RPCS} == all_v1_methods()


def test_the_role_table_is_the_spec() -> None:
    table = {m: r for m, r in auth.REQUIRED_ROLE.items() if m.startswith("/playlog.v1.")}
    assert table == SPEC_ROLE


def spy_on_the_application(a: Authed) -> list[str]:
    """Records every call that reaches the application layer or the clock."""
    reached: list[str] = []
    targets: list[Any] = [a.r.server.playlog, a.r.server.engines, a.r.server.guide, a.r.clock]

    def spying(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kw: Any) -> Any:
            reached.append(name)
            return fn(*args, **kw)

        return spy

    for target in targets:
        for name in dir(type(target)):
            fn = getattr(target, name)
            if not name.startswith("_") and callable(fn):
                setattr(target, name, spying(name, fn))
    return reached


def allowed(caller: str, rpc: Rpc) -> bool:
    return rpc.role in MAY_USE.get(caller, set())


@pytest.mark.parametrize("rpc", RPCS, ids=[r.method.rpartition(".")[2] for r in RPCS])
async def test_role_matrix(authed: Authed, auth_log: AuthCapture, rpc: Rpc) -> None:
    """Every caller against one RPC: the unauthenticated and the under-privileged
    are refused with the right status, change nothing and are logged; the
    allowed get through (and, for a mutation, the same request does change
    something, so that "nothing changed" means something)."""
    await setup_air(authed)
    before = await state(authed)
    reached = spy_on_the_application(authed)
    for caller in CALLERS:
        logged = len(auth_log.events)
        calls_before = len(reached)
        if allowed(caller, rpc):
            try:
                await rpc.call(authed.stubs, authed.md(caller))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ), (caller, exc)
            assert len(auth_log.events) == logged, auth_log.events[logged:]
            assert len(reached) > calls_before, "the spy sees allowed calls"
            continue
        # Roles are not a ladder: an allowed caller may have changed things
        # before this refused one.
        just_before = await state(authed)
        calls_before = len(reached)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rpc.call(authed.stubs, authed.md(caller))
        assert reached[calls_before:] == [], f"servicer code ran for {caller} on {rpc.name}"
        assert await state(authed) == just_before, f"{caller} changed something through {rpc.name}"
        events = auth_log.events[logged:]
        assert len(events) == 1, events
        event = events[0]
        assert event["rpc"] == rpc.method
        assert event["peer"].startswith(("ipv4:", "ipv6:")), event
        if caller in MAY_USE:
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (caller, refused.value)
            assert caller in details(refused.value)
            assert f"needs the {rpc.role} role" in details(refused.value)
            assert event["event"] == "permission_denied"
            assert event["principal"] == caller
            assert event["required_role"] == rpc.role
        else:
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (caller, refused.value)
            assert event["event"] == "unauthenticated"
            assert event["principal"] == ""
            if caller == NO_TOKEN:
                assert "authorization: Bearer" in details(refused.value)
            else:
                assert "not recognized" in details(refused.value)
    if rpc.mutates:
        assert await state(authed) != before, f"{rpc.name} by an allowed caller should change state"


# -- overrides need the operator ---------------------------------------------------------


def _override_publish(actor: str = "") -> ew.PublishAtomicReplaceRequest:
    """Replaces d1..d2 of DAY1 (locked once the clock is at DAY1) with one block."""
    return ew.PublishAtomicReplaceRequest(
        channel_id=CH,
        range_start_utc_ms=DAY1 + 30 * MINUTE,
        range_end_utc_ms=DAY1 + 90 * MINUTE,
        entries=[entry("breaking-news", DAY1 + 30 * MINUTE, DAY1 + 90 * MINUTE)],
        operator_override=True,
        reason_code="BREAKING_NEWS",
        actor=actor,
    )


def _override_replace(actor: str = "") -> ew.ReplaceEntryRequest:
    e = day_of_entries(DAY1)[0]  # d0: [DAY1, DAY1 + 30 min), on air at DAY1
    return ew.ReplaceEntryRequest(
        channel_id=CH,
        block_id="d0",
        entry=entry("d0", e.start_utc_ms, e.end_utc_ms, title="overrun"),
        operator_override=True,
        reason_code="SPORTS_OVERRUN",
        actor=actor,
    )


@pytest.mark.parametrize("locked", [True, False], ids=["in the locked window", "in the flexible future"])
async def test_an_override_request_needs_the_operator_even_on_a_scheduler_rpc(
    authed: Authed, auth_log: AuthCapture, locked: bool
) -> None:
    await setup_air(authed)
    if locked:
        authed.r.clock.set_utc_ms(DAY1)
    before = await state(authed)
    for call in (
        authed.stubs.window.PublishAtomicReplace(_override_publish(), metadata=authed.md(SCHEDULER)),
        authed.stubs.window.ReplaceEntry(_override_replace(), metadata=authed.md(SCHEDULER)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "operator_override = true" in details(refused.value)
        assert "needs the operator role" in details(refused.value)
        assert await state(authed) == before
    assert [e["principal"] for e in auth_log.events] == [SCHEDULER, SCHEDULER]
    assert auth_log.events[0]["operator_override"] == "true"


async def test_the_actor_of_an_override_record_is_the_authenticated_principal(authed: Authed) -> None:
    await setup_air(authed)
    authed.r.clock.set_utc_ms(DAY1)
    s, op = authed.stubs, authed.op
    published = await s.window.PublishAtomicReplace(_override_publish(actor="scheduler-9"), metadata=op)
    assert published.ok, published
    replaced = await s.window.ReplaceEntry(_override_replace(actor="desk 3"), metadata=op)
    assert replaced.ok, replaced
    day = await s.days.OperatorOverride(
        sd.OperatorOverrideRequest(
            schedule_day=schedule_day(CH, DATES[2], plan_id=""), reason_code="SPORTS", actor="admin"
        ),
        metadata=op,
    )
    assert day.ok, day
    redeclared = await s.channel.DeclareChannel(
        ch.DeclareChannelRequest(
            channel_id=CH, locked_window_ms=2 * LOCK, reason_code="DEEPER", actor="root"
        ),
        metadata=op,
    )
    assert redeclared.override_record_id
    notes = {
        published.override_record_id: "scheduler-9",
        replaced.override_record_id: "desk 3",
        day.override_record_id: "admin",
        redeclared.override_record_id: "root",
    }
    for record_id, note in notes.items():
        record = (
            await s.audit.GetOverrideRecord(audit.GetOverrideRecordRequest(id=record_id), metadata=op)
        ).record
        assert record.actor == OPERATOR, record
        assert record.actor_note == note, record
    listed = await s.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH), metadata=op)
    assert {r.actor for r in listed.records} == {OPERATOR}


async def test_violation_events_name_the_authenticated_principal(
    authed: Authed, violations: ViolationCapture
) -> None:
    await setup_air(authed)
    authed.r.clock.set_utc_ms(DAY1)
    # Into the locked window without an override: a domain rejection, logged.
    request = _override_publish(actor="someone else")
    request.operator_override = False
    result = await authed.stubs.window.PublishAtomicReplace(request, metadata=authed.md(SCHEDULER))
    assert not result.ok
    assert result.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    # A malformed one is logged too.
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await authed.stubs.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(channel_id=CH, actor="someone else"), metadata=authed.md(SCHEDULER)
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rejected = [e for e in violations.events if e["event"] == "mutation_rejected"]
    assert len(rejected) == 2, rejected
    assert {e["mutation_source"] for e in rejected} == {SCHEDULER}


# -- tokens: missing, malformed, wrong, revoked ---------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ((), "no credentials"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer not-a-token-we-issued"),), "wrong or revoked"),
    ],
    ids=["missing", "not bearer", "empty", "wrong"],
)
async def test_a_missing_malformed_or_wrong_token_is_unauthenticated(
    authed: Authed, auth_log: AuthCapture, metadata: Metadata, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert says in details(refused.value)
    [event] = auth_log.events
    assert event["event"] == "unauthenticated"
    assert event["rpc"] == "/playlog.v1.ChannelService/ListChannels"
    assert event["peer"]


async def test_the_bearer_scheme_is_case_insensitive(authed: Authed) -> None:
    token = authed.principals[READER].token
    await authed.stubs.channel.ListChannels(
        ch.ListChannelsRequest(), metadata=(("authorization", f"bearer {token}"),)
    )


async def test_a_principal_removed_from_the_auth_file_is_revoked_without_a_restart(
    authed: Authed, auth_log: AuthCapture
) -> None:
    assert authed.r.server.credentials is not None
    authed.r.server.credentials.check_interval_s = 0.0  # production: at most once a second
    await setup_air(authed)
    reader_md = authed.md(READER)
    await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=reader_md)
    # A reader's open watch, before the revocation.
    watch = authed.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH), metadata=reader_md)
    first = await watch.read()
    assert first.HasField("snapshot")

    kept = [p for name, p in authed.principals.items() if name != READER]
    write_auth_file(authed.auth_path, kept)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=reader_md)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in details(refused.value)
    # The others keep working.
    await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=authed.md(SCHEDULER))
    # The open stream ends at its next event (here: the progress the clock move sends).
    authed.r.clock.advance_ms(MINUTE)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            await watch.read()
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert any(e["event"] == "auth_reloaded" for e in auth_log.events)
    # and its subscription is gone
    await asyncio.wait_for(authed.r.server.watch.wait_until_subscribers(lambda n: n == 0), 20)


async def test_a_token_moved_to_a_lesser_role_is_refused_on_the_next_call(authed: Authed) -> None:
    assert authed.r.server.credentials is not None
    authed.r.server.credentials.check_interval_s = 0.0
    op = authed.principals[OPERATOR]
    await authed.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=1), metadata=authed.op)
    demoted = dataclasses.replace(op, roles=["reader"])
    write_auth_file(authed.auth_path, [demoted, authed.principals[READER]])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await authed.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=1), metadata=authed.op)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_unreadable_auth_file_keeps_the_previous_principals(
    authed: Authed, auth_log: AuthCapture
) -> None:
    assert authed.r.server.credentials is not None
    authed.r.server.credentials.check_interval_s = 0.0
    authed.auth_path.write_text("[[principal]\nname = ")  # half written
    await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=authed.md(READER))
    failures = [e for e in auth_log.events if e["event"] == "auth_reload_failed"]
    assert len(failures) == 1 and failures[0]["level"] == "ERROR"
    # Fixed: applied.
    write_auth_file(authed.auth_path, [authed.principals[OPERATOR]])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await authed.stubs.channel.ListChannels(ch.ListChannelsRequest(), metadata=authed.md(READER))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_auth_file_is_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    principals = standard_principals()
    path = write_auth_file(tmp_path / "auth.toml", principals.values())
    now = [100.0]
    creds = auth.Credentials.load(path, check_interval_s=1.0, monotonic=lambda: now[0])
    reader_token = principals[READER].token
    assert creds.by_token(reader_token) is not None
    write_auth_file(path, [principals[OPERATOR]])
    now[0] += 0.5
    assert not creds.refresh()
    assert creds.by_token(reader_token) is not None  # not yet looked at
    now[0] += 0.6
    assert creds.refresh()
    assert creds.by_token(reader_token) is None
    assert creds.version == 1
    now[0] += 5
    assert not creds.refresh()  # unchanged file: nothing re-read
    assert creds.version == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[principal]]\nname = "a"\nroles = ["reader"]\n', "token_sha256 or cert_subject"),
        ('[[principal]]\nname = "a"\nroles = ["admin"]\ntoken_sha256 = "' + "0" * 64 + '"\n', "unknown role"),
        ('[[principal]]\nname = "a"\nroles = ["reader"]\ntoken_sha256 = "abc"\n', "64 hex digits"),
        ('[[principal]]\nroles = ["reader"]\ntoken_sha256 = "' + "0" * 64 + '"\n', "name is required"),
        (
            '[[principal]]\nname = "a"\nroles = ["reader"]\ntoken_sha256 = "' + "0" * 64 + '"\n'
            '[[principal]]\nname = "b"\nroles = ["operator"]\ntoken_sha256 = "' + "0" * 64 + '"\n',
            "share a token",
        ),
        ('[[principals]]\nname = "a"\n', "unknown key"),
    ],
    ids=["no credential", "bad role", "bad hash", "no name", "shared token", "typo"],
)
def test_a_bad_auth_file_is_refused_at_start(tmp_path: Path, text: str, says: str) -> None:
    from playlog.config import ConfigError, Settings
    from playlog.server import PlaylogServer

    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        PlaylogServer(Settings(data_dir=str(tmp_path / "data"), auth_file=str(path)))


# -- what needs no token, what has no entry ---------------------------------------------


async def test_health_probes_and_reflection_need_no_credentials(authed: Authed) -> None:
    """Reflection is open like health (it reveals only the public contract), so
    grpcurl's health check works with auth on; the services themselves still
    need a token."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.aio.insecure_channel(authed.r.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # List (grpc.health.v1's newer method) tells what Check would of each.
        statuses = (await health.List(health_pb2.HealthListRequest())).statuses
        assert statuses[""].status == health_pb2.HealthCheckResponse.SERVING
        assert "playlog.v1.ExecutionWindowService" in statuses

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")

        async def one(md: Metadata) -> Any:
            call = stub.ServerReflectionInfo(iter([request]), metadata=md)
            async for response in call:
                return response
            return None

        for md in ((), authed.md(READER)):
            listed = await one(md)
            names = {s.name for s in listed.list_services_response.service}
            assert {"playlog.v1.ExecutionWindowService", "grpc.health.v1.Health"} <= names

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await make_stubs(channel).channel.ListChannels(ch.ListChannelsRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


def test_a_method_missing_from_the_role_table_is_refused() -> None:
    with pytest.raises(KeyError):
        auth.required_role("/playlog.v1.ChannelService/DeleteChannel", None)
    assert auth.required_role("/grpc.health.v1.Health/Check", None) is None
    assert auth.required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None) is None


def test_roles_are_a_capability_table_not_a_ladder() -> None:
    def holder(role: auth.Role) -> auth.Principal:
        return auth.Principal(role.value, frozenset({role}))

    op, sched = holder(auth.Role.OPERATOR), holder(auth.Role.SCHEDULER)
    engine, reader = holder(auth.Role.ENGINE), holder(auth.Role.READER)
    assert all(op.has(r) for r in auth.Role)
    assert sched.has(auth.Role.READER) and not sched.has(auth.Role.OPERATOR)
    assert not sched.has(auth.Role.ENGINE), "a scheduler cannot report as-run"
    assert engine.has(auth.Role.READER) and engine.has(auth.Role.ENGINE)
    assert not engine.has(auth.Role.SCHEDULER), "an engine cannot publish"
    assert not reader.has(auth.Role.ENGINE) and not reader.has(auth.Role.SCHEDULER)
    both = auth.Principal("both", frozenset({auth.Role.SCHEDULER, auth.Role.ENGINE}))
    assert both.has(auth.Role.SCHEDULER) and both.has(auth.Role.ENGINE) and not both.has(auth.Role.OPERATOR)
    assert auth.Role.parse(" Engine ") is auth.Role.ENGINE


async def test_without_auth_every_caller_is_the_local_operator(running: Running) -> None:
    """No auth file: loopback only, one local principal with every role."""
    await running.declare(CH, LOCK)
    await running.stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=MINUTE))
    redeclared = await running.stubs.channel.DeclareChannel(
        ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=2 * LOCK, reason_code="DEEPER", actor="me")
    )
    record = (
        await running.stubs.audit.GetOverrideRecord(
            audit.GetOverrideRecordRequest(id=redeclared.override_record_id)
        )
    ).record
    assert record.actor == auth.LOCAL_PRINCIPAL.name
    assert record.actor_note == "me"


async def test_a_scheduler_may_not_regenerate_over_an_operator_override_day(
    authed: Authed, auth_log: AuthCapture
) -> None:
    """SPEC section 7: regenerating an override day undoes an operator's decision."""
    await setup_air(authed)
    s = authed.stubs
    manual = await s.days.OperatorOverride(
        sd.OperatorOverrideRequest(schedule_day=schedule_day(CH, DATES[0], plan_id=""), reason_code="SPORT"),
        metadata=authed.op,
    )
    assert manual.ok, manual
    before = await state(authed)
    regenerate = sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, DATES[0]), reason_code="NIGHTLY")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s.days.ForceRegenerate(regenerate, metadata=authed.md(SCHEDULER))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "operator" in details(refused.value) and "nothing was changed" in details(refused.value)
    assert await state(authed) == before
    # A plan day is still the scheduler's to regenerate; the operator may regenerate the override.
    plain = await s.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=schedule_day(CH, DATES[1])), metadata=authed.md(SCHEDULER)
    )
    assert plain.ok and not plain.override_record_id, plain
    by_operator = await s.days.ForceRegenerate(regenerate, metadata=authed.op)
    assert by_operator.ok and by_operator.override_record_id, by_operator
    record = await s.audit.GetOverrideRecord(
        audit.GetOverrideRecordRequest(id=by_operator.override_record_id), metadata=authed.op
    )
    assert record.record.actor == OPERATOR
    assert record.record.superseded.schedule_day_id == manual.schedule_day.id
