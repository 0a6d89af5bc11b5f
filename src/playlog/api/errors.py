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
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from playlog.api import Context
from playlog.app.service import DeadlineExceeded, UnknownChannel
from playlog.clock import ClockNotAdjustable, TimeMovesForwardOnly
from playlog.domain.rejection import FieldViolation, MalformedRequest, Rejection
from playlog.domain.schedule_days import OperatorRoleRequired
from playlog.events import emit
from playlog.store.base import StoreError

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
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=code, domain="playlog.v1"))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message=f"{code}: {rejection.detail}", details=[detail])
    )
    return status


def invalid_argument_status(violations: list[FieldViolation]) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.rule)
                for v in violations
            ]
        )
    )
    message = "; ".join(f"{v.field}: {v.rule}" for v in violations)
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    )
    return status


async def abort_for(exc: BaseException, context: Context, method: str) -> None:
    """Aborts the call with the status `exc` stands for (never returns)."""
    if isinstance(exc, MalformedRequest):
        await context.abort_with_status(invalid_argument_status(exc.violations))
    if isinstance(exc, WriteRefused):
        await context.abort_with_status(refused_status(exc.rejection))
    if isinstance(exc, OperatorRoleRequired):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, UnknownChannel):
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"channel {exc.args[0]!r} is not declared; declare it with ChannelService.DeclareChannel",
        )
    if isinstance(exc, DeadlineExceeded):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{exc}; nothing was changed")
    if isinstance(exc, NotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, ClockNotAdjustable | TimeMovesForwardOnly):
        code = (
            grpc.StatusCode.FAILED_PRECONDITION
            if isinstance(exc, ClockNotAdjustable)
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        await context.abort(code, str(exc))
    if isinstance(exc, StoreError):
        emit(log, logging.ERROR, "store_failure", rpc=method, error=str(exc))
        await context.abort(grpc.StatusCode.INTERNAL, f"storage failure: {exc}")
    emit(log, logging.ERROR, "internal_error", exc_info=exc, rpc=method, error=repr(exc))
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
