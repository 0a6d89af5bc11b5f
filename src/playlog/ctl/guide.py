"""playlog ctl's guide commands (SPEC section 14): `guide CHANNEL` (GetGuide:
every programme with its status and provenance), the GetNowNext lines of
`now`, and the channel metadata flags of `declare` and columns of `channels`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from playlog.ctl import render
from playlog.ctl.timefmt import human_duration
from playlog.v1 import guide_service_pb2 as gd
from playlog.v1 import guide_service_pb2_grpc as gd_grpc
from playlog.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from playlog.ctl.main import Ctl

# Flag -> DeclareChannelRequest field.
METADATA_FLAGS = {
    "--display-name": "display_name",
    "--number": "guide_number",
    "--icon-url": "icon_url",
    "--stream-url": "stream_url",
    "--guide-id": "guide_id",
}
GUIDE_HEADERS = ["STATUS", "START", "END", "TITLE", "PROGRAM", "GEN", "BLOCKS", "SLOT", "OVERRIDE"]


def add_metadata_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('guide metadata (unset: kept; "": cleared; no override record)')
    g.add_argument("--display-name", help="the channel's name in a guide")
    g.add_argument("--number", help='the channel number a guide shows, e.g. "4.1"')
    g.add_argument("--icon-url", help="the channel's logo (http or https)")
    g.add_argument("--stream-url", help="where the channel is watched (the M3U points there)")
    g.add_argument("--guide-id", help="the XMLTV channel id (default: derived from the channel id)")


def metadata_of(args: argparse.Namespace) -> dict[str, str]:
    """The metadata fields the flags set (the others keep their value)."""
    return {
        field: value
        for flag, field in METADATA_FLAGS.items()
        if (value := getattr(args, flag[2:].replace("-", "_"), None)) is not None
    }


def channel_columns(c: pb.Channel) -> list[str]:
    return [c.display_name or "-", c.guide_number or "-", c.guide_id, c.stream_url or "-"]


CHANNEL_HEADERS = ["NAME", "NUMBER", "GUIDE ID", "STREAM"]


def _status(p: gd.Programme) -> str:
    return render.enum_name(gd.ProgrammeStatus, p.status, "PROGRAMME_STATUS_").lower().replace("_", " ")


def programme_rows(programmes: Any, local: bool) -> list[list[str]]:
    rows = []
    for p in programmes:
        v = p.provenance
        slot = f"{v.programming_day_date} #{v.slot_index}" if v.schedule_day_id else "-"
        rows.append(
            [_status(p), render.when(p.start_utc_ms, local), render.when(p.end_utc_ms, local), p.title,
             p.program_id or "-", str(v.generation_id) if v.block_ids else "-",
             " ".join(v.block_ids) or "-", slot, v.override_record_id or ""]
        )  # fmt: skip
    return rows


def cmd_guide(ctl: Ctl) -> int:
    a = ctl.args
    start, end = ctl.time_range()
    stub = gd_grpc.GuideServiceStub(ctl.channel)
    reply = ctl.call(
        stub.GetGuide, gd.GetGuideRequest(channel_ids=[a.channel], start_utc_ms=start, end_utc_ms=end)
    )

    def human() -> str:
        g = reply.channels[0]
        local = ctl.local
        head = (
            f"channel {g.channel.channel_id} ({g.channel.guide_id})"
            f"  now {render.when(reply.now_utc_ms, local)}"
            f"  generation {g.generation_id}"
            f"  published until {render.when_or_dash(g.covered_until_utc_ms, local)}"
            f"  planned until {render.when_or_dash(g.planned_until_utc_ms, local)}"
        )
        if not g.programmes:
            return head + "\nno programmes in the range"
        return head + "\n" + render.table(GUIDE_HEADERS, programme_rows(g.programmes, ctl.local))

    ctl.emit(reply, human)
    return 0


def now_next(ctl: Ctl, channel_id: str) -> gd.NowNext:
    stub = gd_grpc.GuideServiceStub(ctl.channel)
    reply = ctl.call(stub.GetNowNext, gd.GetNowNextRequest(channel_ids=[channel_id]))
    return reply.channels[0]  # type: ignore[no-any-return]


def now_next_rows(answer: gd.NowNext, now: int, local: bool) -> list[list[str]]:
    """GetNowNext's answer as `now`'s first lines: the programme on air (with
    its actual start where an engine reported it) and the next."""

    def describe(p: gd.Programme | None) -> str:
        if p is None:
            return "nothing"
        blocks = " ".join(p.provenance.block_ids) or "planned, not yet published"
        return (
            f"{p.title!r} [{render.when(p.start_utc_ms, local)}, {render.when(p.end_utc_ms, local)}) "
            f"{_status(p)}, generation {p.provenance.generation_id}: {blocks}"
        )

    on_air = answer.on_air if answer.HasField("on_air") else None
    nxt = answer.next if answer.HasField("next") else None
    started = "-"
    if answer.actual_start_utc_ms:
        late = answer.actual_start_utc_ms - on_air.start_utc_ms if on_air else 0
        sign = "+" if late >= 0 else "-"
        off = f"{sign}{human_duration(abs(late))}" if late else "on time"
        engine = answer.actual_start_engine_id
        started = f"{render.when(answer.actual_start_utc_ms, local)} ({off}, as-run of {engine})"
    return [
        ["programme", describe(on_air)],
        ["started", started],
        ["programme left", human_duration(on_air.end_utc_ms - now) if on_air else "-"],
        ["next programme", describe(nxt)],
    ]


def register(add: Callable[[str, Callable[[Ctl], int], str], argparse.ArgumentParser]) -> None:
    p = add("guide", cmd_guide, "a channel's guide: its programmes with status and provenance (GetGuide)")
    p.add_argument("channel")
    p.add_argument("--from", dest="start", default="-1h", help="start (default -1h)")
    p.add_argument("--to", dest="end", default="+1d", help="end, at most 15 days after --from (default +1d)")
