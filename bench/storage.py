"""One 1,000,000-ticket export per storage backend: time and the worker's peak RSS.

Usage (system PostgreSQL; the database is created, migrated and seeded when missing):

    .venv/bin/python bench/storage.py --database te_storage_bench

For each backend (local files, S3 on SeaweedFS, Azure Blob on Azurite, the servers started
as the tests start them) a fresh `ticketexport worker` process exports the `all` view
(default columns, CSV); the script prints running → completed, rows/s, the worker's peak RSS
(VmHWM), how much of it came during the export (the peak minus the peak once started and
probed, SDKs loaded), and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the object-store helpers the tests use

from tests.support.services import actor_for, services_for  # noqa: E402
from ticketexport.exports import service  # noqa: E402
from ticketexport.views.model import ListRequest  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"


def _prepare(database: str, tickets: int) -> str:
    url = f"{SERVER}/{database}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "ticketexport", "migrate"], env=env, check=True)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM tickets").fetchone()
    if not row or row[0] == 0:
        print(f"seeding {tickets:,} tickets…", flush=True)
        subprocess.run(
            [sys.executable, "-m", "ticketexport", "seed", "--tickets", str(tickets)],
            env=env,
            check=True,
        )
    return url


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _request(url: str, home: Path) -> str:
    env = {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0"}
    async with services_for(url, home, env=env) as services:
        request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
        requested = await service.request_export(services, actor_for(url), request, client_ip=None)
    return requested.export_id


def _measure(url: str, home: Path, env: dict[str, str]) -> dict[str, Any]:
    worker = c.start_worker(url, home, env={"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0", **env})
    try:
        time.sleep(3)  # started and probed its storage before the click
        started_rss = _peak_rss_mib(worker.pid)
        export_id = asyncio.run(_request(url, home))
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited ({worker.returncode}); see {home}")
                row = conn.execute(
                    "SELECT e.status, e.rows_done, e.started_at, e.finished_at, e.error_code, "
                    "m.size_bytes FROM export_jobs e LEFT JOIN media_items m "
                    "ON m.id = e.media_item_id WHERE e.id = %s",
                    (export_id,),
                ).fetchone()
                assert row is not None
                if row[0] in ("completed", "failed"):
                    break
                time.sleep(0.05)
        rss = _peak_rss_mib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    if row[0] != "completed":
        raise SystemExit(f"export {export_id} failed: {row[4]}")
    seconds = (row[3] - row[2]).total_seconds()
    return {
        "seconds": seconds,
        "rows": row[1],
        "bytes": row[5],
        "rss": rss,
        "started_rss": started_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default="te_storage_bench")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--backends", default="local,s3,azure")
    args = parser.parse_args()
    url = _prepare(args.database, args.tickets)
    results = []
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"te-bench-{name}-") as tmp:
            home = Path(tmp)
            with c.storage_backend(name, home) as env:
                load = os.getloadavg()
                figures = _measure(url, home, env)
            results.append((name, figures, load))
            rate = figures["rows"] / figures["seconds"]
            print(
                f"{name:<6} {figures['seconds']:8.2f} s  {rate:>10,.0f} rows/s  "
                f"{figures['bytes']:>13,} bytes  peak RSS {figures['rss']:6.1f} MiB "
                f"(idle after start {figures['started_rss']:.1f})  "
                f"load {load[0]:.1f}",
                flush=True,
            )
    print()
    print(
        "backend   running → completed     rows/s          bytes   worker peak RSS"
        "   during the export   load (1 min)"
    )
    for name, figures, load in results:
        rate = figures["rows"] / figures["seconds"]
        print(
            f"{name:<9} {figures['seconds']:>17.2f} s  {rate:>9,.0f}"
            f"  {figures['bytes']:>13,}  {figures['rss']:>12.1f} MiB"
            f"  {figures['rss'] - figures['started_rss']:>14.1f} MiB  {load[0]:>13.1f}"
        )


if __name__ == "__main__":
    main()
