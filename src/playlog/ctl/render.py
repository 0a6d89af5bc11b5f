"""Human output: plain aligned tables and one-line summaries; protobuf JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from playlog.ctl.timefmt import human_duration, iso_local, iso_utc
from playlog.v1 import types_pb2 as pb

PAST, ON_AIR, LOCKED, FLEXIBLE = "past", "on air", "locked", "flexible"


def to_json(msg: Message, *, indent: int | None = 2) -> str:
    """The protobuf JSON of `msg`, default values included, field names as in the proto."""
    return json_format.MessageToJson(
        msg, always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=indent
    )


def to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def dumps(value: object) -> str:
    return json.dumps(value, indent=2)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def status(entry: pb.ExecutionEntry, now_ms: int, locked_until_ms: int) -> str:
    """past (ended), on air (now inside it), locked (starts inside the lock), flexible."""
    if entry.end_utc_ms <= now_ms:
        return PAST
    if entry.start_utc_ms <= now_ms:
        return ON_AIR
    if entry.start_utc_ms < locked_until_ms:
        return LOCKED
    return FLEXIBLE


def when(ms: int, local: bool) -> str:
    return f"{iso_utc(ms)} ({iso_local(ms)})" if local else iso_utc(ms)


def when_or_dash(ms: int, local: bool) -> str:
    """An instant, or `-` for 0 (the proto's "none")."""
    return when(ms, local) if ms else "-"


def ago(ms: int, now_ms: int, local: bool) -> str:
    """An instant and how long before `now_ms` it was: `2026-11-22T02:10:00Z (20m ago)`."""
    return f"{when(ms, local)} ({human_duration(now_ms - ms)} ago)" if ms else "-"


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """A protobuf enum value without its prefix: AS_RUN_STATUS_CUT_SHORT -> CUT_SHORT."""
    return str(enum.Name(value)).removeprefix(prefix) if value in enum.values() else str(value)


def title_of(entry: pb.ExecutionEntry) -> str:
    titles = [s.title for s in entry.segments if s.title]
    return titles[0] if titles else ""


def entry_rows(
    entries: Sequence[pb.ExecutionEntry], now_ms: int, locked_until_ms: int, local: bool
) -> tuple[list[str], list[list[str]]]:
    headers = ["STATUS", "START", "END"]
    if local:
        headers += ["START (LOCAL)", "END (LOCAL)"]
    headers += ["BLOCK", "GEN", "OVERRIDE", "SEGS", "TITLE"]
    rows = []
    for e in entries:
        row = [status(e, now_ms, locked_until_ms), iso_utc(e.start_utc_ms), iso_utc(e.end_utc_ms)]
        if local:
            row += [iso_local(e.start_utc_ms), iso_local(e.end_utc_ms)]
        row += [
            e.block_id,
            str(e.generation_id),
            f"yes {e.override_record_id}".strip() if e.is_operator_override else "",
            str(len(e.segments)),
            title_of(e),
        ]
        rows.append(row)
    return headers, rows
