"""Typed keys for application and request state, in one place, and accessors for them."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from typing import Any

import psycopg_pool
from aiohttp import web

from ticketexport.config import Settings
from ticketexport.domain.actor import Actor
from ticketexport.services import Services
from ticketexport.tokens import Caller
from ticketexport.web.health import HealthChecks
from ticketexport.web.signin_gate import SignInGate


@dataclasses.dataclass(frozen=True)
class Session:
    """The signed-in session behind a request: its id (a digest) and its CSRF token."""

    id: str
    csrf_token: str


class ServerErrors:
    """How many responses with status 500 the app served, and the request ids of the latest
    few: bounded, however many errors a client manages to provoke."""

    KEEP = 50

    def __init__(self) -> None:
        self.count = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=self.KEEP)

    def record(self, request_id: str) -> None:
        self.count += 1
        self.recent.append(request_id)


# Application state ------------------------------------------------------------------

SERVICES = web.AppKey("services", Services)
# Key for HMAC of the anonymous login form's CSRF token; random per process when the
# settings carry no secret (tests), which only means login forms do not survive a restart.
LOGIN_KEY = web.AppKey("login_key", bytes)
# The 500s served, so tests can assert there were none.
SERVER_ERRORS = web.AppKey("server_errors", ServerErrors)
# The threads that check passwords: a login flood waits for these, never for the threads
# that read and write files (asyncio's default executor).
PASSWORD_EXECUTOR = web.AppKey("password_executor", concurrent.futures.ThreadPoolExecutor)
# Sign-ins in progress at once in this process, and a bounded number waiting: a flood waits
# here, in memory, instead of taking every pooled connection from the pages and downloads
# of signed-in users, and what does not fit is refused.
LOGIN_GATE = web.AppKey("login_gate", SignInGate)

# The checks /healthz runs, with the states kept between requests.
HEALTH = web.AppKey("health", HealthChecks)

# Request state ----------------------------------------------------------------------

# The signed-in user, loaded fresh from the database for every request.
USER = web.RequestKey("user", Actor)
SESSION = web.RequestKey("session", Session)
REQUEST_ID = web.RequestKey("request_id", str)
# The API token an /api/ request authenticated with, and its owner as they are now.
API_CALLER = web.RequestKey("api_caller", Caller)
# Cookies to set or clear on whatever response the request ends with (error pages too).
COOKIES = web.RequestKey("cookies", list)
# The signed-in user's queued and running exports, counted once per page for the navigation.
RUNNING_EXPORTS = web.RequestKey("running_exports", int)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def pool_of(request: web.Request) -> psycopg_pool.AsyncConnectionPool[Any]:
    return request.app[SERVICES].pool


def settings_of(request: web.Request) -> Settings:
    return request.app[SERVICES].settings


def user_of(request: web.Request) -> Actor | None:
    return request.get(USER)
