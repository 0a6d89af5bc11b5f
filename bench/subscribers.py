"""Subscriber process of the WatchWindow benchmark: opens N server streams
multiplexed over a few grpc.aio channels (one TCP connection each) and time-
stamps every `replaced` event it receives, so that the server, not this
process, is what bench/run.py measures.

Targets: `--kind playlog` (ExecutionWindowService/WatchWindow on one channel)
or `--kind bare` (benchfanout.Fanout/Subscribe of bench/fanout_server.py).
Both deliver serialized playlog `WindowEvent`s, parsed the same way here.

Line protocol (JSON on stdout): `{"ready": N}` once every stream has its
initial snapshot; `{"delivered": G}` once all N streams received generation G;
`{"error": ...}` if a stream fails. On stdin, `stop` ends every stream and
writes the receive times (CLOCK_MONOTONIC ns, per generation) to --dump as
JSON, then prints `{"stopped": true}`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
from pathlib import Path

import grpc
from benchlib import FANOUT_SERVICE, GRPC_CLIENT_OPTIONS, now_ns, send

from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb


class Subscribers:
    def __init__(self, n: int) -> None:
        self.n = n
        self.ready = 0
        self.recv: dict[int, list[int]] = collections.defaultdict(list)
        self.snapshots = 0
        self.resets = 0
        self.progress = 0
        self.out_of_order = 0
        self.errors: list[str] = []

    async def stream(self, call: grpc.aio.UnaryStreamCall[bytes, pb.WindowEvent]) -> None:
        is_ready = False
        last = 0
        recv = self.recv
        n = self.n
        try:
            async for event in call:
                t = now_ns()
                kind = event.WhichOneof("event")
                if kind == "replaced":
                    g = event.replaced.generation_id
                    times = recv[g]
                    times.append(t)
                    if g <= last:
                        self.out_of_order += 1
                    last = g
                    if len(times) == n:
                        send({"delivered": g})
                elif kind == "snapshot":
                    self.snapshots += 1
                    if event.snapshot.reset:
                        self.resets += 1
                        send({"reset": event.snapshot.channel_generation_id})
                    if event.snapshot.complete:
                        last = max(last, event.snapshot.channel_generation_id)
                        if not is_ready:
                            is_ready = True
                            self.ready += 1
                            if self.ready == n:
                                send({"ready": n})
                else:
                    self.progress += 1
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                msg = f"{e.code().name}: {e.details()}"
                self.errors.append(msg)
                send({"error": msg})
            return
        msg = "stream ended by the server"
        self.errors.append(msg)
        send({"error": msg})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--kind", choices=["playlog", "bare"], required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--channel-id", default="")
    parser.add_argument("--progress-interval-ms", type=int, default=3_600_000)
    parser.add_argument("--dump", required=True)
    args = parser.parse_args()

    subs = Subscribers(args.streams)
    channels = [
        grpc.aio.insecure_channel(args.target, options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", i)])
        for i in range(args.connections)
    ]
    if args.kind == "playlog":
        method = "/playlog.v1.ExecutionWindowService/WatchWindow"
        request = ew.WatchWindowRequest(
            channel_id=args.channel_id,
            after_generation_id=0,
            progress_interval_ms=args.progress_interval_ms,
        ).SerializeToString()
    else:
        method = f"/{FANOUT_SERVICE}/Subscribe"
        request = b""
    callables: list[grpc.aio.UnaryStreamMultiCallable[bytes, pb.WindowEvent]] = [
        ch.unary_stream(method, response_deserializer=pb.WindowEvent.FromString) for ch in channels
    ]
    tasks = []
    for i in range(args.streams):
        call = callables[i % len(callables)](request)
        tasks.append(asyncio.create_task(subs.stream(call)))
        if i % 50 == 49:
            await asyncio.sleep(0)  # let the first streams start while opening more

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    write_dump(
        args.dump,
        json.dumps(
            {
                "recv": {str(g): times for g, times in subs.recv.items()},
                "snapshots": subs.snapshots,
                "resets": subs.resets,
                "progress": subs.progress,
                "out_of_order": subs.out_of_order,
                "errors": subs.errors[:20],
                "error_count": len(subs.errors),
            }
        ),
    )
    send({"stopped": True})


def write_dump(path: str, text: str) -> None:
    Path(path).write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
