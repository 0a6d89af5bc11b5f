"""The operator console (SPEC section 15): the page at `/`, its vendored
assets, and its live feed, GET /api/v1/channels/{id}/events.

The feed is WatchWindow as Server-Sent Events: the very WatchHub coroutine a
gRPC subscriber runs, writing to an HTTP response instead of a gRPC stream
(SseStream stands in for the gRPC context). So a browser is one more
subscriber of the one fan-out, with the same bounded queue: a browser too slow
to read is reset with a fresh snapshot, and never holds up the hub or anyone
else. Each event's `id:` is the generation the stream is at, so the browser's
automatic reconnect (`Last-Event-ID`) resumes from the durable history, like
`after_generation_id`; progress events (once per progress interval) are the
heartbeat that lets the page say when it stopped hearing from the server.

The page and its assets are open to everyone: they hold no data. Every piece
of data comes from the JSON API, with its authentication.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import random
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
from aiohttp import web

from playlog.api import limits
from playlog.api.errors import abort_for
from playlog.auth import reauthenticating_guard, stream_guard
from playlog.domain.validation import quote
from playlog.events import emit
from playlog.http.api import CALLER, HttpCallContext, status_of, to_json
from playlog.http.edge import PRINCIPAL, REAUTHENTICATE, Access, EdgeContext, HttpError, bad_parameter, route
from playlog.v1 import execution_window_service_pb2 as ew_pb
from playlog.v1 import types_pb2 as pb

log = logging.getLogger("playlog.http")

PAGE = Access(None)
# The browser waits this long, and up to twice as long, before reconnecting a
# lost stream (SSE `retry:`).
RECONNECT_MS = 2000
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".md": "text/markdown",
          ".png": "image/png", ".svg": "image/svg+xml"}  # fmt: skip
MAX_GENERATION_ID = 2**53 - 1


class StreamClosed(Exception):
    """The browser went away, or the server ends the stream."""


class SseStream(HttpCallContext):
    """The gRPC context WatchHub.watch writes to, for a Server-Sent Events
    response: each WindowEvent (serialized once by the hub) goes out as one
    SSE event in protobuf's JSON mapping."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        super().__init__(request)
        self.response = response
        self.sent = 0

    async def write(self, serialized: bytes | pb.WindowEvent) -> None:
        event = (
            serialized if isinstance(serialized, pb.WindowEvent) else pb.WindowEvent.FromString(serialized)
        )
        kind = event.WhichOneof("event") or "unknown"
        generation: int | None = None
        if kind == "replaced":
            generation = event.replaced.generation_id
        elif kind == "progress":
            generation = event.progress.channel_generation_id
        elif kind == "snapshot" and event.snapshot.complete:
            # Only the last part: a browser reconnecting in the middle of a
            # snapshot must get the whole snapshot again, not resume after it.
            generation = event.snapshot.channel_generation_id
        await self._send(kind, to_json(getattr(event, kind)), generation)

    async def _send(self, kind: str, data: dict[str, Any], generation: int | None) -> None:
        lines = [f"event: {kind}"]
        if generation is not None:
            lines.append(f"id: {generation}")
        lines.append("data: " + json.dumps(data, separators=(",", ":")))
        try:
            await self.response.write(("\n".join(lines) + "\n\n").encode())
        except (ConnectionResetError, RuntimeError) as exc:  # RuntimeError: the transport is gone
            raise StreamClosed(str(exc)) from None
        self.sent += 1

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        # The stream is open already: the error is its last event.
        await self._send("error", {"code": code.name, "status": status_of(code), "message": details}, None)
        raise StreamClosed(details)


def _after(request: web.Request) -> int:
    """The generation to resume after: the browser's Last-Event-ID on a
    reconnect, or ?after= on a first connect (0: start with a snapshot)."""
    given = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if given is None:
        given, name = request.query.get("after"), "after"
    if given is None or given == "":
        return 0
    if not (given.isascii() and given.isdigit() and len(given) <= 16 and int(given) <= MAX_GENERATION_ID):
        raise bad_parameter(name, f"must be a generation id (0 to 2^53-1), got {quote(given[:40])}")
    return int(given)


class ConsoleRoutes:
    def __init__(self, context: EdgeContext) -> None:
        self.context = context
        self.assets: dict[str, tuple[bytes, str, str]] = {}
        folder = importlib.resources.files("playlog.http") / "static"
        for item in folder.iterdir():
            suffix = "." + item.name.rpartition(".")[2]
            if item.is_file() and suffix in _TYPES:
                body = item.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self.assets[item.name] = (body, _TYPES[suffix], etag)

    def _asset(self, request: web.Request, name: str) -> web.Response:
        found = self.assets.get(name)
        if found is None:
            raise HttpError(404, "NOT_FOUND", f"no such asset: {quote(name[:100])}")
        body, content_type, etag = found
        # Revalidated on every load (an upgrade shows at once); a 304 is cheap.
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if content_type.startswith("text/") else None
        return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)

    @route(PAGE)
    async def index(self, request: web.Request) -> web.Response:
        return self._asset(request, "index.html")

    @route(PAGE)
    async def static(self, request: web.Request) -> web.Response:
        return self._asset(request, request.match_info["name"])

    @route(CALLER)
    async def events(self, request: web.Request) -> web.StreamResponse:
        hub = self.context.watch
        if hub is None:
            raise HttpError(503, "UNAVAILABLE", "this server has no watch hub")
        principal = request[PRINCIPAL]  # a reader at least (CALLER)
        message = ew_pb.WatchWindowRequest(
            channel_id=request.match_info["id"], after_generation_id=_after(request)
        )
        limits.check(message)
        channel = await self.context.read(self.context.playlog.get_channel, message.channel_id)
        if channel is None:  # answered as an HTTP error before the stream opens
            raise HttpError(404, "NOT_FOUND", f"channel {quote(message.channel_id)} is not declared",
                            [{"field": "channel", "description": "not declared"}])  # fmt: skip
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        # Jittered, so that the browsers of a restarted server do not all come
        # back in the same instant (kubernetes #6770); each resumes from the
        # durable history by its Last-Event-ID, not from a fresh snapshot.
        retry = RECONNECT_MS + random.randrange(RECONNECT_MS)
        await response.write(f"retry: {retry}\n\n".encode())
        stream = SseStream(request, response)
        guarded = stream_guard.set(self._guard(request))
        emit(log, logging.DEBUG, "console_stream_opened", channel_id=message.channel_id,
             principal=principal.name, after_generation_id=message.after_generation_id)  # fmt: skip
        try:
            await hub.watch(message, stream)  # type: ignore[arg-type]
        except StreamClosed:
            pass
        except HttpError as exc:  # the caller lost its right to watch (guard)
            with contextlib.suppress(StreamClosed):
                await stream._send(
                    "error", {"code": exc.code, "status": exc.status, "message": exc.message}, None
                )
        except Exception as exc:  # the gRPC edge's one mapping, as the stream's last event
            try:
                await abort_for(exc, stream, "WatchWindow")  # type: ignore[arg-type]
            except (StreamClosed, HttpError):
                pass
        finally:
            stream_guard.reset(guarded)
        return response

    def _guard(self, request: web.Request) -> Callable[[], None] | None:
        """Called by the hub before each event: after an auth file reload the
        caller is authenticated again (a removed principal's stream ends with
        UNAUTHENTICATED, a reader no more with PERMISSION_DENIED), as the gRPC
        interceptor re-checks a WatchWindow stream. None without auth."""

        def again() -> None:
            request[PRINCIPAL] = request[REAUTHENTICATE]()

        return reauthenticating_guard(self.context.credentials, again)


def register(app: web.Application, context: EdgeContext) -> None:
    routes = ConsoleRoutes(context)
    app.router.add_get("/", routes.index)
    app.router.add_get("/static/{name}", routes.static)
    app.router.add_get("/api/v1/channels/{id}/events", routes.events)
