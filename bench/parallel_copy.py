"""Faster than one COPY? The export's statement split into disjoint key ranges, in parallel.

    .venv/bin/python bench/parallel_copy.py [--tickets 1000000] [--parts 2,4] [--pairs 5]
        [--quick]

As-of visibility is decided from recorded data (the click's snapshot and the versions'
transaction ids), so any number of sessions read the same rows. The `all` view's export
statement (as-of on, default columns, newest first) gets one extra condition per part:
`(t.created_at, t.id)` inside one of N ranges cut at the sort order's N-quantiles, which
cover the key space with no overlap. N psql processes run their part at once, each to its
own file (the first with the header), then the parts are concatenated in order into one
file and `sync` runs. The baseline, alternating with it: one psql running the unsplit
statement into one file, then `sync`. The concatenation is checked byte for byte against
the single COPY's file. psql runs with the worker's session options (JIT off).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import psycopg

ORDER = " WHERE true ORDER BY t.created_at DESC, t.id DESC)"


def boundaries(url: str, parts: int) -> list[tuple[str, int]]:
    """(created_at, id) of the first row of parts 2..N in the view's order."""
    with psycopg.connect(url) as conn:
        total_row = conn.execute("SELECT count(*) FROM tickets").fetchone()
        assert total_row is not None
        total = int(total_row[0])
        cuts = []
        for k in range(1, parts):
            row = conn.execute(
                "SELECT created_at::text, id FROM tickets ORDER BY created_at DESC, id DESC "
                "OFFSET %s LIMIT 1",
                (total * k // parts,),
            ).fetchone()
            assert row is not None
            cuts.append((str(row[0]), int(row[1])))
    return cuts


def split(statement: str, cuts: list[tuple[str, int]]) -> list[str]:
    if statement.count(ORDER) != 1:
        raise SystemExit("the export statement's shape changed; update bench/parallel_copy.py")
    pieces = []
    bounds: list[tuple[str, int] | None] = [None, *cuts, None]
    for k in range(len(cuts) + 1):
        upper, lower = bounds[k], bounds[k + 1]
        where = " WHERE true"
        if upper is not None:  # rows before the cut in descending order: keys above it
            where += f" AND (t.created_at, t.id) < ('{upper[0]}'::timestamptz, {upper[1]})"
        if lower is not None:
            where += f" AND (t.created_at, t.id) >= ('{lower[0]}'::timestamptz, {lower[1]})"
        piece = statement.replace(ORDER, where + ORDER[len(" WHERE true") :])
        if k > 0:
            piece = piece.replace("TO STDOUT (FORMAT csv, HEADER)", "TO STDOUT (FORMAT csv)")
        pieces.append(piece)
    return pieces


def _psql(url: str, statement: str, out: Path) -> subprocess.Popen[bytes]:
    script = out.with_suffix(".sql")
    script.write_text(f"{statement} \\g '{out}'\n")
    return subprocess.Popen(
        [c.tool("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        env=c.psql_env(),
    )


def parallel(url: str, pieces: list[str], tmp: Path) -> float:
    started = time.perf_counter()
    procs = [_psql(url, piece, tmp / f"part-{k}.csv") for k, piece in enumerate(pieces)]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a part's COPY failed")
    with (tmp / "parallel.csv").open("wb") as out:
        for k in range(len(pieces)):
            part = tmp / f"part-{k}.csv"
            with part.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
            part.unlink()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--parts", default="2,4")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.tickets, args.parts, args.pairs = 100_000, "2", 2
    started = dt.datetime.now(dt.UTC)
    results = []
    with c.server() as admin, tempfile.TemporaryDirectory(prefix="te-bench-parallel-") as tmpdir:
        tmp = Path(tmpdir)
        version = c.server_version(admin)
        print(f"parallel COPY · {started:%Y-%m-%d %H:%M} UTC · {version} · {c.machine()}")
        url = c.seeded(admin, args.tickets)
        with c.web(url, tmp / "web") as server:
            export_id, _ = c.click(server, "all")
        statement = c.export_statement(url, export_id)
        single = tmp / "single.csv"
        for parts in (int(p) for p in args.parts.split(",")):
            pieces = split(statement, boundaries(url, parts))
            pairs = c.alternate(
                args.pairs,
                lambda _i, pieces=pieces: parallel(url, pieces, tmp),
                lambda _i: c.psql_copy(url, statement, single),
            )
            same = c.file_sha256(tmp / "parallel.csv") == c.file_sha256(single)
            results.append((parts, pairs, same, c.load()))
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {c.load()}")
    print()
    print(f"{args.tickets:,} tickets, `all`, as-of on, default columns; sql {c.sha(statement)}")
    for parts, pairs, same, load in results:
        print(pairs.line(f"{parts} parallel COPYs + concatenation", base_name="one COPY"))
        print(
            f"  bytes identical to the single COPY: {'yes' if same else 'NO'}; "
            f"{'faster' if statistics.median(pairs.ratios()) < 1 else 'not faster'}; {load}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
