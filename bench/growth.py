"""Cost that does not grow with the work already done (issue 18, item 5): a
publish and a one-day read on a *grown* store against the same on a fresh
one.

The grown store is one `playlog serve` whose store holds, built through the
API before anything is timed: the measured channel `hist` with 10,000
publishes of its day 0 (48 entries each, block ids alternating, so each
publish superseded the 48 entries before it: 480,000 entry versions), and
1,000 other channels with 7 days each (a ScheduleDay per day, one 7-day
publish of 336 entries: 336,000 entries). 16 clients build it at once: 4 of
them publish on `hist` (its writes are serialized per channel by the store;
generation 0 means "next"), 12 declare and fill the other channels.

Measured, 1 client each, closed loop, in interleaved rounds:
- `read-fresh` / `read-grown`: ReadWindowSnapshot of day 0 of `hist` (48
  entries) on a fresh store (day 0 published once) and on the grown store;
- `publish-fresh` / `publish-grown`: PublishAtomicReplace of day 0 of
  `hist` (the publish rows' request), on a **fresh server per round** (so
  the fresh side never holds more than one round of its own publishes) and
  on the grown store (10,000 publishes and more: every round adds its own).
The reads run first, so they see the grown store as it was built.

Run alone: `.venv/bin/python bench/growth.py [--quick]` (quick: 2,000
publishes and 200 channels).
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

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
    Workload,
    alternating_publish,
    case_result,
    interleaved,
    log,
    publish_channel,
    publish_request,
)
from benchlib import main as bench_main

from playlog.v1 import channel_service_pb2 as ch_pb

CHANNEL = "hist"
BUILD_CLIENTS = 16
HIST_CLIENTS = 4


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def build_grown(server: PlaylogServer, cfg: Config) -> dict[str, float]:
    """Fills the grown store through the API; -> how long it took and what it holds."""
    clients = [Client(server.target, i) for i in range(BUILD_CLIENTS)]
    t0 = time.monotonic()
    try:
        await clients[0].declare(CHANNEL)
        await clients[0].store_days(CHANNEL, range(1))
        reqs = [publish_request(CHANNEL, 0, 1, tag) for tag in ("a", "b")]
        published = 0

        async def hist(c: Client) -> None:
            nonlocal published
            while published < cfg.grown_publishes:
                published += 1
                await c.publish(reqs[published % 2])

        others = iter(range(cfg.grown_channels))

        async def other(c: Client) -> None:
            for i in others:
                cid = f"grown-{i}"
                await c.declare(cid)
                await c.store_days(cid, range(cfg.grown_days), concurrency=1)
                await c.publish(publish_request(cid, 0, cfg.grown_days))

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                log(f"growth: building: {published:,} publishes on {CHANNEL} ({time.monotonic() - t0:.0f} s)")

        ticker = asyncio.ensure_future(progress())
        try:
            await asyncio.gather(
                *(hist(c) for c in clients[:HIST_CLIENTS]), *(other(c) for c in clients[HIST_CLIENTS:])
            )
        finally:
            ticker.cancel()
        snap = await clients[0].window.ReadWindowSnapshot(await clients[0].read_day(CHANNEL, 0))
        if snap.channel_generation_id < cfg.grown_publishes:
            raise BenchError(
                f"grown store: {CHANNEL} is at generation {snap.channel_generation_id}, "
                f"want {cfg.grown_publishes}"
            )
        channels = len((await clients[0].channels.ListChannels(ch_pb.ListChannelsRequest())).channels)
    finally:
        for c in clients:
            await c.close()
    return {
        "build_seconds": round(time.monotonic() - t0, 1),
        "publishes_on_channel": cfg.grown_publishes,
        "channels": channels,
        "store_bytes": dir_bytes(server.data_dir),
    }


async def run(bench: Bench) -> list[Result]:
    cfg = bench.cfg
    grown = await bench.playlog("grown")
    log(
        f"growth: building the grown store: {cfg.grown_publishes:,} publishes on {CHANNEL}, "
        f"{cfg.grown_channels:,} channels of {cfg.grown_days} days"
    )
    built = await build_grown(grown, cfg)
    log(f"growth: grown store built in {built['build_seconds']} s, {built['store_bytes'] / 1e6:.0f} MB")
    shape = (
        f"{cfg.grown_publishes:,} publishes of the channel stored, {cfg.grown_channels:,} other channels "
        f"of {cfg.grown_days} days"
    )
    on_grown = Client(grown.target, 1)
    fresh_read = await bench.playlog("fresh-read")
    on_fresh = Client(fresh_read.target, 2)
    fresh: list[tuple[PlaylogServer, Client]] = []
    try:
        # Reads first: the grown store as built.
        await publish_channel(on_fresh, CHANNEL)
        reads = [
            Case(
                "read-fresh",
                [functools.partial(on_fresh.window.ReadWindowSnapshot, await on_fresh.read_day(CHANNEL, 0))],
                fresh_read.pid,
            ),
            Case(
                "read-grown",
                [functools.partial(on_grown.window.ReadWindowSnapshot, await on_grown.read_day(CHANNEL, 0))],
                grown.pid,
            ),
        ]
        await interleaved(reads, cfg.read_rounds, cfg.read_seconds, cfg.warmup_seconds / 2, "growth reads")
        await bench.stop_playlog(fresh_read)

        grown_reqs = [publish_request(CHANNEL, 0, 1, tag) for tag in ("a", "b")]
        publish_grown = alternating_publish(on_grown, grown_reqs)
        fresh_case = Case("publish-fresh")

        async def prepare_fresh(r: int) -> list[Call]:
            # A fresh server each round: nothing of the rounds before.
            while fresh:
                server, client = fresh.pop()
                await client.close()
                await bench.stop_playlog(server)
            server = await bench.playlog(f"fresh-r{r}")
            client = Client(server.target, 3)
            fresh.append((server, client))
            fresh_case.pid = server.pid
            return [alternating_publish(client, await publish_channel(client, CHANNEL))]

        async def prepare_grown(r: int) -> list[Call]:
            return [publish_grown]

        fresh_case.prepare = prepare_fresh
        publishes = [fresh_case, Case("publish-grown", pid=grown.pid, prepare=prepare_grown)]
        await interleaved(publishes, cfg.rounds, cfg.unary_seconds, cfg.warmup_seconds, "growth publishes")
    finally:
        await on_grown.close()
        await on_fresh.close()
        for _, client in fresh:
            await client.close()
    extra = {"grown_store": built}
    return [
        case_result(
            reads[0], "ReadWindowSnapshot of 1 day (48 entries)", "fresh store: the day published once", None
        ),
        case_result(
            reads[1],
            "ReadWindowSnapshot of 1 day (48 entries)",
            f"grown store: {shape}",
            "read-fresh",
            extra=extra,
        ),
        case_result(
            publishes[0],
            "PublishAtomicReplace, 48-entry day, 1 client",
            "fresh store: a new server each round",
            None,
        ),
        case_result(
            publishes[1],
            "PublishAtomicReplace, 48-entry day, 1 client",
            f"grown store: {shape} (every round adds its own)",
            "publish-fresh",
            extra=extra,
        ),
    ]


def goals(cfg: Config) -> list[Goal]:
    grown = f"{cfg.grown_publishes:,} publishes of the channel and {cfg.grown_channels:,} channels of 7 days"
    return [
        Goal(
            f"{what} {op}, grown store ({grown}) vs fresh",
            f"{key}-grown",
            f"{key}-fresh",
            metric,
            "fresh store",
            "<= 1.2",
        )
        for key, op in (("publish", "a publish"), ("read", "a one-day read"))
        for what, metric in (("latency p50 of", "p50_ms"), ("server CPU of", "cpu"))
    ]


def report(rows: dict[str, Result]) -> list[str]:
    r = rows.get("publish-grown") or rows.get("read-grown")
    built = r.extra.get("grown_store") if r else None
    if not built:
        return []
    return [
        "",
        "## The grown store",
        "",
        f"Built through the API in {built['build_seconds']} s by {BUILD_CLIENTS} clients: "
        f"{built['publishes_on_channel']:,} publishes of `{CHANNEL}`'s day 0, {built['channels']:,} channels "
        f"in all; data directory {built['store_bytes'] / 1e6:,.0f} MB.",
    ]


WORKLOAD = Workload("growth", run, goals, report)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
