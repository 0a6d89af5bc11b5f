"""One configuration model for flags, environment variables and a TOML file.

Precedence: built-in default < TOML file (--config, PLAYLOG_CONFIG) <
environment (PLAYLOG_<NAME>) < command-line flag (--<name-with-dashes>).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./var"
    database_url: str = ""
    database_connections: int = 4
    database_lock_timeout_ms: int = 10_000
    database_statement_timeout_ms: int = 30_000
    listen: str = "127.0.0.1:50051"
    clock: str = "system"
    start_utc_ms: int = 0
    log_level: str = "info"
    auth_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    insecure: bool = False
    metrics_listen: str = ""
    http_listen: str = ""
    guide_public: bool = False
    session_key_file: str = ""
    session_ttl_seconds: int = 43_200
    guide_filler_types: str = "filler,padding,bumper"
    max_message_bytes: int = 4 * 1024 * 1024
    max_entries_per_publish: int = 10_000
    max_concurrent_streams: int = 2_000
    progress_interval_ms: int = 1_000
    watch_queue_events: int = 1_024
    history_retention_publishes: int = 100_000
    shutdown_grace_seconds: float = 10.0
    worker_threads: int = 8
    as_run_tolerance_ms: int = 1_000


HELP: dict[str, str] = {
    "data_dir": "directory of the embedded SQLite store",
    "database_url": "PostgreSQL URL (postgresql://...) to share one store among replicas instead of SQLite",
    "database_connections": "PostgreSQL connections per replica for reads, and as many for writes",
    "database_lock_timeout_ms": "how long a PostgreSQL write waits for another write to the same channel "
    "before it gives up with UNAVAILABLE",
    "database_statement_timeout_ms": "how long one PostgreSQL statement may run before the call gives up "
    "with UNAVAILABLE",
    "listen": "gRPC listen address host:port",
    "clock": "'system', or 'manual' (moves only by ClockService; for tests and engine development)",
    "start_utc_ms": "initial time of the manual clock (default: the system time at start)",
    "log_level": "debug, info, warning or error",
    "auth_file": "TOML file of principals (name, roles, token_sha256, cert_subject); enables auth",
    "tls_cert": "server certificate (PEM); with tls_key enables TLS",
    "tls_key": "server private key (PEM)",
    "tls_client_ca": "CA (PEM) for client certificates; enables mutual TLS",
    "insecure": "allow a non-loopback listen address without authentication",
    "metrics_listen": "host:port of the Prometheus metrics HTTP listener (empty: off)",
    "http_listen": "host:port of the HTTP listener: the operator console at /, its JSON API, the guide "
    "(XMLTV, M3U, now/next) (empty: off)",
    "session_key_file": "key that signs the console's session cookies (default: session.key in the data "
    "directory, made on first use; give replicas one file)",
    "session_ttl_seconds": "how long a console session lasts before its token is asked again",
    "guide_public": "serve the guide without authentication even when auth_file is set",
    "guide_filler_types": "comma-separated segment types a guide never lists (an entry of only these "
    "joins the programme before it)",
    "max_message_bytes": "largest gRPC message accepted or sent",
    "max_entries_per_publish": "most entries one publish may carry",
    "max_concurrent_streams": "most concurrent WatchWindow streams",
    "progress_interval_ms": "default interval of WatchWindow progress events",
    "watch_queue_events": "events a subscriber may have pending before it is reset",
    "history_retention_publishes": "publishes kept per channel for WatchWindow resume, counted in "
    "publishes whatever their generation numbers (0: all)",
    "shutdown_grace_seconds": "how long in-flight calls may finish on SIGTERM/SIGINT",
    "worker_threads": "threads for blocking store calls",
    "as_run_tolerance_ms": "how far an as-run start or end may be from the log's before ReconcileAsRun "
    "reports it (START_OFF / END_OFF)",
}


class ConfigError(ValueError):
    pass


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    try:
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {name} must be {getattr(kind, '__name__', kind)}, got {value!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (env PLAYLOG_CONFIG)")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = "PLAYLOG_" + f.name.upper()
        help_text = f"{HELP[f.name]} (env {env}; default {f.default!r})"
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag, dest=f.name, action="store_const", const=True, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    config_path = (getattr(args, "config", None) if args else None) or env.get("PLAYLOG_CONFIG")
    known = {f.name: f for f in fields(Settings)}
    if config_path:
        try:
            doc = tomllib.loads(Path(config_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        for key, value in doc.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"config file {config_path}: unknown setting {key!r}")
            values[name] = _coerce(name, known[name].type, value, f"config file {config_path}")
    for name, f in known.items():
        env_name = "PLAYLOG_" + name.upper()
        if env_name in env:
            values[name] = _coerce(name, f.type, env[env_name], f"environment {env_name}")
    if args is not None:
        for name, f in known.items():
            value = getattr(args, name, None)
            if value is not None:
                values[name] = _coerce(name, f.type, value, f"--{name.replace('_', '-')}")
    settings = dataclasses.replace(Settings(), **values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.clock not in ("system", "manual"):
        raise ConfigError(f"clock must be 'system' or 'manual', got {s.clock!r}")
    for name in ("database_connections", "database_lock_timeout_ms", "database_statement_timeout_ms"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(s, name)}")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    if s.tls_client_ca and not s.auth_file:
        raise ConfigError(
            "tls_client_ca (mutual TLS) needs auth_file: its cert_subject entries say which "
            "principal each client certificate is"
        )
    for name in (
        "max_message_bytes",
        "max_entries_per_publish",
        "max_concurrent_streams",
        "progress_interval_ms",
        "watch_queue_events",
        "worker_threads",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(s, name)}")
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"database_url must be a postgresql:// URL, got {s.database_url!r}")
    if s.max_message_bytes < 16_384:
        raise ConfigError(f"max_message_bytes must be at least 16384, got {s.max_message_bytes}")
    if not 0 <= s.as_run_tolerance_ms <= 3_600_000:
        raise ConfigError(
            f"as_run_tolerance_ms must be between 0 and 3600000 (1 h), got {s.as_run_tolerance_ms}"
        )
    if not 60 <= s.session_ttl_seconds <= 7 * 86_400:
        raise ConfigError(
            f"session_ttl_seconds must be between 60 and 604800 (7 days), got {s.session_ttl_seconds}"
        )
    if s.history_retention_publishes < 0:
        raise ConfigError("history_retention_publishes must be >= 0")
    if not filler_types(s):
        raise ConfigError(
            f"guide_filler_types must name at least one segment type, got {s.guide_filler_types!r}"
        )
    for name in ("listen", "metrics_listen", "http_listen"):
        value = getattr(s, name)
        if name != "listen" and not value:
            continue  # off
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{name} must be host:port, got {value!r}")


def filler_types(s: Settings) -> frozenset[str]:
    """The segment types a guide never lists, lower-cased."""
    return frozenset(t.strip().lower() for t in s.guide_filler_types.split(",") if t.strip())
