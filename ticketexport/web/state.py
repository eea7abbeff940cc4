"""Typed keys for application and request state, and the signed-in user."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg_pool
from aiohttp import web

from ticketexport.config import Settings
from ticketexport.domain.permissions import Permission


@dataclasses.dataclass(frozen=True)
class CurrentUser:
    """The staff member behind a request, loaded fresh from the database every time."""

    id: int
    email: str
    name: str
    is_admin: bool
    permissions: Permission
    session_id: str
    csrf_token: str

    def has(self, flag: Permission) -> bool:
        return flag in self.permissions


SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", psycopg_pool.AsyncConnectionPool)
# Key for HMAC of the anonymous login form's CSRF token; random per process when the
# settings carry no secret (tests), which only means login forms do not survive a restart.
LOGIN_KEY = web.AppKey("login_key", bytes)
# Request ids of every 500 served, so tests can assert there were none.
SERVER_ERRORS = web.AppKey("server_errors", list)

USER = web.RequestKey("user", CurrentUser)
REQUEST_ID = web.RequestKey("request_id", str)
# Cookies to set or clear on whatever response the request ends with (error pages too).
COOKIES = web.RequestKey("cookies", list)


def pool_of(request: web.Request) -> psycopg_pool.AsyncConnectionPool[Any]:
    return request.app[POOL]


def user_of(request: web.Request) -> CurrentUser | None:
    return request.get(USER)
