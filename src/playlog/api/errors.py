"""The one place that maps failures to gRPC statuses.

Domain rejections are not errors (they are results with ok = false); what
reaches here is malformed input (INVALID_ARGUMENT, with a BadRequest detail
naming every field and rule), a missing thing (NOT_FOUND), a clock that cannot
move (FAILED_PRECONDITION) or a storage failure (INTERNAL).
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from playlog.api import Context
from playlog.app.service import DeadlineExceeded, UnknownChannel
from playlog.clock import ClockNotAdjustable, TimeMovesForwardOnly
from playlog.domain.paging import WindowChanged
from playlog.domain.rejection import FieldViolation, MalformedRequest, Rejection
from playlog.domain.schedule_days import OperatorRoleRequired
from playlog.domain.validation import quote
from playlog.events import clip, emit
from playlog.store.base import StoreError, StoreUnavailable

log = logging.getLogger("playlog.api")


class NotFound(LookupError):
    pass


class WriteRefused(Exception):
    """A domain refusal of an RPC whose response has no result fields."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


def refused_status(rejection: Rejection) -> grpc.Status:
    """INTERNAL (the store failed; nothing changed) with the ErrorCode as an
    ErrorInfo reason (AIP-193), so a client can tell it apart."""
    code = f"ERROR_CODE_{rejection.code.value}"
    info = error_details_pb2.ErrorInfo(reason=code, domain="playlog.v1")
    return _status(code_pb2.INTERNAL, f"{code}: {rejection.detail}", info)


def _status(code: int, message: str, detail: Message) -> grpc.Status:
    """A status with one google.rpc detail (AIP-193); the message cut to fit."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code, message=clip_message(message), details=[packed])
    )
    return status


# A status travels in the response trailers, whose size is limited (grpc's
# default soft limit is 8 KiB; beyond it the client sees RESOURCE_EXHAUSTED
# instead of the answer). The message goes in twice (grpc-message, percent-
# encoded, and inside grpc-status-details-bin, base64), the BadRequest once.
MAX_FIELD_VIOLATIONS = 20
MAX_MESSAGE_BYTES = 1500  # as sent: bytes outside printable ASCII count thrice
MAX_VIOLATION_BYTES = 2500  # fields and rules of the BadRequest detail
MAX_RULE_CHARS = 300


def invalid_argument_status(violations: list[FieldViolation]) -> grpc.Status:
    """INVALID_ARGUMENT with a BadRequest naming the first violations (at most
    MAX_FIELD_VIOLATIONS, and one "… and N more" entry for the rest), sized to
    fit the trailers whatever the input."""
    shown: list[tuple[str, str]] = []
    used = 0
    for v in violations:
        field, rule = clip(v.field, MAX_RULE_CHARS), clip(v.rule, MAX_RULE_CHARS)
        size = len(field.encode()) + len(rule.encode()) + 8
        if len(shown) == MAX_FIELD_VIOLATIONS or used + size > MAX_VIOLATION_BYTES:
            break
        shown.append((field, rule))
        used += size
    if len(shown) < len(violations):
        shown.append(("", f"… and {len(violations) - len(shown)} more"))
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=rule)
            for field, rule in shown
        ]
    )
    message = "; ".join(f"{field}: {rule}" if field else rule for field, rule in shown)
    return _status(code_pb2.INVALID_ARGUMENT, message, bad_request)


def clip_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message` cut so that it takes at most `limit` bytes as grpc sends it
    (grpc-message percent-encodes every byte outside printable ASCII, and %)."""
    sizes = [
        1 if " " <= ch <= "~" and ch != "%" else 3 * len(ch.encode("utf-8", "replace")) for ch in message
    ]
    if sum(sizes) <= limit:
        return message
    size, room = 0, limit - 9  # the "…" that marks the cut takes 9
    for i, ch_size in enumerate(sizes):
        size += ch_size
        if size > room:
            return message[:i] + "…"
    return message


async def abort_for(exc: BaseException, context: Context, method: str) -> None:
    """Aborts the call with the status `exc` stands for (never returns)."""
    if isinstance(exc, MalformedRequest):
        await context.abort_with_status(invalid_argument_status(exc.violations))
    if isinstance(exc, WriteRefused):
        await context.abort_with_status(refused_status(exc.rejection))
    if isinstance(exc, OperatorRoleRequired):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, clip_message(str(exc)))
    if isinstance(exc, UnknownChannel):
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"channel {quote(str(exc.args[0]))} is not declared; "
            "declare it with ChannelService.DeclareChannel",
        )
    if isinstance(exc, WindowChanged):
        await context.abort(grpc.StatusCode.ABORTED, clip_message(str(exc)))
    if isinstance(exc, DeadlineExceeded):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{exc}; nothing was changed")
    if isinstance(exc, NotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, clip_message(str(exc)))
    if isinstance(exc, ClockNotAdjustable | TimeMovesForwardOnly):
        code = (
            grpc.StatusCode.FAILED_PRECONDITION
            if isinstance(exc, ClockNotAdjustable)
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        await context.abort(code, clip_message(str(exc)))
    if isinstance(exc, StoreUnavailable):
        emit(log, logging.WARNING, "store_unavailable", rpc=method, error=str(exc))
        await context.abort(grpc.StatusCode.UNAVAILABLE, clip_message(f"database unavailable: {exc}"))
    if isinstance(exc, StoreError):
        emit(log, logging.ERROR, "store_failure", rpc=method, error=str(exc))
        await context.abort(grpc.StatusCode.INTERNAL, clip_message(f"storage failure: {exc}"))
    if type(exc) is NotImplementedError:
        # What a generated servicer base class raises for a method nobody
        # implemented: grpc itself would answer UNIMPLEMENTED.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
    emit(log, logging.ERROR, "internal_error", exc_info=exc, rpc=method, error=repr(exc))
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
