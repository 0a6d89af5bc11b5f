"""Where to connect and with what: flags beat environment beat the context.

The context file (`~/.config/playlog/ctl.toml`, or `PLAYLOG_CTL_CONFIG`) names
servers like a kubeconfig::

    current = "studio"

    [contexts.studio]
    server = "playlog.studio.example:50051"
    token = "..."
    ca_cert = "/etc/playlog/ca.pem"
    client_cert = "/etc/playlog/desk.pem"
    client_key = "/etc/playlog/desk.key"

and the BXF profiles of `playlog ctl bxf --profile NAME` (what a traffic
system's files do not say; flags beat the profile)::

    [bxf.profiles.wnyc]
    frame_rate = "29.97df"
    zone = "America/New_York"
    day_start = "06:00"
    df_separator = ";"
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_SERVER = "127.0.0.1:50051"
KEYS = ("server", "token", "ca_cert", "client_cert", "client_key")


class UsageError(Exception):
    """Bad flags, files or config: exit status 2."""


@dataclass(frozen=True)
class Target:
    server: str
    token: str
    ca_cert: str
    client_cert: str
    client_key: str
    timeout_s: float


def config_path() -> Path:
    explicit = os.environ.get("PLAYLOG_CTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "playlog" / "ctl.toml"


def _config(required: bool) -> tuple[Path, dict[str, Any]]:
    path = config_path()
    if not path.exists():
        if required or os.environ.get("PLAYLOG_CTL_CONFIG"):
            raise UsageError(f"no config file {path}")
        return path, {}
    try:
        return path, tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from None


BXF_PROFILE_KEYS = ("frame_rate", "zone", "day_start", "df_separator")


def bxf_profile(name: str) -> dict[str, str]:
    """A BXF profile of the config file, by name."""
    path, data = _config(required=True)
    profiles = data.get("bxf", {}).get("profiles", {}) if isinstance(data.get("bxf"), dict) else {}
    chosen = profiles.get(name) if isinstance(profiles, dict) else None
    if not isinstance(chosen, dict):
        raise UsageError(f"no BXF profile {name!r} in {path} (a [bxf.profiles.{name}] table)")
    unknown = set(chosen) - set(BXF_PROFILE_KEYS)
    if unknown:
        raise UsageError(f"BXF profile {name!r} in {path}: unknown keys {sorted(unknown)}")
    return {k: str(v) for k, v in chosen.items()}


def _context(name: str | None) -> dict[str, Any]:
    path, data = _config(required=bool(name))
    contexts = data.get("contexts", {})
    chosen = name or data.get("current")
    if not chosen:
        return {}
    if not isinstance(contexts, dict) or chosen not in contexts or not isinstance(contexts[chosen], dict):
        raise UsageError(f"no context {chosen!r} in {path}")
    ctx: dict[str, Any] = contexts[chosen]
    unknown = set(ctx) - set(KEYS)
    if unknown:
        raise UsageError(f"context {chosen!r} in {path}: unknown keys {sorted(unknown)}")
    return ctx


def resolve(args: argparse.Namespace) -> Target:
    ctx = _context(getattr(args, "context", None))
    values: dict[str, str] = {}
    for key in KEYS:
        flag = getattr(args, key, None)
        env = os.environ.get(f"PLAYLOG_{key.upper()}")
        values[key] = str(flag if flag is not None else env if env else ctx.get(key, ""))
    return Target(
        server=values["server"] or DEFAULT_SERVER,
        token=values["token"],
        ca_cert=values["ca_cert"],
        client_cert=values["client_cert"],
        client_key=values["client_key"],
        timeout_s=float(getattr(args, "timeout", 10.0)),
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None


def open_channel(t: Target) -> grpc.Channel:
    if bool(t.client_cert) != bool(t.client_key):
        raise UsageError("--client-cert and --client-key go together")
    if t.ca_cert or t.client_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(t.ca_cert, "CA certificate") if t.ca_cert else None,
            private_key=_read(t.client_key, "client key") if t.client_key else None,
            certificate_chain=_read(t.client_cert, "client certificate") if t.client_cert else None,
        )
        return grpc.secure_channel(t.server, creds)
    return grpc.insecure_channel(t.server)


def metadata(t: Target) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {t.token}"),) if t.token else ()
