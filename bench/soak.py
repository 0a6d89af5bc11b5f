"""Soak (issue 20, item 2): 1,000 WatchWindow subscribers on 10 channels for
10 minutes with publishes throughout, some subscribers slow and some
reconnecting, against one `playlog serve` (manual clock, fresh data
directory, 127.0.0.1). It prints the server's memory (VmRSS from /proc)
over time, deliveries, resets and every gap or duplicate, and the goals:
memory flat after warm-up (within 20%), 0 silent gaps, 0 duplicates.

- Publishers: one per channel, a 48-entry day re-replaced (the bench's
  publish, block ids alternating) every --publish-interval-s seconds.
- Subscribers, in a separate process (this script with --child), spread
  evenly over the channels and over 8 connections:
  * steady: read every event as it comes;
  * slow (--slow): sleep --slow-read-s after every event they read, so
    they fall behind until the server's bounded queue (the server runs with
    --watch-queue-events, default 64 here) drops their pending events and
    sends them a `reset` snapshot instead;
  * reconnecting (--reconnecting): drop their stream after a random 5-30 s
    and open a new one with after_generation_id = the last generation they
    hold (the server replays from its durable history).
  Every stream asks for the server's default progress interval (1 s), as
  an engine would.
- Checked for every subscriber and event: a `replaced` event whose
  previous_generation_id is not the generation the subscriber holds is a
  **gap**, silent unless a reset snapshot told the subscriber (a reset
  snapshot legitimately jumps, and the next event must follow it); a
  `replaced` event at or below the generation it holds is a **duplicate**;
  entries must carry their event's generation; a progress event must name
  the generation the subscriber holds.
- At the end the publishers stop, slow subscribers read at full speed, and
  every subscriber must reach its channel's last generation (else it is
  counted as stuck).

Memory: sampled every --sample-s seconds; warm-up = the first 20% of the
run (at least a minute); "flat" = every later sample within 20% of the
first sample after warm-up.

Run: `make soak` (10 minutes), `.venv/bin/python bench/soak.py --minutes 2`.
Results also go to bench/results/soak.md (and soak.json).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from benchlib import (
    CHILDREN,
    GRPC_CLIENT_OPTIONS,
    REPO,
    RESULTS_DIR,
    BenchError,
    Client,
    PlaylogServer,
    cpu_seconds,
    environment,
    fmt_num,
    load_average,
    log,
    publish_channel,
    rss_bytes,
    run_main,
    send,
    stop_process,
)

from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb

GROUPS = ("steady", "slow", "reconnecting")
WATCH = "/playlog.v1.ExecutionWindowService/WatchWindow"
CONNECTIONS = 8
SLOW_CONNECTIONS = 2
SCRIPT = str(Path(__file__).resolve())


# -- the subscriber process ------------------------------------------------------------


@dataclass
class Counts:
    deliveries: int = 0  # replaced events received
    snapshots: int = 0  # complete snapshots (first one of each stream included)
    resets: int = 0  # reset snapshots: the subscriber was told
    silent_gaps: int = 0
    duplicates: int = 0
    bad_entries: int = 0  # an entry not carrying its event's generation
    progress: int = 0
    progress_mismatch: int = 0  # a progress event naming another generation
    reconnects: int = 0
    errors: int = 0  # streams that ended with a status other than CANCELLED


@dataclass
class Sub:
    """One subscriber: what it holds and what it saw."""

    index: int
    channel_id: str
    group: str
    last: int = 0  # the generation this subscriber holds
    counts: Counts = field(default_factory=Counts)
    started: bool = False  # it had its first complete snapshot
    told: bool = False  # a reset snapshot is being received (its parts)

    def check(self, event: pb.WindowEvent) -> list[tuple[str, dict[str, int]]]:
        """Checks one event against the generation this subscriber holds and
        moves it on; -> the anomalies found (kind, detail)."""
        c = self.counts
        out: list[tuple[str, dict[str, int]]] = []
        kind = event.WhichOneof("event")
        if kind == "replaced":
            r = event.replaced
            if r.generation_id <= self.last:
                c.duplicates += 1
                return [("duplicate", {"holds": self.last, "got": r.generation_id})]
            if r.previous_generation_id != self.last:
                c.silent_gaps += 1
                detail = {"holds": self.last, "got": r.generation_id, "previous": r.previous_generation_id}
                out.append(("silent gap", detail))
            if any(e.generation_id != r.generation_id for e in r.entries):
                c.bad_entries += 1
                out.append(("entry with another generation", {"event": r.generation_id}))
            self.last = r.generation_id
            c.deliveries += 1
        elif kind == "snapshot":
            snap = event.snapshot
            self.told = self.told or snap.reset
            if snap.complete:
                got = snap.channel_generation_id
                if got < self.last:
                    c.duplicates += 1  # a snapshot going back repeats what the subscriber has
                    out.append(("snapshot behind", {"holds": self.last, "got": got}))
                if self.told:
                    c.resets += 1
                elif self.started and got != self.last:
                    # Only a stream's first snapshot, or a reset, may jump.
                    c.silent_gaps += 1
                    out.append(("snapshot jump without reset", {"holds": self.last, "got": got}))
                self.last = max(self.last, got)
                c.snapshots += 1
                self.started = True
                self.told = False
        else:
            c.progress += 1
            if event.progress.channel_generation_id != self.last:
                c.progress_mismatch += 1
                out.append(
                    (
                        "progress names another generation",
                        {"holds": self.last, "got": event.progress.channel_generation_id},
                    )
                )
        return out


class Subscribers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        rng = random.Random(args.seed)
        n = args.subscribers
        groups = ["slow"] * args.slow + ["reconnecting"] * args.reconnecting
        groups += ["steady"] * (n - len(groups))
        rng.shuffle(groups)
        self.subs = [Sub(i, f"soak-{i % args.channels}", groups[i]) for i in range(n)]
        self.rng = rng
        self.draining = False
        self.ready = 0
        self.anomalies: list[dict[str, Any]] = []
        self.channels = [
            grpc.aio.insecure_channel(args.target, options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", i)])
            for i in range(CONNECTIONS)
        ]
        # Slow subscribers on connections whose receive window does not grow:
        # with gRPC's BDP probing, a stream's window grows until the client
        # itself holds minutes of backlog, and the server's bound is never met.
        self.slow_channels = [
            grpc.aio.insecure_channel(
                args.target,
                options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", 100 + i), ("grpc.http2.bdp_probe", 0)],
            )
            for i in range(SLOW_CONNECTIONS)
        ]

    def anomaly(self, sub: Sub, kind: str, **detail: Any) -> None:
        if len(self.anomalies) < 50:
            self.anomalies.append(
                {
                    "kind": kind,
                    "subscriber": sub.index,
                    "group": sub.group,
                    "channel": sub.channel_id,
                    **detail,
                }
            )

    async def run_one(self, sub: Sub) -> None:
        """One subscriber: a stream, reopened with after_generation_id when
        it is a reconnecting one (or when a stream fails)."""
        pool = self.slow_channels if sub.group == "slow" else self.channels
        watch = pool[sub.index % len(pool)].unary_stream(
            WATCH,
            request_serializer=ew.WatchWindowRequest.SerializeToString,
            response_deserializer=pb.WindowEvent.FromString,
        )
        while True:
            call = watch(ew.WatchWindowRequest(channel_id=sub.channel_id, after_generation_id=sub.last))
            drop_at = (
                time.monotonic() + self.rng.uniform(5, 30) if sub.group == "reconnecting" else float("inf")
            )
            sub.told = False
            try:
                async for event in call:
                    was_started = sub.started
                    for kind, detail in sub.check(event):
                        self.anomaly(sub, kind, **detail)
                    if sub.started and not was_started:
                        self.ready += 1
                        if self.ready == len(self.subs):
                            send({"ready": self.ready})
                    if sub.group == "slow" and not self.draining:
                        await asyncio.sleep(self.args.slow_read_s)
                    if time.monotonic() >= drop_at and not self.draining:
                        call.cancel()
                        sub.counts.reconnects += 1
                        break
                else:
                    sub.counts.errors += 1
                    self.anomaly(sub, "stream ended by the server")
                    await asyncio.sleep(1)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED and sub.group == "reconnecting":
                    continue
                sub.counts.errors += 1
                self.anomaly(sub, "stream failed", status=e.code().name, details=e.details())
                await asyncio.sleep(1 + self.rng.random())  # then resume from sub.last

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {g: asdict(Counts()) for g in GROUPS}
        for sub in self.subs:
            for k, v in asdict(sub.counts).items():
                out[sub.group][k] += v
        return out


async def child(args: argparse.Namespace) -> int:
    subs = Subscribers(args)
    tasks = []
    for i, sub in enumerate(subs.subs):
        tasks.append(asyncio.ensure_future(subs.run_one(sub)))
        if i % 50 == 49:
            await asyncio.sleep(0)  # let the first streams start while opening more
    loop = asyncio.get_running_loop()

    async def stats() -> None:
        while True:
            await asyncio.sleep(args.sample_s)
            send({"stats": subs.totals(), "rss": rss_bytes(os.getpid())})

    ticker = asyncio.ensure_future(stats())
    final: dict[str, int] = {}
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.startswith("drain "):
            final = json.loads(line[6:])
            break
    # Drain: slow subscribers read at full speed, nobody reconnects, until
    # every subscriber holds its channel's last generation.
    subs.draining = True
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline:
        if all(s.last >= final.get(s.channel_id, 0) for s in subs.subs):
            break
        await asyncio.sleep(0.2)
    stuck = [
        {
            "subscriber": s.index,
            "group": s.group,
            "channel": s.channel_id,
            "holds": s.last,
            "last": final.get(s.channel_id),
        }
        for s in subs.subs
        if s.last < final.get(s.channel_id, 0)
    ]
    ticker.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in subs.channels + subs.slow_channels:
        await ch.close()
    send(
        {
            "final": subs.totals(),
            "stuck": len(stuck),
            "stuck_detail": stuck[:20],
            "anomalies": subs.anomalies,
            "rss": rss_bytes(os.getpid()),
        }
    )
    return 0


# -- the orchestrator ------------------------------------------------------------------


def metric_values(port: int, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric from the server's /metrics, by labels."""
    out: dict[str, float] = {}
    if not port:
        return out
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name) and not line.startswith("#"):
                    key, value = line.rsplit(" ", 1)
                    out[key[len(name) :]] = float(value)
    return out


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    cpu_pct: float  # server CPU over the last interval, % of one core
    publishes: int
    streams: float
    subscribers_rss_mb: float  # the subscriber process's
    stats: dict[str, dict[str, int]]


async def orchestrate(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="playlog-soak-", dir=args.tmpdir))
    server = PlaylogServer(
        workdir,
        ["--watch-queue-events", str(args.queue_events), "--metrics-listen", "127.0.0.1:0", *args.server_arg],
    )
    env = environment(
        " ".join(["bench/soak.py", *sys.argv[1:]]),
        "soak",
        workdir,
        "bench/soak.py (publishers, sampling) and its subscriber process (bench/soak.py --child)",
    )
    load_start = load_average()
    samples: list[Sample] = []
    publishes = collections.Counter[str]()
    publish_errors: list[str] = []
    final: dict[str, Any] = {}
    last_gen: dict[str, int] = {}
    proc: asyncio.subprocess.Process | None = None
    duration = args.minutes * 60
    try:
        await server.start()
        env["server"] = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(server.cmd))
        log(f"soak: playlog serving on {server.target} (pid {server.pid}), metrics on {server.metrics_port}")
        client = Client(server.target, 90)
        channels = [f"soak-{i}" for i in range(args.channels)]
        reqs = {cid: await publish_channel(client, cid) for cid in channels}
        for cid in channels:
            last_gen[cid] = 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--child",
            "--target",
            server.target,
            *child_args(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        CHILDREN.append(proc)
        assert proc.stdout is not None and proc.stdin is not None
        latest: dict[str, Any] = {}

        async def read_child() -> None:
            assert proc is not None and proc.stdout is not None
            async for raw in proc.stdout:
                msg = json.loads(raw)
                latest.update(msg)
                if "final" in msg:
                    final.update(msg)

        reader = asyncio.ensure_future(read_child())
        t_ready = time.monotonic() + 180
        while "ready" not in latest:
            if proc.returncode is not None or time.monotonic() > t_ready:
                raise BenchError("the subscribers did not all get their first snapshot")
            await asyncio.sleep(0.1)
        log(f"soak: {args.subscribers} subscribers ready; publishing for {args.minutes:g} minutes")
        t0 = time.monotonic()
        stop = asyncio.Event()

        async def publisher(cid: str, offset: float) -> None:
            c = Client(server.target, 91 + channels.index(cid) % 4)
            turn = reqs[cid]
            k = 0
            try:
                while not stop.is_set():
                    due = t0 + offset + k * args.publish_interval_s
                    k += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
                        return
                    turn.reverse()
                    try:
                        last_gen[cid] = await c.publish(turn[0])
                        publishes[cid] += 1
                    except (BenchError, grpc.aio.AioRpcError) as e:
                        publish_errors.append(str(e)[:300])
            finally:
                await c.close()

        pubs = [
            asyncio.ensure_future(publisher(cid, i * args.publish_interval_s / len(channels)))
            for i, cid in enumerate(channels)
        ]
        cpu_before, t_before = cpu_seconds(server.pid), time.monotonic()
        while time.monotonic() - t0 < duration:
            await asyncio.sleep(min(args.sample_s, max(0.0, duration - (time.monotonic() - t0))))
            cpu_now, t_now = cpu_seconds(server.pid), time.monotonic()
            streams = metric_values(server.metrics_port, "playlog_watch_subscribers").get("", float("nan"))
            sample = Sample(
                round(t_now - t0, 1),
                rss_bytes(server.pid) / 2**20,
                100 * (cpu_now - cpu_before) / max(1e-9, t_now - t_before),
                sum(publishes.values()),
                streams,
                latest.get("rss", 0) / 2**20,
                latest.get("stats", {}),
            )
            cpu_before, t_before = cpu_now, t_now
            samples.append(sample)
            log(
                f"soak: {sample.t_s:5.0f} s  server RSS {sample.rss_mb:6.1f} MB  CPU {sample.cpu_pct:3.0f}%  "
                f"publishes {sample.publishes}  deliveries {summed(sample.stats, 'deliveries')}  "
                f"resets {summed(sample.stats, 'resets')}  gaps {summed(sample.stats, 'silent_gaps')}  "
                f"duplicates {summed(sample.stats, 'duplicates')}"
            )
        stop.set()
        await asyncio.gather(*pubs)
        server_resets = metric_values(server.metrics_port, "playlog_watch_resets_total")
        log("soak: publishers stopped; draining (slow subscribers read at full speed)")
        proc.stdin.write(f"drain {json.dumps(last_gen)}\n".encode())
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), args.drain_s + 60)
        await reader
        await client.close()
        rss_end = rss_bytes(server.pid) / 2**20
    finally:
        if proc is not None:
            await stop_process(proc, 10)
        problems = server.log_problems()
        await server.stop()
        if args.keep:
            log(f"soak: data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    env["load average (1, 5, 15 min) at start; at end"] = f"{load_start}; {load_average()}"
    report, doc = render(
        args, env, samples, final, server_resets, publishes, publish_errors, problems, rss_end
    )
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "soak.md").write_text(report)
    (RESULTS_DIR / "soak.json").write_text(json.dumps(doc, indent=1))
    log(f"written to {RESULTS_DIR / 'soak.md'}")
    return 0 if doc["all_met"] else 1


def label(labels: str) -> str:
    """`{reason="overflow"}` -> `overflow`."""
    return labels.strip("{}").split("=", 1)[-1].strip('"') or "all"


def summed(stats: dict[str, dict[str, int]], key: str) -> int:
    """One count summed over the subscriber groups."""
    return sum(g.get(key, 0) for g in stats.values())


def child_args(args: argparse.Namespace) -> list[str]:
    return [
        "--subscribers",
        str(args.subscribers),
        "--channels",
        str(args.channels),
        "--slow",
        str(args.slow),
        "--reconnecting",
        str(args.reconnecting),
        "--slow-read-s",
        str(args.slow_read_s),
        "--sample-s",
        str(args.sample_s),
        "--drain-s",
        str(args.drain_s),
        "--seed",
        str(args.seed),
    ]


def render(
    args: argparse.Namespace,
    env: dict[str, str],
    samples: list[Sample],
    final: dict[str, Any],
    server_resets: dict[str, float],
    publishes: collections.Counter[str],
    publish_errors: list[str],
    problems: list[str],
    rss_end: float,
) -> tuple[str, dict[str, Any]]:
    duration = args.minutes * 60
    warmup = max(60.0, 0.2 * duration)
    after = [s for s in samples if s.t_s >= warmup]
    ref = after[0].rss_mb if after else None
    hi = max((s.rss_mb for s in after), default=None)
    lo = min((s.rss_mb for s in after), default=None)
    flat = ref is not None and hi is not None and lo is not None and hi <= 1.2 * ref and lo >= 0.8 * ref
    totals: dict[str, dict[str, int]] = final.get("final", {})

    def total(key: str) -> int:
        return summed(totals, key)

    gaps, dups = total("silent_gaps"), total("duplicates")
    stuck = int(final.get("stuck", -1))
    goals = [
        (
            f"server memory flat after warm-up ({warmup:.0f} s): every later sample within 20% of the first",
            f"first {fmt_num(ref)} MB, then {fmt_num(lo)} to {fmt_num(hi)} MB "
            f"({fmt_num(100 * (hi / ref - 1) if ref and hi else None)}% at most)",
            flat,
        ),
        ("0 silent gaps", str(gaps), gaps == 0 and bool(totals)),
        ("0 duplicates", str(dups), dups == 0 and bool(totals)),
        ("every subscriber reaches its channel's last generation at the end", f"{stuck} stuck", stuck == 0),
        (
            "every event intact (entries carry their event's generation; progress names the subscriber's)",
            f"{total('bad_entries')} bad entries, {total('progress_mismatch')} progress mismatches",
            total("bad_entries") == 0 and total("progress_mismatch") == 0 and bool(totals),
        ),
    ]
    lines = [
        f"# playlog soak ({args.minutes:g} minutes)",
        "",
        "## Environment",
        "",
        *(f"- {k}: {v}" for k, v in env.items()),
        f"- load: {args.subscribers:,} WatchWindow subscribers on {args.channels} channels: "
        f"{args.slow} slow ({args.slow_read_s:g} s per event read, on {SLOW_CONNECTIONS} connections of "
        f"their own with gRPC's BDP probing off), {args.reconnecting} reconnecting every 5-30 s with "
        f"after_generation_id and the rest steady (on {CONNECTIONS} connections); one publish of a "
        f"48-entry day per channel every {args.publish_interval_s:g} s; server queue "
        f"--watch-queue-events {args.queue_events}",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *(f"| {g} | {m} | {'**met**' if ok else '**not met**'} |" for g, m, ok in goals),
        "",
        "## Server memory and load over time",
        "",
        "| time s | server RSS MB | server CPU % of a core | publishes | open streams | deliveries | resets "
        "| reconnects | silent gaps | duplicates | subscriber process RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 30)
    for i, s in enumerate(samples):
        if i % step and i != len(samples) - 1:
            continue

        def of(key: str, st: dict[str, dict[str, int]] = s.stats) -> int:
            return summed(st, key)

        lines.append(
            f"| {s.t_s:.0f} | {s.rss_mb:.1f} | {s.cpu_pct:.0f} | {s.publishes:,} | {fmt_num(s.streams)} "
            f"| {of('deliveries'):,} | {of('resets'):,} | {of('reconnects'):,} | {of('silent_gaps')} "
            f"| {of('duplicates')} | {s.subscribers_rss_mb:.0f} |"
        )
    lines += [
        "",
        f"Server RSS after the drain: {rss_end:.1f} MB.",
        "",
        "## Per group, at the end (after the drain)",
        "",
        "| group | subscribers | deliveries | snapshots | resets (told) | reconnects | stream errors "
        "| silent gaps | duplicates | progress events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    members = {"slow": args.slow, "reconnecting": args.reconnecting}
    members["steady"] = args.subscribers - args.slow - args.reconnecting
    for g in GROUPS:
        c = totals.get(g, {})
        lines.append(
            f"| {g} | {members[g]} | {c.get('deliveries', 0):,} | {c.get('snapshots', 0):,} "
            f"| {c.get('resets', 0):,} | {c.get('reconnects', 0):,} | {c.get('errors', 0):,} "
            f"| {c.get('silent_gaps', 0)} | {c.get('duplicates', 0)} | {c.get('progress', 0):,} |"
        )
    lines += [
        "",
        f"- publishes: {sum(publishes.values()):,} ({len(publish_errors)} failed"
        + (f", first: `{publish_errors[0]}`" if publish_errors else "")
        + ")",
        "- resets the server counted (playlog_watch_resets_total): "
        + (", ".join(f"{label(k)} {v:.0f}" for k, v in sorted(server_resets.items())) or "none"),
        f"- subscriber process RSS at the end: {fmt_num(final.get('rss', 0) / 2**20)} MB",
    ]
    if final.get("anomalies"):
        lines += ["", "## First anomalies", ""]
        lines += [f"- `{json.dumps(a)}`" for a in final["anomalies"][:20]]
    if final.get("stuck_detail"):
        lines += ["", "## Stuck subscribers (first 20)", ""]
        lines += [f"- `{json.dumps(a)}`" for a in final["stuck_detail"]]
    if problems:
        lines += ["", f"Server log: {len(problems)} error line(s), first: `{problems[0][:300]}`"]
    doc = {
        "args": vars(args),
        "environment": env,
        "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals],
        "all_met": all(ok for _, _, ok in goals),
        "samples": [asdict(s) for s in samples],
        "final": final,
        "server_resets": server_resets,
        "publishes": dict(publishes),
        "publish_errors": publish_errors[:20],
        "server_log_problems": problems[:20],
    }
    return "\n".join(lines) + "\n", doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the publishing phase (default 10)")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--slow", type=int, default=100, help="slow subscribers among them (default 100)")
    p.add_argument("--reconnecting", type=int, default=100, help="reconnecting subscribers (default 100)")
    p.add_argument("--slow-read-s", type=float, default=2.0, help="a slow subscriber's pause per event")
    p.add_argument("--publish-interval-s", type=float, default=1.0, help="per channel (default 1 s)")
    p.add_argument("--queue-events", type=int, default=64, help="the server's --watch-queue-events")
    p.add_argument("--sample-s", type=float, default=10.0, help="memory sampling interval")
    p.add_argument("--drain-s", type=float, default=120.0, help="time the subscribers get to catch up")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--server-arg", action="append", default=[], help="extra `playlog serve` argument")
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data directory and the server log")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.slow + args.reconnecting > args.subscribers:
        p.error("--slow + --reconnecting must not exceed --subscribers")
    if args.child:
        sys.exit(asyncio.run(child(args)))
    run_main(lambda: orchestrate(args))


if __name__ == "__main__":
    main()
