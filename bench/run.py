"""playlog benchmark: starts the real server (`playlog serve`, manual clock,
temporary data directory, 127.0.0.1 only) and, beside it, an etcd member
(Debian's etcd-server 3.4, installed if missing when root) as subprocesses,
drives both over gRPC and prints markdown tables in which every number is
also given as a ratio to a baseline or to the etcd equivalent measured in the
same run on the same machine:

- unary operations against the health service's Check on the same server
  (a no-op gRPC call: transport, interceptor and event loop, no store work);
- publish, read one day and watch against the same workload on etcd
  (Txn / Range / Watch over etcd's own gRPC API, bench/etcdlib.py), in
  interleaved rounds, with the server CPU per operation of both servers;
- WatchWindow fan-out against a bare grpc.aio streaming server
  (bench/fanout_server.py) fanning the same bytes out to as many streams;
- replicas: publishes on one fresh PostgreSQL database through one replica,
  through two replicas sharing it, and on etcd; WatchWindow latency from a
  publish on one replica to subscribers on the other.

The last table is the summary: playlog against etcd (or the bare fan-out,
or a no-op RPC for CPU), with issue 9's goals and whether they are met.

Run: `.venv/bin/python bench/run.py` (`make bench`), `--quick` for a short run,
`--only replicas` (or publish, read, watch) for some sections.
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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import etcdlib
import grpc
from benchlib import (
    CHILDREN,
    DAY_MS,
    ENTRIES_PER_DAY,
    FANOUT_SERVICE,
    GRPC_CLIENT_OPTIONS,
    LOCKED_WINDOW_MS,
    START_UTC_MS,
    cpu_seconds,
    day_date,
    day_entries,
    day_start_ms,
    days_entries,
    kill_children,
    now_ns,
    stop_process,
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
    unary_seconds: float  # measured time of each baseline / publish case, in `rounds` rounds
    read_seconds: float  # measured time of each read case, in read_rounds interleaved slices
    warmup_seconds: float  # before the first round of a case (later rounds: a fifth of it)
    big_days: int  # days stored on the "many days" read channel
    watch_counts: tuple[int, ...]
    watch_paced: int  # publishes in the paced (latency) phase
    watch_burst: int  # publishes in the burst (throughput) phase
    # (subscribers, publishes per second, publishes per round) of the
    # interleaved fixed-rate watch comparisons: playlog vs etcd, playlog vs bare.
    rate_etcd: tuple[int, float, int]
    rate_bare: tuple[int, float, int]
    clients: int = 16
    rounds: int = 3
    read_rounds: int = 4
    replica_subscribers: int = 10  # WatchWindow subscribers on each replica (replicas section)


SECTIONS = ("baseline", "publish", "read", "watch", "replicas")
DEFAULT = Config("default", 9.0, 6.0, 1.0, 1000, (1, 100, 1000), 100, 100, (100, 10.0, 40), (1000, 1.0, 15))
# Quick: the one-at-a-time / burst watch cases without 1,000 subscribers (the
# fixed-rate comparison still has them), so that it stays under 2 minutes.
QUICK = Config("quick", 2.4, 2.0, 0.5, 1000, (1, 100), 20, 20, (100, 10.0, 15), (1000, 1.0, 5), rounds=2)


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

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

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
        CHILDREN.append(self.proc)
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
    baseline: str | None  # key of the baseline row (None: this row is a baseline or an etcd row)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    side: str = "playlog"  # the server measured: playlog, etcd or bare
    # Server CPU (all threads of the server process) over the measured window
    # divided by the operations: per call (unary) or per delivered event (watch).
    cpu_us_per_op: float | None = None
    rounds: int = 1  # numbers are medians over this many interleaved rounds
    skipped: bool = False  # not measured on purpose (etcd unavailable): not a failure


@dataclass
class Window:
    """One measured closed-loop window of one case."""

    latencies: list[int]  # of the calls that started and ended inside the window (ns)
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


async def closed_loop(
    calls: Sequence[Callable[[], Awaitable[Any]]],
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

    async def client(call: Callable[[], Awaitable[Any]]) -> None:
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


async def measure(
    calls: Sequence[Callable[[], Awaitable[Any]]], seconds: float, warmup: float
) -> tuple[float, dict[str, float]]:
    """-> (calls/s, latency summary) of one closed-loop window."""
    w = await closed_loop(calls, seconds, warmup)
    return w.rate, summarize_ns(w.latencies)


@dataclass
class Case:
    """A closed-loop case measured in interleaved rounds."""

    key: str
    calls: list[Callable[[], Awaitable[Any]]]
    pid: int | Sequence[int]  # server process(es) whose CPU is measured
    windows: list[Window] = field(default_factory=list)
    aux_pids: Callable[[], Sequence[int]] | None = None  # e.g. the replicas' PostgreSQL backends


async def interleaved(cases: Sequence[Case], rounds: int, seconds: float, warmup: float, what: str) -> None:
    """`rounds` rounds of every case, each case `seconds` / rounds per round,
    the order reversed every other round, so that a slow spell of the machine
    hits all cases alike. The first round of a case warms up for `warmup`,
    later ones for a fifth of it."""
    per_round = seconds / rounds
    for r in range(rounds):
        log(f"{what}: round {r + 1} of {rounds}")
        for case in cases if r % 2 == 0 else list(reversed(cases)):
            w = await closed_loop(
                case.calls, per_round, warmup if r == 0 else warmup / 5, case.pid, case.aux_pids
            )
            case.windows.append(w)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


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


@dataclass
class EtcdSide:
    """The etcd member beside playlog, or why there is none."""

    api: etcdlib.Api | None = None
    server: etcdlib.EtcdServer | None = None
    gen_dir: Path | None = None
    version: str = ""
    skipped: str = ""  # why etcd is not measured

    @property
    def running(self) -> bool:
        return self.api is not None and self.server is not None and not self.skipped


async def bench_baseline(server: PlaylogServer, cfg: Config) -> list[Result]:
    log(f"baseline: health Check, 1 and {cfg.clients} clients")
    sets = {n: [Client(server.target, i) for i in range(n)] for n in (1, cfg.clients)}
    req = health_pb2.HealthCheckRequest()
    cases = [
        Case(f"health-{n}", [lambda c=c: c.health.Check(req) for c in clients], server.pid)
        for n, clients in sets.items()
    ]
    try:
        await interleaved(cases, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "baseline")
    finally:
        for clients in sets.values():
            for c in clients:
                await c.close()
    return [
        case_result(
            case,
            "baseline: Health/Check (no-op unary)",
            f"{n} clients, own connection each" if n > 1 else "1 client",
            None,
        )
        for n, case in zip(sets, cases, strict=True)
    ]


def etcd_failed(keys: Sequence[tuple[str, str, str]], etcd: EtcdSide, error: str = "") -> list[Result]:
    """Rows for etcd cases that were not measured: skipped (no etcd) or failed."""
    out = []
    for key, operation, setup in keys:
        if error:
            out.append(Result(key, operation, setup, None, "", None, None, 0, None, error=error, side="etcd"))
        else:
            out.append(skipped_result(key, operation, setup, f"skipped: {etcd.skipped}"))
    return out


async def etcd_publishers(
    etcd: EtcdSide, channel_ids: Sequence[str], clients: list[etcdlib.EtcdClient]
) -> list[etcdlib.Publisher]:
    """One etcd client (own connection) per channel, appended to `clients` for
    the caller to close; each channel declared with a day-0 ScheduleDay and
    published once (checked); -> their publishers of day 0 (the publish
    rows' Txn)."""
    assert etcd.api is not None and etcd.server is not None
    pubs = []
    for i, cid in enumerate(channel_ids):
        ec = etcdlib.EtcdClient(etcd.api, etcd.server.target, i)
        clients.append(ec)
        await ec.declare(cid)
        await ec.store_days(cid, range(1))
        pub = ec.publisher(cid, 0, 1)
        await pub.check()
        pubs.append(pub)
    return pubs


async def bench_publish(server: PlaylogServer, etcd: EtcdSide, cfg: Config) -> list[Result]:
    """publish-1 / publish-16 on playlog and the same on etcd, interleaved."""
    playlog_clients: list[Client] = []
    etcd_clients: list[etcdlib.EtcdClient] = []
    cases: list[Case] = []
    etcd_rows = [
        (
            f"etcd-publish-{n}",
            "etcd Txn: replace a 48-entry day",
            f"{n} client{'s' if n > 1 else ''}" + (", own connection and channel each" if n > 1 else ""),
        )
        for n in (1, cfg.clients)
    ]
    etcd_error = ""
    try:
        for n in (1, cfg.clients):
            log(f"publish: setting up {n} playlog client(s)")
            clients = [Client(server.target, i) for i in range(n)]
            playlog_clients += clients
            calls = [await playlog_publisher(c, f"pub{n}-{i}") for i, c in enumerate(clients)]
            cases.append(Case(f"publish-{n}", calls, server.pid))
            if etcd.running:
                assert etcd.api is not None and etcd.server is not None
                log(f"publish: setting up {n} etcd client(s)")
                try:
                    pubs = await etcd_publishers(etcd, [f"pub{n}-{i}" for i in range(n)], etcd_clients)
                    cases.append(Case(f"etcd-publish-{n}", list(pubs), etcd.server.pid))
                except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                    etcd_error = f"etcd setup failed: {e}"
                    log(f"publish: {etcd_error}")
                    cases = [c for c in cases if not c.key.startswith("etcd-")]
                    etcd.skipped = etcd.skipped or etcd_error
        log("publish: " + ", ".join(c.key for c in cases))
        await interleaved(cases, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "publish")
    finally:
        for c in playlog_clients:
            await c.close()
        for ec in etcd_clients:
            await ec.close()
    out = []
    by_key = {c.key: c for c in cases}
    for n in (1, cfg.clients):
        out.append(
            case_result(
                by_key[f"publish-{n}"],
                "PublishAtomicReplace, 48-entry day",
                f"{n} client{'s' if n > 1 else ''}, "
                + ("own connection and channel_id each, " if n > 1 else "")
                + "re-replacing the same day",
                f"health-{n}",
            )
        )
    for key, operation, setup in etcd_rows:
        if key in by_key:
            out.append(
                case_result(
                    by_key[key],
                    operation,
                    setup + ": compare gen + ScheduleDay, 48 deletes, 48 puts, publish record, gen",
                    None,
                    "etcd",
                )
            )
        else:
            out += etcd_failed([(key, operation, setup)], etcd, etcd_error)
    return out


async def bench_read(server: PlaylogServer, etcd: EtcdSide, cfg: Config) -> list[Result]:
    c = Client(server.target)
    ec = (
        etcdlib.EtcdClient(etcd.api, etcd.server.target)
        if etcd.running and etcd.api and etcd.server
        else None
    )
    out = []
    cases: list[tuple[Case, str, str, int, dict[str, Any]]] = []  # case, operation, setup, days, extra
    etcd_error = ""
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
        for cid, stored in setups:
            first = min(stored // 2, stored - 7)  # middle of the stored range
            for days in (1, 7):
                req = ew.ReadWindowSnapshotRequest(
                    channel_id=cid, start_utc_ms=day_start_ms(first), end_utc_ms=day_start_ms(first + days)
                )
                snap = await c.window.ReadWindowSnapshot(req)
                want = days * ENTRIES_PER_DAY
                if len(snap.entries) != want:
                    raise BenchError(
                        f"ReadWindowSnapshot {cid} {days} days: {len(snap.entries)} entries, want {want}"
                    )
                what = f"{days} day{'s' if days > 1 else ''} ({want} entries)"
                cases.append(
                    (
                        Case(
                            f"read-{days}d-{stored}",
                            [functools.partial(c.window.ReadWindowSnapshot, req)],
                            server.pid,
                        ),
                        f"ReadWindowSnapshot, {what}",
                        f"1 client, {stored} days ({stored * ENTRIES_PER_DAY} entries) stored on the channel",
                        days,
                        {"response_bytes": snap.ByteSize()},
                    )
                )
        if ec is not None and etcd.server is not None:
            try:
                for cid, stored in setups:
                    log(f"read: storing {stored} days on etcd ({stored} Txns of one day)")
                    t0 = time.monotonic()
                    await ec.declare(cid)
                    await ec.store_days(cid, range(stored))
                    for day in range(stored):
                        await ec.publisher(cid, day, 1, ("",))()
                    log(f"read: etcd {cid} stored in {time.monotonic() - t0:.1f} s")
                    first = min(stored // 2, stored - 7)
                    got = await ec.read(cid, first, 1)
                    if len(got) != ENTRIES_PER_DAY:
                        raise etcdlib.EtcdUnavailable(
                            f"etcd Range {cid} 1 day: {len(got)} entries, want {ENTRIES_PER_DAY}"
                        )
                    cases.append(
                        (
                            Case(f"etcd-read-1d-{stored}", [ec.read_call(cid, first, 1)], etcd.server.pid),
                            f"etcd Range: 1 day ({ENTRIES_PER_DAY} keys), values parsed",
                            f"1 client, {stored} days ({stored * ENTRIES_PER_DAY} entry keys) on the channel",
                            1,
                            {},
                        )
                    )
            except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                etcd_error = f"etcd setup failed: {e}"
                log(f"read: {etcd_error}")
                cases = [x for x in cases if not x[0].key.startswith("etcd-")]
        await interleaved(
            [x[0] for x in cases], cfg.read_rounds, cfg.read_seconds, cfg.warmup_seconds / 2, "read"
        )
        for case, operation, setup, _, extra in cases:
            side = "etcd" if case.key.startswith("etcd-") else "playlog"
            out.append(
                case_result(case, operation, setup, None if side == "etcd" else "health-1", side, extra)
            )
        measured = {x[0].key for x in cases}
        out += etcd_failed(
            [
                (
                    f"etcd-read-1d-{stored}",
                    f"etcd Range: 1 day ({ENTRIES_PER_DAY} keys), values parsed",
                    f"1 client, {stored} days stored",
                )
                for stored in (10, cfg.big_days)
                if f"etcd-read-1d-{stored}" not in measured
            ],
            etcd,
            etcd_error,
        )
    finally:
        await c.close()
        if ec is not None:
            await ec.close()
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
            side=kind,
            cpu_us_per_op=extra_p["server_cpu_us_per_event"],
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
            side=kind,
            cpu_us_per_op=extra_b["server_cpu_us_per_event"],
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
            playlog_publish = await playlog_publisher(client, cid)

            # bare: the same entries as a serialized replaced event, so the
            # subscribers receive and parse as many bytes as from playlog.
            payloads = bare_payloads(cid, cfg.watch_paced + cfg.watch_burst)
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


@dataclass
class RateSide:
    """One server of a fixed-rate watch comparison, with its subscriber process."""

    kind: str  # playlog, etcd, bare
    target: str
    pid: int
    channel_id: str
    publish: Callable[[], Awaitable[int]]
    sub_args: list[str] = field(default_factory=list)
    sp: SubscriberProc | None = None
    rounds: list[tuple[dict[int, int], float]] = field(default_factory=list)  # (ack per generation, CPU s)


async def rate_round(side: RateSide, count: int, per_s: float) -> None:
    """`count` publishes at `per_s` per second (each at its scheduled time, or
    at once if the previous one returned late); then waits until every
    subscriber has every event. Records the ack times and the server CPU."""
    assert side.sp is not None
    acks: dict[int, int] = {}
    c0 = cpu_seconds(side.pid)
    t0 = time.monotonic()
    for k in range(count):
        delay = t0 + k / per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        g = await side.publish()
        acks[g] = now_ns()
    for g in acks:
        await side.sp.wait_delivered(g, limit_s=60)
    side.rounds.append((acks, cpu_seconds(side.pid) - c0))


def rate_result(
    side: RateSide, n: int, per_s: float, recv: dict[str, list[int]], baseline: str | None
) -> Result:
    per_round = []
    for acks, cpu_s in side.rounds:
        lat = summarize_ns([t - ack for g, ack in acks.items() for t in recv.get(str(g), [])])
        events = sum(len(recv.get(str(g), [])) for g in acks)
        per_round.append(
            {
                "publishes": len(acks),
                "events": events,
                "p50_ms": lat["p50_ms"],
                "p99_ms": lat["p99_ms"],
                "cpu_us_per_event": 1e6 * cpu_s / events if events else None,
                "cpu_ms_per_publish": 1e3 * cpu_s / len(acks) if acks else None,
            }
        )
    label = {
        "playlog": "WatchWindow",
        "etcd": "etcd Watch on the channel prefix",
        "bare": "bare grpc.aio fan-out",
    }[side.kind]
    assert side.sp is not None
    conns = side.sp.connections
    return Result(
        f"{side.kind}-rate-{n}",
        f"{label}: ack -> receipt at {per_s:g} publish{'es' if per_s != 1 else ''}/s",
        f"{n} subscribers on {conns} connection{'s' if conns > 1 else ''}, "
        f"{len(side.rounds)} rounds of {len(side.rounds[0][0]) if side.rounds else 0} publishes",
        None,
        "",
        median([r["p50_ms"] for r in per_round]),
        median([r["p99_ms"] for r in per_round]),
        sum(r["events"] for r in per_round),
        baseline,
        {
            "per_round": per_round,
            "server_cpu_ms_per_publish": median([r["cpu_ms_per_publish"] for r in per_round]),
            "server_cpu_us_per_event": median([r["cpu_us_per_event"] for r in per_round]),
        },
        side=side.kind,
        cpu_us_per_op=median([r["cpu_us_per_event"] for r in per_round]),
        rounds=len(per_round),
    )


async def rate_compare(
    sides: tuple[RateSide, ...], n: int, per_s: float, count: int, cfg: Config, workdir: Path
) -> list[Result]:
    """Both sides' subscribers open at once; then `cfg.rounds` rounds, each
    side in turn (order reversed every other round), of `count` publishes at
    `per_s`/s. Numbers: medians over the rounds."""
    try:
        for side in sides:
            side.sp = SubscriberProc(
                side.kind,
                side.target,
                n,
                side.channel_id,
                workdir / f"recv-rate-{side.kind}-{n}.json",
                side.sub_args,
            )
            log(f"watch: {side.kind}, {n} subscribers for the {per_s:g}/s comparison: opening streams")
            await side.sp.start(limit_s=120)
        await asyncio.sleep(0.2)
        for side in sides:  # warm-up publishes, not counted
            assert side.sp is not None
            for _ in range(2):
                await side.sp.wait_delivered(await side.publish(), limit_s=60)
        for r in range(cfg.rounds):
            log(f"watch: {n} subscribers at {per_s:g}/s, round {r + 1} of {cfg.rounds}")
            for side in sides if r % 2 == 0 else tuple(reversed(sides)):
                await rate_round(side, count, per_s)
                await asyncio.sleep(0.2)
    finally:
        dumps = {}
        for side in sides:
            if side.sp is not None:
                dumps[side.kind] = await side.sp.stop()
    playlog, others = sides[0], sides[1:]
    out = []
    pairs = [(o, None) for o in others] + [(playlog, f"{others[0].kind}-rate-{n}" if others else None)]
    for side, baseline in pairs:
        dump = dumps.get(side.kind, {})
        row = rate_result(side, n, per_s, dump.get("recv", {}), baseline)
        problems = []
        if dump.get("resets"):
            problems.append(f"{dump['resets']} reset snapshots")
        if dump.get("out_of_order"):
            problems.append(f"{dump['out_of_order']} out-of-order events")
        row.error = "; ".join(problems)
        out.append(row)
    return out


def rate_failed(kind: str, n: int, per_s: float, error: str, skipped: bool = False) -> Result:
    r = Result(
        f"{kind}-rate-{n}",
        f"{kind}: ack -> receipt at {per_s:g}/s",
        f"{n} subscribers",
        None,
        "",
        None,
        None,
        0,
        None,
        error=error,
        side=kind,
        skipped=skipped,
    )
    return r


async def bench_watch_rates(
    server: PlaylogServer, etcd: EtcdSide, cfg: Config, workdir: Path
) -> list[Result]:
    """The fixed-rate comparisons of the summary: playlog vs etcd Watch with
    rate_etcd's subscribers and rate, playlog vs the bare fan-out with
    rate_bare's. Every side publishes a 48-entry day on its own channel."""
    out: list[Result] = []
    client = Client(server.target, 97)
    n, per_s, count = cfg.rate_etcd
    ec = None
    try:
        if etcd.running and etcd.api is not None and etcd.server is not None and etcd.gen_dir is not None:
            cid = f"rate-{n}"
            ec = etcdlib.EtcdClient(etcd.api, etcd.server.target, 97)
            try:
                await ec.declare(cid)
                await ec.store_days(cid, range(1))
                pub = ec.publisher(cid, 0, 1)
                await pub.check()
                sides = (
                    RateSide("playlog", server.target, server.pid, cid, await playlog_publisher(client, cid)),
                    RateSide(
                        "etcd",
                        etcd.server.target,
                        etcd.server.pid,
                        cid,
                        pub,
                        ["--etcd-gen", str(etcd.gen_dir)],
                    ),
                )
                out += await rate_compare(sides, n, per_s, count, cfg, workdir)
            except (BenchError, etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                log(f"watch: playlog vs etcd at {n} subscribers FAILED: {e}")
                out += [rate_failed(k, n, per_s, str(e)) for k in ("etcd", "playlog")]
        else:
            # No etcd: playlog alone, so that its row is there all the same.
            out.append(rate_failed("etcd", n, per_s, f"skipped: {etcd.skipped}", skipped=True))
            cid = f"rate-{n}"
            try:
                alone = RateSide(
                    "playlog", server.target, server.pid, cid, await playlog_publisher(client, cid)
                )
                out += await rate_compare((alone,), n, per_s, count, cfg, workdir)
            except (BenchError, grpc.aio.AioRpcError) as e:
                log(f"watch: playlog at {n} subscribers FAILED: {e}")
                out.append(rate_failed("playlog", n, per_s, str(e)))
        await asyncio.sleep(0.5)
        n, per_s, count = cfg.rate_bare
        fanout = FanoutServer()
        await fanout.start()
        bare_channel = new_channel(fanout.target, 96)
        try:
            cid = f"rate-{n}"
            payloads = bare_payloads(cid, 2 + cfg.rounds * count)
            bare_rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = bare_channel.unary_unary(
                f"/{FANOUT_SERVICE}/Publish"
            )
            generation = [0]

            async def bare_publish() -> int:
                g = generation[0] = generation[0] + 1
                await bare_rpc(payloads[g - 1])
                return g

            sides = (
                RateSide("playlog", server.target, server.pid, cid, await playlog_publisher(client, cid)),
                RateSide("bare", fanout.target, fanout.proc.pid if fanout.proc else 0, cid, bare_publish),
            )
            out += await rate_compare(sides, n, per_s, count, cfg, workdir)
        except (BenchError, grpc.aio.AioRpcError) as e:
            log(f"watch: playlog vs bare at {n} subscribers FAILED: {e}")
            out += [rate_failed(k, n, per_s, str(e)) for k in ("bare", "playlog")]
        finally:
            await bare_channel.close()
            await fanout.stop()
    finally:
        await client.close()
        if ec is not None:
            await ec.close()
    return out


# -- replicas: one PostgreSQL database, one or two playlog replicas ------------------------

# The machine's PostgreSQL (the tests' server, trust auth on loopback); the
# bench creates a fresh database on it and drops it at the end.
PG_ADMIN_URL = os.environ.get("PLAYLOG_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class PostgresUnavailable(Exception):
    pass


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[tuple[str, str]]:
    """A new, empty database on PG_ADMIN_URL's server, dropped (WITH FORCE)
    afterwards; -> (its URL, the server's version)."""
    try:
        import psycopg
    except ImportError as e:
        raise PostgresUnavailable(f"psycopg is not installed ({e})") from None
    name = f"playlog_bench_{uuid.uuid4().hex[:12]}"

    def admin(sql: str) -> str:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.encode())
            return conn.info.parameter_status("server_version") or "?"

    try:
        version = await asyncio.to_thread(admin, f"CREATE DATABASE {name}")
    except psycopg.Error as e:
        why = " ".join(str(e).split())  # one line: it goes into table cells
        raise PostgresUnavailable(f"cannot create a database on {PG_ADMIN_URL}: {why}") from None
    log(f"replicas: PostgreSQL {version}, fresh database {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", version
    finally:
        with contextlib.suppress(psycopg.Error):
            await asyncio.to_thread(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def backend_pids(database_url: str) -> Callable[[], list[int]]:
    """-> a function listing the PostgreSQL backends connected to the URL's
    database now (from /proc: `postgres: <user> <database> <client> ...`)."""
    marker = f" {database_url.rsplit('/', 1)[1]} ".encode()

    def pids() -> list[int]:
        out = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = (proc / "cmdline").read_bytes()
                    if cmd.startswith(b"postgres: ") and marker in cmd:
                        out.append(int(proc.name))
        return out

    return pids


REPLICA_ROWS = {
    "replicas-1": "one replica (A): 16 clients",
    "replicas-2": "two replicas (A, B): 8 + 8 clients",
    "etcd-replicas": "etcd: 16 clients",
}


async def replica_latency(
    replicas: Sequence[PlaylogServer], on: Sequence[Client], cfg: Config, workdir: Path
) -> list[Result]:
    """WatchWindow subscribers on both replicas (cfg.replica_subscribers each)
    on one channel; cfg.watch_paced publishes, alternately on A and on B, each
    once the previous one reached every subscriber of both (+5 ms). Latency
    = receipt - ack of the publish, per (publish, subscriber): `same` where
    subscriber and publisher are on one replica, `cross` where not."""
    cid = "rep-watch"
    reqs = await publish_channel(on[0], cid)
    publish = [alternating_publish(c, reqs) for c in on]
    n = cfg.replica_subscribers
    subs = [
        SubscriberProc("playlog", r.target, n, cid, workdir / f"recv-replica-{i}.json")
        for i, r in enumerate(replicas)
    ]
    acks: dict[int, tuple[int, int]] = {}  # generation -> (replica published on, ack time)
    try:
        for i, sp in enumerate(subs):
            log(f"replicas: {n} WatchWindow subscribers on replica {'AB'[i]}")
            await sp.start(limit_s=120)
        await asyncio.sleep(0.2)
        for k in range(2 + cfg.watch_paced):  # the first two: warm-up, not counted
            origin = k % len(publish)
            g = await publish[origin]()
            if k >= 2:
                acks[g] = (origin, now_ns())
            for sp in subs:
                await sp.wait_delivered(g, limit_s=60)
            await asyncio.sleep(0.005)
    finally:
        dumps = [await sp.stop() for sp in subs]
    lat: dict[str, list[int]] = {"same": [], "cross": []}
    problems = []
    for i, dump in enumerate(dumps):
        recv = dump.get("recv", {})
        for g, (origin, ack) in acks.items():
            lat["same" if i == origin else "cross"] += [t - ack for t in recv.get(str(g), [])]
        if dump.get("resets"):
            problems.append(f"{dump['resets']} reset snapshots on {'AB'[i]}")
        if dump.get("out_of_order"):
            problems.append(f"{dump['out_of_order']} out-of-order events on {'AB'[i]}")
    out = []
    for kind, how in (
        ("same", "subscriber on the replica published on (A -> A, B -> B)"),
        ("cross", "subscriber on the other replica (A -> B, B -> A)"),
    ):
        s = summarize_ns(lat[kind])
        out.append(
            Result(
                f"replicas-{kind}",
                f"WatchWindow: ack -> receipt, {how}",
                f"2 replicas, {n} subscribers on each, {len(acks)} publishes one at a time, "
                "alternately on A and B",
                None,
                "",
                s["p50_ms"],
                s["p99_ms"],
                int(s["n"]),
                None if kind == "same" else "replicas-same",
                {"max_ms": s["max_ms"], "problems": problems},
                "; ".join(problems),
            )
        )
    return out


async def bench_replicas(
    etcd: EtcdSide, cfg: Config, workdir: Path, server_args: Sequence[str]
) -> tuple[list[Result], dict[str, str]]:
    """Two `playlog serve --database-url` replicas on one fresh PostgreSQL
    database. Publishes/s of cfg.clients clients on as many channels: all on
    replica A (B idle), split half and half over A and B, and the same on
    etcd (the etcd-publish Txn), interleaved; then the watch latency across
    replicas (replica_latency). -> the rows and lines for the environment."""
    n, half = cfg.clients, cfg.clients // 2
    out: list[Result] = []
    env: dict[str, str] = {}
    replicas: list[PlaylogServer] = []
    clients: list[Client] = []
    etcd_clients: list[etcdlib.EtcdClient] = []
    etcd_error = ""
    async with fresh_database() as (url, version):
        env["PostgreSQL (replicas section)"] = (
            f"{version} at {PG_ADMIN_URL.rsplit('@', 1)[-1]}, a fresh database"
        )
        try:
            for name in "ab":
                replica = PlaylogServer(workdir / f"replica-{name}", ["--database-url", url, *server_args])
                replicas.append(replica)
                await replica.start()
                log(f"replicas: replica {name.upper()} serving on {replica.target} (pid {replica.pid})")
            env["replicas"] = " ".join(
                Path(a).name if i == 0 else ("<fresh database>" if a == url else a)
                for i, a in enumerate(replicas[0].cmd)
            )
            a, b = replicas
            on_a = [Client(a.target, i) for i in range(n)]
            on_b = [Client(b.target, i) for i in range(half, n)]  # clients half .. n - 1
            clients += on_a + on_b
            log(f"replicas: declaring {n} channels")
            reqs = [await publish_channel(on_a[i], f"rep-{i}") for i in range(n)]
            pids = [a.pid, b.pid]
            backends = backend_pids(url)
            cases = [
                Case("replicas-1", [alternating_publish(on_a[i], r) for i, r in enumerate(reqs)], pids),
                Case(
                    "replicas-2",
                    [
                        alternating_publish(on_a[i] if i < half else on_b[i - half], r)
                        for i, r in enumerate(reqs)
                    ],
                    pids,
                ),
            ]
            for case in cases:
                case.aux_pids = backends
            if etcd.running:
                assert etcd.server is not None
                try:
                    pubs = await etcd_publishers(etcd, [f"rep-{i}" for i in range(n)], etcd_clients)
                    cases.append(Case("etcd-replicas", list(pubs), etcd.server.pid))
                except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                    etcd_error = f"etcd setup failed: {e}"
                    log(f"replicas: {etcd_error}")
            await interleaved(cases, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "replicas")
            by_key = {c.key: c for c in cases}
            operation = "PublishAtomicReplace, 48-entry day, PostgreSQL store"
            out.append(
                case_result(
                    by_key["replicas-1"],
                    operation,
                    f"{n} clients on {n} channels, own connection each, all on replica A "
                    "(replica B running, idle)",
                    "etcd-replicas" if "etcd-replicas" in by_key else None,
                )
            )
            out.append(
                case_result(
                    by_key["replicas-2"],
                    operation,
                    f"the same {n} channels: {half} clients on replica A, {n - half} on replica B",
                    "replicas-1",
                )
            )
            if "etcd-replicas" in by_key:
                out.append(
                    case_result(
                        by_key["etcd-replicas"],
                        "etcd Txn: replace a 48-entry day",
                        f"{n} clients on {n} channels, own connection each (the Txn of `etcd-publish-{n}`)",
                        None,
                        "etcd",
                    )
                )
            else:
                out += etcd_failed(
                    [("etcd-replicas", "etcd Txn: replace a 48-entry day", f"{n} clients")], etcd, etcd_error
                )
            try:
                out += await replica_latency(replicas, [on_a[0], on_b[0]], cfg, workdir)
            except (BenchError, grpc.aio.AioRpcError) as e:
                # E.g. a replica's subscribers never get the other's publishes.
                log(f"replicas: watch latency FAILED: {e}")
                out += [
                    Result(
                        f"replicas-{k}",
                        "WatchWindow across replicas",
                        "2 replicas",
                        None,
                        "",
                        None,
                        None,
                        0,
                        None,
                        error=str(e),
                    )
                    for k in ("same", "cross")
                ]
        finally:
            for c in clients:
                await c.close()
            for ec in etcd_clients:
                await ec.close()
            for i, replica in enumerate(replicas):
                problems = replica.log_problems()
                await replica.stop()
                if problems:
                    env[f"replica {'AB'[i]} log"] = (
                        f"{len(problems)} error line(s), first: `{problems[0][:300]}`"
                    )
    return out, env


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
        return "— (nothing to compare with)" if row.key.startswith("playlog-") else "baseline"
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


def cpu_cell(r: Result) -> str:
    if r.cpu_us_per_op is None:
        return "—"
    per = "event" if r.key.startswith(("bare-", "playlog-", "etcd-rate-")) else "op"
    return f"{fmt_num(r.cpu_us_per_op)} µs/{per}"


@dataclass
class Goal:
    """One line of the summary: playlog's number against the other side's."""

    measure: str
    playlog: str  # key of playlog's row
    other: str  # key of the other side's row
    metric: str  # "rate", "p50_ms", "p99_ms" or "cpu" (server CPU per op)
    goal: str = ""  # e.g. ">= 2.0x"; "" for a row without a goal
    other_label: str = ""  # how to name the other side's number


def summary_goals(cfg: Config) -> list[Goal]:
    ne, re_, _ = cfg.rate_etcd
    nb, rb, _ = cfg.rate_bare
    c = cfg.clients
    return [
        Goal(
            "publishes/s, 1 client (48-entry day)", "publish-1", "etcd-publish-1", "rate", ">= 2.0x", "etcd"
        ),
        Goal(
            f"publishes/s, {c} clients on {c} channels",
            f"publish-{c}",
            f"etcd-publish-{c}",
            "rate",
            ">= 2.0x",
            "etcd",
        ),
        Goal(
            "server CPU per publish, 1 client, vs a no-op RPC (Health/Check, 1 client)",
            "publish-1",
            "health-1",
            "cpu",
            "<= 2.0x",
            "no-op RPC",
        ),
        Goal(
            f"server CPU per publish, {c} clients, vs a no-op RPC ({c} clients)",
            f"publish-{c}",
            f"health-{c}",
            "cpu",
            "<= 2.0x",
            "no-op RPC",
        ),
        Goal(
            "server CPU per ReadWindowSnapshot of 1 day (10 days stored) vs a no-op RPC",
            "read-1d-10",
            "health-1",
            "cpu",
            "<= 1.5x",
            "no-op RPC",
        ),
        Goal(
            f"server CPU per ReadWindowSnapshot of 1 day ({cfg.big_days} days stored) vs a no-op RPC",
            f"read-1d-{cfg.big_days}",
            "health-1",
            "cpu",
            "<= 1.5x",
            "no-op RPC",
        ),
        Goal(
            f"publish -> subscriber p99, {ne} subscribers, {re_:g} publishes/s",
            f"playlog-rate-{ne}",
            f"etcd-rate-{ne}",
            "p99_ms",
            "<= 1.0x",
            "etcd",
        ),
        Goal(
            f"publish -> subscriber p99, {nb} subscribers, {rb:g} publish/s",
            f"playlog-rate-{nb}",
            f"bare-rate-{nb}",
            "p99_ms",
            "<= 1.5x",
            "bare fan-out",
        ),
        # Context, no goal.
        Goal(
            "reads/s, 1 day (48 entries), 10 days stored", "read-1d-10", "etcd-read-1d-10", "rate", "", "etcd"
        ),
        Goal(
            f"reads/s, 1 day (48 entries), {cfg.big_days} days stored",
            f"read-1d-{cfg.big_days}",
            f"etcd-read-1d-{cfg.big_days}",
            "rate",
            "",
            "etcd",
        ),
        Goal(
            f"publish -> subscriber p50, {ne} subscribers, {re_:g} publishes/s",
            f"playlog-rate-{ne}",
            f"etcd-rate-{ne}",
            "p50_ms",
            "",
            "etcd",
        ),
        Goal(
            f"publish -> subscriber p50, {nb} subscribers, {rb:g} publish/s",
            f"playlog-rate-{nb}",
            f"bare-rate-{nb}",
            "p50_ms",
            "",
            "bare fan-out",
        ),
        Goal(
            f"publishes/s on PostgreSQL, {c} clients: two replicas vs one",
            "replicas-2",
            "replicas-1",
            "rate",
            "",
            "one replica",
        ),
        Goal(
            f"publishes/s, {c} clients: two PostgreSQL replicas vs etcd",
            "replicas-2",
            "etcd-replicas",
            "rate",
            "",
            "etcd",
        ),
        Goal(
            "publish -> subscriber p99 across replicas vs within one replica",
            "replicas-cross",
            "replicas-same",
            "p99_ms",
            "",
            "same replica",
        ),
    ]


def goal_value(r: Result | None, field_name: str) -> float | None:
    if r is None or (r.error and r.p50_ms is None):
        return None
    v = r.cpu_us_per_op if field_name == "cpu" else getattr(r, field_name)
    return None if v is None or math.isnan(v) else float(v)


def value_cell(r: Result | None, field_name: str) -> str:
    if r is None:
        return "not run"
    if r.skipped:
        return "skipped"
    if r.error and r.p50_ms is None:
        return "FAILED"
    v = goal_value(r, field_name)
    unit = {"rate": r.unit, "p50_ms": "ms", "p99_ms": "ms", "cpu": "µs CPU/op"}[field_name]
    return f"{fmt_num(v)} {unit}" if v is not None else "—"


def summary(results: list[Result], cfg: Config) -> list[dict[str, Any]]:
    rows = {r.key: r for r in results}
    out = []
    for g in summary_goals(cfg):
        p, o = rows.get(g.playlog), rows.get(g.other)
        if p is None and o is None:
            continue
        pv, ov = goal_value(p, g.metric), goal_value(o, g.metric)
        ratio = pv / ov if pv is not None and ov is not None and ov > 0 else None
        met: bool | None = None
        if g.goal and ratio is not None:
            bound = float(g.goal.split()[1].rstrip("x"))
            met = ratio >= bound if g.goal.startswith(">=") else ratio <= bound
        out.append(
            {
                "measure": g.measure,
                "playlog_key": g.playlog,
                "other_key": g.other,
                "other": g.other_label,
                "playlog": value_cell(p, g.metric),
                "other_value": value_cell(o, g.metric),
                "ratio": ratio,
                "goal": f"{g.goal} {g.other_label}" if g.goal else "",
                "met": met,
                "playlog_cpu": cpu_cell(p) if p else "—",
                "other_cpu": cpu_cell(o) if o else "—",
                "rounds": max(p.rounds if p else 0, o.rounds if o else 0),
            }
        )
    return out


def render_summary(lines: list[dict[str, Any]]) -> list[str]:
    out = [
        "| measure | playlog | etcd / bare fan-out / no-op | ratio | goal | met | "
        "playlog server CPU | other server CPU |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for s in lines:
        ratio = f"{s['ratio']:.2f}x" if s["ratio"] is not None else "—"
        met = {True: "**yes**", False: "**no**", None: "—" if not s["goal"] else "not measured"}[s["met"]]
        out.append(
            f"| {s['measure']} | {s['playlog']} | {s['other']}: {s['other_value']} | {ratio} "
            f"| {s['goal'] or '—'} | {met} | {s['playlog_cpu']} | {s['other_cpu']} |"
        )
    return out


def render(
    results: list[Result],
    env: dict[str, str],
    cfg: Config,
    notes: list[str],
    summary_lines: list[dict[str, Any]],
) -> str:
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
        "Rows measured in interleaved rounds show the median over the rounds (`rounds`).",
        "",
        "| key | operation | setup | ops/s or events/s | p50 ms | p99 ms | ratio to baseline "
        "| server CPU | rounds | samples |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if r.error and r.p50_ms is None:
            state = "skipped" if r.skipped else "FAILED"
            lines.append(f"| `{r.key}` | {r.operation} | {r.setup} | {state} | | | {r.error} | | | 0 |")
            continue
        rate = fmt_num(r.rate) + (f" {r.unit}" if r.rate is not None else "")
        setup = r.setup + (f" **({r.error})**" if r.error else "")
        lines.append(
            f"| `{r.key}` | {r.operation} | {setup} | {rate} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
            f"| {ratio_cell(r, rows)} | {cpu_cell(r)} | {r.rounds} | {r.samples} |"
        )
    lines += replica_lines(rows)
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
    if summary_lines:
        lines += [
            "",
            "## Summary: playlog against etcd, the bare fan-out and a no-op RPC (issue 9)",
            "",
            "ratio = playlog's number / the other's. Server CPU: all threads of the server "
            "process over the measured window, per operation (watch: per delivered event).",
            "",
            *render_summary(summary_lines),
        ]
    return "\n".join(lines) + "\n"


def replica_lines(rows: dict[str, Result]) -> list[str]:
    """The replicas section's own table: publishes/s against one replica and
    against etcd, and the watch latency across replicas against within one."""
    if not any(k in rows for k in (*REPLICA_ROWS, "replicas-same")):
        return []
    one, etcd = rows.get("replicas-1"), rows.get("etcd-replicas")
    out = [
        "",
        "## Replicas: playlog on one PostgreSQL database, one replica vs two, beside etcd",
        "",
        "Closed loop, each client publishing a 48-entry day on its own channel; medians over the "
        "interleaved rounds. Server CPU: both replicas' processes (+ the PostgreSQL backends "
        "connected to the database), or etcd's, per publish.",
        "",
        "| case | publishes/s | p50 ms | p99 ms | / one replica | / etcd | server CPU per publish |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in REPLICA_ROWS.items():
        r = rows.get(key)
        if r is None:
            continue
        if r.error and r.p50_ms is None:
            out.append(f"| {label} | {r.error if r.skipped else 'FAILED: ' + r.error} | | | | | |")
            continue
        cpu = cpu_cell(r)
        aux = r.extra.get("aux_cpu_us_per_op")
        if aux:
            cpu += f" + PostgreSQL {fmt_num(aux)} µs"
        vs_one = "baseline" if key == "replicas-1" else fmt_ratio(r.rate, one.rate if one else None) or "—"
        vs_etcd = (
            "baseline" if key == "etcd-replicas" else fmt_ratio(r.rate, etcd.rate if etcd else None) or "—"
        )
        out.append(
            f"| {label} | {fmt_num(r.rate)} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
            f"| {vs_one} | {vs_etcd} | {cpu} |"
        )
    same = rows.get("replicas-same")
    if same is not None:
        out += [
            "",
            "The same-replica p50 can be near zero or negative: a replica hands the event to its "
            "subscribers at commit, before the publish's answer reaches the client; so the cross-replica "
            "cost is also given as a difference (ms), and no ratio is given to a same-replica number "
            "under 1 ms.",
            "",
            "| WatchWindow, publish ack -> receipt (paced) | p50 ms | p99 ms | p50 / same | p99 / same "
            "| p50 - same | p99 - same | samples |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("replicas-same", "same replica (published on A, subscriber on A; B on B)"),
            ("replicas-cross", "cross replica (published on A, subscriber on B; B on A)"),
        ):
            r = rows.get(key)
            if r is None:
                continue
            note = f" **({r.error})**" if r.error else ""
            out.append(
                f"| {label}{note} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
                f"| {same_ratio(r.p50_ms, same.p50_ms)} | {same_ratio(r.p99_ms, same.p99_ms)} "
                f"| {fmt_diff(r.p50_ms, same.p50_ms)} | {fmt_diff(r.p99_ms, same.p99_ms)} | {r.samples} |"
            )
    return out


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


def environment(cfg: Config, workdir: Path, server: PlaylogServer, etcd: EtcdSide) -> dict[str, str]:
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
        "etcd": (
            f"{etcd.version}: "
            + " ".join(Path(a).name if i == 0 else a for i, a in enumerate(etcd.server.cmd))
            + "; client: etcd's v3 gRPC API (bench/etcd_proto), grpc.aio"
        )
        if etcd.server is not None and etcd.server.cmd
        else f"not measured ({etcd.skipped})",
        "data dir filesystem": fs_type(workdir) + " (playlog's and etcd's data directories)",
        "clients": "bench/run.py (unary load, publisher), bench/subscribers.py (watch streams), "
        "all on this machine, 127.0.0.1",
    }


# -- main --------------------------------------------------------------------------------


async def start_etcd(args: argparse.Namespace, workdir: Path) -> EtcdSide:
    """etcd beside playlog: found or installed, its protos compiled into the
    work directory, one member started on loopback; or why not."""
    if args.no_etcd:
        return EtcdSide(skipped="--no-etcd")
    try:
        binary = await asyncio.to_thread(etcdlib.ensure_etcd, log)
        gen_dir = workdir / "etcd-gen"
        await asyncio.to_thread(etcdlib.compile_protos, gen_dir)
        api = etcdlib.load(gen_dir)
        side = EtcdSide(api, etcdlib.EtcdServer(binary, workdir), gen_dir, etcdlib.etcd_version(binary))
        assert side.server is not None
        log(f"starting etcd {side.version} ({binary})")
        await side.server.start(api)
        log(f"etcd serving on {side.server.target} (pid {side.server.pid})")
        return side
    except etcdlib.EtcdUnavailable as e:
        log(f"etcd unavailable, the etcd rows are skipped: {e}")
        return EtcdSide(skipped=str(e))


async def run(args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else DEFAULT
    sections = set(filter(None, args.only.split(","))) if args.only else set(SECTIONS)
    if not sections <= set(SECTIONS):
        log(f"--only: unknown section(s) {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
        return 2
    # SIGTERM ends the run like Ctrl-C: cancelled, every server stopped by the
    # finally clauses below (and kill_children() in main() as a last resort).
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="playlog-bench-", dir=args.tmpdir))
    server_args = [
        # Progress events would otherwise cost every stream a store read
        # per second; subscribers also ask for an hour (see README).
        "--progress-interval-ms",
        "3600000",
        *args.server_arg,
    ]
    server = PlaylogServer(workdir, server_args)
    extra_env: dict[str, str] = {}
    etcd = EtcdSide(skipped="not started")
    results: list[Result] = []
    notes: list[str] = []
    load_start = load_average()
    started = time.monotonic()
    exit_code = 0
    try:
        log(f"starting playlog serve in {workdir}")
        await server.start()
        log(f"playlog serving on {server.target} (pid {server.pid})")
        if sections - {"baseline"}:
            etcd = await start_etcd(args, workdir)
        # The health baseline is what the publish, read and watch rows compare
        # with; `--only replicas` (its own baselines) skips it.
        if sections != {"replicas"}:
            results += await bench_baseline(server, cfg)
        if "publish" in sections:
            results += await bench_publish(server, etcd, cfg)
        if "read" in sections:
            results += await bench_read(server, etcd, cfg)
        if "watch" in sections:
            results += await bench_watch(server, cfg, workdir)
            results += await bench_watch_rates(server, etcd, cfg, workdir)
        if "replicas" in sections:
            try:
                rows, replica_env = await bench_replicas(etcd, cfg, workdir, server_args)
                results += rows
                extra_env.update(replica_env)
            except PostgresUnavailable as e:
                log(f"replicas: PostgreSQL unavailable, the section is skipped: {e}")
                results += [
                    skipped_result(key, "replicas (PostgreSQL)", setup, f"skipped: {e}", "playlog")
                    for key, setup in REPLICA_ROWS.items()
                ]
        if sections - {"baseline", "replicas"}:
            notes.append(await drift_check(server.target, cfg, results))
    except (BenchError, grpc.aio.AioRpcError, etcdlib.EtcdUnavailable) as e:
        log(f"FAILED: {e}")
        notes.append(f"run aborted: {e}")
        exit_code = 1
    finally:
        problems = server.log_problems()
        await server.stop()
        if etcd.server is not None:
            await etcd.server.stop()
            log(f"etcd stopped (pid {etcd.server.pid})")
        if server.proc is not None and server.proc.returncode not in (0, -signal.SIGTERM):
            notes.append(f"playlog serve exited with status {server.proc.returncode}")
        if problems:
            notes.append(f"server log has {len(problems)} error line(s), first: `{problems[0][:300]}`")
        if args.keep:
            notes.append(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if etcd.skipped and sections - {"baseline"}:
        notes.append(f"**etcd rows skipped**: {etcd.skipped}")
    failed = [r for r in results if r.error and not r.skipped]
    if failed:
        exit_code = 1
    notes.append(f"wall time of the run: {time.monotonic() - started:.0f} s")
    env = environment(cfg, workdir, server, etcd)
    env.update(extra_env)
    env["load average (1 min) at start / end"] = f"{load_start} / {load_average()}"
    summary_lines = summary(results, cfg)
    report = render(results, env, cfg, notes, summary_lines)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(report)
    (RESULTS_DIR / "latest.json").write_text(
        json.dumps(
            {
                "config": cfg.__dict__,
                "environment": env,
                "summary": summary_lines,
                "results": [r.__dict__ for r in results],
                "notes": notes,
            },
            indent=1,
        )
    )
    log(f"written to {RESULTS_DIR / 'latest.md'}")
    return exit_code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter windows and fewer publishes (under 2 minutes)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: publish,read,watch,replicas (default: all; the baseline "
        "runs with publish, read and watch)",
    )
    parser.add_argument(
        "--no-etcd", action="store_true", help="do not start etcd; its rows are marked skipped"
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
    parser.add_argument("--keep", action="store_true", help="keep the data directories and the servers' logs")
    args = parser.parse_args()
    try:
        code = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted: servers stopped, no report written")
        code = 130
    finally:
        kill_children()
    sys.exit(code)


if __name__ == "__main__":
    main()
