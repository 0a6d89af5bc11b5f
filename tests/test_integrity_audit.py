"""VerifyIntegrity and `playlog verify`: each kind of corruption, written
straight into the database behind the service's back, is reported; a clean
store reports nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from playlog.clock import ManualClock
from playlog.store.sqlite import DB_FILE
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from tests.builders import DAY, HOUR, T0, date_of, entry, schedule_day
from tests.conftest import Running

CH = "ch1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 - DAY)


@pytest.fixture
async def populated(running: Running) -> Running:
    """Two published days (the second published twice), a ScheduleDay override,
    and an execution-window override: every kind of artifact, all clean."""
    await running.declare(CH, HOUR)
    await running.declare("other", HOUR)
    await running.store_days(CH, T0, T0 + DAY)
    for start, prefix in ((T0, "d1-"), (T0 + DAY, "d2-"), (T0 + DAY, "d2b-")):
        result = await running.publish_day(CH, start, prefix)
        assert result.ok, result
    running.clock.set_utc_ms(T0)
    overridden = await running.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id=CH,
            range_start_utc_ms=T0,
            range_end_utc_ms=T0 + DAY // 48,
            entries=[entry("live", T0, T0 + DAY // 48)],
            operator_override=True,
            reason_code="BREAKING_NEWS",
        )
    )
    assert overridden.ok
    day = schedule_day(CH, date_of(T0 + DAY), plan_id="")
    result = await running.stubs.days.OperatorOverride(
        sd.OperatorOverrideRequest(schedule_day=day, reason_code="X")
    )
    assert result.ok
    return running


async def kinds(r: Running, channel_id: str = "") -> list[str]:
    resp = await r.stubs.audit.VerifyIntegrity(audit.VerifyIntegrityRequest(channel_id=channel_id))
    return sorted(
        audit.IntegrityViolationKind.Name(v.kind).removeprefix("INTEGRITY_VIOLATION_KIND_")
        for v in resp.violations
    )


TRIGGER_TABLES = {
    "override_records_no_delete": "override_records",
    "entries_content_immutable": "entries",
    "schedule_days_no_delete": "schedule_days",
}


def tamper(r: Running, *statements: str) -> None:
    """Writes straight into the store's database, behind the service."""
    url = r.server.settings.database_url
    if not url:
        conn = sqlite3.connect(r.data_dir / DB_FILE, isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in statements:
            if statement.startswith("DROP TRIGGER "):
                name = statement.split()[-1]
                statement = f"{statement} ON {TRIGGER_TABLES[name]}"
            pg.execute(statement)


CURRENT = "superseded_by_generation IS NULL AND channel_id = 'ch1'"
SEGS = '[["s","program","a",0,1000,"t"]]'

CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "OVERRIDE_WITHOUT_RECORD": (
        "DROP TRIGGER override_records_no_delete",
        "DELETE FROM override_records WHERE layer = 'EXECUTION_WINDOW'",
    ),
    "MIXED_GENERATIONS": (
        "DROP TRIGGER entries_content_immutable",
        f"UPDATE entries SET generation_id = 2 WHERE block_id = 'd2b-7' AND {CURRENT}",
    ),
    "GAP": (f"DELETE FROM entries WHERE block_id = 'd1-10' AND {CURRENT}",),
    "OVERLAP": (
        "INSERT INTO entries (channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
        "programming_day_date, transmission_log_ref, is_operator_override, generation_id) "
        f"SELECT 'ch1', 'intruder', 0, start_utc_ms + 1000, start_utc_ms + 2000, '{SEGS}', "
        f"programming_day_date, '', 0, generation_id FROM entries WHERE block_id = 'd1-20' AND {CURRENT}",
    ),
    "ENTRY_WITHOUT_SCHEDULE_DAY": (
        "DROP TRIGGER schedule_days_no_delete",
        f"DELETE FROM schedule_days WHERE programming_day_date = '{date_of(T0)}'",
    ),
    "DAY_WITHOUT_PLAN": (
        "INSERT INTO schedule_days (id, channel_id, programming_day_date, plan_id, is_manual_override, "
        "slots_json, resolved_utc_ms, is_authoritative) "
        "VALUES ('stray', 'ch1', '2030-01-01', NULL, 0, '[]', 0, 1)",
    ),
    "OVERRIDE_DAY_WITHOUT_SUPERSEDED": (
        "INSERT INTO schedule_days (id, channel_id, programming_day_date, plan_id, is_manual_override, "
        "supersedes_id, slots_json, resolved_utc_ms, is_authoritative, override_record_id) "
        "SELECT 'orphan', 'ch1', '2030-01-02', NULL, 1, 'vanished', '[]', 0, 1, id FROM override_records "
        "WHERE layer = 'SCHEDULE_DAY'",
    ),
    # The next publish would hand out generations its entries already carry.
    "GENERATION_BEHIND": ("UPDATE channels SET current_generation_id = 1 WHERE channel_id = 'ch1'",),
    "DUPLICATE_SCHEDULE_DAY": (
        "DROP INDEX schedule_days_one_per_date",
        "INSERT INTO schedule_days (id, channel_id, programming_day_date, plan_id, is_manual_override, "
        "slots_json, resolved_utc_ms, is_authoritative) "
        f"VALUES ('twin', 'ch1', '{date_of(T0)}', 'p', 0, '[]', 0, 1)",
    ),
}


async def test_a_clean_store_reports_nothing(populated: Running) -> None:
    assert await kinds(populated) == []
    assert await kinds(populated, CH) == []


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
async def test_each_corruption_written_behind_the_service_is_reported(populated: Running, kind: str) -> None:
    tamper(populated, *CORRUPTIONS[kind])
    found = await kinds(populated)
    assert kind in found, found
    if kind == "OVERLAP":
        assert set(found) <= {"OVERLAP", "GAP"}  # the intruder also leaves a gap behind it
    else:
        assert set(found) == {kind}
    assert await kinds(populated, "other") == []  # scoped to the channel asked about


def run_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "playlog", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite"])  # `playlog verify` reads a data directory
async def test_playlog_verify_offline_exits_1_on_corruption_and_0_when_clean(populated: Running) -> None:
    await populated.server.stop(0)
    clean = run_verify(populated.data_dir)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == ""
    tamper(populated, *CORRUPTIONS["GAP"])
    broken = run_verify(populated.data_dir)
    assert broken.returncode == 1
    assert '"kind": "GAP"' in broken.stdout and "d1-11" in broken.stdout


def test_playlog_verify_on_a_directory_without_a_store_says_so(tmp_path: Path) -> None:
    result = run_verify(tmp_path)
    assert result.returncode == 2 and "no store" in result.stderr
