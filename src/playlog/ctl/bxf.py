"""playlog ctl's BXF commands (SPEC section 16), over the same gRPC API:

`bxf import FILE --channel C`: a traffic system's schedule, one publish per
broadcast day, the window diff first (`--dry-run`: only that, and the
server's verdict), nothing written unless every day passes.
`bxf export-as-run --channel C --from T --to T [-o FILE]`: the as-run of a
range as a BXF message, validated with `--xsd DIR` before it is written.

The profile (`--frame-rate`, `--zone`, `--day-start`, `--df-separator`) says
what a BXF file does not; a file that does not fit it is refused, naming the
event (exit 1), never guessed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import grpc

from playlog.bxf.as_run import SchemaSet, build_as_run
from playlog.bxf.parse import BxfError, parse_schedule
from playlog.bxf.schedule import DayPublish, Import, Profile, build_import, check_window, profile
from playlog.ctl import render
from playlog.ctl.connect import UsageError, bxf_profile
from playlog.ctl.timefmt import iso_utc
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from playlog.ctl.main import Ctl

DEFAULT_REASON = "BXF_IMPORT"


# Where neither a flag nor the profile says.
PROFILE_DEFAULTS = {"zone": "UTC", "day_start": "00:00", "df_separator": ";"}


def _profile(a: argparse.Namespace, rate: str = "") -> Profile:
    """The profile of the flags, else of `--profile NAME` in the ctl config,
    else the defaults; the frame rate has no default (`rate`: export's
    fallback, the rate the entries were imported at)."""
    named = bxf_profile(a.profile) if a.profile else {}
    values = {
        key: getattr(a, key) or named.get(key) or PROFILE_DEFAULTS.get(key, "")
        for key in ("frame_rate", "zone", "day_start", "df_separator")
    }
    values["frame_rate"] = values["frame_rate"] or rate
    if not values["frame_rate"]:
        raise UsageError(
            "--frame-rate: the import declares it (or a --profile with frame_rate): "
            "a BXF file's timecodes do not say their rate reliably"
        )
    try:
        return profile(values["frame_rate"], values["zone"], values["day_start"], values["df_separator"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _main() -> ModuleType:
    """playlog.ctl.main, which imports this module: looked up when a command runs."""
    return importlib.import_module("playlog.ctl.main")


def _refused(exc: BxfError) -> NoReturn:
    _main()._refusal("BXF", str(exc))
    raise AssertionError("unreachable")  # _refusal raises Refused


def _day_diff(ctl: Ctl, channel_id: str, day: DayPublish, generation: int) -> list[list[str]]:
    """The day's publish as the window diff `publish --dry-run` shows: the
    entries it replaces (-) and those it adds (+) at the generation it would get."""
    snap = ctl.read_window(channel_id, day.range_start_utc_ms, day.range_end_utc_ms)
    replaced = [
        pb.SupersededEntry(
            block_id=e.block_id,
            generation_id=e.generation_id,
            start_utc_ms=e.start_utc_ms,
            end_utc_ms=e.end_utc_ms,
        )
        for e in snap.entries
    ]
    written = [pb.ExecutionEntry(generation_id=generation) for _ in day.entries]
    for w, e in zip(written, day.entries, strict=True):
        w.MergeFrom(e)
    rows: list[list[str]] = _main()._window_diff(
        pb.PublishResult(would_supersede=replaced, would_write=written)
    )
    return rows


def _request(a: argparse.Namespace, day: DayPublish, validate_only: bool) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=a.channel,
        range_start_utc_ms=day.range_start_utc_ms,
        range_end_utc_ms=day.range_end_utc_ms,
        entries=day.entries,
        reason_code=a.reason or DEFAULT_REASON,
        operator_override=a.override,
        validate_only=validate_only,
    )


def _day_exists(ctl: Ctl, channel_id: str, date: str) -> bool:
    try:
        ctl.call(
            ctl.days.GetScheduleDay,
            sd.GetScheduleDayRequest(channel_id=channel_id, programming_day_date=date),
        )
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def cmd_import(ctl: Ctl) -> int:
    a = ctl.args
    if a.override and not a.reason:
        raise UsageError("an override needs --reason")
    try:
        data = Path(a.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{a.file}: {exc.strerror}") from None
    p = _profile(a)
    try:
        imp = build_import(parse_schedule(data), p, a.channel)
    except BxfError as exc:
        _refused(exc)
    channel = ctl.call(ctl.channels.GetChannel, ch.GetChannelRequest(channel_id=a.channel)).channel
    now = ctl.server_now()
    _show_diff(ctl, a.channel, imp, p, channel.current_generation_id)
    try:
        check_window(imp, now, now + channel.locked_window_ms, a.override)
    except BxfError as exc:
        _refused(exc)
    # Every day is checked by the server (validate_only) before any is written:
    # a refused day leaves the whole import unwritten.
    missing = {d.broadcast_date for d in imp.days if not _day_exists(ctl, a.channel, d.broadcast_date)}
    for day in imp.days:
        result = ctl.call(ctl.windows.PublishAtomicReplace, _request(a, day, validate_only=True))
        # A day with no ScheduleDay yet is refused as untraceable only because
        # the import stores it first: every earlier check has passed.
        untraceable = result.error_code == pb.ERROR_CODE_DERIVATION_UNTRACEABLE
        if not result.ok and not (untraceable and day.broadcast_date in missing):
            _main()._refusal(
                pb.ErrorCode.Name(result.error_code),
                f"broadcast day {day.broadcast_date} (events {day.entries[0].block_id} to "
                f"{day.entries[-1].block_id}): {result.error_detail}",
            )
    if a.dry_run:
        ctl.out(f"dry run: nothing written; {len(imp.days)} publish(es) would pass")
        return 0
    plan_id = f"bxf:{imp_plan(a.file, data)}"
    for day in imp.days:
        if day.broadcast_date in missing:
            stored = ctl.call(
                ctl.days.StoreScheduleDay,
                sd.StoreScheduleDayRequest(
                    schedule_day=day.schedule_day(a.channel, plan_id), reason_code=a.reason or DEFAULT_REASON
                ),
            )
            if not stored.ok:
                _main()._refusal(pb.ErrorCode.Name(stored.error_code), stored.error_detail)
            ctl.out(f"stored ScheduleDay {stored.schedule_day.id} for {day.broadcast_date} (plan {plan_id})")
        result = ctl.call(ctl.windows.PublishAtomicReplace, _request(a, day, validate_only=False))
        if not result.ok:
            _main()._refusal(
                pb.ErrorCode.Name(result.error_code),
                f"broadcast day {day.broadcast_date}: {result.error_detail}",
            )
        record = f", override record {result.override_record_id}" if result.override_record_id else ""
        ctl.out(
            f"published broadcast day {day.broadcast_date}: {len(day.entries)} events, "
            f"generation {result.published_generation_id}{record}"
        )
    return 0


def imp_plan(path: str, data: bytes) -> str:
    """The plan id of an imported file: its name and content hash, so that the
    derivation chain names the very file (LAW-DERIVATION)."""
    import hashlib

    return f"{Path(path).name}:{hashlib.sha256(data).hexdigest()[:12]}"


def _show_diff(ctl: Ctl, channel_id: str, imp: Import, p: Profile, generation: int) -> None:
    """The import's window diff, day by day; each day's publish is the next generation."""
    secondary = f"; {imp.secondary} secondary event(s) counted, not imported" if imp.secondary else ""
    ctl.out(
        f"BXF schedule for {channel_id}: {len(imp.entries)} primary event(s) in {len(imp.days)} broadcast "
        f"day(s) at {p.rate}, zone {p.zone_name}, day start {p.day_start}{secondary}"
    )
    for i, day in enumerate(imp.days, start=1):
        ctl.out(
            f"broadcast day {day.broadcast_date}: [{iso_utc(day.range_start_utc_ms)}, "
            f"{iso_utc(day.range_end_utc_ms)}) {len(day.entries)} events, {day.secondary} secondary"
        )
        ctl.out(
            render.table(
                ["", "BLOCK", "GEN", "START", "END", "TITLE"], _day_diff(ctl, channel_id, day, generation + i)
            )
        )
    if imp.secondary_ids:
        ctl.out("secondary events (not imported): " + " ".join(imp.secondary_ids))


def cmd_export_as_run(ctl: Ctl) -> int:
    a = ctl.args
    start, end = ctl.time_range()
    snap = ctl.read_window(a.channel, start, end)
    # Without --frame-rate (or a profile's), the rate the range's entries were imported at.
    imported = next(
        (
            f"{t.frame_rate}{'df' if t.drop_frame else ''}"
            for t in (e.source_timecode for e in snap.entries)
            if t.frame_rate
        ),
        "",
    )
    p = _profile(a, imported)
    schemas = None
    if a.xsd:
        try:
            schemas = SchemaSet(a.xsd)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    merged = _main()._all_pages(
        ctl,
        ctl.engines.ListAsRun,
        eng.ListAsRunRequest(channel_id=a.channel, start_utc_ms=start, end_utc_ms=end),
        eng.ListAsRunResponse(),
    )
    try:
        document = build_as_run(
            a.channel,
            start,
            end,
            snap.now_utc_ms or ctl.server_now(),
            snap.entries,
            merged.records,
            p,
            **({"namespace": schemas.namespace} if schemas else {}),
        )
    except BxfError as exc:
        _refused(exc)
    if schemas is not None:
        try:
            schemas.validate(document)
        except BxfError as exc:
            _refused(exc)
    if a.out and a.out != "-":
        Path(a.out).write_bytes(document)
        print(f"wrote {a.out}: {len(merged.records)} as-run event(s) of {a.channel}", file=sys.stderr)
    else:
        sys.stdout.write(document.decode())
        sys.stdout.flush()
    return 0


def _profile_flags(p: argparse.ArgumentParser, export: bool) -> None:
    g = p.add_argument_group("profile (what the BXF file does not say; flags beat --profile)")
    g.add_argument("--profile", help="a [bxf.profiles.NAME] table of the ctl config file")
    g.add_argument(
        "--frame-rate",
        help="23.976, 24, 25, 29.97, 29.97df, 30, 50, 59.94, 59.94df or 60"
        + (
            " (default: the rate the entries were imported at)"
            if export
            else " (required, or in the profile)"
        ),
    )
    g.add_argument("--zone", help="the zone of the file's local times (default UTC)")
    g.add_argument("--day-start", help="broadcast day start, HH:MM local (default 00:00)")
    g.add_argument("--df-separator", help="the separator before a drop-frame label's frames (default ;)")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`bxf import` and `bxf export-as-run`; `common` holds the connection
    options without -o, which export-as-run takes for its output file."""
    p = sub.add_parser(
        "bxf", help="BXF (SMPTE ST 2021): import a schedule, export the as-run", parents=[common]
    )
    bxf = p.add_subparsers(dest="bxf_command", required=True, metavar="import|export-as-run")
    imp = bxf.add_parser(
        "import", help="publish a BXF schedule, one publish per broadcast day", parents=[common]
    )
    imp.set_defaults(func=cmd_import)
    imp.add_argument("file", help="the BXF schedule message")
    imp.add_argument("--channel", required=True)
    _profile_flags(imp, export=False)
    imp.add_argument("--dry-run", action="store_true", help="show the window diff and the verdict only")
    imp.add_argument("--override", action="store_true", help="operator override (needs --reason)")
    imp.add_argument("--reason", help=f"reason code (default {DEFAULT_REASON})")
    exp = bxf.add_parser("export-as-run", help="the as-run of a range as a BXF message", parents=[common])
    exp.set_defaults(func=cmd_export_as_run)
    exp.add_argument("--channel", required=True)
    exp.add_argument("--from", dest="start", default="-1d", help="start (default -1d)")
    exp.add_argument("--to", dest="end", default="now", help="end (default now)")
    exp.add_argument("-o", "--out", help="write the message here (default: stdout)")
    exp.add_argument("--xsd", help="directory of the operator's copy of SMPTE's BXF schemas: validate first")
    _profile_flags(exp, export=True)
