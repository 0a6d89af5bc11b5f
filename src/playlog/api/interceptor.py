"""The one server interceptor every call passes through, before any servicer
code runs: it authenticates the caller, checks the role the RPC needs (from
auth.REQUIRED_ROLE), makes the principal available to the servicer, maps
failures to statuses (errors.abort_for) and counts the call in the metrics.

Every handler kind is wrapped (deny by default): a method of playlog.v1 that
is missing from the role table is refused, never let through. Calls whose
deadline has already passed when they reach the servicer are answered with
DEADLINE_EXCEEDED without running it; a call cancelled by its deadline while
running is cancelled (the client sees DEADLINE_EXCEEDED) and counted as such.
Server-streaming calls re-check their caller whenever the auth file is
reloaded, so a revoked principal's WatchWindow ends at its next event.

Hostile input stops here too: a request body that does not parse as its
message type is INVALID_ARGUMENT (not grpc's UNKNOWN with a traceback), in a
unary request and in any message of a request stream (reflection), and
every number of every playlog.v1 request is range-checked (api.limits) right
after authentication.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError, Message

from playlog import metrics
from playlog.api import limits
from playlog.api.errors import abort_for
from playlog.app.service import call_deadline
from playlog.auth import (
    LOCAL_PRINCIPAL,
    Credentials,
    Principal,
    bearer_token,
    current_principal,
    hash_token,
    reauthenticating_guard,
    required_role,
    stream_guard,
)
from playlog.domain.rejection import MalformedRequest
from playlog.events import emit, log_malformed, log_unreadable_request

log = logging.getLogger("playlog.auth")

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
StreamBehavior = Callable[..., AsyncIterator[Any]]

# The caller of an open method (health probes), which needs no credentials.
ANONYMOUS = Principal("anonymous", frozenset())
# The methods whose requests api.limits checks.
CHECKED_PREFIX = "/playlog.v1."


class Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


class Unreadable:
    """What a request body that is not a valid message deserializes to, so the
    call is answered INVALID_ARGUMENT by the wrapped handler instead of failing
    inside grpc (UNKNOWN, with an error-level traceback)."""

    __slots__ = ("error", "message_type")

    def __init__(self, message_type: str, error: str) -> None:
        self.message_type = message_type
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    message_type = descriptor.full_name if descriptor is not None else "request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Unreadable(message_type, str(exc))

    return deserialize


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, credentials: Credentials | None) -> None:
        # None: no auth configured; every call is the local principal.
        self._credentials = credentials

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=_accepting_bytes(handler.response_serializer),
            )
        if handler.unary_stream is not None:
            behavior = handler.unary_stream
            # A stream written with context.write (WatchWindow) is a coroutine:
            # wrapped once, with no generator per event.
            wrapper = (
                self._wrap_unary(method, behavior, guarded_stream=True)
                if inspect.iscoroutinefunction(behavior)
                else self._wrap_unary_stream(method, cast(StreamBehavior, behavior))
            )
            return grpc.unary_stream_rpc_method_handler(
                wrapper,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=_accepting_bytes(handler.response_serializer),
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary, streaming_request=True),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_unary_stream(
                    method, cast(StreamBehavior, handler.stream_stream), streaming_request=True
                ),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    # -- who is calling, and may they ---------------------------------------------

    def authenticate(self, method: str, request: object, context: Context) -> Principal:
        """The caller, if it may make this call; Refusal otherwise (logged)."""
        try:
            role = required_role(method, request)
        except KeyError:
            principal = self._identify(method, context)
            self._log_refusal("permission_denied", principal.name, method, context, reason="unlisted rpc")
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} has no entry in the server's role table; nobody may call it",
            ) from None
        if role is None:
            return ANONYMOUS
        principal = self._identify(method, context)
        if not principal.has(role):
            roles = ", ".join(sorted(r.name.lower() for r in principal.roles)) or "none"
            override = bool(getattr(request, "operator_override", False))
            why = " with operator_override = true" if override else ""
            self._log_refusal(
                "permission_denied",
                principal.name,
                method,
                context,
                required_role=role.name.lower(),
                principal_roles=roles,
                operator_override=str(override).lower(),
            )
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"principal {principal.name!r} (roles: {roles}) may not call {method}{why}: "
                f"it needs the {role.name.lower()} role; nothing was changed",
            )
        return principal

    def _identify(self, method: str, context: Context) -> Principal:
        credentials = self._credentials
        if credentials is None:
            return LOCAL_PRINCIPAL
        credentials.refresh()
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        token = bearer_token(metadata)
        if token is not None:
            # A token, when sent, decides who the caller is.
            if not token:
                self._log_refusal("unauthenticated", "", method, context, reason="malformed authorization")
                raise Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the authorization metadata must be 'Bearer <token>'",
                )
            principal = credentials.by_token(token)
            if principal is None:
                self._log_refusal(
                    "unauthenticated",
                    "",
                    method,
                    context,
                    reason="unknown token",
                    token_sha256_prefix=hash_token(token)[:12],
                )
                raise Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the bearer token is not recognized (wrong or revoked); "
                    "create one with `playlog token` and add its line to the server's auth file",
                )
            return principal
        subject = _client_subject(context)
        if subject:
            principal = credentials.by_subject(subject)
            if principal is None:
                self._log_refusal(
                    "unauthenticated", "", method, context, reason="unknown certificate", cert_subject=subject
                )
                raise Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the client certificate subject '{subject}' is not a cert_subject of the auth file "
                    "(or was revoked), and no bearer token was sent",
                )
            return principal
        self._log_refusal("unauthenticated", "", method, context, reason="no credentials")
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "no credentials: send metadata 'authorization: Bearer <token>' "
            "(or a client certificate known to the server)",
        )

    def _log_refusal(
        self,
        event: str,
        principal: str,
        method: str,
        context: Context,
        **extra: Any,
    ) -> None:
        metrics.AUTH_REFUSALS.labels(event).inc()
        emit(
            log,
            logging.WARNING,
            event,
            principal=principal,
            rpc=method,
            peer=context.peer(),
            **extra,
        )

    def _admit(self, method: str, request: object, context: Context) -> None:
        """Everything that happens before the servicer runs."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Refusal(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call started")
        # Writes check it again once they hold the store's write lock.
        call_deadline.set(None if remaining is None else time.monotonic() + remaining)
        principal = self.authenticate(method, request, context)
        current_principal.set(principal)
        if isinstance(request, Unreadable):
            raise _unreadable(method, request, principal)
        if isinstance(request, Message) and method.startswith(CHECKED_PREFIX):
            try:
                limits.check(request)
            except MalformedRequest as exc:
                log_malformed(
                    _rpc_name(method),
                    str(getattr(request, "channel_id", "")),
                    exc,
                    bool(getattr(request, "operator_override", False)),
                    principal.name,
                )
                raise

    def _guard(self, method: str, request: object, context: Context) -> Callable[[], None] | None:
        """For a long stream: call before each event to re-authenticate the
        caller after an auth file reload (Refusal if it may no longer make the
        call); None without auth."""
        return reauthenticating_guard(
            self._credentials, lambda: current_principal.set(self.authenticate(method, request, context))
        )

    # -- wrappers -------------------------------------------------------------------

    def _wrap_unary(
        self,
        method: str,
        behavior: Callable[..., Awaitable[Any]],
        *,
        streaming_request: bool = False,
        guarded_stream: bool = False,
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: object, context: Context) -> Any:
            started = time.perf_counter()
            status = "OK"
            try:
                self._admit(method, None if streaming_request else request, context)
                if guarded_stream:
                    stream_guard.set(self._guard(method, request, context))
                return await behavior(_readable(method, request) if streaming_request else request, context)
            except Refusal as refusal:
                status = refusal.code.name
                await context.abort(refusal.code, refusal.message)
            except grpc.aio.AbortError:
                status = _code_name(context)
                raise
            except asyncio.CancelledError:
                status = _cancelled_status(context)
                raise
            except Exception as exc:
                status = "ERROR"
                try:
                    await abort_for(exc, context, method)
                except grpc.aio.AbortError:
                    status = _code_name(context)
                    raise
            finally:
                metrics.observe_call(method, status, time.perf_counter() - started)

        return wrapped

    def _wrap_unary_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]], *, streaming_request: bool = False
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: object, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            status = "OK"
            checked = None if streaming_request else request
            stream: AsyncIterator[Any] | None = None
            try:
                self._admit(method, checked, context)
                guard = self._guard(method, checked, context)
                stream = behavior(_readable(method, request) if streaming_request else request, context)
                async for item in stream:
                    if guard is not None:
                        guard()
                    yield item
            except Refusal as refusal:
                status = refusal.code.name
                await context.abort(refusal.code, refusal.message)
            except grpc.aio.AbortError:
                status = _code_name(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                status = _cancelled_status(context)
                raise
            except Exception as exc:
                status = "ERROR"
                try:
                    await abort_for(exc, context, method)
                except grpc.aio.AbortError:
                    status = _code_name(context)
                    raise
            finally:
                metrics.observe_call(method, status, time.perf_counter() - started)
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # the servicer's cleanup runs now, not at garbage collection

        return wrapped


def _unreadable(method: str, request: Unreadable, principal: Principal) -> Refusal:
    message = f"request body is not a valid {request.message_type}: {request.error}"
    log_unreadable_request(_rpc_name(method), request.message_type, message, principal.name)
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, message)


async def _readable(method: str, requests: object) -> AsyncIterator[Any]:
    """A request stream as the servicer reads it, ended by a Refusal
    (INVALID_ARGUMENT, through the servicer and out of the wrapper) at the
    first message that did not parse."""
    async for request in cast(AsyncIterator[Any], requests):
        if isinstance(request, Unreadable):
            raise _unreadable(method, request, current_principal.get())
        yield request


def _rpc_name(method: str) -> str:
    """`/playlog.v1.ClockService/SetTime` -> `SetTime`, as violation events name RPCs."""
    return method.rsplit("/", 1)[-1]


def _code_name(context: Context) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpc versions report the numeric code
        for known in grpc.StatusCode:
            if known.value[0] == code:
                return known.name
    return "UNKNOWN"


def _accepting_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A handler may answer a message it serialized already, as bytes: reads
    send stored entries as they are, and WatchWindow serializes each publish
    once for all its subscribers."""
    if serializer is None:
        return None

    def serialize(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serializer(message)

    return serialize


def _cancelled_status(context: Context) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


def _client_subject(context: Context) -> str:
    """The verified client certificate's subject, RFC 2253 form, when mutual TLS is on."""
    for subject in context.auth_context().get("x509_subject", ()):
        return bytes(subject).decode()
    return ""
