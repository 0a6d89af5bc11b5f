"""Who may do what (SPEC section 9).

Principals authenticate with a bearer token (metadata `authorization`) or a TLS
client certificate; roles are cumulative: reader < scheduler < operator. The
table below is the single place that says which role each RPC needs.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


class Role(enum.IntEnum):
    READER = 1
    SCHEDULER = 2
    OPERATOR = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: expected reader, scheduler or operator") from None


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return any(r >= role for r in self.roles)


LOCAL_PRINCIPAL = Principal("local", frozenset({Role.OPERATOR}))

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "current_principal", default=LOCAL_PRINCIPAL
)

_V1 = "/playlog.v1."
# RPC -> role it needs. Unlisted methods of playlog.v1 are refused (deny by default).
REQUIRED_ROLE: dict[str, Role] = {
    f"{_V1}ChannelService/DeclareChannel": Role.OPERATOR,
    f"{_V1}ChannelService/GetChannel": Role.READER,
    f"{_V1}ChannelService/ListChannels": Role.READER,
    f"{_V1}ExecutionWindowService/PublishAtomicReplace": Role.SCHEDULER,
    f"{_V1}ExecutionWindowService/ReplaceEntry": Role.SCHEDULER,
    f"{_V1}ExecutionWindowService/ReadWindowSnapshot": Role.READER,
    f"{_V1}ExecutionWindowService/GetEntryAt": Role.READER,
    f"{_V1}ExecutionWindowService/WatchWindow": Role.READER,
    f"{_V1}ScheduleDayService/StoreScheduleDay": Role.SCHEDULER,
    f"{_V1}ScheduleDayService/ForceRegenerate": Role.SCHEDULER,
    f"{_V1}ScheduleDayService/OperatorOverride": Role.OPERATOR,
    f"{_V1}ScheduleDayService/UpdateScheduleDay": Role.SCHEDULER,
    f"{_V1}ScheduleDayService/GetScheduleDay": Role.READER,
    f"{_V1}ScheduleDayService/ListScheduleDayHistory": Role.READER,
    f"{_V1}AuditService/ListOverrideRecords": Role.READER,
    f"{_V1}AuditService/GetOverrideRecord": Role.READER,
    f"{_V1}AuditService/VerifyIntegrity": Role.READER,
    f"{_V1}ClockService/GetTime": Role.READER,
    f"{_V1}ClockService/SetTime": Role.OPERATOR,
    f"{_V1}ClockService/AdvanceTime": Role.OPERATOR,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Role.READER,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Role.READER,
}
# Probes must work without credentials.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
# A request with operator_override = true needs the operator role on any RPC.
OVERRIDE_ROLE = Role.OPERATOR


def required_role(method: str, request: object) -> Role | None:
    """The role a call needs; None for open methods. KeyError: unknown method."""
    if method in OPEN_METHODS:
        return None
    role = REQUIRED_ROLE[method]
    if getattr(request, "operator_override", False):
        role = max(role, OVERRIDE_ROLE)
    return role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    principal: Principal
    sha256: str


class Credentials:
    """Principals by token hash and by certificate subject, from the auth file.

    The file is TOML:

        [[principal]]
        name = "scheduler-1"
        roles = ["scheduler"]
        token_sha256 = "..."          # from `playlog token`
        # cert_subject = "CN=scheduler-1"   # for mutual TLS
    """

    def __init__(self, entries: Iterable[tuple[Principal, str, str]]) -> None:
        self._by_hash: dict[str, Principal] = {}
        self._by_subject: dict[str, Principal] = {}
        for principal, token_sha256, subject in entries:
            if token_sha256:
                self._by_hash[token_sha256.lower()] = principal
            if subject:
                self._by_subject[subject] = principal

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        doc = tomllib.loads(Path(path).read_text())
        entries = []
        for i, item in enumerate(doc.get("principal", [])):
            where = f"{path}: principal[{i}]"
            name = item.get("name", "")
            if not name:
                raise ValueError(f"{where}: name is required")
            roles = item.get("roles", [])
            if not roles:
                raise ValueError(f"{where} ({name}): roles is required")
            token_sha256 = item.get("token_sha256", "")
            if token_sha256 and (len(token_sha256) != 64 or not _is_hex(token_sha256)):
                raise ValueError(f"{where} ({name}): token_sha256 must be 64 hex digits")
            subject = item.get("cert_subject", "")
            if not token_sha256 and not subject:
                raise ValueError(f"{where} ({name}): give token_sha256 or cert_subject")
            principal = Principal(name, frozenset(Role.parse(r) for r in roles))
            entries.append((principal, token_sha256, subject))
        return cls(entries)

    def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def by_subject(self, subject: str) -> Principal | None:
        return self._by_subject.get(subject)

    @property
    def empty(self) -> bool:
        return not self._by_hash and not self._by_subject


def _is_hex(value: str) -> bool:
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    value = metadata.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()
