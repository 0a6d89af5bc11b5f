"""The example playout-engine clients (clients/cpp, clients/node) against the
real server, run as a subprocess on the manual clock.

Each client follows one channel over WatchWindow and prints one line per event
(see clients/README.md). The tests read those lines as they come (a reader
thread per client) and wait for them with timeouts, never with fixed sleeps:

- against the real server: every generation arrives once, in order, with an
  unbroken previous-generation chain, including an operator override inside
  the locked window; a graceful stop, a restart with publishes made while the
  clients were away, and a SIGKILL make the clients reconnect and resume from
  their last applied generation without missing or repeating one;
- against a scripted fake server: a broken chain makes a client re-subscribe
  from its last generation, a duplicate is ignored, a multi-part snapshot and
  a reset snapshot replace the window, and --max-events stops it.

The clients are built by clients/build.sh (once per session; fast when built).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import grpc
import pytest

from playlog.v1 import (
    channel_service_pb2,
    channel_service_pb2_grpc,
    clock_service_pb2,
    clock_service_pb2_grpc,
    schedule_day_service_pb2,
    schedule_day_service_pb2_grpc,
)
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import types_pb2 as pb
from tests.builders import HOUR, MINUTE, T0, blocks, date_of, entry, schedule_day
from tests.test_auth import Principal as TlsPrincipal
from tests.test_auth import write_auth_file
from tests.test_tls import DESK_SUBJECT, SCHEDULER_SUBJECT, make_certs

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / "clients"
CPP_BIN = CLIENTS / "cpp" / "build" / "playlog_follow"
NODE_SCRIPT = CLIENTS / "node" / "follow.js"
PLAYLOG = REPO / ".venv" / "bin" / "playlog"
if not PLAYLOG.exists():  # an installed package elsewhere
    PLAYLOG = Path(shutil.which("playlog") or "playlog")

CHANNEL = "ch1"
LOCK_MS = HOUR
TIMEOUT = 15.0  # generous per wait; a healthy run takes a fraction of it

T = TypeVar("T")
R = TypeVar("R")


# -- building ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clients_built() -> dict[str, list[str]]:
    """Runs clients/build.sh (installs what is missing, builds the C++ client,
    `npm ci` for the Node one); returns each client's command line prefix."""
    result = subprocess.run(
        ["bash", str(CLIENTS / "build.sh")], capture_output=True, text=True, timeout=1800, check=False
    )
    assert result.returncode == 0, f"clients/build.sh failed:\n{result.stdout}\n{result.stderr}"
    node = shutil.which("node")
    assert node, "clients/build.sh left no node on PATH"
    assert CPP_BIN.exists()
    return {"cpp": [str(CPP_BIN)], "node": [node, str(NODE_SCRIPT)]}


# -- the server as a process ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output(Generic[T]):
    """A child's output (stdout or stderr), read line by line by a thread as it
    comes and copied to a file; waiters wake on each line and at its end."""

    def __init__(self, stream: IO[str], copy_path: Path, parse: Callable[[str], T], name: str) -> None:
        self.copy_path = copy_path
        self._parse = parse
        self._items: list[T] = []
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), name=f"read-{name}", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        try:
            with self.copy_path.open("w") as copy:
                for text in stream:
                    copy.write(text)
                    copy.flush()
                    with self._changed:
                        self._items.append(self._parse(text.rstrip("\n")))
                        self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def snapshot(self) -> list[T]:
        with self._changed:
            return list(self._items)

    def wait_for(self, find: Callable[[list[T]], R | None], timeout: float, what: str) -> R | None:
        """The first answer of find(everything so far) that is not None, or None
        when the output ended (the process exited) without one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = find(self._items)
                if found is not None or self._ended:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(remaining)


class ServerProcess:
    """`playlog serve` on the manual clock; restartable on the same data dir."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.starts = 0
        self.channel: grpc.Channel | None = None
        self.log: Output[str] | None = None

    def start(
        self,
        port: int,
        now_utc_ms: int,
        extra: list[str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """`extra` server flags; `credentials` for the test's own calls (TLS)."""
        assert self.proc is None
        self.starts += 1
        log_path = self.log_dir / f"server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [
                str(PLAYLOG),
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--clock",
                "manual",
                "--start-utc-ms",
                str(now_utc_ms),
                "--shutdown-grace-seconds",
                "2",
                *(extra or []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = port
        assert self.proc.stderr is not None
        log = Output(self.proc.stderr, log_path, str, f"server-{self.starts}")

        def serving(lines: list[str]) -> bool | None:
            for line in lines:
                try:
                    if json.loads(line).get("event") == "serving":
                        return True
                except ValueError:
                    continue
            return None

        if log.wait_for(serving, 30, "the server's 'serving' log line") is None:
            raise AssertionError(f"server exited {self.proc.wait(10)}:\n{log_path.read_text()}")
        self.log = log
        if credentials is not None:
            self.channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials)
        else:
            self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    # -- calls ------------------------------------------------------------------------

    def _ch(self) -> grpc.Channel:
        assert self.channel is not None, "server not running"
        return self.channel

    def now(self) -> int:
        stub = clock_service_pb2_grpc.ClockServiceStub(self._ch())
        return int(stub.GetTime(clock_service_pb2.GetTimeRequest(), timeout=10).now_utc_ms)

    def set_time(self, now_utc_ms: int) -> None:
        stub = clock_service_pb2_grpc.ClockServiceStub(self._ch())
        stub.SetTime(clock_service_pb2.SetTimeRequest(now_utc_ms=now_utc_ms), timeout=10)

    def declare(self, channel_id: str, locked_window_ms: int) -> None:
        stub = channel_service_pb2_grpc.ChannelServiceStub(self._ch())
        stub.DeclareChannel(
            channel_service_pb2.DeclareChannelRequest(
                channel_id=channel_id, locked_window_ms=locked_window_ms
            ),
            timeout=10,
        )

    def store_day(self, channel_id: str, date: str) -> None:
        stub = schedule_day_service_pb2_grpc.ScheduleDayServiceStub(self._ch())
        result = stub.StoreScheduleDay(
            schedule_day_service_pb2.StoreScheduleDayRequest(schedule_day=schedule_day(channel_id, date)),
            timeout=10,
        )
        assert result.ok, result

    def publish(
        self,
        start: int,
        end: int,
        entries: list[pb.ExecutionEntry],
        *,
        override: bool = False,
        reason: str = "",
    ) -> pb.PublishResult:
        stub = ew_grpc.ExecutionWindowServiceStub(self._ch())
        return stub.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id=CHANNEL,
                range_start_utc_ms=start,
                range_end_utc_ms=end,
                entries=entries,
                generation_id=0,
                reason_code=reason,
                operator_override=override,
            ),
            timeout=10,
        )

    def published(self, *args: Any, **kwargs: Any) -> int:
        result = self.publish(*args, **kwargs)
        assert result.ok, result
        return int(result.published_generation_id)

    def window_block_ids(self, start: int, end: int) -> list[str]:
        stub = ew_grpc.ExecutionWindowServiceStub(self._ch())
        snap = stub.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CHANNEL, start_utc_ms=start, end_utc_ms=end), timeout=10
        )
        return [e.block_id for e in snap.entries]


# -- a client as a process ------------------------------------------------------------


@dataclass
class Line:
    kind: str
    fields: dict[str, str]
    text: str


def parse_line(text: str) -> Line:
    kind, _, rest = text.partition(" ")
    fields = dict(part.split("=", 1) for part in rest.split() if "=" in part)
    return Line(kind, fields, text)


@dataclass
class ClientProcess:
    """One follower, its stdout read line by line as it comes (and copied to
    <log_dir>/<name>.out; its stderr goes to <log_dir>/<name>.err)."""

    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    output: Output[Line]

    @classmethod
    def start(cls, name: str, argv: list[str], log_dir: Path) -> ClientProcess:
        stderr_path = log_dir / f"{name}.err"
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
            )
        assert proc.stdout is not None
        return cls(name, proc, stderr_path, Output(proc.stdout, log_dir / f"{name}.out", parse_line, name))

    def snapshot(self) -> list[Line]:
        return self.output.snapshot()

    def wait_for(self, predicate: Callable[[Line], bool], what: str, timeout: float = TIMEOUT) -> Line:
        def find(lines: list[Line]) -> Line | None:
            return next((line for line in lines if predicate(line)), None)

        try:
            found = self.output.wait_for(find, timeout, f"{self.name}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.dump()}") from None
        if found is None:
            code = self.proc.wait(timeout=TIMEOUT)
            raise AssertionError(f"{self.name} exited {code} before {what}\n{self.dump()}")
        return found

    def wait_generation(self, generation: int, timeout: float = TIMEOUT) -> None:
        def has(line: Line) -> bool:
            if line.kind == "REPLACED" or (line.kind == "SNAPSHOT" and line.fields.get("complete") == "1"):
                return int(line.fields["generation"]) >= generation
            return False

        self.wait_for(has, f"generation {generation}", timeout)

    def dump(self) -> str:
        tail = "\n".join(line.text for line in self.snapshot()[-60:])
        err = self.stderr_path.read_text()[-2000:] if self.stderr_path.exists() else ""
        return f"--- {self.name} stdout (last lines) ---\n{tail}\n--- {self.name} stderr ---\n{err}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Everything started here is stopped at the end, whatever happens."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.stop()


def follow_argv(prefix: list[str], port: int | list[str], *extra: str) -> list[str]:
    """A client's command line: the server on `port`, or `port` as the
    address options themselves (e.g. ["--target", "a,b"])."""
    return [
        *prefix,
        *(["--target", f"127.0.0.1:{port}"] if isinstance(port, int) else port),
        "--channel",
        CHANNEL,
        "--progress-interval-ms",
        "200",
        "--max-backoff-ms",
        "800",
        *extra,
    ]


# -- checks on a client's whole output ------------------------------------------------


def check_chain(client: ClientProcess, first_snapshot_generation: int, expected: list[int]) -> list[Line]:
    """One whole snapshot, then each expected generation once, in order, each
    naming the one before it; no break, no duplicate, no second snapshot."""
    lines = client.snapshot()
    out = client.dump()
    assert not [line for line in lines if line.kind in ("CHAIN_BREAK", "STALE", "UNKNOWN_EVENT")], out
    snapshots = [line for line in lines if line.kind == "SNAPSHOT"]
    assert [s.fields for s in snapshots] == [
        {
            "generation": str(first_snapshot_generation),
            "entries": snapshots[0].fields["entries"],
            "reset": "0",
            "complete": "1",
        }
    ], out
    replaced = [line for line in lines if line.kind == "REPLACED"]
    assert [int(r.fields["generation"]) for r in replaced] == expected, out
    previous = first_snapshot_generation
    for r in replaced:
        assert int(r.fields["previous"]) == previous, out
        previous = int(r.fields["generation"])
    return replaced


def reconnects_between(client: ClientProcess, start_text: str, end_kind_gen: int) -> list[Line]:
    """RECONNECT lines after the line `start_text` and before REPLACED `end_kind_gen`."""
    lines = client.snapshot()
    begin = next(i for i, line in enumerate(lines) if line.text == start_text)
    end = next(
        i
        for i, line in enumerate(lines)
        if line.kind == "REPLACED" and int(line.fields["generation"]) == end_kind_gen
    )
    return [line for line in lines[begin:end] if line.kind == "RECONNECT"]


# -- the real server ------------------------------------------------------------------


def test_clients_follow_every_publish_across_restarts(
    clients_built: dict[str, list[str]], tmp_path: Path, processes: list[Any]
) -> None:
    server = ServerProcess(tmp_path / "data", tmp_path)
    processes.append(server)
    port = free_port()
    start_now = T0 - 2 * HOUR  # locked until T0 - 1h: the whole first day is flexible
    server.start(port, start_now)
    server.declare(CHANNEL, LOCK_MS)
    for day in (date_of(T0), date_of(T0 + 24 * HOUR)):
        server.store_day(CHANNEL, day)

    # Generation 1, before any client: six hours of half-hour blocks from T0.
    g1 = server.published(T0, T0 + 6 * HOUR, blocks(T0, 12, 30 * MINUTE, prefix="a"))
    assert g1 == 1

    clients = {
        name: ClientProcess.start(name, follow_argv(prefix, port, "--exit-after-generation", "8"), tmp_path)
        for name, prefix in clients_built.items()
    }
    processes.extend(clients.values())
    for c in clients.values():
        c.wait_for(lambda line: line.kind == "SNAPSHOT" and line.fields["complete"] == "1", "the snapshot")
        c.wait_for(lambda line: line.text == f"ONAIR now=- next=a0 at={start_now}", "ONAIR before T0")

    # Publishes in the flexible future: a re-cut hour, then two more hours at the end.
    g2 = server.published(T0 + 3 * HOUR, T0 + 4 * HOUR, blocks(T0 + 3 * HOUR, 4, 15 * MINUTE, prefix="b"))
    g3 = server.published(T0 + 6 * HOUR, T0 + 8 * HOUR, blocks(T0 + 6 * HOUR, 4, 30 * MINUTE, prefix="c"))
    assert (g2, g3) == (2, 3)
    for c in clients.values():
        c.wait_generation(3)

    # The clock moves: a1 airs, the lock reaches T0 + 90 min, over a2.
    now = T0 + 30 * MINUTE
    server.set_time(now)
    for c in clients.values():
        c.wait_for(
            lambda line: line.text == f"PROGRESS now={now} locked_until={now + LOCK_MS} generation=3",
            "progress at the new time",
        )
        c.wait_for(lambda line: line.text == f"ONAIR now=a1 next=a2 at={now}", "a1 on air")

    # Inside the locked window: refused without override (and no event), then
    # accepted as an operator override.
    ov = [entry("ov0", T0 + HOUR, T0 + 90 * MINUTE)]
    refused = server.publish(T0 + HOUR, T0 + 90 * MINUTE, ov)
    assert not refused.ok
    assert refused.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION, refused
    g4 = server.published(T0 + HOUR, T0 + 90 * MINUTE, ov, override=True, reason="breaking-news")
    assert g4 == 4
    for c in clients.values():
        c.wait_for(lambda line: line.kind == "REPLACED" and line.fields["generation"] == "4", "the override")
        c.wait_for(lambda line: line.text == f"ONAIR now=a1 next=ov0 at={now}", "ov0 next")

    # Graceful stop: the streams end with UNAVAILABLE.
    server.stop(signal.SIGTERM)
    for c in clients.values():
        c.wait_for(lambda line: line.text == "DISCONNECT code=UNAVAILABLE", "UNAVAILABLE")

    # While the clients are away, two publishes on the same store behind
    # another port: the clients must get them replayed after generation 4.
    side_port = free_port()
    while side_port == port:  # free now, since the server is down: pick another
        side_port = free_port()
    server.start(side_port, now)
    g5 = server.published(T0 + 8 * HOUR, T0 + 9 * HOUR, blocks(T0 + 8 * HOUR, 2, 30 * MINUTE, prefix="d"))
    g6 = server.published(T0 + 4 * HOUR, T0 + 5 * HOUR, [entry("e0", T0 + 4 * HOUR, T0 + 5 * HOUR)])
    assert (g5, g6) == (5, 6)
    server.stop(signal.SIGTERM)
    server.start(port, now)
    for c in clients.values():
        c.wait_generation(6)
        resumed = reconnects_between(c, "DISCONNECT code=UNAVAILABLE", 5)
        assert resumed, c.dump()
        assert {r.fields["after_generation"] for r in resumed} == {"4"}, c.dump()

    # Abrupt loss: SIGKILL mid-stream, restart on the same port, publish live.
    now = server.now()
    server.stop(signal.SIGKILL)
    server.start(port, now)
    # The clock moves on: ov0 airs (a2 was replaced), a3 is next.
    now = T0 + 70 * MINUTE
    server.set_time(now)
    for c in clients.values():
        c.wait_for(lambda line: line.text == f"ONAIR now=ov0 next=a3 at={now}", "ov0 on air after the kill")
    # A cut of the entry on air (SPEC section 2): ov0 keeps its aired part and
    # ends at T0 + 80 min, where cut0 takes over; the engines apply it as a
    # replace of [T0 + 80 min, T0 + 90 min) whose entries begin with ov0's part.
    cut0 = [entry("cut0", T0 + 80 * MINUTE, T0 + 90 * MINUTE)]
    g7 = server.published(T0 + 80 * MINUTE, T0 + 90 * MINUTE, cut0, override=True, reason="cut")
    for c in clients.values():
        c.wait_for(lambda line: line.text == f"ONAIR now=ov0 next=cut0 at={now}", "the cut applied")
    g8 = server.published(T0 + 9 * HOUR, T0 + 10 * HOUR, [entry("f0", T0 + 9 * HOUR, T0 + 10 * HOUR)])
    assert (g7, g8) == (7, 8)

    expected_window = server.window_block_ids(now, T0 + 48 * HOUR)
    assert expected_window == "ov0 cut0 a3 a4 a5 b0 b1 b2 b3 e0 a10 a11 c0 c1 c2 c3 d0 d1 f0".split()
    for name, c in clients.items():
        # --exit-after-generation 8: the client prints its window and exits 0.
        c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
        assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
        replaced = check_chain(c, 1, [2, 3, 4, 5, 6, 7, 8])
        assert [r.fields["override"] for r in replaced] == ["0", "0", "1", "0", "0", "1", "0"], name
        assert replaced[2].fields["range"] == f"[{T0 + HOUR},{T0 + 90 * MINUTE})", c.dump()
        assert replaced[5].fields["range"] == f"[{T0 + 80 * MINUTE},{T0 + 90 * MINUTE})", c.dump()
        assert replaced[5].fields["entries"] == "2", c.dump()  # ov0's kept part, then cut0
        window = c.wait_for(lambda line: line.kind == "WINDOW", "the window")
        assert window.fields == {
            "generation": "8",
            "entries": str(len(expected_window)),
            "blocks": ",".join(expected_window),
        }, c.dump()
        # The SIGKILL was seen; every re-subscription after it resumed after 6.
        lines = c.snapshot()
        six = next(i for i, line in enumerate(lines) if line.text.startswith("REPLACED generation=6 "))
        seven = next(i for i, line in enumerate(lines) if line.text.startswith("REPLACED generation=7 "))
        assert [line for line in lines[six:seven] if line.kind == "DISCONNECT"], c.dump()
        after_kill = [line for line in lines[six:seven] if line.kind == "RECONNECT"]
        assert after_kill, c.dump()
        assert {r.fields["after_generation"] for r in after_kill} == {"6"}, c.dump()
        # ONAIR only when what airs or comes next changes (publishes 2, 3, 5, 6
        # and 8 and the heartbeats change neither).
        on_air = [(line.fields["now"], line.fields["next"]) for line in lines if line.kind == "ONAIR"]
        assert all(a != b for a, b in itertools.pairwise(on_air)), c.dump()


# -- a scripted fake server: chain breaks, duplicates, snapshots in parts, resets ------


def _entry(block_id: str, start: int, end: int) -> pb.ExecutionEntry:
    return entry(block_id, start, end, segments=1)


class ScriptedWatch:
    """WatchWindow (the only method served) as a script keyed by after_generation_id."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def WatchWindow(
        self, request: ew.WatchWindowRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WindowEvent]:
        with self.lock:
            self.requests.append((request.channel_id, request.after_generation_id))
        ended = threading.Event()  # set when the client ends the call
        if not context.add_callback(ended.set):
            return
        now = T0 + 10 * MINUTE
        if request.channel_id == "max":
            yield pb.WindowEvent(
                snapshot=pb.SnapshotEvent(channel_generation_id=1, complete=True, now_utc_ms=now)
            )
            # A progress heartbeat every 20 ms until the client leaves.
            for _ in range(200):
                yield pb.WindowEvent(progress=pb.ProgressEvent(now_utc_ms=now, channel_generation_id=1))
                if ended.wait(0.02):
                    return
            return
        if request.channel_id == "steady":
            # A snapshot of two entries, then a heartbeat every 20 ms until the client leaves.
            yield pb.WindowEvent(
                snapshot=pb.SnapshotEvent(
                    channel_generation_id=3,
                    entries=[_entry("x0", T0, T0 + HOUR), _entry("x1", T0 + HOUR, T0 + 2 * HOUR)],
                    now_utc_ms=now,
                    complete=True,
                )
            )
            for _ in range(500):
                yield pb.WindowEvent(progress=pb.ProgressEvent(now_utc_ms=now, channel_generation_id=3))
                if ended.wait(0.02):
                    return
            return
        after = request.after_generation_id
        if request.channel_id == "silent":
            # A snapshot, then silence (no progress either): a frozen server.
            # The re-subscription after 1 gets generation 2.
            if after == 0:
                yield pb.WindowEvent(
                    snapshot=pb.SnapshotEvent(channel_generation_id=1, complete=True, now_utc_ms=now)
                )
            else:
                yield pb.WindowEvent(
                    replaced=pb.ReplacedEvent(
                        generation_id=2,
                        previous_generation_id=1,
                        range_start_utc_ms=T0,
                        range_end_utc_ms=T0 + HOUR,
                        entries=[_entry("s0", T0, T0 + HOUR)],
                    )
                )
        elif after == 0:
            # A snapshot in two parts, then 6 (good), 6 again (a duplicate),
            # then 8 claiming 7 as previous: a hole.
            yield pb.WindowEvent(
                snapshot=pb.SnapshotEvent(
                    channel_generation_id=5, entries=[_entry("x0", T0, T0 + HOUR)], now_utc_ms=now
                )
            )
            yield pb.WindowEvent(
                snapshot=pb.SnapshotEvent(
                    channel_generation_id=5,
                    entries=[_entry("x1", T0 + HOUR, T0 + 2 * HOUR)],
                    now_utc_ms=now,
                    complete=True,
                )
            )
            yield pb.WindowEvent(progress=pb.ProgressEvent(now_utc_ms=now, channel_generation_id=5))
            six = pb.ReplacedEvent(
                generation_id=6,
                previous_generation_id=5,
                range_start_utc_ms=T0 + HOUR,
                range_end_utc_ms=T0 + 2 * HOUR,
                entries=[_entry("y1", T0 + HOUR, T0 + 2 * HOUR)],
            )
            yield pb.WindowEvent(replaced=six)
            yield pb.WindowEvent(replaced=six)
            yield pb.WindowEvent(
                replaced=pb.ReplacedEvent(
                    generation_id=8,
                    previous_generation_id=7,
                    range_start_utc_ms=T0 + 2 * HOUR,
                    range_end_utc_ms=T0 + 3 * HOUR,
                    entries=[_entry("z2", T0 + 2 * HOUR, T0 + 3 * HOUR)],
                )
            )
        elif after == 6:
            # The re-subscription after the hole: 7 and 8, then the stream drops.
            yield pb.WindowEvent(
                replaced=pb.ReplacedEvent(
                    generation_id=7,
                    previous_generation_id=6,
                    range_start_utc_ms=T0 + 2 * HOUR,
                    range_end_utc_ms=T0 + 3 * HOUR,
                    entries=[_entry("w2", T0 + 2 * HOUR, T0 + 3 * HOUR)],
                    operator_override=True,
                )
            )
            yield pb.WindowEvent(
                replaced=pb.ReplacedEvent(
                    generation_id=8,
                    previous_generation_id=7,
                    range_start_utc_ms=T0 + 3 * HOUR,
                    range_end_utc_ms=T0 + 4 * HOUR,
                    entries=[_entry("w3", T0 + 3 * HOUR, T0 + 4 * HOUR)],
                )
            )
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        else:
            # History gone: a reset snapshot replaces everything held.
            yield pb.WindowEvent(
                snapshot=pb.SnapshotEvent(
                    channel_generation_id=9,
                    entries=[_entry("r0", T0, T0 + HOUR), _entry("r1", T0 + HOUR, T0 + 2 * HOUR)],
                    now_utc_ms=now,
                    reset=True,
                    complete=True,
                )
            )
        # Hold the stream open until the client ends it.
        ended.wait(10)


@pytest.fixture
def fake_server() -> Iterator[tuple[ScriptedWatch, int]]:
    servicer = ScriptedWatch()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        "playlog.v1.ExecutionWindowService",
        {
            "WatchWindow": grpc.unary_stream_rpc_method_handler(
                servicer.WatchWindow,
                request_deserializer=ew.WatchWindowRequest.FromString,
                response_serializer=pb.WindowEvent.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_client_repairs_a_broken_chain_and_obeys_resets(
    client: str,
    clients_built: dict[str, list[str]],
    fake_server: tuple[ScriptedWatch, int],
    tmp_path: Path,
    processes: list[Any],
) -> None:
    servicer, port = fake_server
    c = ClientProcess.start(
        client,
        follow_argv(clients_built[client], port, "--no-report", "--exit-after-generation", "9"),
        tmp_path,
    )
    processes.append(c)
    c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    texts = [line.text for line in c.snapshot()]
    now = T0 + 10 * MINUTE
    # Progress, status and backoff fields vary; the rest is exact.
    significant = [
        re.sub(r" (attempt|delay_ms)=\d+| target=\S+$", "", t)
        for t in texts
        if not t.startswith(("PROGRESS", "DISCONNECT"))
    ]
    assert significant == [
        f"SUBSCRIBE target=127.0.0.1:{port} channel={CHANNEL} after_generation=0",
        "SNAPSHOT generation=5 entries=1 reset=0 complete=0",
        "SNAPSHOT generation=5 entries=1 reset=0 complete=1",
        f"ONAIR now=x0 next=x1 at={now}",
        # (the progress after it changes nothing on air or next: no ONAIR)
        f"REPLACED generation=6 previous=5 range=[{T0 + HOUR},{T0 + 2 * HOUR}) entries=1 override=0",
        f"ONAIR now=x0 next=y1 at={now}",
        "STALE generation=6 last=6",
        "CHAIN_BREAK generation=8 previous=7 expected=6",
        "RECONNECT after_generation=6",
        # 7 and 8 change what comes after y1, not x0 or y1 themselves: no ONAIR.
        f"REPLACED generation=7 previous=6 range=[{T0 + 2 * HOUR},{T0 + 3 * HOUR}) entries=1 override=1",
        f"REPLACED generation=8 previous=7 range=[{T0 + 3 * HOUR},{T0 + 4 * HOUR}) entries=1 override=0",
        "RECONNECT after_generation=8",
        "SNAPSHOT generation=9 entries=2 reset=1 complete=1",
        f"ONAIR now=r0 next=r1 at={now}",
        "WINDOW generation=9 entries=2 blocks=r0,r1",
        "EXIT reason=generation",
    ], c.dump()
    assert "DISCONNECT code=UNAVAILABLE" in texts, c.dump()
    assert servicer.requests == [(CHANNEL, 0), (CHANNEL, 6), (CHANNEL, 8)]


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_reports_turn_off_on_a_server_without_engine_service_and_following_goes_on(
    client: str,
    clients_built: dict[str, list[str]],
    fake_server: tuple[ScriptedWatch, int],
    tmp_path: Path,
    processes: list[Any],
) -> None:
    """The fake serves WatchWindow only: the first acknowledgement gets
    UNIMPLEMENTED, said once, and the client follows on to the same end."""
    _, port = fake_server
    c = ClientProcess.start(
        client, follow_argv(clients_built[client], port, "--exit-after-generation", "9"), tmp_path
    )
    processes.append(c)
    c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    texts = [line.text for line in c.snapshot()]
    assert [t for t in texts if t.startswith(("REPORTS_OFF", "ACKED", "REPORT_"))] == [
        "REPORTS_OFF code=UNIMPLEMENTED"
    ], c.dump()
    assert texts[-3:] == [
        "PENDING acks=0 as_run=0",
        "WINDOW generation=9 entries=2 blocks=r0,r1",
        "EXIT reason=generation",
    ], c.dump()
    off = [t for t in c.stderr_path.read_text().splitlines() if "engine reports off" in t]
    assert len(off) == 1 and f"127.0.0.1:{port} answered UNIMPLEMENTED" in off[0], c.dump()


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_client_stops_after_max_events(
    client: str,
    clients_built: dict[str, list[str]],
    fake_server: tuple[ScriptedWatch, int],
    tmp_path: Path,
    processes: list[Any],
) -> None:
    _, port = fake_server
    argv = follow_argv(clients_built[client], port, "--no-report", "--max-events", "3")
    argv[argv.index(CHANNEL)] = "max"
    c = ClientProcess.start(client, argv, tmp_path)
    processes.append(c)
    c.wait_for(lambda line: line.text == "EXIT reason=max-events", "the exit")
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    kinds = [line.kind for line in c.snapshot()]
    # One ONAIR, after the snapshot: the heartbeats change nothing on air.
    assert kinds == ["SUBSCRIBE", "SNAPSHOT", "ONAIR", "PROGRESS", "PROGRESS", "WINDOW", "EXIT"], c.dump()


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_client_abandons_a_silent_stream(
    client: str,
    clients_built: dict[str, list[str]],
    fake_server: tuple[ScriptedWatch, int],
    tmp_path: Path,
    processes: list[Any],
) -> None:
    servicer, port = fake_server
    argv = follow_argv(
        clients_built[client], port, "--no-report", "--idle-timeout-ms", "600", "--exit-after-generation", "2"
    )
    argv[argv.index(CHANNEL)] = "silent"
    c = ClientProcess.start(client, argv, tmp_path)
    processes.append(c)
    c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    texts = [re.sub(r" (attempt|delay_ms)=\d+| target=\S+$", "", line.text) for line in c.snapshot()]
    now = T0 + 10 * MINUTE
    assert texts == [
        f"SUBSCRIBE target=127.0.0.1:{port} channel=silent after_generation=0",
        "SNAPSHOT generation=1 entries=0 reset=0 complete=1",
        f"ONAIR now=- next=- at={now}",
        "STALL idle_ms=600",
        "RECONNECT after_generation=1",
        f"REPLACED generation=2 previous=1 range=[{T0},{T0 + HOUR}) entries=1 override=0",
        f"ONAIR now=s0 next=- at={now}",
        "WINDOW generation=2 entries=1 blocks=s0",
        "EXIT reason=generation",
    ], c.dump()
    assert servicer.requests == [("silent", 0), ("silent", 1)]


# -- signals: the window held, then EXIT reason=signal ---------------------------------


def _progress_lines(n: int) -> Callable[[list[Line]], bool | None]:
    def find(lines: list[Line]) -> bool | None:
        return True if len([line for line in lines if line.kind == "PROGRESS"]) >= n else None

    return find


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("client", ["cpp", "node"])
def test_a_signal_prints_the_window_and_exits_0(
    client: str,
    sig: int,
    clients_built: dict[str, list[str]],
    fake_server: tuple[ScriptedWatch, int],
    tmp_path: Path,
    processes: list[Any],
) -> None:
    _, port = fake_server
    argv = follow_argv(clients_built[client], port, "--no-report")
    argv[argv.index(CHANNEL)] = "steady"
    c = ClientProcess.start(client, argv, tmp_path)
    processes.append(c)
    # Mid-stream: the snapshot applied and heartbeats arriving.
    c.output.wait_for(_progress_lines(3), TIMEOUT, f"{client}: three heartbeats")
    c.proc.send_signal(sig)
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    texts = [line.text for line in c.snapshot()]
    assert texts[-2:] == ["WINDOW generation=3 entries=2 blocks=x0,x1", "EXIT reason=signal"], c.dump()
    assert [t for t in texts if t.startswith("ONAIR")] == [f"ONAIR now=x0 next=x1 at={T0 + 10 * MINUTE}"]


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_a_signal_during_the_reconnect_backoff_prints_the_window(
    client: str, clients_built: dict[str, list[str]], tmp_path: Path, processes: list[Any]
) -> None:
    """No server at all: the client is between attempts when SIGTERM comes."""
    c = ClientProcess.start(client, follow_argv(clients_built[client], free_port(), "--no-report"), tmp_path)
    processes.append(c)
    c.wait_for(lambda line: line.kind == "RECONNECT", "a reconnect")
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
    texts = [line.text for line in c.snapshot()]
    assert texts[-2:] == ["WINDOW generation=0 entries=0 blocks=-", "EXIT reason=signal"], c.dump()


# -- mutual TLS: a client certificate, and a refused handshake explained --------------


def test_clients_follow_over_mutual_tls_and_explain_a_refused_handshake(
    clients_built: dict[str, list[str]], tmp_path: Path, processes: list[Any]
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    auth_file = write_auth_file(
        tmp_path / "auth.toml",
        [
            TlsPrincipal("scheduler-1", ["scheduler"], cert_subject=SCHEDULER_SUBJECT),
            TlsPrincipal("mcr-desk", ["operator"], cert_subject=DESK_SUBJECT),
        ],
    )
    desk_cert, desk_key = certs.client("desk")
    server = ServerProcess(tmp_path / "data", tmp_path)
    processes.append(server)
    port = free_port()
    server.start(
        port,
        T0 - 2 * HOUR,
        extra=[
            "--auth-file",
            str(auth_file),
            "--tls-cert",
            str(certs.server_cert),
            "--tls-key",
            str(certs.server_key),
            "--tls-client-ca",
            str(certs.ca),
        ],
        credentials=grpc.ssl_channel_credentials(certs.ca.read_bytes(), desk_key, desk_cert),
    )
    assert server.log is not None
    serving = next(json.loads(t) for t in server.log.snapshot() if '"serving"' in t)
    assert serving["client_certificates"] == "required", serving
    server.declare(CHANNEL, LOCK_MS)
    server.store_day(CHANNEL, date_of(T0))
    assert server.published(T0, T0 + HOUR, blocks(T0, 2, 30 * MINUTE, prefix="a")) == 1

    cert, key = certs.clients["scheduler"]
    tls = ["--ca-cert", str(certs.ca)]
    good = {
        name: ClientProcess.start(
            f"{name}-cert",
            follow_argv(
                prefix,
                port,
                *tls,
                "--client-cert",
                str(cert),
                "--client-key",
                str(key),
                "--exit-after-generation",
                "2",
            ),
            tmp_path,
        )
        for name, prefix in clients_built.items()
    }
    # Without a client certificate the server refuses the handshake.
    refused = {
        name: ClientProcess.start(f"{name}-nocert", follow_argv(prefix, port, *tls), tmp_path)
        for name, prefix in clients_built.items()
    }
    processes.extend([*good.values(), *refused.values()])
    for c in good.values():
        c.wait_for(
            lambda line: line.text == "SNAPSHOT generation=1 entries=2 reset=0 complete=1", "the snapshot"
        )
    assert server.published(T0 + HOUR, T0 + 2 * HOUR, blocks(T0 + HOUR, 2, 30 * MINUTE, prefix="b")) == 2
    for c in good.values():
        c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
        assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
        assert "REPLACED generation=2 previous=1" in "\n".join(line.text for line in c.snapshot()), c.dump()
    for c in refused.values():
        # Two failed attempts, each explained on stderr (written before the next RECONNECT).
        c.wait_for(
            lambda line: line.text.startswith("RECONNECT after_generation=0 attempt=2 "), "a 2nd retry"
        )
        explained = [t for t in c.stderr_path.read_text().splitlines() if "TLS handshake failed" in t]
        assert len(explained) >= 2, c.dump()
        assert "--client-cert" in explained[0], c.dump()
        assert not [line for line in c.snapshot() if line.kind == "SNAPSHOT"], c.dump()
        c.proc.send_signal(signal.SIGTERM)
        assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()
        assert [line.text for line in c.snapshot()][-1] == "EXIT reason=signal", c.dump()
