"""What each feature of the export's SQL costs, on the same data in one run.

    .venv/bin/python bench/features.py [--tickets 1000000] [--rounds 3] [--quick]

Statements, each built on the one before, all `COPY (…) TO STDOUT (FORMAT csv, HEADER)` of
the `all` view's default columns in its order (newest first), run by psql into /dev/null:

1. plain SELECT: the eight columns' raw values (ids, title, created_at) from `tickets`
2. + label joins: status and priority labels, assignee and contact names, team name
3. + formula guard: the CSV's guard around every cell (ticketexport/exports/formats.py)
4. + time-zone formatting: `created_at` as `YYYY-MM-DDTHH:MM:SS±HH:MM` in the organisation's
   zone — this is the product's statement with as-of off
5. + as-of: the product's statement reading every table as of a snapshot (what exports run)

psql runs with the worker's session options (ticketexport/exports/worker.py
EXPORT_SESSION_OPTIONS: JIT off); statement 5 also runs with the server's default JIT for
reference. Plus, for reference, all 21 columns (a view holds at most 20; built past that check) with
as-of off and on. Each round runs the statements in a rotated order; medians of the rounds,
the load average beside each round. The statements come from the product's compiler and its
CSV wrapper; 1–3 are derived from statement 4 by replacing the part that feature adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import psycopg

from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats
from ticketexport.views.compiler import compile_export
from ticketexport.views.model import ListRequest
from ticketexport.views.registry import COLUMNS
from ticketexport.views.service import ResolvedView, builtin_view

# The product's statement under the server's default JIT settings, for reference: every
# other line runs with the worker's session options (JIT off).
JIT_REFERENCE = "5 with the server's default JIT"


def _statement(url: str, view: ResolvedView, snapshot: str | None) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM users WHERE email = %s", (c.ADMIN,)).fetchone()
        assert row is not None
        actor = Actor(id=row[0], is_admin=True, permissions=Permission.IMPORT_EXPORT_TICKETS)
        request = ListRequest(view=view.key, q="", sort=None, filters={}, page=None)
        compiled = compile_export(
            view, request, actor, dt.datetime.now(dt.UTC), "UTC", snapshot=snapshot
        )
        select = formats.CSV.select(compiled.rows)
        return formats.CSV.copy_statement(select).as_string(conn)


def statements(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert snap is not None
    view = builtin_view("all")
    full_off = _statement(url, view, None)
    full_on = _statement(url, view, str(snap[0]))
    # 3: the time-zone formatting of created_at replaced by its plain text output.
    no_tz, n = re.subn(
        r"\(CASE WHEN t\.created_at IS NULL THEN '' ELSE to_char\(.*?END\), t\.id, t\.created_at",
        "t.created_at::text, t.id, t.created_at",
        full_off,
        flags=re.S,
    )
    assert n == 1, "the created_at display expression was not found"
    # 2: the formula guard's outer select list replaced by the bare cells.
    head, rest = no_tz.split(" FROM (SELECT * FROM (", 1)
    columns = re.findall(r' AS ("[^"]+")(?:, |$)', head)
    bare = ", ".join(f'v."c{i}" AS {label}' for i, label in enumerate(columns))
    no_guard = f"COPY (SELECT {bare} FROM (SELECT * FROM ({rest}"
    plain = (
        "COPY (SELECT t.id, t.title, t.status_id, t.priority_id, t.assignee_id, t.team_id, "
        "t.contact_id, t.created_at FROM tickets t ORDER BY t.created_at DESC, t.id DESC) "
        "TO STDOUT (FORMAT csv, HEADER)"
    )
    wide = ResolvedView(
        key="all",
        name="All tickets",
        definition=view.definition.__class__(
            name="All 21",
            conditions_and=(),
            conditions_or=(),
            columns=tuple(COLUMNS),
            sort=view.definition.sort,
        ),
        saved_view_id=None,
        builtin="all",
    )
    return {
        "1 plain SELECT": plain,
        "2 + label joins": no_guard,
        "3 + formula guard": no_tz,
        "4 + time-zone formatting (as-of off)": full_off,
        "5 + as-of (the product)": full_on,
        JIT_REFERENCE: full_on,
        "all 21 columns, as-of off": _statement(url, wide, None),
        "all 21 columns, as-of on": _statement(url, wide, str(snap[0])),
    }


def run(url: str, statement: str, tmp: Path, *, jit: bool) -> float:
    script = tmp / "statement.sql"
    script.write_text(f"{statement} \\g /dev/null\n")
    started = time.perf_counter()
    subprocess.run(
        [c.tool("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        check=True,
        env=None if jit else c.psql_env(),
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.tickets, args.rounds = 100_000, 1
    started = dt.datetime.now(dt.UTC)
    with c.server() as admin, tempfile.TemporaryDirectory(prefix="te-bench-features-") as tmpdir:
        version = c.server_version(admin)
        print(f"feature costs · {started:%Y-%m-%d %H:%M} UTC · {version} · {c.machine()}")
        url = c.seeded(admin, args.tickets)
        found = statements(url)
        names = list(found)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(run(url, found[name], Path(tmpdir), jit=name == JIT_REFERENCE))
            c.log(
                f"round {r + 1}: "
                + ", ".join(f"{times[n][-1]:.2f}" for n in names)
                + f" ({c.load()})"
            )
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {c.load()}")
    print()
    print(
        f"{args.tickets:,} tickets, `all`, psql COPY … TO STDOUT into /dev/null, median of "
        f"{args.rounds} (min–max)"
    )
    print(f"{'statement':<40} {'s':>6} {'min–max':>13} {'+ s':>6} {'× plain':>7}  sql")
    previous = None
    plain = statistics.median(times[names[0]])
    for name in names:
        median = statistics.median(times[name])
        extra = name.startswith("all") or name == JIT_REFERENCE
        added = "" if previous is None or extra else f"{median - previous:+6.2f}"
        print(
            f"{name:<40} {median:>6.2f} {min(times[name]):>6.2f}–{max(times[name]):<6.2f} "
            f"{added:>6} {median / plain:>7.2f}  {c.sha(found[name])}"
        )
        if not extra:
            previous = median
    return 0


if __name__ == "__main__":
    sys.exit(main())
