"""Administration pages: users, roles, the audit log and the queue. Handlers parse, check
access and render; the rules live in ticketexport.accounts, .admin_audit and .queue_status."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from ticketexport import accounts, admin_audit, audit, queue_status
from ticketexport.accounts import AccountDenied, AccountError, ActingUser
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Invalid
from ticketexport.domain.permissions import LABELS, Permission, permission_name
from ticketexport.web.keys import PASSWORD_EXECUTOR, pool_of, settings_of, user_of
from ticketexport.web.render import PageError, render
from ticketexport.web.security import client_ip

MAX_SEARCH = 200
MAX_FIELD = 1024
MAX_CHOICES = 200
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,400}$")
# Each section, the permission it needs (besides the administrator flag) and its label.
SECTIONS = (
    ("/admin/users", Permission.USERS, "Users"),
    ("/admin/roles", Permission.ADMINISTRATORS, "Roles"),
    ("/admin/audit", Permission.AUDIT_LOGS, "Audit log"),
    ("/admin/queue", Permission.SYSTEM_SETTINGS, "Queue"),
)
PERMISSION_CHOICES = [(permission_name(p), LABELS[p]) for p in Permission]


def sections_for(user: Actor | None) -> list[tuple[str, str]]:
    """The admin sections this user may open (the layout links only these)."""
    if user is None or not user.is_admin:
        return []
    return [(path, label) for path, flag, label in SECTIONS if user.has(flag)]


def _require(request: web.Request, flag: Permission) -> Actor:
    """An administrator holding `flag`, or 404: a page nobody else may know exists."""
    user = user_of(request)
    if user is None or not user.is_admin or not user.has(flag):
        raise PageError(404)
    return user


def _zone(request: web.Request) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings_of(request).timezone)


def _render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    return render(request, template, context, status=status)


# Form reading --------------------------------------------------------------------------


def _text(form: MultiDictProxy[Any], name: str, *, required: bool = False) -> str:
    values = form.getall(name, [])
    if len(values) > 1:
        raise Invalid(f"the field {name!r} is given more than once")
    value = values[0] if values else ""
    if not isinstance(value, str):
        raise Invalid(f"the field {name!r} must be text")
    if len(value) > MAX_FIELD or "\x00" in value:
        raise Invalid(f"the field {name!r} is too long or holds a NUL character")
    if required and not value.strip():
        raise Invalid(f"the field {name!r} is required")
    return value


def _flag(form: MultiDictProxy[Any], name: str) -> bool:
    value = _text(form, name)
    if value not in ("", "1"):
        raise Invalid(f"the field {name!r} is a checkbox: 1 when checked, absent otherwise")
    return value == "1"


def _names(form: MultiDictProxy[Any], name: str) -> list[str]:
    values = form.getall(name, [])
    if len(values) > MAX_CHOICES:
        raise Invalid(f"the field {name!r} is given too many times")
    result = []
    for value in values:
        if not isinstance(value, str) or not _ROLE_NAME.match(value):
            raise Invalid(f"the field {name!r} holds a value that is not a name")
        result.append(value)
    return sorted(set(result))


def _permissions(names: list[str]) -> Permission:
    known = {permission_name(p): p for p in Permission}
    result = Permission(0)
    for name in names:
        if name not in known:
            raise Invalid(f"unknown permission {name!r}")
        result |= known[name]
    return result


def _only(query: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise PageError(400, f"unknown parameter {unknown[0][:40]!r}")


def _single(request: web.Request, name: str) -> str:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise PageError(400, f"the parameter {name!r} is given more than once")
    return values[0] if values else ""


async def _hash(request: web.Request, password: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        request.app[PASSWORD_EXECUTOR], accounts.hash_password, password
    )


def _acting(request: web.Request, user: Actor) -> ActingUser:
    return ActingUser(user, client_ip(request))


_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _Shown:
    """What a form's page shows again after a post: the values posted, the error, its status."""

    form: Mapping[str, Any] | None = None
    error: str | None = None
    status: int = 200

    @classmethod
    def invalid(cls, exc: Invalid) -> _Shown:
        return cls(error=str(exc), status=400)

    @classmethod
    def refused(cls, values: Mapping[str, Any], exc: AccountError) -> _Shown:
        return cls(form=values, error=str(exc), status=_status_for(exc))


# The page before any post.
_FIRST = _Shown()


async def _carry_out(request: web.Request, plan: accounts.Plan[_T]) -> _T:
    """An account plan carried out on a connection of the pool, in one transaction."""
    async with pool_of(request).connection() as conn:
        return await accounts.run_async(conn, plan)


def _user_form(form: MultiDictProxy[Any], *, with_active: bool) -> dict[str, Any]:
    """A user's posted fields, in the order their errors are reported."""
    values: dict[str, Any] = {
        "name": _text(form, "name", required=True),
        "email": _text(form, "email", required=True),
        "admin": _flag(form, "admin"),
    }
    if with_active:
        values["active"] = _flag(form, "active")
    values["roles"] = _names(form, "roles")
    return values


def _check_identity(values: Mapping[str, Any]) -> None:
    """The address and the name as the account rules take them (AccountError if not)."""
    accounts.normalize_email(values["email"])
    accounts.split_name(values["name"])


def _status_for(error: AccountError) -> int:
    return 403 if isinstance(error, AccountDenied) else 400


# Users ---------------------------------------------------------------------------------


def _encode_after(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def _decode_after(token: str) -> str:
    bad = PageError(400, "the page cursor is not valid; start again from the first page")
    if not _CURSOR.match(token):
        raise bad
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise bad from None
    if not text or "\x00" in text or len(text) > 254:
        raise bad
    return text


async def _users_page(
    request: web.Request,
    user: Actor,
    shown: _Shown = _FIRST,
) -> web.Response:
    _only(request.query, {"q", "page"})
    search = _single(request, "q").strip()
    if len(search) > MAX_SEARCH or "\x00" in search:
        raise PageError(400, f"the search is at most {MAX_SEARCH} characters, with no NUL")
    token = _single(request, "page")
    after = _decode_after(token) if token else None
    async with pool_of(request).connection() as conn:
        users, next_after = await accounts.list_users(conn, search=search or None, after=after)
        roles = await accounts.list_roles(conn)
    next_url = None
    if next_after is not None:
        query = {"page": _encode_after(next_after), **({"q": search} if search else {})}
        next_url = str(request.rel_url.with_query(query))
    return _render(
        request,
        "admin_users.html",
        {
            "users": users,
            "roles": roles,
            "search": search,
            "next_url": next_url,
            "form": shown.form or {"name": "", "email": "", "admin": False, "roles": []},
            "error": shown.error,
            "may_set_admin": user.has(Permission.ADMINISTRATORS),
        },
        status=shown.status,
    )


async def users_get(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.USERS)
    return await _users_page(request, user)


async def users_post(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.USERS)
    form = await request.post()
    try:
        values = _user_form(form, with_active=False)
        password = _text(form, "password", required=True)
    except Invalid as exc:
        return await _users_page(request, user, _Shown.invalid(exc))
    try:
        _check_identity(values)
        plan = accounts.add_user_plan(
            values["email"],
            name=values["name"],
            password_hash=await _hash(request, password),
            admin=values["admin"],
            roles=values["roles"],
            by=_acting(request, user),
        )
        new_id = await _carry_out(request, plan)
    except AccountError as exc:
        return await _users_page(request, user, _Shown.refused(values, exc))
    raise web.HTTPSeeOther(f"/admin/users/{new_id}")


def _user_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def _user_page(
    request: web.Request,
    user: Actor,
    shown: _Shown = _FIRST,
) -> web.Response:
    _only(request.query, {"saved"})
    async with pool_of(request).connection() as conn:
        target = await accounts.get_user(conn, _user_id(request))
        roles = await accounts.list_roles(conn)
    if target is None:
        raise PageError(404)
    values = shown.form or {
        "name": target.name,
        "email": target.email,
        "admin": target.admin,
        "active": target.active,
        "roles": target.roles,
    }
    return _render(
        request,
        "admin_user.html",
        {
            "target": target,
            "roles": roles,
            "form": values,
            "error": shown.error,
            "saved": request.query.get("saved") == "1" and shown.error is None,
            "may_set_admin": user.has(Permission.ADMINISTRATORS),
            "is_self": target.id == user.id,
        },
        status=shown.status,
    )


async def user_get(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.USERS)
    return await _user_page(request, user)


async def user_post(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.USERS)
    user_id = _user_id(request)
    form = await request.post()
    try:
        values = _user_form(form, with_active=True)
        password = _text(form, "password")
    except Invalid as exc:
        return await _user_page(request, user, _Shown.invalid(exc))
    # Without the Administrators permission the form has no admin checkbox: an absent one
    # then means "leave it", while a posted 1 is a request the rules refuse or allow.
    admin: bool | None = values["admin"]
    if not user.has(Permission.ADMINISTRATORS) and not values["admin"]:
        admin = None
    try:
        _check_identity(values)
        hashed = await _hash(request, password) if password else None
        async with pool_of(request).connection() as conn:
            if await accounts.get_user(conn, user_id) is None:
                raise PageError(404)
        plan = accounts.update_user_plan(
            user_id,
            name=values["name"],
            email=values["email"],
            password_hash=hashed,
            admin=admin,
            active=values["active"],
            roles=values["roles"],
            by=_acting(request, user),
        )
        await _carry_out(request, plan)
    except AccountError as exc:
        return await _user_page(request, user, _Shown.refused(values, exc))
    raise web.HTTPSeeOther(f"/admin/users/{user_id}?saved=1")


# Roles ---------------------------------------------------------------------------------


async def _roles_page(
    request: web.Request,
    shown: _Shown = _FIRST,
) -> web.Response:
    _only(request.query, set())
    async with pool_of(request).connection() as conn:
        roles = await accounts.list_roles(conn)
    return _render(
        request,
        "admin_roles.html",
        {
            "roles": roles,
            "choices": PERMISSION_CHOICES,
            "form": shown.form or {"dev_name": "", "label": "", "permissions": []},
            "error": shown.error,
        },
        status=shown.status,
    )


async def roles_get(request: web.Request) -> web.StreamResponse:
    _require(request, Permission.ADMINISTRATORS)
    return await _roles_page(request)


async def roles_post(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.ADMINISTRATORS)
    form = await request.post()
    try:
        values: dict[str, Any] = {
            "dev_name": _text(form, "dev_name", required=True).strip(),
            "label": _text(form, "label", required=True),
            "permissions": _names(form, "permissions"),
        }
        permissions = _permissions(values["permissions"])
    except Invalid as exc:
        return await _roles_page(request, _Shown.invalid(exc))
    try:
        by = _acting(request, user)
        plan = accounts.add_role_plan(
            values["dev_name"], label=values["label"], permissions=permissions, by=by
        )
        await _carry_out(request, plan)
    except AccountError as exc:
        return await _roles_page(request, _Shown.refused(values, exc))
    raise web.HTTPSeeOther(f"/admin/roles/{values['dev_name']}")


async def _role_page(
    request: web.Request,
    shown: _Shown = _FIRST,
) -> web.Response:
    _only(request.query, {"saved"})
    name = request.match_info["dev_name"]
    async with pool_of(request).connection() as conn:
        found = [role for role in await accounts.list_roles(conn) if role.developer_name == name]
    if not found:
        raise PageError(404)
    role = found[0]
    return _render(
        request,
        "admin_role.html",
        {
            "role": role,
            "choices": PERMISSION_CHOICES,
            "form": shown.form or {"label": role.label, "permissions": role.permission_names},
            "error": shown.error,
            "saved": request.query.get("saved") == "1" and shown.error is None,
        },
        status=shown.status,
    )


async def role_get(request: web.Request) -> web.StreamResponse:
    _require(request, Permission.ADMINISTRATORS)
    return await _role_page(request)


async def role_post(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.ADMINISTRATORS)
    name = request.match_info["dev_name"]
    form = await request.post()
    try:
        values: dict[str, Any] = {
            "label": _text(form, "label", required=True),
            "permissions": _names(form, "permissions"),
        }
        permissions = _permissions(values["permissions"])
    except Invalid as exc:
        return await _role_page(request, _Shown.invalid(exc))
    try:
        by = _acting(request, user)
        await _carry_out(
            request,
            accounts.update_role_plan(name, label=values["label"], permissions=permissions, by=by),
        )
    except AccountError as exc:
        if not isinstance(exc, AccountDenied) and str(exc).startswith("unknown role"):
            raise PageError(404) from None
        return await _role_page(request, _Shown.refused(values, exc))
    raise web.HTTPSeeOther(f"/admin/roles/{name}?saved=1")


# Audit log -----------------------------------------------------------------------------

_AUDIT_PARAMS = {"action", "actor", "export", "from", "to"}


def _audit_filters(request: web.Request, extra: set[str]) -> admin_audit.AuditFilters:
    _only(request.query, _AUDIT_PARAMS | extra)
    query = {name: _single(request, name) for name in _AUDIT_PARAMS}
    if any("\x00" in value or len(value) > 400 for value in query.values()):
        raise PageError(400, "a filter is too long or holds a NUL character")
    return admin_audit.parse_filters(query, _zone(request))


async def audit_get(request: web.Request) -> web.StreamResponse:
    _require(request, Permission.AUDIT_LOGS)
    filters = _audit_filters(request, {"page"})
    cursor = _single(request, "page") or None
    async with pool_of(request).connection() as conn:
        page = await admin_audit.read_page(conn, filters, cursor)
    params = filters.query_string()
    next_url = (
        str(request.rel_url.with_query({**params, "page": page.next_cursor}))
        if page.next_cursor
        else None
    )
    csv_url = str(request.rel_url.with_path("/admin/audit.csv").with_query(params))
    return _render(
        request,
        "admin_audit.html",
        {
            "filters": filters,
            "rows": page.rows,
            "next_url": next_url,
            "first_url": str(request.rel_url.with_query(params)) if cursor else None,
            "csv_url": csv_url,
            "actions": sorted(admin_audit.ACTIONS | ({filters.action} - {""})),
        },
    )


async def audit_csv(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.AUDIT_LOGS)
    filters = _audit_filters(request, set())
    zone = _zone(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="audit-log.csv"',
            "Cache-Control": "no-store",
        }
    )
    async with pool_of(request).connection() as conn:
        # The download is on record before its first byte, with the filters it used.
        await audit.record(
            conn,
            "audit.exported",
            actor_id=user.id,
            actor_email=user.email or None,
            client_ip=client_ip(request),
            details={"filters": filters.query_string()},
        )
        await response.prepare(request)
        async with contextlib.aclosing(admin_audit.stream_csv(conn, filters, zone)) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
    await response.write_eof()
    return response


# Queue ---------------------------------------------------------------------------------


async def queue_get(request: web.Request) -> web.StreamResponse:
    user = _require(request, Permission.SYSTEM_SETTINGS)
    _only(request.query, set())
    async with pool_of(request).connection() as conn:
        status = await queue_status.read(conn, stall_seconds=settings_of(request).stall_seconds)
    return _render(
        request,
        "admin_queue.html",
        {
            "queue": status,
            "may_act": user.may_export,
            "seen_seconds": settings_of(request).worker_seen_seconds,
        },
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/admin", _to_first_section)
    router.add_get("/admin/users", users_get)
    router.add_post("/admin/users", users_post)
    router.add_get(r"/admin/users/{id:[1-9]\d{0,17}}", user_get)
    router.add_post(r"/admin/users/{id:[1-9]\d{0,17}}", user_post)
    router.add_get("/admin/roles", roles_get)
    router.add_post("/admin/roles", roles_post)
    router.add_get(r"/admin/roles/{dev_name:[a-z][a-z0-9_]{0,49}}", role_get)
    router.add_post(r"/admin/roles/{dev_name:[a-z][a-z0-9_]{0,49}}", role_post)
    router.add_get("/admin/audit", audit_get)
    router.add_get("/admin/audit.csv", audit_csv)
    router.add_get("/admin/queue", queue_get)


async def _to_first_section(request: web.Request) -> web.StreamResponse:
    sections = sections_for(user_of(request))
    if not sections:
        raise PageError(404)
    raise web.HTTPSeeOther(sections[0][0])
