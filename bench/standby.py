"""The primary's CPU seconds spent on one export, read from the primary and from a standby.

Usage (builds its own primary and streaming standby from the machine's server binaries,
as the test suite does; nothing else is touched):

    .venv/bin/python bench/standby.py [--tickets 1000000] [--pairs 3]

Each pair runs one export of `all` (default columns) through a real `ticketexport worker`
twice: once reading the primary, once reading the standby (TICKETEXPORT_EXPORT_DATABASE_URL),
in alternating order. The primary's CPU time is the sum of its server processes' user and
system time, sampled from /proc while the export runs (a process's last 50 ms before it
exits can be missed, on both sides alike).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

# The test harness builds primaries and standbys; the benchmark reuses it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.clusters import replicated_pair
from ticketexport import db, seed
from ticketexport.bootstrap import open_services
from ticketexport.config import Settings
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import service
from ticketexport.views.model import ListRequest

TICKS = os.sysconf("SC_CLK_TCK")


def _children(postmaster: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            found.append(int(entry.name))
    return found


def _cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuMeter:
    """Samples the CPU time of a postmaster and its children until stopped."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def sample(self) -> None:
        for pid in [self.postmaster, *_children(self.postmaster)]:
            value = _cpu(pid)
            if value is None:
                continue
            self.start.setdefault(pid, value)
            self.last[pid] = value

    def used(self) -> float:
        return sum(self.last[pid] - self.start[pid] for pid in self.last)


def _postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().splitlines()[0])


async def _export(url: str, standby: str | None, home: Path, postmaster: int) -> float:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TICKETEXPORT_", "DATABASE_URL"))
    }
    env.update({"DATABASE_URL": url, "TICKETEXPORT_HOME": str(home)})
    if standby:
        env["TICKETEXPORT_EXPORT_DATABASE_URL"] = standby
    worker = subprocess.Popen(  # noqa: ASYNC220 - started before the measurement
        [sys.executable, "-m", "ticketexport", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("ab"),
    )
    try:
        settings = Settings.from_env(env)
        async with open_services(settings, url) as services:
            await asyncio.sleep(2)  # the worker connects and listens
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT u.id, u.is_admin, COALESCE(bit_or(r.permissions), 0) FROM users u "
                    "LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r "
                    "ON r.id = ur.role_id WHERE u.email = 'admin.export@example.com' "
                    "GROUP BY u.id"
                ).fetchone()
            assert row is not None
            actor = Actor(id=row[0], is_admin=row[1], permissions=Permission(row[2]))
            meter = CpuMeter(postmaster)
            meter.sample()
            request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
            requested = await service.request_export(services, actor, request, client_ip=None)
            while True:
                meter.sample()
                async with services.pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT status, read_from FROM export_jobs WHERE id = %s",
                        (requested.export_id,),
                    )
                    state = await cur.fetchone()
                assert state is not None
                if state[0] in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.05)
            meter.sample()
            if state[0] != "completed" or state[1] != ("standby" if standby else "primary"):
                raise SystemExit(f"export ended {state}; see {home / 'worker.log'}")
            return meter.used()
    finally:
        worker.terminate()
        worker.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    args = parser.parse_args()
    if args.quick:
        args.tickets, args.pairs = 100_000, 1
    with replicated_pair() as pair, tempfile.TemporaryDirectory(prefix="te-standby-") as tmp:
        with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("te_bench")))
        url = pair.primary.url("te_bench")
        standby = pair.standby.url("te_bench")
        db.migrate(url)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=args.tickets, seed=1, anchor=None)
            conn.execute("VACUUM ANALYZE")
        pair.wait_replayed(timeout=600)
        print(f"seeded {args.tickets:,} tickets in {time.perf_counter() - started:.0f} s")
        postmaster = _postmaster(pair.primary.data)
        home = Path(tmp)
        on_primary: list[float] = []
        on_standby: list[float] = []
        for i in range(args.pairs):
            order = (None, standby) if i % 2 == 0 else (standby, None)
            for target in order:
                used = await _export(url, target, home, postmaster)
                (on_standby if target else on_primary).append(used)
                print(f"  {'standby' if target else 'primary'}: {used:.2f} s of primary CPU")
        print(
            f"primary CPU per export of {args.tickets:,} tickets: reading the primary "
            f"{statistics.median(on_primary):.2f} s (min {min(on_primary):.2f}, max "
            f"{max(on_primary):.2f}); reading the standby {statistics.median(on_standby):.2f} s "
            f"(min {min(on_standby):.2f}, max {max(on_standby):.2f}); medians of {args.pairs}"
        )


if __name__ == "__main__":
    asyncio.run(main())
