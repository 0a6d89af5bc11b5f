"""The SQLite store itself: durability settings, schema versions, index use,
and the database-level guards behind the application's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from playlog.domain.model import Entry, Segment
from playlog.store.base import StoreError
from playlog.store.sqlite import DB_FILE, SqliteStore, schema_version
from playlog.store.sqlite_schema import MIGRATIONS


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path)
    yield s  # type: ignore[misc]
    s.close()


def test_the_store_runs_in_wal_with_full_synchronous_writes(store: SqliteStore) -> None:
    with store.write() as w:
        conn = w._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_the_schema_version_is_recorded_and_a_reopen_migrates_nothing(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert schema_version(conn) == len(MIGRATIONS)
    conn.close()
    SqliteStore(tmp_path).close()  # idempotent: no step runs twice


def test_a_database_from_a_newer_playlog_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(tmp_path)


@pytest.mark.parametrize(
    "method",
    [
        "entry_spans_overlapping",
        "stored_overlapping",
        "stored_ending_after",
        "stored_entry_at",
        "entry_at",
        "left_neighbour",
        "right_neighbour",
        "current_span",
        "block_ids_in_use_outside",
    ],
)
def test_reads_search_an_index_instead_of_scanning_the_channel(store: SqliteStore, method: str) -> None:
    """Read cost must grow with the entries returned, not with the entries stored."""
    statements: list[str] = []
    with store.read() as r:
        r._conn.set_trace_callback(statements.append)
        try:
            args: dict[str, tuple[object, ...]] = {
                "entry_spans_overlapping": ("ch1", 0, 10),
                "stored_overlapping": ("ch1", 0, 10),
                "stored_ending_after": ("ch1", 5, None, 10),
                "stored_entry_at": ("ch1", 5),
                "entry_at": ("ch1", 5),
                "left_neighbour": ("ch1", 5),
                "right_neighbour": ("ch1", 5),
                "current_span": ("ch1", "b1"),
                # (an IN list: the planner must still take current entries only)
                "block_ids_in_use_outside": ("ch1", ["b1", "b2"], 0, 10),
            }
            getattr(r, method)(*args[method])
        finally:
            r._conn.set_trace_callback(None)
        plans = []
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                plans += [row[3] for row in r._conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert plans
    scans = [p for p in plans if p.startswith("SCAN entries")]
    assert not scans, plans
    assert any("USING INDEX entries_current" in p for p in plans), plans


def test_database_triggers_refuse_in_place_changes(store: SqliteStore) -> None:
    conn = sqlite3.connect(store.path)
    conn.execute("INSERT INTO channels (channel_id, locked_window_ms) VALUES ('c', 1)")
    conn.execute(
        "INSERT INTO entries (channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
        "programming_day_date, transmission_log_ref, is_operator_override, generation_id) "
        "VALUES ('c', 'b', 0, 0, 10, '[]', '2026-11-22', '', 0, 1)"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="INV-PLAYLOG-LOCKED-IMMUTABLE-001"):
        conn.execute("UPDATE entries SET end_utc_ms = 20 WHERE block_id = 'b'")
    conn.execute("UPDATE entries SET superseded_by_generation = 2 WHERE block_id = 'b'")  # allowed
    conn.execute("UPDATE entries SET payload = x'0a01' WHERE block_id = 'b'")  # once: the v4 backfill
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="INV-PLAYLOG-LOCKED-IMMUTABLE-001"):
        conn.execute("UPDATE entries SET payload = x'0a02' WHERE block_id = 'b'")
    conn.close()


def test_a_version_1_database_is_migrated_on_open_and_keeps_its_data(tmp_path: Path) -> None:
    from playlog.store.sqlite import _statements

    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO channels (channel_id, locked_window_ms, current_generation_id) VALUES ('kept', 60000, 7)"
    )
    for generation, previous in ((5, 0), (7, 5)):
        conn.execute(
            "INSERT INTO publishes (channel_id, generation_id, previous_generation_id, range_start_utc_ms, "
            "range_end_utc_ms, reason_code, actor, operator_override, committed_utc_ms) "
            "VALUES ('kept', ?, ?, 0, 1, '', 'a', 0, 0)",
            (generation, previous),
        )
    conn.execute(
        "INSERT INTO entries (channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
        "programming_day_date, transmission_log_ref, is_operator_override, generation_id) "
        """VALUES ('kept', 'b', 3, 0, 1000, '[["s","program","asset://a",5,1000,"T"]]', """
        "'2026-11-22', 'log-1', 0, 7)"
    )
    conn.close()
    store = SqliteStore(tmp_path)
    try:
        with store.read() as r:
            # Version 4 encoded the older entry's wire form once.
            assert r.entry_at("kept", 10) == Entry(
                "kept", "b", 3, 0, 1000, (Segment("s", "program", "asset://a", 5, 1000, "T"),),
                "2026-11-22", "log-1", False, 7, "",
            )  # fmt: skip
            assert [c.channel_id for c in r.list_channels()] == ["kept"]
            assert r.manual_clock_utc_ms() is None  # the version 2 table exists
        with store.write() as w:
            w.save_manual_clock_utc_ms(42)
        with store.read() as r:
            assert r.manual_clock_utc_ms() == 42
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert schema_version(conn) == len(MIGRATIONS) == 7
    # Version 3 counts the kept publishes, and its floor is the oldest kept
    # publish's previous generation; the clock floor starts at 0.
    assert conn.execute("SELECT history_publishes, history_floor_generation FROM channels").fetchone() == (
        2,
        0,
    )
    assert conn.execute("SELECT acted_utc_ms FROM clock_floor").fetchone() == (0,)
    conn.close()
