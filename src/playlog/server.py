"""The server assembly, in one place: store, clock, servicers, health,
reflection, the call interceptor (auth, roles, error mapping, metrics), TLS,
limits, metrics listener and graceful shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from playlog import metrics, wire
from playlog.api.engine_servicer import EngineServicer
from playlog.api.guide_servicer import GuideServicer
from playlog.api.interceptor import CallInterceptor
from playlog.api.servicers import (
    AuditServicer,
    ChannelServicer,
    ClockServicer,
    ExecutionWindowServicer,
    ScheduleDayServicer,
)
from playlog.api.watch import WatchHub
from playlog.app.engines import EngineEvidence
from playlog.app.guide import Guide, HorizonWatch
from playlog.app.service import Playlog
from playlog.auth import Credentials
from playlog.clock import ManualClock, SystemClock
from playlog.config import ConfigError, Settings, filler_types, validate
from playlog.events import emit
from playlog.http import api as http_api
from playlog.http import console as http_console
from playlog.http import guide as http_guide
from playlog.http.edge import EdgeContext, HttpEdge, RouteModule, Services
from playlog.http.session import SessionSigner, load_key
from playlog.store.base import ALL_CHANNELS, Store, StoreError
from playlog.store.sqlite import DataDirInUse, SqliteStore
from playlog.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    channel_service_pb2,
    channel_service_pb2_grpc,
    clock_service_pb2,
    clock_service_pb2_grpc,
    engine_service_pb2,
    engine_service_pb2_grpc,
    execution_window_service_pb2,
    execution_window_service_pb2_grpc,
    guide_service_pb2,
    guide_service_pb2_grpc,
    schedule_day_service_pb2,
    schedule_day_service_pb2_grpc,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger("playlog.server")

SERVICE_NAMES = [
    channel_service_pb2.DESCRIPTOR.services_by_name["ChannelService"].full_name,
    execution_window_service_pb2.DESCRIPTOR.services_by_name["ExecutionWindowService"].full_name,
    schedule_day_service_pb2.DESCRIPTOR.services_by_name["ScheduleDayService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    clock_service_pb2.DESCRIPTOR.services_by_name["ClockService"].full_name,
    engine_service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name,
    guide_service_pb2.DESCRIPTOR.services_by_name["GuideService"].full_name,
]

# The HTTP edge's route modules: the guide, the console's JSON API, the console.
HTTP_ROUTES: list[RouteModule] = [http_guide.register, http_api.register, http_console.register]
# How often the published horizon is checked with nothing else happening, and
# at most (a burst of publishes is one check, not one per publish).
HORIZON_CHECK_INTERVAL_S = 60.0
HORIZON_CHECK_MIN_INTERVAL_S = 1.0


# Room kept below max_message_bytes for a message's own fields (a snapshot
# part's header, a replaced event's) beside its entries.
MESSAGE_HEADROOM_BYTES = 1024


def initial_clock(settings: Settings, store: Store) -> ManualClock | SystemClock:
    """The system clock, or a manual one that resumes where it was stopped:
    time never moves backwards, restarts included."""
    with store.read() as r:
        saved = r.manual_clock_utc_ms()
        floor = r.clock_floor_utc_ms()
    if settings.clock != "manual":
        return SystemClock(floor_utc_ms=floor)
    saved = max(saved or 0, floor) or None
    start = settings.start_utc_ms
    if saved is not None and saved > start:
        if start:
            emit(
                log,
                logging.WARNING,
                "manual_clock_resumes",
                asked_start_utc_ms=start,
                resumed_at_utc_ms=saved,
                message="the manual clock was already later; time never moves backwards",
            )
        start = saved
    return ManualClock(start or SystemClock().now_utc_ms())


def open_store(settings: Settings) -> Store:
    if settings.database_url:
        from playlog.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            read_connections=settings.database_connections,
            write_connections=settings.database_connections,
            lock_timeout_ms=settings.database_lock_timeout_ms,
            statement_timeout_ms=settings.database_statement_timeout_ms,
        )
    data_dir = Path(settings.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data_dir {data_dir}: not a directory")
    try:
        return SqliteStore(data_dir)
    except DataDirInUse:
        raise
    except (OSError, sqlite3.Error, StoreError) as exc:
        # A parent that is a file or cannot be created, a directory that is not
        # writable: say which path, not a traceback.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"data_dir {data_dir}: cannot use it as the data directory: {reason}") from None


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_signer(settings: Settings) -> SessionSigner:
    """The console's session signer; its key in session_key_file, or in the
    data directory (made on first use). Replicas of one PostgreSQL store give
    them all the same session_key_file, so a session works on any of them."""
    path = Path(settings.session_key_file or Path(settings.data_dir) / "session.key")
    try:
        return SessionSigner(load_key(path), settings.session_ttl_seconds * 1000)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"session_key_file {path}: {exc}") from None


class HealthServicer(health.aio.HealthServicer):
    """grpc's asyncio health servicer, with the List method of
    grpc.health.v1 that it lacks (its base class answers UNIMPLEMENTED)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}

    async def set(self, service: str, status: Any) -> None:
        self._statuses[service] = status
        await super().set(service, status)

    async def List(self, request: Any, context: Any) -> Any:
        # The typing stubs of grpc_health predate List: the message by name.
        response: Any = getattr(health_pb2, "HealthListResponse")  # noqa: B009
        return response(
            statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in self._statuses.items()}
        )


class PlaylogServer:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: ManualClock | SystemClock | None = None,
        store: Store | None = None,
        http_routes: list[RouteModule] | None = None,
    ) -> None:
        validate(settings)
        self.settings = settings
        self.credentials: Credentials | None = None
        if settings.auth_file:
            try:
                self.credentials = Credentials.load(settings.auth_file)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"auth_file {settings.auth_file}: {exc}") from None
        for name in ("listen", "http_listen"):
            address = getattr(settings, name)
            if address and self.credentials is None and not is_loopback(address) and not settings.insecure:
                which = "" if name == "listen" else f" ({name})"
                raise ConfigError(
                    f"refusing to listen on {address}{which} without authentication: configure "
                    "auth_file (see `playlog token`), or pass --insecure if this network is trusted"
                )
        self.store: Store = store if store is not None else open_store(settings)
        self.clock: ManualClock | SystemClock = (
            clock if clock is not None else initial_clock(settings, self.store)
        )
        self.executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="playlog-store")
        self.playlog = Playlog(
            self.store,
            self.clock,
            max_entries_per_publish=settings.max_entries_per_publish,
            history_retention_publishes=settings.history_retention_publishes,
            event_encoder=wire.replaced_event,
            max_event_bytes=settings.max_message_bytes - MESSAGE_HEADROOM_BYTES,
        )
        self.engines = EngineEvidence(self.playlog, settings.as_run_tolerance_ms)
        self.guide = Guide(self.playlog, filler_types(settings))
        self.horizons = HorizonWatch(self.guide)
        self._horizon_due = asyncio.Event()
        self._horizon_task: asyncio.Task[None] | None = None
        self.watch = WatchHub(
            self.playlog,
            self.executor,
            self.clock,
            max_pending=settings.watch_queue_events,
            progress_interval_ms=settings.progress_interval_ms,
            max_streams=settings.max_concurrent_streams,
            max_message_bytes=settings.max_message_bytes - MESSAGE_HEADROOM_BYTES,
        )
        # One servicer of each service, for gRPC and for the HTTP JSON API alike.
        self.services = Services(
            channels=ChannelServicer(self.playlog, self.executor),
            window=ExecutionWindowServicer(
                self.playlog,
                self.executor,
                self.watch.watch,
                settings.max_message_bytes - MESSAGE_HEADROOM_BYTES,
            ),
            days=ScheduleDayServicer(self.playlog, self.executor),
            audit=AuditServicer(self.playlog, self.executor),
            clock=ClockServicer(self.clock, self.playlog, self.executor),
            engines=EngineServicer(self.playlog, self.engines, self.executor),
            guide=GuideServicer(
                self.playlog, self.guide, self.executor, settings.max_message_bytes - MESSAGE_HEADROOM_BYTES
            ),
        )
        self.http = HttpEdge(
            EdgeContext(
                settings,
                self.playlog,
                self.guide,
                self.executor,
                self.credentials,
                services=self.services,
                watch=self.watch,
                signer=session_signer(settings) if self.credentials is not None else None,
            ),
            HTTP_ROUTES if http_routes is None else http_routes,
        )
        self.http_port = 0
        # The generation gauge: after each committed publish (in commit order),
        # and for the channels known at start-up.
        self.playlog.add_publish_listener(lambda r: metrics.note_generation(r.channel_id, r.generation_id))
        self.playlog.add_channel_listener(
            lambda c: metrics.note_generation(c.channel_id, c.current_generation_id)
        )
        self.playlog.add_publish_listener(self._horizon_changed)
        add_clock_listener = getattr(self.clock, "add_listener", None)
        if add_clock_listener is not None:
            add_clock_listener(self._horizon_changed)
        self.health = HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: WSGIServer | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> int:
        s = self.settings
        self.watch.start(asyncio.get_running_loop())
        self._loop = asyncio.get_running_loop()
        # What other replicas of a shared store change, and its health.
        self.store.listen(self)
        with self.store.read() as r:
            for known in r.list_channels():
                metrics.note_generation(known.channel_id, known.current_generation_id)
        metrics.set_build_info()
        metrics.ENGINE_GAUGES.source = self._engine_gauges
        server = grpc.aio.server(
            interceptors=[CallInterceptor(self.credentials)],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                # Long-lived watch streams must not die silently behind idle
                # middleboxes; accept client pings every 10 s without data.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ],
        )
        services = self.services
        channel_service_pb2_grpc.add_ChannelServiceServicer_to_server(services.channels, server)
        execution_window_service_pb2_grpc.add_ExecutionWindowServiceServicer_to_server(
            services.window, server
        )
        schedule_day_service_pb2_grpc.add_ScheduleDayServiceServicer_to_server(services.days, server)
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(services.audit, server)
        clock_service_pb2_grpc.add_ClockServiceServicer_to_server(services.clock, server)
        engine_service_pb2_grpc.add_EngineServiceServicer_to_server(services.engines, server)
        guide_service_pb2_grpc.add_GuideServiceServicer_to_server(services.guide, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        if s.tls_cert:
            # With tls_client_ca (mutual TLS) a client must present a certificate
            # signed by that CA, or the handshake fails; its subject is then
            # mapped to a principal by the auth file's cert_subject.
            mode = client_certificate_mode(s)
            credentials = grpc.ssl_server_credentials(
                [(_read_pem("tls_key", s.tls_key), _read_pem("tls_cert", s.tls_cert))],
                root_certificates=_read_pem("tls_client_ca", s.tls_client_ca) if s.tls_client_ca else None,
                require_client_auth=mode == "required",
            )
            self.port = _add_port(lambda: server.add_secure_port(s.listen, credentials), s.listen)
        else:
            self.port = _add_port(lambda: server.add_insecure_port(s.listen), s.listen)
        if s.metrics_listen:
            self._start_metrics(s.metrics_listen)
        if s.http_listen:
            self.http_port = await self._start_http(s)
        await server.start()
        self._server = server
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._horizon_task = asyncio.create_task(self._watch_horizons())
        return self.port

    async def _start_http(self, s: Settings) -> int:
        context = None
        if s.tls_cert:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(s.tls_cert, s.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"tls_cert/tls_key for http_listen: {exc}") from None
        try:
            return await self.http.start(s.http_listen, context, s.shutdown_grace_seconds)
        except OSError as exc:
            raise ConfigError(
                f"http_listen {s.http_listen}: cannot listen there ({exc.strerror or exc}); "
                "choose another with --http-listen"
            ) from None

    # -- the published horizon (SPEC section 14) --------------------------------------------

    def _horizon_changed(self, *_: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._horizon_due.set)

    async def _watch_horizons(self) -> None:
        """Checks each channel's published horizon after publishes, moves of
        the clock, and every HORIZON_CHECK_INTERVAL_S: a warning is logged
        when one falls under 24 h, with no viewer asking."""
        while not self._stopping:
            self._horizon_due.clear()  # what happens from here on calls for the next check
            try:
                await asyncio.get_running_loop().run_in_executor(self.executor, self.horizons.check)
            except RuntimeError:  # the executor is shutting down: so are we
                return
            except Exception as exc:  # an unreachable store: checked again later
                emit(log, logging.WARNING, "horizon_check_failed", error=str(exc))
            await asyncio.sleep(HORIZON_CHECK_MIN_INTERVAL_S)
            try:
                await asyncio.wait_for(self._horizon_due.wait(), HORIZON_CHECK_INTERVAL_S)
            except TimeoutError:
                pass

    def _engine_gauges(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        g = self.engines.gauges()
        runway = {c: max(0, end - g.now_utc_ms) for c, end in g.runway_ends.items()}
        return runway, {(s.channel_id, s.engine_id): s.generations_behind for s in g.engines}

    # -- what a shared store tells this replica (StoreListener; the store's thread) --

    def publish_committed(self, channel_id: str, generation_id: int) -> None:
        if channel_id != ALL_CHANNELS:
            metrics.note_generation(channel_id, generation_id)
        self.watch.on_remote_publish(channel_id, generation_id)
        self.guide.on_remote_publish(channel_id, generation_id)
        self._horizon_changed()

    def channel_changed(self, channel_id: str, locked_window_ms: int) -> None:
        self.watch.on_remote_channel(channel_id, locked_window_ms)

    def clock_moved(self, now_utc_ms: int) -> None:
        if isinstance(self.clock, ManualClock):
            self.clock.advance_to(now_utc_ms)

    def availability_changed(self, available: bool, reason: str) -> None:
        """The database went away or came back: health says so, so that load
        balancers and engines go to another replica meanwhile."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopped.is_set():
            return
        serving = health_pb2.HealthCheckResponse
        status = serving.SERVING if available else serving.NOT_SERVING
        asyncio.run_coroutine_threadsafe(self._set_health(status), loop)

    async def _set_health(self, status: Any) -> None:
        if self._server is None or self._stopping:
            return
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: refuse new calls, end watch streams with UNAVAILABLE, let
        in-flight calls finish, then close the store cleanly."""
        if self._server is None or self._stopped.is_set():
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        self.watch.close()
        if self._horizon_task is not None:
            self._horizon_task.cancel()
        if metrics.ENGINE_GAUGES.source == self._engine_gauges:
            metrics.ENGINE_GAUGES.source = None  # its store is about to close
        # Both edges stop taking new calls at once and let the ones in flight finish.
        await asyncio.gather(
            self._server.stop(self.settings.shutdown_grace_seconds if grace is None else grace),
            self.http.stop(),
        )
        await asyncio.get_running_loop().run_in_executor(None, self._stop_metrics)
        await asyncio.get_running_loop().run_in_executor(None, self._close_store)
        self._stopped.set()

    def _start_metrics(self, listen: str) -> None:
        """Prometheus text format on http://<metrics_listen>/metrics, from a daemon thread."""
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        try:
            self._metrics_http, _ = start_http_server(int(port), addr=host.strip("[]"))
        except OSError as exc:
            raise ConfigError(f"metrics_listen {listen}: {exc}") from None
        self.metrics_port = int(self._metrics_http.server_port)

    def _stop_metrics(self) -> None:
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None

    def _close_store(self) -> None:
        self.executor.shutdown(wait=True)
        try:
            # The clock's floor: after a restart, now starts no earlier.
            self.playlog.note_acted_at(self.clock.now_utc_ms())
        except StoreError as exc:
            emit(log, logging.WARNING, "clock_floor_not_saved", error=str(exc))
        self.store.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _add_port(add: Callable[[], int], listen: str) -> int:
    """grpc refuses an address it cannot bind by raising RuntimeError or by
    returning port 0, depending on the version, and gRPC core writes why as a
    plain-text line on stderr (fd 2), which would break the JSON log stream:
    that line is captured, and the refusal is one ConfigError naming the
    address and the reason."""
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            port = add()
        except RuntimeError:
            port = 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        core_said = captured.read().decode(errors="replace").strip()
    if not port:
        reason = core_said.rstrip(")").rpartition(": ")[2] if core_said else "address not available"
        raise ConfigError(f"listen {listen}: cannot listen there ({reason}); choose another with --listen")
    if core_said:
        emit(log, logging.WARNING, "grpc_core_log", line=core_said)
    return port


def client_certificate_mode(settings: Settings) -> str:
    """How a TLS server treats client certificates:

    - "none" (no tls_client_ca): clients authenticate with bearer tokens;
      certificates are not asked for, so cert_subject entries match nobody;
    - "required" (tls_client_ca): every client presents a certificate signed by
      that CA or the handshake fails; a call with a bearer token is that
      token's principal, one without is the certificate subject's.

    There is no "requested but optional" mode: grpc.ssl_server_credentials
    either requires and verifies a client certificate or does not ask for one
    (require_client_auth=False is GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE).
    """
    return "required" if settings.tls_client_ca else "none"


CLIENT_CERTIFICATE_MODES = {
    "none": "not asked for: clients send bearer tokens (cert_subject entries match nobody)",
    "required": "every client presents a certificate signed by tls_client_ca, or its TLS "
    "handshake fails; token holders too (any subject the CA signed: the token decides)",
}


def _read_pem(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc}") from None


def describe_startup(server: PlaylogServer) -> dict[str, Any]:
    s = server.settings
    return {
        "listen": s.listen,
        "port": server.port,
        "store": "postgresql" if s.database_url else "sqlite",
        "data_dir": None if s.database_url else str(Path(s.data_dir).resolve()),
        "clock": s.clock,
        "now_utc_ms": server.clock.now_utc_ms(),
        "tls": bool(s.tls_cert),
        "mutual_tls": bool(s.tls_client_ca),
        **_client_certificates(server),
        "auth": "tokens/certificates"
        if server.credentials
        else "none: every caller is the local principal (all roles)",
        "metrics_listen": s.metrics_listen or None,
        "metrics_port": server.metrics_port or None,
        "http_listen": s.http_listen or None,
        "http_port": server.http_port or None,
        "guide": ("public" if s.guide_public or server.credentials is None else "reader role")
        if s.http_listen
        else None,
    }


def _client_certificates(server: PlaylogServer) -> dict[str, Any]:
    if not server.settings.tls_cert:
        return {}
    mode = client_certificate_mode(server.settings)
    info: dict[str, Any] = {
        "client_certificates": mode,
        "client_certificates_means": CLIENT_CERTIFICATE_MODES[mode],
    }
    if mode == "required" and server.credentials is not None and server.credentials.token_only_names:
        # Token-only principals connect only with some certificate of the CA.
        info["token_only_principals_need_a_client_certificate"] = server.credentials.token_only_names
    return info


async def serve(settings: Settings, http_routes: list[RouteModule] | None = None) -> None:
    """`playlog serve`; `http_routes`: the HTTP edge's route modules (default
    HTTP_ROUTES; the guide benchmark adds a static body beside them)."""
    # Signal handlers first: a SIGTERM during start-up still stops gracefully.
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    server = PlaylogServer(settings, http_routes=http_routes)
    port = await server.start()
    info = describe_startup(server)
    emit(log, logging.INFO, "serving", **info)
    if settings.clock == "manual":
        emit(
            log,
            logging.WARNING,
            "manual_clock",
            message="the clock moves only by ClockService.SetTime/AdvanceTime; not for air",
        )
    if server.credentials is None:
        emit(
            log,
            logging.WARNING,
            "auth_disabled",
            message="no auth configured: listening without authentication, every caller is "
            "'local' with all roles",
            port=port,
        )
    await stop_requested.wait()
    emit(log, logging.INFO, "shutting_down", grace_seconds=settings.shutdown_grace_seconds)
    await server.stop()
    emit(log, logging.INFO, "stopped")
