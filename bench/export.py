"""Export throughput through the real pipeline against psql's copy of the same statement.

    .venv/bin/python bench/export.py [--tickets 100000,1000000] [--pairs 5]
        [--columns default,wide] [--as-of on,off] [--clicks 3] [--quick]

Server and seeded databases: bench/_common.py (DATABASE_URL, else 127.0.0.1:5432, else the
embedded PostgreSQL; `te_bench_<N>` cached by ticket count).

Each pair starts with the Export click (POST /staff/tickets/export to a `ticketexport serve`
process, as the browser sends it) while no worker runs, so the export waits queued with its
recorded snapshot. Its COPY statement is then rebuilt from the recorded row with the worker's
own plan_export, and the two sides run in alternating order (ours first in even pairs):

- ours: a fresh `ticketexport worker --concurrency 1` claims the job; this process LISTENs to
  the export's events and notes when it turned running, exporting, storing and completed.
  "whole" = running → completed (count + COPY streamed into storage with fsync + sha-256 +
  the completion record); "streaming" = exporting → storing (the COPY into storage).
- psql: `COPY … TO STDOUT \\g file` of exactly that statement text (psql's \\copy loop) to a
  file in the same directory as the stored export, then `sync`.

Both files are checked to be the same bytes (ours = BOM + psql's). Columns: `default` is
the `all` view (its default columns); `wide` a saved view of 20 columns, the most a view
holds (every column but Contact ID). As-of `on` is the product; `off` (for reference) clears
the recorded snapshot before the worker runs, so the same view reads the tables as they are.

Then `--clicks` samples of click → completed with a worker already waiting (the 10 s
target) at the largest ticket count, default columns, as-of on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c
import psycopg


def one_case(
    url: str, view: str, as_of: bool, pairs: int, tmp: Path, tickets: int
) -> dict[str, Any]:
    # A home (and so a store) per database: a store belongs to one installation.
    home = tmp / f"home-{tickets}"
    watcher = c.Watcher(url)
    whole = c.Pairs()
    streaming = c.Pairs()
    details: list[dict[str, Any]] = []
    with c.web(url, tmp / f"web-{tickets}") as server:
        for i in range(pairs):
            export_id, _ = c.click(server, view)
            if not as_of:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(
                        "UPDATE export_jobs SET as_of_snapshot = NULL WHERE id = %s", (export_id,)
                    )
            statement = c.export_statement(url, export_id)
            out = tmp / "psql.csv"

            def ours(export_id: str = export_id) -> dict[str, Any]:
                marks, rss, row = c.run_export(url, home, watcher, export_id)
                end_stream = marks.get("storing", marks["completed"])
                return {
                    "whole": marks["completed"] - marks["running"],
                    "streaming": end_stream - marks["exporting"],
                    "counting": marks["exporting"] - marks["running"],
                    "rows": row["rows_done"],
                    "bytes": row["size_bytes"],
                    "sha256": row["sha256"],
                    "path": home / "exports" / row["object_key"],
                    "rss": rss,
                }

            def base(statement: str = statement, out: Path = out) -> float:
                return c.psql_copy(url, statement, out)

            if i % 2 == 0:
                mine = ours()
                psql_s = base()
            else:
                psql_s = base()
                mine = ours()
            same = c.file_sha256(out, b"\xef\xbb\xbf") == mine["sha256"]
            if not same:
                raise SystemExit(f"pair {i + 1}: our file differs from psql's (+ BOM)")
            psql_bytes = out.stat().st_size
            out.unlink()
            mine["path"].unlink(missing_ok=True)
            whole.ours.append(mine["whole"])
            whole.base.append(psql_s)
            streaming.ours.append(mine["streaming"])
            streaming.base.append(psql_s)
            details.append(
                {k: v for k, v in mine.items() if k != "path"} | {"psql": psql_s, "load": c.load()}
            )
            c.log(
                f"{tickets:,} {view} as-of {'on' if as_of else 'off'} pair {i + 1}"
                f"{' (ours first)' if i % 2 == 0 else ' (psql first)'}: whole "
                f"{mine['whole']:.2f} s, streaming {mine['streaming']:.2f} s, psql "
                f"{psql_s:.2f} s, RSS {mine['rss']:.1f} MiB; sql {c.sha(statement)}; "
                f"{c.load()}"
            )
    watcher.close()
    rows = details[0]["rows"]
    return {
        "sql_sha": c.sha(statement),
        "rows": rows,
        "bytes": details[0]["bytes"],
        "psql_bytes": psql_bytes,
        "whole": whole,
        "streaming": streaming,
        "counting": statistics.median(d["counting"] for d in details),
        "rss": max(d["rss"] for d in details),
        "details": details,
    }


def clicks(url: str, samples: int, tmp: Path) -> list[tuple[float, float]]:
    """(click → running, click → completed) with a worker waiting."""
    watcher = c.Watcher(url)
    found = []
    worker = c.start_worker(url, tmp / "home-clicks")
    try:
        c.wait_worker_ready(url, worker)
        with c.web(url, tmp / "web-clicks") as server:
            for _ in range(samples):
                export_id, at = c.click(server, "all")
                marks = watcher.wait([export_id])[export_id]
                if "completed" not in marks:
                    raise SystemExit(f"export {export_id} did not complete")
                found.append((marks["running"] - at, marks["completed"] - at))
                c.log(
                    f"click → running {found[-1][0] * 1000:.1f} ms, → completed "
                    f"{found[-1][1]:.2f} s ({c.load()})"
                )
                row = c.export_row(url, export_id)
                (tmp / "home-clicks" / "exports" / row["object_key"]).unlink(missing_ok=True)
    finally:
        c.stop(worker)
        watcher.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", default="100000,1000000")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--columns", default="default,wide")
    parser.add_argument("--as-of", default="on,off")
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.tickets, args.pairs, args.columns, args.as_of, args.clicks = (
            "100000",
            2,
            "default",
            "on",
            1,
        )
    counts = [int(n) for n in args.tickets.split(",")]
    started = dt.datetime.now(dt.UTC)
    results: list[tuple[int, str, str, dict[str, Any]]] = []
    click_samples: list[tuple[float, float]] = []
    with c.server() as admin, tempfile.TemporaryDirectory(prefix="te-bench-export-") as tmpdir:
        tmp = Path(tmpdir)
        version = c.server_version(admin)
        print(f"export throughput · {started:%Y-%m-%d %H:%M} UTC · {version} · {c.machine()}")
        for tickets in counts:
            url = c.seeded(admin, tickets)
            views = {
                "default": "all",
                "wide": c.saved_view(url, "Bench: 20 columns", c.WIDE_COLUMNS),
            }
            for columns in args.columns.split(","):
                for as_of in args.as_of.split(","):
                    case = one_case(url, views[columns], as_of == "on", args.pairs, tmp, tickets)
                    results.append((tickets, columns, as_of, case))
        if args.clicks:
            url = c.seeded(admin, max(counts))
            click_samples = clicks(url, args.clicks, tmp)
    finished = dt.datetime.now(dt.UTC)
    print(f"finished {finished:%H:%M} UTC · {c.load()}")
    print()
    for tickets, columns, as_of, case in results:
        if columns == "default" and as_of == "on":
            n = f"{tickets / 1e6:g}M" if tickets >= 1_000_000 else f"{tickets // 1000}k"
            print(
                f"ratio ours/psql ({n} tickets, local storage): "
                f"{statistics.median(case['whole'].ratios()):.2f}"
            )
            print(
                f"streaming ratio ours/psql ({n} tickets, local storage): "
                f"{statistics.median(case['streaming'].ratios()):.2f}"
            )
    print()
    header = (
        f"{'tickets':>9} {'columns':<8} {'as-of':<5} {'sql':<12} {'psql s':>7} "
        f"{'stream s':>8} {'whole s':>8} {'count s':>7} {'stream×':>7} {'whole×':>7} "
        f"{'rows/s':>9} {'MB/s':>6} {'MB':>7} {'RSS MiB':>7}"
    )
    print(header)
    for tickets, columns, as_of, case in results:
        whole, streaming = case["whole"], case["streaming"]
        median_whole = statistics.median(whole.ours)
        print(
            f"{tickets:>9,} {columns:<8} {as_of:<5} {case['sql_sha']:<12} "
            f"{statistics.median(whole.base):>7.2f} {statistics.median(streaming.ours):>8.2f} "
            f"{median_whole:>8.2f} {case['counting']:>7.2f} "
            f"{statistics.median(streaming.ratios()):>7.2f} "
            f"{statistics.median(whole.ratios()):>7.2f} "
            f"{case['rows'] / median_whole:>9,.0f} {case['bytes'] / 1e6 / median_whole:>6.1f} "
            f"{case['bytes'] / 1e6:>7.1f} {case['rss']:>7.1f}"
        )
    print()
    for tickets, columns, as_of, case in results:
        label = f"{tickets:,} {columns} as-of {as_of}"
        print(case["streaming"].line(f"{label}, streaming"))
        print(case["whole"].line(f"{label}, whole"))
    if click_samples:
        to_running = [a * 1000 for a, _ in click_samples]
        to_done = [b for _, b in click_samples]
        print(
            f"click → completed, {max(counts):,} tickets, all, default columns, as-of on: "
            f"median {statistics.median(to_done):.2f} s (min {min(to_done):.2f}, max "
            f"{max(to_done):.2f}) over {len(to_done)}; click → running median "
            f"{statistics.median(to_running):.1f} ms"
        )
    if args.json:
        c.emit_json(
            args.json,
            {
                "started": started, "finished": finished, "server": version,
                "cases": [
                    {"tickets": t, "columns": col, "as_of": a, "sql_sha": case["sql_sha"],
                     "rows": case["rows"], "bytes": case["bytes"], "whole": vars(case["whole"]),
                     "streaming": vars(case["streaming"]), "details": case["details"]}
                    for t, col, a, case in results
                ],
                "clicks": click_samples,
            },
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
