"""Declaring a channel: same values are a no-op, a change is an audited override."""

from __future__ import annotations

from dataclasses import dataclass

from playlog.domain.model import Channel, OverrideLayer, OverrideRecord
from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import check_id, raise_if_any


@dataclass(frozen=True)
class DeclarePlan:
    channel: Channel
    changed: bool
    created: bool
    # Set when an existing channel changes: persisted before the change.
    override_record: OverrideRecord | None


def validate_declare(channel_id: str, locked_window_ms: int) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    if locked_window_ms <= 0:
        out.append(FieldViolation("locked_window_ms", f"must be > 0, got {locked_window_ms}"))
    raise_if_any(out)


def decide_declare(
    channel_id: str,
    locked_window_ms: int,
    existing: Channel | None,
    now_utc_ms: int,
    override_record_id: str,
    reason_code: str,
    actor: str,
    actor_note: str = "",
) -> DeclarePlan:
    if existing is None:
        return DeclarePlan(Channel(channel_id, locked_window_ms, 0), True, True, None)
    if existing.locked_window_ms == locked_window_ms:
        return DeclarePlan(existing, False, False, None)
    if not reason_code.strip():
        raise MalformedRequest(
            [
                FieldViolation(
                    "reason_code",
                    f"required to change the lock depth of channel {channel_id!r} "
                    f"(from {existing.locked_window_ms} to {locked_window_ms} ms): say why; "
                    "the change is an audited override",
                )
            ]
        )
    record = OverrideRecord(
        id=override_record_id,
        layer=OverrideLayer.CHANNEL,
        channel_id=channel_id,
        target="channel locked_window_ms",
        reason_code=reason_code,
        actor=actor,
        actor_note=actor_note,
        created_utc_ms=now_utc_ms,
        resulting_generation_id=existing.current_generation_id,
        previous_locked_window_ms=existing.locked_window_ms,
    )
    return DeclarePlan(
        Channel(channel_id, locked_window_ms, existing.current_generation_id), True, False, record
    )
