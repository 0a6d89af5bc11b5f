"""Publish: `PublishAtomicReplace` of a whole 48-entry day, closed loop,
1 client and 16 clients (own connection and own channel each), beside the
same publish on etcd (one Txn: compare the generation and the ScheduleDay,
48 deletes, 48 puts, the publish record, the generation; bench/etcdlib.py)
and beside the no-op RPC (Health/Check) at the same concurrency on the same
playlog server, all in the same interleaved rounds.

Every call replaces the day of its channel with new block ids (two id sets,
alternating), so every call is a real atomic replace. Each round starts on
fresh channels on both sides (declared, ScheduleDay stored, published once,
not timed), so no round inherits the history of the rounds before it.

Run alone: `.venv/bin/python bench/publish.py [--quick] [--no-etcd]`.
"""

from __future__ import annotations

import etcdlib
import grpc
from benchlib import (
    Bench,
    Call,
    Case,
    Client,
    Config,
    Goal,
    Result,
    Workload,
    case_result,
    failed_result,
    interleaved,
    log,
    playlog_publisher,
    skipped_result,
)
from benchlib import main as bench_main

ETCD_TXN = "etcd Txn: replace a 48-entry day"


def clients_setup(n: int) -> str:
    return f"{n} client{'s' if n > 1 else ''}" + (", own connection and channel each" if n > 1 else "")


async def run(bench: Bench) -> list[Result]:
    cfg = bench.cfg
    counts = (1, cfg.clients)
    server = await bench.playlog()
    etcd = await bench.etcd()
    clients = {n: [Client(server.target, i) for i in range(n)] for n in counts}
    etcd_clients: dict[int, list[etcdlib.EtcdClient]] = {}
    etcd_error = ""
    cases: list[Case] = []
    try:
        if etcd.running:
            assert etcd.api is not None and etcd.server is not None
            etcd_clients = {
                n: [etcdlib.EtcdClient(etcd.api, etcd.server.target, i) for i in range(n)] for n in counts
            }
            try:
                await etcdlib.publishers(etcd_clients[1], ["pub-check"])
            except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                etcd_error = f"etcd setup failed: {e}"
                log(f"publish: {etcd_error}")
        for n in counts:

            async def prepare(r: int, n: int = n) -> list[Call]:
                return [await playlog_publisher(c, f"pub{n}-r{r}-{i}") for i, c in enumerate(clients[n])]

            cases.append(Case(f"noop-pub-{n}", [c.noop() for c in clients[n]], server.pid))
            cases.append(Case(f"publish-{n}", pid=server.pid, prepare=prepare))
            if etcd_clients and not etcd_error:
                assert etcd.server is not None

                async def etcd_prepare(r: int, n: int = n) -> list[Call]:
                    return list(
                        await etcdlib.publishers(etcd_clients[n], [f"pub{n}-r{r}-{i}" for i in range(n)])
                    )

                cases.append(Case(f"etcd-publish-{n}", pid=etcd.server.pid, prepare=etcd_prepare))
        log("publish: " + ", ".join(c.key for c in cases))
        await interleaved(cases, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "publish")
    finally:
        for cs in clients.values():
            for c in cs:
                await c.close()
        for ecs in etcd_clients.values():
            for ec in ecs:
                await ec.close()
    by_key = {c.key: c for c in cases}
    out = []
    for n in counts:
        out.append(
            case_result(
                by_key[f"noop-pub-{n}"],
                "no-op RPC (Health/Check), in the publish rounds",
                clients_setup(n).replace(" and channel", ""),
                None,
            )
        )
        out.append(
            case_result(
                by_key[f"publish-{n}"],
                "PublishAtomicReplace, 48-entry day",
                clients_setup(n) + ", re-replacing the day; fresh channels each round",
                f"noop-pub-{n}",
            )
        )
    for n in counts:
        key = f"etcd-publish-{n}"
        setup = clients_setup(n)
        if key in by_key:
            out.append(
                case_result(
                    by_key[key],
                    ETCD_TXN,
                    setup + ": compare gen + ScheduleDay, 48 deletes, 48 puts, publish record, gen; "
                    "fresh keys each round",
                    None,
                    "etcd",
                )
            )
        elif etcd_error:
            out.append(failed_result(key, ETCD_TXN, setup, etcd_error, "etcd"))
        else:
            out.append(skipped_result(key, ETCD_TXN, setup, f"skipped: {etcd.skipped}"))
    return out


def goals(cfg: Config) -> list[Goal]:
    c = cfg.clients
    return [
        Goal(
            "publishes/s, 1 client (48-entry day)",
            "publish-1",
            "etcd-publish-1",
            "rate",
            "etcd",
            ">= 1.0",
            ">= 1.5",
        ),
        Goal(
            f"publishes/s, {c} clients on {c} channels",
            f"publish-{c}",
            f"etcd-publish-{c}",
            "rate",
            "etcd",
            ">= 1.0",
            ">= 1.5",
        ),
        Goal(
            "server CPU per publish, 1 client, vs the no-op RPC at 1 client",
            "publish-1",
            "noop-pub-1",
            "cpu",
            "no-op RPC",
            "<= 3.0",
            "<= 2.0",
        ),
        Goal(
            f"server CPU per publish, {c} clients, vs the no-op RPC at {c} clients",
            f"publish-{c}",
            f"noop-pub-{c}",
            "cpu",
            "no-op RPC",
            "<= 3.0",
            "<= 2.0",
        ),
    ]


WORKLOAD = Workload("publish", run, goals)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
