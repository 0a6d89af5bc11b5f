"""`playlog verify` only reads: SQLite opened `mode=ro`, PostgreSQL in a READ
ONLY transaction, never migrated, and a store whose schema is older or newer
than this playlog's is refused by name (exit 2), left exactly as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from playlog.cli import main
from playlog.store.postgres import PostgresStore
from playlog.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from playlog.store.sqlite import DB_FILE, SqliteStore
from playlog.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.postgres import fresh_postgres_database


def _digest(data_dir: Path) -> str:
    """The database file's bytes, and that no write is waiting in its WAL. (A
    read-only reader of a WAL database still needs the -shm index and an
    -wal file to exist, and SQLite creates them, empty of any change.)"""
    wal = data_dir / f"{DB_FILE}-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "a change is waiting in the WAL"
    return hashlib.sha256((data_dir / DB_FILE).read_bytes()).hexdigest()


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    return code, capsys.readouterr().err


def _sqlite_at(data_dir: Path, version: int) -> None:
    """A SQLite store whose schema stops at `version` (as an older playlog
    left it), or claims `version` beyond what this one knows."""
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_FILE, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in SQLITE_MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def _user_version(data_dir: Path) -> int:
    with sqlite3.connect(f"{(data_dir / DB_FILE).as_uri()}?mode=ro", uri=True) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_clean_sqlite_store_is_audited_without_a_byte_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SqliteStore(tmp_path / "d").close()
    before = _digest(tmp_path / "d")
    code, err = _verify(capsys, "--data-dir", str(tmp_path / "d"))
    assert code == 0, err
    assert "0 violation(s) found" in err
    assert _digest(tmp_path / "d") == before


@pytest.mark.parametrize("version", [1, len(SQLITE_MIGRATIONS) - 1])
def test_an_older_sqlite_schema_is_named_and_not_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int
) -> None:
    _sqlite_at(tmp_path / "d", version)
    before = _digest(tmp_path / "d")
    code, err = _verify(capsys, "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert f"schema version {version}, older than this playlog's {len(SQLITE_MIGRATIONS)}" in err
    assert _user_version(tmp_path / "d") == version
    assert _digest(tmp_path / "d") == before


def test_a_newer_sqlite_schema_is_named_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sqlite_at(tmp_path / "d", len(SQLITE_MIGRATIONS))
    conn = sqlite3.connect(tmp_path / "d" / DB_FILE, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {len(SQLITE_MIGRATIONS) + 1}")
    conn.close()
    before = _digest(tmp_path / "d")
    code, err = _verify(capsys, "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert f"newer than this playlog knows ({len(SQLITE_MIGRATIONS)})" in err
    assert _digest(tmp_path / "d") == before


def test_a_missing_sqlite_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _verify(capsys, "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "no store in" in err
    assert not (tmp_path / "none").exists()


def test_the_sqlite_connection_refuses_writes(tmp_path: Path) -> None:
    """What makes the audit read-only is SQLite's own mode=ro, not care: the
    same connection the audit opens refuses a write (root ignores file
    permissions, so they would prove nothing)."""
    SqliteStore(tmp_path / "d").close()
    uri = f"{(tmp_path / 'd' / DB_FILE).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("CREATE TABLE written (x INTEGER)")
    conn.close()


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def _pg_at(url: str, version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE playlog_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO playlog_schema (version) VALUES (%s)", (version,))
        for script in PG_MIGRATIONS[:version]:
            conn.execute(script.encode())


def _pg_state(url: str) -> tuple[int, list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SELECT version FROM playlog_schema").fetchone()
        tables = [
            str(r[0])
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ]
    return int(version[0]) if version else -1, tables


def test_a_clean_postgres_store_is_audited_in_a_read_only_transaction(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    PostgresStore(database, read_connections=1, write_connections=1).close()
    before = _pg_state(database)
    code, err = _verify(capsys, "--database-url", database)
    assert code == 0, err
    assert "0 violation(s) found" in err
    assert _pg_state(database) == before


@pytest.mark.parametrize("version", [1, len(PG_MIGRATIONS) - 1])
def test_an_older_postgres_schema_is_named_and_not_migrated(
    database: str, capsys: pytest.CaptureFixture[str], version: int
) -> None:
    _pg_at(database, version)
    before = _pg_state(database)
    code, err = _verify(capsys, "--database-url", database)
    assert code == 2
    assert f"schema version {version}, older than this playlog's {len(PG_MIGRATIONS)}" in err
    assert _pg_state(database) == before


def test_a_newer_postgres_schema_is_named_and_left_alone(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _pg_at(database, len(PG_MIGRATIONS))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE playlog_schema SET version = %s", (len(PG_MIGRATIONS) + 1,))
    before = _pg_state(database)
    code, err = _verify(capsys, "--database-url", database)
    assert code == 2
    assert f"newer than this playlog knows ({len(PG_MIGRATIONS)})" in err
    assert _pg_state(database) == before


def test_an_empty_postgres_database_is_not_given_a_schema(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _verify(capsys, "--database-url", database)
    assert code == 2 and "holds no playlog schema" in err
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('playlog_schema')").fetchone() == (None,)
