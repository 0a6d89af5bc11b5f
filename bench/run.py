"""playlog benchmark: starts the real server (`playlog serve`, manual clock,
temporary data directory, 127.0.0.1 only) as a subprocess, drives it over
gRPC and prints a markdown table in which every number is also given as a
ratio to a baseline measured in the same run on the same machine:

- unary operations against the health service's Check on the same server
  (a no-op gRPC call: transport, interceptor and event loop, no store work);
- WatchWindow fan-out against a bare grpc.aio streaming server
  (bench/fanout_server.py) fanning the same bytes out to as many streams.

Run: `.venv/bin/python bench/run.py` (`make bench`), `--quick` for ~1 minute.
Results also go to bench/results/latest.md (and latest.json).
See bench/README.md for what is measured and how to read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from benchlib import (
    DAY_MS,
    ENTRIES_PER_DAY,
    FANOUT_SERVICE,
    GRPC_CLIENT_OPTIONS,
    LOCKED_WINDOW_MS,
    START_UTC_MS,
    day_date,
    day_entries,
    day_start_ms,
    days_entries,
    now_ns,
    summarize_ns,
)
from google.protobuf import __version__ as protobuf_version
from grpc_health.v1 import health_pb2, health_pb2_grpc

from playlog.v1 import channel_service_pb2 as ch_pb
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd_pb
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    name: str
    unary_seconds: float  # measured window of each baseline / publish case
    read_seconds: float  # measured time of each read case, in read_rounds interleaved slices
    warmup_seconds: float
    big_days: int  # days stored on the "many days" read channel
    watch_counts: tuple[int, ...]
    watch_paced: int  # publishes in the paced (latency) phase
    watch_burst: int  # publishes in the burst (throughput) phase
    clients: int = 16
    read_rounds: int = 4


SECTIONS = ("baseline", "publish", "read", "watch")
DEFAULT = Config("default", 8.0, 6.0, 1.0, 1000, (1, 100, 1000), 100, 100)
QUICK = Config("quick", 2.5, 2.0, 0.5, 1000, (1, 100, 1000), 20, 20)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


def playlog_executable() -> str:
    for candidate in (REPO / ".venv" / "bin" / "playlog", Path(sys.executable).parent / "playlog"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("playlog")
    if not found:
        raise BenchError("cannot find the `playlog` executable (run `make install`)")
    return found


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of a process, in seconds: the sum of
    /proc/PID/task/*/schedstat (ns), else utime + stime of /proc/PID/stat
    (clock ticks); 0.0 where there is no /proc."""
    total_ns = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total_ns += int((task / "schedstat").read_text().split()[0])
    if total_ns:
        return total_ns / 1e9
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 15.0) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class PlaylogServer:
    """`playlog serve` on 127.0.0.1 with a manual clock and a temporary data dir."""

    def __init__(self, workdir: Path, extra_args: Sequence[str]) -> None:
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.extra_args = list(extra_args)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.cmd: list[str] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cmd = [
            playlog_executable(),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
            "--clock",
            "manual",
            "--start-utc-ms",
            str(START_UTC_MS),
            "--shutdown-grace-seconds",
            "2",
            *self.extra_args,
        ]
        with self.log_path.open("wb") as logf:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO
            )
        deadline = time.monotonic() + 30
        while not self.port:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"playlog serve did not start; log:\n{self.log_tail()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict) and doc.get("event") == "serving":
                        self.port = int(doc["port"])
            await asyncio.sleep(0.05)
        await wait_healthy(self.target)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self) -> list[str]:
        """Server log lines at level error or above, or carrying a traceback."""
        out = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    if "Traceback" in line or "Error" in line:
                        out.append(line)
                    continue
                if not isinstance(doc, dict):
                    continue
                if doc.get("level") in ("error", "critical") or "exception" in doc:
                    out.append(line[:400])
        return out

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


class FanoutServer:
    """bench/fanout_server.py, the bare grpc.aio streaming baseline."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "fanout_server.py"),
            "--listen",
            "127.0.0.1:0",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise BenchError("bench/fanout_server.py did not start")
        self.port = int(json.loads(line)["port"])

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


class SubscriberProc:
    """bench/subscribers.py: N streams in a separate process."""

    def __init__(self, kind: str, target: str, streams: int, channel_id: str, dump: Path) -> None:
        self.kind = kind
        self.target = target
        self.streams = streams
        self.connections = max(1, min(8, math.ceil(streams / 128)))
        self.channel_id = channel_id
        self.dump = dump
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self.delivered: dict[int, asyncio.Future[None]] = {}
        self.errors: list[str] = []
        self.resets = 0
        self._reader: asyncio.Task[None] | None = None

    def _future(self, g: int) -> asyncio.Future[None]:
        fut = self.delivered.get(g)
        if fut is None:
            fut = self.delivered[g] = asyncio.get_running_loop().create_future()
        return fut

    async def start(self, limit_s: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "subscribers.py"),
            "--target",
            self.target,
            "--kind",
            self.kind,
            "--streams",
            str(self.streams),
            "--connections",
            str(self.connections),
            "--channel-id",
            self.channel_id,
            "--dump",
            str(self.dump),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        self._reader = asyncio.create_task(self._read())
        await self._wait(self.ready.wait(), limit_s, "all streams to receive their snapshot")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            msg = json.loads(raw)
            if "delivered" in msg:
                fut = self._future(int(msg["delivered"]))
                if not fut.done():
                    fut.set_result(None)
            elif "ready" in msg:
                self.ready.set()
            elif "error" in msg:
                self.errors.append(msg["error"])
            elif "reset" in msg:
                self.resets += 1
            elif "stopped" in msg:
                self.stopped.set()

    async def _wait(self, aw: Awaitable[Any], limit_s: float, what: str) -> None:
        task = asyncio.ensure_future(aw)
        deadline = time.monotonic() + limit_s
        while not task.done():
            if self.errors:
                task.cancel()
                raise BenchError(f"subscriber stream failed: {self.errors[0]} ({len(self.errors)} errors)")
            if self.proc is not None and self.proc.returncode is not None:
                task.cancel()
                raise BenchError("subscriber process exited")
            if time.monotonic() > deadline:
                task.cancel()
                raise BenchError(f"timed out after {limit_s:.0f} s waiting for {what}")
            await asyncio.wait([task], timeout=0.05)
        task.result()

    async def wait_delivered(self, g: int, limit_s: float) -> None:
        await self._wait(self._future(g), limit_s, f"generation {g} to reach all {self.streams} streams")

    async def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), 60)
        await stop_process(self.proc, 10)
        if self._reader is not None:
            self._reader.cancel()
        try:
            return dict(json.loads(self.dump.read_text()))
        except (OSError, ValueError):
            return {}


async def wait_healthy(target: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{target} not healthy after {limit_s:.0f} s")
            await asyncio.sleep(0.1)


# -- measurement -------------------------------------------------------------------------


@dataclass
class Result:
    key: str
    operation: str
    setup: str
    rate: float | None  # ops/s or events/s
    unit: str
    p50_ms: float | None
    p99_ms: float | None
    samples: int
    baseline: str | None  # key of the baseline row (None: this row is a baseline)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""


async def closed_loop(
    calls: Sequence[Callable[[], Awaitable[Any]]], seconds: float, warmup: float
) -> list[int]:
    """Every client runs its call back to back; only calls that start after the
    warm-up and end within the measured window count. -> their latencies (ns)."""
    t_measure = now_ns() + int(warmup * 1e9)
    t_end = t_measure + int(seconds * 1e9)
    latencies: list[int] = []

    async def client(call: Callable[[], Awaitable[Any]]) -> None:
        while True:
            t0 = now_ns()
            if t0 >= t_end:
                return
            await call()
            t1 = now_ns()
            if t0 >= t_measure and t1 <= t_end:
                latencies.append(t1 - t0)

    await asyncio.gather(*(client(c) for c in calls))
    return latencies


async def measure(
    calls: Sequence[Callable[[], Awaitable[Any]]], seconds: float, warmup: float
) -> tuple[float, dict[str, float]]:
    """-> (calls/s, latency summary) of one closed-loop window."""
    latencies = await closed_loop(calls, seconds, warmup)
    return len(latencies) / seconds, summarize_ns(latencies)


def new_channel(target: str, i: int = 0) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", i)])


class Client:
    """Stubs on one grpc.aio channel (one TCP connection)."""

    def __init__(self, target: str, i: int = 0) -> None:
        self.channel = new_channel(target, i)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.channels = ch_grpc.ChannelServiceStub(self.channel)
        self.window = ew_grpc.ExecutionWindowServiceStub(self.channel)
        self.days = sd_grpc.ScheduleDayServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def declare(self, channel_id: str) -> None:
        await self.channels.DeclareChannel(
            ch_pb.DeclareChannelRequest(
                channel_id=channel_id, locked_window_ms=LOCKED_WINDOW_MS, reason_code="bench", actor="bench"
            )
        )

    async def store_days(self, channel_id: str, days: range, concurrency: int = 8) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(day: int) -> None:
            async with sem:
                r = await self.days.StoreScheduleDay(
                    sd_pb.StoreScheduleDayRequest(
                        schedule_day=pb.ScheduleDay(
                            channel_id=channel_id, programming_day_date=day_date(day), plan_id="plan-1"
                        ),
                        reason_code="bench",
                        actor="bench",
                    )
                )
                if not r.ok:
                    raise BenchError(
                        f"StoreScheduleDay {channel_id} {day_date(day)}: "
                        f"{pb.ErrorCode.Name(r.error_code)} {r.error_detail}"
                    )

        await asyncio.gather(*(one(d) for d in days))

    async def publish(self, req: ew.PublishAtomicReplaceRequest) -> int:
        r = await self.window.PublishAtomicReplace(req)
        if not r.ok:
            raise BenchError(
                f"PublishAtomicReplace {req.channel_id} "
                f"[{req.range_start_utc_ms}, {req.range_end_utc_ms}) with {len(req.entries)} entries: "
                f"{pb.ErrorCode.Name(r.error_code)} {r.error_detail}"
            )
        return int(r.published_generation_id)


def publish_request(
    channel_id: str, first_day: int, days: int, tag: str = ""
) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=channel_id,
        range_start_utc_ms=day_start_ms(first_day),
        range_end_utc_ms=day_start_ms(first_day + days),
        entries=days_entries(channel_id, first_day, days, tag),
        generation_id=0,
        reason_code="bench",
        actor="bench",
    )


async def bench_baseline(target: str, cfg: Config) -> list[Result]:
    out = []
    for n in (1, cfg.clients):
        log(f"baseline: health Check, {n} client(s)")
        clients = [Client(target, i) for i in range(n)]
        req = health_pb2.HealthCheckRequest()
        try:
            calls = [lambda c=c, req=req: c.health.Check(req) for c in clients]
            rate, lat = await measure(calls, cfg.unary_seconds, cfg.warmup_seconds)
        finally:
            for c in clients:
                await c.close()
        out.append(
            Result(
                f"health-{n}",
                "baseline: Health/Check (no-op unary)",
                f"{n} clients, own connection each" if n > 1 else "1 client",
                rate,
                "ops/s",
                lat["p50_ms"],
                lat["p99_ms"],
                int(lat["n"]),
                None,
            )
        )
    return out


async def bench_publish(target: str, cfg: Config) -> list[Result]:
    out = []
    for n in (1, cfg.clients):
        log(f"publish: 48-entry day, {n} client(s)")
        clients = [Client(target, i) for i in range(n)]
        try:
            calls = []
            for i, c in enumerate(clients):
                cid = f"pub{n}-{i}"
                await c.declare(cid)
                await c.store_days(cid, range(1))
                # Alternate two sets of block ids: every publish replaces the
                # whole day with new blocks (the replaced ids are free again).
                reqs = [publish_request(cid, 0, 1, tag) for tag in ("a", "b")]
                await c.publish(reqs[1])

                def call(c: Client = c, reqs: list[ew.PublishAtomicReplaceRequest] = reqs) -> Awaitable[int]:
                    reqs.reverse()
                    return c.publish(reqs[0])

                calls.append(call)
            rate, lat = await measure(calls, cfg.unary_seconds, cfg.warmup_seconds)
        finally:
            for c in clients:
                await c.close()
        out.append(
            Result(
                f"publish-{n}",
                "PublishAtomicReplace, 48-entry day",
                f"{n} client{'s' if n > 1 else ''}, "
                + ("own connection and channel_id each, " if n > 1 else "")
                + "re-replacing the same day",
                rate,
                "ops/s",
                lat["p50_ms"],
                lat["p99_ms"],
                int(lat["n"]),
                f"health-{n}",
            )
        )
    return out


async def bench_read(target: str, cfg: Config) -> list[Result]:
    c = Client(target)
    out = []
    try:
        setups = []
        for stored in (10, cfg.big_days):
            cid = f"read-{stored}"
            log(f"read: storing {stored} days ({stored * ENTRIES_PER_DAY} entries) on {cid}")
            t0 = time.monotonic()
            await c.declare(cid)
            await c.store_days(cid, range(stored))
            for first in range(0, stored, 10):
                await c.publish(publish_request(cid, first, min(10, stored - first)))
            log(f"read: {cid} stored in {time.monotonic() - t0:.1f} s")
            setups.append((cid, stored))
        # Check every case, then measure them in interleaved rounds, so that
        # a slow spell of the machine does not land on one case only.
        cases = []
        for cid, stored in setups:
            for days in (1, 7):
                first = min(stored // 2, stored - 7)  # middle of the stored range
                req = ew.ReadWindowSnapshotRequest(
                    channel_id=cid, start_utc_ms=day_start_ms(first), end_utc_ms=day_start_ms(first + days)
                )
                snap = await c.window.ReadWindowSnapshot(req)
                want = days * ENTRIES_PER_DAY
                if len(snap.entries) != want:
                    raise BenchError(
                        f"ReadWindowSnapshot {cid} {days} days: {len(snap.entries)} entries, want {want}"
                    )
                call = functools.partial(c.window.ReadWindowSnapshot, req)
                cases.append((f"read-{days}d-{stored}", stored, days, call, snap.ByteSize()))
        latencies: dict[str, list[int]] = {key: [] for key, *_ in cases}
        log(f"read: warming up {len(cases)} cases")
        for _, _, _, call, _ in cases:
            await closed_loop([call], 0.0, cfg.warmup_seconds / 2)
        slice_s = cfg.read_seconds / cfg.read_rounds
        for r in range(cfg.read_rounds):
            log(f"read: round {r + 1} of {cfg.read_rounds}")
            for key, _, _, call, _ in cases if r % 2 == 0 else reversed(cases):
                latencies[key] += await closed_loop([call], slice_s, 0.0)
        for key, stored, days, _, size in cases:
            lat = summarize_ns(latencies[key])
            what = f"{days} day{'s' if days > 1 else ''} ({days * ENTRIES_PER_DAY} entries)"
            out.append(
                Result(
                    key,
                    f"ReadWindowSnapshot, {what}",
                    f"1 client, {stored} days ({stored * ENTRIES_PER_DAY} entries) stored on the channel",
                    len(latencies[key]) / cfg.read_seconds,
                    "ops/s",
                    lat["p50_ms"],
                    lat["p99_ms"],
                    int(lat["n"]),
                    "health-1",
                    {"response_bytes": size},
                )
            )
    finally:
        await c.close()
    return out


async def watch_case(
    kind: str,
    n: int,
    server_target: str,
    server_pid: int,
    publish: Callable[[], Awaitable[int]],
    cfg: Config,
    workdir: Path,
    channel_id: str,
) -> tuple[Result, Result]:
    """One subscriber count against one server: a paced phase (each publish
    waits until the previous one reached every stream: latency without
    queueing) and a burst phase (publishes back to back: delivered events/s)."""
    label = "bare grpc.aio fan-out" if kind == "bare" else "WatchWindow"
    sp = SubscriberProc(kind, server_target, n, channel_id, workdir / f"recv-{kind}-{n}.json")
    setup = f"{n} subscriber{'s' if n > 1 else ''} on {sp.connections} connection"
    setup += "s" if sp.connections > 1 else ""
    paced: dict[int, int] = {}
    burst: dict[int, int] = {}
    cpu: dict[str, float] = {}
    try:
        log(f"watch: {kind}, {n} subscriber(s): opening streams")
        await sp.start(limit_s=120)
        await asyncio.sleep(0.2)
        # Paced: latency from ack to receipt, nothing queued behind.
        c0 = cpu_seconds(server_pid)
        for _ in range(cfg.watch_paced):
            g = await publish()
            paced[g] = now_ns()
            await sp.wait_delivered(g, limit_s=60)
            await asyncio.sleep(0.005)
        c1 = cpu_seconds(server_pid)
        # Burst: one publisher back to back; events/s until the last receipt.
        t_first = now_ns()
        for _ in range(cfg.watch_burst):
            g = await publish()
            burst[g] = now_ns()
        for g in burst:
            await sp.wait_delivered(g, limit_s=120)
        c2 = cpu_seconds(server_pid)
        cpu = {"paced": c1 - c0, "burst": c2 - c1}
    finally:
        dump = await sp.stop()
    recv: dict[str, list[int]] = dump.get("recv", {})
    problems = []
    if dump.get("resets") or sp.resets:
        problems.append(f"{dump.get('resets') or sp.resets} reset snapshots")
    if dump.get("out_of_order"):
        problems.append(f"{dump['out_of_order']} out-of-order events")

    def latencies(acks: dict[int, int]) -> list[int]:
        return [t - ack for g, ack in acks.items() for t in recv.get(str(g), [])]

    lat_paced = summarize_ns(latencies(paced))
    lat_burst = summarize_ns(latencies(burst))
    delivered_burst = sum(len(recv.get(str(g), [])) for g in burst)
    last_recv = max((t for g in burst for t in recv.get(str(g), [])), default=t_first)
    burst_rate = delivered_burst / ((last_recv - t_first) / 1e9) if last_recv > t_first else math.nan
    paced_events = sum(len(recv.get(str(g), [])) for g in paced)
    extra_p = {
        "server_cpu_ms_per_publish": 1000 * cpu.get("paced", 0) / max(1, len(paced)),
        "server_cpu_us_per_event": 1e6 * cpu.get("paced", 0) / max(1, paced_events),
        "problems": problems,
    }
    extra_b = {
        "server_cpu_ms_per_publish": 1000 * cpu.get("burst", 0) / max(1, len(burst)),
        "server_cpu_us_per_event": 1e6 * cpu.get("burst", 0) / max(1, delivered_burst),
        "problems": problems,
    }
    base = None if kind == "bare" else "bare"
    return (
        Result(
            f"{kind}-paced-{n}",
            f"{label}: ack -> receipt (paced)",
            setup + f", {len(paced)} publishes one at a time",
            None,
            "",
            lat_paced["p50_ms"],
            lat_paced["p99_ms"],
            int(lat_paced["n"]),
            base and f"bare-paced-{n}",
            extra_p,
            "; ".join(problems),
        ),
        Result(
            f"{kind}-burst-{n}",
            f"{label}: delivered events (burst)",
            setup + f", {len(burst)} publishes back to back",
            burst_rate,
            "events/s",
            lat_burst["p50_ms"],
            lat_burst["p99_ms"],
            int(lat_burst["n"]),
            base and f"bare-burst-{n}",
            extra_b,
            "; ".join(problems),
        ),
    )


async def bench_watch(server: PlaylogServer, cfg: Config, workdir: Path) -> list[Result]:
    assert server.proc is not None
    out: list[Result] = []
    fanout = FanoutServer()
    await fanout.start()
    client = Client(server.target, 99)
    bare_channel = new_channel(fanout.target, 98)
    bare_publish_rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = bare_channel.unary_unary(
        f"/{FANOUT_SERVICE}/Publish"
    )
    try:
        for n in cfg.watch_counts:
            # playlog: one channel per subscriber count, its day re-replaced.
            cid = f"watch-{n}"
            await client.declare(cid)
            await client.store_days(cid, range(1))
            reqs = [publish_request(cid, 0, 1, tag) for tag in ("a", "b")]
            await client.publish(reqs[1])

            async def playlog_publish(reqs: list[ew.PublishAtomicReplaceRequest] = reqs) -> int:
                reqs.reverse()
                return await client.publish(reqs[0])

            # bare: the same entries as a serialized replaced event, so the
            # subscribers receive and parse as many bytes as from playlog.
            event = pb.WindowEvent(
                replaced=pb.ReplacedEvent(
                    channel_id=cid,
                    range_start_utc_ms=day_start_ms(0),
                    range_end_utc_ms=day_start_ms(0) + DAY_MS,
                    entries=day_entries(cid, 0, "a"),
                    reason_code="bench",
                )
            )
            payloads = []
            for g in range(1, cfg.watch_paced + cfg.watch_burst + 1):
                event.replaced.generation_id = g
                event.replaced.previous_generation_id = g - 1
                for entry in event.replaced.entries:
                    entry.generation_id = g
                payloads.append(event.SerializeToString())
            generation = [0]

            async def bare_publish(
                payloads: list[bytes] = payloads, generation: list[int] = generation
            ) -> int:
                g = generation[0] = generation[0] + 1
                await bare_publish_rpc(payloads[g - 1])
                return g

            cases: list[tuple[str, str, int, Callable[[], Awaitable[int]]]] = [
                ("bare", fanout.target, fanout.proc.pid if fanout.proc else 0, bare_publish),
                ("playlog", server.target, server.proc.pid, playlog_publish),
            ]
            for kind, target, pid, publish in cases:
                try:
                    out.extend(await watch_case(kind, n, target, pid, publish, cfg, workdir, cid))
                except (BenchError, grpc.aio.AioRpcError) as e:
                    log(f"watch: {kind}, {n} subscribers FAILED: {e}")
                    for phase in ("paced", "burst"):
                        out.append(
                            Result(
                                f"{kind}-{phase}-{n}",
                                f"{'bare grpc.aio fan-out' if kind == 'bare' else 'WatchWindow'} ({phase})",
                                f"{n} subscribers",
                                None,
                                "",
                                None,
                                None,
                                0,
                                None if kind == "bare" else f"bare-{phase}-{n}",
                                error=str(e),
                            )
                        )
                # Let the server drop the closed streams before the next case.
                await asyncio.sleep(0.5)
    finally:
        await client.close()
        await bare_channel.close()
        await fanout.stop()
    return out


# -- report ------------------------------------------------------------------------------


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits - 1}f}" if abs(x) < 10 else f"{x:.1f}"


def fmt_ratio(x: float | None, base: float | None) -> str | None:
    if x is None or base is None or math.isnan(x) or math.isnan(base) or base <= 0:
        return None
    r = x / base
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


def ratio_cell(row: Result, rows: dict[str, Result]) -> str:
    if row.baseline is None:
        return "baseline"
    base = rows.get(row.baseline)
    if base is None or base.error:
        return "— (no baseline)"
    parts = []
    thr = fmt_ratio(row.rate, base.rate)
    if thr:
        parts.append(f"{row.unit.split('/')[0]} {thr}")
    # Latency ratios are meaningless when the baseline is ~0 (or negative:
    # an event can arrive before the publish's ack), and in the burst phase,
    # where the offered load (publishes/s) differs between the two servers.
    if "-burst-" not in row.key:
        for name, value, base_value in (("p50", row.p50_ms, base.p50_ms), ("p99", row.p99_ms, base.p99_ms)):
            ratio = fmt_ratio(value, base_value) if base_value is not None and base_value >= 0.005 else None
            if ratio:
                parts.append(f"{name} {ratio}")
    return ", ".join(parts) + f" of `{row.baseline}`" if parts else "—"


def render(results: list[Result], env: dict[str, str], cfg: Config, notes: list[str]) -> str:
    rows = {r.key: r for r in results}
    lines = [
        f"# playlog benchmark ({cfg.name} run)",
        "",
        "## Environment",
        "",
        *(f"- {k}: {v}" for k, v in env.items()),
        "",
        "## Results",
        "",
        "| key | operation | setup | ops/s or events/s | p50 ms | p99 ms | ratio to baseline | samples |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        if r.error and r.p50_ms is None:
            lines.append(f"| `{r.key}` | {r.operation} | {r.setup} | FAILED | | | {r.error} | 0 |")
            continue
        rate = fmt_num(r.rate) + (f" {r.unit}" if r.rate is not None else "")
        setup = r.setup + (f" **({r.error})**" if r.error else "")
        lines.append(
            f"| `{r.key}` | {r.operation} | {setup} | {rate} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
            f"| {ratio_cell(r, rows)} | {r.samples} |"
        )
    derived = derived_lines(rows)
    if derived:
        lines += ["", "## Read cost: entries returned vs entries stored", "", *derived]
    cpu = [r for r in results if "server_cpu_us_per_event" in r.extra]
    if cpu:
        lines += [
            "",
            "## Fan-out server CPU (from /proc, server process only)",
            "",
            "| key | server CPU ms per publish | server CPU µs per delivered event |",
            "|---|---:|---:|",
        ]
        for r in cpu:
            lines.append(
                f"| `{r.key}` | {fmt_num(r.extra['server_cpu_ms_per_publish'])} "
                f"| {fmt_num(r.extra['server_cpu_us_per_event'])} |"
            )
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def derived_lines(rows: dict[str, Result]) -> list[str]:
    out: list[str] = []
    keys = [k for k in rows if k.startswith("read-")]
    stored = sorted({int(k.rsplit("-", 1)[1]) for k in keys})
    if len(stored) < 2:
        return out
    small, big = stored[0], stored[-1]
    for days in (1, 7):
        a, b = rows.get(f"read-{days}d-{small}"), rows.get(f"read-{days}d-{big}")
        if a and b and a.p50_ms and b.p50_ms:
            out.append(
                f"- {days} day(s) returned: p50 with {big} days stored / with {small} days stored = "
                f"**{b.p50_ms / a.p50_ms:.2f}x** (stored entries grew {big // small}x)"
            )
    for s in (small, big):
        a, b = rows.get(f"read-1d-{s}"), rows.get(f"read-7d-{s}")
        if a and b and a.p50_ms and b.p50_ms:
            out.append(
                f"- {s} days stored: p50 of 7 days returned / 1 day returned = "
                f"**{b.p50_ms / a.p50_ms:.2f}x** (returned entries grew 7x)"
            )
    return out


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return f"{kind} (mounted at {best})" if best else kind


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


async def drift_check(target: str, cfg: Config, results: list[Result]) -> str:
    """The 1-client baseline again at the end: if it moved, the machine's
    speed changed during the run and the ratios are less reliable."""
    log("baseline again (drift check)")
    c = Client(target)
    try:
        req = health_pb2.HealthCheckRequest()
        rate, lat = await measure(
            [lambda: c.health.Check(req)], cfg.unary_seconds / 2, cfg.warmup_seconds / 2
        )
    finally:
        await c.close()
    first = next((r for r in results if r.key == "health-1"), None)
    then = f" (start of run: {fmt_num(first.rate)} ops/s, p50 {fmt_num(first.p50_ms)} ms)" if first else ""
    return (
        f"drift check, `health-1` again at the end of the run: {fmt_num(rate)} ops/s, "
        f"p50 {fmt_num(lat['p50_ms'])} ms{then}; a large difference means the machine's speed "
        "changed during the run (other load)"
    )


def environment(cfg: Config, workdir: Path, server: PlaylogServer) -> dict[str, str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "run": f"{cfg.name} (`bench/run.py{' --quick' if cfg.name == 'quick' else ''}`)",
        "CPUs": f"{os.cpu_count()} (usable by this process: {affinity})"
        + (f", {cpu_model}" if cpu_model else ""),
        "platform": platform.platform(),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
        "playlog commit": commit,
        "server": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(server.cmd)),
        "data dir filesystem": fs_type(workdir),
        "clients": "bench/run.py (unary load, publisher), bench/subscribers.py (watch streams), "
        "all on this machine, 127.0.0.1",
    }


# -- main --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else DEFAULT
    sections = set(filter(None, args.only.split(","))) if args.only else set(SECTIONS)
    if not sections <= set(SECTIONS):
        log(f"--only: unknown section(s) {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="playlog-bench-", dir=args.tmpdir))
    server = PlaylogServer(
        workdir,
        [
            # Progress events would otherwise cost every stream a store read
            # per second; subscribers also ask for an hour (see README).
            "--progress-interval-ms",
            "3600000",
            *args.server_arg,
        ],
    )
    results: list[Result] = []
    notes: list[str] = []
    load_start = load_average()
    started = time.monotonic()
    exit_code = 0
    try:
        log(f"starting playlog serve in {workdir}")
        await server.start()
        log(f"playlog serving on {server.target}")
        results += await bench_baseline(server.target, cfg)
        if "publish" in sections:
            results += await bench_publish(server.target, cfg)
        if "read" in sections:
            results += await bench_read(server.target, cfg)
        if "watch" in sections:
            results += await bench_watch(server, cfg, workdir)
        if sections - {"baseline"}:
            notes.append(await drift_check(server.target, cfg, results))
    except (BenchError, grpc.aio.AioRpcError) as e:
        log(f"FAILED: {e}")
        notes.append(f"run aborted: {e}")
        exit_code = 1
    finally:
        problems = server.log_problems()
        await server.stop()
        if server.proc is not None and server.proc.returncode not in (0, -signal.SIGTERM):
            notes.append(f"playlog serve exited with status {server.proc.returncode}")
        if problems:
            notes.append(f"server log has {len(problems)} error line(s), first: `{problems[0][:300]}`")
        if args.keep:
            notes.append(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [r for r in results if r.error]
    if failed:
        exit_code = 1
    notes.append(f"wall time of the run: {time.monotonic() - started:.0f} s")
    env = environment(cfg, workdir, server)
    env["load average (1 min) at start / end"] = f"{load_start} / {load_average()}"
    report = render(results, env, cfg, notes)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(report)
    (RESULTS_DIR / "latest.json").write_text(
        json.dumps(
            {"config": cfg.__dict__, "results": [r.__dict__ for r in results], "notes": notes}, indent=1
        )
    )
    log(f"written to {RESULTS_DIR / 'latest.md'}")
    return exit_code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter windows and fewer publishes (~1 minute)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: publish,read,watch (default: all; the baseline always runs)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `playlog serve` (repeatable), e.g. --server-arg=--worker-threads=4",
    )
    parser.add_argument(
        "--tmpdir", default=None, help="parent of the temporary data directory (default: $TMPDIR)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory and server log")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
