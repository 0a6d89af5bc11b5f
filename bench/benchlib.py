"""Shared helpers of the playlog benchmark: the synthetic schedule, statistics
and the line protocol between bench/run.py and its helper processes.

Imported by bench/run.py, bench/subscribers.py and bench/fanout_server.py
(each run as a script, so bench/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from playlog.v1 import types_pb2 as pb

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


# -- the helpers' line protocol (one JSON object per stdout line) --------------------


def send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def now_ns() -> int:
    """CLOCK_MONOTONIC: one system-wide clock on Linux, so receive times taken
    in the subscriber process compare with ack times taken in bench/run.py."""
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


# Every child process the benchmark starts (servers, subscriber processes):
# bench/run.py kills those still running, by pid, when it exits in any way.
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
