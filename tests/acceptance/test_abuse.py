"""Abuse against real `serve` processes, two of them on one database: password guessing,
a login flood, expensive views, per-user limits, streams that outlive their session, HEAD
and /metrics. What one process counts or decides, the other sees."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import secrets
import statistics
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from multidict import CIMultiDict

from tests.support.servers import Server, Servers
from tests.support.web import PASSWORD, csrf_in, insert_tickets, make_user
from ticketexport import events

pytestmark = pytest.mark.slow

ADMIN = "admin@example.com"  # administrator with Import / Export Tickets
AGENT = "agent@example.com"  # Import / Export Tickets, not an administrator
WATCHER = "watcher@example.com"  # another administrator with the permission
EXPORT = 512
TRUSTED = {"TICKETEXPORT_TRUSTED_PROXY": "127.0.0.1"}


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 120, title="Abuse")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=EXPORT, admin=True),
        AGENT: make_user(conn, AGENT, permissions=EXPORT),
        WATCHER: make_user(conn, WATCHER, permissions=EXPORT, admin=True),
    }


@dataclasses.dataclass
class Answer:
    status: int
    headers: Any
    text: str


class Browser:
    """One client (its cookies), talking to any of the web processes; behind the trusted
    proxy it says which client address it is."""

    def __init__(self, client_ip: str | None = None) -> None:
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=60)
        )
        self.headers: Any = {"X-Forwarded-For": client_ip} if client_ip else {}

    def forwarded(self, *lines: str) -> None:
        """Send these X-Forwarded-For lines from now on, each as a field line of its own."""
        self.headers = CIMultiDict(("X-Forwarded-For", line) for line in lines)

    async def close(self) -> None:
        await self.http.close()

    async def get(self, server: Server, path: str, **headers: str) -> Answer:
        async with self.http.get(
            server.url + path,
            headers=CIMultiDict([*self.headers.items(), *headers.items()]),
            allow_redirects=False,
        ) as response:
            return Answer(response.status, response.headers, await response.text(errors="replace"))

    async def post(
        self, server: Server, path: str, data: dict[str, str], *, seconds: float = 60
    ) -> Answer:
        async with self.http.post(
            server.url + path,
            data=data,
            headers=self.headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            return Answer(response.status, response.headers, await response.text(errors="replace"))

    async def login(
        self, server: Server, email: str, password: str = PASSWORD, *, seconds: float = 60
    ) -> Answer:
        page = await self.get(server, "/login")
        form = {"email": email, "password": password, "csrf_token": csrf_in(page.text)}
        return await self.post(server, "/login", form, seconds=seconds)

    async def csrf(self, server: Server) -> str:
        return csrf_in((await self.get(server, "/staff/exports")).text)

    async def request_export(self, server: Server, **fields: str) -> Answer:
        data = {"csrf_token": await self.csrf(server), "view": "all", **fields}
        return await self.post(server, "/staff/tickets/export", data)


@contextlib.asynccontextmanager
async def browser(client_ip: str | None = None) -> AsyncIterator[Browser]:
    opened = Browser(client_ip)
    try:
        yield opened
    finally:
        await opened.close()


def window_left(conn: psycopg.Connection[Any], email: str) -> float:
    """Seconds until the oldest failed attempt for `email` leaves the 900 s window."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(attempted_at) + interval '900 s' - clock_timestamp()) "
        "FROM login_attempts WHERE email = %s",
        (email,),
    ).fetchone()
    assert row is not None
    assert row[0] is not None
    return float(row[0])


def audit_count(conn: psycopg.Connection[Any], action: str) -> int:
    row = conn.execute("SELECT count(*) FROM audit_log WHERE action = %s", (action,)).fetchone()
    assert row is not None
    return int(row[0])


# --- password guessing ------------------------------------------------------------------


async def test_login_throttle_per_address_and_network_across_processes(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, TRUSTED)
    # Ten wrong passwords for one address from one client, half at each process (and at
    # once: each is counted before any is checked).
    async with contextlib.AsyncExitStack() as stack:
        guessers = [await stack.enter_async_context(browser("198.51.100.20")) for _ in range(10)]
        answers = await asyncio.gather(
            *(
                guesser.login(one if i % 2 else two, ADMIN, f"guess {i}")
                for i, guesser in enumerate(guessers)
            )
        )
    assert [a.status for a in answers] == [400] * 10
    async with browser("198.51.100.20") as guesser:
        # Now the right password is refused too from that client, at either process.
        for server in (one, two):
            # Until the oldest of the ten leaves the window, read before and after the
            # refusal: however long the ten took to check.
            latest = window_left(conn, ADMIN)
            refused = await guesser.login(server, ADMIN)
            earliest = window_left(conn, ADMIN)
            assert refused.status == 429, refused.text[:300]
            retry_after = int(refused.headers["Retry-After"])
            assert math.floor(earliest) <= retry_after <= math.ceil(latest) <= 900
            assert "Too many failed sign-in attempts" in refused.text
        assert "te_session" not in {c.key for c in guesser.http.cookie_jar}
        # Another address from the same client is not affected.
        assert (await guesser.login(one, AGENT)).status == 303
    # Nor is the account, from anywhere else: the guesses locked nobody out.
    async with browser("203.0.113.5") as owner:
        assert (await owner.login(two, ADMIN)).status == 303
    # An address nobody has counts the same way.
    async with browser("198.51.100.77") as guesser:
        for i in range(10):
            failed = await guesser.login((one, two)[i % 2], "nobody@example.com", f"g{i}")
            assert failed.status == 400
        for server in (one, two, one):
            assert (await guesser.login(server, "nobody@example.com", "g")).status == 429
    # Refused five times for two keys: audited once per key and window.
    assert audit_count(conn, "login.throttled") == 2
    assert audit_count(conn, "login.failed") == 20


async def test_login_throttle_per_network_across_processes(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, TRUSTED)
    async with browser() as guesser:
        # 100 failed attempts from one IPv6 /64, each from an address of its own, for 100
        # addresses (known or not), split over both processes. An empty password is
        # refused without checking a hash, and still counts.
        for batch in range(10):
            attempts = []
            for i in range(10):
                guesser.forwarded(f"2001:db8:1:2:{batch:x}::{i + 1:x}")
                attempts.append(
                    guesser.login((one, two)[i % 2], f"user{batch}-{i}@example.com", "")
                )
            answers = await asyncio.gather(*attempts)
            assert {a.status for a in answers} == {400}
        # Any address of that /64 is refused now, for any account.
        for server, address in ((one, "2001:db8:1:2::ffff"), (two, "[2001:db8:1:2:ab::1]:443")):
            guesser.forwarded(address)
            refused = await guesser.login(server, ADMIN)
            assert refused.status == 429
            assert 0 < int(refused.headers["Retry-After"]) <= 900
    # The next /64, and an IPv4 client, sign in to the same account.
    async with browser("2001:db8:1:3::1") as neighbour, browser("192.0.2.51") as other:
        assert (await neighbour.login(one, ADMIN)).status == 303
        assert (await other.login(two, ADMIN)).status == 303
    throttled = conn.execute(
        "SELECT details->>'limit', details->>'network' FROM audit_log "
        "WHERE action = 'login.throttled'"
    ).fetchall()
    assert throttled == [("network", "2001:db8:1:2::/64")]


# Proxies in front of the web processes: the local one, a private network, an IPv6 range.
PROXIES = {"TICKETEXPORT_TRUSTED_PROXY": "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"}


async def test_the_throttle_counts_the_client_behind_chained_proxies(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, PROXIES)
    # One client, 198.51.100.20, as proxies in a chain report it: several field lines,
    # ports, brackets, and addresses the client itself put first (never believed).
    same_client = [
        ["198.51.100.20, 10.0.0.2"],
        ["198.51.100.20", "10.1.1.1:8080"],
        ["203.0.113.99, 198.51.100.20:4711, [2001:db8:ffff::1]:443"],
        ["198.51.100.20:1234"],
        ["203.0.113.1", "198.51.100.20", "10.0.0.9"],
        ["unknown, 198.51.100.20, 2001:db8:ffff:1::7"],
    ]
    async with browser() as client:
        for i in range(10):
            client.forwarded(*same_client[i % len(same_client)])
            assert (await client.login((one, two)[i % 2], ADMIN, f"guess {i}")).status == 400
        client.forwarded(*same_client[2])
        assert (await client.login(one, ADMIN)).status == 429
    # Another client behind the same proxies signs in: nobody else is locked out.
    async with browser() as owner:
        owner.forwarded("198.51.100.21, 10.0.0.2")
        assert (await owner.login(two, ADMIN)).status == 303
    # An entry a proxy wrote that does not parse: the client is the last trusted hop,
    # whatever the client sends to the left of it. Never nobody: the throttle still holds.
    async with browser() as client:
        for i in range(10):
            client.forwarded(f"198.51.100.{30 + i}, not-an-address, 10.0.0.7")
            assert (await client.login((one, two)[i % 2], WATCHER, f"guess {i}")).status == 400
        client.forwarded("10.0.0.7")
        assert (await client.login(one, WATCHER)).status == 429
        client.forwarded("198.51.100.40, 10.0.0.8")
        assert (await client.login(two, WATCHER)).status == 303
    rows = conn.execute(
        "SELECT host(client_ip) FROM audit_log WHERE action = 'login.failed' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["198.51.100.20"] * 10 + ["10.0.0.7"] * 10


async def test_the_window_passes(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    window = 4
    one, two = servers.pair(db_url, {**TRUSTED, "TICKETEXPORT_LOGIN_WINDOW_SECONDS": str(window)})
    async with browser("198.51.100.9") as owner:
        for i in range(10):
            assert (await owner.login((one, two)[i % 2], AGENT, "")).status == 400
        refused = await owner.login(two, AGENT)
        assert refused.status == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= window
        # The window passes: the right password gets through again.
        await asyncio.sleep(retry_after + 0.2)
        assert (await owner.login(one, AGENT)).status == 303


async def test_a_login_flood_does_not_slow_downloads(
    servers: Servers,
    db_url: str,
    conn: psycopg.Connection[Any],
    people: dict[str, int],
    home: Path,
) -> None:
    (one,) = [servers.start(db_url, TRUSTED)]
    export_id = completed_export(conn, home, people[ADMIN], size=24 * 1024 * 1024)
    async with browser() as admin:
        assert (await admin.login(one, ADMIN)).status == 303

        async def download() -> float:
            started = time.perf_counter()
            async with admin.http.get(f"{one.url}/staff/exports/{export_id}/download") as r:
                assert r.status == 200
                size = 0
                async for chunk in r.content.iter_chunked(1 << 20):
                    size += len(chunk)
            assert size == 24 * 1024 * 1024
            return time.perf_counter() - started

        calm = statistics.median([await download() for _ in range(3)])

        # Sixty sign-ins at once, each from its own client (so none is throttled) and
        # each checking a password hash.
        async with contextlib.AsyncExitStack() as stack:
            flooders = [
                await stack.enter_async_context(browser(f"198.18.{i}.1")) for i in range(60)
            ]
            flood = [
                # Each is answered when its turn has come, however long sixty password
                # checks take on a busy machine: the flood's pace is not what is measured.
                asyncio.create_task(
                    f.login(one, f"flood{i}@example.com", "wrong password", seconds=900)
                )
                for i, f in enumerate(flooders)
            ]
            try:
                # Measured while the flood is being checked.
                await wait_until(lambda: audit_count(conn, "login.failed") >= 2, 60)
                busy = [await download() for _ in range(3)]
                assert audit_count(conn, "login.failed") < len(flood), "the flood ended early"
            finally:
                answers = await asyncio.gather(*flood, return_exceptions=True)
        assert all(isinstance(a, Answer) and a.status == 400 for a in answers)
    assert statistics.median(busy) <= 3 * calm, (calm, busy)


FLOOD = 500
RUNNING = 3  # web.app.LOGIN_CONCURRENCY
WAITING = 64  # web.app.LOGIN_WAITING


def gate_metrics(text: str) -> dict[str, float]:
    """This process's sign-in gate, as /metrics shows it."""
    found = {}
    for name in ("running", "waiting", "queued", "refused_total"):
        line = next(
            (ln for ln in text.splitlines() if ln.startswith(f"ticketexport_sign_ins_{name} ")),
            None,
        )
        assert line is not None, f"/metrics has no ticketexport_sign_ins_{name}"
        found[name] = float(line.split()[1])
    return found


async def gate_of(client: Browser, server: Server) -> dict[str, float]:
    return gate_metrics((await client.get(server, "/metrics")).text)


async def until_gate(client: Browser, server: Server, **want: float) -> dict[str, float]:
    """Waits for the gate to reach this state (an event the server reports, not a time)."""
    deadline = time.monotonic() + 90
    while True:
        seen = await gate_of(client, server)
        if all(seen[name] == value for name, value in want.items()):
            return seen
        assert time.monotonic() < deadline, (want, seen)
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def attempts_held(db_url: str) -> Any:
    """Sign-ins block where they record their attempt, until the block ends: the sign-ins
    running then stay running, so the gate's state stands still while the test looks."""
    with psycopg.connect(db_url) as locker:
        locker.execute("LOCK TABLE login_attempts IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            locker.rollback()


async def test_a_sign_in_flood_waits_in_a_bounded_queue_and_others_get_through(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    (one,) = [servers.start(db_url, TRUSTED)]
    flood_client = "198.18.0.1"
    async with (
        browser() as observer,
        browser(flood_client) as flooder,
        browser("203.0.113.7") as agent,
    ):
        token = csrf_in((await flooder.get(one, "/login")).text)
        agent_token = csrf_in((await agent.get(one, "/login")).text)
        # Every request at once: no connection limit on the client's side.
        flood_http = aiohttp.ClientSession(
            cookie_jar=flooder.http.cookie_jar,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=300),
        )

        async def flood_one(i: int) -> Answer:
            form = {"email": f"flood{i}@example.com", "password": "wrong", "csrf_token": token}
            async with flood_http.post(
                one.url + "/login", data=form, headers=flooder.headers, allow_redirects=False
            ) as response:
                return Answer(response.status, response.headers, await response.text())

        try:
            with attempts_held(db_url):
                flood = [asyncio.create_task(flood_one(i)) for i in range(FLOOD)]
                # Three sign-ins run (held where they record their attempt), 64 wait for a
                # turn, and every other one was refused at once.
                await until_gate(
                    observer,
                    one,
                    running=RUNNING,
                    waiting=WAITING,
                    queued=WAITING,
                    refused_total=FLOOD - RUNNING - WAITING,
                )
                refused = [await t for t in flood if t.done()]
                assert len(refused) == FLOOD - RUNNING - WAITING
                for answer in refused:
                    assert answer.status == 503
                    assert 0 < int(answer.headers["Retry-After"]) <= 10
                    assert "Too many people are signing in" in answer.text
                # A real sign-in from elsewhere: it takes the place of the flood's youngest
                # waiting sign-in (refused in its turn), then waits for a turn.
                real = asyncio.create_task(
                    agent.post(
                        one,
                        "/login",
                        {"email": AGENT, "password": PASSWORD, "csrf_token": agent_token},
                        # However long the flood ahead of it would take: what is checked
                        # is the order, below.
                        seconds=300,
                    )
                )
                await until_gate(
                    observer,
                    one,
                    running=RUNNING,
                    queued=WAITING,
                    refused_total=FLOOD - WAITING - 2,
                )
                assert not real.done()
            signed_in = await real
            assert signed_in.status == 303
            answers = await asyncio.gather(*flood)
        finally:
            await flood_http.close()
        statuses = [a.status for a in answers]
        # Every flood sign-in was answered: checked (a wrong password), or refused.
        assert statuses.count(400) == RUNNING + WAITING - 1
        assert statuses.count(503) == FLOOD - RUNNING - WAITING + 1
        assert await gate_of(observer, one) == {
            "running": 0,
            "waiting": 0,
            "queued": 0,
            "refused_total": FLOOD - RUNNING - WAITING + 1,
        }
    # The real sign-in took the first turn that came free: it was checked, and done, while
    # the flood's waiting sign-ins were still to be checked.
    order = conn.execute(
        "SELECT action FROM audit_log WHERE action IN ('login.failed', 'login.succeeded') "
        "ORDER BY id"
    ).fetchall()
    actions = [row[0] for row in order]
    assert actions.count("login.failed") == RUNNING + WAITING - 1
    before = actions.index("login.succeeded")
    assert before <= 2 * RUNNING, actions[: before + 1]
    assert len(actions) - before - 1 >= WAITING - 2 * RUNNING


async def test_a_sign_in_whose_client_left_is_not_checked(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    (one,) = [servers.start(db_url, TRUSTED)]
    async with browser() as observer, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(browser(f"198.51.100.{i}")) for i in range(3)]
        with attempts_held(db_url):
            running = [
                asyncio.create_task(c.login(one, f"busy{i}@example.com", "wrong"))
                for i, c in enumerate(clients)
            ]
            await until_gate(observer, one, running=RUNNING, waiting=0)
            # One more, sent by hand; its client hangs up while it waits for a turn.
            page = await observer.get(one, "/login")
            cookie = page.headers["Set-Cookie"].split(";")[0]
            body = urllib.parse.urlencode(
                {"email": "gone@example.com", "password": "x", "csrf_token": csrf_in(page.text)}
            ).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", one.port)
            writer.write(
                b"POST /login HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.99\r\n"
                + f"Cookie: {cookie}\r\n".encode()
                + b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            await until_gate(observer, one, running=RUNNING, queued=1)
            writer.close()
            await writer.wait_closed()
            assert await reader.read() == b""
        assert [a.status for a in await asyncio.gather(*running)] == [400] * RUNNING
        await until_gate(observer, one, running=0, waiting=0)
    failed = conn.execute(
        "SELECT actor_email FROM audit_log WHERE action = 'login.failed' ORDER BY actor_email"
    ).fetchall()
    assert [r[0] for r in failed] == [f"busy{i}@example.com" for i in range(RUNNING)]
    kept = conn.execute("SELECT email FROM login_attempts ORDER BY email").fetchall()
    assert [r[0] for r in kept] == [f"busy{i}@example.com" for i in range(RUNNING)]
    assert "its client went away" in one.output()


# --- expensive views -----------------------------------------------------------------------


async def test_a_slow_view_answers_503_and_the_pool_serves_others(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, {"TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS": "400"})
    async with browser() as agent:
        assert (await agent.login(one, AGENT)).status == 303
        assert (await agent.get(one, "/staff/tickets")).status == 200
        with psycopg.connect(db_url) as locker:
            # Every list and count statement now waits on the lock: a view too slow.
            locker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            # More slow pages at once than a process has connections, and other pages
            # in between: those are served while the slow ones wait, and after.
            slow = [agent.get((one, two)[i % 2], f"/staff/tickets?q=x{i}") for i in range(24)]
            others = [agent.get((one, two)[i % 2], "/staff/exports") for i in range(6)]
            answers = await asyncio.gather(*slow, *others)
            took = time.monotonic() - started
            locker.rollback()
        for answer in answers[:24]:
            assert answer.status == 503
            assert "This view took too long to load" in answer.text
            assert 'name="csrf_token"' in answer.text  # the layout, signed in
        assert [a.status for a in answers[24:]] == [200] * 6
        assert took < 20
        # Every connection went back healthy: the same pages work again.
        for server in (one, two):
            assert (await agent.get(server, "/staff/tickets")).status == 200
    assert waiting_on_tickets(conn) == []


async def test_a_client_that_goes_away_cancels_its_query(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    (one,) = [servers.start(db_url, {"TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS": "60000"})]
    async with browser() as agent:
        assert (await agent.login(one, AGENT)).status == 303
        cookies = "; ".join(f"{c.key}={c.value}" for c in agent.http.cookie_jar)
        with psycopg.connect(db_url) as locker:
            locker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            _, writer = await asyncio.open_connection("127.0.0.1", one.port)
            writer.write(
                f"GET /staff/tickets HTTP/1.1\r\nHost: x\r\nCookie: {cookies}\r\n\r\n".encode()
            )
            await writer.drain()
            await wait_until(lambda: len(waiting_on_tickets(conn)) == 1, 20)
            writer.close()
            gone_at = time.monotonic()
            await wait_until(lambda: waiting_on_tickets(conn) == [], 5)
            assert time.monotonic() - gone_at < 5
            locker.rollback()
        assert (await agent.get(one, "/staff/tickets")).status == 200


def waiting_on_tickets(conn: psycopg.Connection[Any]) -> list[int]:
    """The web processes' statements that wait for the lock on tickets."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND state = 'active'"
    ).fetchall()
    return [int(r[0]) for r in rows]


# --- per-user limits ------------------------------------------------------------------------


async def test_the_active_export_limit_holds_across_processes(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "2"})
    async with browser() as agent:
        assert (await agent.login(one, AGENT)).status == 303
        # No worker runs: exports stay queued.
        first = await agent.request_export(one, sort="oldest")
        second = await agent.request_export(two, sort="newest")
        assert (first.status, second.status) == (303, 303)
        # The same request again is the first one (double submit comes before the limit).
        again = await agent.request_export(two, sort="oldest")
        assert again.headers["Location"] == first.headers["Location"]
        refused = await agent.request_export(one, sort="priority")
        assert refused.status == 429
        assert "2 exports queued or running" in refused.text
        assert 'href="/staff/exports"' in refused.text
        # An invalid request is still told what is wrong first.
        assert (await agent.request_export(two, sort="nonsense")).status == 400
        assert export_count(conn) == 2
        # A cancel frees a place; a retry takes one, like any request.
        cancelled = first.headers["Location"]
        token = await agent.csrf(one)
        assert (await agent.post(two, f"{cancelled}/cancel", {"csrf_token": token})).status == 303
        third = await agent.request_export(one, sort="priority")
        assert third.status == 303
        retried = await agent.post(one, f"{cancelled}/retry", {"csrf_token": token})
        assert retried.status == 429
        assert export_count(conn) == 3
    assert audit_count(conn, "export.denied") == 2


def export_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM export_jobs").fetchone()
    assert row is not None
    return int(row[0])


async def test_the_stream_limit_per_session(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url, {"TICKETEXPORT_MAX_STREAMS_PER_SESSION": "3"})
    export_id = queued_export(conn, people[ADMIN])
    path = f"/staff/exports/{export_id}/events"
    async with browser() as admin, contextlib.AsyncExitStack() as stack:
        assert (await admin.login(one, ADMIN)).status == 303
        streams = [await stack.enter_async_context(Stream.open(admin, one, path)) for _ in range(3)]
        assert all(s.status == 200 for s in streams)
        refused = await admin.get(one, path)
        assert refused.status == 429
        # Counted per process: the other one has its own three.
        others = [await stack.enter_async_context(Stream.open(admin, two, path)) for _ in range(3)]
        assert all(s.status == 200 for s in others)
        assert (await admin.get(two, path)).status == 429
        # Another session of the same user has its own.
        async with browser() as again:
            assert (await again.login(one, ADMIN)).status == 303
            async with Stream.open(again, one, path) as stream:
                assert stream.status == 200
        # A stream the client closes frees its place at once.
        await streams[0].close()
        await wait_until_async(lambda: opens(admin, one, path), 10)


async def opens(client: Browser, server: Server, path: str) -> bool:
    async with Stream.open(client, server, path) as stream:
        return stream.status == 200


# --- streams follow the session -------------------------------------------------------------


async def test_streams_end_when_the_session_or_the_right_to_see_ends(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    one, two = servers.pair(db_url)
    agents_export = queued_export(conn, people[AGENT])
    admins_export = queued_export(conn, people[ADMIN])
    async with (
        browser() as agent,
        browser() as deactivated,
        browser() as watcher,
        browser() as admin,
    ):
        make_user(conn, "leaver@example.com", permissions=EXPORT)
        leavers_export = queued_export(conn, user_id(conn, "leaver@example.com"))
        assert (await agent.login(one, AGENT)).status == 303
        assert (await deactivated.login(two, "leaver@example.com")).status == 303
        assert (await watcher.login(one, WATCHER)).status == 303
        assert (await admin.login(two, ADMIN)).status == 303
        async with (
            Stream.open(agent, two, f"/staff/exports/{agents_export}/events") as logout_stream,
            Stream.open(
                deactivated, one, f"/staff/exports/{leavers_export}/events"
            ) as deactivated_stream,
            Stream.open(watcher, two, f"/staff/exports/{agents_export}/events") as admin_stream,
            Stream.open(admin, one, f"/staff/exports/{admins_export}/events") as own_stream,
        ):
            for stream in (logout_stream, deactivated_stream, admin_stream, own_stream):
                assert (await stream.next_event(5))["status"] == "queued"
            # Signed out on the other process; deactivated (sessions left in place, as a
            # tool that only flips the flag would); the admin flag taken away from someone
            # who watches another's export, and from someone who watches their own.
            token = await agent.csrf(one)
            assert (await agent.post(one, "/logout", {"csrf_token": token})).status == 303
            conn.execute("UPDATE users SET is_active = false WHERE email = 'leaver@example.com'")
            conn.execute(
                "UPDATE users SET is_admin = false WHERE email IN (%s, %s)", (WATCHER, ADMIN)
            )
            changed_at = time.monotonic()
            # With no change to any export (no notification), each stream ends within one
            # keep-alive interval (15 s), having sent nothing more.
            ended = await asyncio.gather(
                logout_stream.until_end(20),
                deactivated_stream.until_end(20),
                admin_stream.until_end(20),
            )
            assert time.monotonic() - changed_at <= 15 + 2
            assert ended == [[], [], []]
            # The requester still sees their own export, but no longer gets a download link.
            complete(conn, admins_export, home_of(servers))
            final = await own_stream.next_event(10)
            assert final["status"] == "completed"
            assert final["download_url"] is None


# --- HEAD and /metrics -----------------------------------------------------------------------


async def test_head_of_a_download_has_no_side_effects(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any], people: dict[str, int], home: Path
) -> None:
    one, two = servers.pair(db_url)
    size = 300_000
    export_id = completed_export(conn, home, people[ADMIN], size=size)
    path = f"/staff/exports/{export_id}/download?auto=1"
    async with browser() as admin:
        assert (await admin.login(one, ADMIN)).status == 303
        cookies = "; ".join(f"{c.key}={c.value}" for c in admin.http.cookie_jar)
        # HEAD then GET on one kept-alive connection, as raw bytes: the HEAD answer must end
        # with its headers, or the bytes after them would be read as the next answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", two.port)
        writer.write(
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookies}\r\n\r\n"
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"Content-Length: {size}".encode() in head
        assert b"Content-Disposition: attachment" in head
        assert rest.startswith(b"HTTP/1.1 "), rest[:80]
        # Nothing happened: no audit row, and the automatic download is still to come.
        assert audit_count(conn, "export.downloaded") == 0
        assert auto_downloaded(conn, export_id) is None
        for server in (one, two):
            async with admin.http.head(f"{server.url}{path}") as response:
                assert response.status == 200
        assert audit_count(conn, "export.downloaded") == 0
        # The real one downloads, once; afterwards HEAD says so too (204), still quietly.
        got = await admin.get(one, path)
        assert got.status == 200
        assert audit_count(conn, "export.downloaded") == 1
        assert auto_downloaded(conn, export_id) is not None
        async with admin.http.head(f"{two.url}{path}") as response:
            assert response.status == 204
        assert audit_count(conn, "export.downloaded") == 1


def auto_downloaded(conn: psycopg.Connection[Any], export_id: str) -> Any:
    row = conn.execute(
        "SELECT auto_downloaded_at FROM export_jobs WHERE id = %s", (export_id,)
    ).fetchone()
    assert row is not None
    return row[0]


async def test_metrics_need_the_token_when_one_is_set(
    servers: Servers, db_url: str, people: dict[str, int]
) -> None:
    token = secrets.token_urlsafe(24)
    closed = servers.start(db_url, {"TICKETEXPORT_METRICS_TOKEN": token})
    opened = servers.start(db_url)
    async with browser() as scraper:
        assert (await scraper.get(closed, "/metrics")).status == 401
        for wrong in (f"Bearer {token[:-1]}", f"Basic {token}", token, "Bearer"):
            answer = await scraper.get(closed, "/metrics", Authorization=wrong)
            assert answer.status == 401, wrong
        allowed = await scraper.get(closed, "/metrics", Authorization=f"Bearer {token}")
        assert allowed.status == 200
        assert "ticketexport_up 1.0" in allowed.text
        # Unset, it stays open.
        assert (await scraper.get(opened, "/metrics")).status == 200


# --- helpers ------------------------------------------------------------------------------


def user_id(conn: psycopg.Connection[Any], email: str) -> int:
    row = conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()
    assert row is not None
    return int(row[0])


def home_of(servers: Servers) -> Path:
    return servers.home


def queued_export(conn: psycopg.Connection[Any], requester: int) -> str:
    """An export row waiting for a worker (none runs in these tests)."""
    now = dt.datetime.now(dt.UTC)
    row = conn.execute(
        "INSERT INTO export_jobs (requester_id, as_of, request, view_name, "
        "request_fingerprint, expires_at) VALUES (%s, %s, '{}', 'All tickets', %s, %s) "
        "RETURNING id",
        (requester, now, secrets.token_hex(8), now + dt.timedelta(hours=72)),
    ).fetchone()
    assert row is not None
    return str(row[0])


def complete(conn: psycopg.Connection[Any], export_id: str, home: Path, size: int = 100) -> None:
    """The worker's completion, done by hand: a stored file, its record, the notification."""
    data = os.urandom(size)
    key = f"exports/{export_id}/1/tickets.csv"
    path = home / "exports" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with conn.transaction():
        media = conn.execute(
            "INSERT INTO media_items (kind, file_name, size_bytes, content_type, "
            "storage_backend, object_key, sha256) VALUES ('ticket_export', 'tickets.csv', %s, "
            "'text/csv; charset=utf-8', 'local', %s, %s) RETURNING id",
            (size, key, hashlib.sha256(data).hexdigest()),
        ).fetchone()
        assert media is not None
        conn.execute(
            "UPDATE export_jobs SET status = 'running', started_at = now() WHERE id = %s",
            (export_id,),
        )
        conn.execute(
            "UPDATE export_jobs SET status = 'completed', rows_done = 1, rows_total = 1, "
            "media_item_id = %s, finished_at = now() WHERE id = %s",
            (media[0], export_id),
        )
        conn.execute("SELECT pg_notify(%s, %s)", (events.CHANNEL, export_id))


def completed_export(conn: psycopg.Connection[Any], home: Path, requester: int, size: int) -> str:
    export_id = queued_export(conn, requester)
    complete(conn, export_id, home, size)
    return export_id


class Stream:
    """One open event stream, read event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, client: Browser, server: Server, path: str) -> AsyncIterator[Stream]:
        async with client.http.get(
            server.url + path,
            headers={"Accept": "text/event-stream", **client.headers},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        ) as response:
            stream = cls(response)
            try:
                yield stream
            finally:
                await stream.close()

    async def close(self) -> None:
        self.response.close()

    async def next_event(self, seconds: float) -> dict[str, Any]:
        """The next event's data; fails if the stream ends or nothing comes in time."""
        async with asyncio.timeout(seconds):
            data: list[str] = []
            async for raw in self.response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    event: dict[str, Any] = json.loads("\n".join(data))
                    return event
        raise AssertionError("the stream ended")

    async def until_end(self, seconds: float) -> list[str]:
        """Reads to the end of the stream; returns any data lines that came meanwhile."""
        data = []
        async with asyncio.timeout(seconds):
            async for raw in self.response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line)
        return data


async def wait_until(probe: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def wait_until_async(probe: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
