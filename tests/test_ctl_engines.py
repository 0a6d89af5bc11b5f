"""`playlog ctl engines`, `as-run`, `reconcile`, `ack` and `report-as-run` as an
operator (or an engine developer) runs them: a subprocess against a served
process on the manual clock, the evidence reported through the Python stubs
(with no auth file the caller is the local principal, engine id `local`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import engine_service_pb2_grpc as eng_grpc
from tests.builders import HOUR, MINUTE, T0
from tests.test_ctl import H2, Ctl, ctl, iso, news_day, news_entry

__all__ = ["ctl"]  # the served-process fixture of tests.test_ctl

NOW = H2 + 40 * MINUTE  # 02:40: news-0 [02:00, 02:30) aired, news-1 [02:30, 03:00) on air


@pytest.fixture
def engine(ctl: Ctl) -> Iterator[eng_grpc.EngineServiceStub]:
    with grpc.insecure_channel(ctl.address) as channel:
        yield eng_grpc.EngineServiceStub(channel)


def aired(event_id: str, block: str, generation: int, start: int, end: int, **kw: object) -> eng.AsRunEvent:
    fields: dict[str, object] = {
        "event_id": event_id,
        "block_id": block,
        "generation_id": generation,
        "segment_id": "s1",
        "started_utc_ms": start,
        "ended_utc_ms": end,
        "status": eng.AS_RUN_STATUS_AIRED,
    }
    fields.update(kw)
    return eng.AsRunEvent(**fields)  # type: ignore[arg-type]


def evidence(ctl: Ctl, engine: eng_grpc.EngineServiceStub) -> None:
    """news (generation 1 at 00:00) acknowledged; news-3 replaced at 00:10
    (generation 2) and NACKed; at 02:40 news-0 reported as aired, 3 s late,
    and an as-run naming a block that never was."""
    news_day(ctl)
    ack = engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(channel_id="news", applied_generation_id=1, accepted=True)
    )
    assert ack.ok, ack
    ctl.ok("clock", "advance", "10m")
    late = ctl.file("late.json", news_entry("news-3", H2 + 90 * MINUTE, "Late"))
    ctl.ok("replace", "news", "news-3", "-f", late, "--reason", "LATE_CHANGE")
    nack = engine.AcknowledgeWindow(
        eng.AcknowledgeWindowRequest(
            channel_id="news", applied_generation_id=2, accepted=False, detail="cannot load asset://Late"
        )
    )
    assert nack.ok, nack
    ctl.ok("clock", "set", iso(NOW))
    report = engine.ReportAsRun(
        eng.ReportAsRunRequest(
            channel_id="news",
            events=[
                aired("e1", "news-0", 1, H2 + 3000, H2 + 30 * MINUTE, asset_uri="asset://News at Two"),
                aired("e2", "ghost", 9, H2 + 30 * MINUTE, H2 + 31 * MINUTE, status=eng.AS_RUN_STATUS_FAILED),
            ],
        )
    )
    assert report.ok and report.stored == 2 and list(report.untraced_event_ids) == ["e2"], report


def test_engines_shows_each_engines_lag_last_ack_as_run_and_nack(
    ctl: Ctl, engine: eng_grpc.EngineServiceStub
) -> None:
    evidence(ctl, engine)
    out = ctl.ok("engines", "news").splitlines()
    assert out[0] == f"channel news  now {iso(NOW)}  generation 2"
    assert out[1].split()[:5] == ["ENGINE", "CHANNEL", "APPLIED", "GEN", "BEHIND"]
    row = out[2]
    assert row.split()[:5] == ["local", "news", "1", "2", "1"], row
    since = T0 + 10 * MINUTE  # the commit of generation 2, the first one not applied
    # Behind since then, by the server's now; the last acknowledgement (the NACK) then too.
    assert row.count(f"{iso(since)} (2h30m ago)") == 2, row
    assert f"{iso(NOW)} (0s ago)  {iso(H2 + 31 * MINUTE)}" in row  # last as-run received, ended
    assert row.endswith(f"generation 2 at {iso(since)}: cannot load asset://Late")
    listed = ctl.json("engines", "news")
    assert listed["channel_generation_id"] == "2"
    engines = listed["engines"]
    assert isinstance(engines, list) and len(engines) == 1
    status = engines[0]
    assert status["engine_id"] == "local" and status["generations_behind"] == "1"
    assert status["behind_since_utc_ms"] == str(since) and status["last_nack_generation_id"] == "2"
    # Without a channel: every channel's engines.
    every = ctl.ok("engines").splitlines()
    assert every[0] == f"every channel  now {iso(NOW)}" and every[2].startswith("local ")
    missing = ctl("engines", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("playlog ctl: NOT_FOUND: ")


def test_as_run_lists_every_page_or_up_to_a_limit(ctl: Ctl, engine: eng_grpc.EngineServiceStub) -> None:
    evidence(ctl, engine)
    table = ctl.ok("as-run", "news", "--from", iso(H2), "--to", "now", "--page-size", "1").splitlines()
    assert table[0].split() == [
        "START", "END", "BLOCK", "GEN", "SEGMENT", "ASSET", "STATUS", "ENGINE", "TRACED", "EVENT", "DETAIL"
    ]  # fmt: skip
    assert table[1].split() == [
        iso(H2 + 3000), iso(H2 + 30 * MINUTE), "news-0", "1", "s1", "asset://News", "at", "Two", "AIRED",
        "local", "yes", "e1",
    ]  # fmt: skip
    assert table[2].split() == [
        iso(H2 + 30 * MINUTE), iso(H2 + 31 * MINUTE), "ghost", "9", "s1", "-", "FAILED", "local", "NO", "e2"
    ]  # fmt: skip
    assert len(table) == 3
    every = ctl.json("as-run", "news", "--from", "-1h", "--page-size", "1")
    records = every["records"]
    assert isinstance(records, list) and [r["event"]["event_id"] for r in records] == ["e1", "e2"]
    assert records[1]["traced"] is False and every["next_page_token"] == ""
    limited = ctl.json("as-run", "news", "--from", "-1h", "--limit", "1")
    assert [r["event"]["event_id"] for r in limited["records"]] == ["e1"]  # type: ignore[attr-defined]
    assert limited["next_page_token"] != ""  # where the rest would start
    assert "(--limit 1 reached" in ctl.ok("as-run", "news", "--from", "-1h", "--limit", "1")
    assert ctl.ok("as-run", "news", "--engine", "other").strip().startswith("no as-run in [")
    missing = ctl("as-run", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("playlog ctl: NOT_FOUND: ")
    backwards = ctl("as-run", "news", "--from", "now", "--to", "-1h")
    assert backwards.returncode == 2 and "is not before" in backwards.stderr


def test_reconcile_shows_the_discrepancies_and_exits_0_unless_asked_to_fail(
    ctl: Ctl, engine: eng_grpc.EngineServiceStub
) -> None:
    evidence(ctl, engine)
    args = ("reconcile", "news", "--from", iso(H2), "--to", iso(H2 + 35 * MINUTE))
    out = ctl.ok(*args)
    lines = out.splitlines()
    assert lines[0].startswith(f"channel news  [{iso(H2)}, {iso(H2 + 35 * MINUTE)})  blocks due ")
    assert lines[0].endswith("tolerance 1s")
    assert lines[1].split() == ["KIND", "BLOCK", "GEN", "ENGINE", "EVENT", "EXPECTED", "ACTUAL", "DETAIL"]
    kinds = {line.split()[0]: line for line in lines[2:4]}
    assert set(kinds) == {"START_OFF", "UNTRACED_AS_RUN"} and lines[4] == "2 discrepancies", out
    # What the server could not judge (news-1, on air at 02:40) is its note, not a discrepancy.
    assert lines[5].startswith("not judged: block 'news-1' is still on air") and len(lines) == 6
    assert f"{iso(H2)}  {iso(H2 + 3000)} (+3s)  started +3000 ms" in kinds["START_OFF"]
    assert kinds["UNTRACED_AS_RUN"].split()[1:6] == ["ghost", "9", "local", "e2", "-"]
    found = 2
    report = ctl.json(*args)
    assert report["tolerance_ms"] == "1000" and len(report["discrepancies"]) == found  # type: ignore[arg-type]
    assert {d["kind"] for d in report["discrepancies"]} >= {  # type: ignore[attr-defined]
        "DISCREPANCY_KIND_START_OFF",
        "DISCREPANCY_KIND_UNTRACED_AS_RUN",
    }
    failing = ctl(*args, "--fail-on-discrepancy")
    assert failing.returncode == 1 and failing.stdout == out
    assert failing.stderr == f"playlog ctl: {found} discrepancies found\n"
    # Nothing to find: exit 0 even with --fail-on-discrepancy.
    clean = ctl.ok("reconcile", "news", "--from", iso(H2 - HOUR), "--to", iso(H2), "--fail-on-discrepancy")
    assert clean.splitlines()[1:] == ["0 discrepancies"], clean
    # Only what has aired can be reconciled: the server refuses a range ending after now.
    future = ctl("reconcile", "news", "--from", "-1h", "--to", "+1m")
    assert future.returncode == 1 and future.stderr.startswith("playlog ctl: INVALID_ARGUMENT: ")
    assert "only what has aired" in future.stderr
    missing = ctl("reconcile", "nope", "--from", "-1h")
    assert missing.returncode == 1 and missing.stderr.startswith("playlog ctl: NOT_FOUND: ")


def test_ack_nack_and_report_as_run_as_an_engine(ctl: Ctl) -> None:
    news_day(ctl)
    out = ctl.ok("ack", "news", "1")
    assert out.strip() == f"generation 1 applied at {iso(T0)}; the channel is at generation 1"
    assert ctl("ack", "news", "1", "--nack").returncode == 2  # a NACK says why
    nacked = ctl.json("ack", "news", "1", "--nack", "--detail", "no asset")
    assert nacked["ok"] is True and nacked["channel_generation_id"] == "1"
    unknown = ctl("ack", "nope", "1")
    assert unknown.returncode == 1 and unknown.stderr.startswith(
        "playlog ctl: refused: ERROR_CODE_UNKNOWN_CHANNEL"
    )
    ctl.ok("clock", "set", iso(H2 + 30 * MINUTE))
    event = {
        "event_id": "mcr1-1",
        "block_id": "news-0",
        "generation_id": 1,
        "started_utc_ms": H2,
        "ended_utc_ms": H2 + 30 * MINUTE,
        "status": "AS_RUN_STATUS_AIRED",
    }
    path = ctl.file("events.json", [event])
    assert ctl.ok("report-as-run", "news", "-f", path).strip() == "stored 1, duplicates 0"
    assert ctl.json("report-as-run", "news", "-f", path)["duplicates"] == 1  # a retry stores nothing
    future = ctl.file("future.json", {"events": [dict(event, event_id="mcr1-2", ended_utc_ms=H2 + HOUR)]})
    refused = ctl("report-as-run", "news", "-f", future)
    assert refused.returncode == 1 and "ERROR_CODE_AS_RUN_IN_FUTURE" in refused.stderr
    assert ctl("report-as-run", "news", "-f", ctl.file("empty.json", [])).returncode == 2
    assert "0 discrepancies" in ctl.ok("reconcile", "news", "--from", iso(H2), "--to", "now")


def test_bash_completion_names_the_engine_commands(tmp_path: Path) -> None:
    script = Ctl("unused", tmp_path).ok("completion", "bash")
    for command in ("engines", "as-run", "reconcile", "ack", "report-as-run"):
        assert f"        {command}) words=" in script
    assert "--fail-on-discrepancy" in script and "--limit" in script
