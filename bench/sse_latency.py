"""NOTIFY-to-client latency of live export events with 1, 100 and 300 watching clients.

Usage:

    .venv/bin/python bench/sse_latency.py [--servers system,embedded] [--clients 1,100,300]
        [--events 30] [--quick]

`--servers`: `system` (PostgreSQL at 127.0.0.1:5432), `embedded` (embedded PostgreSQL 18), `default`
(bench/_common.py's rule: DATABASE_URL, else the system server, else the embedded one).
For each server and client count: a fresh migrated scratch database, one
`ticketexport serve` process, and one separate client process holding that many
`GET /staff/exports/{id}/events` streams (aiohttp, no connection limit). This process then
moves the export along with `UPDATE export_jobs … ; events.publish(…)` every 150 ms (the
call the worker makes on every change), writing the event's sequence number into rows_done
and noting time.monotonic() just before COMMIT (the moment NOTIFY is sent). Each client
notes time.monotonic() when the event with that number arrives; CLOCK_MONOTONIC is one
clock for every process on the host, so the difference is the full
path: NOTIFY → the web process's LISTEN connection → one state query → fan-out → SSE bytes
→ the client. Prints p50, p95 and max per client count.

A session may hold at most TICKETEXPORT_MAX_STREAMS_PER_SESSION (20) streams per web
process, so the clients are spread over one signed-in session per 20 streams.

`python bench/sse_latency.py client --url URL --cookie COOKIE [--cookie COOKIE …] --clients N`
is the client process on its own: tests/support/event_clients.py's, which the event-stream
tests run too (its docstring gives the JSON lines it prints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The client process and the watched export rows are the test harness's.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.event_clients import complete_export, insert_export, run_clients

PASSWORD = "bench password 1"  # noqa: S105 - a throw-away user in a scratch database
EMAIL = "bench.admin@example.com"
# The server's default TICKETEXPORT_MAX_STREAMS_PER_SESSION.
STREAMS_PER_SESSION = 20


# --- the benchmark ------------------------------------------------------------------------


@contextlib.contextmanager
def _server(which: str) -> Iterator[str]:
    """The benchmark server (bench/_common.py's rule; `system` or `embedded` by name)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common

    with _common.server(which) as url:
        yield url


@contextlib.contextmanager
def _scratch(server: str) -> Iterator[str]:
    from ticketexport import db

    name = f"te_bench_{secrets.token_hex(5)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    params = conninfo_to_dict(server)
    params["dbname"] = name
    url = make_conninfo(**params)
    try:
        db.migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def _read_json(stream: asyncio.StreamReader, seconds: float) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), seconds)
    if not line:
        raise RuntimeError("the client process ended early")
    result: dict[str, Any] = json.loads(line)
    return result


async def _measure(
    db_url: str, base_url: str, cookies: list[str], clients: int, events_n: int
) -> list[float]:
    from ticketexport import events

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM users WHERE email = %s", (EMAIL,)).fetchone()
        assert row is not None
        export_id = insert_export(conn, int(row[0]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "client",
        "--url",
        f"{base_url}/staff/exports/{export_id}/events",
        *(arg for cookie in cookies for arg in ("--cookie", cookie)),
        "--clients",
        str(clients),
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,
    )
    assert proc.stdout is not None
    try:
        ready = await _read_json(proc.stdout, 60)
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} streams failed: {ready['errors']}")
        sent: dict[int, float] = {}
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            for k in range(1, events_n + 1):
                await conn.execute(
                    "UPDATE export_jobs SET status = 'running', stage = 'exporting', "
                    "rows_total = %s, rows_done = %s, started_at = COALESCE(started_at, now()) "
                    "WHERE id = %s",
                    (events_n + 1, k, export_id),
                )
                await events.publish(conn, export_id)
                sent[k] = time.monotonic()
                await conn.commit()
                await asyncio.sleep(0.15)
        with psycopg.connect(db_url, autocommit=True) as sync_conn:
            complete_export(sync_conn, export_id, events_n + 1)
        final = await _read_json(proc.stdout, 60)
        if final["terminal"] != clients:
            raise RuntimeError(f"only {final['terminal']} of {clients} saw the end: {final}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    latencies = []
    for key, times in final["received"].items():
        k = int(key)
        if k in sent:
            latencies.extend((t - sent[k]) * 1000 for t in times)
    return latencies


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def bench_server(
    which: str, client_counts: list[int], events_n: int
) -> list[tuple[int, list[float]]]:
    import _common

    from ticketexport import accounts

    results = []
    with _server(which) as server:
        for clients in client_counts:
            with _scratch(server) as db_url:
                with psycopg.connect(db_url, autocommit=True) as conn:
                    accounts.add_user(
                        conn, EMAIL, name="Bench Admin", password=PASSWORD, admin=True
                    )
                port = _common.free_port()
                home = tempfile.mkdtemp(prefix="sse-bench-home-")
                env = {
                    **os.environ,
                    "DATABASE_URL": db_url,
                    "TICKETEXPORT_HOME": home,
                    "TICKETEXPORT_SECRET_KEY": secrets.token_hex(16),
                    "TICKETEXPORT_HOST": "127.0.0.1",
                    "TICKETEXPORT_PORT": str(port),
                }
                web = subprocess.Popen(
                    [sys.executable, "-m", "ticketexport", "serve"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    base_url = f"http://127.0.0.1:{port}"
                    sessions = -(-clients // STREAMS_PER_SESSION)
                    cookies = asyncio.run(_wait_and_login(base_url, sessions))
                    latencies = asyncio.run(_measure(db_url, base_url, cookies, clients, events_n))
                finally:
                    web.send_signal(signal.SIGTERM)
                    try:
                        web.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        web.kill()
                        web.wait()
            results.append((clients, latencies))
    return results


def bench(servers: list[str], client_counts: list[int], events_n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common

    started = dt.datetime.now(dt.UTC)
    print(f"NOTIFY → SSE client · {started:%Y-%m-%d %H:%M} UTC · {_common.machine()}")
    rows = []
    for which in servers:
        if which == "system" and not _common.reachable(_common.SYSTEM_URL):
            print("system: skipped, no PostgreSQL answers at 127.0.0.1:5432")
            continue
        with _server(which) as server:
            version = _common.server_version(server)
        for clients, latencies in bench_server(which, client_counts, events_n):
            rows.append((version, clients, latencies, _common.load()))
            _common.log(f"{version}, {clients} clients: p95 {_percentile(latencies, 95):.1f} ms")
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {_common.load()}")
    print()
    print(
        f"{'server':<18} {'clients':>7}  {'samples':>7}  {'p50 ms':>7}  {'p95 ms':>7}  "
        f"{'max ms':>7}  load after"
    )
    for version, clients, latencies, load in rows:
        short = " ".join(version.split()[:2])
        print(
            f"{short:<18} {clients:>7}  {len(latencies):>7}  {statistics.median(latencies):>7.1f}  "
            f"{_percentile(latencies, 95):>7.1f}  {max(latencies):>7.1f}  {load}"
        )


async def _wait_and_login(base_url: str, sessions: int) -> list[str]:
    """Once the server answers: `sessions` separate sign-ins, one cookie each."""
    from _common import login_cookie

    deadline = time.monotonic() + 30
    while True:
        try:
            first = await login_cookie(base_url, EMAIL, PASSWORD)
            break
        except (aiohttp.ClientError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    others = [await login_cookie(base_url, EMAIL, PASSWORD) for _ in range(sessions - 1)]
    return [first, *others]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    client = sub.add_parser("client", help="hold N event streams and report what arrived")
    client.add_argument("--url", required=True)
    client.add_argument(
        "--cookie", required=True, action="append", help="repeat to spread over sessions"
    )
    client.add_argument("--clients", type=int, required=True)
    client.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--clients", default="1,100,300")
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--servers", default="system,embedded")
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    args = parser.parse_args(argv)
    if args.mode == "client":
        asyncio.run(run_clients(args.url, args.cookie, args.clients, args.timeout))
        return 0
    if args.quick:
        args.servers, args.clients, args.events = "default", "1,40", 10
    bench(args.servers.split(","), [int(n) for n in args.clients.split(",")], args.events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
