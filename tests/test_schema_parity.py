"""Two dialects, one truth (DESIGN-NOTES): the SQLite and PostgreSQL schemas,
both migrated to the latest version, describe the same tables, columns,
indexes and triggers, found by introspecting the databases themselves."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from playlog.store.postgres import PostgresStore
from playlog.store.sqlite import DB_FILE, SqliteStore
from tests.postgres import fresh_postgres_database

# Each dialect's own bookkeeping: the schema version table, AUTOINCREMENT's counters.
BOOKKEEPING = {"playlog_schema", "sqlite_sequence"}


def sqlite_schema(data_dir: Path) -> tuple[dict[str, list[str]], set[str], set[str]]:
    SqliteStore(data_dir).close()
    conn = sqlite3.connect(data_dir / DB_FILE)
    try:
        tables = {
            t: sorted(r[1] for r in conn.execute(f"PRAGMA table_info({t})"))
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if t not in BOOKKEEPING
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'"
            )
        }
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        conn.close()
    return tables, indexes, triggers


def postgres_schema(url: str) -> tuple[dict[str, list[str]], set[str], set[str]]:
    PostgresStore(url, read_connections=1).close()
    with psycopg.connect(url) as conn:
        tables: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ):
            if table not in BOOKKEEPING:
                tables.setdefault(table, []).append(column)
        # Primary keys and UNIQUE constraints are indexes PostgreSQL names
        # itself (SQLite's are its autoindexes).
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                "AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'"
            )
        }
        triggers = {r[0] for r in conn.execute("SELECT trigger_name FROM information_schema.triggers")}
    return {t: sorted(c) for t, c in tables.items()}, indexes, triggers


def test_the_sqlite_and_postgres_schemas_describe_the_same_tables(tmp_path: Path) -> None:
    lite_tables, lite_indexes, lite_triggers = sqlite_schema(tmp_path)
    with fresh_postgres_database() as url:
        pg_tables, pg_indexes, pg_triggers = postgres_schema(url)
    assert {"as_run", "engine_nacks", "engine_status"} <= set(lite_tables)
    assert lite_tables == pg_tables
    assert {"as_run_by_start", "entries_by_block", "entries_current_by_start"} <= lite_indexes
    assert lite_indexes == pg_indexes
    assert lite_triggers == pg_triggers
    # Evidence and records are append-only in both.
    assert {
        "as_run_no_update",
        "as_run_no_delete",
        "engine_nacks_no_update",
        "engine_nacks_no_delete",
    } <= lite_triggers
