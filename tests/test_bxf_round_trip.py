"""The BXF round trip (SPEC section 16): import traffic's schedule, air it on
the manual clock with an engine reporting as-run (one event cut short, one
failed, one substituted, and an operator's insert after them), export, and
find every EventId back with its times and status; with `--xsd DIR` the
message is validated before it is written."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from lxml import etree

from playlog.bxf.as_run import Label, instant_label
from playlog.bxf.parse import child, local, parse_xml, path, text
from playlog.bxf.schedule import profile
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import MINUTE, T0
from tests.bxf_ctl import PROFILE, SAMPLE, Desk, desk
from tests.test_bxf_schedule import SIX
from tests.test_served_process import BIN

__all__ = ["desk"]

XSD = Path(__file__).parent / "bxf" / "xsd"
ZONE = ["--zone", "America/New_York", "--day-start", "06:00"]  # the rate comes from the entries
RANGE = ["--from", "2026-11-22T10:00:00Z", "--to", "2026-11-22T14:00:00Z"]
INSERT_END = SIX + 120 * MINUTE - 27


def details(document: bytes) -> dict[str, dict[str, str]]:
    """Each AsRunDetail of an exported message by its EventId: status, actual and
    scheduled start (broadcast date and label) and duration, house numbers, marks."""
    root = parse_xml(document)
    assert local(root) == "BxfMessage"
    out: dict[str, dict[str, str]] = {}
    for d in root.iter("{*}AsRunDetail"):

        def tc(*names: str, d: etree._Element = d) -> str:
            el = path(d, *names)
            return text(el)

        def date(name: str, d: etree._Element = d) -> str:
            el = path(d, name, "SmpteDateTime")
            return el.get("broadcastDate", "") if el is not None else ""

        insert = child(d, "OperatorInsert")
        out[tc("EventId", "EventId")] = {
            "status": tc("Status"),
            "start": f"{date('StartDateTime')} {tc('StartDateTime', 'SmpteDateTime', 'SmpteTimeCode')}",
            "duration": tc("Duration", "SmpteDuration", "SmpteTimeCode"),
            "scheduled": f"{date('ScheduledStartDateTime')} "
            f"{tc('ScheduledStartDateTime', 'SmpteDateTime', 'SmpteTimeCode')}",
            "scheduled_duration": tc("ScheduledDuration", "SmpteDuration", "SmpteTimeCode"),
            "house": tc("Content", "ContentId", "HouseNumber"),
            "aired_house": tc("AiredContent", "ContentId", "HouseNumber"),
            "insert": insert.get("overrideRecordId", "?") if insert is not None else "",
        }
    return out


def as_run(event_id: str, block: str, start: int, end: int, status: int, **kw: str) -> eng.AsRunEvent:
    return eng.AsRunEvent(
        event_id=event_id, block_id=block, generation_id=1, segment_id=block, started_utc_ms=start,
        ended_utc_ms=end, status=status, **kw,
    )  # type: ignore[arg-type]  # fmt: skip


async def operator_insert(desk: Desk, block_id: str, start: int, end: int) -> pb.PublishResult:
    """An operator's override putting live pictures on air over [start, end): not from traffic."""
    entry = pb.ExecutionEntry(
        block_id=block_id, start_utc_ms=start, end_utc_ms=end, programming_day_date="2026-11-22",
        segments=[pb.Segment(segment_id="s1", segment_type="program", asset_uri="LIVE-CAM-2",
                             duration_ms=end - start, title="Breaking news")],
    )  # fmt: skip
    result: pb.PublishResult = await desk.r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id="news", range_start_utc_ms=start, range_end_utc_ms=end, entries=[entry],
            operator_override=True, reason_code="BREAKING_NEWS",
        )
    )  # fmt: skip
    return result


async def test_import_air_report_export_gives_every_event_id_back_with_its_times_and_status(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.declare()
    await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE)
    snap = await desk.r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="news", start_utc_ms=T0, end_utc_ms=T0 + 86_400_000)
    )
    e = {x.block_id: x for x in snap.entries}
    # The operator's insert after the schedule: not from traffic, an override.
    end = e["EV-0700-SPORT"].end_utc_ms
    published = await operator_insert(desk, "BREAKING-1", end, INSERT_END)
    assert published.ok, published

    await desk.set_time(INSERT_END + MINUTE)  # the morning has aired
    news, wx, doc, sport = (e[k] for k in ("EV-0600-NEWS", "EV-0630-WX", "EV-0635-DOC", "EV-0700-SPORT"))
    aired, cut, failed, substituted = (
        eng.AS_RUN_STATUS_AIRED,
        eng.AS_RUN_STATUS_CUT_SHORT,
        eng.AS_RUN_STATUS_FAILED,
        eng.AS_RUN_STATUS_SUBSTITUTED,
    )
    events = [
        as_run("a1", news.block_id, news.start_utc_ms, news.end_utc_ms, aired),
        # Weather cut 2 minutes short, the documentary failed, sport substituted.
        as_run("a2", wx.block_id, wx.start_utc_ms, wx.end_utc_ms - 2 * MINUTE, cut),
        as_run(
            "a3", doc.block_id, doc.start_utc_ms, doc.start_utc_ms, failed, detail="clip HN-DOC-4471 missing"
        ),
        as_run(
            "a4", sport.block_id, sport.start_utc_ms, sport.end_utc_ms, substituted, asset_uri="HN-SPORT-ALT"
        ),
        as_run("a5", "BREAKING-1", end, INSERT_END, aired),
    ]
    events[-1].generation_id = published.published_generation_id
    events[-1].segment_id = "s1"
    report = await desk.r.stubs.engine.ReportAsRun(eng.ReportAsRunRequest(channel_id="news", events=events))
    assert report.ok and report.stored == 5 and not report.untraced_event_ids, report

    out = tmp_path / "as-run.xml"
    res = await desk.ctl(
        "bxf", "export-as-run", "--channel", "news", *RANGE, *ZONE, "-o", str(out), "--xsd", str(XSD)
    )
    assert res.code == 0, res
    assert "wrote" in res.err and "5 as-run event(s)" in res.err
    got = details(out.read_bytes())
    assert list(got) == ["EV-0600-NEWS", "EV-0630-WX", "EV-0635-DOC", "EV-0700-SPORT", "BREAKING-1"]
    # Aired as scheduled: traffic's own labels come back, as sent.
    assert got["EV-0600-NEWS"] == {
        "status": "Aired Without Discrepancy",
        "start": "2026-11-22 06:00:00;00",
        "duration": "00:30:00;00",
        "scheduled": "2026-11-22 06:00:00;00",
        "scheduled_duration": "00:30:00;00",
        "house": "HN-NEWS-0600",
        "aired_house": "",
        "insert": "",
    }
    # Cut short: on time, 2 minutes shorter: 180033 ms, inside frame 5395, the one
    # before 00:03:00;02 (frame 5396 begins at 180046 ms).
    assert got["EV-0630-WX"]["status"] == "Aired With Duration Discrepancy"
    assert got["EV-0630-WX"]["start"] == "2026-11-22 06:30:00;00"
    assert got["EV-0630-WX"]["duration"] == "00:02:59;29"
    assert got["EV-0630-WX"]["scheduled_duration"] == "00:05:00;02"
    assert got["EV-0635-DOC"]["status"] == "Did Not Air"
    assert got["EV-0635-DOC"]["scheduled"] == "2026-11-22 06:35:00;02"
    assert got["EV-0700-SPORT"]["status"] == "Aired With Content Discrepancy"
    assert (got["EV-0700-SPORT"]["house"], got["EV-0700-SPORT"]["aired_house"]) == (
        "HN-SPORT-0700",
        "HN-SPORT-ALT",
    )
    assert got["EV-0700-SPORT"]["start"] == "2026-11-22 07:00:00;00"
    # The insert: computed at the channel's rate from its instants, marked with its record.
    assert got["BREAKING-1"]["insert"] == published.override_record_id != ""
    assert got["BREAKING-1"]["start"] == "2026-11-22 07:30:00;00"
    assert got["BREAKING-1"]["duration"] == "00:30:00;00"

    # A schema the message does not fit: refused naming the element, nothing written.
    strict = tmp_path / "strict"
    strict.mkdir()
    schema = (XSD / "playlog-test-as-run.xsd").read_text()
    (strict / "bxf.xsd").write_text(
        schema.replace('<xs:enumeration value="Aired With Content Discrepancy"/>', "")
    )
    res = await desk.ctl(
        "bxf",
        "export-as-run",
        "--channel",
        "news",
        *RANGE,
        *ZONE,
        "-o",
        str(tmp_path / "no.xml"),
        "--xsd",
        str(strict),
    )
    assert res.code == 1 and "refused: BXF: Status" in res.err and "does not fit bxf.xsd" in res.err, res
    assert not (tmp_path / "no.xml").exists()
    res = await desk.ctl("bxf", "export-as-run", "--channel", "news", *RANGE, *ZONE, "--xsd", str(tmp_path))
    assert res.code == 2 and "no .xsd files" in res.err


async def test_due_events_without_as_run_are_exported_as_not_aired_and_the_built_command_runs(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.declare()
    # The built `playlog ctl` once, as an operator runs it (every other step is in-process).
    argv = [str(BIN / "playlog"), "ctl", "--server", desk.r.address, "bxf", "import", str(SAMPLE)]
    run = await asyncio.to_thread(
        subprocess.run, [*argv, "--channel", "news", *PROFILE], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run
    assert "published broadcast day 2026-11-22: 4 events, generation 1" in run.stdout
    await desk.set_time(SIX + 40 * MINUTE)  # news and weather are due; nobody reported
    res = await desk.ctl("bxf", "export-as-run", "--channel", "news", *RANGE, *ZONE)
    assert res.code == 0, res
    got = details(res.out.encode())
    assert {k: v["status"] for k, v in got.items()} == {
        "EV-0600-NEWS": "Did Not Air",
        "EV-0630-WX": "Did Not Air",
    }
    assert "no as-run reported by any engine" in res.out


def test_an_instant_is_labelled_by_the_frame_that_contains_it_and_its_broadcast_day() -> None:
    p = profile("29.97df", "America/New_York", "06:00")
    midnight = SIX - 6 * 3_600_000  # 2026-11-22 00:00 in New York
    # 06:00:00;00 is 21599978.4 ms after midnight: at 21599978 ms it is still 05:59:59;29 of the 21st.
    assert instant_label(midnight + 21_599_978, p) == Label("2026-11-22", "06:00:00;00")
    assert instant_label(midnight + 21_599_977, p) == Label("2026-11-21", "05:59:59;29")
    # The last 86 ms of a drop-frame day have no label of their own: the day's last.
    assert instant_label(midnight - 50, p) == Label("2026-11-21", "23:59:59;29")
    assert instant_label(midnight, p) == Label("2026-11-21", "00:00:00;00")


async def test_a_cut_event_keeps_its_event_id_unmarked_and_the_operators_insert_is_marked(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.declare()
    await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE)
    news_start, news_end = SIX - 22, SIX + 30 * MINUTE - 24
    cut_at = SIX + 10 * MINUTE
    await desk.set_time(cut_at)  # ten minutes into the news: breaking news cuts in
    cut = await operator_insert(desk, "FLASH-1", cut_at, news_end)  # a cut: it starts inside the news
    assert cut.ok, cut
    await desk.set_time(news_end + MINUTE)
    gen = cut.published_generation_id
    events = [
        as_run("c1", "EV-0600-NEWS", news_start, cut_at, eng.AS_RUN_STATUS_AIRED),
        as_run("c2", "FLASH-1", cut_at, news_end, eng.AS_RUN_STATUS_AIRED),
    ]
    for ev in events:
        ev.generation_id = gen
    report = await desk.r.stubs.engine.ReportAsRun(eng.ReportAsRunRequest(channel_id="news", events=events))
    assert report.ok, report
    res = await desk.ctl("bxf", "export-as-run", "--channel", "news", *RANGE, *ZONE, "--xsd", str(XSD))
    assert res.code == 0, res
    got = details(res.out.encode())
    assert list(got) == ["EV-0600-NEWS", "FLASH-1"]
    news = got["EV-0600-NEWS"]
    # Its aired part, as the cut left it: computed from its instants (the
    # duration traffic sent is no longer the entry's), and no insert mark.
    assert (news["status"], news["insert"]) == ("Aired Without Discrepancy", "")
    assert news["start"] == news["scheduled"] == "2026-11-22 06:00:00;00"
    assert news["duration"] == news["scheduled_duration"] == "00:10:00;00"
    assert got["FLASH-1"]["insert"] == cut.override_record_id != ""
