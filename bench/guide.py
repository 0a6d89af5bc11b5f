"""The guide benchmark (issue 16, item 6): 200 concurrent clients fetching
the XMLTV of 100 channels x 7 days from `playlog serve --http-listen`,
beside the same server sending a static body of the same size on the same
HTTP listener, in interleaved rounds; and the time of the first render.

    .venv/bin/python bench/guide.py [--channels 100] [--days 7] [--clients 200] [--seconds 4] [--rounds 2]

Goal: after the first render, the XMLTV rate within 2x of the static body's
(ratio >= 0.5): the guide is rendered once per generation and day version
and served as bytes, so what remains per request is the version read (one
small store read) and the conditional-request logic.

The server runs as a subprocess (bench/guide_server.py: `playlog serve`
plus the static route), on a manual clock two hours before the first day,
so every day published is in the flexible future. It runs twice: once to
load the store and measure the first render (and learn the body's size),
then again, on the same data directory, with the static body of that size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
from benchlib import (
    CHILDREN,
    DAY_MS,
    GRPC_CLIENT_OPTIONS,
    Bench,
    Config,
    Goal,
    Result,
    Workload,
    day_date,
    day_entries,
    day_start_ms,
    free_ports,
    kill_children,
    stop_process,
)

from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb

BENCH_DIR = Path(__file__).resolve().parent
# Two hours before day 0: the XMLTV range (an hour before the current hour,
# 7 days on) covers the days published.
CLOCK_START_MS = day_start_ms(0) - 2 * 3_600_000
HOUR_MS = 3_600_000


class Server:
    def __init__(self, workdir: Path, static_bytes: int) -> None:
        self.workdir = workdir
        self.static_bytes = static_bytes
        self.proc: asyncio.subprocess.Process | None = None
        self.grpc_port, self.http_port = free_ports(2)

    async def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(BENCH_DIR / "guide_server.py"), "--static-bytes", str(self.static_bytes),
            "--data-dir", str(self.workdir / "data"), "--listen", f"127.0.0.1:{self.grpc_port}",
            "--http-listen", f"127.0.0.1:{self.http_port}", "--clock", "manual",
            "--start-utc-ms", str(CLOCK_START_MS), "--shutdown-grace-seconds", "2",
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise SystemExit(f"the server exited; see {self.workdir / 'server.log'}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.base}/bench/static") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise SystemExit("the server did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


def schedule_day(channel_id: str, day: int) -> pb.ScheduleDay:
    """24 one-hour slots: each holds two of the day's 30-minute blocks."""
    start = day_start_ms(day)
    return pb.ScheduleDay(
        channel_id=channel_id,
        programming_day_date=day_date(day),
        plan_id="bench-plan",
        slots=[
            pb.ScheduleSlot(start_utc_ms=start + h * HOUR_MS, end_utc_ms=start + (h + 1) * HOUR_MS,
                            program_id=f"prog-{day}-{h}", title=f"Programme {h} of {day_date(day)}")
            for h in range(24)
        ],
    )  # fmt: skip


async def load(target: str, channels: int, days: int) -> float:
    """Declares the channels, stores their days and publishes them; seconds taken."""
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target, options=GRPC_CLIENT_OPTIONS) as channel:
        cs, ds, ws = ch_grpc.ChannelServiceStub(channel), sd_grpc.ScheduleDayServiceStub(channel), \
            ew_grpc.ExecutionWindowServiceStub(channel)  # fmt: skip
        limit = asyncio.Semaphore(16)

        async def one_channel(i: int) -> None:
            cid = f"bench-{i:03d}"
            async with limit:
                await cs.DeclareChannel(
                    ch.DeclareChannelRequest(
                        channel_id=cid,
                        locked_window_ms=60_000,
                        display_name=f"Bench {i}",
                        guide_number=str(i + 1),
                        stream_url=f"http://127.0.0.1/stream/{cid}.ts",
                    )
                )
                for d in range(days):
                    request = sd.StoreScheduleDayRequest(schedule_day=schedule_day(cid, d))
                    day = await ds.StoreScheduleDay(request)
                    assert day.ok, day
                    start = day_start_ms(d)
                    result = await ws.PublishAtomicReplace(
                        ew.PublishAtomicReplaceRequest(
                            channel_id=cid,
                            range_start_utc_ms=start,
                            range_end_utc_ms=start + DAY_MS,
                            entries=day_entries(cid, d),
                        )
                    )
                    assert result.ok, result

        await asyncio.gather(*(one_channel(i) for i in range(channels)))
    return time.perf_counter() - started


async def fetch_rate(url: str, clients: int, seconds: float) -> tuple[float, float, int]:
    """(answers/s, MB/s, body size) of `clients` concurrent clients, each
    fetching `url` again and again for `seconds`, on kept-alive connections."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    count, received, size = 0, 0, 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"Accept-Encoding": "identity"}) as http:  # fmt: skip
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal count, received, size
            while time.perf_counter() < deadline:
                async with http.get(url) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (resp.status, body[:200])
                count += 1
                received += len(body)
                size = len(body)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return count / elapsed, received / elapsed / 1e6, size


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="playlog-guide-bench-") as tmp:
        workdir = Path(tmp)
        first = Server(workdir, 1)
        await first.start()
        try:
            load_s = await load(f"127.0.0.1:{first.grpc_port}", args.channels, args.days)
            async with aiohttp.ClientSession(headers={"Accept-Encoding": "identity"}) as http:
                started = time.perf_counter()
                async with http.get(f"{first.base}/guide/xmltv.xml") as resp:
                    body = await resp.read()
                first_render_s = time.perf_counter() - started
                started = time.perf_counter()
                async with http.get(f"{first.base}/guide/xmltv.xml") as resp:
                    assert await resp.read() == body
                second_s = time.perf_counter() - started
        finally:
            await first.stop()
        programmes = body.count(b"<programme ")
        server = Server(workdir, len(body))
        await server.start()
        try:
            async with aiohttp.ClientSession(headers={"Accept-Encoding": "identity"}) as http:
                async with http.get(
                    f"{server.base}/guide/xmltv.xml"
                ) as resp:  # rendered once more, not timed
                    assert await resp.read() == body
            rates: dict[str, list[float]] = {"xmltv": [], "static": []}
            for _ in range(args.rounds):
                for name, path in (("static", "/bench/static"), ("xmltv", "/guide/xmltv.xml")):
                    rate, _, size = await fetch_rate(server.base + path, args.clients, args.seconds)
                    assert size == len(body)
                    rates[name].append(rate)
        finally:
            await server.stop()
    xmltv, static = statistics.median(rates["xmltv"]), statistics.median(rates["static"])
    return {
        "channels": args.channels,
        "days": args.days,
        "clients": args.clients,
        "programmes": programmes,
        "body_bytes": len(body),
        "load_s": round(load_s, 2),
        "first_render_s": round(first_render_s, 3),
        "served_again_s": round(second_s, 4),
        "xmltv_per_s": round(xmltv, 1),
        "static_per_s": round(static, 1),
        "ratio": round(xmltv / static, 3),
        "goal": "ratio >= 0.5 (within 2x of the static body)",
        "met": xmltv / static >= 0.5,
        "rounds": rates,
    }


async def workload(bench: Bench) -> list[Result]:
    """The guide as one workload of `make bench` (bench/run.py): the same
    measurement, its rows in the shared report and its goal in the summary."""
    quick = bench.cfg.name == "quick"
    args = argparse.Namespace(
        channels=100, days=7, clients=200, seconds=2.0 if quick else 4.0, rounds=2 if quick else 3
    )
    r = await run(args)
    setup = f"{r['channels']} channels x {r['days']} days, {r['body_bytes']:,} bytes, {r['clients']} clients"
    rounds = r["rounds"]
    assert isinstance(rounds, dict)
    extra = {"first_render_s": r["first_render_s"], "served_again_s": r["served_again_s"],
             "programmes": r["programmes"], "per_round": rounds}  # fmt: skip
    return [
        Result(
            "guide-static",
            "a static body of the XMLTV's size, same HTTP listener",
            setup,
            float(r["static_per_s"]),
            "fetches/s",
            None,
            None,
            0,
            None,
            extra=extra,
            rounds=args.rounds,
        ),
        Result(
            "guide-xmltv",
            "GET /guide/xmltv.xml, after the first render",
            setup,
            float(r["xmltv_per_s"]),
            "fetches/s",
            None,
            None,
            0,
            "guide-static",
            extra=extra,
            rounds=args.rounds,
        ),
    ]


def goals(cfg: Config) -> list[Goal]:
    return [Goal("guide XMLTV fetches/s, 200 clients (issue 16)", "guide-xmltv", "guide-static", "rate",
                 "static body", ">= 0.5")]  # fmt: skip


def report(rows: dict[str, Result]) -> list[str]:
    r = rows.get("guide-xmltv")
    if r is None or r.failed:
        return []
    x = r.extra
    return ["", "## The guide", "",
            f"First render (cold) of the XMLTV of 100 channels x 7 days ({x['programmes']:,} programmes): "
            f"{x['first_render_s']} s; served again: {x['served_again_s']} s."]  # fmt: skip


WORKLOAD = Workload("guide", workload, goals, report)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measured round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each, interleaved")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args))
    finally:
        kill_children()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"guide: {result['channels']} channels x {result['days']} days, {result['programmes']} programmes, "
          f"{result['body_bytes']:,} bytes of XMLTV (store loaded in {result['load_s']} s)")  # fmt: skip
    print(f"first render (cold): {result['first_render_s']} s; the same again: {result['served_again_s']} s")
    print(f"{result['clients']} concurrent clients: XMLTV {result['xmltv_per_s']}/s, "
          f"static body of the same size {result['static_per_s']}/s, ratio {result['ratio']}x "
          f"(goal >= 0.5x: {'met' if result['met'] else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
