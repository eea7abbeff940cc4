"""Page rendering in the layout, and the error pages every failure ends on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ticketexport.web.keys import REQUEST_ID, RUNNING_EXPORTS, SESSION, USER

# The status logged for a request whose client went away before its answer (nginx's
# convention); nobody receives it.
CLIENT_GONE = 499

TITLES = {
    400: "Bad request",
    401: "Sign in required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request too large",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Try again later",
}

MESSAGES = {
    400: "The request could not be understood.",
    401: "Sign in to continue.",
    403: "You are not allowed to do that.",
    404: "There is nothing at this address, or you cannot see it.",
    405: "This address does not accept that kind of request.",
    413: "The request is too large.",
    500: "An unexpected error occurred. It has been logged; please try again later.",
}


class PageError(Exception):
    """An expected failure shown to the user as an error page with a safe message."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(status, TITLES.get(status, "Error")))
        self.status = status
        self.message = message or MESSAGES.get(status, TITLES.get(status, "Error"))


def page_context(request: web.Request) -> dict[str, Any]:
    """What the layout needs on every page, error pages included."""
    user = request.get(USER)
    session = request.get(SESSION)
    return {
        "current_user": user,
        "csrf_token": session.csrf_token if session else None,
        "request_id": request.get(REQUEST_ID, ""),
        "path": request.path,
        "running_exports": request.get(RUNNING_EXPORTS) if user else None,
    }


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    full = {**page_context(request), **context}
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    # Pages carry per-user data and CSRF tokens: no shared or back-button caching.
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(
    request: web.Request,
    status: int,
    message: str | None = None,
    *,
    link: tuple[str, str] | None = None,
) -> web.Response:
    return render(
        request,
        "error.html",
        {
            "status": status,
            "title": TITLES.get(status, "Error"),
            "message": message or MESSAGES.get(status, TITLES.get(status, "Error")),
            "link": link,
        },
        status=status,
    )


async def posted_fields(request: web.Request) -> dict[str, str]:
    """The posted fields, each once and as text (csrf_token is the middleware's)."""
    form = await request.post()
    fields: dict[str, str] = {}
    for key in form:
        if key == "csrf_token":
            continue
        values = form.getall(key)
        if len(values) > 1:
            raise PageError(400, f"the field {key[:40]!r} is given more than once")
        value = values[0]
        if not isinstance(value, str):
            raise PageError(400, f"the field {key[:40]!r} must be text")
        if value != "":
            fields[key] = value
    return fields
