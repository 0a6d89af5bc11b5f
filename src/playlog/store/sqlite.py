"""The embedded default store: SQLite in a data directory.

WAL with synchronous=FULL, so a write is on disk when its call returns. Every
write runs in one BEGIN IMMEDIATE transaction on the single writer connection
(writes are serialized here, which is what keeps a channel's checks and its
commit atomic); reads run in their own transaction on a pooled connection and
so see one consistent snapshot.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from playlog.store.base import (
    FaultInjector,
    IntegrityFinding,
    StoreError,
    StoreListener,
    check_schema_known,
)
from playlog.store.sql import GroupCommitStore, SqlView, backfill_payloads
from playlog.store.sqlite_schema import MIGRATIONS, PAYLOAD_VERSION

DB_FILE = "playlog.sqlite3"
# Held (flock, exclusive) by the one process serving the data directory; it
# holds that process's pid for the message a second one gets.
LOCK_FILE = "LOCK"


class DataDirInUse(StoreError):
    """Another playlog process serves this data directory."""


def _lock_data_dir(data_dir: Path) -> int:
    """Takes the data directory's exclusive lock, or raises DataDirInUse.
    The lock goes with the returned descriptor (and with the process)."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(
            f"data directory {data_dir.resolve()} is in use by another playlog process "
            f"(pid {holder}); stop it, or give this one its own --data-dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


class SqliteView(SqlView):
    db_errors = (sqlite3.Error,)
    _current_by_block_id = "entries INDEXED BY entries_current_block_id"


class SqliteStore(GroupCommitStore):
    """SQLite in `data_dir`; schema migrated on open.

    One process serves a data directory: the store holds the directory's
    exclusive lock until closed, and a second store on it is refused with
    DataDirInUse (its watchers would never hear the other's publishes).
    `lock=False` is for the offline audit, which only reads.
    """

    view_class = SqliteView
    inline_reads = True
    # IMMEDIATE takes SQLite's write lock at BEGIN: the facts a write reads
    # cannot change before it commits.
    begin_write = "BEGIN IMMEDIATE"

    def __init__(self, data_dir: str | Path, read_connections: int = 4, *, lock: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        self._lock_fd = _lock_data_dir(self.data_dir) if lock else None
        try:
            writer = _connect(self.path)
            migrate(writer)
            super().__init__(writer, [_connect(self.path) for _ in range(read_connections)])
        except BaseException:
            self._release_lock()
            raise

    def listen(self, listener: StoreListener) -> None:
        """One process serves a data directory: nobody else changes it."""

    def close(self) -> None:
        # The owner's clean checkpoint leaves everything in the main database
        # file; the offline audit (lock=False) leaves that to the owner.
        owner = self._lock_fd is not None
        self._close_connections(_checkpoint if owner else None)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _checkpoint(writer: sqlite3.Connection) -> None:
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def audit_read_only(data_dir: str | Path, channel_id: str = "") -> list[IntegrityFinding]:
    """The integrity audit on a read-only connection (`mode=ro`: SQLite
    itself refuses any write), without the data directory's lock, so that it
    runs beside the serving process; a schema other than this playlog's is
    refused, not migrated (SchemaUnknown)."""
    path = Path(data_dir) / DB_FILE
    if not path.exists():
        raise StoreError(f"no store in {data_dir} (no {DB_FILE})")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        check_schema_known(schema_version(conn), len(MIGRATIONS), f"the SQLite store {path}")
        conn.execute("BEGIN")  # one snapshot for every query of the audit
        try:
            return SqliteView(conn, FaultInjector()).verify_integrity(channel_id)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the SQLite store {path}: {exc}") from exc
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection) -> int:
    """Brings the schema to the latest version, one transaction per step."""
    current = schema_version(conn)
    if current > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {current} is newer than this playlog knows "
            f"({len(MIGRATIONS)}); upgrade playlog"
        )
    for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            if version == PAYLOAD_VERSION:
                backfill_payloads(conn.execute)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def _statements(script: str) -> list[str]:
    """Splits a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
