"""Worker peak RSS exporting 100k, 1M and 5M tickets, per storage backend.

    .venv/bin/python bench/memory.py [--tickets 100000,1000000,5000000]
        [--storage local|s3|azure|<TICKETEXPORT_STORAGE_URL>]... [--quick]

`--storage` (repeatable): `local` is a file:// URL in a temporary directory; `s3` and
`azure` start SeaweedFS and Azurite on loopback ports as the tests do; anything else is
used as a TICKETEXPORT_STORAGE_URL. With no --storage: local, s3, azure and
TICKETEXPORT_STORAGE_URL (if set). A backend this build cannot open (an unknown scheme, an
unreachable service) is skipped with the reason.

Each export (the `all` view, default columns, as-of on, CSV) is clicked while no worker
runs, then a fresh `ticketexport worker --concurrency 1` runs it alone; its peak RSS is the
process's VmHWM when the export has completed. The baseline from the same run is the peak
RSS of an identical worker that started, connected and ran no export (held for 3 s). The
target: under 150 MB, and flat (within ±10%) from the smallest to the largest export.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _common as c
import pytest


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """The backend's URL and credentials in this process's environment, for a moment."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _usable(env: dict[str, str]) -> str | None:
    """Why this build cannot use the backend, or None."""
    from ticketexport.storage import StorageError
    from ticketexport.storage.backends import from_url

    try:
        with _environ(env):
            from_url(env["TICKETEXPORT_STORAGE_URL"])
    except (StorageError, ValueError, ImportError, OSError) as exc:
        return str(exc)
    return None


def _delete(env: dict[str, str], key: str) -> None:
    """Remove the measured file, with the backend's credentials from `env`."""
    from ticketexport.storage.backends import from_url

    async def delete() -> None:
        storage = from_url(env["TICKETEXPORT_STORAGE_URL"])
        try:
            await storage.delete(key)
        finally:
            await storage.close()

    with _environ(env):
        asyncio.run(delete())


def idle_rss(url: str, home: Path, env: dict[str, str]) -> float:
    worker = c.start_worker(url, home, env=env)
    try:
        c.wait_worker_ready(url, worker)
        time.sleep(3)
        return c.peak_rss_mib(worker.pid)
    finally:
        c.stop(worker)


def export_rss(
    url: str, server: c.Web, home: Path, env: dict[str, str]
) -> tuple[float, float, int]:
    """(peak RSS MiB, seconds running → completed, rows) of one export on a fresh worker."""
    watcher = c.Watcher(url)
    export_id, _ = c.click(server, "all")
    try:
        marks, rss, row = c.run_export(url, home, watcher, export_id, env=env)
    finally:
        watcher.close()
    _delete(env, row["object_key"])
    return rss, marks["completed"] - marks["running"], int(row["rows_done"])


# Backends named rather than given as URLs: the benchmark starts their servers itself, as
# the tests do (SeaweedFS for S3, Azurite for Azure Blob Storage).
STARTED = ("local", "s3", "azure")


def _measure(
    label: str, env: dict[str, str], counts: list[int], urls: dict[int, str], tmp: Path
) -> tuple[str, float, list[tuple[int, float, float]]]:
    rows: list[tuple[int, float, float]] = []
    # One store per database: a store belongs to one installation.
    stores = {
        n: {
            **env,
            "TICKETEXPORT_STORAGE_URL": c.store_for(env["TICKETEXPORT_STORAGE_URL"], f"n{n}"),
        }
        for n in counts
    }
    base = idle_rss(urls[counts[0]], tmp / "idle", stores[counts[0]])
    for n in counts:
        with c.web(urls[n], tmp / f"web-{n}", stores[n]) as server:
            rss, seconds, done = export_rss(urls[n], server, tmp / f"w-{n}", stores[n])
        rows.append((done, rss, seconds))
        c.log(f"{label} {done:,} rows: peak RSS {rss:.1f} MiB in {seconds:.1f} s ({c.load()})")
    return label, base, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", default="100000,1000000,5000000")
    parser.add_argument("--storage", action="append", default=[])
    parser.add_argument("--quick", action="store_true", default=c.QUICK)
    args = parser.parse_args()
    if args.quick:
        args.tickets = "100000"
    counts = [int(n) for n in args.tickets.split(",")]
    backends = args.storage or [
        "local",
        "s3",
        "azure",
        *([u] if (u := os.environ.get("TICKETEXPORT_STORAGE_URL")) else []),
    ]
    started = dt.datetime.now(dt.UTC)
    results: list[tuple[str, float, list[tuple[int, float, float]]]] = []
    with c.server() as admin, tempfile.TemporaryDirectory(prefix="te-bench-memory-") as tmpdir:
        tmp = Path(tmpdir)
        version = c.server_version(admin)
        print(f"worker peak RSS · {started:%Y-%m-%d %H:%M} UTC · {version} · {c.machine()}")
        urls = {n: c.seeded(admin, n) for n in counts}
        for name in backends:
            with contextlib.ExitStack() as stack:
                try:
                    env = stack.enter_context(c.storage_backend(name, tmp))
                except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
                    # A missing SeaweedFS or Azurite is reported, and the others still run.
                    print(f"{name}: skipped, its server did not start: {exc}")
                    continue
                storage_url = env["TICKETEXPORT_STORAGE_URL"]
                label = name if name in STARTED else storage_url.split("?", 1)[0]
                reason = _usable(env)
                if reason is not None:
                    print(f"{label}: skipped, not available in this build: {reason}")
                    continue
                results.append(_measure(label, env, counts, urls, tmp))
    print(f"finished {dt.datetime.now(dt.UTC):%H:%M} UTC · {c.load()}")
    print()
    print(
        f"{'storage':<24} {'rows':>10} {'peak RSS MiB':>12} {'÷ smallest':>10} "
        f"{'÷ idle':>7} {'export s':>8}"
    )
    for label, base, rows in results:
        print(f"{label:<24} {'idle worker':>10} {base:>12.1f}")
        for done, rss, seconds in rows:
            print(
                f"{label:<24} {done:>10,} {rss:>12.1f} {rss / rows[0][1]:>10.3f} "
                f"{rss / base:>7.3f} {seconds:>8.1f}"
            )
        peak = max(r for _, r, _ in rows)
        flat = max(r for _, r, _ in rows) / min(r for _, r, _ in rows) - 1
        print(
            f"{label}: peak {peak:.1f} MiB (target < 150 MB = 143 MiB), spread "
            f"{flat * 100:.1f}% from {rows[0][0]:,} to {rows[-1][0]:,} rows (target ±10%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
