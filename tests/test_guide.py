"""The guide (SPEC section 14, issue 16) through its edges, in-process on both
stores: GuideService over gRPC and /guide/* over HTTP on the same listener the
console will use, from the very generation that airs."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from lxml import etree
from multidict import CIMultiDict

from playlog import metrics
from playlog.clock import ManualClock
from playlog.store.base import StoreUnavailable
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import guide_service_pb2 as gd
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, date_of, entry
from tests.conftest import Running, start_server

DTD = etree.DTD(str(Path(__file__).parent / "xmltv" / "xmltv.dtd"))
XMLTV_TIME = re.compile(r"\d{14} \+0000")
H2 = T0 + 2 * HOUR  # 02:00, the first published entry


class Guided:
    def __init__(self, r: Running) -> None:
        self.r = r
        self.base = f"http://127.0.0.1:{r.server.http_port}"
        # Raw bytes, and no gzip unless a test asks for it.
        self.http = aiohttp.ClientSession(auto_decompress=False, headers={"Accept-Encoding": "identity"})

    async def get(self, path: str, **kw: Any) -> tuple[int, CIMultiDict[str], bytes]:
        async with self.http.get(self.base + path, **kw) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    async def declare(self, channel_id: str, **metadata: str) -> ch.DeclareChannelResponse:
        return await self.r.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=channel_id, locked_window_ms=HOUR, **metadata)
        )

    async def day(self, channel_id: str, slots: list[tuple[int, int, str]], plan: str = "plan-1") -> str:
        result = await self.r.stubs.days.StoreScheduleDay(
            sd.StoreScheduleDayRequest(schedule_day=day_message(channel_id, slots, plan))
        )
        assert result.ok, result
        return str(result.schedule_day.id)

    async def publish(self, channel_id: str, entries: list[pb.ExecutionEntry], **kw: Any) -> pb.PublishResult:
        result = await self.r.stubs.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id=channel_id,
                range_start_utc_ms=entries[0].start_utc_ms,
                range_end_utc_ms=entries[-1].end_utc_ms,
                entries=entries,
                **kw,
            )
        )
        assert result.ok, result
        return result


def day_message(channel_id: str, slots: list[tuple[int, int, str]], plan: str = "plan-1") -> pb.ScheduleDay:
    return pb.ScheduleDay(
        channel_id=channel_id,
        programming_day_date=date_of(slots[0][0]),
        plan_id=plan,
        slots=[
            pb.ScheduleSlot(start_utc_ms=a, end_utc_ms=b, program_id=t.lower().replace(" ", "-"), title=t)
            for a, b, t in slots
        ],
    )


def block(
    block_id: str, start: int, minutes: int, title: str = "", kind: str = "program"
) -> pb.ExecutionEntry:
    e = entry(block_id, start, start + minutes * MINUTE, segments=1, title=title or block_id)
    e.segments[0].segment_type = kind
    return e


# A morning: news 02:00-03:00 (two blocks), a film 03:00-04:30 (three), then
# a slot 04:30-05:00 published by nobody yet (planned).
SLOTS = [(H2, H2 + HOUR, "Morning News"), (H2 + HOUR, H2 + 150 * MINUTE, "The Film"),
         (H2 + 150 * MINUTE, H2 + 3 * HOUR, "Late Show")]  # fmt: skip


def morning() -> list[pb.ExecutionEntry]:
    return [
        block("news-0", H2, 30, "News at Two"),
        block("news-1", H2 + 30 * MINUTE, 30, "Weather"),
        *(block(f"film-{i}", H2 + (60 + 30 * i) * MINUTE, 30, f"Film part {i}") for i in range(3)),
    ]


@pytest.fixture
async def guided(tmp_path: Path, clock: ManualClock, database_url: str) -> AsyncIterator[Guided]:
    r = await start_server(tmp_path / "data", clock, database_url=database_url, http_listen="127.0.0.1:0")
    g = Guided(r)
    yield g
    await g.http.close()
    await r.server.stop(0)


async def aired_morning(g: Guided) -> str:
    await g.declare(
        "news", display_name="News 24", guide_number="4.1", stream_url="http://tv.example/news.ts"
    )
    day_id = await g.day("news", SLOTS)
    await g.publish("news", morning())
    return day_id


# -- XMLTV ------------------------------------------------------------------------------------


async def test_the_xmltv_is_valid_against_the_dtd_with_a_channel_for_every_channel(guided: Guided) -> None:
    await aired_morning(guided)
    await guided.declare("quiet")  # nothing published, no day: still a <channel>
    status, headers, body = await guided.get("/guide/xmltv.xml?days=1")
    assert status == 200 and headers["Content-Type"].startswith("application/xml")
    doc = etree.fromstring(body)
    assert DTD.validate(doc), DTD.error_log.filter_from_errors()
    assert [c.get("id") for c in doc.iter("channel")] == ["news.playlog", "quiet.playlog"]
    news = doc.find("channel[@id='news.playlog']")
    assert [d.text for d in news.iter("display-name")] == ["News 24", "4.1"]
    programmes = [(p.get("start"), p.get("stop"), p.findtext("title")) for p in doc.iter("programme")]
    assert all(XMLTV_TIME.fullmatch(a) and XMLTV_TIME.fullmatch(b) for a, b, _ in programmes)
    assert programmes == [
        ("20261122020000 +0000", "20261122030000 +0000", "Morning News"),  # two blocks, one programme
        ("20261122030000 +0000", "20261122043000 +0000", "The Film"),  # three blocks, one programme
        ("20261122043000 +0000", "20261122050000 +0000", "Late Show"),  # planned: no entries yet
    ]
    assert all(p.get("channel") == "news.playlog" for p in doc.iter("programme"))
    assert headers["X-Playlog-Generations"] == "news=1,quiet=0"


async def test_the_programmes_start_one_hour_before_the_current_hour(guided: Guided) -> None:
    await aired_morning(guided)
    guided.r.clock.advance_to(H2 + 2 * HOUR + 10 * MINUTE)  # 04:10: the film is on air
    _, _, body = await guided.get("/guide/xmltv.xml")
    titles = [p.findtext("title") for p in etree.fromstring(body).iter("programme")]
    # From 03:00 on: the news (ended 03:00) is gone; the film (03:00-04:30) is whole.
    assert titles == ["The Film", "Late Show"]


async def test_etag_changes_exactly_when_the_content_does(guided: Guided) -> None:
    await aired_morning(guided)
    status, first, body = await guided.get("/guide/xmltv.xml")
    etag = first["ETag"]
    assert status == 200 and first["Last-Modified"] and etag.startswith('"')
    # Unchanged: 304 for If-None-Match, and HEAD answers the headers without the body.
    status, again, empty = await guided.get("/guide/xmltv.xml", headers={"If-None-Match": etag})
    assert (status, again["ETag"], empty) == (304, etag, b"")
    async with guided.http.head(guided.base + "/guide/xmltv.xml") as resp:
        assert resp.status == 200 and resp.headers["ETag"] == etag and await resp.read() == b""
        assert int(resp.headers["Content-Length"]) == len(body)
    # A new generation whose guide is the same (an asset changed, no title):
    # the generation header moves, the content and so the ETag do not.
    moved = morning()[4]
    moved.segments[0].asset_uri = "asset://film/2-restored"
    await guided.publish("news", [moved])
    status, same, _ = await guided.get("/guide/xmltv.xml", headers={"If-None-Match": etag})
    assert status == 304 and same["ETag"] == etag and same["X-Playlog-Generations"] == "news=2"
    # A ScheduleDay regenerated with a new title changes the content: a new ETag.
    regenerated = day_message("news", [*SLOTS[:2], (SLOTS[2][0], SLOTS[2][1], "Late Late Show")], "plan-2")
    result = await guided.r.stubs.days.ForceRegenerate(
        sd.ForceRegenerateRequest(schedule_day=regenerated, reason_code="PLAN_REVISED")
    )
    assert result.ok, result
    status, changed, body3 = await guided.get("/guide/xmltv.xml", headers={"If-None-Match": etag})
    assert status == 200 and changed["ETag"] != etag and b"Late Late Show" in body3


async def test_gzip_by_negotiation_and_as_a_file(guided: Guided) -> None:
    await aired_morning(guided)
    _, plain, body = await guided.get("/guide/xmltv.xml")
    status, h, zipped = await guided.get("/guide/xmltv.xml", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and h["Content-Encoding"] == "gzip" and h["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped) == body and h["ETag"] != plain["ETag"]
    status, h2, file = await guided.get("/guide/xmltv.xml.gz")
    assert status == 200 and h2["Content-Type"] == "application/gzip" and "Content-Encoding" not in h2
    assert gzip.decompress(file) == body
    assert (await guided.get("/guide/xmltv.xml.gz", headers={"If-None-Match": h2["ETag"]}))[0] == 304
    _, refused, _ = await guided.get("/guide/xmltv.xml", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused


async def test_a_guide_is_rendered_once_and_shared_by_every_request(guided: Guided) -> None:
    await aired_morning(guided)
    await guided.declare("other")
    await guided.day("other", [(H2, H2 + HOUR, "Other")])
    await guided.publish("other", [block("o-0", H2, 60, "Other")])
    renders = metrics.GUIDE_RENDERS.labels("xmltv")
    before, derived = renders._value.get(), guided.r.server.guide.derivations
    answers = await asyncio.gather(*(guided.get("/guide/xmltv.xml") for _ in range(30)))
    assert {a[2] for a in answers} == {answers[0][2]} and all(a[0] == 200 for a in answers)
    assert renders._value.get() == before + 1
    assert guided.r.server.guide.derivations == derived + 2  # one per channel
    # A publish on one channel: one render, one channel derived again.
    await guided.publish("other", [block("o-0", H2, 60, "Other, revised"), block("o-1", H2 + HOUR, 30)],
                         operator_override=True, reason_code="REVISED")  # fmt: skip
    await asyncio.gather(*(guided.get("/guide/xmltv.xml") for _ in range(10)))
    assert renders._value.get() == before + 2
    assert guided.r.server.guide.derivations == derived + 3


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(guided: Guided) -> None:
    await aired_morning(guided)
    renders = metrics.GUIDE_RENDERS.labels("xmltv")._value.get()
    cases = [
        ("/guide/xmltv.xml?days=0", 400, "days"),
        ("/guide/xmltv.xml?days=15", 400, "days"),
        ("/guide/xmltv.xml?days=seven", 400, "days"),
        ("/guide/xmltv.xml?days=1&days=2", 400, "days"),
        ("/guide/xmltv.xml?channel=nobody", 404, "channel"),
        ("/guide/xmltv.xml?channel=no%20spaces", 400, "channel[0]"),
        ("/guide/now.json?channel=nobody", 404, "channel"),
        ("/guide/nothing-here", 404, None),
    ]
    for path, status, field in cases:
        got, headers, body = await guided.get(path)
        assert got == status, (path, body)
        assert headers["Content-Type"].startswith("application/json")
        error = json.loads(body)
        assert error["code"] in ("INVALID_ARGUMENT", "NOT_FOUND") and error["message"]
        if field is not None:
            assert error["details"][0]["field"] == field, error
    async with guided.http.post(guided.base + "/guide/xmltv.xml") as resp:
        assert resp.status == 405 and (await resp.json())["code"] == "METHOD_NOT_ALLOWED"
    assert metrics.GUIDE_RENDERS.labels("xmltv")._value.get() == renders
    channel = (await guided.r.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id="news"))).channel
    assert channel.current_generation_id == 1


async def test_a_store_that_cannot_be_read_gives_503_never_an_empty_guide(
    guided: Guided, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aired_morning(guided)

    def unreadable() -> Any:
        raise StoreUnavailable("the database connection failed (injected); nothing was applied")

    monkeypatch.setattr(guided.r.server.store, "read", unreadable)
    for path in ("/guide/xmltv.xml", "/guide/xmltv.xml.gz", "/guide/channels.m3u", "/guide/now.json"):
        status, headers, body = await guided.get(path)
        assert status == 503 and headers["Retry-After"] and b"<tv" not in body and b"#EXTM3U" not in body
        assert b'"UNAVAILABLE"' in body


# -- M3U, as a consumer matches it ------------------------------------------------------------


async def test_the_m3u_and_the_xmltv_match_the_way_jellyfin_matches_them(guided: Guided) -> None:
    await aired_morning(guided)
    await guided.declare(
        "sport",
        display_name="Sport",
        guide_number="7",
        guide_id="sport.example.net",
        icon_url="https://img.example/sport.png",
        stream_url="udp://@239.0.0.7:1234",
    )
    await guided.day("sport", [(H2, H2 + HOUR, "Match")])
    await guided.declare("unstreamed")  # in the guide, not in the playlist: it has no stream_url
    status, headers, playlist = await guided.get("/guide/channels.m3u")
    assert status == 200 and "mpegurl" in headers["Content-Type"]
    lines = playlist.decode().splitlines()
    assert lines[0] == f'#EXTM3U url-tvg="{guided.base}/guide/xmltv.xml"'
    tuners = {}
    for info, url in zip(lines[1::2], lines[2::2], strict=True):
        attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', info))
        assert info.startswith("#EXTINF:-1 ") and info.rsplit(",", 1)[1] == attrs["tvg-name"]
        tuners[attrs["tvg-id"]] = (attrs, url)
    assert set(tuners) == {"news.playlog", "sport.example.net"}
    assert tuners["sport.example.net"] == (
        {"tvg-id": "sport.example.net", "tvg-chno": "7", "tvg-name": "Sport",
         "tvg-logo": "https://img.example/sport.png"},
        "udp://@239.0.0.7:1234",
    )  # fmt: skip
    _, _, body = await guided.get("/guide/xmltv.xml")
    doc = etree.fromstring(body)
    declared = {c.get("id") for c in doc.iter("channel")}
    # Every tuner finds its guide by tvg-id, every programme names a declared channel.
    assert set(tuners) <= declared and {p.get("channel") for p in doc.iter("programme")} <= declared
    assert doc.find("channel[@id='sport.example.net']/icon").get("src") == "https://img.example/sport.png"


async def test_a_consumer_that_sends_its_token_in_the_url_gets_it_in_url_tvg(
    tmp_path: Path, clock: ManualClock
) -> None:
    from tests.test_auth import Principal, write_auth_file

    path = write_auth_file(tmp_path / "auth.toml", [Principal("tuner", ["reader"], "tuner-token")])
    r = await start_server(tmp_path / "data", clock, auth_file=str(path), http_listen="127.0.0.1:0")
    g = Guided(r)
    try:
        _, _, playlist = await g.get("/guide/channels.m3u?token=tuner-token")
        assert playlist.decode().splitlines()[0] == (
            f'#EXTM3U url-tvg="{g.base}/guide/xmltv.xml?token=tuner-token"'
        )
    finally:
        await g.http.close()
        await r.server.stop(0)


# -- who may read it ----------------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True])
async def test_with_auth_the_guide_needs_the_reader_role_unless_guide_public(
    tmp_path: Path, clock: ManualClock, public: bool
) -> None:
    from tests.test_auth import AuthCapture, Principal, write_auth_file

    path = write_auth_file(tmp_path / "auth.toml", [Principal("tuner", ["reader"], "tuner-token")])
    r = await start_server(
        tmp_path / "data", clock, auth_file=str(path), http_listen="127.0.0.1:0", guide_public=public
    )
    g = Guided(r)
    capture = AuthCapture()
    logging.getLogger("playlog.auth").addHandler(capture)
    try:
        ok = 200
        denied = 200 if public else 401
        assert (await g.get("/guide/xmltv.xml"))[0] == denied
        assert (await g.get("/guide/xmltv.xml?token=wrong"))[0] == denied
        assert (await g.get("/guide/xmltv.xml", headers={"Authorization": "Bearer wrong"}))[0] == denied
        assert (await g.get("/guide/xmltv.xml", headers={"Authorization": "Basic abc"}))[0] == denied
        assert (await g.get("/guide/xmltv.xml?token=tuner-token"))[0] == ok
        assert (await g.get("/guide/now.json", headers={"Authorization": "Bearer tuner-token"}))[0] == ok
        status, headers, body = await g.get("/guide/channels.m3u")
        assert status == denied
        if not public:
            assert headers["WWW-Authenticate"].startswith("Bearer") and b"UNAUTHENTICATED" in body
            kinds = [e["event"] for e in capture.events if e.get("transport") == "http"]
            assert kinds.count("unauthenticated") == 5
            # The token is never logged, not even in the path.
            assert all(
                "tuner-token" not in str(e) and "wrong" not in str(e.get("route")) for e in capture.events
            )
        else:
            assert not [e for e in capture.events if e.get("transport") == "http"]
    finally:
        logging.getLogger("playlog.auth").removeHandler(capture)
        await g.http.close()
        await r.server.stop(0)


async def test_a_non_loopback_http_listener_without_auth_is_refused(
    tmp_path: Path, clock: ManualClock
) -> None:
    from playlog.config import ConfigError

    with pytest.raises(ConfigError, match=r"http_listen.*without authentication"):
        await start_server(tmp_path / "data", clock, http_listen="0.0.0.0:0")


# -- GuideService ---------------------------------------------------------------------------------


def summary(programmes: Any) -> list[tuple[str, str, list[str]]]:
    return [
        (p.title, gd.ProgrammeStatus.Name(p.status)[17:], list(p.provenance.block_ids)) for p in programmes
    ]


async def test_get_guide_gives_status_and_provenance_for_every_programme(guided: Guided) -> None:
    day_id = await aired_morning(guided)
    guided.r.clock.advance_to(H2 + 40 * MINUTE)  # 02:40: the news on air, lock to 03:40
    got = await guided.r.stubs.guide.GetGuide(
        gd.GetGuideRequest(channel_ids=["news"], start_utc_ms=T0, end_utc_ms=T0 + DAY)
    )
    g = got.channels[0]
    assert (g.generation_id, g.covered_until_utc_ms, g.planned_until_utc_ms) == (
        1,
        H2 + 150 * MINUTE,
        H2 + 3 * HOUR,
    )
    assert g.channel.display_name == "News 24" and g.channel.guide_id == "news.playlog"
    assert summary(g.programmes) == [
        ("Morning News", "ON_AIR", ["news-0", "news-1"]),
        ("The Film", "FLEXIBLE", ["film-0", "film-1", "film-2"]),  # film-2 starts after the lock
        ("Late Show", "PLANNED", []),
    ]
    film = g.programmes[1]
    assert (film.provenance.schedule_day_id, film.provenance.slot_index, film.program_id) == (
        day_id,
        1,
        "the-film",
    )
    assert film.provenance.generation_id == 1 and film.provenance.programming_day_date == "2026-11-22"
    # The clock moves, the statuses with it, with no publish.
    guided.r.clock.advance_to(H2 + 90 * MINUTE)  # 03:30: lock to 04:30, the whole film locked
    got = await guided.r.stubs.guide.GetGuide(
        gd.GetGuideRequest(channel_ids=["news"], start_utc_ms=T0, end_utc_ms=T0 + DAY)
    )
    assert [s for _, s, _ in summary(got.channels[0].programmes)] == ["AIRED", "ON_AIR", "PLANNED"]
    # An override's insert is a programme of its own, with its record.
    cut = await guided.publish(
        "news", [block("flash", H2 + 120 * MINUTE, 30, "Newsflash", kind="live")],
        operator_override=True, reason_code="BREAKING_NEWS",
    )  # fmt: skip
    got = await guided.r.stubs.guide.GetGuide(
        gd.GetGuideRequest(channel_ids=["news"], start_utc_ms=T0, end_utc_ms=T0 + DAY)
    )
    flash = [p for p in got.channels[0].programmes if p.title == "Newsflash"]
    assert len(flash) == 1 and flash[0].provenance.override_record_id == cut.override_record_id
    assert flash[0].provenance.schedule_day_id == "" and flash[0].provenance.generation_id == 2


async def test_get_guide_refuses_bad_ranges_and_unknown_channels(guided: Guided) -> None:
    await aired_morning(guided)
    bad, unknown = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    for request, code, text in [
        (gd.GetGuideRequest(start_utc_ms=T0, end_utc_ms=T0), bad, "end_utc_ms"),
        (gd.GetGuideRequest(start_utc_ms=T0, end_utc_ms=T0 + 16 * DAY), bad, "15 days"),
        (gd.GetGuideRequest(channel_ids=["x y"], start_utc_ms=T0, end_utc_ms=T0 + 1), bad, "channel_ids[0]"),
        (gd.GetGuideRequest(channel_ids=["nobody"], start_utc_ms=T0, end_utc_ms=T0 + 1), unknown, "nobody"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await guided.r.stubs.guide.GetGuide(request)
        assert refused.value.code() == code and text in (refused.value.details() or "")


async def test_a_programme_read_from_its_middle_keeps_its_real_start(guided: Guided) -> None:
    """INV-EPG-IDENTITY-STABLE-001 through the store: a range starting in the
    film's last block still gives the film from its first block."""
    await aired_morning(guided)
    for start in (T0, H2 + HOUR, H2 + 130 * MINUTE):
        got = await guided.r.stubs.guide.GetGuide(
            gd.GetGuideRequest(channel_ids=["news"], start_utc_ms=start, end_utc_ms=H2 + 140 * MINUTE)
        )
        film = [p for p in got.channels[0].programmes if p.title == "The Film"]
        assert [(p.start_utc_ms, p.end_utc_ms) for p in film] == [(H2 + HOUR, H2 + 150 * MINUTE)]


async def test_now_next_moves_with_the_clock_and_knows_the_actual_start(guided: Guided) -> None:
    await aired_morning(guided)
    guided.r.clock.advance_to(H2 + 10 * MINUTE)
    answer = (await guided.r.stubs.guide.GetNowNext(gd.GetNowNextRequest(channel_ids=["news"]))).channels[0]
    assert (answer.on_air.title, answer.next.title, answer.generation_id) == ("Morning News", "The Film", 1)
    assert answer.actual_start_utc_ms == 0  # no engine has said yet
    status, headers, body = await guided.get("/guide/now.json")
    doc = json.loads(body)
    assert status == 200 and headers["X-Playlog-Generations"] == "news=1"
    assert doc["channels"][0]["on_air"]["title"] == "Morning News" and "now_utc_ms" not in doc
    etag = headers["ETag"]
    # An engine reports the news' first block started 3 s late: that is its actual start.
    report = await guided.r.stubs.engine.ReportAsRun(
        eng.ReportAsRunRequest(channel_id="news", events=[eng.AsRunEvent(
            event_id="e1", block_id="news-0", generation_id=1, segment_id="news-0-s0",
            started_utc_ms=H2 + 3000, ended_utc_ms=H2 + 5 * MINUTE, status=eng.AS_RUN_STATUS_AIRED)])
    )  # fmt: skip
    assert report.ok, report
    answer = (await guided.r.stubs.guide.GetNowNext(gd.GetNowNextRequest())).channels[0]
    assert (answer.actual_start_utc_ms, answer.actual_start_engine_id) == (H2 + 3000, "local")
    _, headers, _ = await guided.get("/guide/now.json", headers={"If-None-Match": etag})
    assert headers["ETag"] != etag
    # The manual clock moves: the film is on air, with no publish.
    await guided.r.stubs.clock.AdvanceTime(pb_delta(HOUR))
    answer = (await guided.r.stubs.guide.GetNowNext(gd.GetNowNextRequest())).channels[0]
    assert (answer.on_air.title, answer.next.title) == ("The Film", "Late Show")
    assert answer.next.status == gd.PROGRAMME_STATUS_PLANNED and answer.actual_start_utc_ms == 0


def pb_delta(ms: int) -> Any:
    from playlog.v1 import clock_service_pb2 as clk

    return clk.AdvanceTimeRequest(delta_ms=ms)


# -- channel metadata ---------------------------------------------------------------------------


async def test_metadata_is_declared_checked_kept_cleared_and_logged_without_a_record(
    guided: Guided, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="playlog")
    first = await guided.declare("news", display_name="News 24", guide_number="4.1")
    assert first.changed and not first.override_record_id
    # A re-declaration that sets nothing keeps everything: a no-op.
    again = await guided.declare("news")
    assert not again.changed and again.channel.display_name == "News 24"
    changed = await guided.declare("news", guide_number="4.2", icon_url="https://img.example/n.png")
    assert changed.changed and not changed.override_record_id
    assert (changed.channel.display_name, changed.channel.guide_number) == ("News 24", "4.2")
    assert changed.channel.guide_id == "news.playlog"  # unchanged when the number changes
    events = [r for r in caplog.records if getattr(r, "event", "") == "channel_metadata_changed"]
    assert events[-1].fields["changed"] == {  # type: ignore[attr-defined]
        "guide_number": {"from": "4.1", "to": "4.2"},
        "icon_url": {"from": "", "to": "https://img.example/n.png"},
    }
    cleared = await guided.declare("news", display_name="", guide_id="news.example.net")
    assert (cleared.channel.display_name, cleared.channel.guide_id) == ("", "news.example.net")
    records = await guided.r.stubs.audit.ListOverrideRecords(_records("news"))
    assert list(records.records) == []  # metadata changes no air: no record
    for metadata, field in [
        ({"guide_id": "no_dots"}, "guide_id"),
        ({"guide_id": "news..example"}, "guide_id"),
        ({"guide_number": "four"}, "guide_number"),
        ({"icon_url": "ftp://img.example/x.png"}, "icon_url"),
        ({"icon_url": "https://img.example/a b.png"}, "icon_url"),
        ({"stream_url": "not a url"}, "stream_url"),
        ({"display_name": 'The "Best" TV'}, "display_name"),
        ({"display_name": "Line\nbreak"}, "display_name"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await guided.declare("news", **metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(field), refused.value.details()
    # Two channels cannot share a guide_id (consumers match on it).
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await guided.declare("other", guide_id="news.example.net")
    assert "news.example.net" in (taken.value.details() or "") and "'news'" in (taken.value.details() or "")
    channel = (await guided.r.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id="news"))).channel
    assert (channel.guide_number, channel.guide_id) == ("4.2", "news.example.net")


def _records(channel_id: str) -> Any:
    from playlog.v1 import audit_service_pb2 as audit

    return audit.ListOverrideRecordsRequest(channel_id=channel_id)


# -- the horizon ---------------------------------------------------------------------------------


async def test_the_horizon_is_a_metric_and_a_short_one_is_warned_of_once(
    guided: Guided, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="playlog")
    await aired_morning(guided)
    server = guided.r.server
    assert server.horizons.check() == {"news"}  # 02:00-04:30 published: 4.5 h ahead of 00:00
    assert server.horizons.check() == {"news"}
    warned = [r for r in caplog.records if getattr(r, "event", "") == "guide_horizon_short"]
    assert len(warned) == 1 and warned[0].fields["horizon_ms"] == H2 + 150 * MINUTE - T0  # type: ignore[attr-defined]
    samples = {
        s.labels["channel_id"]: s.value
        for family in metrics.ENGINE_GAUGES.collect()
        if family.name == "playlog_guide_horizon_ms"
        for s in family.samples
    }
    assert samples == {"news": H2 + 150 * MINUTE - T0}
    # Published a day further: no longer short, and said so.
    await guided.publish("news", [block("tomorrow", H2 + 150 * MINUTE, 24 * 60, "All day")])
    assert server.horizons.check() == set()
    assert [r for r in caplog.records if getattr(r, "event", "") == "guide_horizon_restored"]


async def test_with_tls_the_guide_is_served_over_https_with_the_same_certificate(
    tmp_path: Path, clock: ManualClock
) -> None:
    import ssl

    from tests.test_auth import Principal, write_auth_file
    from tests.test_tls import make_certs

    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    path = write_auth_file(tmp_path / "auth.toml", [Principal("tuner", ["reader"], "tuner-token")])
    r = await start_server(
        tmp_path / "data", clock, auth_file=str(path), http_listen="127.0.0.1:0",
        tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(certs.ca))
    try:
        async with aiohttp.ClientSession() as http:
            url = f"https://localhost:{r.server.http_port}/guide/xmltv.xml?token=tuner-token"
            async with http.get(url, ssl=trust) as resp:
                assert resp.status == 200 and b"<tv " in await resp.read()
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served on a TLS listener
                async with http.get(url.replace("https", "http")) as resp:
                    await resp.read()
    finally:
        await r.server.stop(0)


async def test_replicas_serve_the_guide_of_every_publish_at_once_with_the_same_etag(tmp_path: Path) -> None:
    """PostgreSQL replicas: what replica B publishes is in replica A's next
    answer, before any doorbell (A reads the versions with each request), and
    both give the same content the same ETag."""
    from tests.postgres import fresh_postgres_database

    with fresh_postgres_database() as url:
        a = Guided(
            await start_server(tmp_path / "a", ManualClock(T0), database_url=url, http_listen="127.0.0.1:0")
        )
        b = Guided(
            await start_server(tmp_path / "b", ManualClock(T0), database_url=url, http_listen="127.0.0.1:0")
        )
        try:
            await aired_morning(b)
            _, first, body = await a.get("/guide/xmltv.xml")
            assert b"The Film" in body and first["X-Playlog-Generations"] == "news=1"
            # B publishes; A answers it at once even if it never hears the
            # doorbell (its cache is dropped only by what it reads with the request).
            a.r.server.guide.on_remote_publish = lambda channel_id, generation_id: None  # type: ignore[method-assign]
            await b.publish("news", [block("flash", H2 + 120 * MINUTE, 30, "Newsflash", kind="live")],
                            operator_override=True, reason_code="BREAKING_NEWS")  # fmt: skip
            _, after_a, body_a = await a.get("/guide/xmltv.xml")
            _, after_b, body_b = await b.get("/guide/xmltv.xml")
            assert b"Newsflash" in body_a and after_a["X-Playlog-Generations"] == "news=2"
            assert body_a == body_b and after_a["ETag"] == after_b["ETag"] != first["ETag"]
        finally:
            for g in (a, b):
                await g.http.close()
                await g.r.server.stop(0)
