"""Wire forms: an entry as the serialized `playlog.v1.ExecutionEntry` that is
stored once and sent as it is, and messages built around stored entries
without decoding them (protobuf only, no gRPC).

An entry is written once and read many times (reads, snapshots, every
watcher), so the store keeps each entry's wire form beside the few columns
that checks and indexes need, and reads and events concatenate stored bytes
instead of decoding and re-encoding (protobuf's wire format allows it: a
message's fields may come in any order, and a repeated message field is its
elements' bytes, each behind its tag and length).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from playlog.domain.model import Entry, PublishRecord, Segment
from playlog.v1 import types_pb2 as pb

# Tags (field number << 3 | wire type 2) of the repeated entry fields.
_SNAPSHOT_ENTRIES = 3  # SnapshotEvent.entries
_WINDOW_SNAPSHOT_ENTRIES = 4  # WindowSnapshot.entries
_REPLACED_ENTRIES = 6  # ReplacedEvent.entries
_EVENT_SNAPSHOT, _EVENT_REPLACED = 1, 2  # WindowEvent oneof
_GET_ENTRY_AT_ENTRY = 2  # GetEntryAtResponse.entry


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Every length an entry's prefix takes below 16 KiB, encoded once: a read of
# a day sends 48 of them (the profile showed the loop above per entry).
_SMALL_VARINTS = [_encode_varint(i) for i in range(1 << 14)]


def varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _encode_varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, length, bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def repeated(number: int, payloads: Iterable[bytes]) -> bytes:
    tag = varint(number << 3 | 2)
    small = _SMALL_VARINTS
    return b"".join(tag + (small[n] if (n := len(p)) < 16384 else _encode_varint(n)) + p for p in payloads)


def entry_to_pb(entry: Entry) -> pb.ExecutionEntry:
    return pb.ExecutionEntry(
        channel_id=entry.channel_id,
        block_id=entry.block_id,
        block_index=entry.block_index,
        start_utc_ms=entry.start_utc_ms,
        end_utc_ms=entry.end_utc_ms,
        segments=[
            pb.Segment(
                segment_id=s.segment_id,
                segment_type=s.segment_type,
                asset_uri=s.asset_uri,
                asset_offset_ms=s.asset_offset_ms,
                duration_ms=s.duration_ms,
                title=s.title,
            )
            for s in entry.segments
        ],
        programming_day_date=entry.programming_day_date,
        transmission_log_ref=entry.transmission_log_ref,
        is_operator_override=entry.is_operator_override,
        generation_id=entry.generation_id,
        override_record_id=entry.override_record_id,
    )


def encode_entry(entry: Entry) -> bytes:
    return entry_to_pb(entry).SerializeToString()


def decode_entry(payload: bytes, copy_segments: bool = True) -> Entry:
    """The entry of a stored payload. `copy_segments=False` keeps the decoded
    message's segments as they are (read-only views, as entry_from_pb keeps a
    received entry's): for reads of many entries that only look at them (the
    guide), a segment dataclass each is most of the cost."""
    msg = pb.ExecutionEntry.FromString(payload)
    return Entry(
        channel_id=msg.channel_id,
        block_id=msg.block_id,
        block_index=msg.block_index,
        start_utc_ms=msg.start_utc_ms,
        end_utc_ms=msg.end_utc_ms,
        segments=tuple(
            Segment(s.segment_id, s.segment_type, s.asset_uri, s.asset_offset_ms, s.duration_ms, s.title)
            for s in msg.segments
        )
        if copy_segments
        else tuple(msg.segments),
        programming_day_date=msg.programming_day_date,
        transmission_log_ref=msg.transmission_log_ref,
        is_operator_override=msg.is_operator_override,
        generation_id=msg.generation_id,
        override_record_id=msg.override_record_id,
    )


def stamp(payload: bytes, channel_id: str, generation_id: int, is_override: bool, record_id: str) -> bytes:
    """The entry with the fields the server assigns, whatever the client sent
    there: appended fields win over earlier ones (proto3 "last one wins")."""
    return payload + stamp_suffix(channel_id, generation_id, is_override, record_id)


def stamp_suffix(channel_id: str, generation_id: int, is_override: bool, record_id: str) -> bytes:
    """Encoded once per publish and appended to each of its entries. Every
    field is written even at its default, so that it overrides the client's."""
    cid = channel_id.encode()
    rid = record_id.encode()
    return (
        b"\x0a" + varint(len(cid)) + cid  # 1: channel_id
        + b"\x48" + (b"\x01" if is_override else b"\x00")  # 9: is_operator_override
        + b"\x50" + varint(generation_id)  # 10: generation_id
        + b"\x5a" + varint(len(rid)) + rid  # 11: override_record_id
    )  # fmt: skip


def replaced_event(record: PublishRecord) -> bytes:
    """A publish's `replaced` WindowEvent, around its entries' stored bytes."""
    header = pb.ReplacedEvent(
        channel_id=record.channel_id,
        generation_id=record.generation_id,
        previous_generation_id=record.previous_generation_id,
        range_start_utc_ms=record.range_start_utc_ms,
        range_end_utc_ms=record.range_end_utc_ms,
        operator_override=record.operator_override,
        override_record_id=record.override_record_id,
        reason_code=record.reason_code,
        committed_utc_ms=record.committed_utc_ms,
    ).SerializeToString()
    inner = header + repeated(_REPLACED_ENTRIES, record.payloads)
    return field_bytes(_EVENT_REPLACED, inner)


def snapshot_event(header: pb.SnapshotEvent, payloads: Sequence[bytes]) -> bytes:
    inner = header.SerializeToString() + repeated(_SNAPSHOT_ENTRIES, payloads)
    return field_bytes(_EVENT_SNAPSHOT, inner)


def window_snapshot(header: pb.WindowSnapshot, payloads: Sequence[bytes]) -> bytes:
    return header.SerializeToString() + repeated(_WINDOW_SNAPSHOT_ENTRIES, payloads)


def entry_found(payload: bytes) -> bytes:
    """GetEntryAtResponse { found: true, entry }."""
    return b"\x08\x01" + field_bytes(_GET_ENTRY_AT_ENTRY, payload)
