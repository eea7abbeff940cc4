"""Scale-out: 1, 2 and 4 worker processes draining 200 queued exports of 10,000 tickets.

    .venv/bin/python bench/scaleout.py [--workers 1,2,4] [--exports 200] [--tickets 10000]
        [--quick]

For each worker count: with no worker running, one Export click (POST) of the `all` view of
a 10,000-ticket database, cancelled, then `--exports` - 1 POSTs of Retry on it (a retry is
a new export of the same request, never merged with another as a double submit is), so
`--exports` exports wait queued. Then that many `ticketexport worker --concurrency 1`
processes start together; the time is from the first export turning running to the last
completing. Beside each: the workers' own CPU seconds (user + system, from /proc) and the
machine's busy share over the drain (/proc/stat; the database and everything else on the
host is the rest).

Baseline from the same run: the same COPY statement by the same number of psql processes
in parallel (`--exports` copies in all, each to a file, no sync), exports per minute.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as c
import psycopg


def queue(url: str, server: c.Web, count: int) -> list[str]:
    first, _ = c.click(server, "all")
    c.post_form(server, f"/staff/exports/{first}/cancel", {})
    return [c.post_form(server, f"/staff/exports/{first}/retry", {})[0] for _ in range(count)]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def drain(url: str, workers: int, exports: list[str], tmp: Path) -> dict[str, float]:
    watcher = c.Watcher(url)
    busy0, total0 = _machine_busy()
    procs = [c.start_worker(url, tmp / f"w{k}") for k in range(workers)]
    cpu: dict[int, float] = {}
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            for p in procs:
                with contextlib.suppress(OSError):
                    cpu[p.pid] = _cpu_seconds(p.pid)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        marks = watcher.wait(exports)
        for p in procs:
            cpu[p.pid] = _cpu_seconds(p.pid)
    finally:
        stop_sampling.set()
        for p in procs:
            c.stop(p)
        watcher.close()
    busy1, total1 = _machine_busy()
    failed = [e for e, m in marks.items() if "completed" not in m]
    if failed:
        raise SystemExit(f"{len(failed)} exports did not complete")
    first = min(m["running"] for m in marks.values())
    last = max(m["completed"] for m in marks.values())
    return {
        "seconds": last - first,
        "per_minute": len(exports) / (last - first) * 60,
        "worker_cpu": sum(cpu.values()),
        "busy": (busy1 - busy0) / (total1 - total0),
    }


def psql_parallel(url: str, statement: str, processes: int, copies: int, tmp: Path) -> float:
    """Exports per minute of `copies` runs of the statement by `processes` psql at once."""
    per = [copies // processes + (1 if k < copies % processes else 0) for k in range(processes)]

    def loop(k: int, n: int) -> None:
        for _ in range(n):
            (tmp / f"copy-{k}.sql").write_text(f"{statement} \\g '{tmp}/out-{k}.csv'\n")
            subprocess.run(
                [c.tool("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f",
                 str(tmp / f"copy-{k}.sql")],
                check=True,
                env=c.psql_env(),
            )  # fmt: skip

    threads = [threading.Thread(target=loop, args=(k, n)) for k, n in enumerate(per)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return copies / (time.monotonic() - started) * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.workers, args.exports = "1,2", 20
    counts = [int(n) for n in args.workers.split(",")]
    started = dt.datetime.now(dt.UTC)
    rows = []
    with c.server() as admin, tempfile.TemporaryDirectory(prefix="te-bench-scale-") as tmpdir:
        tmp = Path(tmpdir)
        version = c.server_version(admin)
        print(f"scale-out · {started:%Y-%m-%d %H:%M} UTC · {version} · {c.machine()}")
        url = c.seeded(admin, args.tickets)
        with c.web(url, tmp / "web") as server:
            for workers in counts:
                c.reset(url)
                exports = queue(url, server, args.exports)
                statement = c.export_statement(url, exports[0])
                result = drain(url, workers, exports, tmp / f"drain-{workers}")
                base = psql_parallel(url, statement, workers, args.exports, tmp)
                rows.append((workers, result, base, c.load()))
                c.log(
                    f"{workers} workers: {result['per_minute']:.0f} exports/min, psql "
                    f"{base:.0f}/min ({c.load()})"
                )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE export_jobs")
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {c.load()}")
    print()
    print(
        f"{args.exports} queued exports of {args.tickets:,} tickets (`all`, default columns, "
        "as-of on, CSV, local storage)"
    )
    print(
        f"{'workers':>7} {'drain s':>8} {'exports/min':>11} {'× 1 worker':>10} "
        f"{'worker CPU s':>12} {'machine busy':>12} {'psql ×N /min':>12}  load after"
    )
    one = rows[0][1]["per_minute"]
    for workers, result, base, load in rows:
        print(
            f"{workers:>7} {result['seconds']:>8.1f} {result['per_minute']:>11.0f} "
            f"{result['per_minute'] / one:>10.2f} {result['worker_cpu']:>12.1f} "
            f"{result['busy'] * 100:>11.0f}% {base:>12.0f}  {load}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
