"""The scale-out store: PostgreSQL, shared by several server replicas.

The queries are store/sql.py's, translated to psycopg's parameter style.

Writes to a channel are serialized in the database by a transaction-scoped
advisory lock keyed by the channel, taken first in the write's transaction,
so a channel's checks and its commit stay atomic across replicas while writes
to other channels (and replicas) run in parallel on their own pooled
connections. Within one replica a channel's writes also take turns in
process, so that their after-commit listeners run in commit order.

Every change another replica could observe sends a NOTIFY at commit (a
publish, a channel's lock depth, the manual clock); every replica LISTENs on
a dedicated connection and treats it as a doorbell: the durable state in the
database stays the truth (NOTIFY has no replay).

Connections come from psycopg_pool pools, which replace broken connections
by themselves. The listener's connection doubles as the replica's view of the
database's health: when it is lost, the store is unavailable (calls fail at
once with StoreUnavailable, health says NOT_SERVING) until it reconnects.

A failover (the primary lost, a standby promoted) is an outage with a new
server behind it: given a multi-host URL with target_session_attrs=read-write,
libpq connects to whichever host accepts writes. Every new connection reports
the server's WAL timeline, which a promotion increments: a connection to a
server on an older timeline than one already seen (a former primary back
without having been demoted, which would fork the history) or to a read-only
one (a standby) is refused, so that no write of this replica lands anywhere
but on the newest primary.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from playlog.domain.model import Channel, OverrideRecord
from playlog.domain.publish import PublishPlan
from playlog.events import emit
from playlog.store.base import (
    ALL_CHANNELS,
    FaultInjector,
    IntegrityFinding,
    StoreError,
    StoreListener,
    StoreUnavailable,
    check_schema_known,
)
from playlog.store.postgres_schema import MIGRATIONS, PAYLOAD_VERSION
from playlog.store.sql import SqlStore, SqlView, backfill_payloads

log = logging.getLogger("playlog.store")
_T = TypeVar("_T")

NOTIFY_CHANNEL = "playlog_publish"
# Advisory lock keys: (namespace, hashtext(channel_id)) for a channel's
# writes; one key for schema migration, one for override records.
WRITE_LOCK_NAMESPACE = 0x706C_6777
MIGRATE_LOCK_KEY = 0x706C_6C67_6D67
RECORD_LOCK_KEY = 0x706C_6C67_7263
# The listener checks the database at least this often when nothing arrives.
PROBE_INTERVAL_S = 1.0

# store/sql.py's _INSERT_ENTRY, one row per element of the column arrays.
_INSERT_ENTRIES_UNNEST = (
    "INSERT INTO entries (channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
    "programming_day_date, transmission_log_ref, is_operator_override, generation_id, override_record_id, "
    "payload) SELECT c, b, i, s, e, '', d, t, o, g, r, p FROM unnest(%s::text[], %s::text[], %s::bigint[], "
    "%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::smallint[], %s::bigint[], %s::text[], "
    "%s::bytea[]) AS u(c, b, i, s, e, d, t, o, g, r, p)"
)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def _translate(sql: str, named: bool) -> str:
    sql = sql.replace("%", "%%")
    return _NAMED.sub(r"%(\1)s", sql) if named else sql.replace("?", "%s")


class PostgresView(SqlView):
    db_errors = (psycopg.Error,)

    def _q(self, sql: str, params: Any = ()) -> Any:
        return self._conn.execute(_translate(sql, isinstance(params, dict)), params)

    def _qmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_translate(sql, False), rows)

    def _in_list(self, param: str) -> str:
        return f"= ANY(:{param})"

    def _list(self, values: Iterable[str]) -> Any:
        return list(values)

    def _insert_entries(self, rows: list[tuple[Any, ...]]) -> None:
        # One statement over column arrays instead of one INSERT per entry: a
        # day of 48 entries costs one parse, plan and round trip, not 48.
        if rows:
            self._conn.execute(_INSERT_ENTRIES_UNNEST, [list(column) for column in zip(*rows, strict=True)])

    def _notify(self, payload: str) -> None:
        # Delivered at commit (never for a rolled-back write), to every replica.
        self._q("SELECT pg_notify(:ch, :payload)", {"ch": NOTIFY_CHANNEL, "payload": payload})

    def _after_publish(self, plan: PublishPlan) -> None:
        self._notify(f"p {plan.generation_id} {plan.channel_id}")

    def insert_override_record(self, record: OverrideRecord) -> None:
        # Records of every channel are paged by one sequence: they take turns
        # until commit, so sequence order is commit order and a reader paging
        # "after seq N" never misses a record committed later with a lower
        # number. Overrides are rare operator actions; the wait is short.
        self._q("SELECT pg_advisory_xact_lock(:k)", {"k": RECORD_LOCK_KEY})
        super().insert_override_record(record)

    def insert_channel(self, channel: Channel) -> None:
        super().insert_channel(channel)
        self._notify(f"c {channel.locked_window_ms} {channel.channel_id}")

    def update_channel_locked_window(self, channel_id: str, locked_window_ms: int) -> None:
        super().update_channel_locked_window(channel_id, locked_window_ms)
        self._notify(f"c {locked_window_ms} {channel_id}")

    def save_manual_clock_utc_ms(self, now_utc_ms: int) -> None:
        super().save_manual_clock_utc_ms(now_utc_ms)
        self._notify(f"t {now_utc_ms}")


def dispatch_notice(payload: str, listener: StoreListener) -> None:
    """One NOTIFY payload to the listener ("p GEN CHANNEL", "c DEPTH CHANNEL",
    "t NOW"; "GEN CHANNEL" from replicas older than these kinds)."""
    kind, _, rest = payload.partition(" ")
    if kind.isdigit():
        kind, rest = "p", payload
    if kind == "p":
        generation, _, channel_id = rest.partition(" ")
        listener.publish_committed(channel_id, int(generation))
    elif kind == "c":
        depth, _, channel_id = rest.partition(" ")
        listener.channel_changed(channel_id, int(depth))
    elif kind == "t":
        listener.clock_moved(int(rest))
    else:
        emit(log, logging.WARNING, "notify_unknown_kind", payload=payload[:200])


def _dispatch_safely(payload: str, listener: StoreListener) -> None:
    try:
        dispatch_notice(payload, listener)
    except Exception as exc:  # one bad notice must not end the listener's thread
        emit(log, logging.ERROR, "notify_dispatch_failed", exc_info=exc, error=repr(exc))


def _is_unavailable(exc: BaseException) -> bool:
    # OperationalError: the connection was lost or refused, the server shuts
    # down, or a lock or statement timeout / deadlock ended the statement.
    # ReadOnlySqlTransaction: the server takes no writes (a standby, or a
    # database in read-only mode, as managed services set when a disk fills).
    # All mean "nothing was applied, try again", not a bug.
    return isinstance(exc, (psycopg.OperationalError, PoolTimeout, psycopg.errors.ReadOnlySqlTransaction))


class WrongServer(psycopg.OperationalError):
    """A connection reached a server this replica must not write to."""


def server_timeline(conn: psycopg.Connection[Any]) -> int:
    """The WAL timeline the server writes on (the first 8 hex digits of its
    current WAL file's name); a server in recovery (a standby) has none to
    write on and is refused."""
    try:
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # "recovery is in progress"
        raise WrongServer(f"the server is a read-only standby ({str(exc).strip()})") from exc
    if row is None:
        raise WrongServer("the server did not say which WAL timeline it is on")
    return int(str(row[0])[:8], 16)


class PostgresStore(SqlStore):
    view_class = PostgresView
    inline_reads = False
    shared = True
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(
        self,
        url: str,
        read_connections: int = 4,
        write_connections: int = 4,
        *,
        connect_timeout_s: int = 5,
        lock_timeout_ms: int = 10_000,
        statement_timeout_ms: int = 30_000,
        pool_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": connect_timeout_s,
            # A write waiting on another replica's lock of the same channel,
            # or a statement on a sick database, gives up instead of hanging
            # the call: the caller gets UNAVAILABLE and nothing was applied.
            "options": f"-c lock_timeout={lock_timeout_ms} -c statement_timeout={statement_timeout_ms}",
            # A database behind a dead network is noticed in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        # The newest timeline seen on any connection (see the module's note).
        self._timeline = 0
        self._timeline_guard = threading.Lock()
        try:
            with psycopg.connect(url, **self._connect_kwargs, application_name="playlog-migrate") as conn:
                self._check_server(conn)
                migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        super().__init__()
        self._read_pool = self._pool("playlog-read", read_connections, pool_timeout_s)
        self._write_pool = self._pool("playlog-write", write_connections, pool_timeout_s)
        self._turns: dict[str, list[Any]] = {}
        self._turns_guard = threading.Lock()
        self._listener_thread: threading.Thread | None = None
        self._available = True
        self._unavailable_reason = ""
        self._unavailable_since = 0.0
        # Set by a call that lost its connection: the listener checks at once.
        self._suspect = threading.Event()

    def _pool(self, name: str, size: int, timeout: float) -> ConnectionPool[Any]:
        pool: ConnectionPool[Any] = ConnectionPool(
            self.url,
            kwargs={**self._connect_kwargs, "application_name": name},
            min_size=size,
            max_size=size,
            name=name,
            timeout=timeout,
            # A slot that cannot reconnect gives up after this and is made
            # again by the next call that needs it (PostgreSQL is back by then,
            # or the call fails fast as unavailable).
            reconnect_timeout=10.0,
            configure=self._check_server,
            open=False,
        )
        pool.open(wait=False)
        return pool

    def _check_server(self, conn: psycopg.Connection[Any]) -> None:
        """Every new connection, before its first use: refused (WrongServer)
        if its server is a standby or on an older timeline than one this
        replica already wrote to; a newer timeline (a promotion) is noted."""
        timeline = server_timeline(conn)
        with self._timeline_guard:
            seen = self._timeline
            if timeline < seen:
                raise WrongServer(
                    f"the server at {conn.info.host}:{conn.info.port} is on WAL timeline {timeline}, older "
                    f"than timeline {seen} already written to: a former primary that was not demoted"
                )
            self._timeline = timeline
        if seen and timeline > seen:
            # A promotion. Writes acknowledged on the old timeline are on this
            # one only if the standby was synchronous (see the README).
            emit(
                log,
                logging.WARNING,
                "database_timeline_changed",
                from_timeline=seen,
                to_timeline=timeline,
                server=f"{conn.info.host}:{conn.info.port}",
            )

    # -- errors and availability ----------------------------------------------

    def _store_error(self, exc: BaseException) -> BaseException:
        if _is_unavailable(exc):
            self._suspect.set()
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                reason = "another write to this channel held it longer than lock_timeout"
            elif isinstance(exc, psycopg.errors.QueryCanceled):
                reason = "the database did not answer within statement_timeout"
            elif isinstance(exc, PoolTimeout):
                reason = "no database connection could be had in time"
            elif isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                reason = "the database is read-only (a standby, or in read-only mode)"
            else:
                reason = "the database connection failed"
            detail = str(exc).strip() or type(exc).__name__
            return StoreUnavailable(f"{reason} ({detail}); nothing was applied")
        return super()._store_error(exc)

    def _check_available(self) -> None:
        if self._closed.is_set():
            raise StoreError("the store is closed")
        if not self._available:
            raise StoreUnavailable(
                f"the database is unreachable (for {time.monotonic() - self._unavailable_since:.0f} s: "
                f"{self._unavailable_reason}); this replica reconnects by itself, retry the call"
            )

    @property
    def available(self) -> bool:
        return self._available

    # -- connections -------------------------------------------------------------

    @contextlib.contextmanager
    def _read_connection(self) -> Iterator[Any]:
        with self._begun(self._read_pool, self.begin_read) as conn:
            yield conn

    @contextlib.contextmanager
    def _write_connection(self) -> Iterator[Any]:
        with self._begun(self._write_pool, self.begin_write) as conn:
            yield conn

    @contextlib.contextmanager
    def _begun(self, pool: ConnectionPool[Any], begin: str) -> Iterator[Any]:
        """A pooled connection with its transaction begun. A connection that
        died while idle in the pool (terminated backends, a firewall's idle
        timeout, a database restart) fails at BEGIN, before anything of the
        call was sent: it is dropped and the next one tried, so the call does
        not fail for it."""
        self._check_available()
        for attempt in range(pool.max_size + 1):
            conn = pool.getconn()
            try:
                conn.execute(begin)
            except psycopg.OperationalError:
                pool.putconn(conn)  # broken: the pool discards it and makes another
                if not conn.broken or attempt == pool.max_size:
                    raise
                self._suspect.set()
                continue
            try:
                yield conn
            except psycopg.errors.ReadOnlySqlTransaction:
                # This connection takes no writes: never reuse it, so that the
                # next one chooses among the hosts afresh.
                conn.close()
                self._suspect.set()
                raise
            finally:
                pool.putconn(conn)
            return

    def _started_write(self, conn: Any, channel_id: str) -> tuple[str, int]:
        """Takes the channel's lock; the transaction's id (in the same round
        trip) and the timeline it runs on, by which a commit whose answer was
        lost is resolved."""
        if channel_id:
            row = conn.execute(
                "SELECT pg_current_xact_id()::text, pg_advisory_xact_lock(%s, hashtext(%s))",
                (WRITE_LOCK_NAMESPACE, channel_id),
            ).fetchone()
        else:
            row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        return str(row[0]), self._timeline

    def _commit(self, conn: Any, started: tuple[str, int]) -> None:
        """COMMIT; if the connection is lost before its answer arrives, the
        database is asked what became of the transaction, so that a write
        that did commit is reported as committed (its listeners told), one
        that did not as failed, and only an unreadable outcome as unknown."""
        try:
            conn.execute("COMMIT")
        except psycopg.OperationalError as exc:
            status = self._transaction_status(*started)
            if status == "committed":
                emit(log, logging.WARNING, "commit_answer_lost", xact_id=started[0], outcome="committed")
                return
            if status == "aborted":
                raise
            raise StoreUnavailable(
                f"the connection was lost during COMMIT ({str(exc).strip()}) and the outcome could not be "
                f"read ({status}): the write may have been applied; read before retrying"
            ) from exc

    def _transaction_status(self, xact_id: str, timeline: int) -> str:
        """pg_xact_status of a transaction, read on a connection of its own
        (waiting briefly while its backend is still finishing it). Only the
        server on the transaction's timeline can say: after a promotion the
        new primary reuses transaction ids the old one had handed out, and
        would answer for another transaction."""
        deadline = time.monotonic() + 5.0
        try:
            with psycopg.connect(self.url, **self._connect_kwargs, application_name="playlog-probe") as conn:
                now_on = server_timeline(conn)
                if now_on != timeline:
                    return f"unknown: the database failed over (timeline {timeline} -> {now_on})"
                while True:
                    row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xact_id,)).fetchone()
                    status = str(row[0]) if row and row[0] else "unknown"
                    if status != "in progress" or time.monotonic() > deadline:
                        return status
                    self._closed.wait(0.02)
        except psycopg.Error as exc:
            return f"unreadable: {str(exc).strip()}"

    @contextlib.contextmanager
    def _channel_turn(self, channel_id: str) -> Iterator[None]:
        """This replica's writes to one channel, one at a time (the database
        serializes them anyway; taking turns here too keeps after_commit in
        commit order). Other channels never wait."""
        if not channel_id:
            yield
            return
        with self._turns_guard:
            turn = self._turns.get(channel_id)
            if turn is None:
                turn = self._turns[channel_id] = [threading.Lock(), 0]
            turn[1] += 1
        try:
            with turn[0]:
                yield
        finally:
            with self._turns_guard:
                turn[1] -= 1
                if turn[1] == 0:
                    del self._turns[channel_id]

    def run_write(
        self, fn: Callable[[Any], _T], after_commit: Callable[[_T], None] | None = None, channel_id: str = ""
    ) -> _T:
        """fn(view) in a transaction of its own, on a pooled connection,
        serialized with the channel's other writes on every replica. PostgreSQL
        merges the WAL flushes of concurrent commits by itself."""
        with self._channel_turn(channel_id):
            with self.write(channel_id) as view:
                result = fn(view)
            self._tell(after_commit, result)
        return result

    # -- the listener: doorbells and health ------------------------------------

    def listen(self, listener: StoreListener) -> None:
        self._listener_thread = threading.Thread(
            target=self._listen, args=(listener,), name="playlog-pg-listen", daemon=True
        )
        self._listener_thread.start()

    def _set_available(self, available: bool, reason: str, listener: StoreListener) -> None:
        if available == self._available:
            return
        if available:
            self._available = True
            down_for = time.monotonic() - self._unavailable_since
            emit(log, logging.WARNING, "database_reachable", unavailable_for_s=round(down_for, 3))
        else:
            self._unavailable_reason = reason
            self._unavailable_since = time.monotonic()
            self._available = False
            emit(log, logging.ERROR, "database_unreachable", error=reason)
        listener.availability_changed(available, reason)

    def _probe(self, listener: StoreListener) -> bool:
        """Whether the database answers: on a pooled connection (a database
        that only refuses new connections still serves this replica), else on
        a new one, in which case the pools, whose connections all broke, are
        replaced at once rather than after their reconnection backoff."""
        try:
            with self._write_pool.connection(timeout=0.5) as conn:
                conn.execute("SELECT 1")
            self._set_available(True, "", listener)
            return True
        except (psycopg.Error, PoolTimeout):
            pass
        try:
            with psycopg.connect(self.url, **self._connect_kwargs, application_name="playlog-probe") as conn:
                self._check_server(conn)
        except psycopg.Error as exc:
            self._set_available(False, str(exc).strip() or type(exc).__name__, listener)
            return False
        self._replace_pools()
        self._set_available(True, "", listener)
        return True

    def _replace_pools(self) -> None:
        if self._closed.is_set():
            return  # closing: no new pools to leak
        old = (self._read_pool, self._write_pool)
        self._read_pool = self._pool("playlog-read", old[0].max_size, old[0].timeout)
        self._write_pool = self._pool("playlog-write", old[1].max_size, old[1].timeout)
        for pool in old:
            # Calls still holding one of its connections give it back to a
            # closed pool, which closes it.
            pool.close(timeout=0)

    def _listen(self, listener: StoreListener) -> None:
        backoff = 0.1
        missed = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(
                    self.url, **self._connect_kwargs, application_name="playlog-listen"
                ) as conn:
                    self._check_server(conn)
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff = 0.1
                    probed = time.monotonic()
                    if missed and self._probe(listener):
                        # Doorbells rung while this replica did not listen were
                        # lost: every watcher reads the history from its cursor.
                        listener.publish_committed(ALL_CHANNELS, 0)
                        missed = False
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.25):
                            _dispatch_safely(note.payload, listener)
                        if self._suspect.is_set():
                            # A call lost its connection: are the pool's others good?
                            self._suspect.clear()
                            self._probe(listener)
                        if time.monotonic() - probed > PROBE_INTERVAL_S:
                            conn.execute("SELECT 1")
                            probed = time.monotonic()
                            if missed and self._probe(listener):
                                listener.publish_committed(ALL_CHANNELS, 0)
                                missed = False
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                missed = True
                emit(log, logging.WARNING, "notify_listener_reconnecting", error=str(exc).strip())
                self._probe(listener)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._read_pool.close()
        self._write_pool.close()
        if self._listener_thread is not None:
            self._listener_thread.join(timeout=5)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('playlog_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    version = conn.execute("SELECT version FROM playlog_schema").fetchone()
    return int(version[0]) if version else 0


def audit_read_only(url: str, channel_id: str = "") -> list[IntegrityFinding]:
    """The integrity audit in one READ ONLY transaction (PostgreSQL itself
    refuses any write in it, and every query sees one snapshot); a schema
    other than this playlog's is refused, not migrated (SchemaUnknown)."""
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=10, application_name="playlog-verify"
        ) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                check_schema_known(schema_version(conn), len(MIGRATIONS), "the PostgreSQL database")
                return PostgresView(conn, FaultInjector()).verify_integrity(channel_id)
            finally:
                conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the PostgreSQL database: {str(exc).strip()}") from exc


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Brings the schema to the latest version; replicas starting together
    take turns on an advisory lock."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))
        current = schema_version(conn)
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this playlog knows "
                f"({len(MIGRATIONS)}); upgrade playlog"
            )
        if current == 0:
            conn.execute("CREATE TABLE playlog_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO playlog_schema (version) VALUES (0)")
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            conn.execute(script.encode())  # several statements: no parameters
            if version == PAYLOAD_VERSION:
                backfill_payloads(lambda sql, params=(): conn.execute(_translate(sql, False), params))
            conn.execute("UPDATE playlog_schema SET version = %s", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return schema_version(conn)
