"""`playlog serve` with one more HTTP route, for bench/guide.py: the same
process, event loop, HTTP edge and middlewares as the product, plus
`GET /bench/static`, a fixed body of `--static-bytes` bytes made once at
start: the ceiling the guide's rendered-once XMLTV is measured against.

    python bench/guide_server.py --static-bytes N [playlog serve flags]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from playlog import config
from playlog.auth import Role
from playlog.events import configure_logging
from playlog.http.edge import Access, EdgeContext, route
from playlog.server import HTTP_ROUTES, serve


def static_route(size: int) -> object:
    body = (b"<tv>" + b"x" * max(0, size - 9) + b"</tv>")[:size]

    @route(Access(Role.READER, token_in_query=True, opened_by="guide_public"))
    async def static(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": "application/xml; charset=utf-8"})

    def register(app: web.Application, context: EdgeContext) -> None:
        app.router.add_get("/bench/static", static)

    return register


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--static-bytes", type=int, default=1)
    config.add_arguments(parser)
    args = parser.parse_args()
    settings = config.load(args)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, [*HTTP_ROUTES, static_route(args.static_bytes)]))  # type: ignore[list-item]
    return 0


if __name__ == "__main__":
    sys.exit(main())
