"""The event-stream client process and the export rows it watches, shared by the
event-stream tests and bench/sse_latency.py.

`python tests/support/event_clients.py --url URL --cookie COOKIE [--cookie COOKIE …]
--clients N [--timeout S]` holds N streams of URL; stream i uses cookie i mod the number
given. It prints one JSON line once every stream has its first event
({"ready": n, "failed": n, "errors": [...]}), and one when every stream has ended
({"terminal": n, "statuses": {...}, "received": {"<rows>": [t, ...]}}); each event's time
is time.monotonic(), one clock for every process on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import psycopg

from ticketexport import events

TERMINAL = {"completed", "failed", "cancelled", "expired"}


async def _one_stream(
    session: aiohttp.ClientSession,
    url: str,
    cookie: str,
    first: asyncio.Event,
    report: dict[str, Any],
) -> None:
    """Read one event stream to its end, noting when each event (by rows) arrived."""
    headers = {"Accept": "text/event-stream", "Cookie": cookie}
    try:
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                report["error"] = f"HTTP {response.status}"
                return
            data: list[str] = []
            async for raw in response.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    state = json.loads("\n".join(data))
                    data = []
                    report["times"].append((state["rows"], time.monotonic()))
                    report["status"] = state["status"]
                    first.set()
                    if state["status"] in TERMINAL:
                        return
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        first.set()


async def run_clients(url: str, cookies: list[str], clients: int, seconds: float) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        firsts = [asyncio.Event() for _ in range(clients)]
        reports: list[dict[str, Any]] = [
            {"times": [], "status": None, "error": None} for _ in range(clients)
        ]
        tasks = [
            asyncio.create_task(
                _one_stream(session, url, cookies[i % len(cookies)], firsts[i], reports[i])
            )
            for i in range(clients)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), seconds)
        failed = [r["error"] for r in reports if r["error"] or not r["times"]]
        _emit({"ready": clients - len(failed), "failed": len(failed), "errors": failed[:5]})
        _done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        received: dict[str, list[float]] = {}
        for report in reports:
            for rows, at in report["times"]:
                received.setdefault(str(rows), []).append(at)
        _emit(
            {
                "terminal": sum(1 for r in reports if r["status"] in TERMINAL),
                "statuses": dict(Counter(str(r["status"]) for r in reports)),
                "errors": [r["error"] for r in reports if r["error"]][:5],
                "received": received,
            }
        )


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def insert_export(conn: psycopg.Connection[Any], requester: int) -> str:
    """A queued export row to watch (what the request path inserts, minus the job)."""
    now = dt.datetime.now(dt.UTC)
    row = conn.execute(
        "INSERT INTO export_jobs (requester_id, as_of, request, view_name, "
        "request_fingerprint, expires_at) VALUES (%s, %s, '{}', 'All tickets', 'bench', %s) "
        "RETURNING id",
        (requester, now, now + dt.timedelta(hours=72)),
    ).fetchone()
    assert row is not None
    return str(row[0])


def complete_export(conn: psycopg.Connection[Any], export_id: str, rows: int) -> None:
    """Finish a running export with a stored-file record, and announce it."""
    with conn.transaction():
        media = conn.execute(
            "INSERT INTO media_items (kind, file_name, size_bytes, content_type, "
            "storage_backend, object_key, sha256) VALUES ('ticket_export', 'bench.csv', 0, "
            "'text/csv; charset=utf-8', 'local', %s, %s) RETURNING id",
            (f"bench/{export_id}", "0" * 64),
        ).fetchone()
        assert media is not None
        conn.execute(
            "UPDATE export_jobs SET status = 'completed', stage = NULL, rows_done = %s, "
            "rows_total = %s, media_item_id = %s, finished_at = now() WHERE id = %s",
            (rows, rows, media[0], export_id),
        )
        conn.execute("SELECT pg_notify(%s, %s)", (events.CHANNEL, export_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hold N event streams and report what arrived")
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--cookie", required=True, action="append", help="repeat to spread over sessions"
    )
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    asyncio.run(run_clients(args.url, args.cookie, args.clients, args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
