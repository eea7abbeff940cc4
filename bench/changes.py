"""A file of changes since an earlier export against a full export of the same view.

    .venv/bin/python bench/changes.py [--tickets 1000000] [--pairs 5]
        [--changes 0,0.001,0.01] [--quick]

Server and seeded database: bench/_common.py (`te_bench_changes_<N>`, a database of its own
because the script changes tickets).

For each share of changed tickets: a full export of `all` (default columns, CSV) is clicked
and completed (the base); that share of the tickets gets a new title (one committed UPDATE);
then `--pairs` alternating pairs (the file of changes first in even pairs) of

- changes: POST /staff/exports/{base}/changes, as the button sends it, run by a fresh
  `ticketexport worker --concurrency 1`;
- full: POST /staff/tickets/export of the same view, run the same way;

each timed from running to completed (count + COPY streamed into storage + completion)
with the worker's peak RSS. Each file of changes is checked to hold one upsert per changed
ticket and nothing else.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c
import psycopg


def _run(url: str, home: Path, watcher: c.Watcher, export_id: str) -> dict[str, Any]:
    marks, rss, row = c.run_export(url, home, watcher, export_id)
    path = home / "exports" / row["object_key"]
    return {
        "whole": marks["completed"] - marks["running"],
        "counting": marks["exporting"] - marks["running"],
        "rows": row["rows_done"],
        "bytes": row["size_bytes"],
        "rss": rss,
        "path": path,
    }


def _check_changes(path: Path, changed: int) -> None:
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    kinds = [r[0] for r in rows[1:]]
    if rows[0][:2] != ["Change", "Ticket ID"] or kinds != ["upsert"] * changed:
        raise SystemExit(
            f"the file of changes is not {changed} upserts: {len(kinds)} rows, {sorted(set(kinds))}"
        )


def one_share(
    url: str, server: c.Web, home: Path, share: float, pairs: int, tickets: int
) -> dict[str, Any]:
    watcher = c.Watcher(url)
    base = c.click(server, "all")[0]
    _run(url, home, watcher, base)["path"].unlink(missing_ok=True)
    every = round(1 / share) if share else 0
    changed = 0
    if every:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(
                # A new title every run (a prefix of its own), so every updated ticket changes.
                "UPDATE tickets SET title = left(md5(random()::text) || ' ' || title, 480) "
                "WHERE id %% %s = 0",
                (every,),
            )
            changed = cur.rowcount
    rss: dict[str, list[float]] = {"changes": [], "full": []}
    counting: dict[str, list[float]] = {"changes": [], "full": []}

    def changes(_: int) -> float:
        export_id, _ = c.post_form(server, f"/staff/exports/{base}/changes", {})
        done = _run(url, home, watcher, export_id)
        _check_changes(done["path"], changed)
        done["path"].unlink(missing_ok=True)
        rss["changes"].append(done["rss"])
        counting["changes"].append(done["counting"])
        return float(done["whole"])

    def full(_: int) -> float:
        export_id = c.click(server, "all")[0]
        done = _run(url, home, watcher, export_id)
        if done["rows"] != tickets:
            raise SystemExit(f"the full export holds {done['rows']} rows, not {tickets}")
        done["path"].unlink(missing_ok=True)
        rss["full"].append(done["rss"])
        counting["full"].append(done["counting"])
        return float(done["whole"])

    results = c.alternate(pairs, changes, full)
    watcher.close()
    return {
        "share": share,
        "changed": changed,
        "pairs": results,
        "rss": rss,
        "counting": {k: statistics.median(v) for k, v in counting.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--changes", default="0,0.001,0.01")
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.tickets, args.pairs = 20_000, 2
    shares = [float(s) for s in args.changes.split(",")]
    with c.server() as admin, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = c.seeded(admin, args.tickets, tag="changes")
        print(f"# {c.server_version(url)}, {c.machine()}")
        print(f"# {args.tickets:,} tickets, view all (default columns), csv, local storage")
        with c.web(url, tmp / "web") as server:
            for share in shares:
                found = one_share(url, server, tmp / "home", share, args.pairs, args.tickets)
                pairs = found["pairs"]
                label = f"changes of {share:.1%} ({found['changed']:,} tickets) vs full export"
                print(pairs.line(label, base_name="full"))
                print(
                    f"  counting stage median: changes {found['counting']['changes']:.2f} s, "
                    f"full {found['counting']['full']:.2f} s; worker peak RSS: changes "
                    f"{max(found['rss']['changes']):.1f} MiB, full "
                    f"{max(found['rss']['full']):.1f} MiB; {c.load()}"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
