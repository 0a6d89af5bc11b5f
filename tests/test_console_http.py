"""The operator console's HTTP layer (SPEC section 15, issue 17) without a
browser: the page and its headers, the JSON API over the same servicers as
gRPC, hostile bodies, sessions, Origin, and the SSE feed from the WatchHub.
In-process on the manual clock; the tests of the demo channel run on both
stores, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from playlog.auth import Principal as AuthPrincipal
from playlog.auth import Role
from playlog.clock import ManualClock
from playlog.http.console import SseStream
from playlog.http.session import Session, SessionSigner
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import types_pb2 as pb
from tests.builders import HOUR, MINUTE, T0, blocks, entry
from tests.conftest import Running, start_server
from tests.test_auth import Principal, bearer, write_auth_file

STATIC = Path(__file__).parent.parent / "src" / "playlog" / "http" / "static"
NOW = T0 + 10 * MINUTE  # inside b0 = [T0, T0 + 30 min): b0 is on air


class Http:
    def __init__(self, r: Running) -> None:
        self.r = r
        self.base = f"http://127.0.0.1:{r.server.http_port}"
        # unsafe: keep cookies of an IP address host (127.0.0.1), as a browser does.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **kw: Any) -> tuple[int, CIMultiDict[str], Any]:
        async with self.session.get(self.base + path, **kw) as resp:
            body = await resp.read()
            try:
                parsed: Any = json.loads(body)
            except ValueError:
                parsed = body
            return resp.status, CIMultiDict(resp.headers), parsed

    async def post(self, path: str, body: Any, *, raw: bytes | None = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Origin": self.base, **kw.pop("headers", {})}
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(self.base + path, data=data, headers=headers, **kw) as resp:
            return resp.status, await resp.json()

    async def generation(self, channel_id: str = "news") -> int:
        status, _, body = await self.get(f"/api/v1/channels/{channel_id}")
        assert status == 200, body
        return int(body["channel"]["current_generation_id"])


async def _seed(r: Running, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """news: locked window 1 h, six half-hour blocks from T0; now = T0 + 10 min."""
    from playlog.v1 import channel_service_pb2 as ch

    await r.stubs.channel.DeclareChannel(
        ch.DeclareChannelRequest(channel_id="news", locked_window_ms=HOUR), metadata=metadata
    )
    await r.stubs.days.StoreScheduleDay(_day(), metadata=metadata)
    result = await r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id="news", range_start_utc_ms=T0, range_end_utc_ms=T0 + 3 * HOUR,
            entries=blocks(T0, 6, 30 * MINUTE),
        ),
        metadata=metadata,
    )  # fmt: skip
    assert result.ok, result
    r.clock.set_utc_ms(NOW)


def _day() -> Any:
    from playlog.v1 import schedule_day_service_pb2 as sd
    from tests.builders import schedule_day

    return sd.StoreScheduleDayRequest(schedule_day=schedule_day("news", "2026-11-22"))


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Running, Http]]:
    r = await start_server(
        tmp_path / "data", ManualClock(T0 - 2 * HOUR), http_listen="127.0.0.1:0", **overrides
    )
    http = Http(r)
    try:
        yield r, http
    finally:
        await http.session.close()
        await r.server.stop(0)


@pytest.fixture
async def console(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Running, Http]]:
    """The demo on both stores (database_url: "" is SQLite)."""
    async with served(tmp_path, database_url=database_url) as (r, http):
        await _seed(r)
        yield r, http


# -- the page ------------------------------------------------------------------------------


async def test_the_page_has_a_strict_policy_no_inline_script_and_only_vendored_assets(
    console: tuple[Running, Http],
) -> None:
    _, http = console
    status, headers, body = await http.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and "frame-ancestors 'none'" in csp
    page = body.decode()
    # Every script has a src on this server: nothing inline, nothing remote.
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="/static/app.js">']
    assert "http://" not in page and "https://" not in page
    status, headers, app_js = await http.get("/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    imports = re.findall(rb'from "([^"]+)"', app_js)
    assert imports == [b"./preact-htm-standalone-3.1.1.module.js"]
    # The vendored file is the one VENDORED.md records.
    vendored = (STATIC / "preact-htm-standalone-3.1.1.module.js").read_bytes()
    assert hashlib.sha256(vendored).hexdigest() in (STATIC / "VENDORED.md").read_text()
    status, headers, served_copy = await http.get("/static/preact-htm-standalone-3.1.1.module.js")
    assert status == 200 and served_copy == vendored
    etag = headers["ETag"]
    status, _, _ = await http.get(
        "/static/preact-htm-standalone-3.1.1.module.js", headers={"If-None-Match": etag}
    )
    assert status == 304
    status, _, again = await http.get("/static/app.js", headers={"If-None-Match": etag})
    assert status == 200 and again == app_js  # another asset's ETag does not match this one
    status, _, err = await http.get("/static/..%2Fapi.py")
    assert status == 404 and err["code"] == "NOT_FOUND"


# -- reads ---------------------------------------------------------------------------------


async def test_reads_answer_protobuf_json_of_the_same_messages_as_grpc(console: tuple[Running, Http]) -> None:
    r, http = console
    status, _, body = await http.get("/api/v1/channels")
    assert status == 200 and [c["channel_id"] for c in body["channels"]] == ["news"]
    status, _, window = await http.get(f"/api/v1/channels/news/window?from={T0}&to={T0 + 3 * HOUR}")
    assert status == 200
    grpc_window = await r.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="news", start_utc_ms=T0, end_utc_ms=T0 + 3 * HOUR)
    )
    assert [e["block_id"] for e in window["entries"]] == [e.block_id for e in grpc_window.entries]
    assert int(window["now_utc_ms"]) == NOW and int(window["locked_until_utc_ms"]) == NOW + HOUR
    assert window["entries"][0]["segments"][0]["duration_ms"] == "900000"  # int64 as protobuf JSON
    # ISO-8601 times mean the same instants.
    status, _, iso = await http.get(
        "/api/v1/channels/news/window?from=2026-11-22T00:00:00Z&to=2026-11-22T03:00:00%2B00:00"
    )
    assert status == 200 and iso == window
    # Paged as ReadWindowSnapshot pages (AIP-158).
    status, _, first = await http.get("/api/v1/channels/news/window?page_size=4")
    assert status == 200 and len(first["entries"]) == 4 and first["next_page_token"]
    status, _, rest = await http.get(
        f"/api/v1/channels/news/window?page_size=4&page_token={first['next_page_token']}"
    )
    assert status == 200 and [e["block_id"] for e in rest["entries"]] == ["b4", "b5"]
    status, _, bad = await http.get("/api/v1/channels/news/window?page_token=forged")
    assert status == 400 and "page_token" in bad["message"]
    # Defaults: the recent past and the hours ahead.
    status, _, default = await http.get("/api/v1/channels/news/window")
    assert status == 200 and len(default["entries"]) == 6
    for path in ("now", "engines", "as-run", "reconcile", "days/2026-11-22"):
        status, _, answer = await http.get(f"/api/v1/channels/news/{path}")
        assert status == 200, (path, answer)
    status, _, now = await http.get("/api/v1/channels/news/now")
    assert now["channels"][0]["on_air"]["start_utc_ms"] == str(T0)
    assert now["channels"][0]["covered_until_utc_ms"] == str(T0 + 3 * HOUR)
    status, _, clock = await http.get("/api/v1/clock")
    assert status == 200 and clock == {"now_utc_ms": str(NOW), "manual": True}
    status, _, records = await http.get("/api/v1/records?channel=news")
    assert status == 200 and records["records"] == []


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/channels/nope/window", 404, None),
        ("/api/v1/channels/news/window?from=yesterday", 400, "from"),
        ("/api/v1/channels/news/window?from=2026-11-22T00:00:00", 400, "from"),
        ("/api/v1/channels/news/window?from=1&from=2", 400, "from"),
        (f"/api/v1/channels/news/window?from={T0}&to={T0}", 400, "end_utc_ms"),
        ("/api/v1/channels/news/window?to=99999999999999999", 400, "to"),
        ("/api/v1/channels/news/as-run?page_size=-1", 400, "page_size"),
        ("/api/v1/channels/news/days/22-11-2026", 400, "programming_day_date"),
        ("/api/v1/records/unknown-id", 404, None),
        ("/api/v1/nothing-here", 404, None),
    ],
)
async def test_bad_reads_are_json_errors_with_the_grpc_codes_status(
    console: tuple[Running, Http], path: str, status: int, field: str | None
) -> None:
    _, http = console
    got, _, body = await http.get(path)
    assert got == status, body
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    if field is not None:
        assert field in body["message"], body


# -- writes --------------------------------------------------------------------------------


def _publish_body(start: int, end: int, prefix: str, **kw: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    request = ew.PublishAtomicReplaceRequest(
        range_start_utc_ms=start,
        range_end_utc_ms=end,
        entries=[
            entry(f"{prefix}{i}", s, s + 30 * MINUTE) for i, s in enumerate(range(start, end, 30 * MINUTE))
        ],
        **kw,
    )
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


async def test_a_dry_run_shows_the_diff_and_changes_nothing_then_the_write_records_first(
    console: tuple[Running, Http],
) -> None:
    r, http = console
    before = await http.generation()
    body = _publish_body(
        T0 + 30 * MINUTE,
        T0 + HOUR,
        "x",
        operator_override=True,
        validate_only=True,
        reason_code="BREAKING_NEWS",
    )
    status, dry = await http.post("/api/v1/channels/news/publish", body)
    assert status == 200 and dry["validate_only"] is True
    assert [s["block_id"] for s in dry["would_supersede"]] == ["b1"]
    assert [w["block_id"] for w in dry["would_write"]] == ["x0"]
    assert await http.generation() == before
    records = await r.stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id="news"))
    assert list(records.records) == []
    body.update(validate_only=False)
    status, done = await http.post("/api/v1/channels/news/publish", body)
    assert status == 200 and done["ok"] is True and done["override_record_id"]
    record = await r.stubs.audit.GetOverrideRecord(
        audit.GetOverrideRecordRequest(id=done["override_record_id"])
    )
    assert record.record.reason_code == "BREAKING_NEWS" and record.record.actor == "local"
    assert await http.generation() == int(done["published_generation_id"]) > before
    status, _, shown = await http.get(f"/api/v1/records/{done['override_record_id']}")
    assert status == 200 and shown["record"]["resulting_generation_id"] == done["published_generation_id"]


async def test_a_refusal_is_a_409_with_its_error_code_and_reason(console: tuple[Running, Http]) -> None:
    _, http = console
    before = await http.generation()
    # The locked window without an override.
    status, body = await http.post(
        "/api/v1/channels/news/publish", _publish_body(T0 + 30 * MINUTE, T0 + HOUR, "x")
    )
    assert status == 409 and body["code"] == "ERROR_CODE_LOCKED_WINDOW_VIOLATION", body
    assert "locked" in body["message"] and body["result"]["ok"] is False
    # ReplaceEntry of the entry on air: the cut is the way.
    replace = {"block_id": "b0", "entry": _publish_body(T0, T0 + 30 * MINUTE, "b")["entries"][0],
               "operator_override": True, "reason_code": "FIX"}  # fmt: skip
    status, body = await http.post("/api/v1/channels/news/replace", replace)
    assert status == 409 and body["code"] == "ERROR_CODE_PAST_WINDOW_IMMUTABLE" and "cut" in body["message"]
    assert await http.generation() == before


@pytest.mark.parametrize(
    ("raw", "content_type", "field"),
    [
        (b"not json", "application/json", "body"),
        (b"[1, 2]", "application/json", "body"),
        (b"\xff\xfe", "application/json", "body"),
        (b'{"no_such_field": 1}', "application/json", "no_such_field"),
        (b'{"range_start_utc_ms": "x"}', "application/json", "range_start_utc_ms"),
        (b'{"range_start_utc_ms": "99999999999999999999999"}', "application/json", "range_start_utc_ms"),
        (
            b'{"entries": [{"segments": [{"duration_ms": "y"}]}]}',
            "application/json",
            "entries.segments.duration_ms",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "body"),
        (
            b'{"entries": [{"segments": [' + b'{"duration_ms": -5},' * 3 + b"{}]}]}",
            "application/json",
            "entries",
        ),
        (b'{"range_start_utc_ms": "-1", "range_end_utc_ms": "1"}', "application/json", "range_start_utc_ms"),
        (b'{"generation_id": "9007199254740993"}', "application/json", "generation_id"),
        (b'{"channel_id": "sports"}', "application/json", "channel_id"),
        (b'{"entries": [{"block_id": "a\\u0000b"}]}', "application/json", "block_id"),
        (b"{}", "text/plain", "Content-Type"),
        (b"{}", "application/x-www-form-urlencoded", "Content-Type"),
    ],
)
async def test_a_hostile_body_is_a_400_naming_the_field_and_changes_nothing(
    console: tuple[Running, Http], raw: bytes, content_type: str, field: str
) -> None:
    _, http = console
    before = await http.generation()
    status, body = await http.post(
        "/api/v1/channels/news/publish", None, raw=raw, headers={"Content-Type": content_type}
    )
    assert status == 400, body
    assert body["code"] == "INVALID_ARGUMENT" and field in body["message"], body
    assert await http.generation() == before


async def test_a_write_from_another_origin_is_refused_and_changes_nothing(
    console: tuple[Running, Http],
) -> None:
    _, http = console
    before = await http.generation()
    body = _publish_body(T0 + 2 * HOUR, T0 + 3 * HOUR, "y")
    status, refused = await http.post(
        "/api/v1/channels/news/publish", body, headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and refused["code"] == "PERMISSION_DENIED" and "Origin" in refused["message"]
    assert await http.generation() == before
    # From the page's own origin it is made (auth off on loopback: the local operator).
    status, done = await http.post("/api/v1/channels/news/publish", body)
    assert status == 200 and done["ok"] is True


# -- sessions ------------------------------------------------------------------------------


async def test_sessions_token_once_then_a_signed_httponly_strict_cookie_with_roles(tmp_path: Path) -> None:
    path = write_auth_file(
        tmp_path / "auth.toml",
        [Principal("desk", ["operator"], "desk-token"), Principal("viewer", ["reader"], "viewer-token")],
    )
    async with served(tmp_path, auth_file=str(path)) as (r, http):
        await _seed(r, bearer("desk-token"))
        status, _, body = await http.get("/api/v1/channels")
        assert status == 401 and body["code"] == "UNAUTHENTICATED"
        status, _, who = await http.get("/api/v1/session")
        assert who["signed_in"] is False and who["auth"] is True
        status, body = await http.post("/api/v1/session", {"token": "wrong"})
        assert status == 401
        status, body = await http.post("/api/v1/session", {"token": 5})
        assert status == 400 and "token" in body["message"]

        viewer = Http(r)
        async with viewer.session.post(
            viewer.base + "/api/v1/session", json={"token": "viewer-token"}, headers={"Origin": viewer.base}
        ) as resp:
            assert resp.status == 200
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain HTTP here; under TLS it is Secure
        status, _, who = await viewer.get("/api/v1/session")
        assert who == {"signed_in": True, "auth": True, "principal": "viewer", "roles": ["reader"],
                       "operator": False}  # fmt: skip
        status, _, _ = await viewer.get("/api/v1/channels/news/window")
        assert status == 200
        # A reader cannot write, however it asks.
        before = await viewer.generation()
        body_ = _publish_body(T0 + 2 * HOUR, T0 + 3 * HOUR, "z")
        status, refused = await viewer.post("/api/v1/channels/news/publish", body_)
        assert status == 403 and "operator role" in refused["message"]
        status, refused = await viewer.post("/api/v1/channels/news/publish", {**body_, "validate_only": True})
        assert status == 403
        assert await viewer.generation() == before

        desk = Http(r)
        status, _ = await desk.post("/api/v1/session", {"token": "desk-token"})
        assert status == 200
        # A cookie write without Origin is refused (a browser always sends it).
        async with desk.session.post(
            desk.base + "/api/v1/channels/news/publish", json=body_, headers={}
        ) as resp:
            assert resp.status == 403 and "Origin" in (await resp.json())["message"]
        status, done = await desk.post("/api/v1/channels/news/publish", body_)
        assert status == 200 and done["ok"], done

        # A tampered cookie is no session.
        forged = Http(r)
        value = next(iter(viewer.session.cookie_jar)).value.replace("reader", "operator")
        forged.session.cookie_jar.update_cookies({"playlog_session": value})
        status, _, body = await forged.get("/api/v1/channels")
        assert status == 401 and "session" in body["message"]
        # Removing the principal from the auth file ends its session, and its
        # open event stream too (at its next event, within a progress interval).
        async with viewer.session.get(viewer.base + "/api/v1/channels/news/events") as stream:
            [(kind, _, _)] = await _events(stream, 1)
            assert kind == "snapshot"
            write_auth_file(path, [Principal("desk", ["operator"], "desk-token")])
            assert r.server.credentials is not None
            r.server.credentials.refresh(force=True)
            while kind != "error":
                [(kind, _, data)] = await _events(stream, 1)
            assert data["code"] == "UNAUTHENTICATED" and data["status"] == 401
        status, _, body = await viewer.get("/api/v1/channels")
        assert status == 401 and "revoked" in body["message"]
        # Signing out drops the cookie.
        async with desk.session.delete(desk.base + "/api/v1/session", headers={"Origin": desk.base}) as resp:
            assert resp.status == 200
        status, _, _ = await desk.get("/api/v1/channels")
        assert status == 401
        for client in (viewer, desk, forged):
            await client.session.close()


def test_a_session_expires_and_cannot_be_forged() -> None:
    signer = SessionSigner(b"k" * 32, ttl_ms=1000)
    both, _ = signer.issue(AuthPrincipal("two", frozenset({Role.READER, Role.ENGINE})), 5_000)
    assert "," not in both and '"' not in both  # only cookie-octets: never quoted
    assert signer.verify(both, 5_000) == Session("two", frozenset({Role.READER, Role.ENGINE}), 6_000)
    value, session = signer.issue(AuthPrincipal("desk", frozenset({Role.OPERATOR})), 5_000)
    assert session.expires_utc_ms == 6_000
    assert signer.verify(value, 5_999) == session
    assert signer.verify(value, 6_000) is None  # expired
    assert SessionSigner(b"x" * 32).verify(value, 5_000) is None  # another key
    payload, _, mac = value.rpartition(".")
    assert signer.verify(payload.replace("operator", "reader") + "." + mac, 5_000) is None
    assert signer.verify("garbage", 5_000) is None and signer.verify("", 5_000) is None


# -- the live feed -------------------------------------------------------------------------


async def _events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    """The next `count` SSE events: (event, id, data)."""
    out: list[tuple[str, str | None, dict[str, Any]]] = []
    kind, ident, data = "", None, ""
    while len(out) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and kind:
            out.append((kind, ident, json.loads(data)))
            kind, ident, data = "", None, ""
    return out


async def test_sse_is_the_watch_hub_with_generation_ids_and_resumes_by_last_event_id(
    console: tuple[Running, Http],
) -> None:
    r, http = console
    generation = await http.generation()
    url = http.base + "/api/v1/channels/news/events"
    async with http.session.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        retry = (await resp.content.readline()).decode()
        assert retry.startswith("retry: ") and 2000 <= int(retry[7:]) < 4000
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        [(kind, ident, data)] = await _events(resp, 1)
        assert kind == "snapshot" and data["complete"] is True and ident == str(generation)
        assert r.server.watch.subscriber_count("news") == 1  # the same hub as WatchWindow
        result = await r.stubs.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(channel_id="news", range_start_utc_ms=T0 + 2 * HOUR,
                                           range_end_utc_ms=T0 + 3 * HOUR,
                                           entries=blocks(T0 + 2 * HOUR, 2, 30 * MINUTE, prefix="n"))
        )  # fmt: skip
        events = [e for e in await _events(resp, 1)]
        while events[-1][0] == "progress":
            events += await _events(resp, 1)
        kind, ident, data = events[-1]
        assert kind == "replaced" and ident == str(result.published_generation_id)
        assert [e["block_id"] for e in data["entries"]] == ["n0", "n1"]
        # The manual clock moving sends a progress event at once, with the server's time.
        await r.stubs.clock.AdvanceTime(_advance(MINUTE))
        while True:
            [(kind, ident, data)] = await _events(resp, 1)
            if kind == "progress" and data["now_utc_ms"] == str(NOW + MINUTE):
                break
        assert ident == str(result.published_generation_id)
    # Published while the browser was away; it resumes after what it saw.
    missed = await r.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(channel_id="news", range_start_utc_ms=T0 + 2 * HOUR,
                                       range_end_utc_ms=T0 + 3 * HOUR,
                                       entries=blocks(T0 + 2 * HOUR, 2, 30 * MINUTE, prefix="m"))
    )  # fmt: skip
    async with http.session.get(url, headers={"Last-Event-ID": str(result.published_generation_id)}) as resp:
        [(kind, ident, data)] = await _events(resp, 1)
        assert kind == "replaced" and ident == str(missed.published_generation_id)
        assert data["previous_generation_id"] == str(result.published_generation_id)
    for bad in ("x", "-1", "9007199254740993"):
        status, _, body = await http.get("/api/v1/channels/news/events", headers={"Last-Event-ID": bad})
        assert status == 400 and "Last-Event-ID" in body["message"]
    status, _, body = await http.get("/api/v1/channels/nope/events")
    assert status == 404


def _advance(ms: int) -> Any:
    from playlog.v1 import clock_service_pb2 as clock

    return clock.AdvanceTimeRequest(delta_ms=ms)


class _Stalled:
    """An HTTP response whose browser never reads: every write waits forever."""

    def __init__(self) -> None:
        self.written = asyncio.Event()
        self.never = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.written.set()
        await self.never.wait()


async def test_a_browser_that_does_not_read_never_holds_up_the_hub(tmp_path: Path) -> None:
    async with served(tmp_path, watch_queue_events=2) as (r, _):
        await _seed(r)
        hub = r.server.watch
        stalled = _Stalled()
        request = ew.WatchWindowRequest(channel_id="news")
        stream = SseStream(_FakeRequest(), stalled)  # type: ignore[arg-type]
        task = asyncio.create_task(hub.watch(request, stream))  # type: ignore[arg-type]
        await asyncio.wait_for(stalled.written.wait(), 5)  # its snapshot: stuck from then on
        # A gRPC watcher beside it gets every publish while the browser is stuck.
        watcher = r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id="news"))
        first = await watcher.read()
        assert first.HasField("snapshot")
        generations = []
        for i in range(5):
            res = await r.stubs.window.PublishAtomicReplace(
                ew.PublishAtomicReplaceRequest(channel_id="news", range_start_utc_ms=T0 + 2 * HOUR,
                                               range_end_utc_ms=T0 + 3 * HOUR,
                                               entries=blocks(T0 + 2 * HOUR, 2, 30 * MINUTE, prefix=f"p{i}-"))
            )  # fmt: skip
            generations.append(res.published_generation_id)
        seen = []
        while len(seen) < 5:
            event: pb.WindowEvent = await asyncio.wait_for(watcher.read(), 5)
            if event.HasField("replaced"):
                seen.append(event.replaced.generation_id)
        assert seen == generations
        # The stuck browser's queue stayed bounded: it owes a reset, not five events.
        subscribers = hub._subscribers["news"]
        assert len(subscribers) == 2 and all(len(s.pending) <= 2 for s in subscribers)
        assert [s.needs_reset for s in subscribers].count(True) == 1
        watcher.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _FakeRequest:
    remote = "127.0.0.1"


async def test_under_tls_the_session_cookie_is_secure_and_the_origin_is_https(tmp_path: Path) -> None:
    import ssl

    from tests.test_tls import make_certs

    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    path = write_auth_file(tmp_path / "auth.toml", [Principal("desk", ["operator"], "desk-token")])
    async with served(
        tmp_path, auth_file=str(path), tls_cert=str(certs.server_cert), tls_key=str(certs.server_key)
    ) as (r, _):
        trust = ssl.create_default_context(cafile=str(certs.ca))
        base = f"https://localhost:{r.server.http_port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(base + "/api/v1/session", json={"token": "desk-token"}, ssl=trust,
                                 headers={"Origin": base}) as resp:  # fmt: skip
                assert resp.status == 200
                cookie = resp.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            # An http:// page is another origin than the https:// listener.
            async with http.post(base + "/api/v1/channels/news/publish", json={}, ssl=trust,
                                 headers={"Origin": base.replace("https", "http")}) as resp:  # fmt: skip
                assert resp.status == 403


def _hostile_values(rng: random.Random) -> Any:
    return rng.choice(
        [
            None, True, -1, 0, 2**63, -(2**63) - 1, 2**64, 1e308, float("nan"), "", "x" * 5000, "\u0000",
            "2026-11-22T00:00:00Z", "\ud7ff\U0001f4fa", [], [None], {}, {"a": {"b": [1]}}, "1795305600000",
            [{"block_id": "z", "segments": [{"duration_ms": "x"}]}], [{"segments": [{}] * 3}],
        ]
    )  # fmt: skip


async def test_no_body_however_hostile_gets_a_500_or_changes_anything(console: tuple[Running, Http]) -> None:
    """A deterministic fuzz of 300 bodies: every field of both write requests,
    and some that do not exist, set to hostile values of every JSON type."""
    _, http = console
    rng = random.Random(17)
    before = await http.generation()
    fields = {
        "publish": [f.name for f in ew.PublishAtomicReplaceRequest.DESCRIPTOR.fields] + ["nope"],
        "replace": [f.name for f in ew.ReplaceEntryRequest.DESCRIPTOR.fields] + ["entry.segments"],
    }
    statuses: dict[int, int] = {}
    for _ in range(300):
        kind = rng.choice(["publish", "replace"])
        body = {name: _hostile_values(rng) for name in rng.sample(fields[kind], rng.randint(1, 4))}
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        status, answer = await http.post(f"/api/v1/channels/news/{kind}", None, raw=raw)
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (400, 409), (body, answer)
        assert set(answer) >= {"code", "message", "details"}
    assert await http.generation() == before
    assert statuses.get(400, 0) > 200, statuses
