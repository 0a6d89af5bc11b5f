"""Subscriber process of the WatchWindow benchmark: opens N server streams
multiplexed over a few grpc.aio channels (one TCP connection each) and time-
stamps every `replaced` event it receives, so that the server, not this
process, is what the watch workloads (watch.py, rates.py, replicas.py)
measure.

Targets: `--kind playlog` (ExecutionWindowService/WatchWindow on one channel)
or `--kind bare` (benchfanout.Fanout/Subscribe of bench/fanout_server.py).
Both deliver serialized playlog `WindowEvent`s, parsed the same way here.
`--kind etcd` opens one etcd `Watch` stream per subscriber, each creating one
watch on the channel's key prefix (`/playlog/<channel>/`, see
bench/etcdlib.py); a publish arrives as one WatchResponse holding all its
events (48 deletes, 48 puts, the publish record, the generation key),
time-stamped as soon as it is deserialized; the generation is the value of
the `gen` key's PUT. The entries' values stay serialized bytes (not parsed
into `ExecutionEntry`s one by one in Python): a little less client work
than a playlog subscriber does, which favours etcd. Needs `--etcd-gen`, the
directory of the compiled bench/etcd_proto.

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
from typing import Any

import etcdlib
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

    async def etcd_stream(self, call: Any, create: Any, gen_key: bytes) -> None:
        """One etcd Watch stream with one watch; `call` is the bidi call."""
        is_ready = False
        last = 0
        recv = self.recv
        n = self.n
        try:
            await call.write(create)
            while True:
                resp = await call.read()
                t = now_ns()
                if resp is grpc.aio.EOF:
                    break
                if resp.canceled:
                    raise RuntimeError(f"watch canceled: {resp.cancel_reason}")
                # A publish's Txn puts the generation key last: one look
                # suffices unless the response holds several publishes.
                events = resp.events
                gens: list[int] = []
                if events:
                    ev = events[-1]
                    if ev.kv.key == gen_key and ev.type == 0:  # PUT
                        gens.append(int(ev.kv.value))
                    if not gens or gens[0] != last + 1:
                        gens = [int(e.kv.value) for e in events if e.kv.key == gen_key and e.type == 0]
                for g in gens:
                    times = recv[g]
                    times.append(t)
                    if g <= last:
                        self.out_of_order += 1
                    last = g
                    if len(times) == n:
                        send({"delivered": g})
                if resp.created and not is_ready:
                    is_ready = True
                    self.ready += 1
                    if self.ready == n:
                        send({"ready": n})
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                msg = f"{e.code().name}: {e.details()}"
                self.errors.append(msg)
                send({"error": msg})
            return
        except RuntimeError as e:
            self.errors.append(str(e))
            send({"error": str(e)})
            return
        msg = "stream ended by the server"
        self.errors.append(msg)
        send({"error": msg})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--kind", choices=["playlog", "bare", "etcd"], required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--channel-id", default="")
    parser.add_argument("--progress-interval-ms", type=int, default=3_600_000)
    parser.add_argument("--dump", required=True)
    parser.add_argument("--etcd-gen", default="", help="directory of the compiled bench/etcd_proto")
    args = parser.parse_args()

    subs = Subscribers(args.streams)
    channels = [
        grpc.aio.insecure_channel(args.target, options=[*GRPC_CLIENT_OPTIONS, ("bench.connection", i)])
        for i in range(args.connections)
    ]
    tasks = []
    if args.kind == "etcd":
        api = etcdlib.load(Path(args.etcd_gen))
        key = etcdlib.prefix(args.channel_id)
        create = api.rpc.WatchRequest(
            create_request=api.rpc.WatchCreateRequest(key=key, range_end=etcdlib.prefix_end(key))
        )
        watch = [
            ch.stream_stream(
                "/etcdserverpb.Watch/Watch",
                request_serializer=api.rpc.WatchRequest.SerializeToString,
                response_deserializer=api.rpc.WatchResponse.FromString,
            )
            for ch in channels
        ]
        gen_key = etcdlib.gen_key(args.channel_id)
        for i in range(args.streams):
            call = watch[i % len(watch)]()
            tasks.append(asyncio.create_task(subs.etcd_stream(call, create, gen_key)))
            if i % 50 == 49:
                await asyncio.sleep(0)
    else:
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
