"""Baseline: the no-op RPC. `grpc.health.v1.Health/Check` on a fresh playlog
server, 1 client and 16 clients (own connection each), in interleaved rounds:
what a gRPC call costs on this machine through playlog's transport,
interceptor and event loop with no store work. The publish and read
workloads measure the same no-op again inside their own rounds, at their own
concurrency, for their CPU goals; this one is the run's reference, measured
again at the end by `bench/run.py` (the drift check).

Run alone: `.venv/bin/python bench/baseline.py [--quick]`.
"""

from __future__ import annotations

from benchlib import (
    Bench,
    Case,
    Client,
    Result,
    Workload,
    case_result,
    closed_loop,
    fmt_num,
    interleaved,
    log,
    summarize_ns,
)
from benchlib import main as bench_main


async def run(bench: Bench) -> list[Result]:
    cfg = bench.cfg
    server = await bench.playlog()
    log(f"baseline: Health/Check, 1 and {cfg.clients} clients")
    sets = {n: [Client(server.target, i) for i in range(n)] for n in (1, cfg.clients)}
    cases = [Case(f"health-{n}", [c.noop() for c in clients], server.pid) for n, clients in sets.items()]
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


async def drift(bench: Bench) -> list[Result]:
    """`health-1` again at the end of the run, on a fresh server: if it moved,
    the machine's speed changed during the run and the ratios are less
    reliable. Adds a note, no row."""
    server = await bench.playlog()
    c = Client(server.target)
    try:
        w = await closed_loop(
            [c.noop()], bench.cfg.unary_seconds / 2, bench.cfg.warmup_seconds / 2, server.pid
        )
    finally:
        await c.close()
    first = bench.result("health-1")
    then = f" (start of run: {fmt_num(first.rate)} ops/s, p50 {fmt_num(first.p50_ms)} ms)" if first else ""
    bench.notes.append(
        f"drift check, `health-1` again at the end of the run: {fmt_num(w.rate)} ops/s, "
        f"p50 {fmt_num(summarize_ns(w.latencies)['p50_ms'])} ms{then}; a large difference means the "
        "machine's speed changed during the run (other load)"
    )
    return []


WORKLOAD = Workload("baseline", run)
DRIFT = Workload("drift", drift)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
