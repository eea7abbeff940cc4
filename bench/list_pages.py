"""List-page server time per built-in view and sort: first page, a deep page, and search.

Usage (server and seeded 1M-ticket database as in bench/_common.py, or --database-url):

    .venv/bin/python bench/list_pages.py [--runs 5] [--database-url URL] [--quick]
        [--tickets 10000000] [--views team-tickets,following] [--sorts assignee,priority,view]
        [--search printer,Müller] [--no-search]

Times one `list_page()` call (the page query plus its capped count) on a warm connection,
wall clock, median of --runs. The deep page starts from a cursor taken at row 1,000 (page
21), which is what following twenty "next" links arrives at. Each search term is timed on
every view chosen (--views; every built-in view by default), first page with its count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import time
from typing import Any

import _common
import psycopg

from ticketexport.domain.actor import Actor
from ticketexport.views import compiler, conditions, cursor, registry
from ticketexport.views.service import builtin_view, list_page, parse_list_request

DEEP_ROW = 1000


async def timed(
    conn: psycopg.AsyncConnection[Any],
    params: dict[str, str],
    actor: Actor,
    now: datetime.datetime,
    tz: str,
    runs: int,
) -> tuple[float, int]:
    samples = []
    rows = 0
    for _ in range(runs):
        start = time.perf_counter()
        page = await list_page(conn, parse_list_request(params), actor, now=now, tz=tz)
        samples.append((time.perf_counter() - start) * 1000)
        rows = page.count
    return statistics.median(samples), rows


async def deep_cursor(
    conn: psycopg.AsyncConnection[Any],
    view: str,
    sort: str,
    actor: Actor,
    now: datetime.datetime,
    tz: str,
) -> str | None:
    """The cursor a reader holds after twenty pages (row 1,000), or None if the view is shorter."""
    request = parse_list_request({"view": view, "sort": sort})
    compiled = compiler.compile_list(
        builtin_view(view), request, actor, now=now, tz=tz, limit=DEEP_ROW
    )
    rows = await (await conn.execute(compiled.statement, compiled.params)).fetchall()
    if len(rows) < DEEP_ROW:
        return None
    width = len(compiled.columns)
    return cursor.encode(compiled.signature, rows[-1][width + 1 :])


def _chosen(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    """The keys a comma-separated option names, in their usual order (all when empty)."""
    if not text:
        return known
    picked = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(picked - set(known))
    if unknown:
        print(f"unknown {what} {unknown[0]!r}; use any of {', '.join(known)}", file=sys.stderr)
        return None
    return tuple(key for key in known if key in picked)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", help="a seeded database (default: bench/_common.py's, 1M tickets)"
    )
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", default=_common.QUICK)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tz", default="America/New_York")
    parser.add_argument(
        "--search",
        default="printer",
        help="comma-separated search terms, each timed on every chosen view (default: printer)",
    )
    parser.add_argument(
        "--views", default="", help="comma-separated built-in view keys (default: all)"
    )
    parser.add_argument("--sorts", default="", help="comma-separated sort keys (default: all)")
    parser.add_argument("--no-search", action="store_true", help="skip the search timings")
    args = parser.parse_args()
    views = _chosen(args.views, tuple(registry.BUILTIN_VIEWS), "view")
    sorts = _chosen(args.sorts, tuple(registry.SORTS), "sort")
    if views is None or sorts is None:
        return 2
    if args.quick:
        args.runs, args.tickets, args.no_search = 1, 100_000, True
        args.views = args.views or "all,my-tickets"
        views = _chosen(args.views, tuple(registry.BUILTIN_VIEWS), "view")
        assert views is not None
    if not args.database_url:
        with _common.server() as admin:
            args.database_url = _common.seeded(admin, args.tickets)
            print(f"list pages · {_common.server_version(admin)} · {_common.machine()}")
            return await measure(args, views, sorts)
    return await measure(args, views, sorts)


async def measure(args: argparse.Namespace, views: Any, sorts: Any) -> int:
    now = datetime.datetime.now(datetime.UTC)
    async with await psycopg.AsyncConnection.connect(args.database_url, autocommit=True) as conn:
        # The busiest agent: most assigned tickets, so "my" views are as large as they get.
        row = await (
            await conn.execute(
                "SELECT assignee_id FROM tickets WHERE assignee_id IS NOT NULL "
                "GROUP BY assignee_id ORDER BY count(*) DESC LIMIT 1"
            )
        ).fetchone()
        if row is None:
            print("the database has no assigned tickets; seed it first", file=sys.stderr)
            return 2
        actor = Actor(int(row[0]), is_admin=False, permissions=0)
        total = await (await conn.execute("SELECT count(*) FROM tickets")).fetchone()
        print(
            f"tickets: {total[0] if total else 0:,}; acting user id {actor.id}; "
            f"median of {args.runs} runs; ms"
        )
        header = f"{'view':<16} {'sort':<9} {'rows':>8} {'first':>8} {'deep':>8}  target"
        print(header)
        print("-" * len(header))
        misses = 0
        for view in views:
            for sort in sorts:
                first, count = await timed(
                    conn, {"view": view, "sort": sort}, actor, now, args.tz, args.runs
                )
                deep_ms: float | None = None
                token = await deep_cursor(conn, view, sort, actor, now, args.tz)
                if token:
                    deep_ms, _ = await timed(
                        conn,
                        {"view": view, "sort": sort, "page": token},
                        actor,
                        now,
                        args.tz,
                        args.runs,
                    )
                is_default = sort == "view"
                target = 100.0 if is_default else 300.0
                ok = first < target and (deep_ms is None or deep_ms < 300.0)
                misses += not ok
                deep_text = f"{deep_ms:8.1f}" if deep_ms is not None else f"{'-':>8}"
                count_text = "10,000+" if count > registry.COUNT_CAP else f"{count:,}"
                print(
                    f"{view:<16} {sort:<9} {count_text:>8} {first:8.1f} {deep_text}  "
                    f"{'<100 first' if is_default else '<300'} {'ok' if ok else 'MISS'}"
                )
        terms = [t for t in args.search.split(",") if t.strip()] if not args.no_search else []
        for term in terms:
            print()
            print(f"search q={term!r} (default sort, first page with its count)")
            for view in views:
                ms, count = await timed(
                    conn, {"view": view, "q": term}, actor, now, args.tz, args.runs
                )
                count_text = "10,000+" if count > registry.COUNT_CAP else f"{count:,}"
                # Three characters or more: the trigram indexes answer it (< 300 ms target).
                target = "<300" if len(term.strip()) >= conditions.TRIGRAM_TERM else ""
                ok = "" if not target else ("ok" if ms < 300 else "MISS")
                misses += ok == "MISS"
                print(f"{view:<16} {'view':<9} {count_text:>8} {ms:8.1f}  {target} {ok}")
        print()
        print("all targets met" if not misses else f"{misses} view/sort pairs missed a target")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
