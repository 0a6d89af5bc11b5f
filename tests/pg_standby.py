"""A PostgreSQL primary and its synchronous standby, built for one test from
Debian's server binaries on free ports in a temporary directory, and removed
afterwards: what a broadcaster's Patroni / repmgr / managed service runs,
without the orchestration, so a test can kill the primary and promote the
standby itself.

The primary waits for the standby to have flushed each commit
(synchronous_standby_names, synchronous_commit=on) before it answers, which
is what makes "every acknowledged write survives a failover" true at all.
fsync is off on both: the test kills processes, never the machine, so the
operating system's page cache holds every flushed page anyway and the
clusters build in a fraction of the time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

STANDBY_NAME = "playlog_standby"
DATABASE = "playlog"


def _bin_dir() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Node:
    name: str
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


@dataclasses.dataclass
class Pair:
    """The primary and the standby; `url` names both, read-write first."""

    root: Path
    primary: Node
    standby: Node
    _bin: Path
    _user: str | None

    @property
    def url(self) -> str:
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{DATABASE}"
            "?target_session_attrs=read-write"
        )

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # initdb and postgres refuse to run as root: as root, the tools run as
        # the postgres account, which owns the temporary directory.
        argv = [str(self._bin / tool), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done

    def start(self, node: Node) -> None:
        self.run("pg_ctl", "-D", str(node.data), "-l", str(self.root / f"{node.name}.log"), "-w", "start")

    def kill_primary(self) -> None:
        """The primary's processes end at once, with no shutdown checkpoint:
        what a crashed machine or a fenced node looks like to its clients."""
        self.run("pg_ctl", "-D", str(self.primary.data), "-m", "immediate", "-w", "stop")

    def promote_standby(self) -> None:
        """The standby becomes a primary on a new timeline (returns once it
        accepts writes)."""
        self.run("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "30", "promote")

    def restart_former_primary_alone(self) -> None:
        """The killed primary started again as it was, a primary on its old
        timeline that knows nothing of the promotion and, waiting for no
        standby, takes writes by itself: the split brain a fencing mechanism
        (Patroni's, a managed service's) exists to prevent."""
        with (self.primary.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("synchronous_standby_names = ''\n")
        self.start(self.primary)

    def wait_synchronous(self, timeout: float = 30.0) -> None:
        """Until the primary reports the standby as its synchronous one."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (STANDBY_NAME,)
                ).fetchone()
                if row is not None and row[0] == "sync":
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby never became synchronous ({row})")
                time.sleep(0.05)

    def log(self, node: Node) -> str:
        path = self.root / f"{node.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for node in (self.primary, self.standby):
            if (node.data / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop", check=False)


_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{root}'
wal_level = replica
max_wal_senders = 4
hot_standby = on
synchronous_commit = on
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
"""


@contextlib.contextmanager
def primary_and_standby() -> Iterator[Pair]:
    """A primary with one synchronous standby, both running, a database
    `playlog` on them; everything stopped and removed afterwards."""
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="playlog-pg-failover-"))
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(root, account.pw_uid, account.pw_gid)
    root.chmod(0o700)
    primary = Node("primary", root / "primary", _free_port())
    standby = Node("standby", root / "standby", _free_port())
    pair = Pair(root, primary, standby, _bin_dir(), user)
    try:
        pair.run(
            "initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(_CONFIG.format(port=primary.port, root=root))
        pair.start(primary)
        with psycopg.connect(primary.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE}")
        # -R: the copy starts as a standby of the primary (standby.signal and
        # primary_conninfo), named so the primary counts it as synchronous.
        pair.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(standby.data),
            "-X",
            "stream",
            "-R",
            "--no-sync",
            # An immediate checkpoint to start from, not a spread one.
            "--checkpoint=fast",
            "-d",
            f"application_name={STANDBY_NAME}",
        )
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {standby.port}\n")
        pair.start(standby)
        # Only now the primary waits for it (set earlier, CREATE DATABASE and
        # the base backup itself would wait for a standby not there yet).
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            conn.execute("SELECT pg_reload_conf()")
        pair.wait_synchronous()
        yield pair
    finally:
        pair.stop_all()
        shutil.rmtree(root, ignore_errors=True)
