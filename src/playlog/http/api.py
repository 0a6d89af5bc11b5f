"""The JSON API of the console (SPEC section 15): /api/v1/..., protobuf's JSON
mapping of the very messages the gRPC API takes and answers.

Each route builds the gRPC request message (from the path and query, or by
parsing the JSON body into it) and hands it to the same servicer method a
gRPC call reaches, after the same admission as the gRPC interceptor: the role
table of auth.REQUIRED_ROLE (console writes need the operator role, as SPEC
15 keeps control apart from viewing), the number ranges of api.limits, the
same malformed-request log. So a request means the same thing, and is refused
for the same reason, on either edge; nothing here decides about air.

Failures answer JSON `{code, message, details}` with the HTTP status of the
gRPC code; a domain refusal of a write (PublishResult ok = false; status OK
on gRPC) is a 409 carrying its ERROR_CODE_* and reason, and the result.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from playlog.api import limits
from playlog.api.errors import abort_for
from playlog.auth import LOCAL_PRINCIPAL, Principal, Role, required_role
from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import quote
from playlog.events import emit, log_malformed
from playlog.http.edge import PRINCIPAL, Access, EdgeContext, HttpError, bad_parameter, route
from playlog.http.session import COOKIE, current, wall_ms
from playlog.v1 import audit_service_pb2 as audit_pb
from playlog.v1 import channel_service_pb2 as channel_pb
from playlog.v1 import clock_service_pb2 as clock_pb
from playlog.v1 import engine_service_pb2 as engine_pb
from playlog.v1 import execution_window_service_pb2 as ew_pb
from playlog.v1 import guide_service_pb2 as guide_pb
from playlog.v1 import schedule_day_service_pb2 as day_pb
from playlog.v1 import types_pb2 as pb

log = logging.getLogger("playlog.http")

M = TypeVar("M", bound=Message)
_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")
_V1 = "/playlog.v1."
# Every API route: a reader at least, from a bearer header or the session
# cookie (the edge checks it); then `call` checks the gRPC method's own role.
CALLER = Access(Role.READER, session=True)
# The window a rundown shows when the page does not say: the recent past
# (as-run beside plan) and the hours ahead.
DEFAULT_BEFORE_MS = 2 * 3600 * 1000
DEFAULT_AFTER_MS = 12 * 3600 * 1000

# The HTTP status of each gRPC code (google.api's mapping).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def status_of(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def to_json(message: Message) -> dict[str, Any]:
    """protobuf's JSON mapping, with the proto field names (`*_utc_ms`) and
    every field, defaults included, so a page never guesses a missing zero."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class HttpCallContext:
    """What a servicer asks of its gRPC context, answered for an HTTP request:
    an abort becomes the HTTP error of its status code."""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise HttpError(status_of(code), code.name, details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        detail_list: list[dict[str, str]] = []
        for key, value in status.trailing_metadata or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                for packed in status_pb2.Status.FromString(value).details:
                    bad = error_details_pb2.BadRequest()
                    if packed.Unpack(bad):
                        detail_list += [{"field": v.field, "description": v.description}
                                        for v in bad.field_violations]  # fmt: skip
                    info = error_details_pb2.ErrorInfo()
                    if packed.Unpack(info):
                        detail_list.append({"reason": info.reason, "domain": info.domain})
        raise HttpError(status_of(status.code), status.code.name, status.details, detail_list)

    def peer(self) -> str:
        return f"http:{self._request.remote}"

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def call(
    request: web.Request,
    method: str,
    message: M,
    behavior: Callable[[M, Any], Awaitable[Any]],
    role: Role | None = None,
) -> Any:
    """One gRPC method, reached over HTTP: the interceptor's admission (role,
    ranges, the malformed-request log), then the servicer, then the one error
    mapping."""
    principal: Principal = request[PRINCIPAL]
    needed = role or required_role(f"{_V1}{method}", message)
    if needed is not None and not principal.has(needed):
        roles = ", ".join(sorted(r.name.lower() for r in principal.roles)) or "none"
        emit(logging.getLogger("playlog.auth"), logging.WARNING, "permission_denied",
             principal=principal.name, route=request.path, peer=request.remote, transport="http",
             required_role=needed.name.lower(), principal_roles=roles)  # fmt: skip
        raise HttpError(
            403,
            "PERMISSION_DENIED",
            f"principal {principal.name!r} (roles: {roles}) may not call {method}: it needs the "
            f"{needed.name.lower()} role",
        )
    rpc = method.rpartition("/")[2]
    try:
        limits.check(message)
    except MalformedRequest as exc:
        log_malformed(
            rpc,
            str(getattr(message, "channel_id", "")),
            exc,
            bool(getattr(message, "operator_override", False)),
            principal.name,
        )
        raise
    try:
        return await behavior(message, HttpCallContext(request))
    except (HttpError, MalformedRequest):
        raise
    except Exception as exc:  # the gRPC edge's one mapping, through HttpCallContext
        await abort_for(exc, HttpCallContext(request), rpc)  # type: ignore[arg-type]
        raise  # not reached: abort_for always aborts


# -- request parts ------------------------------------------------------------------------


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_parameter(name, f"give it once, got {len(values)} values")
    return values[0] if values else None


def parse_instant(name: str, text: str) -> int:
    """Epoch milliseconds, or ISO-8601 with a zone (`2026-12-02T18:00:00Z`)."""
    if text.isascii() and text.isdigit() and len(text) <= 16:
        return int(text)
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise bad_parameter(
            name, f"must be epoch milliseconds or ISO-8601 with a zone, got {quote(text[:60])}"
        ) from None
    if parsed.tzinfo is None:
        raise bad_parameter(name, f"an ISO-8601 time needs its zone (Z or +hh:mm), got {quote(text[:60])}")
    return round(parsed.timestamp() * 1000)


def time_range(request: web.Request, now: int, before_ms: int, after_ms: int) -> tuple[int, int]:
    given_from, given_to = _one(request, "from"), _one(request, "to")
    start = parse_instant("from", given_from) if given_from is not None else max(0, now - before_ms)
    end = parse_instant("to", given_to) if given_to is not None else now + after_ms
    return start, end


def _page(request: web.Request) -> tuple[int, str]:
    size = _one(request, "page_size")
    if size is not None and not (size.isascii() and size.isdigit() and len(size) <= 9):
        raise bad_parameter("page_size", f"must be a whole number, got {quote(size[:40])}")
    return int(size or 0), _one(request, "page_token") or ""


async def parse_body(request: web.Request, message: M, channel_id: str) -> M:
    """The JSON body parsed into `message` (unknown fields refused); the path's
    channel is the request's, and a body naming another is refused."""
    if request.content_type != "application/json":
        raise bad_parameter(
            "Content-Type", f"must be application/json, got {quote(request.content_type or 'none')}"
        )
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad_parameter("body", f"must be a JSON object in UTF-8 ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise bad_parameter(
            "body", f"must be a JSON object (a {message.DESCRIPTOR.name}), got {type(data).__name__}"
        )
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        # protobuf names the fields it was inside ("Failed to parse entries
        # field: Failed to parse segments field: ..."): the path, for the detail.
        path = ".".join(_PARSE_FIELD.findall(str(exc))) or "body"
        rule = f"is not a valid {message.DESCRIPTOR.name}: {str(exc)[:300]}"
        raise HttpError(
            400, "INVALID_ARGUMENT", f"{path}: {rule}", [{"field": path, "description": rule}]
        ) from None
    given = getattr(message, "channel_id", "")
    if given and given != channel_id:
        raise MalformedRequest(
            [FieldViolation("channel_id", f"is {quote(given)} but the path names {quote(channel_id)}")]
        )
    message.channel_id = channel_id  # type: ignore[attr-defined]
    return message


# -- routes -------------------------------------------------------------------------------


class ApiRoutes:
    def __init__(self, context: EdgeContext) -> None:
        self.context = context
        services = context.services
        assert services is not None, "the JSON API needs the servicers"
        self.s = services

    def _now(self) -> int:
        playlog = self.context.playlog
        with playlog.store.read() as r:
            return playlog.now_in(r)

    async def now(self) -> int:
        return await self.context.read(self._now)

    @route(CALLER)
    async def channels(self, request: web.Request) -> web.Response:
        answer = await call(request, "ChannelService/ListChannels", channel_pb.ListChannelsRequest(),
                            self.s.channels.ListChannels)  # fmt: skip
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def channel(self, request: web.Request) -> web.Response:
        message = channel_pb.GetChannelRequest(channel_id=request.match_info["id"])
        answer = await call(request, "ChannelService/GetChannel", message, self.s.channels.GetChannel)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def window(self, request: web.Request) -> web.Response:
        start, end = time_range(request, await self.now(), DEFAULT_BEFORE_MS, DEFAULT_AFTER_MS)
        size, token = _page(request)
        message = ew_pb.ReadWindowSnapshotRequest(
            channel_id=request.match_info["id"], start_utc_ms=start, end_utc_ms=end,
            page_size=size, page_token=token,
        )  # fmt: skip
        answer = await call(request, "ExecutionWindowService/ReadWindowSnapshot", message,
                            self.s.window.ReadWindowSnapshot)  # fmt: skip
        if isinstance(answer, bytes):  # the servicer answers the stored wire forms
            answer = pb.WindowSnapshot.FromString(answer)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def now_next(self, request: web.Request) -> web.Response:
        message = guide_pb.GetNowNextRequest(channel_ids=[request.match_info["id"]])
        answer = await call(request, "GuideService/GetNowNext", message, self.s.guide.GetNowNext)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def engines(self, request: web.Request) -> web.Response:
        message = engine_pb.ListEnginesRequest(channel_id=request.match_info["id"])
        answer = await call(request, "EngineService/ListEngines", message, self.s.engines.ListEngines)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def as_run(self, request: web.Request) -> web.Response:
        start, end = time_range(request, await self.now(), DEFAULT_BEFORE_MS, 0)
        size, token = _page(request)
        message = engine_pb.ListAsRunRequest(
            channel_id=request.match_info["id"], start_utc_ms=start, end_utc_ms=end,
            page_size=size, page_token=token,
        )  # fmt: skip
        answer = await call(request, "EngineService/ListAsRun", message, self.s.engines.ListAsRun)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def reconcile(self, request: web.Request) -> web.Response:
        start, end = time_range(request, await self.now(), DEFAULT_BEFORE_MS, 0)
        message = engine_pb.ReconcileAsRunRequest(
            channel_id=request.match_info["id"], start_utc_ms=start, end_utc_ms=end
        )
        answer = await call(request, "EngineService/ReconcileAsRun", message, self.s.engines.ReconcileAsRun)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def day(self, request: web.Request) -> web.Response:
        message = day_pb.GetScheduleDayRequest(
            channel_id=request.match_info["id"], programming_day_date=request.match_info["date"]
        )
        answer = await call(request, "ScheduleDayService/GetScheduleDay", message, self.s.days.GetScheduleDay)
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def records(self, request: web.Request) -> web.Response:
        size, token = _page(request)
        message = audit_pb.ListOverrideRecordsRequest(
            channel_id=_one(request, "channel") or "", page_size=size, page_token=token
        )
        answer = await call(request, "AuditService/ListOverrideRecords", message,
                            self.s.audit.ListOverrideRecords)  # fmt: skip
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def record(self, request: web.Request) -> web.Response:
        message = audit_pb.GetOverrideRecordRequest(id=request.match_info["record_id"])
        answer = await call(
            request, "AuditService/GetOverrideRecord", message, self.s.audit.GetOverrideRecord
        )
        return web.json_response(to_json(answer))

    @route(CALLER)
    async def clock(self, request: web.Request) -> web.Response:
        answer = await call(request, "ClockService/GetTime", clock_pb.GetTimeRequest(), self.s.clock.GetTime)
        return web.json_response(to_json(answer))

    # -- writes: operator only, Origin checked by the edge ---------------------------------

    async def _write(
        self, request: web.Request, method: str, message: Message, behavior: Any
    ) -> web.Response:
        answer: pb.PublishResult = await call(request, method, message, behavior, Role.OPERATOR)
        body = to_json(answer)
        if not answer.ok:
            code = pb.ErrorCode.Name(answer.error_code)
            return web.json_response(
                {"code": code, "message": answer.error_detail,
                 "details": [{"reason": code, "domain": "playlog.v1"}], "result": body},
                status=409,
            )  # fmt: skip
        return web.json_response(body)

    @route(Access(Role.OPERATOR, session=True, write=True))
    async def publish(self, request: web.Request) -> web.Response:
        message = await parse_body(request, ew_pb.PublishAtomicReplaceRequest(), request.match_info["id"])
        return await self._write(request, "ExecutionWindowService/PublishAtomicReplace", message,
                                 self.s.window.PublishAtomicReplace)  # fmt: skip

    @route(Access(Role.OPERATOR, session=True, write=True))
    async def replace(self, request: web.Request) -> web.Response:
        message = await parse_body(request, ew_pb.ReplaceEntryRequest(), request.match_info["id"])
        return await self._write(request, "ExecutionWindowService/ReplaceEntry", message,
                                 self.s.window.ReplaceEntry)  # fmt: skip


class SessionRoutes:
    """POST /api/v1/session: a token in, the cookie out; GET: who the page's
    caller is (the page shows operator actions only to the operator role);
    DELETE: sign out."""

    def __init__(self, context: EdgeContext) -> None:
        self.context = context

    def _who(self, principal: Principal | None, auth: bool) -> dict[str, Any]:
        if principal is None:
            return {"signed_in": False, "auth": auth, "principal": "", "roles": [], "operator": False}
        return {
            "signed_in": True,
            "auth": auth,
            "principal": principal.name,
            "roles": sorted(r.name.lower() for r in principal.roles),
            "operator": principal.has(Role.OPERATOR),
        }

    @route(Access(None, write=True))
    async def sign_in(self, request: web.Request) -> web.Response:
        credentials, signer = self.context.credentials, self.context.signer
        if credentials is None:  # auth off (loopback): the one local principal, no cookie needed
            return web.json_response(self._who(LOCAL_PRINCIPAL, False))
        body = await request.read()
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise bad_parameter("token", 'send {"token": "<token>"} as JSON (from `playlog token`)')
        credentials.refresh()
        principal = credentials.by_token(token)
        if principal is None or signer is None:
            emit(logging.getLogger("playlog.auth"), logging.WARNING, "unauthenticated", principal="",
                 route=request.path, peer=request.remote, transport="http",
                 reason="unknown token")  # fmt: skip
            raise HttpError(401, "UNAUTHENTICATED", "the token is not recognized (wrong or revoked)")
        value, issued = signer.issue(principal, wall_ms())
        response = web.json_response(self._who(principal, True))
        response.set_cookie(
            COOKIE, value, max_age=signer.ttl_ms // 1000, path="/", httponly=True,
            samesite="Strict", secure=self.context.tls,
        )  # fmt: skip
        emit(log, logging.INFO, "session_started", principal=principal.name, peer=request.remote,
             expires_utc_ms=issued.expires_utc_ms)  # fmt: skip
        return response

    @route(Access(None))
    async def who(self, request: web.Request) -> web.Response:
        credentials, signer = self.context.credentials, self.context.signer
        if credentials is None:
            return web.json_response(self._who(LOCAL_PRINCIPAL, False))
        found = None
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and signer is not None:
            credentials.refresh()
            session = signer.verify(cookie, wall_ms())
            found = current(session, credentials) if session is not None else None
        return web.json_response(self._who(found, True))

    @route(Access(None, write=True))
    async def sign_out(self, request: web.Request) -> web.Response:
        response = web.json_response(self._who(None, self.context.credentials is not None))
        response.del_cookie(COOKIE, path="/")
        return response


def register(app: web.Application, context: EdgeContext) -> None:
    routes = ApiRoutes(context)
    signing = SessionRoutes(context)
    app.router.add_post("/api/v1/session", signing.sign_in)
    app.router.add_get("/api/v1/session", signing.who)
    app.router.add_delete("/api/v1/session", signing.sign_out)
    add = app.router.add_get
    add("/api/v1/channels", routes.channels)
    add("/api/v1/channels/{id}", routes.channel)
    add("/api/v1/channels/{id}/window", routes.window)
    add("/api/v1/channels/{id}/now", routes.now_next)
    add("/api/v1/channels/{id}/engines", routes.engines)
    add("/api/v1/channels/{id}/as-run", routes.as_run)
    add("/api/v1/channels/{id}/reconcile", routes.reconcile)
    add("/api/v1/channels/{id}/days/{date}", routes.day)
    add("/api/v1/records", routes.records)
    add("/api/v1/records/{record_id}", routes.record)
    add("/api/v1/clock", routes.clock)
    app.router.add_post("/api/v1/channels/{id}/publish", routes.publish)
    app.router.add_post("/api/v1/channels/{id}/replace", routes.replace)
