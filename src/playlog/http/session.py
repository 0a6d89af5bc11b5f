"""Console sessions: the token is given once (POST /api/v1/session), then an
HttpOnly, SameSite=Strict cookie carries the session, because a browser's
EventSource cannot send an Authorization header (Nebula does the same).

The cookie holds the principal's name, its roles and an expiry, signed with
HMAC-SHA256 under a key the server keeps (`session.key` in the data directory,
made on first use, or `session_key_file` for replicas that must share it). It
is checked again on every request against the auth file as it is now: a
principal removed from the file loses its session within a second, and a role
taken away is taken away from the session too (the session's roles are the
intersection of what was signed and what the file says now).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from playlog.auth import Credentials, Principal, Role

COOKIE = "playlog_session"
DEFAULT_TTL_MS = 12 * 3600 * 1000  # one shift at the desk
KEY_BYTES = 32


def wall_ms() -> int:
    """Sessions expire by the host's real time, not the air clock: a manual
    clock moved hours ahead must not sign everyone out, nor one held still
    keep a session forever."""
    return time.time_ns() // 1_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    principal: str
    roles: frozenset[Role]
    expires_utc_ms: int


def load_key(path: Path) -> bytes:
    """The signing key at `path`, made (mode 0600) if it does not exist yet."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica or process made it first
            return load_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(fresh)
            f.flush()
            os.fsync(f.fileno())
        return fresh
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path}: a session key needs at least {KEY_BYTES} bytes, found {len(key)}")
    return key


class SessionSigner:
    def __init__(self, key: bytes, ttl_ms: int = DEFAULT_TTL_MS) -> None:
        self._key = key
        self.ttl_ms = ttl_ms

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, principal: Principal, now_utc_ms: int) -> tuple[str, Session]:
        # "+": a comma is not a cookie-octet (RFC 6265), it would be quoted.
        roles = "+".join(sorted(r.name.lower() for r in principal.roles))
        expires = now_utc_ms + self.ttl_ms
        payload = ".".join(["v1", _b64(principal.name.encode()), roles, str(expires)])
        session = Session(principal.name, principal.roles, expires)
        return f"{payload}.{self._mac(payload)}", session

    def verify(self, value: str, now_utc_ms: int) -> Session | None:
        """The session a cookie stands for; None if forged, malformed or expired."""
        payload, _, mac = value.rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        parts = payload.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[3].isdigit():
            return None
        expires = int(parts[3])
        if expires <= now_utc_ms:
            return None
        try:
            name = _unb64(parts[1]).decode()
            roles = frozenset(Role.parse(r) for r in parts[2].split("+") if r)
        except ValueError:
            return None
        return Session(name, roles, expires)


def current(session: Session, credentials: Credentials) -> Principal | None:
    """The session's principal as the auth file says it is now (None: revoked)."""
    known = credentials.by_name(session.principal)
    if known is None:
        return None
    return Principal(known.name, known.roles & session.roles)
