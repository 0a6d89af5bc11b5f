"""The scale-out store: PostgreSQL, shared by several server replicas.

The queries are store/sql.py's, translated to psycopg's parameter style.
Writes from every replica are serialized in the database by one transaction-
scoped advisory lock taken first in each write transaction, so a channel's
checks and its commit stay atomic across replicas. Each publish sends a
NOTIFY at commit; every replica LISTENs on a dedicated connection and treats it
as a doorbell: its subscribers then read the durable publish history (NOTIFY
has no replay, so it is never the data itself).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from playlog.domain.publish import PublishPlan
from playlog.events import emit
from playlog.store.base import StoreError
from playlog.store.postgres_schema import MIGRATIONS, PAYLOAD_VERSION
from playlog.store.sql import SqlStore, SqlView, backfill_payloads

log = logging.getLogger("playlog.store")

NOTIFY_CHANNEL = "playlog_publish"
# Keys of pg_advisory_xact_lock: all writes, and schema migration.
WRITE_LOCK_KEY = 0x706C_6C67_7772
MIGRATE_LOCK_KEY = 0x706C_6C67_6D67
# A doorbell for every channel (after the listener reconnected and may have
# missed some).
ALL_CHANNELS = "*"

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

    def _after_publish(self, plan: PublishPlan) -> None:
        # Delivered at commit, to every replica's listener.
        self._q(
            "SELECT pg_notify(:ch, :payload)",
            {"ch": NOTIFY_CHANNEL, "payload": f"{plan.generation_id} {plan.channel_id}"},
        )


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc


class PostgresStore(SqlStore):
    view_class = PostgresView
    inline_reads = False
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, url: str, read_connections: int = 4) -> None:
        self.url = url
        writer = _connect(url)
        migrate(writer)
        super().__init__(writer, [_connect(url) for _ in range(read_connections)])
        self._listener: threading.Thread | None = None

    def _started_write(self, conn: Any) -> None:
        # Serializes writes across every replica sharing the database.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))

    def listen_for_publishes(self, callback: Callable[[str, int], None]) -> None:
        def run() -> None:
            backoff = 0.1
            first = True
            while not self._closed.is_set():
                try:
                    with psycopg.connect(
                        self.url, autocommit=True, application_name="playlog-listen"
                    ) as conn:
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        if not first:
                            callback(ALL_CHANNELS, 0)  # doorbells may have been missed
                        first, backoff = False, 0.1
                        while not self._closed.is_set():
                            for note in conn.notifies(timeout=0.5):
                                generation, _, channel_id = note.payload.partition(" ")
                                callback(channel_id, int(generation))
                except psycopg.Error as exc:
                    emit(log, logging.WARNING, "notify_listener_reconnecting", error=str(exc))
                    self._closed.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

        self._listener = threading.Thread(target=run, name="playlog-pg-listen", daemon=True)
        self._listener.start()

    def close(self) -> None:
        self._close_connections()
        if self._listener is not None:
            self._listener.join(timeout=5)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('playlog_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    version = conn.execute("SELECT version FROM playlog_schema").fetchone()
    return int(version[0]) if version else 0


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
