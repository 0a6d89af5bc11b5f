"""Watch fan-out: WatchWindow against a bare grpc.aio fan-out of the same
bytes (bench/fanout_server.py), with 1, 100 and 1,000 subscribers on one
channel (quick: 1 and 100), the subscribers in a separate process
(bench/subscribers.py).

- paced: one publisher sends a publish and sends the next only once every
  subscriber received it (+5 ms); latency = the subscriber's receipt - the
  time taken just *before* the publish call, for every (publish,
  subscriber) pair; the publish call's own latency (its answer) beside it;
- burst: the same publisher sends its publishes back to back; delivered
  events per second = events received by all subscribers / (last receipt -
  first send).

Server CPU of both servers from /proc over each phase, per delivered event
and per publish. The fixed-rate comparisons of the summary are in rates.py.

Run alone: `.venv/bin/python bench/watch.py [--quick]`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from benchlib import (
    BarePublisher,
    Bench,
    BenchError,
    Client,
    FanoutServer,
    Result,
    SubscriberProc,
    Workload,
    cpu_seconds,
    dump_problems,
    failed_result,
    log,
    now_ns,
    playlog_publisher,
    summarize_ns,
    watch_cost_table,
)
from benchlib import main as bench_main

LABEL = {"bare": "bare grpc.aio fan-out", "playlog": "WatchWindow"}


def latencies(sent: dict[int, tuple[int, int]], recv: dict[str, list[int]]) -> list[int]:
    """Receipt - the time before the publish call, per (publish, subscriber)."""
    return [t - before for g, (before, _) in sent.items() for t in recv.get(str(g), [])]


def answers(sent: dict[int, tuple[int, int]]) -> list[int]:
    return [ack - before for before, ack in sent.values()]


async def watch_case(
    bench: Bench,
    kind: str,
    n: int,
    target: str,
    pid: int,
    publish: Callable[[], Awaitable[int]],
    channel_id: str,
) -> tuple[Result, Result]:
    """One subscriber count against one server: a paced phase (each publish
    waits until the previous one reached every stream: latency without
    queueing) and a burst phase (publishes back to back: delivered events/s)."""
    cfg = bench.cfg
    sp = SubscriberProc(kind, target, n, channel_id, bench.workdir / f"recv-{kind}-{n}.json")
    paced: dict[int, tuple[int, int]] = {}  # generation -> (before the call, its answer)
    burst: dict[int, tuple[int, int]] = {}
    cpu: dict[str, float] = {}
    t_first = 0
    try:
        log(f"watch: {kind}, {n} subscriber(s): opening streams")
        await sp.start()
        await asyncio.sleep(0.2)
        c0 = cpu_seconds(pid)
        for _ in range(cfg.watch_paced):
            before = now_ns()
            g = await publish()
            paced[g] = (before, now_ns())
            await sp.wait_delivered(g)
            await asyncio.sleep(0.005)
        c1 = cpu_seconds(pid)
        t_first = now_ns()
        for _ in range(cfg.watch_burst):
            before = now_ns()
            g = await publish()
            burst[g] = (before, now_ns())
        for g in burst:
            await sp.wait_delivered(g, limit_s=120)
        c2 = cpu_seconds(pid)
        cpu = {"paced": c1 - c0, "burst": c2 - c1}
    finally:
        dump = await sp.stop()
    recv: dict[str, list[int]] = dump.get("recv", {})
    problems = dump_problems(dump)
    if sp.resets and not dump.get("resets"):
        problems.append(f"{sp.resets} reset snapshots")
    rows = []
    for phase, sent in (("paced", paced), ("burst", burst)):
        events = sum(len(recv.get(str(g), [])) for g in sent)
        extra: dict[str, Any] = {
            "server_cpu_ms_per_publish": 1000 * cpu.get(phase, 0) / max(1, len(sent)),
            "server_cpu_us_per_event": 1e6 * cpu.get(phase, 0) / max(1, events),
            "answer_p50_ms": summarize_ns(answers(sent))["p50_ms"],
            "answer_p99_ms": summarize_ns(answers(sent))["p99_ms"],
        }
        s = summarize_ns(latencies(sent, recv))
        how = "one at a time" if phase == "paced" else "back to back"
        rate = None
        if phase == "burst":
            last = max((t for g in sent for t in recv.get(str(g), [])), default=t_first)
            rate = events / ((last - t_first) / 1e9) if last > t_first else math.nan
        rows.append(
            Result(
                f"{kind}-{phase}-{n}",
                f"{LABEL[kind]}: publish -> receipt ({phase})"
                if phase == "paced"
                else f"{LABEL[kind]}: delivered events (burst)",
                f"{sp.setup()}, {len(sent)} publishes {how}",
                rate,
                "events/s" if phase == "burst" else "",
                s["p50_ms"],
                s["p99_ms"],
                int(s["n"]),
                None if kind == "bare" else f"bare-{phase}-{n}",
                {**extra, "max_ms": s["max_ms"], "problems": problems},
                "; ".join(problems),
                side=kind,
                cpu_us_per_op=extra["server_cpu_us_per_event"],
            )
        )
    return rows[0], rows[1]


async def run(bench: Bench) -> list[Result]:
    cfg = bench.cfg
    server = await bench.playlog()
    out: list[Result] = []
    fanout = FanoutServer()
    await fanout.start()
    client = Client(server.target, 99)
    try:
        for n in cfg.watch_counts:
            # playlog: one channel per subscriber count, its day re-replaced;
            # bare: the same entries as a serialized replaced event, so the
            # subscribers receive and parse as many bytes as from playlog.
            cid = f"watch-{n}"
            bare = BarePublisher(fanout, cid, cfg.watch_paced + cfg.watch_burst)
            sides: list[tuple[str, str, int, Callable[[], Awaitable[int]]]] = [
                ("bare", fanout.target, fanout.pid, bare),
                ("playlog", server.target, server.pid, await playlog_publisher(client, cid)),
            ]
            try:
                for kind, target, pid, publish in sides:
                    try:
                        out.extend(await watch_case(bench, kind, n, target, pid, publish, cid))
                    except (BenchError, grpc.aio.AioRpcError) as e:
                        log(f"watch: {kind}, {n} subscribers FAILED: {e}")
                        for phase in ("paced", "burst"):
                            base = None if kind == "bare" else f"bare-{phase}-{n}"
                            out.append(
                                failed_result(
                                    f"{kind}-{phase}-{n}",
                                    f"{LABEL[kind]} ({phase})",
                                    f"{n} subscribers",
                                    str(e),
                                    kind,
                                    base,
                                )
                            )
                    # Let the server drop the closed streams before the next case.
                    await asyncio.sleep(0.5)
            finally:
                await bare.close()
    finally:
        await client.close()
        await fanout.stop()
    return out


def report(rows: dict[str, Result]) -> list[str]:
    return watch_cost_table(
        "Fan-out", [r for k, r in rows.items() if ("-paced-" in k or "-burst-" in k) and not r.failed]
    )


WORKLOAD = Workload("watch", run, report=report)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
