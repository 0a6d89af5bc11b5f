"""EngineService (SPEC section 12): a thin translation between protobuf and
app.engines. The engine id is always the authenticated principal: an engine
reports for itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from playlog import metrics
from playlog.api import Context, convert
from playlog.api.servicers import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    _Base,
    _check_read_range,
    _principal,
    decode_cursor,
    encode_cursor,
)
from playlog.app.engines import EngineEvidence
from playlog.app.service import Playlog
from playlog.domain.as_run import AsRunEvent, AsRunRecord, AsRunStatus, EngineStatus
from playlog.domain.rejection import FieldViolation, Rejection
from playlog.domain.validation import check_id, raise_if_any
from playlog.v1 import engine_service_pb2 as pb
from playlog.v1 import engine_service_pb2_grpc as grpc_pb

_AS_RUN_PAGE_TOKEN_KEY = b"playlog.v1.EngineService.ListAsRun page token\x00"


def event_from_pb(e: pb.AsRunEvent) -> AsRunEvent:
    name = pb.AsRunStatus.Name(e.status) if e.status in pb.AsRunStatus.values() else ""
    status = name.removeprefix("AS_RUN_STATUS_")
    return AsRunEvent(
        event_id=e.event_id,
        block_id=e.block_id,
        generation_id=e.generation_id,
        segment_id=e.segment_id,
        asset_uri=e.asset_uri,
        started_utc_ms=e.started_utc_ms,
        ended_utc_ms=e.ended_utc_ms,
        # UNSPECIFIED, or a number this server does not know: malformed.
        status=AsRunStatus(status) if status in AsRunStatus.__members__ else None,
        detail=e.detail,
    )


def event_to_pb(e: AsRunEvent) -> pb.AsRunEvent:
    return pb.AsRunEvent(
        event_id=e.event_id,
        block_id=e.block_id,
        generation_id=e.generation_id,
        segment_id=e.segment_id,
        asset_uri=e.asset_uri,
        started_utc_ms=e.started_utc_ms,
        ended_utc_ms=e.ended_utc_ms,
        status=f"AS_RUN_STATUS_{e.status.value}" if e.status else "AS_RUN_STATUS_UNSPECIFIED",
        detail=e.detail,
    )


def record_to_pb(r: AsRunRecord) -> pb.AsRunRecord:
    return pb.AsRunRecord(
        event=event_to_pb(r.event),
        engine_id=r.engine_id,
        channel_id=r.channel_id,
        received_utc_ms=r.received_utc_ms,
        traced=r.traced,
    )


def engine_status_to_pb(s: EngineStatus) -> pb.EngineStatus:
    return pb.EngineStatus(
        engine_id=s.engine_id,
        channel_id=s.channel_id,
        applied_generation_id=s.applied_generation_id,
        channel_generation_id=s.channel_generation_id,
        generations_behind=s.generations_behind,
        behind_since_utc_ms=s.behind_since_utc_ms,
        last_acknowledged_utc_ms=s.last_acknowledged_utc_ms,
        last_as_run_received_utc_ms=s.last_as_run_received_utc_ms,
        last_as_run_ended_utc_ms=s.last_as_run_ended_utc_ms,
        last_nack_generation_id=s.last_nack_generation_id,
        last_nack_utc_ms=s.last_nack_utc_ms,
        last_nack_detail=s.last_nack_detail,
    )


def _refused(rpc: str, rejection: Rejection) -> tuple[bool, str, str]:
    metrics.REJECTIONS.labels(rpc, rejection.code.value).inc()
    return False, convert.error_code_to_pb(rejection.code), rejection.detail


class EngineServicer(_Base, grpc_pb.EngineServiceServicer):
    def __init__(self, playlog: Playlog, engines: EngineEvidence, executor: ThreadPoolExecutor) -> None:
        super().__init__(playlog, executor)
        self.engines = engines

    async def AcknowledgeWindow(
        self, request: pb.AcknowledgeWindowRequest, context: Context
    ) -> pb.AcknowledgeWindowResponse:
        outcome = await self.run(
            self.engines.acknowledge_window,
            request.channel_id,
            request.applied_generation_id,
            request.accepted,
            request.detail,
            _principal(),
        )
        if isinstance(outcome, Rejection):
            ok, code, detail = _refused("AcknowledgeWindow", outcome)
            return pb.AcknowledgeWindowResponse(ok=ok, error_code=code, error_detail=detail)
        if not outcome.accepted:
            metrics.NACKS.inc()
        return pb.AcknowledgeWindowResponse(
            ok=True,
            channel_generation_id=outcome.channel_generation_id,
            acknowledged_utc_ms=outcome.acknowledged_utc_ms,
        )

    async def ReportAsRun(self, request: pb.ReportAsRunRequest, context: Context) -> pb.ReportAsRunResponse:
        events = [event_from_pb(e) for e in request.events]
        outcome = await self.run(self.engines.report_as_run, request.channel_id, events, _principal())
        if isinstance(outcome, Rejection):
            ok, code, detail = _refused("ReportAsRun", outcome)
            return pb.ReportAsRunResponse(ok=ok, error_code=code, error_detail=detail)
        for record in outcome.records:
            metrics.AS_RUN_EVENTS.labels(record.event.status.value if record.event.status else "").inc()
        return pb.ReportAsRunResponse(
            ok=True,
            stored=len(outcome.records),
            duplicates=outcome.duplicates,
            untraced_event_ids=outcome.untraced_event_ids,
        )

    async def ListAsRun(self, request: pb.ListAsRunRequest, context: Context) -> pb.ListAsRunResponse:
        _check_read_range(request.channel_id, request.start_utc_ms, request.end_utc_ms)
        if request.engine_id:
            out: list[FieldViolation] = []
            check_id(request.engine_id, "engine_id", out)
            raise_if_any(out)
        # AIP-158: a page size above the maximum is clamped, not refused.
        size = min(request.page_size, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        scope = "\x00".join(
            (request.channel_id, str(request.start_utc_ms), str(request.end_utc_ms), request.engine_id)
        )
        cursor = decode_cursor(_AS_RUN_PAGE_TOKEN_KEY, request.page_token, 2, scope)
        rows = await self.run(
            self.engines.list_as_run,
            request.channel_id,
            request.start_utc_ms,
            request.end_utc_ms,
            request.engine_id,
            (cursor[0], cursor[1]) if cursor else None,
            size + 1,
        )
        page, more = rows[:size], len(rows) > size
        token = ""
        if more:
            seq, last = page[-1]
            token = encode_cursor(_AS_RUN_PAGE_TOKEN_KEY, (last.event.started_utc_ms, seq), scope)
        return pb.ListAsRunResponse(records=[record_to_pb(r) for _, r in page], next_page_token=token)

    async def ListEngines(self, request: pb.ListEnginesRequest, context: Context) -> pb.ListEnginesResponse:
        if request.channel_id:  # empty: every channel's engines
            out: list[FieldViolation] = []
            check_id(request.channel_id, "channel_id", out)
            raise_if_any(out)
        generation, engines = await self.run(self.engines.list_engines, request.channel_id)
        return pb.ListEnginesResponse(
            engines=[engine_status_to_pb(s) for s in engines], channel_generation_id=generation
        )

    async def ReconcileAsRun(
        self, request: pb.ReconcileAsRunRequest, context: Context
    ) -> pb.ReconcileAsRunResponse:
        result = await self.run(
            self.engines.reconcile_as_run, request.channel_id, request.start_utc_ms, request.end_utc_ms
        )
        for d in result.discrepancies:
            metrics.DISCREPANCIES.labels(d.kind.value).inc()
        return pb.ReconcileAsRunResponse(
            discrepancies=[
                pb.Discrepancy(
                    kind=f"DISCREPANCY_KIND_{d.kind.value}",
                    block_id=d.block_id,
                    generation_id=d.generation_id,
                    engine_id=d.engine_id,
                    event_id=d.event_id,
                    expected_utc_ms=d.expected_utc_ms,
                    actual_utc_ms=d.actual_utc_ms,
                    detail=d.detail,
                )
                for d in result.discrepancies
            ],
            tolerance_ms=result.tolerance_ms,
            blocks_due=result.blocks_due,
            as_run_events=result.as_run_events,
            detail="; ".join(result.notes),
        )
