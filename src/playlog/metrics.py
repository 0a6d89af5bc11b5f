"""Prometheus metrics, served on an optional HTTP listener."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("playlog_requests_total", "gRPC requests by method and status", ["method", "status"])
REQUEST_SECONDS = Histogram("playlog_request_seconds", "gRPC request latency", ["method"])
PUBLISHES = Counter("playlog_publishes_total", "Committed publishes", ["rpc", "override"])
REJECTIONS = Counter("playlog_rejections_total", "Refused mutations by error code", ["rpc", "error_code"])
OVERRIDES = Counter("playlog_overrides_total", "Override records written", ["layer"])
WATCH_SUBSCRIBERS = Gauge("playlog_watch_subscribers", "Open WatchWindow streams")
WATCH_RESETS = Counter("playlog_watch_resets_total", "Reset snapshots sent to subscribers", ["reason"])
STORE_COMMIT_SECONDS = Histogram(
    "playlog_store_commit_seconds", "Store write transaction latency", ["operation"]
)
AUTH_REFUSALS = Counter("playlog_auth_refusals_total", "Calls refused by authentication or role", ["kind"])


def observe_call(method: str, status: str, seconds: float) -> None:
    REQUESTS.labels(method, status).inc()
    REQUEST_SECONDS.labels(method).observe(seconds)
