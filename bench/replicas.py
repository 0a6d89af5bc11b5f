"""Replicas (SPEC section 10): several `playlog serve --database-url
postgresql://...` replicas sharing one PostgreSQL database. On a fresh
database on the machine's PostgreSQL (the tests' server,
postgresql://postgres@127.0.0.1:5432/postgres, trust auth; another admin URL
with PLAYLOG_BENCH_POSTGRES_URL), two replicas A and B:

- `replicas-1`: PublishAtomicReplace of a 48-entry day, closed loop, 16
  clients (own connection each) on 16 channels, all on replica A (B runs,
  idle: it still hears every publish's NOTIFY);
- `replicas-2`: 16 clients on 16 channels, 8 on A and 8 on B;
- `etcd-replicas`: the same load on etcd (the etcd-publish Txn);
  the three in interleaved rounds, each round on fresh channels; server CPU
  = both replicas' processes, plus, apart, the PostgreSQL backends
  connected to the bench's database (found in /proc by their title);
- `replicas-same` / `replicas-cross`: 10 WatchWindow subscribers on A and
  10 on B on one channel, publishes one at a time alternately on A and B;
  latency = receipt - the time before the publish call, `same` where
  subscriber and publisher are on one replica, `cross` where not.

The database is dropped (WITH FORCE) at the end. Without PostgreSQL (or
psycopg) the rows say skipped.

Run alone: `.venv/bin/python bench/replicas.py [--quick] [--no-etcd]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import etcdlib
import grpc
from benchlib import (
    Bench,
    BenchError,
    Call,
    Case,
    Client,
    Config,
    Goal,
    PlaylogServer,
    Result,
    SubscriberProc,
    Workload,
    alternating_publish,
    case_result,
    command_line,
    cpu_cell,
    dump_problems,
    failed_result,
    fmt_diff,
    fmt_num,
    fmt_ratio,
    interleaved,
    latency_result,
    log,
    now_ns,
    publish_channel,
    same_ratio,
    skipped_result,
)
from benchlib import main as bench_main

# The machine's PostgreSQL (the tests' server, trust auth on loopback); the
# bench creates a fresh database on it and drops it at the end.
PG_ADMIN_URL = os.environ.get("PLAYLOG_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

REPLICA_ROWS = {
    "replicas-1": "one replica (A): 16 clients",
    "replicas-2": "two replicas (A, B): 8 + 8 clients",
    "etcd-replicas": "etcd: 16 clients",
}
OPERATION = "PublishAtomicReplace, 48-entry day, PostgreSQL store"


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


async def replica_latency(
    replicas: Sequence[PlaylogServer], on: Sequence[Client], bench: Bench
) -> list[Result]:
    """WatchWindow subscribers on both replicas (cfg.replica_subscribers each)
    on one channel; cfg.watch_paced publishes, alternately on A and on B, each
    once the previous one reached every subscriber of both (+5 ms). Latency
    = receipt - the time before the publish call, per (publish, subscriber):
    `same` where subscriber and publisher are on one replica, `cross` where
    not."""
    cfg = bench.cfg
    cid = "rep-watch"
    reqs = await publish_channel(on[0], cid)
    publish = [alternating_publish(c, reqs) for c in on]
    n = cfg.replica_subscribers
    subs = [
        SubscriberProc("playlog", r.target, n, cid, bench.workdir / f"recv-replica-{i}.json")
        for i, r in enumerate(replicas)
    ]
    sent: dict[int, tuple[int, int]] = {}  # generation -> (replica published on, time before the call)
    try:
        for i, sp in enumerate(subs):
            log(f"replicas: {n} WatchWindow subscribers on replica {'AB'[i]}")
            await sp.start()
        await asyncio.sleep(0.2)
        for k in range(2 + cfg.watch_paced):  # the first two: warm-up, not counted
            origin = k % len(publish)
            before = now_ns()
            g = await publish[origin]()
            if k >= 2:
                sent[g] = (origin, before)
            for sp in subs:
                await sp.wait_delivered(g)
            await asyncio.sleep(0.005)
    finally:
        dumps = [await sp.stop() for sp in subs]
    lat: dict[str, list[int]] = {"same": [], "cross": []}
    problems = []
    for i, dump in enumerate(dumps):
        recv = dump.get("recv", {})
        for g, (origin, before) in sent.items():
            lat["same" if i == origin else "cross"] += [t - before for t in recv.get(str(g), [])]
        problems += dump_problems(dump, f" on {'AB'[i]}")
    setup = (
        f"2 replicas, {n} subscribers on each, {len(sent)} publishes one at a time, alternately on A and B"
    )
    return [
        latency_result(
            f"replicas-{kind}",
            f"WatchWindow: publish -> receipt, {how}",
            setup,
            lat[kind],
            None if kind == "same" else "replicas-same",
            {},
            problems,
        )
        for kind, how in (
            ("same", "subscriber on the replica published on (A -> A, B -> B)"),
            ("cross", "subscriber on the other replica (A -> B, B -> A)"),
        )
    ]


async def measure(bench: Bench, url: str) -> list[Result]:
    cfg = bench.cfg
    n, half = cfg.clients, cfg.clients // 2
    out: list[Result] = []
    a = await bench.playlog("a", ["--database-url", url])
    b = await bench.playlog("b", ["--database-url", url])
    bench.env["replicas"] = command_line(a.cmd, {url: "<fresh database>", str(a.data_dir): "<dir>"})
    etcd = await bench.etcd()
    on_a = [Client(a.target, i) for i in range(n)]
    on_b = [Client(b.target, i) for i in range(half, n)]  # clients half .. n - 1
    etcd_clients: list[etcdlib.EtcdClient] = []
    etcd_error = ""
    try:
        backends = backend_pids(url)

        def replica_case(key: str, split: bool) -> Case:
            async def prepare(r: int) -> list[Call]:
                # Fresh channels each round, declared through replica A.
                calls = []
                for i in range(n):
                    reqs = await publish_channel(on_a[i], f"{key}-r{r}-{i}")
                    calls.append(
                        alternating_publish(on_b[i - half] if split and i >= half else on_a[i], reqs)
                    )
                return calls

            return Case(key, pid=[a.pid, b.pid], prepare=prepare, aux_pids=backends)

        cases = [replica_case("replicas-1", False), replica_case("replicas-2", True)]
        if etcd.running:
            assert etcd.api is not None and etcd.server is not None
            etcd_clients = [etcdlib.EtcdClient(etcd.api, etcd.server.target, i) for i in range(n)]
            try:
                await etcdlib.publishers(etcd_clients[:1], ["rep-check"])

                async def etcd_prepare(r: int) -> list[Call]:
                    return list(await etcdlib.publishers(etcd_clients, [f"rep-r{r}-{i}" for i in range(n)]))

                assert etcd.server is not None
                cases.append(Case("etcd-replicas", pid=etcd.server.pid, prepare=etcd_prepare))
            except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                etcd_error = f"etcd setup failed: {e}"
                log(f"replicas: {etcd_error}")
        await interleaved(cases, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "replicas")
        by_key = {c.key: c for c in cases}
        out.append(
            case_result(
                by_key["replicas-1"],
                OPERATION,
                f"{n} clients on {n} channels, own connection each, all on replica A "
                "(replica B running, idle); fresh channels each round",
                "etcd-replicas" if "etcd-replicas" in by_key else None,
            )
        )
        out.append(
            case_result(
                by_key["replicas-2"],
                OPERATION,
                f"{n} channels: {half} clients on replica A, {n - half} on replica B; "
                "fresh channels each round",
                "replicas-1",
            )
        )
        etcd_setup = f"{n} clients on {n} channels, own connection each (the Txn of `etcd-publish-{n}`)"
        if "etcd-replicas" in by_key:
            out.append(
                case_result(
                    by_key["etcd-replicas"], "etcd Txn: replace a 48-entry day", etcd_setup, None, "etcd"
                )
            )
        elif etcd_error:
            out.append(
                failed_result(
                    "etcd-replicas", "etcd Txn: replace a 48-entry day", etcd_setup, etcd_error, "etcd"
                )
            )
        else:
            out.append(skipped_result("etcd-replicas", "etcd Txn", etcd_setup, f"skipped: {etcd.skipped}"))
        try:
            out += await replica_latency([a, b], [on_a[0], on_b[0]], bench)
        except (BenchError, grpc.aio.AioRpcError) as e:
            # E.g. a replica's subscribers never get the other's publishes.
            log(f"replicas: watch latency FAILED: {e}")
            out += [
                failed_result(f"replicas-{k}", "WatchWindow across replicas", "2 replicas", str(e))
                for k in ("same", "cross")
            ]
    finally:
        for c in on_a + on_b:
            await c.close()
        for ec in etcd_clients:
            await ec.close()
        # Before the database goes: stopped replicas do not log its loss.
        await bench.stop_playlog(a)
        await bench.stop_playlog(b)
    return out


async def run(bench: Bench) -> list[Result]:
    try:
        async with fresh_database() as (url, version):
            bench.env["PostgreSQL (replicas)"] = (
                f"{version} at {PG_ADMIN_URL.rsplit('@', 1)[-1]}, a fresh database"
            )
            return await measure(bench, url)
    except PostgresUnavailable as e:
        log(f"replicas: PostgreSQL unavailable, the workload is skipped: {e}")
        return [
            skipped_result(key, "replicas (PostgreSQL)", setup, f"skipped: {e}", "playlog")
            for key, setup in REPLICA_ROWS.items()
        ]


def goals(cfg: Config) -> list[Goal]:
    c = cfg.clients
    return [
        Goal(
            f"publishes/s on PostgreSQL, {c} clients: two replicas vs one",
            "replicas-2",
            "replicas-1",
            "rate",
            "one replica",
            ">= 1.3",
        ),
        Goal(
            f"CPU (both replicas + PostgreSQL backends) per publish, two replicas, {c} clients",
            "replicas-2",
            None,
            "cpu_total",
            must="<= 2.0",
        ),
        Goal(
            f"publishes/s, {c} clients: two PostgreSQL replicas vs etcd",
            "replicas-2",
            "etcd-replicas",
            "rate",
            "etcd",
            reach=">= 1.0",
        ),
        # Context, no goal.
        Goal(
            "publish -> subscriber p99 across replicas vs within one replica",
            "replicas-cross",
            "replicas-same",
            "p99_ms",
            "same replica",
        ),
    ]


def report(rows: dict[str, Result]) -> list[str]:
    """The replicas' own table: publishes/s against one replica and against
    etcd, and the watch latency across replicas against within one."""
    if not any(k in rows for k in (*REPLICA_ROWS, "replicas-same")):
        return []
    one, etcd = rows.get("replicas-1"), rows.get("etcd-replicas")
    out = [
        "",
        "## Replicas: playlog on one PostgreSQL database, one replica vs two, beside etcd",
        "",
        "Closed loop, each client publishing a 48-entry day on its own channel (fresh channels each "
        "round); medians over the interleaved rounds. Server CPU: both replicas' processes (+ the "
        "PostgreSQL backends connected to the database), or etcd's, per publish.",
        "",
        "| case | publishes/s | p50 ms | p99 ms | / one replica | / etcd | server CPU per publish |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in REPLICA_ROWS.items():
        r = rows.get(key)
        if r is None:
            continue
        if r.failed:
            out.append(f"| {label} | {r.error if r.skipped else 'FAILED: ' + r.error} | | | | | |")
            continue
        vs_one = "baseline" if key == "replicas-1" else fmt_ratio(r.rate, one.rate if one else None) or "—"
        vs_etcd = (
            "baseline" if key == "etcd-replicas" else fmt_ratio(r.rate, etcd.rate if etcd else None) or "—"
        )
        out.append(
            f"| {label} | {fmt_num(r.rate)} | {fmt_num(r.p50_ms)} | {fmt_num(r.p99_ms)} "
            f"| {vs_one} | {vs_etcd} | {cpu_cell(r)} |"
        )
    same = rows.get("replicas-same")
    if same is not None:
        out += [
            "",
            "Latency from before the publish call to the subscriber's receipt; the cross-replica cost is "
            "also given as a difference (ms) to the same-replica one.",
            "",
            "| WatchWindow, publish -> receipt (paced) | p50 ms | p99 ms | p50 / same | p99 / same "
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


WORKLOAD = Workload("replicas", run, goals, report)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
