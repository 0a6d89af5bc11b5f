"""Baseline for the WatchWindow benchmark: a bare grpc.aio server that fans a
message out to server-streaming subscribers, with no store, no protobuf
conversion and no interceptor.

Service `benchfanout.Fanout`, defined by a generic handler on raw bytes:
- `Subscribe(bytes) -> stream bytes`: first sends a ready marker (a serialized
  playlog `WindowEvent` holding a complete snapshot, so subscribers parse the
  same way as on playlog), then every published payload, in order.
- `Publish(bytes) -> bytes`: appends the payload to every subscriber's queue
  and returns (the "commit"); the payload is sent as is to every stream.

Prints `{"port": N}` on stdout once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
from collections.abc import AsyncIterator

import grpc
from benchlib import FANOUT_SERVICE, MAX_MESSAGE_BYTES, send

from playlog.v1 import types_pb2 as pb

READY = pb.WindowEvent(snapshot=pb.SnapshotEvent(complete=True)).SerializeToString()


class Subscriber:
    def __init__(self) -> None:
        self.pending: collections.deque[bytes] = collections.deque()
        self.wakeup = asyncio.Event()


class Fanout:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    async def subscribe(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        sub = Subscriber()
        self.subscribers.add(sub)
        try:
            yield READY
            while True:
                await sub.wakeup.wait()
                sub.wakeup.clear()
                while sub.pending:
                    yield sub.pending.popleft()
        finally:
            self.subscribers.discard(sub)

    async def publish(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        for sub in self.subscribers:
            sub.pending.append(request)
            sub.wakeup.set()
        return b""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    fanout = Fanout()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                FANOUT_SERVICE,
                {
                    "Subscribe": grpc.unary_stream_rpc_method_handler(fanout.subscribe),
                    "Publish": grpc.unary_unary_rpc_method_handler(fanout.publish),
                },
            ),
        )
    )
    port = server.add_insecure_port(args.listen)
    await server.start()
    send({"port": port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())
