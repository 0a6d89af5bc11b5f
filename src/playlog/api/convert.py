"""Protobuf <-> domain, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message

from playlog.app.guide import GuideRead, NowNext
from playlog.domain.channels import guide_id_of
from playlog.domain.guide import Programme, ProgrammeStatus, status_of
from playlog.domain.model import (
    Channel,
    Entry,
    ErrorCode,
    OverrideRecord,
    ScheduleDay,
    ScheduleSlot,
)
from playlog.domain.rejection import Rejection
from playlog.v1 import guide_service_pb2 as guide_pb
from playlog.v1 import types_pb2 as pb


def channel_to_pb(channel: Channel) -> pb.Channel:
    m = channel.metadata
    return pb.Channel(
        channel_id=channel.channel_id,
        locked_window_ms=channel.locked_window_ms,
        current_generation_id=channel.current_generation_id,
        display_name=m.display_name,
        guide_number=m.guide_number,
        icon_url=m.icon_url,
        stream_url=m.stream_url,
        guide_id=guide_id_of(channel),
    )


METADATA_FIELDS = ("display_name", "guide_number", "icon_url", "stream_url", "guide_id")


def metadata_update(request: Message) -> dict[str, str] | None:
    """The guide metadata fields a declaration sets (proto3 optional: an
    unset field keeps its value), None when it sets none."""
    update = {name: getattr(request, name) for name in METADATA_FIELDS if request.HasField(name)}
    return update or None


_STATUS = {
    ProgrammeStatus.AIRED: guide_pb.PROGRAMME_STATUS_AIRED,
    ProgrammeStatus.ON_AIR: guide_pb.PROGRAMME_STATUS_ON_AIR,
    ProgrammeStatus.LOCKED: guide_pb.PROGRAMME_STATUS_LOCKED,
    ProgrammeStatus.FLEXIBLE: guide_pb.PROGRAMME_STATUS_FLEXIBLE,
    ProgrammeStatus.PLANNED: guide_pb.PROGRAMME_STATUS_PLANNED,
}


def programme_to_pb(p: Programme, now_utc_ms: int, locked_until_utc_ms: int) -> guide_pb.Programme:
    return guide_pb.Programme(
        start_utc_ms=p.start_utc_ms,
        end_utc_ms=p.end_utc_ms,
        title=p.title,
        program_id=p.program_id,
        status=_STATUS[status_of(p, now_utc_ms, locked_until_utc_ms)],
        provenance=guide_pb.ProgrammeProvenance(
            generation_id=p.generation_id,
            block_ids=p.block_ids,
            schedule_day_id=p.schedule_day_id,
            programming_day_date=p.programming_day_date,
            slot_index=max(p.slot_index, 0),
            override_record_id=p.override_record_id,
        ),
    )


def guide_to_pb(read: GuideRead) -> guide_pb.GetGuideResponse:
    now = read.now_utc_ms
    return guide_pb.GetGuideResponse(
        now_utc_ms=now,
        channels=[
            guide_pb.ChannelGuide(
                channel=channel_to_pb(g.channel),
                generation_id=g.channel.current_generation_id,
                covered_until_utc_ms=g.derivation.covered_until_utc_ms,
                planned_until_utc_ms=g.derivation.planned_until_utc_ms,
                locked_until_utc_ms=read.locked_until(g.channel),
                programmes=[
                    programme_to_pb(p, now, read.locked_until(g.channel)) for p in g.derivation.programmes
                ],
            )
            for g in read.channels
        ],
    )


def now_next_to_pb(now_utc_ms: int, answers: Iterable[NowNext]) -> guide_pb.GetNowNextResponse:
    out = guide_pb.GetNowNextResponse(now_utc_ms=now_utc_ms)
    for a in answers:
        lock = now_utc_ms + a.channel.locked_window_ms
        item = out.channels.add(
            channel_id=a.channel.channel_id,
            generation_id=a.channel.current_generation_id,
            actual_start_utc_ms=a.actual_start_utc_ms,
            actual_start_engine_id=a.actual_start_engine_id,
            guide_id=guide_id_of(a.channel),
            covered_until_utc_ms=a.covered_until_utc_ms,
        )
        if a.on_air is not None:
            item.on_air.CopyFrom(programme_to_pb(a.on_air, now_utc_ms, lock))
        if a.next is not None:
            item.next.CopyFrom(programme_to_pb(a.next, now_utc_ms, lock))
    return out


def entry_from_pb(msg: pb.ExecutionEntry) -> Entry:
    # generation_id, is_operator_override and override_record_id are the
    # server's to assign: what a client sends there is overwritten. The wire
    # form is kept to be stored and sent on as it is.
    return Entry(
        channel_id=msg.channel_id,
        block_id=msg.block_id,
        block_index=msg.block_index,
        start_utc_ms=msg.start_utc_ms,
        end_utc_ms=msg.end_utc_ms,
        # The received segments themselves: the rules only read them.
        segments=tuple(msg.segments),
        programming_day_date=msg.programming_day_date,
        transmission_log_ref=msg.transmission_log_ref,
        wire=msg.SerializeToString(),
    )


def error_code_to_pb(code: ErrorCode) -> str:
    """The proto enum value's name (protobuf constructors accept names)."""
    return f"ERROR_CODE_{code.value}"


def publish_result(
    ok: bool, generation_id: int, override_record_id: str, rejection: Rejection | None
) -> pb.PublishResult:
    if rejection is not None:
        return pb.PublishResult(
            ok=False, error_code=error_code_to_pb(rejection.code), error_detail=rejection.detail
        )
    return pb.PublishResult(
        ok=ok, published_generation_id=generation_id, override_record_id=override_record_id
    )


def dry_run_result(
    generation_id: int, superseded: Iterable[_Span], payloads: Iterable[bytes]
) -> pb.PublishResult:
    """What a write would do (validate_only): nothing was written."""
    return pb.PublishResult(
        ok=True,
        published_generation_id=generation_id,
        validate_only=True,
        would_supersede=superseded_to_pb(superseded),
        would_write=[pb.ExecutionEntry.FromString(p) for p in payloads],
    )


class _Span(Protocol):
    """An entry as a superseded entry names it."""

    @property
    def block_id(self) -> str: ...
    @property
    def generation_id(self) -> int: ...
    @property
    def start_utc_ms(self) -> int: ...
    @property
    def end_utc_ms(self) -> int: ...


def superseded_to_pb(entries: Iterable[_Span]) -> list[pb.SupersededEntry]:
    return [
        pb.SupersededEntry(
            block_id=e.block_id,
            generation_id=e.generation_id,
            start_utc_ms=e.start_utc_ms,
            end_utc_ms=e.end_utc_ms,
        )
        for e in entries
    ]


def override_record_to_pb(record: OverrideRecord) -> pb.OverrideRecord:
    return pb.OverrideRecord(
        id=record.id,
        layer=f"OVERRIDE_LAYER_{record.layer.value}",
        channel_id=record.channel_id,
        target=record.target,
        superseded=pb.Superseded(
            entries=superseded_to_pb(record.superseded_entries),
            schedule_day_id=record.superseded_schedule_day_id,
            previous_locked_window_ms=record.previous_locked_window_ms,
        ),
        reason_code=record.reason_code,
        actor=record.actor,
        created_utc_ms=record.created_utc_ms,
        resulting_generation_id=record.resulting_generation_id,
        actor_note=record.actor_note,
        range_start_utc_ms=record.range_start_utc_ms,
        range_end_utc_ms=record.range_end_utc_ms,
        programming_day_date=record.programming_day_date,
    )


def schedule_day_from_pb(msg: pb.ScheduleDay) -> ScheduleDay:
    return ScheduleDay(
        id=msg.id,
        channel_id=msg.channel_id,
        programming_day_date=msg.programming_day_date,
        plan_id=msg.plan_id,
        is_manual_override=msg.is_manual_override,
        supersedes_id=msg.supersedes_id,
        slots=tuple(
            ScheduleSlot(
                start_utc_ms=s.start_utc_ms,
                end_utc_ms=s.end_utc_ms,
                program_id=s.program_id,
                asset_uri=s.asset_uri,
                title=s.title,
            )
            for s in msg.slots
        ),
        resolved_utc_ms=msg.resolved_utc_ms,
    )


def schedule_day_to_pb(day: ScheduleDay) -> pb.ScheduleDay:
    return pb.ScheduleDay(
        id=day.id,
        channel_id=day.channel_id,
        programming_day_date=day.programming_day_date,
        plan_id=day.plan_id,
        is_manual_override=day.is_manual_override,
        supersedes_id=day.supersedes_id,
        slots=[
            pb.ScheduleSlot(
                start_utc_ms=s.start_utc_ms,
                end_utc_ms=s.end_utc_ms,
                program_id=s.program_id,
                asset_uri=s.asset_uri,
                title=s.title,
            )
            for s in day.slots
        ],
        resolved_utc_ms=day.resolved_utc_ms,
        is_authoritative=day.is_authoritative,
        override_record_id=day.override_record_id,
    )
