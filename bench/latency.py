"""Click-to-running latency and the worker's event-loop stalls while it exports.

    .venv/bin/python bench/latency.py [--servers system,embedded] [--clicks 20]
        [--stall-runs 3] [--stall-tickets 1000000] [--quick]

1. Click → running, on each server (`system` = PostgreSQL at 127.0.0.1:5432, `embedded` = the
   embedded PostgreSQL 18; `default` = bench/_common.py's rule): a `ticketexport serve` process
   and one waiting worker; each sample is one POST /staff/tickets/export of a saved view of the
   first 1,000 tickets (so the export itself is short), timed from just before the POST to this
   process's LISTEN connection receiving the worker's NOTIFY that the export is running;
   samples are taken one after another, each once the previous export completed. Baselines
   from the same run: the POST's own round trip (303 received), and a bare NOTIFY round trip
   (COMMIT of `SELECT pg_notify` on one connection → received on a LISTEN connection).
2. Event-loop stalls (default server): the worker runs with a 1 ms ticker on its event loop
   (bench/_ticker_worker.py: the same worker code, heartbeats and maintenance included); the
   lateness of each tick while it exports `--stall-tickets` tickets (the `all` view, default
   columns), `--stall-runs` exports one after another, medians over the runs of each run's
   p50 / p99 / max; the baseline is the same worker's ticks for 3 s idle before the first.

NOTIFY → SSE client latency with 1, 100 and 300 clients is bench/sse_latency.py.
Targets: click → running p50 under 50 ms; stalls p99 under 10 ms and never over 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import psycopg

HERE = Path(__file__).resolve().parent


def ticker_worker(url: str, home: Path, out: Path) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(HERE / "_ticker_worker.py"), str(out), "--concurrency", "1"],
        env=c.env_for(url, home),
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("ab"),
        cwd=c.ROOT,
    )


def small_view(url: str) -> str:
    """A saved view of the first 1,000 tickets (default columns), made if missing."""
    from ticketexport.views.registry import DEFAULT_COLUMNS

    return c.saved_view(
        url,
        "Bench: first 1,000",
        DEFAULT_COLUMNS,
        [{"field": "id", "operator": "le", "value": 1000}],
    )


def notify_round_trips(url: str, samples: int) -> list[float]:
    with (
        psycopg.connect(url, autocommit=True) as listen,
        psycopg.connect(url, autocommit=True) as send,
    ):
        listen.execute("LISTEN bench_round_trip")
        found = []
        for i in range(samples):
            at = time.monotonic()
            send.execute("SELECT pg_notify('bench_round_trip', %s)", (str(i),))
            for _ in listen.notifies(timeout=5, stop_after=1):
                found.append((time.monotonic() - at) * 1000)
            time.sleep(0.02)
    return found


def click_latency(url: str, samples: int, tmp: Path) -> dict[str, list[float]]:
    view = small_view(url)
    watcher = c.Watcher(url)
    worker = ticker_worker(url, tmp / "click-worker", tmp / "click-ticks.json")
    to_running: list[float] = []
    post: list[float] = []
    try:
        c.wait_worker_ready(url, worker)
        with c.web(url, tmp / "click-web") as server:
            c.click(server, view)  # a first request warms the web process's pool and caches
            watcher.wait([])
            time.sleep(0.5)
            for _ in range(samples):
                export_id, at = c.click(server, view)
                post.append((time.monotonic() - at) * 1000)
                marks = watcher.wait([export_id])[export_id]
                to_running.append((marks["running"] - at) * 1000)
                time.sleep(0.2)
    finally:
        c.stop(worker)
        watcher.close()
    return {
        "click_to_running": to_running,
        "post": post,
        "notify": notify_round_trips(url, samples),
    }


def _stats(lateness_ms: list[float]) -> dict[str, float]:
    return {
        "ticks": len(lateness_ms),
        "p50": c.percentile(lateness_ms, 50),
        "p99": c.percentile(lateness_ms, 99),
        "max": max(lateness_ms),
        "over10": sum(1 for x in lateness_ms if x > 10),
        "over50": sum(1 for x in lateness_ms if x > 50),
    }


def stalls(url: str, runs: int, tmp: Path) -> tuple[dict[str, float], list[dict[str, float]]]:
    watcher = c.Watcher(url)
    ticks_file = tmp / "stall-ticks.json"
    home = tmp / "stall-worker"
    worker = ticker_worker(url, home, ticks_file)
    windows: list[tuple[float, float]] = []
    try:
        c.wait_worker_ready(url, worker)
        idle_from = time.monotonic()
        time.sleep(3)
        idle_to = time.monotonic()
        with c.web(url, tmp / "stall-web") as server:
            for i in range(runs):
                export_id, _ = c.click(server, "all")
                marks = watcher.wait([export_id])[export_id]
                if "completed" not in marks:
                    raise SystemExit(f"export {export_id} did not complete")
                windows.append((marks["running"], marks["completed"]))
                row = c.export_row(url, export_id)
                (home / "exports" / row["object_key"]).unlink(missing_ok=True)
                c.log(
                    f"stall run {i + 1}: export {marks['completed'] - marks['running']:.1f} s "
                    f"({c.load()})"
                )
    finally:
        c.stop(worker)
        watcher.close()
    ticks: list[list[float]] = json.loads(ticks_file.read_text())
    idle = _stats([late * 1000 for at, late in ticks if idle_from <= at <= idle_to])
    per_run = [
        _stats([late * 1000 for at, late in ticks if start <= at <= end]) for start, end in windows
    ]
    return idle, per_run


def _line(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):6.1f}  p95 {c.percentile(values, 95):6.1f}  "
        f"max {max(values):6.1f}  (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="system,embedded")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--stall-runs", type=int, default=3)
    parser.add_argument("--stall-tickets", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.servers, args.clicks, args.stall_runs, args.stall_tickets = "default", 5, 1, 100_000
    started = dt.datetime.now(dt.UTC)
    print(f"latency · {started:%Y-%m-%d %H:%M} UTC · {c.machine()}")
    clicks: list[tuple[str, dict[str, list[float]], str]] = []
    with tempfile.TemporaryDirectory(prefix="te-bench-latency-") as tmpdir:
        tmp = Path(tmpdir)
        for which in args.servers.split(","):
            if which == "system" and not c.reachable(c.SYSTEM_URL):
                print("system: skipped, no PostgreSQL answers at 127.0.0.1:5432")
                continue
            with c.server(which) as admin:
                version = c.server_version(admin)
                url = c.seeded(admin, 100_000)
                clicks.append((which, click_latency(url, args.clicks, tmp / which), version))
                c.log(
                    f"{which}: click → running p50 "
                    f"{statistics.median(clicks[-1][1]['click_to_running']):.1f} ms"
                )
        with c.server() as admin:
            stall_version = c.server_version(admin)
            url = c.seeded(admin, args.stall_tickets)
            idle, per_run = stalls(url, args.stall_runs, tmp / "stalls")
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {c.load()}")
    print()
    print("click → running, ms (one waiting worker, 1,000-ticket exports one after another)")
    for which, found, version in clicks:
        print(f"  {which:<8} {version:<40} click → running  {_line(found['click_to_running'])}")
        print(f"  {which:<8} {'':<40} POST → 303 only  {_line(found['post'])}")
        print(f"  {which:<8} {'':<40} NOTIFY round trip {_line(found['notify'])}")
    print()
    print(
        f"event-loop lateness of a 1 ms ticker in the worker, ms ({stall_version}, "
        f"{args.stall_tickets:,}-ticket exports)"
    )
    print(
        f"  idle worker (3 s)      p50 {idle['p50']:.2f}  p99 {idle['p99']:.2f}  max "
        f"{idle['max']:.2f}  ticks {idle['ticks']:.0f}"
    )
    for i, run in enumerate(per_run, 1):
        print(
            f"  exporting, run {i}       p50 {run['p50']:.2f}  p99 {run['p99']:.2f}  max "
            f"{run['max']:.2f}  ticks {run['ticks']:.0f}  >10 ms {run['over10']:.0f}  "
            f">50 ms {run['over50']:.0f}"
        )
    med: dict[str, Any] = {
        k: statistics.median(r[k] for r in per_run) for k in ("p50", "p99", "max", "over50")
    }
    print(
        f"  exporting, median of {len(per_run)}  p50 {med['p50']:.2f}  p99 {med['p99']:.2f}  "
        f"max {med['max']:.2f}  (target p99 < 10, max < 50)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
