"""The domain's nouns: channels, entries, segments, override records, days.

Plain frozen dataclasses; no gRPC, no SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class ErrorCode(enum.Enum):
    """Why a change was refused. Names match the proto's ERROR_CODE_* suffixes."""

    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    PAST_WINDOW_IMMUTABLE = "PAST_WINDOW_IMMUTABLE"
    LOCKED_WINDOW_VIOLATION = "LOCKED_WINDOW_VIOLATION"
    GENERATION_NOT_MONOTONIC = "GENERATION_NOT_MONOTONIC"
    CONTIGUITY_VIOLATION = "CONTIGUITY_VIOLATION"
    DERIVATION_UNTRACEABLE = "DERIVATION_UNTRACEABLE"
    OVERRIDE_RECORD_PERSIST_FAILED = "OVERRIDE_RECORD_PERSIST_FAILED"
    NOT_FOUND = "NOT_FOUND"
    SCHEDULE_DAY_EXISTS = "SCHEDULE_DAY_EXISTS"
    SCHEDULE_DAY_IMMUTABLE = "SCHEDULE_DAY_IMMUTABLE"
    BLOCK_ID_CONFLICT = "BLOCK_ID_CONFLICT"
    AS_RUN_IN_FUTURE = "AS_RUN_IN_FUTURE"
    AS_RUN_CONFLICT = "AS_RUN_CONFLICT"


class OverrideLayer(enum.Enum):
    EXECUTION_WINDOW = "EXECUTION_WINDOW"
    SCHEDULE_DAY = "SCHEDULE_DAY"
    CHANNEL = "CHANNEL"


class WindowStatus(enum.Enum):
    PAST = "past"
    LOCKED = "locked"
    FLEXIBLE = "flexible"


@dataclass(frozen=True)
class ChannelMetadata:
    """What a guide shows of a channel (SPEC section 14); changes no air.
    Empty strings are unset: the guide then uses what domain.guide derives
    (the channel id as its name, a guide_id derived from it)."""

    display_name: str = ""
    guide_number: str = ""
    icon_url: str = ""
    stream_url: str = ""
    guide_id: str = ""


NO_METADATA = ChannelMetadata()


@dataclass(frozen=True)
class Channel:
    channel_id: str
    locked_window_ms: int
    current_generation_id: int = 0
    metadata: ChannelMetadata = NO_METADATA


class SegmentLike(Protocol):
    """What the rules read of a segment: a Segment, or any object with these
    fields (an entry that came over the wire keeps its segments as received,
    instead of copying each one for checks that only read them)."""

    @property
    def segment_id(self) -> str: ...
    @property
    def segment_type(self) -> str: ...
    @property
    def asset_uri(self) -> str: ...
    @property
    def asset_offset_ms(self) -> int: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def title(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Segment:
    segment_id: str
    segment_type: str
    asset_uri: str
    asset_offset_ms: int
    duration_ms: int
    title: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One block of air time on a channel: [start_utc_ms, end_utc_ms)."""

    channel_id: str
    block_id: str
    block_index: int
    start_utc_ms: int
    end_utc_ms: int
    segments: tuple[SegmentLike, ...]
    programming_day_date: str
    transmission_log_ref: str = ""
    is_operator_override: bool = False
    generation_id: int = 0
    override_record_id: str = ""
    # The entry's wire form as the client sent it, when it came over the
    # wire: stored and sent on as it is (opaque to the domain).
    wire: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class SupersededEntry:
    block_id: str
    generation_id: int
    start_utc_ms: int
    end_utc_ms: int


@dataclass(frozen=True)
class OverrideRecord:
    """The audit record every override writes before its artifact."""

    id: str
    layer: OverrideLayer
    channel_id: str
    target: str
    reason_code: str
    actor: str
    created_utc_ms: int
    resulting_generation_id: int = 0
    actor_note: str = ""
    superseded_entries: tuple[SupersededEntry, ...] = ()
    superseded_schedule_day_id: str = ""
    previous_locked_window_ms: int = 0
    range_start_utc_ms: int = 0
    range_end_utc_ms: int = 0
    programming_day_date: str = ""


@dataclass(frozen=True)
class PublishRecord:
    """One committed publish, as the publish history keeps it for replay."""

    channel_id: str
    generation_id: int
    previous_generation_id: int
    range_start_utc_ms: int
    range_end_utc_ms: int
    reason_code: str
    actor: str
    operator_override: bool
    override_record_id: str
    committed_utc_ms: int
    entries: tuple[Entry, ...] = field(default=())
    # A cut of the entry on air: `entries` begins with that block's kept part,
    # which ends at range_start_utc_ms (SPEC section 2).
    cut_block_id: str = ""
    # Its entries' stored wire forms, in order (the cut entry's first).
    payloads: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    # The publish's watch event as sent on the wire, made once at commit for
    # every subscriber (opaque here).
    encoded_event: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class ScheduleSlot:
    start_utc_ms: int
    end_utc_ms: int
    program_id: str
    asset_uri: str
    title: str


@dataclass(frozen=True)
class ScheduleDay:
    id: str
    channel_id: str
    programming_day_date: str
    plan_id: str
    is_manual_override: bool
    supersedes_id: str
    slots: tuple[ScheduleSlot, ...]
    resolved_utc_ms: int
    is_authoritative: bool = True
    override_record_id: str = ""
