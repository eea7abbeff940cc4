"""Small pages with no state of their own."""

from __future__ import annotations

from aiohttp import web


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/staff/tickets")
