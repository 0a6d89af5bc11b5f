"""The guide over HTTP (SPEC section 14): /guide/xmltv.xml (and .xml.gz),
/guide/channels.m3u, /guide/now.json. Reader role (a bearer header, or
`?token=` for consumers that cannot set headers) unless --guide-public.

Rendered once, served many times: a request reads only the versions of what
its document shows (each channel's generation and metadata, the ids of the
ScheduleDays of its dates; no entries), and is served the bytes rendered for
those versions if there are any. Otherwise one render (shared by every
request asking at the same time) reads and derives the channels whose
version changed (app.guide keeps the rest) and keys what it made by the
versions it read in the same transaction. The ETag is a hash of the body, so
it changes exactly when the content does, on every replica alike.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gzip
import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from playlog import metrics
from playlog.api import convert
from playlog.app.guide import DAY_MS, HOUR_MS, ChannelVersion
from playlog.auth import Role
from playlog.domain.guide import validate_request
from playlog.domain.model import Channel
from playlog.domain.validation import quote
from playlog.epg import m3u, xmltv
from playlog.http.edge import Access, EdgeContext, Rendered, bad_parameter, route

GUIDE = Access(Role.READER, token_in_query=True, opened_by="guide_public")
DEFAULT_DAYS, MAX_DAYS = 7, 14
_DAYS = re.compile(r"[0-9]{1,2}")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
# Rendered documents kept (each a few MB with its gzip form), and programme
# fragments (one per channel and range).
MAX_DOCUMENTS = 16
MAX_FRAGMENTS = 4096
GZIP_LEVEL = 6


def register(app: web.Application, context: EdgeContext) -> None:
    routes = GuideRoutes(context)
    app.router.add_get("/guide/xmltv.xml", routes.xmltv)
    app.router.add_get("/guide/xmltv.xml.gz", routes.xmltv_gz)
    app.router.add_get("/guide/channels.m3u", routes.m3u)
    app.router.add_get("/guide/now.json", routes.now)


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_parameter(name, f"give it once, got {len(values)} values")
    return values[0] if values else None


def days_of(request: web.Request) -> int:
    value = _one(request, "days")
    if value is None:
        return DEFAULT_DAYS
    if not _DAYS.fullmatch(value) or not 1 <= int(value) <= MAX_DAYS:
        raise bad_parameter(
            "days", f"must be a whole number of days from 1 to {MAX_DAYS}, got {quote(value)}"
        )
    return int(value)


def channels_of(request: web.Request) -> list[str]:
    asked = list(dict.fromkeys(request.query.getall("channel", [])))
    validate_request(asked, channel_field="channel")
    return asked


def xmltv_range(days: int) -> Callable[[int], tuple[int, int]]:
    """From one hour before the current hour, `days` days on."""

    def range_of(now: int) -> tuple[int, int]:
        hour = now - now % HOUR_MS
        return hour - HOUR_MS, hour + days * DAY_MS

    return range_of


def generations(channels: Sequence[Channel]) -> str:
    return ",".join(f"{c.channel_id}={c.current_generation_id}" for c in channels)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:40] + '"'


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class GuideRoutes:
    def __init__(self, context: EdgeContext) -> None:
        self.context = context
        self.guide = context.guide
        # (channels asked, days) -> (versions key, rendered), least recent first.
        self._documents: collections.OrderedDict[Any, tuple[Any, Rendered]] = collections.OrderedDict()
        self._fragments: collections.OrderedDict[Any, tuple[Any, str]] = collections.OrderedDict()
        self._rendering: dict[Any, asyncio.Future[tuple[Any, Rendered]]] = {}
        # ETag -> when this process first served it (Last-Modified).
        self._first_seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    # -- answers ---------------------------------------------------------------------------

    def _seen(self, etag: str) -> float:
        when = self._first_seen.get(etag)
        if when is None:
            when = self._first_seen[etag] = self.context.playlog.clock.now_utc_ms() / 1000
            while len(self._first_seen) > 4 * MAX_DOCUMENTS:
                self._first_seen.popitem(last=False)
        return when

    def _respond(
        self,
        request: web.Request,
        rendered: Rendered,
        content_type: str,
        *,
        gzip_file: bool = False,
        negotiate_gzip: bool = False,
    ) -> web.Response:
        body, etag = rendered.body, rendered.etag
        headers = {"Cache-Control": "no-cache", **rendered.headers}
        if gzip_file:
            assert rendered.gzipped is not None
            body, etag, content_type = rendered.gzipped, etag[:-1] + '-gz"', "application/gzip"
        elif negotiate_gzip:
            headers["Vary"] = "Accept-Encoding"
            if rendered.gzipped is not None and _accepts_gzip(request):
                body, etag = rendered.gzipped, etag[:-1] + '-gzip"'
                headers["Content-Encoding"] = "gzip"
        headers["ETag"] = etag
        headers["Last-Modified"] = formatdate(rendered.last_modified, usegmt=True)
        if _matches(request.headers.get("If-None-Match"), etag):
            headers.pop("Content-Encoding", None)
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type
        return web.Response(body=body, headers=headers)

    # -- XMLTV -------------------------------------------------------------------------------

    @route(GUIDE)
    async def xmltv(self, request: web.Request) -> web.Response:
        rendered = await self._xmltv(request)
        return self._respond(request, rendered, "application/xml; charset=utf-8", negotiate_gzip=True)

    @route(GUIDE)
    async def xmltv_gz(self, request: web.Request) -> web.Response:
        rendered = await self._xmltv(request)
        return self._respond(request, rendered, "application/gzip", gzip_file=True)

    async def _xmltv(self, request: web.Request) -> Rendered:
        days, channel_ids = days_of(request), channels_of(request)
        _, start, end, versions = await self.context.read(self.guide.versions, channel_ids, xmltv_range(days))
        shape = (tuple(channel_ids), days)
        key = _key(start, end, versions)
        kept = self._documents.get(shape)
        if kept is not None and kept[0] == key:
            self._documents.move_to_end(shape)
            return kept[1]
        made_key, rendered = await self._shared(key, lambda: self._render_xmltv(channel_ids, start, end))
        self._documents[shape] = (made_key, rendered)
        self._documents.move_to_end(shape)
        while len(self._documents) > MAX_DOCUMENTS:
            self._documents.popitem(last=False)
        return rendered

    async def _shared(self, key: Any, render: Callable[[], tuple[Any, Rendered]]) -> tuple[Any, Rendered]:
        """One render per key at a time, its result for every request waiting
        on it; a request that goes away does not cancel it for the others."""
        task = self._rendering.get(key)
        if task is None:
            task = asyncio.ensure_future(self.context.run(render))
            self._rendering[key] = task
            task.add_done_callback(functools.partial(self._rendered, key))
        return await asyncio.shield(task)

    def _rendered(self, key: Any, task: asyncio.Future[tuple[Any, Rendered]]) -> None:
        self._rendering.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: the requests waiting on it answer it

    def _render_xmltv(self, channel_ids: Sequence[str], start: int, end: int) -> tuple[Any, Rendered]:
        read = self.guide.read(channel_ids, start, end)
        fragments = []
        for g in read.channels:
            where, version = (g.channel.channel_id, start, end), (g.version.key, g.channel)
            kept = self._fragments.get(where)
            if kept is not None and kept[0] == version:
                fragment = kept[1]
            else:
                fragment = xmltv.programme_elements(g.channel, g.derivation.programmes)
                self._fragments[where] = (version, fragment)
            fragments.append(fragment)
        while len(self._fragments) > MAX_FRAGMENTS:
            self._fragments.popitem(last=False)
        body = xmltv.document((xmltv.channel_element(g.channel) for g in read.channels), fragments)
        metrics.GUIDE_RENDERS.labels("xmltv").inc()
        etag = _etag(body)
        rendered = Rendered(
            body,
            etag,
            self._seen(etag),
            {"X-Playlog-Generations": generations([g.channel for g in read.channels])},
            gzip.compress(body, GZIP_LEVEL, mtime=0),
        )
        return _key(start, end, [g.version for g in read.channels]), rendered

    # -- M3U and now/next ---------------------------------------------------------------------

    @route(GUIDE)
    async def m3u(self, request: web.Request) -> web.Response:
        channels = await self.context.read(self.context.playlog.list_channels)
        host = request.host if _HOST.fullmatch(request.host or "") else f"127.0.0.1:{request.url.port}"
        url = f"{request.scheme}://{host}/guide/xmltv.xml"
        token = request.query.get("token")
        if token:  # a consumer that had to send it in the URL needs it in the guide's too
            url += "?" + urllib.parse.urlencode({"token": token})
        body = m3u.playlist(channels, url)
        headers = {"X-Playlog-Generations": generations(channels)}
        etag = _etag(body)
        rendered = Rendered(body, etag, self._seen(etag), headers)
        return self._respond(request, rendered, "audio/x-mpegurl; charset=utf-8")

    @route(GUIDE)
    async def now(self, request: web.Request) -> web.Response:
        channel_ids = channels_of(request)
        now, answers = await self.context.run(self.guide.now_next, channel_ids)
        message = convert.now_next_to_pb(now, answers)
        message.ClearField("now_utc_ms")  # the ETag changes with the programmes, not with every instant
        doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
        body = (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
        headers = {"X-Playlog-Generations": generations([a.channel for a in answers])}
        etag = _etag(body)
        rendered = Rendered(body, etag, self._seen(etag), headers)
        return self._respond(request, rendered, "application/json")


def _key(start: int, end: int, versions: Sequence[ChannelVersion]) -> tuple[Any, ...]:
    return (start, end, tuple((v.channel, v.day_ids) for v in versions))
