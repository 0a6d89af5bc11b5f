"""EngineService (SPEC section 12; issue 11) through the real servicer on both
stores: acknowledgements and lag, as-run evidence (append-only, idempotent,
never about the future, untraced kept as evidence), ListAsRun paging, the
reconciliation of the log against the evidence, the metrics, and schema
version 5 (append-only in the database itself, migrated from version 4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from playlog.domain.as_run import AsRunEvent, AsRunRecord, AsRunStatus
from playlog.domain.model import Channel
from playlog.store.sqlite import DB_FILE, SqliteStore, schema_version
from playlog.store.sqlite_schema import MIGRATIONS
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, date_of, entry
from tests.conftest import Running, ViolationCapture

CH = "ch1"
DAY1 = T0 + DAY
BLOCK = DAY // 48  # 30 min; each block has two 15-minute segments (tests.builders)
HALF = BLOCK // 2
AIRED = eng.AS_RUN_STATUS_AIRED


async def on_air(r: Running, *, day: int = DAY1) -> None:
    """ch1 (1 h lock) with `day` published (d0..d47, generation 1) at T0."""
    await r.declare(CH, HOUR)
    await r.store_days(CH, date_of(day))
    result = await r.publish_day(CH, day, "d")
    assert result.ok, result


def seg_event(
    event_id: str,
    block: int,
    seg: int,
    *,
    generation: int = 1,
    shift_start: int = 0,
    shift_end: int = 0,
    **kw: Any,
) -> eng.AsRunEvent:
    """The as-run of segment `seg` of block d<block> exactly as the log has it, shifted."""
    start = DAY1 + block * BLOCK + seg * HALF
    fields: dict[str, Any] = {
        "event_id": event_id,
        "block_id": f"d{block}",
        "generation_id": generation,
        "segment_id": f"d{block}-s{seg}",
        "asset_uri": f"asset://d{block}/{seg}",
        "started_utc_ms": start + shift_start,
        "ended_utc_ms": start + HALF + shift_end,
        "status": AIRED,
    }
    fields.update(kw)
    return eng.AsRunEvent(**fields)


def block_event(event_id: str, block: int, **kw: Any) -> eng.AsRunEvent:
    start = DAY1 + block * BLOCK
    fields: dict[str, Any] = {
        "event_id": event_id,
        "block_id": f"d{block}",
        "generation_id": 1,
        "started_utc_ms": start,
        "ended_utc_ms": start + BLOCK,
        "status": AIRED,
    }
    fields.update(kw)
    return eng.AsRunEvent(**fields)


async def report(r: Running, *events: eng.AsRunEvent, channel_id: str = CH) -> eng.ReportAsRunResponse:
    return await r.stubs.engine.ReportAsRun(eng.ReportAsRunRequest(channel_id=channel_id, events=events))


async def as_run(r: Running, start: int = 0, end: int = T0 + 10 * DAY) -> list[eng.AsRunRecord]:
    page = await r.stubs.engine.ListAsRun(
        eng.ListAsRunRequest(channel_id=CH, start_utc_ms=start, end_utc_ms=end, page_size=1000)
    )
    return list(page.records)


async def reconcile(r: Running, start: int, end: int) -> eng.ReconcileAsRunResponse:
    return await r.stubs.engine.ReconcileAsRun(
        eng.ReconcileAsRunRequest(channel_id=CH, start_utc_ms=start, end_utc_ms=end)
    )


def kinds(response: eng.ReconcileAsRunResponse) -> list[tuple[str, str]]:
    return sorted((eng.DiscrepancyKind.Name(d.kind).removeprefix("DISCREPANCY_KIND_"), d.block_id)
                  for d in response.discrepancies)  # fmt: skip


def bad_request(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    return [(v.field, v.description) for v in detail.field_violations]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- acknowledgements and lag ----------------------------------------------------------------


async def test_acknowledgements_nacks_and_lag(running: Running, violations: ViolationCapture) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(T0 + MINUTE)
    await r.store_days(CH, date_of(DAY1 + DAY))
    assert (await r.publish_day(CH, DAY1 + DAY, "e")).ok  # generation 2, committed at T0 + 1 min
    r.clock.set_utc_ms(T0 + 2 * MINUTE)

    ack = await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=1, accepted=True)
    )
    assert ack.ok and ack.channel_generation_id == 2 and ack.acknowledged_utc_ms == T0 + 2 * MINUTE
    nacks_before = sample("playlog_nacks_total")
    nack = await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(
            channel_id=CH, applied_generation_id=2, accepted=False, detail="asset://e3/0 cannot be loaded"
        )
    )
    assert nack.ok
    assert sample("playlog_nacks_total") == nacks_before + 1

    listed = await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH))
    assert listed.channel_generation_id == 2
    (engine,) = listed.engines
    assert engine.engine_id == "local"  # the principal: no auth configured
    assert (engine.applied_generation_id, engine.channel_generation_id, engine.generations_behind) == (
        1,
        2,
        1,
    )
    assert engine.behind_since_utc_ms == T0 + MINUTE  # when generation 2 was published
    assert engine.last_acknowledged_utc_ms == T0 + 2 * MINUTE
    assert (engine.last_nack_generation_id, engine.last_nack_utc_ms) == (2, T0 + 2 * MINUTE)
    assert engine.last_nack_detail == "asset://e3/0 cannot be loaded"
    # The lag gauge is read at scrape time.
    assert sample("playlog_engine_lag_generations", channel_id=CH, engine_id="local") == 1
    # Runway: the last entry ends at the end of the second day.
    assert sample("playlog_channel_runway_ms", channel_id=CH) == DAY1 + 2 * DAY - (T0 + 2 * MINUTE)

    # Caught up: no longer behind.
    await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=2, accepted=True)
    )
    (engine,) = (await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH))).engines
    assert (engine.generations_behind, engine.behind_since_utc_ms) == (0, 0)
    assert engine.last_nack_generation_id == 2, "the last NACK stays visible"
    assert sample("playlog_engine_lag_generations", channel_id=CH, engine_id="local") == 0
    # A late acknowledgement (a retry of an older one) never moves it back.
    late = await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=1, accepted=True)
    )
    assert late.ok
    (engine,) = (await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH))).engines
    assert (engine.applied_generation_id, engine.generations_behind) == (2, 0)

    # A generation the channel never had is refused, logged, and changes nothing.
    above = await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=3, accepted=True)
    )
    assert not above.ok and above.error_code == pb.ERROR_CODE_NOT_FOUND
    assert "latest is 2" in above.error_detail
    assert violations.events[-1]["rpc"] == "AcknowledgeWindow"
    assert violations.events[-1]["invariant"] == "INV-PLAYLOG-TARGET-EXISTS-001-VIOLATED"
    (engine,) = (await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH))).engines
    assert engine.applied_generation_id == 2
    unknown = await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id="nope", applied_generation_id=1, accepted=True)
    )
    assert not unknown.ok and unknown.error_code == pb.ERROR_CODE_UNKNOWN_CHANNEL
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# -- as-run: idempotent, append-only, evidence of the past -------------------------------------


async def test_as_run_is_idempotent_refuses_conflicts_and_the_future_all_or_none(
    running: Running, violations: ViolationCapture
) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + 2 * HOUR)
    aired_before = sample("playlog_as_run_events_total", status="AIRED")
    first = await report(r, seg_event("ev-1", 0, 0), seg_event("ev-2", 0, 1))
    assert (first.ok, first.stored, first.duplicates, list(first.untraced_event_ids)) == (True, 2, 0, [])
    assert sample("playlog_as_run_events_total", status="AIRED") == aired_before + 2

    # A retry after a reconnect: counted, nothing stored twice.
    retry = await report(r, seg_event("ev-1", 0, 0), seg_event("ev-2", 0, 1), seg_event("ev-3", 1, 0))
    assert (retry.ok, retry.stored, retry.duplicates) == (True, 1, 2)
    assert [x.event.event_id for x in await as_run(r)] == ["ev-1", "ev-2", "ev-3"]
    assert sample("playlog_as_run_events_total", status="AIRED") == aired_before + 3

    # The same event id with other content: refused, and nothing of the request stored.
    conflict = await report(r, seg_event("ev-4", 1, 1), seg_event("ev-1", 0, 0, asset_uri="asset://other"))
    assert not conflict.ok and conflict.error_code == pb.ERROR_CODE_AS_RUN_CONFLICT
    assert "ev-1" in conflict.error_detail and "asset_uri" in conflict.error_detail
    assert violations.events[-1]["invariant"] == "INV-PLAYLOG-AS-RUN-APPEND-ONLY-001-VIOLATED"
    assert violations.events[-1]["mutation_source"] == "local"

    # An event that ends after now: refused, nothing stored.
    future = await report(r, seg_event("ev-4", 1, 1), seg_event("ev-5", 4, 0))  # d4 airs at DAY1 + 2 h
    assert not future.ok and future.error_code == pb.ERROR_CODE_AS_RUN_IN_FUTURE
    assert "ev-5" in future.error_detail and "after now" in future.error_detail
    assert violations.events[-1]["invariant"] == "INV-PLAYLOG-AS-RUN-IS-PAST-001-VIOLATED"
    assert [x.event.event_id for x in await as_run(r)] == ["ev-1", "ev-2", "ev-3"]

    # A block and generation no entry ever had: stored as evidence, untraced.
    ghost = await report(r, seg_event("ev-6", 1, 1), block_event("ev-7", 2, block_id="ghost"))
    assert (ghost.ok, ghost.stored, list(ghost.untraced_event_ids)) == (True, 2, ["ev-7"])
    stored = {x.event.event_id: x for x in await as_run(r)}
    assert stored["ev-7"].traced is False and stored["ev-6"].traced is True
    assert stored["ev-6"].engine_id == "local" and stored["ev-6"].received_utc_ms == DAY1 + 2 * HOUR
    assert stored["ev-6"].event == seg_event("ev-6", 1, 1)
    found = await r.stubs.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(channel_id=CH))
    assert [(v.kind, "ev-7" in v.detail) for v in found.violations] == [
        (audit.INTEGRITY_VIOLATION_KIND_AS_RUN_UNTRACED, True)
    ]
    # A generation the block never had is untraced too.
    wrong_generation = await report(r, seg_event("ev-8", 2, 0, generation=7))
    assert list(wrong_generation.untraced_event_ids) == ["ev-8"]

    unknown = await report(r, seg_event("ev-9", 0, 0), channel_id="nope")
    assert not unknown.ok and unknown.error_code == pb.ERROR_CODE_UNKNOWN_CHANNEL


MALFORMED: list[tuple[str, list[eng.AsRunEvent], str, str]] = [
    ("empty event id", [seg_event("", 0, 0)], "events[0].event_id", "required"),
    ("bad block id", [seg_event("ev", 0, 0, block_id="a b")], "events[0].block_id", "must be 1-128"),
    ("no generation", [seg_event("ev", 0, 0, generation=0)], "events[0].generation_id", "required"),
    (
        "end before start",
        [seg_event("ev", 0, 0, ended_utc_ms=DAY1 - 1)],
        "events[0].ended_utc_ms",
        "must not be before started_utc_ms",
    ),
    (
        "status unspecified",
        [seg_event("ev", 0, 0, status=eng.AS_RUN_STATUS_UNSPECIFIED)],
        "events[0].status",
        "required",
    ),
    ("unknown status", [seg_event("ev", 0, 0, status=42)], "events[0].status", "required"),
    ("duplicate ids", [seg_event("ev", 0, 0), seg_event("ev", 0, 1)], "events[1].event_id", "duplicate"),
    ("no events", [], "events", "at least one"),
    ("too many", [seg_event(f"ev{i}", 0, 0) for i in range(1001)], "events", "at most 1000"),
    ("long detail", [seg_event("ev", 0, 0, detail="x" * 1025)], "events[0].detail", "at most 1024"),
    ("negative start", [seg_event("ev", 0, 0, started_utc_ms=-5)], "events[0].started_utc_ms", "between"),
]


async def test_malformed_input_is_invalid_argument_names_the_field_and_changes_nothing(
    running: Running, violations: ViolationCapture
) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + 2 * HOUR)
    for name, events, field, rule in MALFORMED:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await report(r, *events)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert any(f == field and rule in d for f, d in bad_request(refused.value)), (
            name,
            bad_request(refused.value),
        )
    assert await as_run(r) == []
    assert any(
        e["invariant"] == "INV-PLAYLOG-WELL-FORMED-REQUEST-001-VIOLATED" and e["rpc"] == "ReportAsRun"
        for e in violations.events
    )
    for request, field in [
        (eng.AcknowledgeWindowRequest(channel_id="", applied_generation_id=1, accepted=True), "channel_id"),
        (eng.AcknowledgeWindowRequest(channel_id=CH, detail="x" * 2000), "detail"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.engine.AcknowledgeWindow(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request(refused.value)[0][0] == field
    assert list((await r.stubs.engine.ListEngines(eng.ListEnginesRequest(channel_id=CH))).engines) == []
    # Reconciliation: only the past, and a range.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reconcile(r, DAY1, DAY1 + 3 * HOUR)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        bad_request(refused.value)[0][0] == "end_utc_ms" and "after now" in bad_request(refused.value)[0][1]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reconcile(r, DAY1 + HOUR, DAY1)
    assert bad_request(refused.value)[0][0] == "end_utc_ms"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await r.stubs.engine.ListAsRun(eng.ListAsRunRequest(channel_id=CH, start_utc_ms=5, end_utc_ms=5))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_as_run_pages_by_start_filters_by_engine_and_checks_its_tokens(running: Running) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + 3 * HOUR)
    # Reported out of order: listed oldest start first.
    await report(r, *(seg_event(f"ev-{b}-{s}", b, s) for b in (3, 1, 0, 2) for s in (1, 0)))
    seen, token = [], ""
    while True:
        request = eng.ListAsRunRequest(
            channel_id=CH,
            start_utc_ms=DAY1 + BLOCK,
            end_utc_ms=DAY1 + 3 * BLOCK,
            page_size=3,
            page_token=token,
        )
        page = await r.stubs.engine.ListAsRun(request)
        seen += [x.event.event_id for x in page.records]
        token = page.next_page_token
        if not token:
            break
        last = token
    assert seen == ["ev-1-0", "ev-1-1", "ev-2-0", "ev-2-1"]
    # A token is bound to its filters.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await r.stubs.engine.ListAsRun(
            eng.ListAsRunRequest(channel_id=CH, start_utc_ms=0, end_utc_ms=DAY1 + DAY, page_token=last)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(refused.value)[0][0] == "page_token"
    other = await r.stubs.engine.ListAsRun(
        eng.ListAsRunRequest(channel_id=CH, start_utc_ms=0, end_utc_ms=DAY1 + DAY, engine_id="someone-else")
    )
    assert list(other.records) == []


# -- append-only in the database itself ----------------------------------------------------------


async def test_the_database_refuses_to_change_or_remove_evidence(running: Running, database_url: str) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + HOUR)
    await report(r, seg_event("ev-1", 0, 0))
    await r.stubs.engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=1, accepted=False, detail="no")
    )
    statements = [
        "UPDATE as_run SET asset_uri = 'asset://rewritten'",
        "DELETE FROM as_run",
        "UPDATE engine_nacks SET detail = 'yes'",
        "DELETE FROM engine_nacks",
    ]
    for sql in statements:
        if database_url:
            with psycopg.connect(database_url, autocommit=True) as conn:
                with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="APPEND-ONLY"):
                    conn.execute(sql)
        else:
            conn = sqlite3.connect(r.data_dir / DB_FILE)
            try:
                with pytest.raises(sqlite3.IntegrityError, match="APPEND-ONLY"):
                    conn.execute(sql)
            finally:
                conn.close()
    assert [x.event.asset_uri for x in await as_run(r)] == ["asset://d0/0"]


# -- reconciliation -------------------------------------------------------------------------------


async def test_a_clean_day_reconciles_to_nothing(running: Running) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + 3 * HOUR + MINUTE)  # d6 on air
    # d0..d5 as two segment events each, d1 as one block event; small jitter within tolerance.
    events = [seg_event(f"ev-{b}-{s}", b, s, shift_start=400, shift_end=-900) for b in range(6) if b != 1
              for s in (0, 1)]  # fmt: skip
    await report(r, *events, block_event("ev-1", 1, asset_uri="asset://d1/0"))
    result = await reconcile(r, DAY1, DAY1 + 3 * HOUR + MINUTE)
    assert kinds(result) == []
    assert (result.tolerance_ms, result.blocks_due, result.as_run_events) == (1000, 6, 11)
    assert "d6" in result.detail and "still on air" in result.detail


async def test_planted_discrepancies_are_each_found(running: Running) -> None:
    r = running
    await on_air(r)
    r.clock.set_utc_ms(DAY1 + 3 * HOUR)
    before = sample("playlog_as_run_discrepancies_total", kind="START_OFF")
    await report(
        r,
        seg_event("ok-0", 0, 0),
        seg_event("ok-1", 0, 1),
        block_event("ok-2", 1),
        # d2: nothing reported -> MISSING_AS_RUN
        seg_event("wrong-asset", 3, 0, asset_uri="asset://not-the-log"),
        seg_event("d3-1", 3, 1, shift_end=500),  # within the tolerance, into d4's time
        seg_event("late", 4, 0, shift_start=5_000),
        seg_event("d4-1", 4, 1),
        seg_event("d5-0", 5, 0),
        seg_event("early-end", 5, 1, shift_end=-3_000, status=eng.AS_RUN_STATUS_CUT_SHORT),
        block_event("ghost", 2, block_id="ghost"),
        seg_event("no-such-segment", 1, 0, segment_id="d1-s9"),
    )
    result = await reconcile(r, DAY1, DAY1 + 3 * HOUR)
    assert kinds(result) == [
        ("CONTENT_MISMATCH", "d1"),
        ("CONTENT_MISMATCH", "d3"),
        ("END_OFF", "d5"),
        ("MISSING_AS_RUN", "d2"),
        ("START_OFF", "d4"),
        ("UNTRACED_AS_RUN", "ghost"),
    ]
    by_kind = {eng.DiscrepancyKind.Name(d.kind): d for d in result.discrepancies}
    late = by_kind["DISCREPANCY_KIND_START_OFF"]
    assert (late.expected_utc_ms, late.actual_utc_ms, late.event_id) == (
        DAY1 + 4 * BLOCK,
        DAY1 + 4 * BLOCK + 5_000,
        "late",
    )
    assert late.engine_id == "local" and "+5000 ms" in late.detail
    assert by_kind["DISCREPANCY_KIND_MISSING_AS_RUN"].engine_id == ""
    assert sample("playlog_as_run_discrepancies_total", kind="START_OFF") == before + 1
    # A narrower range judges only what overlaps it; d3's late end is judged
    # against d3, which lies outside it.
    narrow = await reconcile(r, DAY1 + 4 * BLOCK, DAY1 + 5 * BLOCK)
    assert kinds(narrow) == [("START_OFF", "d4")]
    assert (narrow.blocks_due, narrow.as_run_events) == (1, 3)


async def test_the_cut_and_stale_content_are_judged_by_what_was_authoritative_when_it_aired(
    running: Running,
) -> None:
    r = running
    await on_air(r)
    t = DAY1 + 3 * HOUR + 10 * MINUTE  # d6 [3h, 3.5h) on air
    r.clock.set_utc_ms(t)
    cut = await r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=t,
            range_end_utc_ms=DAY1 + 7 * BLOCK,
            entries=[entry("news", t, DAY1 + 7 * BLOCK)],
            operator_override=True,
            reason_code="BREAKING_NEWS",
        )
    )
    assert cut.ok and cut.published_generation_id == 2, cut
    # d7 replaced (same block id, new content) before it airs.
    d7 = entry("d7", DAY1 + 7 * BLOCK, DAY1 + 8 * BLOCK, segments=1, title="replaced")
    replaced = await r.stubs.window.ReplaceEntry(
        ew.ReplaceEntryRequest(
            channel_id=CH, block_id="d7", entry=d7, operator_override=True, reason_code="FIX"
        )
    )
    assert replaced.ok and replaced.published_generation_id == 3, replaced
    r.clock.set_utc_ms(DAY1 + 4 * HOUR)
    await report(
        r,
        # The engine played d6 of generation 1 until the cut: the aired part was authoritative.
        block_event("d6", 6, ended_utc_ms=t, status=eng.AS_RUN_STATUS_CUT_SHORT),
        eng.AsRunEvent(
            event_id="news",
            block_id="news",
            generation_id=2,
            started_utc_ms=t,
            ended_utc_ms=DAY1 + 7 * BLOCK,
            status=AIRED,
        ),
        # It then aired d7 as generation 1 had it, although generation 3 had replaced it.
        seg_event("stale", 7, 1),
    )
    result = await reconcile(r, DAY1 + 6 * BLOCK, DAY1 + 8 * BLOCK)
    assert kinds(result) == [("CONTENT_MISMATCH", "d7"), ("MISSING_AS_RUN", "d7")]
    stale = next(d for d in result.discrepancies if d.event_id == "stale")
    assert "replaced by generation 3" in stale.detail and stale.generation_id == 1


async def test_reconciliation_says_when_the_evidence_it_needs_was_pruned(
    tmp_path: Path, clock: Any, database_url: str
) -> None:
    from tests.conftest import start_server

    r = await start_server(tmp_path / "data", clock, database_url=database_url, history_retention_publishes=1)
    try:
        await on_air(r)
        t = DAY1 + 10 * MINUTE
        r.clock.set_utc_ms(t)
        # Two cuts of d0: generation 1's version of d0 is superseded, then pruned.
        for generation, at in ((2, t), (3, t + MINUTE)):
            r.clock.set_utc_ms(at)
            result = await r.stubs.window.PublishAtomicReplace(
                ew.PublishAtomicReplaceRequest(
                    channel_id=CH, range_start_utc_ms=at, range_end_utc_ms=DAY1 + BLOCK,
                    entries=[entry(f"news{generation}", at, DAY1 + BLOCK)],
                    operator_override=True, reason_code="BREAKING_NEWS",
                )
            )  # fmt: skip
            assert result.ok and result.published_generation_id == generation, result
        r.clock.set_utc_ms(DAY1 + HOUR)
        await report(r, block_event("d0", 0, ended_utc_ms=t, status=eng.AS_RUN_STATUS_CUT_SHORT))
        result = await reconcile(r, DAY1, DAY1 + BLOCK)
        assert ("UNTRACED_AS_RUN", "d0") not in kinds(result)
        assert "pruned" in result.detail
    finally:
        await r.server.stop(0)


# -- schema ----------------------------------------------------------------------------------------


def test_as_run_reads_search_an_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        with store.write() as w:
            w.insert_channel(Channel("ch1", HOUR))
            w.insert_as_run(
                [AsRunRecord(AsRunEvent("e", "b", 1, "", "", 0, 5, AsRunStatus.AIRED), "g", "ch1", 9, False)]
            )
        statements: list[str] = []
        with store.read() as r:
            r._conn.set_trace_callback(statements.append)
            try:
                r.as_run_overlapping("ch1", 0, 10)
                r.traced_versions("ch1", ["b"])
                r.engine_statuses("ch1")
            finally:
                r._conn.set_trace_callback(None)
            plans = []
            for sql in statements:
                if sql.lstrip().upper().startswith("SELECT"):
                    plans += [row[3] for row in r._conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        store.close()
    assert not [p for p in plans if p.startswith("SCAN as_run") or p.startswith("SCAN entries")], plans
    assert any("as_run_by_start" in p for p in plans), plans
    assert any("entries_by_block" in p for p in plans), plans


def test_a_version_4_database_is_migrated_to_the_latest_and_keeps_its_data(tmp_path: Path) -> None:
    from playlog.store.sqlite import _statements

    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:4], start=1):
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO channels (channel_id, locked_window_ms) VALUES ('kept', 60000)")
    conn.close()
    store = SqliteStore(tmp_path)
    try:
        with store.read() as r:
            assert [c.channel_id for c in r.list_channels()] == ["kept"]
            assert r.engine_statuses("kept") == [] and r.as_run_overlapping("kept", 0, 10) == []
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert schema_version(conn) == len(MIGRATIONS) == 7
    conn.close()


def test_a_version_4_postgres_database_is_migrated_to_the_latest_and_keeps_its_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playlog.store import postgres, postgres_schema
    from tests.postgres import fresh_postgres_database

    with fresh_postgres_database() as url:
        monkeypatch.setattr(postgres, "MIGRATIONS", postgres_schema.MIGRATIONS[:4])
        with psycopg.connect(url, autocommit=True) as conn:
            assert postgres.migrate(conn) == 4
            conn.execute("INSERT INTO channels (channel_id, locked_window_ms) VALUES ('kept', 60000)")
        monkeypatch.undo()
        store = postgres.PostgresStore(url, read_connections=1)
        try:
            with store.read() as r:
                assert [c.channel_id for c in r.list_channels()] == ["kept"]
                assert r.engine_statuses("kept") == [] and r.as_run_overlapping("kept", 0, 10) == []
        finally:
            store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            assert postgres.schema_version(conn) == len(postgres_schema.MIGRATIONS) == 7


def test_the_tolerance_is_a_checked_setting() -> None:
    from playlog.config import ConfigError, load

    assert load(None, {}).as_run_tolerance_ms == 1000
    assert load(None, {"PLAYLOG_AS_RUN_TOLERANCE_MS": "40"}).as_run_tolerance_ms == 40
    for bad in ("-1", "3600001"):
        with pytest.raises(ConfigError, match="as_run_tolerance_ms"):
            load(None, {"PLAYLOG_AS_RUN_TOLERANCE_MS": bad})


# -- through the served process ------------------------------------------------------------------


def test_an_engine_acknowledges_reports_and_is_reconciled_through_the_served_process(tmp_path: Path) -> None:
    """`playlog serve` on the manual clock, driven through the generated stubs
    as an engine and an operator would."""
    from playlog.v1 import (
        channel_service_pb2,
        channel_service_pb2_grpc,
        clock_service_pb2,
        clock_service_pb2_grpc,
        engine_service_pb2_grpc,
        execution_window_service_pb2_grpc,
        schedule_day_service_pb2,
        schedule_day_service_pb2_grpc,
    )
    from tests.builders import day_of_entries, schedule_day
    from tests.test_served_process import Served, free_port

    server = Served(tmp_path / "data", free_port(), "--clock", "manual", "--start-utc-ms", str(T0),
                    "--as-run-tolerance-ms", "250")  # fmt: skip
    try:
        with grpc.insecure_channel(server.address) as channel:
            channels = channel_service_pb2_grpc.ChannelServiceStub(channel)
            days = schedule_day_service_pb2_grpc.ScheduleDayServiceStub(channel)
            window = execution_window_service_pb2_grpc.ExecutionWindowServiceStub(channel)
            clock = clock_service_pb2_grpc.ClockServiceStub(channel)
            engine = engine_service_pb2_grpc.EngineServiceStub(channel)
            channels.DeclareChannel(
                channel_service_pb2.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR)
            )
            days.StoreScheduleDay(
                schedule_day_service_pb2.StoreScheduleDayRequest(schedule_day=schedule_day(CH, date_of(DAY1)))
            )
            published = window.PublishAtomicReplace(
                ew.PublishAtomicReplaceRequest(
                    channel_id=CH,
                    range_start_utc_ms=DAY1,
                    range_end_utc_ms=DAY1 + DAY,
                    entries=day_of_entries(DAY1),
                )
            )
            assert published.ok, published
            ack = engine.AcknowledgeWindow(
                eng.AcknowledgeWindowRequest(channel_id=CH, applied_generation_id=1, accepted=True)
            )
            assert ack.ok and ack.channel_generation_id == 1
            clock.SetTime(clock_service_pb2.SetTimeRequest(now_utc_ms=DAY1 + HOUR))
            events = [seg_event(f"ev-{b}-{s}", b, s) for b in (0, 1) for s in (0, 1)]
            events[3] = seg_event("ev-1-1", 1, 1, shift_end=-500)  # beyond 250 ms
            stored = engine.ReportAsRun(eng.ReportAsRunRequest(channel_id=CH, events=events))
            assert (stored.ok, stored.stored) == (True, 4)
            retried = engine.ReportAsRun(eng.ReportAsRunRequest(channel_id=CH, events=events))
            assert (retried.stored, retried.duplicates) == (0, 4)
            result = engine.ReconcileAsRun(
                eng.ReconcileAsRunRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + HOUR)
            )
            assert result.tolerance_ms == 250
            assert kinds(result) == [("END_OFF", "d1")]
            (status,) = engine.ListEngines(eng.ListEnginesRequest(channel_id=CH)).engines
            assert (status.applied_generation_id, status.generations_behind) == (1, 0)
            assert status.last_as_run_ended_utc_ms == DAY1 + HOUR - 500
    finally:
        assert server.stop() == 0
