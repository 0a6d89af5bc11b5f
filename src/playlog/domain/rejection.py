"""Refusals: a malformed request, or a domain rejection with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field

from playlog.domain.model import ErrorCode, WindowStatus

# The invariant each refusal protects, as logged in violation events. Tags
# from the seeds where a seed names one; playlog's own otherwise.
INVARIANT_TAGS: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN_CHANNEL: "INV-PLAYLOG-CHANNEL-DECLARED-001-VIOLATED",
    ErrorCode.PAST_WINDOW_IMMUTABLE: "INV-PLAYLOG-LOCKED-IMMUTABLE-001-VIOLATED",
    ErrorCode.LOCKED_WINDOW_VIOLATION: "INV-HORIZON-LOCKED-IMMUTABLE-001-VIOLATED",
    ErrorCode.GENERATION_NOT_MONOTONIC: "INV-HORIZON-ATOMIC-PUBLISH-001-VIOLATED",
    ErrorCode.CONTIGUITY_VIOLATION: "INV-PLAYLOG-CONTIGUOUS-001-VIOLATED",
    ErrorCode.DERIVATION_UNTRACEABLE: "INV-SCHEDULEDAY-DERIVATION-TRACEABLE-001-VIOLATED",
    ErrorCode.OVERRIDE_RECORD_PERSIST_FAILED: "INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001-VIOLATED",
    ErrorCode.NOT_FOUND: "INV-PLAYLOG-TARGET-EXISTS-001-VIOLATED",
    ErrorCode.SCHEDULE_DAY_EXISTS: "INV-SCHEDULEDAY-ONE-PER-DATE-001-VIOLATED",
    ErrorCode.SCHEDULE_DAY_IMMUTABLE: "INV-SCHEDULEDAY-IMMUTABLE-001-VIOLATED",
    ErrorCode.BLOCK_ID_CONFLICT: "INV-PLAYLOG-BLOCK-ID-UNIQUE-001-VIOLATED",
    ErrorCode.AS_RUN_IN_FUTURE: "INV-PLAYLOG-AS-RUN-IS-PAST-001-VIOLATED",
    ErrorCode.AS_RUN_CONFLICT: "INV-PLAYLOG-AS-RUN-APPEND-ONLY-001-VIOLATED",
}

MALFORMED_TAG = "INV-PLAYLOG-WELL-FORMED-REQUEST-001-VIOLATED"


@dataclass(frozen=True)
class Evidence:
    """What a violation event carries besides its tag (seed fields)."""

    mutated_block_id: str = ""
    block_start_utc_ms: int | None = None
    lock_boundary_T: int | None = None
    locked_until_utc_ms: int | None = None
    window_status: WindowStatus | None = None
    range_start_utc_ms: int | None = None
    range_end_utc_ms: int | None = None
    programming_day_date: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """A domain refusal: nothing changed, and the caller is told why."""

    code: ErrorCode
    detail: str
    evidence: Evidence = field(default_factory=Evidence)

    @property
    def invariant_tag(self) -> str:
        return INVARIANT_TAGS[self.code]


@dataclass(frozen=True)
class FieldViolation:
    field: str
    rule: str


class MalformedRequest(ValueError):
    """The request cannot be understood; INVALID_ARGUMENT at the edge."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.rule}" for v in violations))
