"""Read: `ReadWindowSnapshot` of 1 day (48 entries) and 7 days (336 entries)
in the middle of a channel holding 10 days (480 entries) or 1,000 days
(48,000 entries, stored by 100 publishes of 10 days each), 1 client, beside
etcd's linearizable Range over the same day's keys (values parsed into
ExecutionEntry, as a playlog client gets them) and beside the no-op RPC at
1 client on the same playlog server, all in the same interleaved rounds.

Every case first checks that it gets exactly the entries it asked for.
Reads write nothing, so the channels are built once, on a fresh server.

Run alone: `.venv/bin/python bench/read.py [--quick] [--no-etcd]`.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import etcdlib
import grpc
from benchlib import (
    ENTRIES_PER_DAY,
    Bench,
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
    publish_request,
    skipped_result,
)
from benchlib import main as bench_main

ETCD_RANGE = f"etcd Range: 1 day ({ENTRIES_PER_DAY} keys), values parsed"


async def run(bench: Bench) -> list[Result]:
    cfg = bench.cfg
    server = await bench.playlog()
    etcd = await bench.etcd()
    c = Client(server.target)
    ec = (
        etcdlib.EtcdClient(etcd.api, etcd.server.target)
        if etcd.running and etcd.api and etcd.server
        else None
    )
    stored_days = (10, cfg.big_days)
    # case, operation, setup, extra
    cases: list[tuple[Case, str, str, dict[str, Any]]] = [
        (
            Case("noop-read-1", [c.noop()], server.pid),
            "no-op RPC (Health/Check), in the read rounds",
            "1 client",
            {},
        )
    ]
    etcd_error = ""
    try:
        for stored in stored_days:
            cid = f"read-{stored}"
            log(f"read: storing {stored} days ({stored * ENTRIES_PER_DAY} entries) on {cid}")
            t0 = time.monotonic()
            await c.declare(cid)
            await c.store_days(cid, range(stored))
            for first in range(0, stored, 10):
                await c.publish(publish_request(cid, first, min(10, stored - first)))
            log(f"read: {cid} stored in {time.monotonic() - t0:.1f} s")
            first = min(stored // 2, stored - 7)  # middle of the stored range
            for days in (1, 7):
                req = await c.read_day(cid, first, days)
                size = (await c.window.ReadWindowSnapshot(req)).ByteSize()
                what = f"{days} day{'s' if days > 1 else ''} ({days * ENTRIES_PER_DAY} entries)"
                cases.append(
                    (
                        Case(
                            f"read-{days}d-{stored}",
                            [functools.partial(c.window.ReadWindowSnapshot, req)],
                            server.pid,
                        ),
                        f"ReadWindowSnapshot, {what}",
                        f"1 client, {stored} days ({stored * ENTRIES_PER_DAY} entries) stored on the channel",
                        {"response_bytes": size},
                    )
                )
        if ec is not None and etcd.server is not None:
            try:
                for stored in stored_days:
                    cid = f"read-{stored}"
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
                            ETCD_RANGE,
                            f"1 client, {stored} days ({stored * ENTRIES_PER_DAY} entry keys) on the channel",
                            {},
                        )
                    )
            except (etcdlib.EtcdUnavailable, grpc.aio.AioRpcError) as e:
                etcd_error = f"etcd setup failed: {e}"
                log(f"read: {etcd_error}")
                cases = [x for x in cases if not x[0].key.startswith("etcd-")]
        # Measured in interleaved rounds, so that a slow spell of the machine
        # does not land on one case only.
        await interleaved(
            [x[0] for x in cases], cfg.read_rounds, cfg.read_seconds, cfg.warmup_seconds / 2, "read"
        )
    finally:
        await c.close()
        if ec is not None:
            await ec.close()
    out = []
    for case, operation, setup, extra in cases:
        etcd_row = case.key.startswith("etcd-")
        baseline = None if etcd_row or case.key.startswith("noop-") else "noop-read-1"
        out.append(case_result(case, operation, setup, baseline, "etcd" if etcd_row else "playlog", extra))
    measured = {x[0].key for x in cases}
    for stored in stored_days:
        key = f"etcd-read-1d-{stored}"
        if key in measured:
            continue
        setup = f"1 client, {stored} days stored"
        if etcd_error:
            out.append(failed_result(key, ETCD_RANGE, setup, etcd_error, "etcd"))
        else:
            out.append(skipped_result(key, ETCD_RANGE, setup, f"skipped: {etcd.skipped}"))
    return out


def goals(cfg: Config) -> list[Goal]:
    out = [
        Goal(
            f"server CPU per ReadWindowSnapshot of 1 day ({stored} days stored) vs the no-op RPC",
            f"read-1d-{stored}",
            "noop-read-1",
            "cpu",
            "no-op RPC",
            "<= 1.5",
        )
        for stored in (10, cfg.big_days)
    ]
    # Context, no goal.
    out += [
        Goal(
            f"reads/s, 1 day (48 entries), {stored} days stored",
            f"read-1d-{stored}",
            f"etcd-read-1d-{stored}",
            "rate",
            "etcd",
        )
        for stored in (10, cfg.big_days)
    ]
    return out


def report(rows: dict[str, Result]) -> list[str]:
    """Read scaling: entries returned against entries stored."""
    stored = sorted({int(k.rsplit("-", 1)[1]) for k in rows if k.startswith("read-") and k[5].isdigit()})
    if len(stored) < 2:
        return []
    small, big = stored[0], stored[-1]
    out = ["", "## Read cost: entries returned vs entries stored", ""]
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


WORKLOAD = Workload("read", run, goals, report)


if __name__ == "__main__":
    bench_main([WORKLOAD], __doc__)
