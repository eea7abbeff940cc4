"""Audit page time with 5 million audit rows: the first page and filtered pages, p50/p95.

Usage (the benchmark server as in bench/_common.py, or --database-url):

    .venv/bin/python bench/audit_page.py [--rows 5000000] [--runs 200] [--quick]

Seeds a database of its own (`te_bench_audit_<rows>`, cached by name and row count) with
audit rows spread over a year: 40 actions, 2,000 actors, one row in four about one of
100,000 exports. Each case times what the `/admin/audit` handler asks of the database:
`admin_audit.read_page` (the page query and its rows) on a warm connection, for a case's
first page and its second page (from the first page's cursor), p50 and p95 of --runs; the
HTML rendering of 50 rows is not included. Beside it, in the same run, the baseline: the
same first-page query with the keyset indexes of migration 0015 dropped inside a
transaction that is rolled back (what the log's earlier indexes gave).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import zoneinfo
from typing import Any

import _common
import psycopg
from psycopg import sql

from ticketexport import admin_audit

KEYSET_INDEXES = (
    "audit_log_keyset_idx",
    "audit_log_action_keyset_idx",
    "audit_log_actor_email_keyset_idx",
    "audit_log_export_keyset_idx",
)


def marker(rows: int) -> str:
    return f"ticketexport bench: audit rows={rows}"


def prepare(admin_url: str, rows: int) -> str:
    name = f"te_bench_audit_{rows}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[0] == marker(rows):
            url = _common.with_db(admin_url, name)
            _common.cli(url, "migrate")
            return url
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    url = _common.with_db(admin_url, name)
    _common.cli(url, "migrate")
    started = time.monotonic()
    _common.log(f"seeding {name}: {rows:,} audit rows (one-off; cached afterwards)")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_log"
            " (occurred_at, actor_email, action, client_ip, export_id, details)"
            " SELECT timestamptz '2026-01-01 00:00+00'"
            "   + make_interval(secs => g * 31536000.0 / %(n)s),"
            "   'user' || (hashint8(g) %% 2000 + 2000) %% 2000 || '@example.com',"
            "   'action' || (hashint8(g + 1) %% 40 + 40) %% 40 || '.done',"
            "   '10.0.0.1',"
            "   CASE WHEN g %% 4 = 0 THEN md5(((g / 4) %% 100000)::text)::uuid END,"
            "   jsonb_build_object('n', g)"
            " FROM generate_series(1, %(n)s) AS g",
            {"n": rows},
        )
        conn.execute("VACUUM ANALYZE audit_log")
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(marker(rows))
            )
        )
    _common.log(f"seeded {name} in {time.monotonic() - started:.0f} s")
    return url


def cases(url: str) -> list[tuple[str, dict[str, str]]]:
    with psycopg.connect(url) as conn:
        export = conn.execute(
            "SELECT export_id::text FROM audit_log WHERE export_id IS NOT NULL"
            " ORDER BY id DESC LIMIT 1 OFFSET 5000"
        ).fetchone()
    assert export is not None
    return [
        ("first page", {}),
        ("action", {"action": "action7.done"}),
        ("actor", {"actor": "user42@example.com"}),
        ("export", {"export": export[0]}),
        ("one day", {"from": "2026-06-01", "to": "2026-06-01"}),
        (
            "action + actor + month",
            {
                "action": "action3.done",
                "actor": "user7@example.com",
                "from": "2026-03-01",
                "to": "2026-03-31",
            },
        ),
    ]


async def page_times(url: str, runs: int) -> dict[str, list[float]]:
    """Each case's first page, then its second (from the first page's cursor), as the
    page handler reads them: `admin_audit.read_page` on a warm connection."""
    zone = zoneinfo.ZoneInfo("UTC")
    found: dict[str, list[float]] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for label, params in cases(url):
            filters = admin_audit.parse_filters(params, zone)
            first = await admin_audit.read_page(conn, filters, None)
            assert first.rows, label
            for suffix, cursor in (("", None), (", page 2", first.next_cursor)):
                if suffix and cursor is None:
                    continue
                samples = []
                for _ in range(runs):
                    start = time.perf_counter()
                    await admin_audit.read_page(conn, filters, cursor)
                    samples.append((time.perf_counter() - start) * 1000)
                found[label + suffix] = samples
    return found


def baseline_times(url: str, runs: int) -> dict[str, list[float]]:
    """The same page queries without 0015's indexes (dropped in a rolled-back transaction)."""
    zone = zoneinfo.ZoneInfo("UTC")
    found: dict[str, list[float]] = {}
    # Before the indexes go: cases() reads on a connection of its own, which would wait for
    # this transaction's lock.
    chosen = cases(url)
    with psycopg.connect(url) as conn:
        for name in KEYSET_INDEXES:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        for label, params in chosen:
            query = admin_audit.page_query(admin_audit.parse_filters(params, zone), None)
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                conn.execute(query).fetchall()
                samples.append((time.perf_counter() - start) * 1000)
            found[label] = samples
            _common.log(f"baseline {label}: done")
        conn.rollback()
    return found


def p(values: list[float], q: float) -> float:
    return _common.percentile(values, q)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick or os.environ.get("BENCH_QUICK") == "1":
        args.rows, args.runs, args.baseline_runs = 200_000, 20, 2
    with _common.server() if args.database_url is None else _nullctx(args.database_url) as admin:
        url = prepare(admin, args.rows)
        version = _common.server_version(url)
        print(f"audit page, {args.rows:,} audit rows, {version}, {_common.load()}")
        pages = asyncio.run(page_times(url, args.runs))
        base = baseline_times(url, args.baseline_runs)
        print(f"{'case':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  baseline query p50 ms")
        for label, samples in pages.items():
            before = base.get(label)
            shown = (
                f"{statistics.median(before):10.1f} (n={len(before)})" if before else "         -"
            )
            figures = f"{p(samples, 50):8.1f} {p(samples, 95):8.1f} {max(samples):8.1f}"
            print(f"{label:34} {figures}  {shown}", flush=True)
        print(f"load after: {_common.load()}")
    return 0


class _nullctx:
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
