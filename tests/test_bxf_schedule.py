"""BXF schedules in (SPEC section 16): the parse and the publishes built from
it (pure functions), untrusted XML handled as such, and `playlog ctl bxf
import` against the real service: the window diff first, one publish per
broadcast day, and every kind of bad input refused naming the event, with
exit status 1 or 2 and nothing changed."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playlog.bxf.parse import BxfError, parse_schedule, parse_xml
from playlog.bxf.schedule import build_import, profile
from playlog.bxf.timecode import ALL_RATES, FrameRate, frames_to_label, frames_to_ms
from playlog.ctl.timefmt import iso_utc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from tests.builders import HOUR, MINUTE
from tests.bxf_ctl import PROFILE, SAMPLE, Desk, desk

__all__ = ["desk"]

NS = "http://smpte-ra.org/schemas/2021/2019/BXF"
NY = profile("29.97df", "America/New_York", "06:00")
# 06:00 in New York on 2026-11-22 is 11:00Z; 06:00:00;00 at 29.97 drop-frame
# is frame 647352, 21599978.4 ms after midnight: 21.6 ms before 06:00 of the clock.
SIX = 1_795_345_200_000
NEWS_START = SIX - 22


def event(
    event_id: str | None,
    start: str = "",
    duration: str = "",
    date: str = "2026-11-22",
    primary: bool = True,
    house: str = "HN-1",
    name: str = "Title",
    rate_attr: str = "",
) -> str:
    eid = f"<EventId><EventId>{event_id}</EventId></EventId>" if event_id is not None else ""
    if not primary:
        return f"<ScheduledEvent><EventData>{eid}<NonPrimaryEvent/></EventData></ScheduledEvent>"
    rate = f' frameRate="{rate_attr}"' if rate_attr else ""
    return (
        f"<ScheduledEvent><EventData>{eid}<PrimaryEvent/>"
        f'<StartDateTime><SmpteDateTime broadcastDate="{date}"><SmpteTimeCode{rate}>{start}</SmpteTimeCode>'
        "</SmpteDateTime></StartDateTime>"
        f"<LengthOption><Duration><SmpteDuration><SmpteTimeCode>{duration}</SmpteTimeCode></SmpteDuration>"
        "</Duration></LengthOption></EventData>"
        f"<Content><ContentId><HouseNumber>{house}</HouseNumber></ContentId><Name>{name}</Name></Content>"
        "</ScheduledEvent>"
    )


def message(*events: str, root: str = "BxfMessage") -> bytes:
    body = "\n".join(events)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}" id="m1">\n<BxfData action="add">\n'
        f"<Schedule>\n{body}\n</Schedule>\n</BxfData>\n</{root}>\n"
    ).encode()


# -- the parse and the publishes -------------------------------------------------------------


def test_the_sample_becomes_one_publish_exact_to_the_frame_with_content_and_timecodes_carried() -> None:
    imp = build_import(parse_schedule(SAMPLE.read_bytes()), NY, "news")
    assert len(imp.days) == 1 and imp.secondary == 1 and imp.secondary_ids == ("EV-0600-LOGO",)
    day = imp.days[0]
    assert day.broadcast_date == "2026-11-22" and day.secondary == 1
    rows = [(e.block_id, e.block_index, e.start_utc_ms - SIX, e.end_utc_ms - SIX) for e in day.entries]
    # Each boundary is floor(frames * 1001 / 30) ms after local midnight, frames
    # from the labels: 647352, 701298, 710290, 755244 (07:00:00;00), 809190.
    assert rows == [
        ("EV-0600-NEWS", 0, -22, 30 * MINUTE - 24),
        ("EV-0630-WX", 1, 30 * MINUTE - 24, 35 * MINUTE + 9),
        ("EV-0635-DOC", 2, 35 * MINUTE + 9, HOUR - 26),
        ("EV-0700-SPORT", 3, HOUR - 26, 90 * MINUTE - 27),
    ]
    assert (day.range_start_utc_ms, day.range_end_utc_ms) == (SIX - 22, SIX + 90 * MINUTE - 27)
    doc = day.entries[2]
    seg = doc.segments[0]
    assert (seg.asset_uri, seg.title, seg.duration_ms) == ("HN-DOC-4471", "Rivers of the North", 1_499_965)
    tc = doc.source_timecode
    assert (tc.label, tc.frame_rate, tc.drop_frame, tc.broadcast_date) == (
        "06:35:00;02",
        "29.97",
        True,
        "2026-11-22",
    )
    assert (tc.frames, tc.duration_label, tc.duration_frames) == (710_290, "00:24:59;28", 44_954)
    slots = day.schedule_day("news", "bxf:x").slots
    assert [(s.program_id, s.title) for s in slots][:2] == [
        ("HN-NEWS-0600", "Morning News"),
        ("HN-WX-0630", "Weather"),
    ]


def test_labels_before_the_day_start_are_the_next_calendar_day_and_each_broadcast_day_is_one_publish() -> (
    None
):
    p = profile("25", "UTC", "06:00")
    imp = build_import(
        parse_schedule(
            message(
                event("A", "23:00:00:00", "01:00:00:00"),
                event("B", "00:00:00:00", "06:00:00:00"),  # 2026-11-23 00:00, still broadcast day 22
                event("C", "06:00:00:00", "01:00:00:00", date="2026-11-23"),
            )
        ),
        p,
        "ch",
    )
    assert [(d.broadcast_date, [e.block_id for e in d.entries]) for d in imp.days] == [
        ("2026-11-22", ["A", "B"]),
        ("2026-11-23", ["C"]),
    ]
    a, b = imp.days[0].entries
    assert (
        iso_utc(a.start_utc_ms) == "2026-11-22T23:00:00Z" and iso_utc(b.end_utc_ms) == "2026-11-23T06:00:00Z"
    )
    assert imp.days[1].entries[0].start_utc_ms == b.end_utc_ms


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        (b"<Schedule/>", "the root is <Schedule>, not <BxfMessage>"),
        (message(event("A", "06:00:00;00", "00:30:00;00"), root="Foo"), "the root is <Foo>"),
        (message(event(None, "06:00:00;00", "00:30:00;00")), "EventData (line 5): has no EventId"),
        (
            message(event("A", "06:00:00;00", "00:30:00;00"), event("B", "06:29:00;02", "00:30:00;00")),
            "event B: ScheduledEvent (line 6): starts at 2026-11-22T11:28:59.983Z, before event A (line 5) "
            "ends at 2026-11-22T11:29:59.976Z",
        ),
        (
            message(event("A", "06:00:00;00", "00:30:00;00"), event("A", "06:30:00;00", "00:30:00;00")),
            "event A: ScheduledEvent (line 6): EventId is not unique (also at line 5)",
        ),
        (message(event("A", "06:01:00;00", "00:30:00;00")), "event A: SmpteDateTime/SmpteTimeCode (line 5)"),
        (message(event("A", "06:00:00:00", "00:30:00;00")), "has ':' before its frames"),
        (message(event("A", "06:00:00;00", "00:30:00;00", rate_attr="25")), "frameRate '25' does not fit"),
        (
            message(event("A", "06:00:00;00", "00:00:00;00")),
            "event A: SmpteDuration (line 5): has a zero duration",
        ),
        (
            message(event("A", "06:00:00;00", "00:10:00;00"), event("B", "06:20:00;00", "00:10:00;00")),
            "event B: ScheduledEvent (line 6): starts at 2026-11-22T11:19:59.977Z, 600000 ms after event A",
        ),
        (message(event("A", "06:00:00;00", "00:30:00;00", date="22/11/2026")), "broadcastDate '22/11/2026'"),
        (b"<BxfMessage>\n<BxfData>\n<Schedule>\n</BxfData>", "document (line 4): not well-formed XML"),
        (message(event("S", primary=False)), "has no primary event (1 secondary)"),
    ],
)
def test_bad_input_is_refused_naming_the_event_element_and_line(xml: bytes, needle: str) -> None:
    with pytest.raises(BxfError) as caught:
        build_import(parse_schedule(xml), NY, "news")
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    "date",
    [
        "2026-10-31",  # the label is 2026-11-01 01:30 in New York, which happens twice
        "2027-03-13",  # 2027-03-14 02:30, which never happens (the clock skips 02:00-03:00)
    ],
)
def test_a_local_time_that_a_daylight_saving_change_repeats_or_skips_is_refused(date: str) -> None:
    p = profile("25", "America/New_York", "06:00")
    label = "01:30:00:00" if date.startswith("2026") else "02:30:00:00"
    xml = message(event("A", label, "00:10:00:00", date=date))
    with pytest.raises(BxfError, match=r"event A: SmpteDateTime .*ambiguous or does not exist"):
        build_import(parse_schedule(xml), p, "news")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ALL_RATES), st.lists(st.integers(1, 3 * 60 * 60), min_size=1, max_size=8))
def test_at_every_rate_events_tile_exactly_and_each_instant_is_its_frame_counts_floor(
    rate: FrameRate, durations_s: list[int]
) -> None:
    """Events laid end to end by frame count (the way traffic computes them)
    become entries that share their boundary milliseconds, each exactly
    floor(frames * 1000 * den / num) after midnight (UTC here)."""
    name = rate.name + ("df" if rate.drop_frame else "")
    start = 6 * 3600 * rate.nominal  # near 06:00, a frame count the rate has
    sep = ";" if rate.drop_frame else ":"
    events, frames = [], [start]
    for i, seconds in enumerate(durations_s):
        length = seconds * rate.nominal - i  # not whole seconds, not whole minutes
        events.append(
            event(f"E{i}", frames_to_label(frames[-1], rate), frames_to_label(length, rate), house=f"H{i}")
        )
        frames.append(frames[-1] + length)
    if frames[-1] >= rate.frames_per_day:
        return
    imp = build_import(parse_schedule(message(*events)), profile(name, "UTC", "00:00", sep), "ch")
    entries = imp.entries
    midnight = 1_795_305_600_000
    assert [e.start_utc_ms - midnight for e in entries] == [frames_to_ms(f, rate) for f in frames[:-1]]
    assert entries[-1].end_utc_ms - midnight == frames_to_ms(frames[-1], rate)
    assert all(a.end_utc_ms == b.start_utc_ms for a, b in itertools.pairwise(entries))
    assert [e.source_timecode.frames for e in entries] == frames[:-1]


# -- untrusted XML -----------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<BxfMessage><BxfData><Schedule><ScheduledEvent><EventData><EventId><EventId>&lol9;</EventId></EventId>
<PrimaryEvent/></EventData></ScheduledEvent></Schedule></BxfData></BxfMessage>
"""


def xxe(secret_file: Path) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE BxfMessage [ <!ENTITY secret SYSTEM "file://{secret_file}"> ]>\n'
        "<BxfMessage><BxfData><Schedule><ScheduledEvent><EventData><EventId><EventId>&secret;</EventId>"
        "</EventId><PrimaryEvent/></EventData></ScheduledEvent></Schedule></BxfData></BxfMessage>\n"
    ).encode()


SECRET = "s3cr3t-0f-the-host-8d1f"


def test_an_external_entity_is_refused_and_the_file_it_names_appears_nowhere(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    with pytest.raises(BxfError) as caught:
        parse_schedule(xxe(secret))
    assert "document (line 2): declares <!DOCTYPE" in str(caught.value)
    assert SECRET not in repr(caught.value)
    # The same with the declaration hidden from the byte scan (UTF-16): the
    # parser neither loads nor expands it, and the DOCTYPE is refused after.
    with pytest.raises(BxfError) as caught:
        parse_xml(xxe(secret).decode().replace('<?xml version="1.0"?>\n', "").encode("utf-16"))
    assert "DOCTYPE" in str(caught.value) and SECRET not in repr(caught.value)


def test_a_billion_laughs_ends_at_once() -> None:
    began = time.perf_counter()
    with pytest.raises(BxfError, match="declares <!DOCTYPE"):
        parse_schedule(BILLION_LAUGHS)
    with pytest.raises(BxfError, match="DOCTYPE"):  # the parser's own refusal, behind the scan
        parse_xml(BILLION_LAUGHS.replace(b'<?xml version="1.0"?>\n', b"").decode().encode("utf-16"))
    assert time.perf_counter() - began < 0.5


def test_the_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(BxfError, match="the file is 1025 bytes, more than the limit of 1024"):
        parse_schedule(b" " * 1025, max_bytes=1024)


# -- playlog ctl bxf import ----------------------------------------------------------------------


async def window(desk: Desk) -> list[tuple[str, int, int, int]]:
    snap = await desk.r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="news", start_utc_ms=SIX - HOUR, end_utc_ms=SIX + 3 * HOUR)
    )
    return [(e.block_id, e.start_utc_ms, e.end_utc_ms, e.generation_id) for e in snap.entries]


async def test_import_shows_the_diff_first_and_publishes_one_day_with_its_schedule_day(desk: Desk) -> None:
    await desk.declare()
    dry = await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE, "--dry-run")
    lines = dry.splitlines()
    assert lines[0] == (
        "BXF schedule for news: 4 primary event(s) in 1 broadcast day(s) at 29.97 drop-frame, "
        "zone America/New_York, day start 06:00; 1 secondary event(s) counted, not imported"
    )
    assert (
        lines[1]
        == "broadcast day 2026-11-22: [2026-11-22T10:59:59.978Z, 2026-11-22T12:29:59.973Z) 4 events, "
        "1 secondary"
    )
    assert "+  EV-0635-DOC" in dry and "Rivers of the North" in dry
    assert lines[-1] == "dry run: nothing written; 1 publish(es) would pass"
    assert await window(desk) == []
    with pytest.raises(Exception, match="NOT_FOUND"):
        await desk.r.stubs.days.GetScheduleDay(
            sd.GetScheduleDayRequest(channel_id="news", programming_day_date="2026-11-22")
        )

    out = await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE)
    assert out.startswith(dry.rsplit("\n", 2)[0])  # the same diff, first
    assert "stored ScheduleDay" in out and "published broadcast day 2026-11-22: 4 events, generation 1" in out
    assert [w[:3] for w in await window(desk)] == [
        ("EV-0600-NEWS", SIX - 22, SIX + 30 * MINUTE - 24),
        ("EV-0630-WX", SIX + 30 * MINUTE - 24, SIX + 35 * MINUTE + 9),
        ("EV-0635-DOC", SIX + 35 * MINUTE + 9, SIX + HOUR - 26),
        ("EV-0700-SPORT", SIX + HOUR - 26, SIX + 90 * MINUTE - 27),
    ]
    day = await desk.r.stubs.days.GetScheduleDay(
        sd.GetScheduleDayRequest(channel_id="news", programming_day_date="2026-11-22")
    )
    assert (
        day.schedule_day.plan_id.startswith("bxf:news-2026-11-22.xml:") and len(day.schedule_day.slots) == 4
    )

    # Imported again (traffic resends): the diff names what it replaces, generation 2.
    again = await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE)
    removed = [line.split() for line in again.splitlines() if line.startswith("-")]
    assert [r[:3] for r in removed][:1] == [["-", "EV-0600-NEWS", "1"]] and len(removed) == 4
    added = [line.split() for line in again.splitlines() if line.startswith("+")]
    assert [r[2] for r in added] == ["2"] * 4  # the generation the day's publish gets
    assert "generation 2" in again and "stored ScheduleDay" not in again


async def test_an_event_in_the_past_is_refused_naming_it_and_nothing_changes(desk: Desk) -> None:
    await desk.declare()
    await desk.set_time(SIX + MINUTE)
    res = await desk.ctl(
        "bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE, "--override", "--reason", "X"
    )
    assert res.code == 1
    assert "refused: BXF: event EV-0600-NEWS: starts at 2026-11-22T10:59:59.978Z, before now" in res.err
    assert await window(desk) == []


async def test_a_range_in_the_locked_window_needs_an_override_with_a_reason(desk: Desk) -> None:
    await desk.declare()
    await desk.set_time(SIX - 30 * MINUTE)  # locked until 11:30Z
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE)
    assert res.code == 1, res
    assert (
        "event EV-0600-NEWS: starts at 2026-11-22T10:59:59.978Z" in res.err
        and "--override --reason" in res.err
    )
    assert await window(desk) == []
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE, "--override")
    assert res.code == 2 and "an override needs --reason" in res.err
    out = await desk.ok(
        "bxf", "import", str(SAMPLE), "--channel", "news", *PROFILE, "--override", "--reason", "TRAFFIC_LATE"
    )
    assert "generation 1, override record" in out
    assert len(await window(desk)) == 4


async def test_bad_files_and_flags_are_refused_with_exit_1_or_2_and_nothing_changes(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.declare()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    cases = {
        "xxe.xml": xxe(secret),
        "laughs.xml": BILLION_LAUGHS,
        "root.xml": message(event("A", "06:00:00;00", "00:30:00;00"), root="Foo"),
        "no-id.xml": message(event(None, "06:00:00;00", "00:30:00;00")),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        res = await desk.ctl("bxf", "import", str(tmp_path / name), "--channel", "news", *PROFILE)
        assert res.code == 1 and "refused: BXF:" in res.err, (name, res)
        assert SECRET not in res.out + res.err
    res = await desk.ctl("bxf", "import", str(tmp_path / "missing.xml"), "--channel", "news", *PROFILE)
    assert res.code == 2 and "No such file" in res.err
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", "--frame-rate", "48")
    assert res.code == 2 and "--frame-rate: frame rate '48' is not one of" in res.err
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", "--frame-rate", "25")
    assert res.code == 1 and "event EV-0600-NEWS" in res.err and "has ';' before its frames" in res.err
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "nope", *PROFILE)
    assert res.code == 1 and "NOT_FOUND" in res.err
    assert await window(desk) == []


async def test_a_profile_of_the_ctl_config_declares_what_the_file_does_not_and_flags_beat_it(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.declare()
    config = tmp_path / "xdg" / "playlog" / "ctl.toml"  # the desk's XDG_CONFIG_HOME
    config.parent.mkdir(parents=True)
    config.write_text(
        '[bxf.profiles.wnyc]\nframe_rate = "29.97df"\nzone = "America/New_York"\nday_start = "06:00"\n'
        '[bxf.profiles.odd]\nframe_rate = "29.97df"\nzone = "UTC"\nspeed = "fast"\n'
    )
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", "--dry-run")
    assert res.code == 2 and "--frame-rate: the import declares it" in res.err
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", "--profile", "odd", "--dry-run")
    assert res.code == 2 and "unknown keys ['speed']" in res.err
    res = await desk.ctl("bxf", "import", str(SAMPLE), "--channel", "news", "--profile", "nope", "--dry-run")
    assert res.code == 2 and "no BXF profile 'nope'" in res.err
    out = await desk.ok("bxf", "import", str(SAMPLE), "--channel", "news", "--profile", "wnyc", "--dry-run")
    assert "[2026-11-22T10:59:59.978Z, 2026-11-22T12:29:59.973Z)" in out
    out = await desk.ok(
        "bxf", "import", str(SAMPLE), "--channel", "news", "--profile", "wnyc", "--zone", "UTC", "--dry-run"
    )
    assert "[2026-11-22T05:59:59.978Z, 2026-11-22T07:29:59.973Z)" in out  # the flag's zone
    assert await window(desk) == []
