"""The API tokens page: list, create (the secret shown once) and revoke."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ticketexport import tokens
from ticketexport.web.keys import USER, pool_of
from ticketexport.web.render import PageError, render
from ticketexport.web.security import client_ip

_FIELDS = frozenset({"csrf_token", "name", "scopes", "expires_days"})


async def _page(
    request: web.Request,
    *,
    created: tokens.Created | None = None,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    user = request[USER]
    async with pool_of(request).connection() as conn:
        lines = await tokens.list_tokens(conn, user)
    return render(
        request,
        "tokens.html",
        {
            "tokens": lines,
            "everyone": tokens.sees_everyones(user),
            "can_create": tokens.may_create(user),
            "scopes": tokens.SCOPES,
            "created": created,
            "error": error,
            "form": form or {"name": "", "scopes": [], "expires_days": str(tokens.DEFAULT_DAYS)},
            "max_days": tokens.MAX_DAYS,
        },
        status=status,
    )


async def token_list(request: web.Request) -> web.StreamResponse:
    """GET /staff/tokens: mine (everyone's for an administrator with the export permission)."""
    if request.query:
        raise PageError(400, f"unknown parameter {sorted(request.query)[0][:40]!r}")
    return await _page(request)


def _text(form: Any, key: str) -> str:
    values = form.getall(key, [])
    if len(values) > 1:
        raise PageError(400, f"the field {key!r} is given more than once")
    value = values[0] if values else ""
    if not isinstance(value, str):
        raise PageError(400, f"the field {key!r} must be text")
    return value


async def token_create(request: web.Request) -> web.StreamResponse:
    """POST /staff/tokens (name, scopes repeated, expires_days, csrf_token): the page again,
    showing the new token's secret this once."""
    user = request[USER]
    if not tokens.may_create(user):
        raise PageError(403, tokens.TokenDenied.default_message)
    form = await request.post()
    unknown = sorted(set(form) - _FIELDS)
    if unknown:
        raise PageError(400, f"unknown field {unknown[0][:40]!r}")
    scopes = form.getall("scopes", [])
    if not all(isinstance(scope, str) for scope in scopes):
        raise PageError(400, "the field 'scopes' must be text")
    name = _text(form, "name")
    chosen = [str(scope) for scope in scopes]
    days = _text(form, "expires_days")
    shown: dict[str, Any] = {"name": name, "scopes": chosen, "expires_days": days}
    try:
        parsed = tokens.parse_request(name, chosen, days)
    except tokens.TokenInvalid as exc:
        return await _page(request, error=exc.message, form=shown, status=400)
    async with pool_of(request).connection() as conn:
        created = await tokens.create_token(conn, user, parsed, client_ip=client_ip(request))
    return await _page(request, created=created)


async def token_revoke(request: web.Request) -> web.StreamResponse:
    """POST /staff/tokens/{id}/revoke (csrf_token) → 303 /staff/tokens."""
    try:
        token_id = int(request.match_info["id"])
    except ValueError:
        raise PageError(404) from None
    async with pool_of(request).connection() as conn:
        await tokens.revoke_token(conn, request[USER], token_id, client_ip=client_ip(request))
    raise web.HTTPSeeOther("/staff/tokens")


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/staff/tokens", token_list)
    router.add_post("/staff/tokens", token_create)
    router.add_post(r"/staff/tokens/{id:[1-9][0-9]{0,17}}/revoke", token_revoke)
