"""Structured (JSON line) logging, and the violation event of SPEC section 8.

Every rejected mutation becomes one `mutation_rejected` event carrying its
invariant tag and the seeds' evidence fields.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from playlog.domain.model import ChannelMetadata, ErrorCode
from playlog.domain.rejection import MALFORMED_TAG, MalformedRequest, Rejection

violations_log = logging.getLogger("playlog.violations")
log = logging.getLogger("playlog")

# Who is to blame for a refused attempt, per the seeds' failure semantics.
_FAULT_CLASS = {
    ErrorCode.OVERRIDE_RECORD_PERSIST_FAILED: "runtime",
}


def emit(
    logger: logging.Logger, level: int, event: str, exc_info: BaseException | None = None, **fields: Any
) -> None:
    """Logs one structured event; handlers print it as one JSON line."""
    logger.log(level, event, exc_info=exc_info, extra={"event": event, "fields": fields})


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts_utc_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_rejection(
    rpc: str,
    channel_id: str,
    rejection: Rejection,
    operator_override: bool,
    mutation_source: str,
    now_utc_ms: int,
) -> None:
    ev = rejection.evidence
    fields: dict[str, Any] = {
        "invariant": rejection.invariant_tag,
        "error_code": f"ERROR_CODE_{rejection.code.value}",
        "rpc": rpc,
        "channel_id": channel_id,
        "mutated_block_id": ev.mutated_block_id,
        "block_start_utc_ms": ev.block_start_utc_ms,
        "lock_boundary_T": ev.lock_boundary_T if ev.lock_boundary_T is not None else now_utc_ms,
        "locked_until_utc_ms": ev.locked_until_utc_ms,
        "operator_override": operator_override,
        "mutation_source": mutation_source,
        "window_status": ev.window_status.value if ev.window_status else None,
        "fault_class": _FAULT_CLASS.get(rejection.code, "operator" if operator_override else "planning"),
        "detail": rejection.detail,
    }
    if ev.range_start_utc_ms is not None:
        fields["range_start_utc_ms"] = ev.range_start_utc_ms
        fields["range_end_utc_ms"] = ev.range_end_utc_ms
    if ev.programming_day_date:
        fields["programming_day_date"] = ev.programming_day_date
    fields.update(ev.extra)
    emit(violations_log, logging.WARNING, "mutation_rejected", **fields)


# A malformed request's event names its first violations, each clipped, and
# counts the rest: a request with 10,000 bad entries is one line of a few
# kilobytes, not megabytes (the caller's answer is bounded the same way).
MAX_LOGGED_VIOLATIONS = 20
MAX_LOGGED_CHARS = 200


def clip(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked with "…" (log lines
    and error answers alike)."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def log_malformed(
    rpc: str,
    channel_id: str,
    error: MalformedRequest,
    operator_override: bool,
    mutation_source: str,
) -> None:
    shown = [{"field": clip(v.field), "rule": clip(v.rule)} for v in error.violations[:MAX_LOGGED_VIOLATIONS]]
    more = len(error.violations) - len(shown)
    detail = "; ".join(f"{v['field']}: {v['rule']}" for v in shown) + (f"; … and {more} more" if more else "")
    _log_refused_input(
        rpc,
        mutation_source,
        detail,
        operator_override,
        channel_id=clip(channel_id),
        field_violations=shown,
        field_violations_total=len(error.violations),
    )


def log_unreadable_request(rpc: str, message_type: str, detail: str, mutation_source: str) -> None:
    """A request body that does not parse as its message type: a refusal like
    any malformed request (a warning, no traceback)."""
    _log_refused_input(rpc, mutation_source, clip(detail), False, message_type=message_type)


def _log_refused_input(
    rpc: str, mutation_source: str, detail: str, operator_override: bool, **fields: Any
) -> None:
    """Malformed input, refused before any rule ran: one violation event."""
    emit(
        violations_log,
        logging.WARNING,
        "mutation_rejected",
        invariant=MALFORMED_TAG,
        error_code="INVALID_ARGUMENT",
        rpc=rpc,
        operator_override=operator_override,
        mutation_source=mutation_source,
        lock_boundary_T=None,
        fault_class="operator" if operator_override else "planning",
        detail=detail,
        **fields,
    )


def log_metadata_change(
    channel_id: str, principal: str, before: ChannelMetadata, after: ChannelMetadata, created: bool = False
) -> None:
    """A channel's guide metadata changed: no override record (it changes no
    air), but one event saying who changed what."""
    changed = {
        name: {"from": getattr(before, name), "to": getattr(after, name)}
        for name in ("display_name", "guide_number", "icon_url", "stream_url", "guide_id")
        if getattr(before, name) != getattr(after, name)
    }
    emit(
        log.getChild("channels"),
        logging.INFO,
        "channel_metadata_changed",
        channel_id=channel_id,
        principal=principal,
        created=created,
        changed=changed,
    )
