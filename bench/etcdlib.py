"""The etcd side of the playlog benchmark: what an engineer would build
playlog's publish / read / watch on with etcd v3 (revisions, Txn, Watch),
driven over etcd's own gRPC API (not the JSON gateway).

- `ensure_etcd()` finds the `etcd` binary, installing Debian's `etcd-server`
  (3.4.x) when it is missing and this runs as root;
- `compile_protos()` compiles bench/etcd_proto/ (a subset of etcd's
  rpc.proto and kv.proto, same packages and field numbers) with
  grpc_tools.protoc into a temporary directory; `load()` imports it;
- `EtcdServer` runs one etcd member on 127.0.0.1 (free client and peer
  ports, its own temporary data directory) and stops it by its pid;
- `EtcdClient` is the playlog data model on etcd keys (below).

Keys of one channel, all under `/playlog/<channel>/`:

    channel                         the channel's settings (locked window)
    gen                             the channel's generation, decimal
    days/<YYYY-MM-DD>               a stored ScheduleDay (serialized playlog.v1.ScheduleDay)
    entries/<start_utc_ms:013d>/<block_id>
                                    one execution entry (serialized playlog.v1.ExecutionEntry)
    publishes/<generation:020d>     the publish record (the audit / history row)

A publish is one Txn: compare `gen` == the expected generation and every
named ScheduleDay exists (version > 0); on success delete the replaced
entries' keys, put the new entries, the publish record and `gen`. The
entries are deleted key by key because etcd refuses a Txn that puts a key
inside a range it also deletes ("duplicate key given in txn request"), and
their keys carry the block id, so the new entries are new keys, as the
replaced rows and new rows are in playlog's store.

Imported by the workloads that run etcd beside playlog (publish.py, read.py,
rates.py, replicas.py), by bench/subscribers.py and, lazily, by benchlib.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from benchlib import (
    CHILDREN,
    DAY_MS,
    GRPC_CLIENT_OPTIONS,
    LOCKED_WINDOW_MS,
    LocalServer,
    day_date,
    day_start_ms,
    days_entries,
    free_ports,
)

from playlog.v1 import types_pb2 as pb

BENCH_DIR = Path(__file__).resolve().parent
PROTO_DIR = BENCH_DIR / "etcd_proto"
PROTO_FILES = ("etcdserverpb/rpc.proto", "mvccpb/kv.proto")
INSTALL_HINT = "`sudo apt-get install -y etcd-server` (Debian's etcd-server, 3.4.x)"


class EtcdUnavailable(Exception):
    pass


# -- the binary and the generated code ------------------------------------------------


def find_etcd() -> str | None:
    found = shutil.which("etcd")
    if found:
        return found
    for candidate in ("/usr/bin/etcd", "/usr/local/bin/etcd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def etcd_version(path: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
        for line in out.stdout.splitlines():
            if line.startswith("etcd Version:"):
                return line.split(":", 1)[1].strip()
    return "?"


def ensure_etcd(log: Any) -> str:
    """-> the etcd binary. Installs Debian's etcd-server if it is missing and
    this process is root (apt-get update first only if the install fails);
    raises EtcdUnavailable otherwise."""
    found = find_etcd()
    if found:
        return found
    if os.geteuid() != 0:
        raise EtcdUnavailable(f"`etcd` is not installed and this is not root; install it with {INSTALL_HINT}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "etcd-server"]
    for attempt in ("install", "update"):
        if attempt == "update":
            log("etcd: apt-get install failed; running apt-get update and trying again")
            subprocess.run(
                ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300, check=False
            )
        log("etcd: not installed; apt-get install -y etcd-server")
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600, check=False)
        found = find_etcd()
        if done.returncode == 0 and found:
            return found
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise EtcdUnavailable(f"`{' '.join(install)}` failed: {' / '.join(tail)}")


def compile_protos(out_dir: Path) -> None:
    """bench/etcd_proto/*.proto -> out_dir/{etcdserverpb,mvccpb}/*_pb2*.py."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *PROTO_FILES,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise EtcdUnavailable(f"grpc_tools.protoc failed on bench/etcd_proto: {done.stderr.strip()}")


@dataclass(frozen=True)
class Api:
    rpc: ModuleType  # etcdserverpb.rpc_pb2
    grpc: ModuleType  # etcdserverpb.rpc_pb2_grpc
    kv: ModuleType  # mvccpb.kv_pb2


def load(gen_dir: Path) -> Api:
    if str(gen_dir) not in sys.path:
        sys.path.insert(0, str(gen_dir))
    return Api(
        importlib.import_module("etcdserverpb.rpc_pb2"),
        importlib.import_module("etcdserverpb.rpc_pb2_grpc"),
        importlib.import_module("mvccpb.kv_pb2"),
    )


# -- keys -------------------------------------------------------------------------------


def prefix(channel_id: str) -> bytes:
    return f"/playlog/{channel_id}/".encode()


def prefix_end(key: bytes) -> bytes:
    """The range_end that makes [key, range_end) every key starting with key."""
    b = bytearray(key)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def gen_key(channel_id: str) -> bytes:
    return prefix(channel_id) + b"gen"


def day_key(channel_id: str, date: str) -> bytes:
    return prefix(channel_id) + f"days/{date}".encode()


def entries_prefix(channel_id: str) -> bytes:
    return prefix(channel_id) + b"entries/"


def entry_key(channel_id: str, entry: pb.ExecutionEntry) -> bytes:
    return entries_prefix(channel_id) + f"{entry.start_utc_ms:013d}/{entry.block_id}".encode()


def entries_range(channel_id: str, start_ms: int, end_ms: int) -> tuple[bytes, bytes]:
    """Keys of the entries starting in [start_ms, end_ms) (13-digit ms sort as numbers)."""
    p = entries_prefix(channel_id)
    return p + f"{start_ms:013d}".encode(), p + f"{end_ms:013d}".encode()


def publish_key(channel_id: str, generation: int) -> bytes:
    return prefix(channel_id) + f"publishes/{generation:020d}".encode()


# -- the server -------------------------------------------------------------------------


class EtcdServer(LocalServer):
    """One etcd member on 127.0.0.1 (its client port is `port`), data in
    workdir/etcd-data, log in workdir/etcd.log."""

    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__()
        self.binary = binary
        self.data_dir = workdir / "etcd-data"
        self.log_path = workdir / "etcd.log"
        self.cmd: list[str] = []

    async def start(self, api: Api) -> None:
        last = ""
        for _ in range(3):  # a picked port can be taken by someone else before etcd binds it
            self.port, peer_port = free_ports(2)
            client_url, peer_url = f"http://{self.target}", f"http://127.0.0.1:{peer_port}"
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.cmd = [
                self.binary,
                "--name",
                "bench",
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"bench={peer_url}",
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            with self.log_path.open("ab") as logf:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                )
            CHILDREN.append(self.proc)
            try:
                await self._wait_ready(api, 30.0)
                return
            except EtcdUnavailable as e:
                last = str(e)
                await self.stop()
        raise EtcdUnavailable(last)

    async def _wait_ready(self, api: Api, limit_s: float) -> None:
        """Until a linearizable Range answers (the member is leader and serving)."""
        deadline = time.monotonic() + limit_s
        async with grpc.aio.insecure_channel(self.target) as channel:
            kv = api.grpc.KVStub(channel)
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise EtcdUnavailable(
                        f"etcd exited with status {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    await kv.Range(api.rpc.RangeRequest(key=b"/playlog/"), timeout=2)
                    return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise EtcdUnavailable(f"etcd did not answer within {limit_s:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- the client -------------------------------------------------------------------------


class EtcdClient:
    """playlog's publish / ScheduleDay / read on etcd, on one grpc.aio channel
    (one TCP connection)."""

    def __init__(self, api: Api, target: str, i: int = 0) -> None:
        self.api = api
        self.channel = grpc.aio.insecure_channel(
            target, options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", 1000 + i)]
        )
        self.kv = api.grpc.KVStub(self.channel)
        self.generation: dict[str, int] = {}

    async def close(self) -> None:
        await self.channel.close()

    def _put(self, key: bytes, value: bytes) -> Any:
        return self.api.rpc.RequestOp(request_put=self.api.rpc.PutRequest(key=key, value=value))

    def _absent(self, key: bytes) -> Any:
        rpc = self.api.rpc
        return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=0)

    async def declare(self, channel_id: str) -> None:
        """The channel's settings and generation 0, unless it exists."""
        rpc = self.api.rpc
        settings = json.dumps({"channel_id": channel_id, "locked_window_ms": LOCKED_WINDOW_MS}).encode()
        r = await self.kv.Txn(
            rpc.TxnRequest(
                compare=[self._absent(gen_key(channel_id))],
                success=[
                    self._put(prefix(channel_id) + b"channel", settings),
                    self._put(gen_key(channel_id), b"0"),
                ],
            )
        )
        if not r.succeeded:
            raise EtcdUnavailable(f"etcd: channel {channel_id} already declared")
        self.generation[channel_id] = 0

    async def store_days(self, channel_id: str, days: range, concurrency: int = 8) -> None:
        """One ScheduleDay per date, each stored only if absent (immutable)."""
        rpc = self.api.rpc
        sem = asyncio.Semaphore(concurrency)

        async def one(day: int) -> None:
            date = day_date(day)
            value = pb.ScheduleDay(
                channel_id=channel_id, programming_day_date=date, plan_id="plan-1"
            ).SerializeToString()
            key = day_key(channel_id, date)
            async with sem:
                r = await self.kv.Txn(
                    rpc.TxnRequest(compare=[self._absent(key)], success=[self._put(key, value)])
                )
            if not r.succeeded:
                raise EtcdUnavailable(f"etcd: ScheduleDay {channel_id} {date} already stored")

        await asyncio.gather(*(one(d) for d in days))

    def publisher(
        self, channel_id: str, first_day: int, days: int, tags: tuple[str, ...] = ("a", "b")
    ) -> Publisher:
        return Publisher(self, channel_id, first_day, days, tags)

    async def read(self, channel_id: str, first_day: int, days: int) -> list[pb.ExecutionEntry]:
        """A linearizable Range over the entries of [first_day, first_day + days),
        parsed into ExecutionEntry messages as a playlog client gets them."""
        key, end = entries_range(channel_id, day_start_ms(first_day), day_start_ms(first_day + days))
        r = await self.kv.Range(self.api.rpc.RangeRequest(key=key, range_end=end))
        return [pb.ExecutionEntry.FromString(kv.value) for kv in r.kvs]

    def read_call(self, channel_id: str, first_day: int, days: int) -> Any:
        """-> a zero-argument coroutine function doing read(...) (prebuilt request)."""
        key, end = entries_range(channel_id, day_start_ms(first_day), day_start_ms(first_day + days))
        req = self.api.rpc.RangeRequest(key=key, range_end=end)
        parse = pb.ExecutionEntry.FromString
        rng = self.kv.Range

        async def call() -> int:
            r = await rng(req)
            return len([parse(kv.value) for kv in r.kvs])

        return call


class Publisher:
    """Re-publishes [first_day, first_day + days) of one channel, alternating
    between entry sets (tags) with different block ids, like playlog's
    publish rows: every call deletes the entries of the previous set and puts
    the next set's. The two Txn requests are built once; a call only sets the
    expected and new generation and the publish record."""

    def __init__(
        self, client: EtcdClient, channel_id: str, first_day: int, days: int, tags: tuple[str, ...]
    ) -> None:
        rpc = client.api.rpc
        self.client = client
        self.channel_id = channel_id
        self.range = (day_start_ms(first_day), day_start_ms(first_day + days))
        self.gen_key = gen_key(channel_id)
        sets = [days_entries(channel_id, first_day, days, tag) for tag in tags]
        keys = [[entry_key(channel_id, e) for e in entries] for entries in sets]
        dates = sorted({e.programming_day_date for e in sets[0]})
        self.requests = []
        for i, entries in enumerate(sets):
            replaced = keys[i - 1] if len(sets) > 1 else []  # the set published before this one
            req = rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, key=self.gen_key, value=b""
                    ),
                    *(
                        rpc.Compare(
                            result=rpc.Compare.GREATER,
                            target=rpc.Compare.VERSION,
                            key=day_key(channel_id, d),
                            version=0,
                        )
                        for d in dates
                    ),
                ],
                success=[
                    *(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k)) for k in replaced),
                    *(client._put(k, e.SerializeToString()) for k, e in zip(keys[i], entries, strict=True)),
                    client._put(b"", b""),  # the publish record
                    client._put(self.gen_key, b""),
                ],
            )
            self.requests.append(req)
        self.entries = len(sets[0])
        self.turn = 0

    async def __call__(self) -> int:
        """One publish; -> the new generation. Raises on a failed compare."""
        cid = self.channel_id
        previous = self.client.generation[cid]
        g = previous + 1
        req = self.requests[self.turn]
        self.turn = (self.turn + 1) % len(self.requests)
        req.compare[0].value = str(previous).encode()
        record = req.success[-2].request_put
        record.key = publish_key(cid, g)
        record.value = json.dumps(
            {
                "channel_id": cid,
                "generation_id": g,
                "previous_generation_id": previous,
                "range_start_utc_ms": self.range[0],
                "range_end_utc_ms": self.range[1],
                "entries": self.entries,
                "reason_code": "bench",
                "actor": "bench",
                "committed_utc_ms": int(time.time() * 1000),
            },
            separators=(",", ":"),
        ).encode()
        req.success[-1].request_put.value = str(g).encode()
        r = await self.client.kv.Txn(req)
        if not r.succeeded:
            raise EtcdUnavailable(f"etcd publish on {cid}: compare failed (expected generation {previous})")
        self.client.generation[cid] = g
        return g

    async def check(self) -> None:
        """Two publishes, then exactly one set of entries must be stored."""
        await self()
        await self()
        first = (self.range[0] - day_start_ms(0)) // DAY_MS
        entries = await self.client.read(self.channel_id, first, (self.range[1] - self.range[0]) // DAY_MS)
        if len(entries) != self.entries:
            raise EtcdUnavailable(
                f"etcd publish on {self.channel_id}: {len(entries)} entries stored, want {self.entries}"
            )


async def publishers(clients: list[EtcdClient], channel_ids: list[str]) -> list[Publisher]:
    """One channel per client: each declared with a day-0 ScheduleDay and
    published twice (checked: Publisher.check); -> their publishers of day 0,
    the Txn of the publish rows."""
    pubs = []
    for ec, cid in zip(clients, channel_ids, strict=True):
        await ec.declare(cid)
        await ec.store_days(cid, range(1))
        pub = ec.publisher(cid, 0, 1)
        await pub.check()
        pubs.append(pub)
    return pubs
