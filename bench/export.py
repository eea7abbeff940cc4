"""Export throughput next to `psql \\copy` of the same query, worker RSS and click-to-running.

Usage (the database must be migrated and seeded; see bench/README.md):

    DATABASE_URL=postgresql://postgres@127.0.0.1/te_bench .venv/bin/python bench/export.py

Prints one table: psql's time, ours (a real `ticketexport worker` process, from the click to
completed), the ratio, rows/s, worker peak RSS for a 100k-row and the full export, and the
median click-to-running latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ticketexport.bootstrap import open_services
from ticketexport.config import Settings
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats, service
from ticketexport.views import saved
from ticketexport.views import service as view_service
from ticketexport.views.compiler import compile_export
from ticketexport.views.model import ListRequest, parse_definition

ADMIN = "admin.export@example.com"


def _psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    import pgserver  # the embedded server ships its own psql

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql")


def _requester(url: str) -> Actor:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT u.id, u.email, u.is_admin, COALESCE(bit_or(r.permissions), 0) FROM users u "
            "LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON r.id = ur.role_id "
            "WHERE u.email = %s GROUP BY u.id",
            (ADMIN,),
        ).fetchone()
    if row is None:
        raise SystemExit(f"{ADMIN} not found: seed the database first")
    return Actor(id=row[0], email=row[1], is_admin=row[2], permissions=Permission(row[3]))


def psql_copy(url: str, user: Actor, out: Path) -> tuple[float, int]:
    """Time psql's client-side \\copy of exactly the SELECT our worker runs."""
    view = view_service.builtin_view("all")
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    compiled = compile_export(view, request, user, dt.datetime.now(dt.UTC), "UTC", snapshot=None)
    query = formats.CSV.select(compiled.rows)
    with psycopg.connect(url) as conn:
        text = query.as_string(conn)
    command = f"\\copy ({' '.join(text.split())}) TO '{out}' WITH (FORMAT csv, HEADER)"
    started = time.perf_counter()
    subprocess.run([_psql(), url, "-X", "-q", "-c", command], check=True)
    return time.perf_counter() - started, out.stat().st_size


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _wait_status(
    pool: AsyncConnectionPool[Any],
    export_id: str,
    wanted: set[str],
    worker: subprocess.Popen[bytes],
) -> str:
    while True:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with status {worker.returncode}")
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM export_jobs WHERE id = %s", (export_id,))
            row = await cur.fetchone()
        assert row is not None
        if row[0] in wanted:
            return str(row[0])
        await asyncio.sleep(0.005)


async def worker_export(url: str, user: Actor, view: str, home: Path) -> dict[str, float]:
    """Start a fresh worker, click, and time queued → running → completed."""
    env = {**os.environ, "DATABASE_URL": url, "TICKETEXPORT_HOME": str(home)}
    worker = subprocess.Popen(  # noqa: ASYNC220 - started once per measurement, before timing
        [sys.executable, "-m", "ticketexport", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("ab"),
    )
    try:
        settings = Settings.from_env(env)
        async with open_services(settings, url) as services:
            pool = services.pool
            await asyncio.sleep(2)  # let the worker connect and listen
            request = ListRequest(view=view, q="", sort=None, filters={}, page=None)
            clicked = time.perf_counter()
            requested = await service.request_export(services, user, request, client_ip=None)
            await _wait_status(
                pool, requested.export_id, {"running", "completed", "failed"}, worker
            )
            running = time.perf_counter()
            status = await _wait_status(pool, requested.export_id, {"completed", "failed"}, worker)
            finished = time.perf_counter()
            if status != "completed":
                raise SystemExit(f"export {requested.export_id} ended {status}")
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT e.rows_done, m.size_bytes FROM export_jobs e "
                    "JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
                    (requested.export_id,),
                )
                row = await cur.fetchone()
            assert row is not None
            rss = _peak_rss_kib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "click_to_running": running - clicked,
        "total": finished - clicked,
        "rows": float(row[0]),
        "bytes": float(row[1]),
        "peak_rss_mib": rss / 1024,
    }


async def _saved_view_first(url: str, user: Actor, rows: int) -> str:
    definition = parse_definition(
        {
            "name": f"First {rows}",
            "conditions_and": [{"field": "id", "operator": "le", "value": rows}],
            "conditions_or": [],
            "columns": [
                "id",
                "title",
                "status",
                "priority",
                "assignee",
                "team",
                "contact",
                "created_at",
            ],
            "sort": [{"column": "created_at", "direction": "desc"}],
        }
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        view_id = await saved.create_saved_view(conn, user, definition, system_wide=False)
    return str(view_id)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clicks", type=int, default=5, help="click-to-running samples")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a migrated, seeded database")
    user = _requester(url)
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM tickets").fetchone()
    tickets = int(count[0]) if count else 0
    with tempfile.TemporaryDirectory(prefix="te-bench-") as tmp:
        home = Path(tmp)
        psql_s, psql_bytes = psql_copy(url, user, home / "psql.csv")
        ours = await worker_export(url, user, "all", home)
        small_view = await _saved_view_first(url, user, 100_000)
        small = await worker_export(url, user, small_view, home)
        clicks = []
        for _ in range(args.clicks):
            sample = await worker_export(url, user, small_view, home)
            clicks.append(sample["click_to_running"])
    ours_s = ours["total"] - ours["click_to_running"]
    table = [
        ("psql \\copy, all tickets (s)", f"{psql_s:.2f}"),
        ("psql bytes", f"{psql_bytes:,}"),
        ("ours, running → completed (s)", f"{ours_s:.2f}"),
        ("ours, click → completed (s)", f"{ours['total']:.2f}"),
        ("ours bytes (BOM included)", f"{int(ours['bytes']):,}"),
        ("ours rows/s", f"{ours['rows'] / ours_s:,.0f}"),
        ("worker peak RSS, 100k rows (MiB)", f"{small['peak_rss_mib']:.1f}"),
        ("worker peak RSS, all rows (MiB)", f"{ours['peak_rss_mib']:.1f}"),
        (
            f"click → running, median of {len(clicks)} (ms)",
            f"{statistics.median(clicks) * 1000:.1f}",
        ),
    ]
    print(f"ratio ours/psql ({tickets / 1e6:g}M tickets, local storage): {ours_s / psql_s:.2f}")
    print(f"tickets in database: {tickets:,}")
    for label, value in table:
        print(f"{label:<44}{value:>16}")


if __name__ == "__main__":
    asyncio.run(main())
