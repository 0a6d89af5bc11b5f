"""Declaring a channel: same values are a no-op, a change of the lock depth is
an audited override, a change of guide metadata is logged but changes no air."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from playlog.domain.model import Channel, ChannelMetadata, OverrideLayer, OverrideRecord
from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import check_id, quote, raise_if_any

# XMLTV's channel id rule (its DTD's comment and every consumer's matcher).
GUIDE_ID = re.compile(r"[-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)+")
GUIDE_ID_RULE = r"must match XMLTV's channel id rule [-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)+ (at most 128 characters)"
# A derived guide_id: the channel id's labels, each character outside
# [-a-zA-Z0-9] as "-", under this suffix (so that one label is enough).
GUIDE_ID_SUFFIX = ".playlog"
GUIDE_NUMBER = re.compile(r"[0-9]{1,5}(\.[0-9]{1,5})?")
MAX_DISPLAY_NAME = 200
MAX_URL = 2048
_NOT_ID_CHARACTER = re.compile(r"[^-a-zA-Z0-9]")
_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True)
class DeclarePlan:
    channel: Channel
    changed: bool
    created: bool
    # Set when an existing channel changes its lock depth: persisted before the change.
    override_record: OverrideRecord | None
    # Set when the guide metadata changed (from, to): logged, no record.
    metadata_change: tuple[ChannelMetadata, ChannelMetadata] | None = None


def derived_guide_id(channel_id: str) -> str:
    labels = [_NOT_ID_CHARACTER.sub("-", label) for label in channel_id.split(".")]
    return ".".join(label for label in labels if label) + GUIDE_ID_SUFFIX


def guide_id_of(channel: Channel) -> str:
    """The channel's XMLTV id: declared, else derived from its id."""
    return channel.metadata.guide_id or derived_guide_id(channel.channel_id)


def display_name_of(channel: Channel) -> str:
    return channel.metadata.display_name or channel.channel_id


def _has_control_character(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


def _check_url(value: str, field: str, schemes: tuple[str, ...] | None, out: list[FieldViolation]) -> None:
    if not value:
        return
    parts = urlsplit(value)
    allowed = " or ".join(schemes) if schemes else "a scheme"
    if (
        len(value) > MAX_URL
        or any(ch.isspace() or ch == '"' for ch in value)
        or _has_control_character(value)
        or not _URL_SCHEME.fullmatch(parts.scheme)
        or (schemes is not None and parts.scheme not in schemes)
        or not parts.netloc
    ):
        out.append(
            FieldViolation(
                field,
                f"must be an absolute URL with {allowed} and a host, at most {MAX_URL} characters, "
                f"without spaces, quotes or control characters; got {quote(value)}",
            )
        )


def validate_metadata(update: Mapping[str, str], out: list[FieldViolation]) -> None:
    """The rules of each metadata field a declaration sets ("" clears it)."""
    name = update.get("display_name", "")
    if len(name) > MAX_DISPLAY_NAME or _has_control_character(name) or '"' in name:
        out.append(
            FieldViolation(
                "display_name",
                f"at most {MAX_DISPLAY_NAME} characters, without control characters or double quotes "
                f"(an M3U playlist cannot carry them); got {quote(name)}",
            )
        )
    number = update.get("guide_number", "")
    if number and not GUIDE_NUMBER.fullmatch(number):
        out.append(
            FieldViolation(
                "guide_number", f'must be a channel number such as "4" or "4.1"; got {quote(number)}'
            )
        )
    _check_url(update.get("icon_url", ""), "icon_url", ("http", "https"), out)
    _check_url(update.get("stream_url", ""), "stream_url", None, out)
    guide_id = update.get("guide_id", "")
    if guide_id and (len(guide_id) > 128 or not GUIDE_ID.fullmatch(guide_id)):
        out.append(FieldViolation("guide_id", f"{GUIDE_ID_RULE}; got {quote(guide_id)}"))


def validate_declare(
    channel_id: str, locked_window_ms: int, metadata: Mapping[str, str] | None = None
) -> None:
    out: list[FieldViolation] = []
    check_id(channel_id, "channel_id", out)
    if locked_window_ms <= 0:
        out.append(FieldViolation("locked_window_ms", f"must be > 0, got {locked_window_ms}"))
    if metadata:
        unknown = set(metadata) - {f.name for f in dataclasses.fields(ChannelMetadata)}
        if unknown:  # the edge passes only known names; a programming error otherwise
            raise ValueError(f"unknown metadata fields {sorted(unknown)}")
        validate_metadata(metadata, out)
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
    metadata: Mapping[str, str] | None = None,
    guide_ids_in_use: Mapping[str, str] | None = None,
) -> DeclarePlan:
    """`metadata`: the fields the declaration sets (others keep their value);
    `guide_ids_in_use`: every other channel's guide_id -> its channel id."""
    before = existing.metadata if existing is not None else ChannelMetadata()
    after = dataclasses.replace(before, **(metadata or {}))
    taken_by = (guide_ids_in_use or {}).get(guide_id_of(Channel(channel_id, 1, 0, after)))
    if taken_by is not None and taken_by != channel_id:
        field = "guide_id" if after.guide_id else "channel_id"
        raise MalformedRequest(
            [
                FieldViolation(
                    field,
                    f"the guide_id {guide_id_of(Channel(channel_id, 1, 0, after))!r} is channel "
                    f"{taken_by!r}'s already: a guide matches channels by it; declare another guide_id",
                )
            ]
        )
    metadata_change = (before, after) if after != before else None
    if existing is None:
        return DeclarePlan(Channel(channel_id, locked_window_ms, 0, after), True, True, None, metadata_change)
    if existing.locked_window_ms == locked_window_ms:
        changed = dataclasses.replace(existing, metadata=after)
        return DeclarePlan(changed, metadata_change is not None, False, None, metadata_change)
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
        Channel(channel_id, locked_window_ms, existing.current_generation_id, after),
        True,
        False,
        record,
        metadata_change,
    )
