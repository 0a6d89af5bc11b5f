"""Prometheus metrics, served on an optional HTTP listener (`metrics_listen`,
path /metrics). Metric names:

- playlog_requests_total{method, status}: every gRPC call by RPC and final status
  (OK, a status code name, or ERROR for an unexpected failure), and
  playlog_request_seconds{method};
- playlog_publishes_total{rpc, override} and playlog_rejections_total{rpc, error_code};
- playlog_overrides_total{layer}: override records written;
- playlog_watch_subscribers: open WatchWindow streams, and playlog_watch_resets_total{reason};
- playlog_store_commit_seconds{operation}: store write transaction latency;
- playlog_auth_refusals_total{kind}: unauthenticated / permission_denied calls;
- playlog_clock_step_backs_total: times the host clock was found behind the
  latest instant the server acted on, and playlog_clock_held_ms: how far behind
  it is now (0 when the host clock leads), while "now" is held still;
- playlog_channel_generation{channel_id}: each channel's latest committed
  generation (0 before its first publish), set at start-up and after each
  committed publish;
- playlog_build_info{version, python, grpcio}: always 1, its labels say what runs;
- playlog_as_run_events_total{status}: as-run events stored (retries not counted),
  playlog_nacks_total: NACKs stored, playlog_as_run_discrepancies_total{kind}:
  discrepancies ReconcileAsRun found;
- playlog_http_requests_total{route, status} and playlog_http_request_seconds{route}:
  every HTTP answer by route (its path pattern) and status;
- playlog_guide_renders_total{format}: guide documents rendered (not served
  from what was rendered before: every other request is);
- playlog_guide_horizon_ms{channel_id}: how far ahead the channel's published
  window reaches (the guide beyond it is only planned); read at scrape time;
- playlog_engine_lag_generations{channel_id, engine_id}: generations an engine
  is behind its channel, and playlog_channel_runway_ms{channel_id}: how far the
  channel's published entries reach beyond now (0: none ahead); both read from
  the store at scrape time, so they are current whatever replica published.

The README's "Metrics" table lists them all with their labels.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import playlog
from playlog.events import emit

_log = logging.getLogger("playlog.metrics")

REQUESTS = Counter("playlog_requests_total", "gRPC requests by method and status", ["method", "status"])
REQUEST_SECONDS = Histogram("playlog_request_seconds", "gRPC request latency", ["method"])
PUBLISHES = Counter("playlog_publishes_total", "Committed publishes", ["rpc", "override"])
REJECTIONS = Counter("playlog_rejections_total", "Refused mutations by error code", ["rpc", "error_code"])
OVERRIDES = Counter("playlog_overrides_total", "Override records written", ["layer"])
WATCH_SUBSCRIBERS = Gauge("playlog_watch_subscribers", "Open WatchWindow streams")
WATCH_RESETS = Counter("playlog_watch_resets_total", "Reset snapshots sent to subscribers", ["reason"])
STORE_COMMIT_SECONDS = Histogram(
    "playlog_store_commit_seconds",
    "Store write transaction latency (from BEGIN to COMMIT or ROLLBACK)",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CLOCK_STEP_BACKS = Counter(
    "playlog_clock_step_backs_total", "Host clock found behind the latest instant acted on"
)
CLOCK_HELD_MS = Gauge("playlog_clock_held_ms", "How far the host clock is behind the server's now (ms)")
AUTH_REFUSALS = Counter("playlog_auth_refusals_total", "Calls refused by authentication or role", ["kind"])
CHANNEL_GENERATION = Gauge(
    "playlog_channel_generation", "Latest committed generation of each channel", ["channel_id"]
)
BUILD_INFO = Gauge(
    "playlog_build_info", "Always 1; the labels say what runs", ["version", "python", "grpcio"]
)
AS_RUN_EVENTS = Counter("playlog_as_run_events_total", "As-run events stored, by status", ["status"])
NACKS = Counter("playlog_nacks_total", "Acknowledgements that refused a generation (NACKs)")
HTTP_REQUESTS = Counter(
    "playlog_http_requests_total", "HTTP answers by route and status", ["route", "status"]
)
HTTP_REQUEST_SECONDS = Histogram("playlog_http_request_seconds", "HTTP request latency", ["route"])
GUIDE_RENDERS = Counter(
    "playlog_guide_renders_total", "Guide documents rendered (every other request is served them)", ["format"]
)
DISCREPANCIES = Counter(
    "playlog_as_run_discrepancies_total", "Discrepancies found by ReconcileAsRun, by kind", ["kind"]
)

# (runway ms by channel, generations behind by (channel, engine)), read at scrape time.
EngineGaugeSource = Callable[[], tuple[dict[str, int], dict[tuple[str, str], int]]]


class _EngineCollector(Collector):
    """Engine lag and channel runway, computed when scraped: they change with
    time and with other replicas' writes, not only with this process's calls."""

    def __init__(self) -> None:
        self.source: EngineGaugeSource | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "playlog_engine_lag_generations",
                "Generations an engine is behind its channel's latest",
                labels=["channel_id", "engine_id"],
            ),
            GaugeMetricFamily(
                "playlog_channel_runway_ms",
                "How far the channel's published entries reach beyond now (ms; 0: none)",
                labels=["channel_id"],
            ),
            GaugeMetricFamily(
                "playlog_guide_horizon_ms",
                "How far ahead the channel's published window reaches, so its guide is more than planned "
                "(ms; 0: none)",
                labels=["channel_id"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, runway, horizon = self._families()
        source = self.source
        if source is not None:
            try:
                runways, lags = source()
            except Exception as exc:  # a scrape must not fail because the store is away
                emit(_log, logging.WARNING, "engine_gauges_unavailable", error=str(exc))
            else:
                for channel_id, ms in sorted(runways.items()):
                    runway.add_metric([channel_id], ms)
                    # The same reach, as the guide sees it (SPEC section 14).
                    horizon.add_metric([channel_id], ms)
                for (channel_id, engine_id), behind in sorted(lags.items()):
                    lag.add_metric([channel_id, engine_id], behind)
        yield lag
        yield runway
        yield horizon


ENGINE_GAUGES = _EngineCollector()
REGISTRY.register(ENGINE_GAUGES)

_generation_lock = threading.Lock()
_generations: dict[str, int] = {}


def note_generation(channel_id: str, generation_id: int) -> None:
    """A channel's generation is at least generation_id: the gauge only rises,
    so a late doorbell (PostgreSQL NOTIFY) for an older publish never lowers it."""
    with _generation_lock:
        if generation_id < _generations.get(channel_id, -1):
            return
        _generations[channel_id] = generation_id
        CHANNEL_GENERATION.labels(channel_id).set(generation_id)


def set_build_info() -> None:
    import grpc

    BUILD_INFO.labels(playlog.__version__, platform.python_version(), grpc.__version__).set(1)


# The labelled children per (method, status) and method: `labels()` takes a
# lock and builds its key on every call, a visible share of a small read's CPU.
_REQUESTS_BY: dict[tuple[str, str], Any] = {}
_SECONDS_BY: dict[str, Any] = {}


def observe_call(method: str, status: str, seconds: float) -> None:
    counter = _REQUESTS_BY.get((method, status))
    if counter is None:
        counter = _REQUESTS_BY.setdefault((method, status), REQUESTS.labels(method, status))
    counter.inc()
    histogram = _SECONDS_BY.get(method)
    if histogram is None:
        histogram = _SECONDS_BY.setdefault(method, REQUEST_SECONDS.labels(method))
    histogram.observe(seconds)


def observe_http(route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(route).observe(seconds)


@contextmanager
def store_commit(operation: str) -> Iterator[None]:
    """Times one store write transaction, committed or not:

    with metrics.store_commit("publish"), self.store.write() as w:
        ...
    """
    started = time.perf_counter()
    try:
        yield
    finally:
        STORE_COMMIT_SECONDS.labels(operation).observe(time.perf_counter() - started)
