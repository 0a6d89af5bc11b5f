"""One process serves a data directory (issue 8): a second store or `playlog
serve` on it is refused with a clear message, as etcd and Prometheus refuse,
instead of starting and leaving its watchers deaf to the other's publishes.
The offline audit still runs beside the serving process."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest

from playlog.store.base import StoreError
from playlog.store.sqlite import DB_FILE, LOCK_FILE, DataDirInUse, SqliteStore
from playlog.store.sqlite_schema import MIGRATIONS
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from tests.builders import HOUR, T0

TIMEOUT = 30.0


def in_use_message(data_dir: Path, pid: int) -> str:
    return (
        f"data directory {data_dir.resolve()} is in use by another playlog process (pid {pid}); "
        "stop it, or give this one its own --data-dir"
    )


# -- in-process --------------------------------------------------------------------------


def test_a_second_store_on_one_data_directory_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    try:
        with pytest.raises(DataDirInUse) as refused:
            SqliteStore(tmp_path)
        assert str(refused.value) == in_use_message(tmp_path, os.getpid())
        assert isinstance(refused.value, StoreError)
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        # The refused one changed nothing: the first still writes and reads.
        with first.write() as w:
            w.save_manual_clock_utc_ms(T0)
        with first.read() as r:
            assert r.manual_clock_utc_ms() == T0
    finally:
        first.close()
    second = SqliteStore(tmp_path)
    try:
        with second.read() as r:
            assert r.manual_clock_utc_ms() == T0
        with pytest.raises(DataDirInUse):
            SqliteStore(tmp_path)
    finally:
        second.close()


def test_a_store_that_fails_to_open_leaves_the_directory_unlocked(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(tmp_path)
    with (tmp_path / LOCK_FILE).open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held


def test_the_offline_audit_reads_beside_the_lock_holder(tmp_path: Path) -> None:
    owner = SqliteStore(tmp_path)
    try:
        with owner.write() as w:
            w.save_manual_clock_utc_ms(T0)
        audit = SqliteStore(tmp_path, read_connections=1, lock=False)
        try:
            with audit.read() as r:
                assert r.verify_integrity("") == []
                assert r.manual_clock_utc_ms() == T0
        finally:
            audit.close()
        # The audit neither took nor dropped the owner's lock.
        with pytest.raises(DataDirInUse):
            SqliteStore(tmp_path)
        with owner.write() as w:
            w.save_manual_clock_utc_ms(T0 + 1)
    finally:
        owner.close()


# -- the served process ------------------------------------------------------------------


class Serve:
    """`python -m playlog serve` on the manual clock, its stderr JSON lines read
    by a thread into a queue as they come."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "playlog", "serve", "--clock", "manual", "--start-utc-ms", str(T0),
             "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        self.seen: list[str] = []

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)  # end of output: the process exited

    def event(self, name: str) -> dict[str, Any]:
        """The next JSON log line of this event (skipping others)."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {name!r} event within {TIMEOUT}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before {name!r}: {self.seen}")
            self.seen.append(line)
            doc = json.loads(line)
            if doc["event"] == name:
                return dict(doc)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def first(data_dir: Path) -> Iterator[Serve]:
    server = Serve(data_dir)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def declare(port: int, channel_id: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ch_grpc.ChannelServiceStub(channel).DeclareChannel(
            ch.DeclareChannelRequest(channel_id=channel_id, locked_window_ms=HOUR), timeout=10
        )


def channel_ids(port: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        listed = ch_grpc.ChannelServiceStub(channel).ListChannels(ch.ListChannelsRequest(), timeout=10)
    return [c.channel_id for c in listed.channels]


def serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "playlog", "serve", "--clock", "manual", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )  # fmt: skip


def test_a_second_server_on_one_data_directory_exits_2_and_the_first_keeps_serving(
    first: Serve, data_dir: Path
) -> None:
    port = first.event("serving")["port"]
    declare(port, "before")

    second = serve_once(data_dir)
    assert second.returncode == 2, second.stderr
    assert second.stderr == f"playlog: {in_use_message(data_dir, first.proc.pid)}\n"
    assert "Traceback" not in second.stderr

    # The first is unharmed: it serves, writes and keeps what it had.
    assert first.proc.poll() is None
    declare(port, "after")
    assert channel_ids(port) == ["after", "before"]
    assert first.stop() == 0
    first.event("stopped")


def test_playlog_verify_runs_while_a_server_holds_the_data_directory(first: Serve, data_dir: Path) -> None:
    port = first.event("serving")["port"]
    declare(port, "audited")
    result = subprocess.run(
        [sys.executable, "-m", "playlog", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0 violation(s) found" in result.stderr
    # The server did not lose its lock to the audit, and serves on.
    assert serve_once(data_dir).returncode == 2
    declare(port, "after-audit")
    assert first.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_data_directory_is_free_again_once_its_server_is_gone(
    first: Serve, data_dir: Path, sig: int
) -> None:
    port = first.event("serving")["port"]
    declare(port, "kept")
    first.stop(sig)
    # The LOCK file stays behind, with the dead pid; the lock went with the process.
    assert (data_dir / LOCK_FILE).read_text() == f"{first.proc.pid}\n"
    again = Serve(data_dir)
    try:
        assert channel_ids(again.event("serving")["port"]) == ["kept"]
        assert (data_dir / LOCK_FILE).read_text() == f"{again.proc.pid}\n"
    finally:
        assert again.stop() == 0
