"""ScheduleDays: immutable once stored, one per channel and date, each traced
to the plan that generated it or to the override that superseded another."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from playlog.domain.model import ErrorCode, OverrideLayer, OverrideRecord, ScheduleDay
from playlog.domain.rejection import Evidence, FieldViolation, MalformedRequest, Rejection
from playlog.domain.validation import (
    check_date,
    check_id,
    check_override_reason,
    check_slots,
    raise_if_any,
)


class DayWrite:
    STORE = "StoreScheduleDay"
    FORCE_REGENERATE = "ForceRegenerate"
    OPERATOR_OVERRIDE = "OperatorOverride"


def validate_schedule_day(day: ScheduleDay, write: str, reason_code: str) -> None:
    out: list[FieldViolation] = []
    check_id(day.channel_id, "schedule_day.channel_id", out)
    check_date(day.programming_day_date, "schedule_day.programming_day_date", out)
    if day.id:
        out.append(FieldViolation("schedule_day.id", "server-assigned: leave it empty"))
    if day.plan_id:
        check_id(day.plan_id, "schedule_day.plan_id", out)
    if write != DayWrite.OPERATOR_OVERRIDE and day.is_manual_override:
        out.append(
            FieldViolation(
                "schedule_day.is_manual_override",
                f"a manual day is created only by OperatorOverride, not by {write}",
            )
        )
    check_slots(day.slots, out)
    if write == DayWrite.OPERATOR_OVERRIDE:
        check_override_reason(True, reason_code, out)
    raise_if_any(out)


@dataclass(frozen=True)
class DayPlan:
    """A day to insert; `superseded` is the day it takes over from (kept for audit)."""

    day: ScheduleDay
    superseded: ScheduleDay | None
    override_record: OverrideRecord | None


def _evidence(day: ScheduleDay) -> Evidence:
    return Evidence(programming_day_date=day.programming_day_date)


def _untraceable(day: ScheduleDay, write: str) -> Rejection:
    return Rejection(
        ErrorCode.DERIVATION_UNTRACEABLE,
        f"{write}: schedule_day.plan_id is empty; a ScheduleDay must trace to the plan that "
        "generated it (or be created by OperatorOverride, superseding an existing day)",
        _evidence(day),
    )


def decide_store(
    day: ScheduleDay, channel_known: bool, current: ScheduleDay | None, new_id: str, now: int
) -> DayPlan | Rejection:
    if not channel_known:
        return _unknown_channel(day)
    if not day.plan_id:
        return _untraceable(day, DayWrite.STORE)
    if current is not None:
        return Rejection(
            ErrorCode.SCHEDULE_DAY_EXISTS,
            f"channel {day.channel_id!r} already has ScheduleDay {current.id} for "
            f"{day.programming_day_date}; one day per date: use ForceRegenerate (from a plan) or "
            "OperatorOverride to replace it",
            _evidence(day),
        )
    return DayPlan(_materialize(day, new_id, now, "", False, ""), None, None)


class OperatorRoleRequired(PermissionError):
    """The write would undo an operator's decision: only an operator may make it."""


def decide_force_regenerate(
    day: ScheduleDay,
    channel_known: bool,
    current: ScheduleDay | None,
    new_id: str,
    now: int,
    *,
    caller_is_operator: bool = False,
    record_id: str = "",
    reason_code: str = "",
    actor: str = "",
    actor_note: str = "",
) -> DayPlan | Rejection:
    if not channel_known:
        return _unknown_channel(day)
    if not day.plan_id:
        return _untraceable(day, DayWrite.FORCE_REGENERATE)
    if current is None:
        return _no_day(day, "StoreScheduleDay")
    if not current.is_manual_override:
        return DayPlan(_materialize(day, new_id, now, current.id, False, ""), current, None)
    # Regenerating over an operator override undoes an operator's decision
    # (SPEC section 7): the operator role, a reason and a record first.
    if not caller_is_operator:
        raise OperatorRoleRequired(
            f"the ScheduleDay of {day.programming_day_date} ({current.id}) was made by an operator "
            "override; regenerating it undoes that decision and needs the operator role; "
            "nothing was changed"
        )
    if not reason_code.strip():
        raise MalformedRequest(
            [
                FieldViolation(
                    "reason_code",
                    f"required: the ScheduleDay of {day.programming_day_date} was made by an operator "
                    "override, and regenerating it is an audited override",
                )
            ]
        )
    target = f"schedule_day {day.programming_day_date} (regenerated from plan {day.plan_id})"
    record = _day_record(day, current, target, record_id, now, reason_code, actor, actor_note)
    return DayPlan(_materialize(day, new_id, now, current.id, False, record_id), current, record)


def decide_operator_override(
    day: ScheduleDay,
    channel_known: bool,
    current: ScheduleDay | None,
    new_id: str,
    record_id: str,
    now: int,
    reason_code: str,
    actor: str,
    actor_note: str,
) -> DayPlan | Rejection:
    if not channel_known:
        return _unknown_channel(day)
    if current is None:
        return _no_day(day, "StoreScheduleDay (an override must supersede an existing day)")
    if day.supersedes_id and day.supersedes_id != current.id:
        return Rejection(
            ErrorCode.NOT_FOUND,
            f"schedule_day.supersedes_id {day.supersedes_id!r} is not the authoritative day of "
            f"{day.programming_day_date} (that is {current.id}); leave it empty or name the current day",
            _evidence(day),
        )
    target = f"schedule_day {day.programming_day_date}"
    record = _day_record(day, current, target, record_id, now, reason_code, actor, actor_note)
    return DayPlan(_materialize(day, new_id, now, current.id, True, record_id), current, record)


def _day_record(
    day: ScheduleDay,
    superseded: ScheduleDay,
    target: str,
    record_id: str,
    now: int,
    reason_code: str,
    actor: str,
    actor_note: str,
) -> OverrideRecord:
    """The record a ScheduleDay override writes first, naming the day it supersedes."""
    return OverrideRecord(
        id=record_id,
        layer=OverrideLayer.SCHEDULE_DAY,
        channel_id=day.channel_id,
        target=target,
        reason_code=reason_code,
        actor=actor,
        actor_note=actor_note,
        created_utc_ms=now,
        superseded_schedule_day_id=superseded.id,
        programming_day_date=day.programming_day_date,
    )


def update_refused(day: ScheduleDay) -> Rejection:
    return Rejection(
        ErrorCode.SCHEDULE_DAY_IMMUTABLE,
        "ScheduleDays are immutable once stored: nothing is updated in place. Use "
        "ScheduleDayService.ForceRegenerate to replace a day from its plan, or "
        "ScheduleDayService.OperatorOverride to supersede it by hand (audited)",
        _evidence(day),
    )


def _materialize(
    day: ScheduleDay, new_id: str, now: int, supersedes_id: str, manual: bool, record_id: str
) -> ScheduleDay:
    return dataclasses.replace(
        day,
        id=new_id,
        is_manual_override=manual,
        supersedes_id=supersedes_id,
        resolved_utc_ms=day.resolved_utc_ms or now,
        is_authoritative=True,
        override_record_id=record_id,
    )


def _unknown_channel(day: ScheduleDay) -> Rejection:
    return Rejection(
        ErrorCode.UNKNOWN_CHANNEL,
        f"channel {day.channel_id!r} is not declared; declare it with ChannelService.DeclareChannel",
        _evidence(day),
    )


def _no_day(day: ScheduleDay, instead: str) -> Rejection:
    return Rejection(
        ErrorCode.NOT_FOUND,
        f"channel {day.channel_id!r} has no ScheduleDay for {day.programming_day_date}; use {instead}",
        _evidence(day),
    )
