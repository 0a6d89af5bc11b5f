"""Who may do what (SPEC section 9).

Principals authenticate with a bearer token (metadata `authorization`) or a TLS
client certificate. Each RPC needs one role (REQUIRED_ROLE, the single place
that says which); each role holds the roles whose calls it may make
(GRANTS). Roles are not a ladder: a scheduler and an engine each read, but an
engine cannot publish and a scheduler cannot report as-run; an operator does
everything.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import logging
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from playlog.events import emit

log = logging.getLogger("playlog.auth")


class Role(enum.Enum):
    READER = "reader"
    SCHEDULER = "scheduler"
    ENGINE = "engine"
    OPERATOR = "operator"

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {name!r}: expected reader, scheduler, engine or operator"
            ) from None


# Role held -> the roles whose calls it may make (SPEC section 9).
GRANTS: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.SCHEDULER: frozenset({Role.READER, Role.SCHEDULER}),
    Role.ENGINE: frozenset({Role.READER, Role.ENGINE}),
    Role.OPERATOR: frozenset(Role),
}


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return any(role in GRANTS[r] for r in self.roles)


LOCAL_PRINCIPAL = Principal("local", frozenset({Role.OPERATOR}))

# Set by the interceptor for a long stream: re-authenticates its caller after
# an auth file reload (raises if the caller may no longer make the call).
stream_guard: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "stream_guard", default=None
)
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
    f"{_V1}EngineService/AcknowledgeWindow": Role.ENGINE,
    f"{_V1}EngineService/ReportAsRun": Role.ENGINE,
    f"{_V1}EngineService/ListAsRun": Role.READER,
    f"{_V1}EngineService/ListEngines": Role.READER,
    f"{_V1}EngineService/ReconcileAsRun": Role.READER,
    f"{_V1}GuideService/GetGuide": Role.READER,
    f"{_V1}GuideService/GetNowNext": Role.READER,
}
# Probes must work without credentials, and so must reflection: it reveals only
# the public contract (the protos), and grpcurl needs it for a health check.
# Health/List tells no more than Check asked of each service.
OPEN_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/List",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
# A request with operator_override = true needs the operator role on any RPC.
OVERRIDE_ROLE = Role.OPERATOR


def required_role(method: str, request: object) -> Role | None:
    """The role a call needs; None for open methods. KeyError: unknown method."""
    if method in OPEN_METHODS:
        return None
    role = REQUIRED_ROLE[method]
    if getattr(request, "operator_override", False):
        role = OVERRIDE_ROLE  # the operator may make every call
    return role


def reauthenticating_guard(
    credentials: Credentials | None, authenticate_again: Callable[[], object]
) -> Callable[[], None] | None:
    """For a long stream (WatchWindow, the console's events): a guard to call
    before each event that authenticates the caller again whenever the auth
    file was reloaded (`authenticate_again` raises if it may no longer make
    the call); None without auth."""
    if credentials is None:
        return None
    seen = credentials.version

    def guard() -> None:
        nonlocal seen
        credentials.refresh()
        if credentials.version != seen:
            seen = credentials.version
            authenticate_again()

    return guard


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Credentials:
    """Principals by token hash and by certificate subject, from the auth file.

    The file is TOML, one table per principal:

        [[principal]]
        name = "scheduler-1"
        roles = ["scheduler"]               # reader, scheduler, engine, operator
        token_sha256 = "..."                # from `playlog token`
        # cert_subject = "CN=scheduler-1,O=Example Broadcast,C=US"   # mutual TLS

    Each principal needs `token_sha256`, `cert_subject` or both. Names, token
    hashes and subjects must be unique.

    Bearer tokens: the client sends metadata `authorization: Bearer <token>`;
    the file holds only the token's SHA-256 (64 hex digits).

    Certificate subjects (mutual TLS, `tls_client_ca` set): the server requires
    a client certificate signed by that CA and compares its subject with
    `cert_subject`. Every client then presents one, token holders too (any
    subject the CA signed: their token decides who they are); gRPC Python
    cannot request a certificate without requiring it.

    The subject is the string gRPC reports as `x509_subject`, which is the
    RFC 2253 form: the attributes in the reverse of the order the certificate
    holds them, separated by commas without spaces, with special characters
    backslash-escaped. A certificate made with
    `-subj "/C=US/O=Playlog, Inc./CN=scheduler-1"` has the subject
    `CN=scheduler-1,O=Playlog\\, Inc.,C=US`, and one made with
    `-subj "/CN=mcr-desk/O=Example Broadcast"` has `O=Example Broadcast,CN=mcr-desk`.
    Print it exactly with

        openssl x509 -in client.pem -noout -subject -nameopt RFC2253

    (drop the leading `subject=`). Spaces around `,`, `+` and `=` and the case of
    attribute names (`cn=` / `CN=`) are ignored when comparing; the order of
    attributes and the case of values are not.

    When a call carries a bearer token, the token decides who the caller is
    (a wrong token is refused even with a known certificate); otherwise the
    certificate subject does.

    Revocation and changes: the server re-reads the file when it changes.
    On a call, at most once every `check_interval_s` (1 s), it stats the file;
    if its modification time, size, inode or ctime differ from the loaded
    version it parses the file again and swaps the whole table at once. So
    removing a principal (or its token hash) revokes it within about a second,
    with no restart and no signal; open WatchWindow streams of a principal that
    is no longer authorized end with UNAUTHENTICATED or PERMISSION_DENIED at
    their next event. A file that cannot be read or parsed is not applied: the
    previous table stays in force and an `auth_reload_failed` error is logged
    (write the new file next to the old one and rename it over, so that no
    reader ever sees half a file).
    """

    def __init__(
        self,
        entries: Iterable[tuple[Principal, str, str]],
        *,
        source: str | Path | None = None,
        check_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        stamp: tuple[int, ...] | None = None,
    ) -> None:
        self._table = _Table.build(entries)
        self._source = Path(source) if source is not None else None
        if stamp is None and self._source is not None:
            stamp = _stamp(self._source)
        self._stamp = stamp
        self.check_interval_s = check_interval_s
        self._monotonic = monotonic
        self._last_check = monotonic()
        # Increases with every applied reload; streams re-check their caller when it moves.
        self.version = 0

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        check_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Credentials:
        """Reads the auth file. ValueError (incl. TOML errors) or OSError if it is unusable."""
        stamp = _stamp(Path(path))  # before reading: a change while we read is seen next time
        return cls(
            _parse(Path(path)),
            source=path,
            check_interval_s=check_interval_s,
            monotonic=monotonic,
            stamp=stamp,
        )

    def refresh(self, *, force: bool = False) -> bool:
        """Re-reads the file if it changed; cheap, and at most once per
        check_interval_s unless forced. True if a new table was applied."""
        if self._source is None:
            return False
        now = self._monotonic()
        if not force and now - self._last_check < self.check_interval_s:
            return False
        self._last_check = now
        try:
            stamp = _stamp(self._source)
        except OSError as exc:
            self._reload_failed(None, exc)
            return False
        if stamp == self._stamp:
            return False
        try:
            table = _Table.build(_parse(self._source))
        except (OSError, ValueError) as exc:
            self._reload_failed(stamp, exc)
            return False
        self._table = table
        self._stamp = stamp
        self.version += 1
        emit(
            log,
            logging.INFO,
            "auth_reloaded",
            auth_file=str(self._source),
            principals=len(table.names),
            version=self.version,
        )
        return True

    def _reload_failed(self, stamp: tuple[int, ...] | None, exc: BaseException) -> None:
        if stamp is not None:
            self._stamp = stamp  # retry when the file changes again, not every second
        emit(
            log,
            logging.ERROR,
            "auth_reload_failed",
            auth_file=str(self._source),
            error=str(exc),
            message="the previous principals stay in force until the file is fixed",
        )

    def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found = None
        for known, principal in self._table.by_hash.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def by_subject(self, subject: str) -> Principal | None:
        return self._table.by_subject.get(normalize_subject(subject))

    def by_name(self, name: str) -> Principal | None:
        """The principal of that name as the file says now (console sessions are
        checked against it on every request, so removing one revokes it)."""
        for principal in (*self._table.by_hash.values(), *self._table.by_subject.values()):
            if principal.name == name:
                return principal
        return None

    @property
    def names(self) -> frozenset[str]:
        return self._table.names

    @property
    def empty(self) -> bool:
        return not self._table.names

    @property
    def token_only_names(self) -> list[str]:
        """Principals with a token and no certificate subject, sorted."""
        with_subject = {p.name for p in self._table.by_subject.values()}
        return sorted({p.name for p in self._table.by_hash.values()} - with_subject)


@dataclass(frozen=True)
class _Table:
    by_hash: Mapping[str, Principal]
    by_subject: Mapping[str, Principal]
    names: frozenset[str]

    @classmethod
    def build(cls, entries: Iterable[tuple[Principal, str, str]]) -> _Table:
        by_hash: dict[str, Principal] = {}
        by_subject: dict[str, Principal] = {}
        names: set[str] = set()
        for principal, token_sha256, subject in entries:
            if principal.name in names:
                raise ValueError(f"principal {principal.name!r} is listed twice")
            names.add(principal.name)
            if token_sha256:
                key = token_sha256.lower()
                if key in by_hash:
                    raise ValueError(f"principals {by_hash[key].name!r} and {principal.name!r} share a token")
                by_hash[key] = principal
            if subject:
                key = normalize_subject(subject)
                if key in by_subject:
                    raise ValueError(
                        f"principals {by_subject[key].name!r} and {principal.name!r} "
                        f"share the certificate subject {subject!r}"
                    )
                by_subject[key] = principal
        return cls(by_hash, by_subject, frozenset(names))


def _parse(path: Path) -> list[tuple[Principal, str, str]]:
    doc = tomllib.loads(path.read_text())
    unknown = set(doc) - {"principal"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected [[principal]]")
    entries = []
    for i, item in enumerate(doc.get("principal", [])):
        where = f"{path}: principal[{i}]"
        name = item.get("name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name is required")
        roles = item.get("roles", [])
        if not isinstance(roles, list) or not roles:
            raise ValueError(f'{where} ({name}): roles is required, e.g. roles = ["reader"]')
        token_sha256 = item.get("token_sha256", "")
        if token_sha256 and (len(token_sha256) != 64 or not _is_hex(token_sha256)):
            raise ValueError(f"{where} ({name}): token_sha256 must be 64 hex digits")
        subject = item.get("cert_subject", "")
        if not token_sha256 and not subject:
            raise ValueError(f"{where} ({name}): give token_sha256 or cert_subject")
        try:
            principal = Principal(name, frozenset(Role.parse(str(r)) for r in roles))
        except ValueError as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
        entries.append((principal, token_sha256, subject))
    return entries


def _stamp(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def normalize_subject(subject: str) -> str:
    """An RFC 2253 subject without the spaces around separators, attribute
    names upper-cased; escaped characters (`\\,`) are kept as they are."""
    rdns: list[str] = []
    part: list[str] = []
    i = 0
    text = subject.strip()
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            part.append(text[i : i + 2])
            i += 2
            continue
        if ch in ",+":
            rdns.append(_normalize_attribute("".join(part)))
            rdns.append(ch)
            part = []
        else:
            part.append(ch)
        i += 1
    rdns.append(_normalize_attribute("".join(part)))
    return "".join(rdns)


def _normalize_attribute(attribute: str) -> str:
    kind, sep, value = attribute.partition("=")
    if not sep:
        return attribute.strip()
    value = value.strip()
    if value.endswith("\\") and attribute.rstrip() != attribute:
        value += " "  # an escaped trailing space is part of the value
    return f"{kind.strip().upper()}={value}"


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
