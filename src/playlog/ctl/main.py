"""playlog ctl: operate a playlog server over its gRPC API (as etcdctl or kubectl do).

Exit status: 0 done; 1 refused (a result with ok = false, or a domain gRPC status
such as NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT: the code and the reason go
to stderr); 2 usage or transport error (bad flags, UNAVAILABLE, DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from playlog.ctl import bxf, guide, render
from playlog.ctl.completion import bash_completion
from playlog.ctl.connect import Target, UsageError, metadata, open_channel, resolve
from playlog.ctl.timefmt import BadValue, human_duration, is_relative, iso_utc, parse_duration, parse_time
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import audit_service_pb2_grpc as audit_grpc
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import clock_service_pb2_grpc as clk_grpc
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import engine_service_pb2_grpc as eng_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb

# Entries per page of `ctl window` and `ctl now` reads.
READ_PAGE_SIZE = 1000

PROG = "playlog ctl"
EPILOG = """\
times: ISO-8601 (2026-11-22T02:30:00Z; no offset means UTC), epoch ms, or relative
to the server's now (now, +30m, -2h, +1d); durations: 90s, 30m, 1h, 2d, 1h30m.
connection: --server/PLAYLOG_SERVER (default 127.0.0.1:50051), --token/PLAYLOG_TOKEN,
--ca-cert/--client-cert/--client-key (PLAYLOG_CA_CERT, PLAYLOG_CLIENT_CERT,
PLAYLOG_CLIENT_KEY), or a named context of ~/.config/playlog/ctl.toml
(PLAYLOG_CTL_CONFIG; --context NAME). Flags beat environment beat the context.
exit status: 0 done, 1 refused, 2 usage or transport error (verify, and
reconcile with --fail-on-discrepancy, also exit 1 when they find something).
Shell completion: eval "$(playlog ctl completion bash)".
"""

# gRPC statuses that say the call never got a domain answer: exit 2. Every other
# non-OK status is the server refusing the request: exit 1.
TRANSPORT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}


class Refused(Exception):
    """A domain refusal, already explained: exit status 1."""


class Ctl:
    """One invocation: the connection, the stubs, the output mode."""

    def __init__(self, args: argparse.Namespace, target: Target) -> None:
        self.args = args
        self.target = target
        self.channel = open_channel(target)
        self.md = metadata(target)
        self.timeout = target.timeout_s
        self.json = getattr(args, "output", "table") == "json"
        self.local = bool(getattr(args, "local", False))
        self.channels = ch_grpc.ChannelServiceStub(self.channel)
        self.windows = ew_grpc.ExecutionWindowServiceStub(self.channel)
        self.days = sd_grpc.ScheduleDayServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)
        self.clock = clk_grpc.ClockServiceStub(self.channel)
        self.engines = eng_grpc.EngineServiceStub(self.channel)
        self._now: int | None = None

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        return method(request, timeout=self.timeout, metadata=self.md)

    def read_window(self, channel_id: str, start: int, end: int) -> pb.WindowSnapshot:
        """The whole range, read in pages (AIP-158) and joined: every page of
        one generation (a publish between pages is ABORTED: read again)."""
        for attempt in range(3):
            snap: pb.WindowSnapshot | None = None
            token = ""
            try:
                while True:
                    page = self.call(
                        self.windows.ReadWindowSnapshot,
                        ew.ReadWindowSnapshotRequest(
                            channel_id=channel_id,
                            start_utc_ms=start,
                            end_utc_ms=end,
                            page_size=READ_PAGE_SIZE,
                            page_token=token,
                        ),
                    )
                    if snap is None:
                        snap = page
                    else:
                        snap.entries.extend(page.entries)
                        snap.generation_id = max(snap.generation_id, page.generation_id)
                    token = page.next_page_token
                    if not token:
                        snap.next_page_token = ""
                        return snap
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def server_now(self) -> int:
        """The server's current time (ClockService.GetTime), else the local clock."""
        if self._now is None:
            try:
                reply = self.clock.GetTime(
                    clk.GetTimeRequest(), timeout=min(self.timeout, 5.0), metadata=self.md
                )
                self._now = int(reply.now_utc_ms)
            except grpc.RpcError:
                self._now = int(time.time() * 1000)
        return self._now

    def time(self, text: str) -> int:
        return parse_time(text, self.server_now() if is_relative(text) else None)

    def time_range(self) -> tuple[int, int]:
        """--from and --to, the first before the second."""
        a = self.args
        start, end = self.time(a.start), self.time(a.end)
        if start >= end:
            raise UsageError(f"--from {a.start} is not before --to {a.end}")
        return start, end

    def out(self, text: str) -> None:
        print(text, flush=True)

    def emit(self, msg: Message, human: Callable[[], str]) -> None:
        self.out(render.to_json(msg) if self.json else human())


# -- files ------------------------------------------------------------------------------------


def _load_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from None


def _parse(value: Any, msg: Message, path: str) -> Any:
    try:
        return json_format.ParseDict(value, msg)
    except json_format.ParseError as exc:
        raise UsageError(f"{path}: not a {msg.DESCRIPTOR.full_name}: {exc}") from None


# -- results ----------------------------------------------------------------------------------


def _checked(ctl: Ctl, result: Any) -> bool:
    """A result with ok / error_code / error_detail: its JSON (-o json), then a
    refusal when not ok. True when the human output is still to be printed."""
    if ctl.json:
        ctl.out(render.to_json(result))
    if not result.ok:
        _refusal(pb.ErrorCode.Name(result.error_code), result.error_detail)
    return not ctl.json


def _publish_result(ctl: Ctl, result: pb.PublishResult) -> int:
    if not _checked(ctl, result):
        return 0
    if result.validate_only:
        ctl.out(f"dry run: nothing written; it would publish generation {result.published_generation_id}")
        ctl.out(render.table(["", "BLOCK", "GEN", "START", "END", "TITLE"], _window_diff(result)))
        return 0
    record = f", override record {result.override_record_id}" if result.override_record_id else ""
    ctl.out(f"published generation {result.published_generation_id}{record}")
    return 0


def _window_diff(result: pb.PublishResult) -> list[list[str]]:
    """What a dry run would do to the window, as a diff: `-` an entry removed,
    `~` the entry on air cut (same block, ending earlier), `+` an entry added."""
    written = {e.block_id: e for e in result.would_write}
    rows: list[list[str]] = []
    for old in result.would_supersede:
        kept = written.get(old.block_id)
        if kept is not None and kept.start_utc_ms == old.start_utc_ms and kept.end_utc_ms < old.end_utc_ms:
            rows.append(
                ["~", old.block_id, f"{old.generation_id}->{kept.generation_id}", iso_utc(old.start_utc_ms),
                 f"{iso_utc(old.end_utc_ms)} -> {iso_utc(kept.end_utc_ms)} (cut)", render.title_of(kept)]
            )  # fmt: skip
        else:
            rows.append(["-", old.block_id, str(old.generation_id), iso_utc(old.start_utc_ms),
                         iso_utc(old.end_utc_ms), ""])  # fmt: skip
    cut = {r[1] for r in rows if r[0] == "~"}
    for e in result.would_write:
        if e.block_id not in cut:
            start, end = iso_utc(e.start_utc_ms), iso_utc(e.end_utc_ms)
            rows.append(["+", e.block_id, str(e.generation_id), start, end, render.title_of(e)])
    return rows


def _refusal(code: str, detail: str) -> None:
    print(f"{PROG}: refused: {code}: {detail}", file=sys.stderr)
    raise Refused


# -- commands ---------------------------------------------------------------------------------


def cmd_channels(ctl: Ctl) -> int:
    reply = ctl.call(ctl.channels.ListChannels, ch.ListChannelsRequest())
    rows = [
        [
            c.channel_id,
            human_duration(c.locked_window_ms),
            str(c.current_generation_id),
            *guide.channel_columns(c),
        ]
        for c in reply.channels
    ]
    ctl.emit(reply, lambda: render.table(["CHANNEL", "LOCK", "GENERATION", *guide.CHANNEL_HEADERS], rows))
    return 0


def cmd_declare(ctl: Ctl) -> int:
    a = ctl.args
    reply = ctl.call(
        ctl.channels.DeclareChannel,
        ch.DeclareChannelRequest(
            channel_id=a.channel,
            locked_window_ms=parse_duration(a.lock),
            reason_code=a.reason or "",
            **guide.metadata_of(a),
        ),
    )

    def human() -> str:
        c = reply.channel
        what = "declared" if reply.changed else "unchanged"
        record = f", override record {reply.override_record_id}" if reply.override_record_id else ""
        return f"channel {c.channel_id} {what}: lock {human_duration(c.locked_window_ms)}{record}"

    ctl.emit(reply, human)
    return 0


def cmd_window(ctl: Ctl) -> int:
    a = ctl.args
    start, end = ctl.time_range()
    snap = ctl.read_window(a.channel, start, end)

    def human() -> str:
        head = (
            f"channel {snap.channel_id}  now {render.when(snap.now_utc_ms, ctl.local)}  "
            f"locked until {render.when(snap.locked_until_utc_ms, ctl.local)}  "
            f"generation {snap.channel_generation_id}"
        )
        if not snap.entries:
            return head + f"\nno entries in [{iso_utc(start)}, {iso_utc(end)})"
        headers, rows = render.entry_rows(snap.entries, snap.now_utc_ms, snap.locked_until_utc_ms, ctl.local)
        return head + "\n" + render.table(headers, rows)

    ctl.emit(snap, human)
    return 0


def cmd_now(ctl: Ctl) -> int:
    a = ctl.args
    now = ctl.server_now()
    snap = ctl.read_window(a.channel, now, now + parse_duration(a.horizon))
    now, lock = snap.now_utc_ms, snap.locked_until_utc_ms
    programmes = guide.now_next(ctl, a.channel)
    ahead = [e for e in snap.entries if e.end_utc_ms > now]
    on_air = next((e for e in ahead if e.start_utc_ms <= now), None)
    upcoming = [e for e in ahead if e.start_utc_ms > now]
    nxt = upcoming[0] if upcoming else None
    to_lock = next((e for e in upcoming if e.start_utc_ms >= lock), None)
    # Runway: how far ahead of now entries are published (the end of the run of
    # entries that starts with the first one not yet ended).
    runway_end = ahead[0].end_utc_ms if ahead else now
    for e in ahead[1:]:
        if e.start_utc_ms > runway_end:
            break
        runway_end = e.end_utc_ms
    runway = runway_end - now
    if ctl.json:
        ctl.out(
            render.dumps(
                {
                    "channel_id": snap.channel_id,
                    "now_utc_ms": str(now),
                    "locked_until_utc_ms": str(lock),
                    "channel_generation_id": str(snap.channel_generation_id),
                    "on_air": render.to_dict(on_air) if on_air else None,
                    "next": render.to_dict(nxt) if nxt else None,
                    "next_to_lock_block_id": to_lock.block_id if to_lock else "",
                    "time_to_lock_ms": str(to_lock.start_utc_ms - lock) if to_lock else None,
                    "runway_ms": str(runway),
                    "now_next": render.to_dict(programmes),
                }
            )
        )
        return 0

    def describe(e: pb.ExecutionEntry | None) -> str:
        if e is None:
            return "nothing"
        title = render.title_of(e)
        return (
            f"{e.block_id} [{render.when(e.start_utc_ms, ctl.local)}, {render.when(e.end_utc_ms, ctl.local)})"
            f" generation {e.generation_id}{' override' if e.is_operator_override else ''}"
            f"{f' {title!r}' if title else ''}"
        )

    rows = [
        ["channel", snap.channel_id],
        ["now", render.when(now, ctl.local)],
        *guide.now_next_rows(programmes, now, ctl.local),
        ["on air", describe(on_air)],
        ["left on air", human_duration(on_air.end_utc_ms - now) if on_air else "-"],
        ["next", describe(nxt)],
        ["locked until", f"{render.when(lock, ctl.local)} ({human_duration(lock - now)} ahead)"],
        [
            "time to lock",
            f"{human_duration(to_lock.start_utc_ms - lock)} ({to_lock.block_id} locks next)"
            if to_lock
            else f"- (no flexible entry within {a.horizon})",
        ],
        [
            "runway",
            f"{human_duration(runway)} (published until {render.when(runway_end, ctl.local)})"
            + (
                f"; at least, read {a.horizon} ahead" if runway_end >= now + parse_duration(a.horizon) else ""
            ),
        ],
    ]
    ctl.out("\n".join(f"{k + ':':16}{v}" for k, v in rows))
    return 0


def cmd_publish(ctl: Ctl) -> int:
    a = ctl.args
    req = _parse(_load_json(a.file), ew.PublishAtomicReplaceRequest(), a.file)
    _override_flags(req, a)
    return _publish_result(ctl, ctl.call(ctl.windows.PublishAtomicReplace, req))


def _override_flags(req: Any, a: argparse.Namespace) -> None:
    if a.override:
        req.operator_override = True
    if a.reason:
        req.reason_code = a.reason
    if req.operator_override and not req.reason_code:
        raise UsageError("an override needs --reason")
    if a.dry_run:
        req.validate_only = True


def cmd_replace(ctl: Ctl) -> int:
    a = ctl.args
    value = _load_json(a.file)
    if isinstance(value, dict) and "entry" in value:
        value = value["entry"]
    entry = _parse(value, pb.ExecutionEntry(), a.file)
    req = ew.ReplaceEntryRequest(channel_id=a.channel, block_id=a.block, entry=entry)
    _override_flags(req, a)
    return _publish_result(ctl, ctl.call(ctl.windows.ReplaceEntry, req))


def cmd_cut(ctl: Ctl) -> int:
    a = ctl.args
    value = _load_json(a.file)
    if isinstance(value, dict):
        value = value.get("entries", [value])
    if not isinstance(value, list) or not value:
        raise UsageError(f"{a.file}: expected a JSON list of entries (or {{'entries': [...]}})")
    entries = [_parse(v, pb.ExecutionEntry(), a.file) for v in value]
    at = ctl.time(a.at)
    req = ew.PublishAtomicReplaceRequest(
        channel_id=a.channel,
        range_start_utc_ms=at,
        range_end_utc_ms=max(e.end_utc_ms for e in entries),
        entries=entries,
        operator_override=True,
        reason_code=a.reason,
        validate_only=a.dry_run,
    )
    return _publish_result(ctl, ctl.call(ctl.windows.PublishAtomicReplace, req))


def _all_pages(ctl: Ctl, method: Callable[..., Any], request: Any, merged: Any, limit: int = 0) -> Any:
    """Every page of a List call (its `records` and `next_page_token`) merged into
    `merged`; with `limit`, at most that many records, the last page asked for
    just big enough that `next_page_token` says where the rest would start."""
    size = request.page_size
    while True:
        if limit:
            request.page_size = min(size or limit, limit - len(merged.records))
        page = ctl.call(method, request)
        merged.records.extend(page.records)
        merged.next_page_token = request.page_token = page.next_page_token
        if not page.next_page_token or (limit and len(merged.records) >= limit):
            return merged


def cmd_records(ctl: Ctl) -> int:
    a = ctl.args
    merged = _all_pages(
        ctl,
        ctl.audit.ListOverrideRecords,
        audit.ListOverrideRecordsRequest(channel_id=a.channel or "", page_size=a.page_size),
        audit.ListOverrideRecordsResponse(),
    )

    def superseded(r: pb.OverrideRecord) -> str:
        s = r.superseded
        parts = [f"{e.block_id}@{e.generation_id}" for e in s.entries]
        if s.schedule_day_id:
            parts.append(f"day {s.schedule_day_id}")
        if s.previous_locked_window_ms:
            parts.append(f"lock {human_duration(s.previous_locked_window_ms)}")
        return " ".join(parts)

    rows = [
        [
            render.when(r.created_utc_ms, ctl.local),
            r.id,
            render.enum_name(pb.OverrideLayer, r.layer, "OVERRIDE_LAYER_").lower(),
            r.channel_id,
            r.target,
            str(r.resulting_generation_id),
            r.reason_code,
            r.actor,
            superseded(r),
        ]
        for r in merged.records
    ]
    headers = ["CREATED", "ID", "LAYER", "CHANNEL", "TARGET", "GEN", "REASON", "ACTOR", "SUPERSEDED"]
    ctl.emit(merged, lambda: render.table(headers, rows))
    return 0


def _day_row(d: pb.ScheduleDay, local: bool) -> list[str]:
    return [
        d.id,
        d.programming_day_date,
        d.plan_id,
        "manual" if d.is_manual_override else "",
        "yes" if d.is_authoritative else "no",
        d.supersedes_id,
        render.when(d.resolved_utc_ms, local) if d.resolved_utc_ms else "",
        str(len(d.slots)),
        d.override_record_id,
    ]


DAY_HEADERS = ["ID", "DATE", "PLAN", "MANUAL", "AUTHORITATIVE", "SUPERSEDES", "RESOLVED", "SLOTS", "RECORD"]


def cmd_days(ctl: Ctl) -> int:
    a = ctl.args
    if a.history:
        hist = ctl.call(
            ctl.days.ListScheduleDayHistory,
            sd.ListScheduleDayHistoryRequest(channel_id=a.channel, programming_day_date=a.date),
        )
        ctl.emit(
            hist, lambda: render.table(DAY_HEADERS, [_day_row(d, ctl.local) for d in hist.schedule_days])
        )
        return 0
    got = ctl.call(
        ctl.days.GetScheduleDay, sd.GetScheduleDayRequest(channel_id=a.channel, programming_day_date=a.date)
    )

    def human() -> str:
        d = got.schedule_day
        slots = [
            [
                render.when(s.start_utc_ms, ctl.local),
                render.when(s.end_utc_ms, ctl.local),
                s.program_id,
                s.title,
            ]
            for s in d.slots
        ]
        return (
            render.table(DAY_HEADERS, [_day_row(d, ctl.local)])
            + "\n\n"
            + render.table(["START", "END", "PROGRAM", "TITLE"], slots)
        )

    ctl.emit(got, human)
    return 0


def cmd_store_day(ctl: Ctl) -> int:
    a = ctl.args
    value = _load_json(a.file)
    if isinstance(value, dict) and "schedule_day" in value:
        req = _parse(value, sd.StoreScheduleDayRequest(), a.file)
    else:
        req = sd.StoreScheduleDayRequest(schedule_day=_parse(value, pb.ScheduleDay(), a.file))
    if a.reason:
        req.reason_code = a.reason
    result = ctl.call(ctl.days.StoreScheduleDay, req)
    if _checked(ctl, result):
        d = result.schedule_day
        ctl.out(f"stored ScheduleDay {d.id} for {d.channel_id} {d.programming_day_date} (plan {d.plan_id})")
    return 0


def _event_line(ev: pb.WindowEvent, local: bool) -> tuple[str, int]:
    """One human line per event, and the generation it brings the watcher to (0: none)."""
    kind = ev.WhichOneof("event")
    if kind == "snapshot":
        s = ev.snapshot
        flags = "".join([", reset" if s.reset else "", ", complete" if s.complete else ""])
        blocks = " ".join(e.block_id for e in s.entries)
        return (
            f"{render.when(s.now_utc_ms, local)}  snapshot    generation {s.channel_generation_id}, "
            f"{len(s.entries)} entries, locked until {render.when(s.locked_until_utc_ms, local)}{flags}"
            f"{': ' + blocks if blocks else ''}",
            s.channel_generation_id if s.complete else 0,
        )
    if kind == "replaced":
        r = ev.replaced
        override = f", override {r.override_record_id}" if r.operator_override else ""
        return (
            f"{render.when(r.committed_utc_ms, local)}  replaced    generation {r.generation_id} "
            f"(after {r.previous_generation_id}) [{render.when(r.range_start_utc_ms, local)}, "
            f"{render.when(r.range_end_utc_ms, local)}) reason {r.reason_code or '-'}{override}: "
            + (" ".join(e.block_id for e in r.entries) or "(no entries)"),
            r.generation_id,
        )
    p = ev.progress
    return (
        f"{render.when(p.now_utc_ms, local)}  progress    generation {p.channel_generation_id}, "
        f"locked until {render.when(p.locked_until_utc_ms, local)}",
        0,
    )


def cmd_watch(ctl: Ctl) -> int:
    a = ctl.args
    stream = ctl.windows.WatchWindow(
        ew.WatchWindowRequest(channel_id=a.channel, after_generation_id=a.after), metadata=ctl.md
    )
    last = a.after
    # Ctrl-C ends the watch even when started where SIGINT was ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for ev in stream:
            if ev.WhichOneof("event") == "progress" and not a.progress:
                continue
            line, generation = _event_line(ev, ctl.local)
            last = generation or last
            ctl.out(render.to_json(ev, indent=None) if ctl.json else line)
    except KeyboardInterrupt:
        stream.cancel()
        return 0
    except grpc.RpcError as exc:
        if exc.code() in TRANSPORT and last:
            print(f"{PROG}: resume with: watch {a.channel} --after {last}", file=sys.stderr)
        raise
    return 0


def cmd_verify(ctl: Ctl) -> int:
    reply = ctl.call(
        ctl.audit.VerifyIntegrity, audit.VerifyIntegrityRequest(channel_id=ctl.args.channel or "")
    )
    rows = [
        [
            render.enum_name(audit.IntegrityViolationKind, v.kind, "INTEGRITY_VIOLATION_KIND_"),
            v.channel_id,
            v.detail,
        ]
        for v in reply.violations
    ]
    ctl.emit(reply, lambda: render.table(["KIND", "CHANNEL", "DETAIL"], rows) if rows else "no violations")
    if reply.violations:
        print(f"{PROG}: {len(reply.violations)} violation(s) found", file=sys.stderr)
        return 1
    return 0


def cmd_engines(ctl: Ctl) -> int:
    a = ctl.args
    reply = ctl.call(ctl.engines.ListEngines, eng.ListEnginesRequest(channel_id=a.channel or ""))
    now, local = ctl.server_now(), ctl.local

    def nack(s: eng.EngineStatus) -> str:
        if not s.last_nack_generation_id:
            return "-"
        at = render.when(s.last_nack_utc_ms, local)
        return f"generation {s.last_nack_generation_id} at {at}: {s.last_nack_detail}"

    def human() -> str:
        head = f"channel {a.channel}  now {render.when(now, local)}  generation {reply.channel_generation_id}"
        if not a.channel:
            head = f"every channel  now {render.when(now, local)}"
        if not reply.engines:
            return head + "\nno engine has acknowledged or reported yet"
        headers = ["ENGINE", "CHANNEL", "APPLIED", "GEN", "BEHIND", "BEHIND SINCE", "LAST ACK",
                   "LAST AS-RUN RECEIVED", "AS-RUN ENDED", "LAST NACK"]  # fmt: skip
        rows = [
            [
                s.engine_id,
                s.channel_id,
                str(s.applied_generation_id),
                str(s.channel_generation_id),
                str(s.generations_behind),
                render.ago(s.behind_since_utc_ms, now, local),
                render.ago(s.last_acknowledged_utc_ms, now, local),
                render.ago(s.last_as_run_received_utc_ms, now, local),
                render.when_or_dash(s.last_as_run_ended_utc_ms, local),
                nack(s),
            ]
            for s in reply.engines
        ]
        return head + "\n" + render.table(headers, rows)

    ctl.emit(reply, human)
    return 0


AS_RUN_HEADERS = ["START", "END", "BLOCK", "GEN", "SEGMENT", "ASSET", "STATUS", "ENGINE", "TRACED", "EVENT",
                  "DETAIL"]  # fmt: skip


def cmd_as_run(ctl: Ctl) -> int:
    a = ctl.args
    if a.limit < 0 or a.page_size < 0:
        raise UsageError("--limit and --page-size are counts (0: no limit, the server's page size)")
    start, end = ctl.time_range()
    merged = _all_pages(
        ctl,
        ctl.engines.ListAsRun,
        eng.ListAsRunRequest(
            channel_id=a.channel, start_utc_ms=start, end_utc_ms=end, engine_id=a.engine or "",
            page_size=a.page_size,
        ),
        eng.ListAsRunResponse(),
        a.limit,
    )  # fmt: skip

    def human() -> str:
        if not merged.records:
            return f"no as-run in [{iso_utc(start)}, {iso_utc(end)})"
        rows = [
            [
                render.when(r.event.started_utc_ms, ctl.local),
                render.when(r.event.ended_utc_ms, ctl.local),
                r.event.block_id,
                str(r.event.generation_id),
                r.event.segment_id or "-",
                r.event.asset_uri or "-",
                render.enum_name(eng.AsRunStatus, r.event.status, "AS_RUN_STATUS_"),
                r.engine_id,
                "yes" if r.traced else "NO",
                r.event.event_id,
                r.event.detail,
            ]
            for r in merged.records
        ]
        more = (
            f"\n(--limit {a.limit} reached: there is more as-run in the range)"
            if merged.next_page_token
            else ""
        )
        return render.table(AS_RUN_HEADERS, rows) + more

    ctl.emit(merged, human)
    return 0


def cmd_reconcile(ctl: Ctl) -> int:
    a = ctl.args
    start, end = ctl.time_range()
    reply = ctl.call(
        ctl.engines.ReconcileAsRun,
        eng.ReconcileAsRunRequest(channel_id=a.channel, start_utc_ms=start, end_utc_ms=end),
    )
    found = len(reply.discrepancies)

    def actual(d: eng.Discrepancy) -> str:
        if not d.actual_utc_ms:
            return "-"
        off = d.actual_utc_ms - d.expected_utc_ms
        sign = "+" if off >= 0 else ""
        return render.when(d.actual_utc_ms, ctl.local) + (
            f" ({sign}{human_duration(off)})" if d.expected_utc_ms else ""
        )

    def human() -> str:
        lines = [
            f"channel {a.channel}  [{render.when(start, ctl.local)}, {render.when(end, ctl.local)})  "
            f"blocks due {reply.blocks_due}  as-run events {reply.as_run_events}  "
            f"tolerance {human_duration(reply.tolerance_ms)}"
        ]
        if reply.discrepancies:
            headers = ["KIND", "BLOCK", "GEN", "ENGINE", "EVENT", "EXPECTED", "ACTUAL", "DETAIL"]
            rows = [
                [
                    render.enum_name(eng.DiscrepancyKind, d.kind, "DISCREPANCY_KIND_"),
                    d.block_id,
                    str(d.generation_id),
                    d.engine_id or "-",
                    d.event_id or "-",
                    render.when_or_dash(d.expected_utc_ms, ctl.local),
                    actual(d),
                    d.detail,
                ]
                for d in reply.discrepancies
            ]
            lines.append(render.table(headers, rows))
        lines.append(f"{found} discrepanc{'y' if found == 1 else 'ies'}")
        if reply.detail:
            lines.append(f"not judged: {reply.detail}")
        return "\n".join(lines)

    ctl.emit(reply, human)
    if found and a.fail_on_discrepancy:
        print(f"{PROG}: {found} discrepanc{'y' if found == 1 else 'ies'} found", file=sys.stderr)
        return 1
    return 0


def cmd_ack(ctl: Ctl) -> int:
    a = ctl.args
    if a.nack and not a.detail:
        raise UsageError("a NACK needs --detail saying why")
    result = ctl.call(
        ctl.engines.AcknowledgeWindow,
        eng.AcknowledgeWindowRequest(
            channel_id=a.channel,
            applied_generation_id=a.generation,
            accepted=not a.nack,
            detail=a.detail or "",
        ),
    )
    if _checked(ctl, result):
        what = "refused (NACK)" if a.nack else "applied"
        ctl.out(
            f"generation {a.generation} {what} at {render.when(result.acknowledged_utc_ms, ctl.local)}; "
            f"the channel is at generation {result.channel_generation_id}"
        )
    return 0


def cmd_report_as_run(ctl: Ctl) -> int:
    a = ctl.args
    value = _load_json(a.file)
    if isinstance(value, dict) and "events" in value:
        value = value["events"]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{a.file}: expected a JSON list of AsRunEvent (or {{'events': [...]}})")
    events = [_parse(v, eng.AsRunEvent(), a.file) for v in value]
    result = ctl.call(ctl.engines.ReportAsRun, eng.ReportAsRunRequest(channel_id=a.channel, events=events))
    if _checked(ctl, result):
        untraced = f"; untraced: {' '.join(result.untraced_event_ids)}" if result.untraced_event_ids else ""
        ctl.out(f"stored {result.stored}, duplicates {result.duplicates}{untraced}")
    return 0


def cmd_clock(ctl: Ctl) -> int:
    a = ctl.args
    reply: Any
    if a.clock_command == "get":
        reply = ctl.call(ctl.clock.GetTime, clk.GetTimeRequest())
        mode = " (manual clock)" if reply.manual else " (system clock)"
    elif a.clock_command == "set":
        reply = ctl.call(ctl.clock.SetTime, clk.SetTimeRequest(now_utc_ms=ctl.time(a.time)))
        mode = ""
    else:
        reply = ctl.call(ctl.clock.AdvanceTime, clk.AdvanceTimeRequest(delta_ms=parse_duration(a.duration)))
        mode = ""
    ctl.emit(reply, lambda: f"now {render.when(reply.now_utc_ms, ctl.local)}{mode}")
    return 0


# -- parser -----------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, output: bool = True) -> None:
    g = parser.add_argument_group("connection and output (also accepted after the command)")
    g.add_argument("--server", help="host:port (env PLAYLOG_SERVER; default 127.0.0.1:50051)")
    g.add_argument("--token", help="bearer token (env PLAYLOG_TOKEN)")
    g.add_argument("--ca-cert", dest="ca_cert", help="CA certificate, PEM: use TLS (env PLAYLOG_CA_CERT)")
    g.add_argument(
        "--client-cert", dest="client_cert", help="client certificate, PEM (env PLAYLOG_CLIENT_CERT)"
    )
    g.add_argument("--client-key", dest="client_key", help="client key, PEM (env PLAYLOG_CLIENT_KEY)")
    g.add_argument(
        "--context", help="context of the config file (PLAYLOG_CTL_CONFIG, ~/.config/playlog/ctl.toml)"
    )
    g.add_argument("--timeout", type=float, help="seconds per call (default 10)")
    if output:
        g.add_argument(
            "-o", "--output", choices=["table", "json"], help="table (default) or json (protobuf JSON)"
        )
    g.add_argument("--local", action="store_true", help="show times in local time too")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _global_options(common)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[Ctl], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    add("channels", cmd_channels, "list the channels")
    p = add("declare", cmd_declare, "declare a channel, or change its locked window (operator)")
    p.add_argument("channel")
    p.add_argument("--lock", required=True, help="locked window depth, e.g. 1h")
    p.add_argument("--reason", help="reason code (needed to change a declared channel's lock)")
    guide.add_metadata_flags(p)

    p = add("window", cmd_window, "the entries of a time range, each with its status")
    p.add_argument("channel")
    p.add_argument("--from", dest="start", default="now", help="start (default now)")
    p.add_argument("--to", dest="end", default="+6h", help="end (default +6h)")

    guide.register(add)

    p = add(
        "now",
        cmd_now,
        "on air and next (the programmes of GetNowNext, then the entries), time to lock, runway",
    )
    p.add_argument("channel")
    p.add_argument("--horizon", default="7d", help="how far ahead to look for the runway (default 7d)")

    p = add("publish", cmd_publish, "PublishAtomicReplace from a file (protobuf JSON of the request)")
    p.add_argument("-f", "--file", required=True, help="PublishAtomicReplaceRequest as JSON (- for stdin)")
    p.add_argument("--dry-run", action="store_true", help="check only (validate_only): say what it would do")
    p.add_argument("--override", action="store_true", help="operator override (needs --reason)")
    p.add_argument("--reason", help="reason code")

    p = add("replace", cmd_replace, "ReplaceEntry: replace one block with the entry of a file")
    p.add_argument("channel")
    p.add_argument("block")
    p.add_argument("-f", "--file", required=True, help="ExecutionEntry as JSON (- for stdin)")
    p.add_argument("--dry-run", action="store_true", help="check only (validate_only): say what it would do")
    p.add_argument("--override", action="store_true", help="operator override (needs --reason)")
    p.add_argument("--reason", help="reason code")

    p = add("cut", cmd_cut, "cut the entry on air at TIME and air the file's entries from there (override)")
    p.add_argument("channel")
    p.add_argument("--at", required=True, help="the cut, inside the entry on air, at or after now")
    p.add_argument("-f", "--file", required=True, help="JSON list of ExecutionEntry starting at --at")
    p.add_argument("--dry-run", action="store_true", help="check only (validate_only): say what it would do")
    p.add_argument("--reason", required=True, help="reason code")

    p = add("records", cmd_records, "override records, all pages")
    p.add_argument("channel", nargs="?", help="only this channel")
    p.add_argument("--page-size", type=int, default=100, help="records per call (default 100)")

    p = add("days", cmd_days, "a channel's ScheduleDay for a date, or every version of it")
    p.add_argument("channel")
    p.add_argument("date", help="programming day, YYYY-MM-DD")
    p.add_argument("--history", action="store_true", help="every version, newest first")

    p = add("store-day", cmd_store_day, "store a ScheduleDay from a file")
    p.add_argument("-f", "--file", required=True, help="ScheduleDay (or StoreScheduleDayRequest) as JSON")
    p.add_argument("--reason", help="reason code")

    p = add("watch", cmd_watch, "follow a channel as a live log, one line per event (Ctrl-C ends)")
    p.add_argument("channel")
    p.add_argument("--after", type=int, default=0, help="resume after this generation")
    p.add_argument("--progress", action="store_true", help="show progress heartbeats too")

    p = add("verify", cmd_verify, "run the integrity audit on the server (exit 1 when anything is found)")
    p.add_argument("channel", nargs="?", help="only this channel")

    p = add("engines", cmd_engines, "engines: applied generation, lag, last ack, as-run and NACK")
    p.add_argument("channel", nargs="?", help="only this channel (default: every channel)")

    p = add("as-run", cmd_as_run, "what aired: the as-run overlapping a time range, all pages")
    p.add_argument("channel")
    p.add_argument("--from", dest="start", default="-1d", help="start (default -1d)")
    p.add_argument("--to", dest="end", default="now", help="end (default now)")
    p.add_argument("--engine", help="only this engine's")
    p.add_argument("--limit", type=int, default=0, help="at most this many events (default 0: all)")
    p.add_argument("--page-size", type=int, default=0, help="events per call (default: the server's, 100)")

    p = add(
        "reconcile",
        cmd_reconcile,
        "the log against the as-run over a past range (exit 0 when it ran, discrepancies or not)",
    )
    p.add_argument("channel")
    p.add_argument("--from", dest="start", default="-1d", help="start (default -1d)")
    p.add_argument("--to", dest="end", default="now", help="end, not after now (default now)")
    p.add_argument(
        "--fail-on-discrepancy",
        action="store_true",
        help="exit 1 when there is any discrepancy (for scripts)",
    )

    p = add("ack", cmd_ack, "acknowledge a generation as applied, or --nack it (as an engine)")
    p.add_argument("channel")
    p.add_argument("generation", type=int)
    p.add_argument("--nack", action="store_true", help="refused: the engine cannot apply it (needs --detail)")
    p.add_argument("--detail", help="why (for a NACK)")

    p = add("report-as-run", cmd_report_as_run, "report what aired from a file (as an engine)")
    p.add_argument("channel")
    p.add_argument("-f", "--file", required=True, help="JSON list of AsRunEvent (- for stdin)")

    p = add("clock", cmd_clock, "read or move the server's clock (moving needs the manual clock)")
    clock = p.add_subparsers(dest="clock_command", required=True, metavar="get|set|advance")
    clock.add_parser("get", help="the server's now", parents=[common])
    clock.add_parser("set", help="set the manual clock", parents=[common]).add_argument("time")
    clock.add_parser("advance", help="advance the manual clock", parents=[common]).add_argument("duration")

    # bxf export-as-run takes -o for its output file (SPEC 16), so its
    # commands get the connection options without -o/--output.
    files = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _global_options(files, output=False)
    bxf.register(sub, files)

    p = sub.add_parser("completion", help="print a shell completion script", parents=[common])
    p.add_argument("shell", choices=["bash"])
    return parser


# -- errors and exit status -------------------------------------------------------------------


def _explain(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    text = f"{code.name if code else 'ERROR'}: {details}"
    if code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(exc, grpc.Call):
        try:
            from google.rpc import error_details_pb2
            from grpc_status import rpc_status

            status = rpc_status.from_call(exc)
            for d in status.details if status else []:
                bad = error_details_pb2.BadRequest()
                if d.Unpack(bad):
                    for v in bad.field_violations:
                        line = f"{v.field}: {v.description}"
                        if line not in details:
                            text += f"\n  {line}"
        except Exception:  # the details are a courtesy; the status already says it all
            pass
    return text


# Options whose value may start with "-" (a relative time such as -2h), which
# argparse would otherwise take for an option.
_TIME_OPTIONS = {"--from", "--to", "--at"}


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for tok in it:
        if tok in _TIME_OPTIONS:
            value = next(it, None)
            out.append(tok if value is None else f"{tok}={value}")
        else:
            out.append(tok)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    if args.command == "completion":
        print(bash_completion(parser))
        return 0
    ctl: Ctl | None = None
    try:
        ctl = Ctl(args, resolve(args))
        return int(args.func(ctl))
    except (UsageError, BadValue) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except Refused:
        return 1
    except grpc.RpcError as exc:
        print(f"{PROG}: {_explain(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, grpc.Call) and exc.code() in TRANSPORT else 1
    except KeyboardInterrupt:
        return 130
    finally:
        if ctl is not None:
            ctl.channel.close()
