"""PostgreSQL for the tests: the machine's server (started if it is down), one
fresh database per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg

# The admin connection; the machine's PostgreSQL trusts local connections.
ADMIN_URL = os.environ.get("PLAYLOG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_started = False


def ensure_postgres() -> None:
    """Starts the local cluster if it is not up (the tests need it)."""
    global _started
    if _started:
        return
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
        if not versions or shutil.which("pg_ctlcluster") is None:
            raise
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
            check=False,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(ADMIN_URL, connect_timeout=3).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    _started = True


def _cluster() -> str:
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise RuntimeError("no local PostgreSQL cluster to restart (pg_ctlcluster)")
    return versions[-1].name


@contextlib.asynccontextmanager
async def stopped_cluster() -> AsyncIterator[None]:
    """The machine's PostgreSQL cluster stopped (every connection closed, new
    ones refused) for the body, started again after it."""
    version = _cluster()

    def ctl(action: str, *extra: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
            check=True,
            capture_output=True,
        )

    await asyncio.to_thread(ctl, "stop", "-m", "fast")
    try:
        yield
    finally:
        await asyncio.to_thread(ctl, "start")


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    ensure_postgres()
    name = f"playlog_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
