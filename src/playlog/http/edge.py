"""playlog's HTTP edge: one aiohttp application in the same process and event
loop as the gRPC server, for every HTTP way in (the guide now; the operator
console next). Route modules register their routes (`RouteModule`), each
declaring who may call it (`Access`); the edge does the rest in one place,
as the gRPC interceptor does for the servicers:

- authentication with the same Credentials and roles as gRPC (a bearer
  `Authorization` header, or `?token=` on routes that allow it, for guide
  consumers that cannot set headers), refusals logged and counted like the
  interceptor's;
- one error mapping: a 4xx with a JSON reason naming the parameter and the
  rule (`{code, message, details}`, the gRPC code's name), 503 when the store
  cannot be read, 500 (logged) for a bug;
- structured logs (`http_request`: every answer at debug level, refusals and
  failures above it) and metrics per route;
- graceful shutdown with the gRPC server (PlaylogServer.stop).

Handlers stay as thin as the servicers and call the same app/ use cases.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from playlog import metrics
from playlog.api.engine_servicer import EngineServicer
from playlog.api.guide_servicer import GuideServicer
from playlog.api.servicers import (
    AuditServicer,
    ChannelServicer,
    ClockServicer,
    ExecutionWindowServicer,
    ScheduleDayServicer,
)
from playlog.api.watch import WatchHub
from playlog.app.guide import Guide
from playlog.app.service import Playlog, UnknownChannel
from playlog.auth import LOCAL_PRINCIPAL, Credentials, Principal, Role, current_principal, hash_token
from playlog.config import Settings
from playlog.domain.rejection import MalformedRequest
from playlog.domain.validation import quote
from playlog.events import emit
from playlog.http import session as sessions
from playlog.http.session import SessionSigner
from playlog.store.base import StoreError, StoreUnavailable

log = logging.getLogger("playlog.http")
auth_log = logging.getLogger("playlog.auth")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The caller of a route opened to everyone (--guide-public).
PUBLIC = Principal("public", frozenset())
# What the edge keeps on a request for its handlers (aiohttp's typed keys).
PRINCIPAL = web.RequestKey("principal", Principal)
REAUTHENTICATE: web.RequestKey[Callable[[], Principal]] = web.RequestKey("reauthenticate")
VIA_SESSION = web.RequestKey("via_session", bool)
# On every answer: the console's scripts, styles and data come from this
# server only, no inline script or style runs, no other site frames it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Access:
    """Who may call a route: `role` (None: anyone), whether a token may come
    as `?token=`, and the boolean setting that opens the route to everyone."""

    role: Role | None
    token_in_query: bool = False
    opened_by: str = ""
    # The console: the session cookie is a credential too.
    session: bool = False
    # A write: its Origin must be this server's own (no cross-site request
    # may write with a browser's cookie).
    write: bool = False


def route(access: Access) -> Callable[[F], F]:
    """Marks a handler with its access rule (a handler without one is refused:
    deny by default, as the gRPC role table)."""

    def mark(handler: F) -> F:
        handler.playlog_access = access  # type: ignore[attr-defined]
        return handler

    return mark


@dataclass
class EdgeContext:
    """What route modules get: the same application layer as the servicers."""

    settings: Settings
    playlog: Playlog
    guide: Guide
    executor: ThreadPoolExecutor
    credentials: Credentials | None
    # The servicers the JSON API hands its requests to, the hub its event
    # streams follow, and the console's session signer (None: no console).
    services: Services | None = None
    watch: WatchHub | None = None
    signer: SessionSigner | None = None

    @property
    def tls(self) -> bool:
        return bool(self.settings.tls_cert)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """A blocking call on the store's threads, with this request's context."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self.executor, functools.partial(ctx.run, fn, *args))

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """A small read: on the embedded store right here on the event loop (as
        the servicers' small reads), else on the store's threads."""
        if self.playlog.store.inline_reads:
            return fn(*args)
        return await self.run(fn, *args)


RouteModule = Callable[[web.Application, EdgeContext], None]


@dataclass(frozen=True)
class Services:
    """The gRPC servicers: the JSON API reaches the same methods."""

    channels: ChannelServicer
    window: ExecutionWindowServicer
    days: ScheduleDayServicer
    audit: AuditServicer
    clock: ClockServicer
    engines: EngineServicer
    guide: GuideServicer


class HttpError(Exception):
    """A client's mistake or a refusal, answered as JSON {code, message, details}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers or {}


def bad_parameter(name: str, rule: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", f"{name}: {rule}", [{"field": name, "description": rule}])


def _error_body(code: str, message: str, details: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    return {"code": code, "message": message, "details": list(details)}


def _answer(exc: BaseException, request: web.Request) -> web.Response:
    """The one mapping of failures to HTTP answers."""
    if isinstance(exc, HttpError):
        return web.json_response(
            _error_body(exc.code, exc.message, exc.details), status=exc.status, headers=exc.headers
        )
    if isinstance(exc, MalformedRequest):
        details = [{"field": v.field, "description": v.rule} for v in exc.violations]
        return web.json_response(_error_body("INVALID_ARGUMENT", str(exc), details), status=400)
    if isinstance(exc, UnknownChannel):
        message = f"channel {quote(str(exc.args[0]))} is not declared"
        return web.json_response(
            _error_body("NOT_FOUND", message, [{"field": "channel", "description": message}]), status=404
        )
    if isinstance(exc, StoreError):
        # Never an empty or partial guide: an empty XMLTV wipes a consumer's
        # guide (jellyfin #8847); a 503 makes it keep the one it has.
        level = logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR
        emit(log, level, "store_unavailable", path=request.path, error=str(exc))
        return web.json_response(
            _error_body("UNAVAILABLE", f"the store cannot be read ({exc}); retry later"),
            status=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, web.HTTPException):  # aiohttp's own: no such route, wrong method
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "INVALID_ARGUMENT")
        message = f"{request.method} {request.path}: {exc.reason}"
        if exc.status == 404:
            message = f"no such resource: {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response(_error_body(code, message), status=exc.status, headers=headers)
    emit(log, logging.ERROR, "internal_error", exc_info=exc, path=request.path, error=repr(exc))
    return web.json_response(_error_body("INTERNAL", "internal error; see the server log"), status=500)


async def _secured(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, streams included, carries the security headers."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)


class HttpEdge:
    def __init__(self, context: EdgeContext, modules: Sequence[RouteModule]) -> None:
        self.context = context
        self.app = web.Application(
            middlewares=[self._observed, self._authenticated],
            client_max_size=context.settings.max_message_bytes,
        )
        self.app.on_response_prepare.append(_secured)
        for register in modules:
            register(self.app, context)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _observed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Timing, the access log, metrics, and the one error mapping."""
        started = time.perf_counter()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = _answer(exc, request)
        resource = request.match_info.route.resource
        name = resource.canonical if resource is not None else "unmatched"
        seconds = time.perf_counter() - started
        metrics.observe_http(name, response.status, seconds)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if response.status >= 500:
            level = logging.WARNING
        if not log.isEnabledFor(level):  # most answers: debug, and logging is at info
            return response
        emit(
            log,
            level,
            "http_request",
            method=request.method,
            path=request.path,  # never the query: it may carry a token
            status=response.status,
            principal=request.get(PRINCIPAL, PUBLIC).name,
            peer=request.remote,
            duration_ms=round(seconds * 1000, 3),
            bytes=response.content_length,
        )
        return response

    @web.middleware
    async def _authenticated(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        access: Access | None = getattr(request.match_info.handler, "playlog_access", None)
        if request.match_info.http_exception is not None:
            raise request.match_info.http_exception  # no such route: answered by _observed
        if access is None:
            raise HttpError(
                403, "PERMISSION_DENIED", f"{request.path} has no access rule; nobody may call it"
            )
        principal = self._principal(request, access)
        if access.write:
            self._check_origin(request)
        request[PRINCIPAL] = principal
        # A long answer (the console's event stream) asks again who is calling
        # when the auth file changed, as a WatchWindow stream does.
        reauthenticate: Callable[[], Principal] = functools.partial(self._principal, request, access)
        request[REAUTHENTICATE] = reauthenticate
        current_principal.set(principal)
        return await handler(request)

    def _principal(self, request: web.Request, access: Access) -> Principal:
        credentials = self.context.credentials
        if access.role is None or (access.opened_by and getattr(self.context.settings, access.opened_by)):
            return PUBLIC
        if credentials is None:
            return LOCAL_PRINCIPAL
        credentials.refresh()
        if access.session and "Authorization" not in request.headers and sessions.COOKIE in request.cookies:
            return self._session_principal(request, access, credentials)
        token = self._token(request, access)
        principal = credentials.by_token(token)
        if principal is None:
            self._refused(
                "unauthenticated",
                "",
                request,
                reason="unknown token",
                token_sha256_prefix=hash_token(token)[:12],
            )
            raise HttpError(
                401,
                "UNAUTHENTICATED",
                "the token is not recognized (wrong or revoked); create one with `playlog token` and add "
                "its line to the server's auth file",
                headers={"WWW-Authenticate": 'Bearer realm="playlog"'},
            )
        return self._allowed(request, access, principal)

    def _allowed(self, request: web.Request, access: Access, principal: Principal) -> Principal:
        assert access.role is not None
        if not principal.has(access.role):
            roles = ", ".join(sorted(r.name.lower() for r in principal.roles)) or "none"
            needed = access.role.name.lower()
            self._refused(
                "permission_denied", principal.name, request, required_role=needed, principal_roles=roles
            )
            raise HttpError(
                403,
                "PERMISSION_DENIED",
                f"principal {principal.name!r} (roles: {roles}) may not read {request.path}: it needs the "
                f"{needed} role",
            )
        return principal

    def _session_principal(self, request: web.Request, access: Access, credentials: Credentials) -> Principal:
        signer = self.context.signer
        now = sessions.wall_ms()
        found = signer.verify(request.cookies[sessions.COOKIE], now) if signer is not None else None
        principal = sessions.current(found, credentials) if found is not None else None
        if principal is None:
            reason = "expired or forged session" if found is None else "session of a revoked principal"
            self._refused("unauthenticated", found.principal if found else "", request, reason=reason)
            raise HttpError(401, "UNAUTHENTICATED", f"{reason}: sign in again with a token")
        request[VIA_SESSION] = True
        return self._allowed(request, access, principal)

    def _check_origin(self, request: web.Request) -> None:
        """A write's Origin, when a browser sends one (it always does for a
        POST), must be this server's own; a write riding on the session
        cookie must carry it. A script with a bearer header may omit it."""
        origin = request.headers.get("Origin")
        own = f"{request.scheme}://{request.host}"
        if origin is None and not request.get(VIA_SESSION):
            return
        if origin != own:
            self._refused("permission_denied", request.get(PRINCIPAL, PUBLIC).name, request,
                          reason="cross-origin write", origin=str(origin)[:200])  # fmt: skip
            raise HttpError(
                403,
                "PERMISSION_DENIED",
                f"Origin: a write must come from this server's own page ({own}), "
                f"got {quote(str(origin)[:200])}",
                [{"field": "Origin", "description": f"must be {own}"}],
            )

    def _token(self, request: web.Request, access: Access) -> str:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            self._refused("unauthenticated", "", request, reason="malformed authorization")
            raise HttpError(401, "UNAUTHENTICATED", "the Authorization header must be 'Bearer <token>'",
                            headers={"WWW-Authenticate": 'Bearer realm="playlog"'})  # fmt: skip
        tokens = request.query.getall("token", [])
        if access.token_in_query and len(tokens) == 1 and tokens[0]:
            return tokens[0]
        self._refused("unauthenticated", "", request, reason="no credentials")
        where = "an 'Authorization: Bearer <token>' header" + (
            " or ?token=<token>" if access.token_in_query else ""
        )
        raise HttpError(401, "UNAUTHENTICATED", f"no credentials: send {where}",
                        headers={"WWW-Authenticate": 'Bearer realm="playlog"'})  # fmt: skip

    def _refused(self, event: str, principal: str, request: web.Request, **extra: Any) -> None:
        metrics.AUTH_REFUSALS.labels(event).inc()
        emit(auth_log, logging.WARNING, event, principal=principal, route=request.path, peer=request.remote,
             transport="http", **extra)  # fmt: skip

    # -- life -------------------------------------------------------------------------------

    async def start(self, listen: str, ssl_context: ssl.SSLContext | None, grace_s: float) -> int:
        host, _, port = listen.rpartition(":")
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=grace_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port), ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish (within the grace
        period), closes idle keep-alive connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@dataclass
class Rendered:
    """A body made once and served to every request for the same content."""

    body: bytes
    etag: str  # quoted, strong: from the content itself
    last_modified: float  # seconds since the epoch: when this process first served this content
    headers: dict[str, str] = field(default_factory=dict)
    gzipped: bytes | None = None
