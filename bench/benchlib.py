"""What every workload of the playlog benchmark shares: the synthetic
schedule, statistics, the processes (playlog, the bare fan-out, subscriber
processes; CPU and memory from /proc), the clients, the closed loop and its
interleaved rounds, results, goals and the report, and the harness that runs
workloads on fresh servers.

Each workload is one module beside this one (`baseline.py`, `publish.py`,
`read.py`, `watch.py`, `rates.py`, `growth.py`, `replicas.py`) with a
`WORKLOAD` and a `main()`: `.venv/bin/python bench/publish.py` runs it alone,
`bench/run.py` runs them all and prints the summary. Scripts in bench/ put
bench/ on sys.path, so they import this module by name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import __version__ as protobuf_version
from grpc_health.v1 import health_pb2, health_pb2_grpc

from playlog.v1 import channel_service_pb2 as ch_pb
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd_pb
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb

if TYPE_CHECKING:
    import etcdlib

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

DAY_MS = 86_400_000
ENTRIES_PER_DAY = 48
SLOT_MS = DAY_MS // ENTRIES_PER_DAY  # 30 minutes
# Day 0 of every channel is 2030-01-01; the manual clock starts one day
# earlier, so every day we publish is far in the flexible future.
BASE_DATE = datetime.date(2030, 1, 1)
BASE_DAY_MS = 1_893_456_000_000  # 2030-01-01T00:00:00Z
START_UTC_MS = BASE_DAY_MS - DAY_MS
LOCKED_WINDOW_MS = 60_000
# Segment layout of every 30-minute block: program, ad break, promo.
SEGMENTS = (("program", 1_500_000), ("ad", 240_000), ("promo", 60_000))
assert sum(d for _, d in SEGMENTS) == SLOT_MS

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Every grpc.aio channel gets its own TCP connection (no sharing of
    # subchannels between channels with equal arguments).
    ("grpc.use_local_subchannel_pool", 1),
]

FANOUT_SERVICE = "benchfanout.Fanout"


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the synthetic schedule ------------------------------------------------------------


def day_start_ms(day: int) -> int:
    return BASE_DAY_MS + day * DAY_MS


def day_date(day: int) -> str:
    return (BASE_DATE + datetime.timedelta(days=day)).isoformat()


def day_entries(channel_id: str, day: int, tag: str = "") -> list[pb.ExecutionEntry]:
    """48 contiguous 30-minute blocks of one programming day, 3 segments each."""
    start = day_start_ms(day)
    date = day_date(day)
    out = []
    for i in range(ENTRIES_PER_DAY):
        block_id = f"{tag}d{day}-b{i:02d}"
        s = start + i * SLOT_MS
        out.append(
            pb.ExecutionEntry(
                channel_id=channel_id,
                block_id=block_id,
                block_index=i,
                start_utc_ms=s,
                end_utc_ms=s + SLOT_MS,
                programming_day_date=date,
                transmission_log_ref=f"txlog-{date}",
                segments=[
                    pb.Segment(
                        segment_id=f"{block_id}-s{k}",
                        segment_type=kind,
                        asset_uri=f"asset://{kind}/{day}/{i}/{k}",
                        duration_ms=duration,
                        title=f"{kind} {i} of {date}",
                    )
                    for k, (kind, duration) in enumerate(SEGMENTS)
                ],
            )
        )
    return out


def days_entries(channel_id: str, first_day: int, count: int, tag: str = "") -> list[pb.ExecutionEntry]:
    out: list[pb.ExecutionEntry] = []
    for day in range(first_day, first_day + count):
        out.extend(day_entries(channel_id, day, tag))
    return out


# -- statistics ------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ns(latencies_ns: Sequence[int]) -> dict[str, float]:
    values = sorted(latencies_ns)
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) / 1e6,
        "p99_ms": percentile(values, 99) / 1e6,
        "max_ms": (values[-1] / 1e6) if values else math.nan,
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


# -- the helpers' line protocol (one JSON object per stdout line) --------------------


def send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def now_ns() -> int:
    """CLOCK_MONOTONIC: one system-wide clock on Linux, so receive times taken
    in a subscriber process compare with send times taken in the bench."""
    return time.monotonic_ns()


# -- processes -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of a process, in seconds: the sum of
    /proc/PID/task/*/schedstat (ns), else utime + stime of /proc/PID/stat
    (clock ticks); 0.0 where there is no /proc. Threads that exit are no
    longer counted; the servers measured here keep theirs (playlog's store
    thread pool, grpc's threads, Go's runtime threads)."""
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


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS of /proc/PID/status), 0 if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# Every child process the benchmark starts (servers, subscriber processes):
# killed by pid, if still running, when a bench script exits in any way.
CHILDREN: list[asyncio.subprocess.Process] = []


def kill_children() -> None:
    for proc in CHILDREN:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 15.0) -> None:
    """SIGTERM to this one child (by its pid), SIGKILL after grace_s."""
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


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while
    picking, so they differ; free again once returned)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- servers ---------------------------------------------------------------------------


def playlog_executable() -> str:
    for candidate in (REPO / ".venv" / "bin" / "playlog", Path(sys.executable).parent / "playlog"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("playlog")
    if not found:
        raise BenchError("cannot find the `playlog` executable (run `make install`)")
    return found


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


class LocalServer:
    """A server process of the bench on 127.0.0.1, stopped by its pid."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


class PlaylogServer(LocalServer):
    """`playlog serve` on 127.0.0.1 with a manual clock and its own data dir."""

    def __init__(self, workdir: Path, extra_args: Sequence[str]) -> None:
        super().__init__()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.extra_args = list(extra_args)
        self.metrics_port = 0
        self.cmd: list[str] = []

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
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
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 30
        while not self.port:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"playlog serve did not start; log:\n{self.log_tail()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict) and doc.get("event") == "serving":
                        self.port = int(doc["port"])
                        self.metrics_port = int(doc.get("metrics_port") or 0)
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


class FanoutServer(LocalServer):
    """bench/fanout_server.py, the bare grpc.aio streaming baseline."""

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
        CHILDREN.append(self.proc)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise BenchError("bench/fanout_server.py did not start")
        self.port = int(json.loads(line)["port"])


class SubscriberProc:
    """bench/subscribers.py: N streams in a separate process."""

    def __init__(
        self,
        kind: str,
        target: str,
        streams: int,
        channel_id: str,
        dump: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.extra_args = list(extra_args)
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

    def setup(self) -> str:
        s = f"{self.streams} subscriber{'s' if self.streams > 1 else ''} on {self.connections} connection"
        return s + ("s" if self.connections > 1 else "")

    def _future(self, g: int) -> asyncio.Future[None]:
        fut = self.delivered.get(g)
        if fut is None:
            fut = self.delivered[g] = asyncio.get_running_loop().create_future()
        return fut

    async def start(self, limit_s: float = 120) -> None:
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
            *self.extra_args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        CHILDREN.append(self.proc)
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

    async def wait_delivered(self, g: int, limit_s: float = 60) -> None:
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


def dump_problems(dump: dict[str, Any], where: str = "") -> list[str]:
    """What a subscriber process saw that a benchmark row must not hide."""
    out = []
    if dump.get("resets"):
        out.append(f"{dump['resets']} reset snapshots{where}")
    if dump.get("out_of_order"):
        out.append(f"{dump['out_of_order']} out-of-order events{where}")
    return out


# -- clients ---------------------------------------------------------------------------


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

    def noop(self) -> Callable[[], Awaitable[Any]]:
        """-> the no-op RPC through this connection: Health/Check on the same
        server, through the same transport, interceptor and event loop as
        every playlog RPC, with no store work."""
        req = health_pb2.HealthCheckRequest()
        check = self.health.Check
        return lambda: check(req)

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

    async def read_day(self, channel_id: str, day: int, days: int = 1) -> ew.ReadWindowSnapshotRequest:
        """-> the ReadWindowSnapshot request of [day, day + days), checked once
        to return exactly that many days of entries."""
        req = ew.ReadWindowSnapshotRequest(
            channel_id=channel_id, start_utc_ms=day_start_ms(day), end_utc_ms=day_start_ms(day + days)
        )
        snap = await self.window.ReadWindowSnapshot(req)
        want = days * ENTRIES_PER_DAY
        if len(snap.entries) != want:
            raise BenchError(
                f"ReadWindowSnapshot {channel_id} {days} days: {len(snap.entries)} entries, want {want}"
            )
        return req


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


async def publish_channel(c: Client, channel_id: str) -> list[ew.PublishAtomicReplaceRequest]:
    """Declares the channel, stores its day-0 ScheduleDay, publishes day 0 once;
    -> the two publish requests of day 0 (two sets of block ids) that
    alternating_publish() takes turns with."""
    await c.declare(channel_id)
    await c.store_days(channel_id, range(1))
    reqs = [publish_request(channel_id, 0, 1, tag) for tag in ("a", "b")]
    await c.publish(reqs[1])
    return reqs


def alternating_publish(
    c: Client, reqs: list[ew.PublishAtomicReplaceRequest]
) -> Callable[[], Awaitable[int]]:
    """-> a call re-replacing the day through `c`, alternating the two sets
    of block ids, so that every publish replaces the whole day with new blocks
    (the replaced ids are free again). Calls through several clients (e.g.
    on several replicas) that share `reqs` keep alternating."""

    def call() -> Awaitable[int]:
        reqs.reverse()
        return c.publish(reqs[0])

    return call


async def playlog_publisher(c: Client, channel_id: str) -> Callable[[], Awaitable[int]]:
    """publish_channel(), then a call re-replacing day 0 (alternating_publish)."""
    return alternating_publish(c, await publish_channel(c, channel_id))


def bare_payloads(channel_id: str, count: int) -> list[bytes]:
    """Serialized WindowEvents of generations 1..count replacing day 0 with
    its 48 entries: the bytes a playlog subscriber gets for a publish."""
    event = pb.WindowEvent(
        replaced=pb.ReplacedEvent(
            channel_id=channel_id,
            range_start_utc_ms=day_start_ms(0),
            range_end_utc_ms=day_start_ms(0) + DAY_MS,
            entries=day_entries(channel_id, 0, "a"),
            reason_code="bench",
        )
    )
    payloads = []
    for g in range(1, count + 1):
        event.replaced.generation_id = g
        event.replaced.previous_generation_id = g - 1
        for entry in event.replaced.entries:
            entry.generation_id = g
        payloads.append(event.SerializeToString())
    return payloads


class BarePublisher:
    """Publishes to bench/fanout_server.py the bytes playlog's subscribers get
    for each generation; a call -> the generation it published."""

    def __init__(self, fanout: FanoutServer, channel_id: str, count: int, i: int = 98) -> None:
        self.channel = new_channel(fanout.target, i)
        self.rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
            f"/{FANOUT_SERVICE}/Publish"
        )
        self.payloads = bare_payloads(channel_id, count)
        self.generation = 0

    async def __call__(self) -> int:
        self.generation += 1
        await self.rpc(self.payloads[self.generation - 1])
        return self.generation

    async def close(self) -> None:
        await self.channel.close()


# -- the closed loop and interleaved rounds --------------------------------------------


@dataclass
class Window:
    """One measured closed-loop window of one case."""

    latencies: list[int]  # before the call -> its answer, of the calls inside the window (ns)
    completed: int  # calls that ended inside the window
    seconds: float
    cpu_s: float  # server CPU over the window (0 without a pid)
    aux_cpu_s: float = 0.0  # CPU of the auxiliary processes (e.g. PostgreSQL backends)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_us_per_op(self) -> float | None:
        return 1e6 * self.cpu_s / self.completed if self.completed and self.cpu_s else None

    @property
    def aux_cpu_us_per_op(self) -> float | None:
        return 1e6 * self.aux_cpu_s / self.completed if self.completed and self.aux_cpu_s else None


Call = Callable[[], Awaitable[Any]]


async def closed_loop(
    calls: Sequence[Call],
    seconds: float,
    warmup: float,
    pid: int | Sequence[int] = 0,
    aux_pids: Callable[[], Sequence[int]] | None = None,
) -> Window:
    """Every client runs its call back to back; only calls that start after the
    warm-up and end within the measured window count for latency and rate.
    The server process `pid`'s CPU time (the sum over several processes, e.g.
    replicas) is read at both ends of the window; so is, separately, that of
    the processes aux_pids() names at each end (processes that exit during the
    window lose their CPU; processes that start count all of theirs)."""
    pids = [p for p in ([pid] if isinstance(pid, int) else pid) if p]
    t_measure = now_ns() + int(warmup * 1e9)
    t_end = t_measure + int(seconds * 1e9)
    latencies: list[int] = []
    completed = 0
    cpu: list[float] = []
    aux: list[float] = []

    async def client(call: Call) -> None:
        nonlocal completed
        while True:
            t0 = now_ns()
            if t0 >= t_end:
                return
            await call()
            t1 = now_ns()
            if t_measure <= t1 <= t_end:
                completed += 1
                if t0 >= t_measure:
                    latencies.append(t1 - t0)

    async def sampler() -> None:
        for t in (t_measure, t_end):
            await asyncio.sleep(max(0.0, (t - now_ns()) / 1e9))
            cpu.append(sum(cpu_seconds(p) for p in pids))
            if aux_pids is not None:
                aux.append(sum(cpu_seconds(p) for p in aux_pids()))

    tasks = [asyncio.ensure_future(client(c)) for c in calls]
    if pids or aux_pids is not None:
        tasks.append(asyncio.ensure_future(sampler()))
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    return Window(
        latencies,
        completed,
        seconds,
        cpu[1] - cpu[0] if len(cpu) == 2 else 0.0,
        aux[1] - aux[0] if len(aux) == 2 else 0.0,
    )


@dataclass
class Case:
    """A closed-loop case measured in interleaved rounds. With `prepare`, each
    round first calls prepare(round) (not timed) for that round's calls, e.g.
    on fresh channels, so that no round inherits the history of the ones
    before; prepare may also move `pid` (a fresh server)."""

    key: str
    calls: list[Call] = field(default_factory=list)
    pid: int | Sequence[int] = 0  # server process(es) whose CPU is measured
    prepare: Callable[[int], Awaitable[list[Call]]] | None = None
    aux_pids: Callable[[], Sequence[int]] | None = None  # e.g. the replicas' PostgreSQL backends
    windows: list[Window] = field(default_factory=list)


async def interleaved(cases: Sequence[Case], rounds: int, seconds: float, warmup: float, what: str) -> None:
    """`rounds` rounds of every case, each case `seconds` / rounds per round,
    the order reversed every other round, so that a slow spell of the machine
    hits all cases alike. The first round of a case warms up for `warmup`,
    later ones for a fifth of it (a fresh channel gets the full warm-up)."""
    per_round = seconds / rounds
    for r in range(rounds):
        log(f"{what}: round {r + 1} of {rounds}")
        for case in cases if r % 2 == 0 else list(reversed(cases)):
            if case.prepare is not None:
                case.calls = await case.prepare(r)
            w = await closed_loop(
                case.calls,
                per_round,
                warmup if r == 0 or case.prepare is not None else warmup / 5,
                case.pid,
                case.aux_pids,
            )
            case.windows.append(w)


# -- results ---------------------------------------------------------------------------


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
    baseline: str | None  # key of the baseline row (None: this row is a baseline or an etcd row)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    side: str = "playlog"  # the server measured: playlog, etcd or bare
    # Server CPU (all threads of the server process) over the measured window
    # divided by the operations: per call (unary) or per delivered event (watch).
    cpu_us_per_op: float | None = None
    rounds: int = 1  # numbers are medians over this many interleaved rounds
    skipped: bool = False  # not measured on purpose (etcd unavailable): not a failure

    @property
    def failed(self) -> bool:
        return bool(self.error) and self.p50_ms is None


def case_numbers(case: Case) -> dict[str, Any]:
    """Median over the case's rounds of ops/s, p50, p99 and server CPU per op."""
    per = [summarize_ns(w.latencies) for w in case.windows]
    return {
        "rate": median([w.rate for w in case.windows]),
        "p50_ms": median([p["p50_ms"] for p in per]),
        "p99_ms": median([p["p99_ms"] for p in per]),
        "samples": sum(len(w.latencies) for w in case.windows),
        "cpu_us_per_op": median([w.cpu_us_per_op for w in case.windows]),
        "aux_cpu_us_per_op": median([w.aux_cpu_us_per_op for w in case.windows]),
        "rounds": len(case.windows),
        "per_round": [
            {
                "ops_s": round(w.rate, 2),
                "p50_ms": p["p50_ms"],
                "p99_ms": p["p99_ms"],
                "cpu_us_per_op": w.cpu_us_per_op,
                "aux_cpu_us_per_op": w.aux_cpu_us_per_op,
            }
            for w, p in zip(case.windows, per, strict=True)
        ],
    }


def case_result(
    case: Case,
    operation: str,
    setup: str,
    baseline: str | None,
    side: str = "playlog",
    extra: dict[str, Any] | None = None,
) -> Result:
    n = case_numbers(case)
    return Result(
        case.key,
        operation,
        setup,
        n["rate"],
        "ops/s",
        n["p50_ms"],
        n["p99_ms"],
        n["samples"],
        baseline,
        {**(extra or {}), "per_round": n["per_round"], "aux_cpu_us_per_op": n["aux_cpu_us_per_op"]},
        side=side,
        cpu_us_per_op=n["cpu_us_per_op"],
        rounds=n["rounds"],
    )


def skipped_result(key: str, operation: str, setup: str, why: str, side: str = "etcd") -> Result:
    return Result(key, operation, setup, None, "", None, None, 0, None, error=why, side=side, skipped=True)


def failed_result(
    key: str, operation: str, setup: str, error: str, side: str = "playlog", baseline: str | None = None
) -> Result:
    return Result(key, operation, setup, None, "", None, None, 0, baseline, error=error, side=side)


def latency_result(
    key: str,
    operation: str,
    setup: str,
    latencies_ns: Sequence[int],
    baseline: str | None,
    extra: dict[str, Any],
    problems: Sequence[str] = (),
    side: str = "playlog",
    cpu_us_per_op: float | None = None,
) -> Result:
    s = summarize_ns(latencies_ns)
    return Result(
        key,
        operation,
        setup,
        None,
        "",
        s["p50_ms"],
        s["p99_ms"],
        int(s["n"]),
        baseline,
        {"max_ms": s["max_ms"], "problems": list(problems), **extra},
        "; ".join(problems),
        side=side,
        cpu_us_per_op=cpu_us_per_op,
    )


# -- goals and the summary -------------------------------------------------------------

# The value of a row a goal looks at: the row's field, "cpu" (server CPU per
# op, µs), "cpu_total" (server + auxiliary processes, µs) or "answer_p50_ms"
# (the publish call's own latency, of watch rows).
METRIC_UNITS = {
    "rate": "",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "answer_p50_ms": "ms",
    "cpu": "µs CPU/op",
    "cpu_total": "µs CPU/op",
}


@dataclass(frozen=True)
class Goal:
    """One line of the summary: playlog's number against the other side's
    (a ratio), or alone against an absolute bound (other = None; bounds in
    ms for the CPU metrics)."""

    measure: str
    playlog: str  # key of playlog's row
    other: str | None  # key of the other side's row
    metric: str
    other_label: str = ""  # how to name the other side
    must: str = ""  # e.g. ">= 1.0"; "" for none
    reach: str = ""  # the "reach for" bound, same form


def goal_value(r: Result | None, metric: str) -> float | None:
    if r is None or r.failed:
        return None
    if metric == "cpu":
        v = r.cpu_us_per_op
    elif metric == "cpu_total":
        aux = r.extra.get("aux_cpu_us_per_op")
        v = r.cpu_us_per_op + aux if r.cpu_us_per_op is not None and aux is not None else None
    elif metric == "answer_p50_ms":
        v = r.extra.get("answer_p50_ms")
    else:
        v = getattr(r, metric)
    return None if v is None or math.isnan(v) else float(v)


def value_cell(r: Result | None, metric: str) -> str:
    if r is None:
        return "not run"
    if r.skipped:
        return "skipped"
    if r.failed:
        return "FAILED"
    v = goal_value(r, metric)
    unit = METRIC_UNITS[metric] or r.unit
    if v is not None and metric in ("cpu", "cpu_total"):
        return f"{fmt_num(v / 1000)} ms CPU/op"
    return f"{fmt_num(v)} {unit}" if v is not None else "—"


def bound_met(value: float | None, bound: str) -> bool | None:
    if not bound or value is None:
        return None
    op, number = bound.split()
    return value >= float(number) if op == ">=" else value <= float(number)


def summary(results: Sequence[Result], goals: Sequence[Goal]) -> list[dict[str, Any]]:
    rows = {r.key: r for r in results}
    out = []
    for g in goals:
        p = rows.get(g.playlog)
        o = rows.get(g.other) if g.other else None
        if p is None and o is None:
            continue
        pv = goal_value(p, g.metric)
        if g.other is None:
            # An absolute bound, in ms for CPU metrics.
            compared = pv / 1000 if pv is not None and g.metric.startswith("cpu") else pv
            ratio = None
        else:
            ov = goal_value(o, g.metric)
            ratio = pv / ov if pv is not None and ov is not None and ov > 0 else None
            compared = ratio
        unit = "x" if g.other else (" ms" if g.metric.startswith("cpu") or g.metric.endswith("_ms") else "")
        out.append(
            {
                "measure": g.measure,
                "playlog_key": g.playlog,
                "other_key": g.other,
                "other": g.other_label,
                "playlog": value_cell(p, g.metric),
                "other_value": value_cell(o, g.metric) if g.other else "",
                "ratio": ratio,
                "compared": compared,
                "must": f"{g.must}{unit} {g.other_label}".strip() if g.must else "",
                "reach": f"{g.reach}{unit} {g.other_label}".strip() if g.reach else "",
                "met": bound_met(compared, g.must),
                "reached": bound_met(compared, g.reach),
                "playlog_cpu": summary_cpu_cell(p),
                "other_cpu": summary_cpu_cell(o),
                "rounds": max(p.rounds if p else 0, o.rounds if o else 0),
            }
        )
    return out


def summary_cpu_cell(r: Result | None) -> str:
    """Server CPU in the summary: per call, or per publish for watch rows
    (whose per-event CPU is in the results table)."""
    if r is None or r.failed:
        return "—"
    per_publish = r.extra.get("server_cpu_ms_per_publish")
    if per_publish is not None:
        return f"{fmt_num(per_publish)} ms/publish"
    total = goal_value(r, "cpu_total")
    if total is not None:
        return f"{fmt_num(total / 1000)} ms/op (PostgreSQL {fmt_num(r.extra['aux_cpu_us_per_op'] / 1000)})"
    return f"{fmt_num(r.cpu_us_per_op / 1000)} ms/op" if r.cpu_us_per_op is not None else "—"


def render_summary(lines: Sequence[dict[str, Any]]) -> list[str]:
    def verdict(value: bool | None, bound: str) -> str:
        if not bound:
            return ""
        return {True: "**met**", False: "**not met**", None: "not measured"}[value]

    out = [
        "| goal (same run, same machine) | playlog | beside it | ratio | must | met | reach for | reached "
        "| playlog server CPU | other server CPU |",
        "|---|---:|---:|---:|---|---|---|---|---:|---:|",
    ]
    for s in lines:
        if s["ratio"] is not None:
            ratio = f"{s['ratio']:.2f}x"
        else:
            ratio = "—"
        beside = f"{s['other']}: {s['other_value']}" if s["other_key"] else "(absolute)"
        out.append(
            f"| {s['measure']} | {s['playlog']} | {beside} | {ratio} "
            f"| {s['must'] or '—'} | {verdict(s['met'], s['must']) or '—'} "
            f"| {s['reach'] or '—'} | {verdict(s['reached'], s['reach']) or '—'} "
            f"| {s['playlog_cpu']} | {s['other_cpu']} |"
        )
    return out


# -- rendering -------------------------------------------------------------------------


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


def same_ratio(x: float | None, base: float | None) -> str:
    return (fmt_ratio(x, base) or "—") if base is not None and base >= 1.0 else "—"


def fmt_diff(x: float | None, base: float | None) -> str:
    if x is None or base is None or math.isnan(x) or math.isnan(base):
        return "—"
    return f"{x - base:+.2f} ms"


def ratio_cell(row: Result, rows: dict[str, Result]) -> str:
    if row.baseline is None:
        if row.side == "etcd":
            return "etcd side (see the summary)"
        return "baseline"
    base = rows.get(row.baseline)
    if base is None or base.error:
        return "— (no baseline)"
    parts = []
    thr = fmt_ratio(row.rate, base.rate)
    if thr:
        parts.append(f"{row.unit.split('/')[0]} {thr}")
    # Latency ratios are meaningless in the burst phase, where the offered
    # load (publishes/s) differs between the two servers.
    if "-burst-" not in row.key:
        for name, value, base_value in (("p50", row.p50_ms, base.p50_ms), ("p99", row.p99_ms, base.p99_ms)):
            ratio = fmt_ratio(value, base_value) if base_value is not None and base_value >= 0.005 else None
            if ratio:
                parts.append(f"{name} {ratio}")
    cpu = fmt_ratio(row.cpu_us_per_op, base.cpu_us_per_op)
    if cpu and row.unit == "ops/s":
        parts.append(f"CPU {cpu}")
    return ", ".join(parts) + f" of `{row.baseline}`" if parts else "—"


def cpu_cell(r: Result) -> str:
    if r.cpu_us_per_op is None:
        return "—"
    per = "event" if r.unit != "ops/s" else "op"
    cell = f"{fmt_num(r.cpu_us_per_op)} µs/{per}"
    aux = r.extra.get("aux_cpu_us_per_op")
    return cell + (f" + PostgreSQL {fmt_num(aux)} µs" if aux else "")


def results_table(results: Sequence[Result], rows: dict[str, Result]) -> list[str]:
    lines = [
        "| key | operation | setup | ops/s or events/s | p50 ms | p99 ms | ratio to baseline "
        "| server CPU | rounds | samples |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if r.failed:
            state = "skipped" if r.skipped else "FAILED"
            lines.append(f"| `{r.key}` | {r.operation} | {r.setup} | {state} | | | {r.error} | | | 0 |")
            continue
        rate = fmt_num(r.rate) + (f" {r.unit}" if r.rate is not None else "")
        setup = r.setup + (f" **({r.error})**" if r.error else "")
        lines.append(
            f"| `{r.key}` | {r.operation} | {setup} | {rate} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
            f"| {ratio_cell(r, rows)} | {cpu_cell(r)} | {r.rounds} | {r.samples} |"
        )
    return lines


def watch_cost_table(title: str, rows: Sequence[Result]) -> list[str]:
    """The publish call's own answer and the server's CPU of watch rows."""
    if not rows:
        return []
    out = [
        "",
        f"## {title}: the publish call's answer and server CPU (from /proc, server process only)",
        "",
        "| key | publish answer p50 ms | p99 ms | server CPU ms per publish "
        "| server CPU µs per delivered event |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        x = r.extra
        out.append(
            f"| `{r.key}` | {fmt_num(x.get('answer_p50_ms'))} | {fmt_num(x.get('answer_p99_ms'))} "
            f"| {fmt_num(x.get('server_cpu_ms_per_publish'))} | {fmt_num(x.get('server_cpu_us_per_event'))} |"
        )
    return out


# -- the environment -------------------------------------------------------------------


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
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def command_line(cmd: Sequence[str], replace: dict[str, str] | None = None) -> str:
    return " ".join(Path(a).name if i == 0 else (replace or {}).get(a, a) for i, a in enumerate(cmd))


def environment(
    script: str,
    run_name: str,
    workdir: Path,
    clients: str = "the bench process (unary load, publishers), bench/subscribers.py (watch streams)",
) -> dict[str, str]:
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
        "run": f"{run_name} (`{script}`)",
        "CPUs": f"{os.cpu_count()} (usable by this process: {affinity})"
        + (f", {cpu_model}" if cpu_model else ""),
        "platform": platform.platform(),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
        "playlog commit": commit,
        "data dir filesystem": fs_type(workdir) + " (playlog's and etcd's data directories)",
        "clients": f"{clients}, all on this machine, 127.0.0.1",
    }


# -- the harness -----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    unary_seconds: float  # measured time of each unary case, over `rounds` rounds
    read_seconds: float  # measured time of each read case, over read_rounds rounds
    warmup_seconds: float  # before a case's round (later rounds of the same channels: a fifth)
    big_days: int  # days stored on the "many days" read channel
    watch_counts: tuple[int, ...]
    watch_paced: int  # publishes in the paced (latency) phase
    watch_burst: int  # publishes in the burst (throughput) phase
    # (subscribers, publishes per second, publishes per round) of the
    # interleaved fixed-rate watch comparisons: playlog vs etcd, playlog vs bare.
    rate_etcd: tuple[int, float, int]
    rate_bare: tuple[int, float, int]
    # The grown store of growth.py: publishes stored on the measured
    # channel, other channels, days stored on each of them.
    grown_publishes: int
    grown_channels: int
    grown_days: int
    clients: int = 16
    rounds: int = 3
    read_rounds: int = 4
    replica_subscribers: int = 10  # WatchWindow subscribers on each replica (replicas section)


DEFAULT = Config(
    "default",
    9.0,
    6.0,
    1.0,
    1000,
    (1, 100, 1000),
    100,
    100,
    (100, 10.0, 40),
    (1000, 1.0, 15),
    10_000,
    1000,
    7,
)
# Quick: the one-at-a-time / burst watch cases without 1,000 subscribers (the
# fixed-rate comparison still has them) and a smaller grown store.
QUICK = Config(
    "quick", 2.4, 2.0, 0.5, 1000, (1, 100), 20, 20, (100, 10.0, 15), (1000, 1.0, 5), 2_000, 200, 7, rounds=2
)


@dataclass
class EtcdSide:
    """An etcd member beside playlog, or why there is none."""

    api: etcdlib.Api | None = None
    server: etcdlib.EtcdServer | None = None
    gen_dir: Path | None = None
    version: str = ""
    skipped: str = ""  # why etcd is not measured

    @property
    def running(self) -> bool:
        return self.api is not None and self.server is not None and not self.skipped


@dataclass(frozen=True)
class Workload:
    """One module of the benchmark. `run` measures on the servers it asks the
    Bench for (fresh ones, stopped when it returns); `goals` are its lines of
    the summary; `report` adds its own tables below the results."""

    name: str  # also the --only name
    run: Callable[[Bench], Awaitable[list[Result]]]
    goals: Callable[[Config], list[Goal]] = lambda cfg: []
    report: Callable[[dict[str, Result]], list[str]] = lambda rows: []


class Bench:
    """What a workload gets: the configuration, a work directory, and fresh
    servers (playlog, etcd), each stopped when the workload ends, so that no
    workload measures a store another one filled."""

    def __init__(self, cfg: Config, args: argparse.Namespace, workdir: Path) -> None:
        self.cfg = cfg
        self.args = args
        self.workdir = workdir
        # Progress events would otherwise cost every stream a store read per
        # second; subscribers also ask for an hour (see README).
        self.server_args = ["--progress-interval-ms", "3600000", *args.server_arg]
        self.env: dict[str, str] = {}
        self.notes: list[str] = []
        self.results: list[Result] = []
        self._scope = ""
        self._servers: list[PlaylogServer] = []
        self._etcd_servers: list[etcdlib.EtcdServer] = []
        self._etcd_base: EtcdSide | None = None  # binary and generated code, once per run
        self._etcd_binary = ""

    def result(self, key: str) -> Result | None:
        return next((r for r in self.results if r.key == key), None)

    async def playlog(self, name: str = "", extra_args: Sequence[str] = ()) -> PlaylogServer:
        """A fresh `playlog serve` (empty data directory) for this workload."""
        label = f"{self._scope}-{name}" if name else self._scope
        dirname = f"{label}-{len(self._servers)}"
        server = PlaylogServer(self.workdir / dirname, [*self.server_args, *extra_args])
        self._servers.append(server)
        await server.start()
        log(f"{label}: playlog serving on {server.target} (pid {server.pid})")
        self.env.setdefault("server", command_line(server.cmd, {str(server.data_dir): "<fresh dir>/data"}))
        return server

    async def stop_playlog(self, server: PlaylogServer) -> None:
        """Stops one of this workload's servers before the workload ends."""
        if server in self._servers:
            self._servers.remove(server)
        problems = server.log_problems()
        await server.stop()
        if problems:
            self.notes.append(
                f"{server.workdir.name}: server log has {len(problems)} error line(s), "
                f"first: `{problems[0][:300]}`"
            )
        if server.proc is not None and server.proc.returncode not in (0, -signal.SIGTERM):
            self.notes.append(
                f"{server.workdir.name}: playlog serve exited with status {server.proc.returncode}"
            )

    async def etcd(self) -> EtcdSide:
        """A fresh etcd member for this workload (found or installed and its
        protos compiled once per run), or why there is none."""
        import etcdlib

        if self.args.no_etcd:
            self._etcd_base = EtcdSide(skipped="--no-etcd")
            return self._etcd_base
        try:
            if self._etcd_base is None:
                self._etcd_binary = await asyncio.to_thread(etcdlib.ensure_etcd, log)
                gen_dir = self.workdir / "etcd-gen"
                await asyncio.to_thread(etcdlib.compile_protos, gen_dir)
                self._etcd_base = EtcdSide(
                    etcdlib.load(gen_dir), None, gen_dir, etcdlib.etcd_version(self._etcd_binary)
                )
            if self._etcd_base.skipped:
                return self._etcd_base
            base = self._etcd_base
            assert base.api is not None
            etcd_dir = self.workdir / f"{self._scope}-etcd-{len(self._etcd_servers)}"
            etcd_dir.mkdir(parents=True, exist_ok=True)
            server = etcdlib.EtcdServer(self._etcd_binary, etcd_dir)
            self._etcd_servers.append(server)
            await server.start(base.api)
            log(f"{self._scope}: etcd {base.version} serving on {server.target} (pid {server.pid})")
            self.env.setdefault(
                "etcd",
                f"{base.version}: {command_line(server.cmd)}; client: etcd's v3 gRPC API "
                "(bench/etcd_proto), grpc.aio",
            )
            return EtcdSide(base.api, server, base.gen_dir, base.version)
        except etcdlib.EtcdUnavailable as e:
            log(f"etcd unavailable, the etcd rows are skipped: {e}")
            self._etcd_base = EtcdSide(skipped=str(e))
            return self._etcd_base

    async def run(self, workload: Workload) -> None:
        """Runs one workload; its servers are stopped afterwards whatever happens."""
        import etcdlib

        self._scope = workload.name
        try:
            self.results += await workload.run(self)
        except (BenchError, grpc.aio.AioRpcError, etcdlib.EtcdUnavailable) as e:
            log(f"{workload.name}: FAILED: {e}")
            self.notes.append(f"{workload.name} aborted: {e}")
            self.results.append(failed_result(f"{workload.name}-aborted", workload.name, "", str(e)))
        finally:
            for server in list(self._servers):
                await self.stop_playlog(server)
            for etcd in self._etcd_servers:
                await etcd.stop()
            self._servers, self._etcd_servers = [], []


def render(
    title: str,
    bench: Bench,
    workloads: Sequence[Workload],
    summary_lines: Sequence[dict[str, Any]],
) -> str:
    rows = {r.key: r for r in bench.results}
    lines = [
        f"# {title} ({bench.cfg.name} run)",
        "",
        "## Environment",
        "",
        *(f"- {k}: {v}" for k, v in bench.env.items()),
        "",
        "## Results",
        "",
        "Latency is from before the call to its answer (watch rows: to the subscriber's receipt). "
        "Rows measured in interleaved rounds show the median over the rounds (`rounds`).",
        "",
        *results_table(bench.results, rows),
    ]
    for w in workloads:
        lines += w.report(rows)
    if bench.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in bench.notes)]
    if summary_lines:
        lines += [
            "",
            "## Summary: the goals (issues 16 and 18), same run, same machine",
            "",
            "ratio = playlog's number / the other's. Server CPU: all threads of the server "
            "process over the measured window, per operation (watch: per delivered event); the no-op "
            "RPC is measured in the same rounds and at the same concurrency as what it is compared with.",
            "",
            *render_summary(summary_lines),
        ]
    return "\n".join(lines) + "\n"


def parser(description: str, sections: Sequence[str] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter windows, fewer publishes, 2 rounds")
    if sections:
        p.add_argument(
            "--only", default="", help=f"comma-separated workloads: {','.join(sections)} (default: all)"
        )
    p.add_argument("--no-etcd", action="store_true", help="do not start etcd; its rows are marked skipped")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `playlog serve` (repeatable), e.g. --server-arg=--worker-threads=4",
    )
    p.add_argument("--tmpdir", default=None, help="parent of the temporary data directory (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the data directories and the servers' logs")
    return p


async def run_workloads(
    args: argparse.Namespace,
    workloads: Sequence[Workload],
    script: str,
    after: Callable[[Bench], Awaitable[None]] | None = None,
) -> int:
    """Runs the workloads one after the other, each on fresh servers, prints
    the report (with the summary of their goals) and writes it to
    bench/results/latest.md (and latest.json). Exit status 1 if a case failed
    (not if a goal is missed: the bench measures, the summary says)."""
    cfg = QUICK if args.quick else DEFAULT
    # SIGTERM ends the run like Ctrl-C: cancelled, every server stopped by the
    # finally clauses (and kill_children() in main() as a last resort).
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="playlog-bench-", dir=args.tmpdir))
    bench = Bench(cfg, args, workdir)
    bench.env = environment(script + (" --quick" if args.quick else ""), cfg.name, workdir)
    load_start = load_average()
    started = time.monotonic()
    try:
        for w in workloads:
            log(f"== {w.name}")
            await bench.run(w)
        if after is not None:
            await after(bench)
    finally:
        if args.keep:
            bench.notes.append(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if "etcd" not in bench.env:
        why = bench._etcd_base.skipped if bench._etcd_base is not None else "not used by these workloads"
        bench.env["etcd"] = f"not measured ({why})"
        if bench._etcd_base is not None:
            bench.notes.append(f"**etcd rows skipped**: {why}")
    bench.notes.append(f"wall time of the run: {time.monotonic() - started:.0f} s")
    bench.env["load average (1, 5, 15 min) at start; at end"] = f"{load_start}; {load_average()}"
    goals = [g for w in workloads for g in w.goals(cfg)]
    summary_lines = summary(bench.results, goals)
    report = render("playlog benchmark", bench, workloads, summary_lines)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(report)
    (RESULTS_DIR / "latest.json").write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "environment": bench.env,
                "summary": summary_lines,
                "results": [asdict(r) for r in bench.results],
                "notes": bench.notes,
            },
            indent=1,
        )
    )
    log(f"written to {RESULTS_DIR / 'latest.md'}")
    return 1 if any(r.error and not r.skipped for r in bench.results) else 0


def run_main(coro: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """asyncio.run(coro()) with Ctrl-C / SIGTERM ending it cleanly and every
    child still running killed by its pid at the end; exits with its status."""
    try:
        code = asyncio.run(coro())
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted: servers stopped, no report written")
        code = 130
    finally:
        kill_children()
    sys.exit(code)


def main(workloads: Sequence[Workload], description: str | None) -> None:
    """The command line of a workload module run alone."""
    args = parser(description or "").parse_args()
    run_main(lambda: run_workloads(args, workloads, f"bench/{Path(sys.argv[0]).name}"))
