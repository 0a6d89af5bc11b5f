"""A WatchWindow subscriber for the tests, reading its stream into a list as
a playout engine would."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc

from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.conftest import Running

CH = "ch1"
TIMEOUT = 20


@dataclasses.dataclass
class Follower:
    """A subscriber reading its stream into a list, as a playout engine would."""

    call: grpc.aio.UnaryStreamCall  # type: ignore[type-arg]
    events: list[pb.WindowEvent] = dataclasses.field(default_factory=list)
    task: asyncio.Task[None] | None = None
    error: grpc.aio.AioRpcError | None = None
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def _pump(self) -> None:
        try:
            async for event in self.call:
                self.events.append(event)
                self.changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
            self.changed.set()

    def replaced(self) -> list[pb.ReplacedEvent]:
        return [e.replaced for e in self.events if e.WhichOneof("event") == "replaced"]

    def snapshots(self) -> list[pb.SnapshotEvent]:
        return [e.snapshot for e in self.events if e.WhichOneof("event") == "snapshot"]

    def progress(self) -> list[pb.ProgressEvent]:
        return [e.progress for e in self.events if e.WhichOneof("event") == "progress"]

    async def until(self, predicate: object, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        async def wait() -> None:
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                if self.error is not None:
                    raise AssertionError(f"stream ended: {self.error.code()} {self.error.details()}")
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def ended(self, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        """Waits until the stream has ended (with `error` set if it failed)."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def cancel(self) -> None:
        self.call.cancel()


def follow(r: Running, after: int = 0, interval_ms: int = 0, stubs: object = None) -> Follower:
    stub = (stubs or r.stubs).window  # type: ignore[attr-defined]
    call = stub.WatchWindow(
        ew.WatchWindowRequest(channel_id=CH, after_generation_id=after, progress_interval_ms=interval_ms)
    )
    f = Follower(call)
    f.task = asyncio.create_task(f._pump())
    return f
