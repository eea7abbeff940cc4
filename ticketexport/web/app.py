"""The aiohttp application factory and the process entry point that serves it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import secrets
import threading
import zoneinfo
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ticketexport.config import Settings
from ticketexport.paths import ROOT
from ticketexport.services import Services
from ticketexport.web import (
    admin,
    api,
    auth,
    exports,
    ops,
    pages,
    saved_views,
    schedules,
    tickets,
    times,
    tokens,
)
from ticketexport.web.keys import (
    LOGIN_GATE,
    LOGIN_KEY,
    PASSWORD_EXECUTOR,
    SERVER_ERRORS,
    SERVICES,
    ServerErrors,
)
from ticketexport.web.middleware import all_middlewares, on_response_prepare
from ticketexport.web.signin_gate import SignInGate

log = logging.getLogger(__name__)

TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Forms are small; the largest is the view editor. A tighter cap than aiohttp's 1 MiB.
MAX_BODY = 256 * 1024
# Threads checking passwords at once: at most half the cores, so a flood of sign-ins
# leaves the others to downloads, pages and (in `demo`) the worker.
PASSWORD_THREADS = max(1, min(2, (os.cpu_count() or 2) // 2))
# The lowest priority: at nice 10 the password threads still took slices long enough to
# delay each wake-up of a download's threads, making a 24 MiB download 3-5 times slower
# during a sign-in flood; at 19 they run only on time nobody else wants.
PASSWORD_NICENESS = 19
# A few sign-ins at a time keep the password threads busy while leaving most of the web
# pool's connections (bootstrap.WEB_CONNECTIONS) to everyone else.
LOGIN_CONCURRENCY = 3
# Sign-ins that may wait for a turn in one web process; more at once are refused (503), so a
# flood's memory is bounded. 64 drain in a few seconds at three at a time.
LOGIN_WAITING = 64


def _login_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return hashlib.sha256(b"ticketexport-login:" + settings.secret_key.encode()).digest()
    return secrets.token_bytes(32)


def _lower_priority() -> None:
    """Runs in each password thread as it starts: under a flood of sign-ins, these threads
    get the CPU only when page, download and worker threads leave it (Linux schedules each
    thread by its own nice value). Where that cannot be set, they run as they are."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_NICENESS)


async def _stop_password_threads(app: web.Application) -> None:
    app[PASSWORD_EXECUTOR].shutdown(wait=False, cancel_futures=True)


def init_app(services: Services) -> web.Application:
    """Build the web application on a process's services (which the caller opens and
    closes; they must include the event hub)."""
    if services.hub is None:
        raise ValueError("the web application needs services opened with web=True")
    app = web.Application(middlewares=all_middlewares(), client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[LOGIN_KEY] = _login_key(services.settings)
    app[SERVER_ERRORS] = ServerErrors()
    app[LOGIN_GATE] = SignInGate(running=LOGIN_CONCURRENCY, waiting=LOGIN_WAITING)
    app[PASSWORD_EXECUTOR] = concurrent.futures.ThreadPoolExecutor(
        max_workers=PASSWORD_THREADS,
        thread_name_prefix="password-check",
        initializer=_lower_priority,
    )
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
    )
    env.globals["static"] = lambda name: str(app.router["static"].url_for(filename=name))
    zone = zoneinfo.ZoneInfo(services.settings.timezone)
    env.filters["when"] = lambda value: times.time_tag(value, zone)
    env.globals["admin_sections_for"] = admin.sections_for
    app.on_response_prepare.append(on_response_prepare)
    # Before aiohttp waits for open handlers: wakes every event stream so it ends now.
    hub = services.hub
    app.on_shutdown.append(lambda _app: hub.stop())
    app.on_cleanup.append(_stop_password_threads)
    router = app.router
    router.add_get("/", pages.home)
    router.add_get("/login", auth.login_get)
    router.add_post("/login", auth.login_post)
    router.add_post("/logout", auth.logout_post)
    router.add_get("/staff", pages.home)
    router.add_get("/staff/tickets", tickets.ticket_list)
    router.add_get("/staff/views", saved_views.view_list)
    router.add_get("/staff/views/new", saved_views.view_new)
    router.add_post("/staff/views/new", saved_views.view_create)
    router.add_get(r"/staff/views/{id:\d{1,18}}/edit", saved_views.view_edit)
    router.add_post(r"/staff/views/{id:\d{1,18}}/edit", saved_views.view_update)
    router.add_post(r"/staff/views/{id:\d{1,18}}/delete", saved_views.view_delete)
    exports.add_routes(app)
    schedules.add_routes(app)
    ops.add_routes(app)
    admin.add_routes(app)
    tokens.add_routes(app)
    api.add_routes(app)
    router.add_static("/static/", STATIC_DIR, name="static", append_version=True)
    return app


async def run_web(services: Services, *, stop: asyncio.Event | None = None) -> None:
    """Serve on the settings' host:port until cancelled or `stop` is set."""
    settings = services.settings
    app = init_app(services)
    # Our middleware writes a JSON access line with the request id instead.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("web listening", extra={"host": settings.host, "port": settings.port})
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
