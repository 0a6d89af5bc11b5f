"""The one server interceptor every call passes through, before any servicer
code runs: it authenticates the caller, checks the role the RPC needs (from
auth.REQUIRED_ROLE), makes the principal available to the servicer, maps
failures to statuses (errors.abort_for) and counts the call in the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from playlog import metrics
from playlog.api.errors import abort_for
from playlog.auth import (
    LOCAL_PRINCIPAL,
    Credentials,
    Principal,
    bearer_token,
    current_principal,
    required_role,
)
from playlog.events import emit

log = logging.getLogger("playlog.auth")


class Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, credentials: Credentials | None) -> None:
        # None: no auth configured; every call is the local principal.
        self._credentials = credentials

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[unreachable]
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_unary_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream_stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def authenticate(self, method: str, request: object, context: grpc.aio.ServicerContext) -> Principal:
        principal = self._identify(context)
        try:
            role = required_role(method, request)
        except KeyError:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method}") from None
        if role is not None and not principal.has(role):
            roles = ", ".join(sorted(r.name.lower() for r in principal.roles)) or "none"
            why = " (operator_override = true)" if getattr(request, "operator_override", False) else ""
            self._log_refusal("permission_denied", principal.name, method, context)
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"principal {principal.name!r} (roles: {roles}) may not call {method}{why}: "
                f"it needs the {role.name.lower()} role",
            )
        return principal

    def _identify(self, context: grpc.aio.ServicerContext) -> Principal:
        if self._credentials is None:
            return LOCAL_PRINCIPAL
        subject = _client_subject(context)
        if subject:
            principal = self._credentials.by_subject(subject)
            if principal is not None:
                return principal
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        token = bearer_token(metadata)
        if token is None:
            self._log_refusal("unauthenticated", "", "", context, reason="no credentials")
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "no credentials: send metadata 'authorization: Bearer <token>' "
                "(or a client certificate known to the server)",
            )
        principal = self._credentials.by_token(token) if token else None
        if principal is None:
            self._log_refusal("unauthenticated", "", "", context, reason="unknown token")
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "the bearer token is not recognized (wrong or revoked); "
                "the authorization metadata must be 'Bearer <token>'",
            )
        return principal

    def _log_refusal(
        self,
        event: str,
        principal: str,
        method: str,
        context: grpc.aio.ServicerContext,
        **extra: str,
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

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: object, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            status = "OK"
            try:
                principal = self.authenticate(method, request, context)
                current_principal.set(principal)
                return await behavior(request, context)
            except Refusal as refusal:
                status = refusal.code.name
                await context.abort(refusal.code, refusal.message)
            except grpc.aio.AbortError:
                status = _code_name(context)
                raise
            except Exception as exc:
                status = "ERROR"
                await abort_for(exc, context, method)
            finally:
                metrics.observe_call(method, status, time.perf_counter() - started)

        return wrapped

    def _wrap_unary_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            status = "OK"
            try:
                principal = self.authenticate(method, request, context)
                current_principal.set(principal)
                async for item in behavior(request, context):
                    yield item
            except Refusal as refusal:
                status = refusal.code.name
                await context.abort(refusal.code, refusal.message)
            except grpc.aio.AbortError:
                status = _code_name(context)
                raise
            except Exception as exc:
                status = "ERROR"
                await abort_for(exc, context, method)
            finally:
                metrics.observe_call(method, status, time.perf_counter() - started)

        return wrapped

    def _wrap_stream_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                current_principal.set(self.authenticate(method, None, context))
            except Refusal as refusal:
                await context.abort(refusal.code, refusal.message)
            async for item in behavior(requests, context):
                yield item

        return wrapped


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "ABORTED_CALL"


def _client_subject(context: grpc.aio.ServicerContext) -> str:
    """The client certificate's subject (RFC 2253 form), when mutual TLS is on."""
    subject = context.auth_context().get("x509_subject")
    if subject:
        return bytes(subject[0]).decode()
    return ""
