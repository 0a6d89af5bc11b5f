"""Engines' use cases (SPEC section 12): acknowledgements and as-run go
through Playlog's one write skeleton (group-committed, refusals logged with
their evidence); reads and the reconciliation read one consistent snapshot.
Free of gRPC, like app.service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from playlog.app.service import Playlog, UnknownChannel
from playlog.domain import as_run as rules
from playlog.domain.as_run import (
    Acknowledgement,
    AsRunEvent,
    AsRunRecord,
    EngineStatus,
    Reconciliation,
    ReportPlan,
)
from playlog.domain.rejection import Rejection
from playlog.store.base import WriteView
from playlog.wire import decode_entry


@dataclass(frozen=True)
class EngineGauges:
    """What the metrics collector reads at scrape time."""

    now_utc_ms: int
    runway_ends: dict[str, int]  # channel -> end of its last entry
    engines: list[EngineStatus]


class EngineEvidence:
    def __init__(self, playlog: Playlog, tolerance_ms: int = rules.DEFAULT_TOLERANCE_MS) -> None:
        self.playlog = playlog
        self.tolerance_ms = tolerance_ms

    # -- writes -------------------------------------------------------------------------

    def acknowledge_window(
        self, channel_id: str, applied_generation_id: int, accepted: bool, detail: str, engine_id: str
    ) -> Acknowledgement | Rejection:
        def decide(w: WriteView, now: int) -> Acknowledgement | Rejection:
            return rules.decide_acknowledge(
                channel_id, w.get_channel(channel_id), engine_id, applied_generation_id, accepted, detail, now
            )

        def apply(w: WriteView, ack: Acknowledgement, now: int) -> Acknowledgement:
            w.insert_acknowledgement(ack)
            return ack

        return self.playlog._write(
            "AcknowledgeWindow",
            channel_id,
            False,
            engine_id,
            decide,
            apply,
            lambda: rules.validate_acknowledge(channel_id, detail),
        )

    def report_as_run(
        self, channel_id: str, events: Sequence[AsRunEvent], engine_id: str
    ) -> ReportPlan | Rejection:
        def decide(w: WriteView, now: int) -> ReportPlan | Rejection:
            known = w.get_channel(channel_id) is not None
            stored = w.as_run_by_event_ids(engine_id, [e.event_id for e in events]) if known else {}
            versions = w.traced_versions(channel_id, (e.block_id for e in events)) if known else {}
            return rules.decide_report(channel_id, known, engine_id, events, stored, frozenset(versions), now)

        def apply(w: WriteView, plan: ReportPlan, now: int) -> ReportPlan:
            w.insert_as_run(plan.records)
            return plan

        return self.playlog._write(
            "ReportAsRun",
            channel_id,
            False,
            engine_id,
            decide,
            apply,
            lambda: rules.validate_report(channel_id, events),
        )

    # -- reads --------------------------------------------------------------------------

    def list_as_run(
        self,
        channel_id: str,
        start_utc_ms: int,
        end_utc_ms: int,
        engine_id: str,
        after: tuple[int, int] | None,
        limit: int,
    ) -> list[tuple[int, AsRunRecord]]:
        with self.playlog.store.read() as r:
            if r.get_channel(channel_id) is None:
                raise UnknownChannel(channel_id)
            return r.as_run_overlapping(channel_id, start_utc_ms, end_utc_ms, engine_id, after, limit)

    def list_engines(self, channel_id: str) -> tuple[int, list[EngineStatus]]:
        """(the channel's generation, its engines); '' : every channel's (generation 0)."""
        with self.playlog.store.read() as r:
            generation = 0
            if channel_id:
                channel = r.get_channel(channel_id)
                if channel is None:
                    raise UnknownChannel(channel_id)
                generation = channel.current_generation_id
            return generation, r.engine_statuses(channel_id)

    def reconcile_as_run(self, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> Reconciliation:
        with self.playlog.store.read() as r:
            now = self.playlog.clock.now_utc_ms()
            rules.validate_reconcile(channel_id, start_utc_ms, end_utc_ms, now)
            if r.get_channel(channel_id) is None:
                raise UnknownChannel(channel_id)
            events = [rec for _, rec in r.as_run_overlapping(channel_id, start_utc_ms, end_utc_ms)]
            # The entries of the range, and of the blocks the events spill into.
            lo = min([start_utc_ms, *(rec.event.started_utc_ms for rec in events)])
            hi = max([end_utc_ms, *(rec.event.ended_utc_ms + 1 for rec in events)])
            entries = [decode_entry(s.payload) for s in r.stored_overlapping(channel_id, lo, hi)]
            versions = r.traced_versions(channel_id, (rec.event.block_id for rec in events))
            floor = r.history_floor(channel_id)
        return rules.reconcile(
            start_utc_ms, end_utc_ms, now, self.tolerance_ms, entries, events, versions, floor
        )

    def gauges(self) -> EngineGauges:
        with self.playlog.store.read() as r:
            return EngineGauges(self.playlog.clock.now_utc_ms(), r.runway_ends(), r.engine_statuses(""))
