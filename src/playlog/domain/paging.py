"""Paged window reads (AIP-158): the page token and the rule that a read
spread over pages sees one generation of the channel, never parts of two.

A token carries the channel's generation at the first page and the start of
the last entry sent. A later page is served only while the channel is still
at that generation: a publish in between would otherwise let a reader stitch
half of one generation to half of the next (SPEC section 3). The token is
opaque to clients, bound to the request it continues (channel and range), and
checked, not trusted: a token that does not decode or belongs to another
request is INVALID_ARGUMENT, naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from playlog.domain.rejection import FieldViolation, MalformedRequest

# Most entries one page carries; a larger page_size is lowered to it (AIP-158).
MAX_WINDOW_PAGE_SIZE = 10_000
_VERSION = 1
_FORMAT = ">BQq8s"  # version, channel generation, start of the last entry sent, request fingerprint


class WindowChanged(Exception):
    """A later page was asked for after the channel moved to another generation."""

    def __init__(self, channel_id: str, first_generation: int, now_generation: int) -> None:
        super().__init__(
            f"channel {channel_id!r} moved from generation {first_generation} to {now_generation} "
            "since the first page; read again from the first page (no page_token)"
        )


@dataclass(frozen=True, slots=True)
class PageCursor:
    channel_generation_id: int
    after_start_utc_ms: int


def _fingerprint(channel_id: str, start_utc_ms: int, end_utc_ms: int) -> bytes:
    return hashlib.blake2b(f"{channel_id}\0{start_utc_ms}\0{end_utc_ms}".encode(), digest_size=8).digest()


def encode_page_token(channel_id: str, start_utc_ms: int, end_utc_ms: int, cursor: PageCursor) -> str:
    raw = struct.pack(
        _FORMAT,
        _VERSION,
        cursor.channel_generation_id,
        cursor.after_start_utc_ms,
        _fingerprint(channel_id, start_utc_ms, end_utc_ms),
    )
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> PageCursor:
    bad = MalformedRequest(
        [FieldViolation("page_token", "must be the next_page_token of an earlier answer to this request")]
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, generation, after, fingerprint = struct.unpack(_FORMAT, raw)
    except (binascii.Error, ValueError, struct.error):
        raise bad from None
    if version != _VERSION:
        raise bad
    if fingerprint != _fingerprint(channel_id, start_utc_ms, end_utc_ms):
        raise MalformedRequest(
            [
                FieldViolation(
                    "page_token",
                    "was given for another request: channel_id, start_utc_ms and end_utc_ms "
                    "must be those of the first page",
                )
            ]
        )
    return PageCursor(int(generation), int(after))


def page_size(requested: int) -> int:
    """The entries per page: AIP-158's coercion of page_size."""
    if requested < 0:
        raise MalformedRequest([FieldViolation("page_size", f"must not be negative, got {requested}")])
    return min(requested, MAX_WINDOW_PAGE_SIZE)
