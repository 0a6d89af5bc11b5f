"""Schema version 7 (issue 16): channel metadata as columns of channels, on
both stores; a version 6 database keeps its channels, which get no metadata
(the guide then derives their name and guide_id)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from playlog.domain.channels import guide_id_of
from playlog.domain.model import Channel, ChannelMetadata
from playlog.store import postgres, postgres_schema
from playlog.store.base import Store
from playlog.store.sqlite import DB_FILE, SqliteStore, _statements, schema_version
from playlog.store.sqlite_schema import MIGRATIONS
from tests.postgres import fresh_postgres_database

META = ChannelMetadata(
    "News 24", "4.1", "https://img.example/n.png", "udp://@239.0.0.1:1234", "news.example.net"
)


def kept_and_declared(store: Store) -> None:
    with store.read() as r:
        kept = r.get_channel("kept")
        assert kept == Channel("kept", 60_000, 3, ChannelMetadata())
        assert guide_id_of(kept) == "kept.playlog"
    with store.write() as w:
        w.update_channel_metadata("kept", META)
        w.insert_channel(Channel("new", 1000, 0, ChannelMetadata(display_name="New")))
    with store.read() as r:
        assert r.get_channel("kept") == Channel("kept", 60_000, 3, META)
        assert [(c.channel_id, c.metadata.display_name) for c in r.list_channels()] == [
            ("kept", "News 24"),
            ("new", "New"),
        ]


def test_a_version_6_sqlite_database_is_migrated_to_7_and_keeps_its_channels(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:6], start=1):
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO channels (channel_id, locked_window_ms, current_generation_id) VALUES ('kept', 60000, 3)"
    )
    conn.close()
    store = SqliteStore(tmp_path)
    try:
        kept_and_declared(store)
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert schema_version(conn) == len(MIGRATIONS) == 7
    conn.close()


def test_a_version_6_postgres_database_is_migrated_to_7_and_keeps_its_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fresh_postgres_database() as url:
        monkeypatch.setattr(postgres, "MIGRATIONS", postgres_schema.MIGRATIONS[:6])
        with psycopg.connect(url, autocommit=True) as conn:
            assert postgres.migrate(conn) == 6
            conn.execute(
                "INSERT INTO channels (channel_id, locked_window_ms, current_generation_id) "
                "VALUES ('kept', 60000, 3)"
            )
        monkeypatch.undo()
        store = postgres.PostgresStore(url, read_connections=1)
        try:
            kept_and_declared(store)
        finally:
            store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            assert postgres.schema_version(conn) == len(postgres_schema.MIGRATIONS) == 7
