"""The guide as users reach it: the built service as a subprocess with
--http-listen, read with curl (If-None-Match, HEAD, gzip), grpcurl
(GuideService by reflection) and playlog ctl (declare with metadata,
channels, guide, now); SIGTERM stops both listeners cleanly."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.builders import HOUR, MINUTE, T0
from tests.test_ctl import Ctl, iso, news_day
from tests.test_served_process import GRPCURL, Served, free_port, grpcurl

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")  # Debian has it; see README
DTD = etree.DTD(str(Path(__file__).parent / "xmltv" / "xmltv.dtd"))
H2 = T0 + 2 * HOUR


def curl(*args: str) -> tuple[dict[str, str], bytes]:
    """(status line and headers, body) of one curl call."""
    assert CURL is not None
    dump = [] if "-I" in args else ["-D", "-"]  # -I prints the headers itself
    result = subprocess.run([CURL, "-sS", *dump, *args], capture_output=True, timeout=30, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {"status": lines[0].split()[1]}
    headers.update({k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])})
    return headers, body


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str, Ctl]]:
    http_port = free_port()
    server = Served(
        tmp_path / "data", free_port(), "--clock", "manual", "--start-utc-ms", str(T0),
        "--http-listen", f"127.0.0.1:{http_port}",
    )  # fmt: skip
    yield server, f"http://127.0.0.1:{http_port}", Ctl(server.address, tmp_path)
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def test_the_guide_of_the_served_process_through_curl_grpcurl_and_ctl(
    served: tuple[Served, str, Ctl],
) -> None:
    server, base, ctl = served
    news_day(ctl)  # the README's channel: 02:00-04:00 in four blocks, one 2-hour slot
    out = ctl.ok("declare", "news", "--lock", "1h", "--display-name", "News 24", "--number", "4.1",
                 "--stream-url", "http://tv.example/news.ts")  # fmt: skip
    assert "channel news declared" in out and "override record" not in out
    channels = ctl.ok("channels").splitlines()
    assert channels[0].split() == ["CHANNEL", "LOCK", "GENERATION", "NAME", "NUMBER", "GUIDE", "ID", "STREAM"]
    assert "News 24" in channels[1] and "news.playlog" in channels[1] and "4.1" in channels[1]

    headers, body = curl(f"{base}/guide/xmltv.xml")
    assert headers["status"] == "200" and headers["x-playlog-generations"] == "news=1"
    doc = etree.fromstring(body)
    assert DTD.validate(doc), DTD.error_log.filter_from_errors()
    programmes = [(p.get("start"), p.get("stop"), p.findtext("title")) for p in doc.iter("programme")]
    # Four blocks in one slot: one programme, named by the slot (no title: its program_id).
    assert programmes == [("20261122020000 +0000", "20261122040000 +0000", "morning-news")]
    etag = headers["etag"]
    again, empty = curl("-H", f"If-None-Match: {etag}", f"{base}/guide/xmltv.xml")
    assert (again["status"], again["etag"], empty) == ("304", etag, b"")
    head, nothing = curl("-I", f"{base}/guide/xmltv.xml")
    assert head["status"] == "200" and head["etag"] == etag and int(head["content-length"]) == len(body)
    assert nothing == b""
    zipped_headers, zipped = curl("-H", "Accept-Encoding: gzip", f"{base}/guide/xmltv.xml")
    assert zipped_headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == body
    _, file = curl(f"{base}/guide/xmltv.xml.gz")
    assert gzip.decompress(file) == body
    _, playlist = curl(f"{base}/guide/channels.m3u")
    assert playlist.decode().splitlines() == [
        f'#EXTM3U url-tvg="{base}/guide/xmltv.xml"',
        '#EXTINF:-1 tvg-id="news.playlog" tvg-chno="4.1" tvg-name="News 24",News 24',
        "http://tv.example/news.ts",
    ]
    bad, reason = curl(f"{base}/guide/xmltv.xml?days=15")
    assert bad["status"] == "400" and json.loads(reason)["details"][0]["field"] == "days"

    # grpcurl finds GuideService by reflection and reads the same guide.
    listing = subprocess.run([GRPCURL, "-plaintext", server.address, "list"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()  # fmt: skip
    assert "playlog.v1.GuideService" in listing
    got = grpcurl(server.address, "playlog.v1.GuideService/GetGuide",
                  {"channel_ids": ["news"], "start_utc_ms": T0, "end_utc_ms": T0 + 6 * HOUR})  # fmt: skip
    guide = got["channels"][0]  # type: ignore[index]
    assert [p["program_id"] for p in guide["programmes"]] == ["morning-news"]
    assert guide["programmes"][0]["provenance"]["block_ids"] == ["news-0", "news-1", "news-2", "news-3"]

    # ctl guide and ctl now show the same, and now/next moves with the manual clock.
    ctl.ok("clock", "set", iso(H2 + 10 * MINUTE))
    table = ctl.ok("guide", "news", "--from", iso(T0), "--to", "+6h").splitlines()
    assert table[0].startswith("channel news (news.playlog)") and "generation 1" in table[0]
    assert table[2].split()[:4] == ["on", "air", iso(H2), iso(H2 + 2 * HOUR)]
    assert "news-0 news-1 news-2 news-3" in table[2]
    lines = dict(line.split(":", 1) for line in ctl.ok("now", "news").splitlines())
    assert lines["programme"].strip().startswith(f"'morning-news' [{iso(H2)}, {iso(H2 + 2 * HOUR)}) on air")
    assert lines["programme left"].strip() == "1h50m" and lines["next programme"].strip() == "nothing"
    assert lines["on air"].strip().startswith("news-0 ")  # the entry lines are still there
    view = json.loads(ctl.ok("now", "news", "-o", "json"))
    assert view["now_next"]["on_air"]["title"] == "morning-news"
    now_json = json.loads(curl(f"{base}/guide/now.json")[1])
    assert now_json["channels"][0]["on_air"]["status"] == "PROGRAMME_STATUS_ON_AIR"

    # SIGTERM: both listeners stop, the process exits cleanly.
    assert server.stop(signal.SIGTERM) == 0
    events = [e.get("event") for e in server.log_events()]
    assert "stopped" in events
    # Published 2 h ahead: the server warned of it by itself, once, with no viewer asking.
    short = [e for e in server.log_events() if e.get("event") == "guide_horizon_short"]
    assert [e["channel_id"] for e in short] == ["news"]
    serving = next(e for e in server.log_events() if e.get("event") == "serving")
    assert serving["http_port"] == int(re.sub(r".*:", "", base)) and serving["guide"] == "public"
