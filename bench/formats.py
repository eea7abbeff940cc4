"""Each export format next to `psql \\copy` of the CSV: streaming time, bytes, worker peak RSS.

Usage (server and seeded database as in bench/_common.py):

    .venv/bin/python bench/formats.py [--rounds 5] [--tickets 1000000] [--quick]

Every export is the `all` view (default columns) run by a fresh `ticketexport worker`
process to local storage. The streaming stage is the export's `exporting` stage (COPY into
storage, compression included), timed by watching its row. Rounds run csv, csv.gz, xlsx and
parquet in a rotating order, so the machine's load falls on every format alike; the medians
of the rounds are printed, and the xlsx/csv and parquet/csv ratios of each round. Peak RSS
is the worker's VmHWM after one export, at 100k rows (a saved view of the first 100,000 ids)
and at all rows.
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

import _common
import psycopg

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
MIN_TICKETS = 100_000
POLL_SECONDS = 0.01
# The streaming time each typed format may take, as a multiple of the CSV's.
TARGETS = {"xlsx": 2.5, "parquet": 2.0}


def _check_database(url: str) -> tuple[Actor, int]:
    """The exporting admin and the ticket count, or a one-line exit."""
    try:
        conn = psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"cannot connect to DATABASE_URL: {str(exc).strip()}") from None
    with conn:
        found = conn.execute("SELECT to_regclass('tickets') IS NOT NULL").fetchone()
        if not found or not found[0]:
            raise SystemExit("the database is not migrated: run `ticketexport migrate` first")
        count = conn.execute("SELECT count(*) FROM tickets").fetchone()
        tickets = int(count[0]) if count else 0
        row = conn.execute(
            "SELECT u.id, u.email, u.is_admin, COALESCE(bit_or(r.permissions), 0) FROM users u "
            "LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON r.id = ur.role_id "
            "WHERE u.email = %s GROUP BY u.id",
            (ADMIN,),
        ).fetchone()
    if tickets < MIN_TICKETS or row is None:
        raise SystemExit(
            f"the database holds {tickets:,} tickets: seed it first "
            "(`ticketexport seed --tickets 1000000`)"
        )
    return Actor(id=row[0], email=row[1], is_admin=row[2], permissions=Permission(row[3])), tickets


def psql_copy(url: str, user: Actor, out: Path) -> tuple[float, int]:
    """psql's client-side copy of exactly the CSV's COPY statement to a local file, then
    sync (bench/_common.py), with the worker's session options."""
    view = view_service.builtin_view("all")
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    compiled = compile_export(view, request, user, dt.datetime.now(dt.UTC), "UTC", snapshot=None)
    with psycopg.connect(url) as conn:
        statement = formats.CSV.copy_statement(formats.CSV.select(compiled.rows)).as_string(conn)
    return _common.psql_copy(url, statement, out), out.stat().st_size


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def one_export(url: str, user: Actor, view: str, key: str, home: Path) -> dict[str, float]:
    """A fresh worker runs one export; its stages timed from the export's row."""
    env = {**os.environ, "DATABASE_URL": url, "TICKETEXPORT_HOME": str(home)}
    worker = subprocess.Popen(  # noqa: ASYNC220 - started before anything is timed
        [sys.executable, "-m", "ticketexport", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("ab"),
    )
    try:
        async with open_services(Settings.from_env(env), url) as services:
            await asyncio.sleep(2)  # let the worker connect and listen
            request = ListRequest(view=view, q="", sort=None, filters={}, page=None)
            requested = await service.request_export(
                services, user, request, export_format=formats.get(key), client_ip=None
            )
            seen: dict[str, float] = {}
            while True:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with status {worker.returncode}")
                async with services.pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT e.status, e.stage, e.rows_done, m.size_bytes FROM export_jobs e "
                        "LEFT JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
                        (requested.export_id,),
                    )
                    row: Any = await cur.fetchone()
                now = time.perf_counter()
                status, stage = row[0], row[1]
                if status == "running":
                    seen.setdefault("running", now)
                    seen.setdefault(stage, now)
                if status in ("completed", "failed"):
                    seen.setdefault("storing", now)
                    seen["done"] = now
                    break
                await asyncio.sleep(POLL_SECONDS)
            if status != "completed":
                raise SystemExit(f"{key} export {requested.export_id} ended {status}")
            rss = _peak_rss_kib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "stream": seen["storing"] - seen.get("exporting", seen["running"]),
        "total": seen["done"] - seen["running"],
        "rows": float(row[2]),
        "bytes": float(row[3]),
        "rss_mib": rss / 1024,
    }


async def _first_ids_view(url: str, user: Actor, rows: int) -> str:
    """A saved view of the first `rows` ids with the default columns."""
    definition = parse_definition(
        {
            "name": f"First {rows}",
            "conditions_and": [{"field": "id", "operator": "le", "value": rows}],
            "columns": list(view_service.builtin_view("all").definition.columns),
            "sort": [{"column": "created_at", "direction": "desc"}],
        }
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        view_id = await saved.create_saved_view(conn, user, definition, system_wide=False)
    return str(view_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the formats")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", default=_common.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tickets = 1, 100_000
    with _common.server() as admin:
        url = _common.seeded(admin, args.tickets)
        print(f"formats · {_common.server_version(admin)} · {_common.machine()}")
        asyncio.run(run(url, args))
        print(f"finished · {_common.load()}")


async def run(url: str, args: argparse.Namespace) -> None:
    user, tickets = _check_database(url)
    keys = list(formats.FORMATS)
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in keys}
    psql_runs: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="te-bench-formats-") as tmp:
        home = Path(tmp)
        for number in range(args.rounds):
            # Rotate the order so no format always runs first (or after the heaviest).
            order = keys[number % len(keys) :] + keys[: number % len(keys)]
            psql_runs.append(psql_copy(url, user, home / "psql.csv"))
            (home / "psql.csv").unlink()
            for key in order:
                runs[key].append(await one_export(url, user, "all", key, home))
            shutil.rmtree(home / "exports", ignore_errors=True)
            shown = "; ".join(
                f"{key}/csv streaming {runs[key][-1]['stream'] / runs['csv'][-1]['stream']:.2f}"
                for key in TARGETS
            )
            print(f"round {number + 1}: {', '.join(order)}; {shown}", flush=True)
        small_view = await _first_ids_view(url, user, 100_000)
        small = {key: await one_export(url, user, small_view, key, home) for key in keys}

    def median(key: str, field: str) -> float:
        return statistics.median(run[field] for run in runs[key])

    psql_s = statistics.median(s for s, _ in psql_runs)
    psql_bytes = psql_runs[0][1]
    print()
    for key, target in TARGETS.items():
        ratios = [x["stream"] / c["stream"] for x, c in zip(runs[key], runs["csv"], strict=True)]
        print(
            f"streaming ratio {key}/csv ({tickets / 1e6:g}M tickets, local storage): "
            f"{statistics.median(ratios):.2f} (target ≤ {target:g}; rounds: "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print(f"medians of {args.rounds} rounds, `all` view, default columns, {tickets:,} tickets")
    header = ("", "stream s", "÷ csv", "run s", "bytes", "RSS 100k MiB", "RSS all MiB", "all/100k")
    print(f"{header[0]:<12}" + "".join(f"{h:>14}" for h in header[1:]))
    label = "psql \\copy"
    print(f"{label:<12}{psql_s:>14.2f}{'':>14}{psql_s:>14.2f}{psql_bytes:>14,}")
    for key in keys:
        rss_all, rss_small = median(key, "rss_mib"), small[key]["rss_mib"]
        print(
            f"{key:<12}{median(key, 'stream'):>14.2f}"
            f"{median(key, 'stream') / median('csv', 'stream'):>14.2f}"
            f"{median(key, 'total'):>14.2f}{int(median(key, 'bytes')):>14,}"
            f"{rss_small:>14.1f}{rss_all:>14.1f}{rss_all / rss_small:>14.3f}"
        )


if __name__ == "__main__":
    main()
