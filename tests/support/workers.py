"""Real `ticketexport worker` OS processes and the checks made on exports around them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.databases import Seeding
from tests.support.databases import export_row as export_row
from tests.support.services import actor_for, services_for
from ticketexport.domain.actor import Actor
from ticketexport.exports import service
from ticketexport.storage.marker import MARKER_KEY
from ticketexport.views.model import ListRequest

ANCHOR = dt.date(2026, 6, 1)
SEED = 11
# Enough rows that a throttled export takes a few seconds and can be hit mid-stream.
TICKETS = 6000
SEEDING = Seeding(tickets=TICKETS, seed=SEED, anchor=ANCHOR)
REPO = Path(__file__).resolve().parents[2]

T = TypeVar("T")


# --- worker processes ---------------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    """One `ticketexport worker` process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the worker."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def started_up(self) -> bool:
        """Past its start-up checks (which end the process when the database is away):
        procrastinate logged the start of its exports and maintenance workers."""
        return len(self.log_entries(action="start_worker")) >= 2

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_entries(self, **fields: Any) -> list[dict[str, Any]]:
        """The JSON log lines whose fields include `fields` (event=..., export_id=...)."""
        return [e for e in json_log_lines(self.output()) if fields.items() <= e.items()]

    def events(self, export_id: str) -> list[str]:
        """The structured `event` of every log line about one export, in order."""
        return [e["event"] for e in self.log_entries(export_id=export_id) if "event" in e]


def json_log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a process's output lines (anything else is skipped)."""
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
    return entries


class Workers:
    """Starts workers for one test and always stops them, even when the test fails."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.started: list[Worker] = []

    def start(
        self,
        database_url: str,
        *,
        max_rows_per_s: int = 0,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Worker:
        name = name or f"worker-{len(self.started) + 1}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TICKETEXPORT_", "DATABASE_URL"))
        }
        env.update(
            {
                "DATABASE_URL": database_url,
                "TICKETEXPORT_HOME": str(self.home),
                "TICKETEXPORT_HEARTBEAT_SECONDS": "0.5",
                "TICKETEXPORT_STALL_SECONDS": "3",
                "TICKETEXPORT_WORKER_SEEN_SECONDS": "2",
                "TICKETEXPORT_EXPORT_MAX_ROWS_PER_S": str(max_rows_per_s),
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),
            }
        )
        log_path = self.home / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ticketexport", "worker", "--concurrency", "1"],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name=name, proc=proc, log_path=log_path)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is not None:
                continue
            # A paused worker cannot act on SIGTERM; wake it first.
            worker.resume()
            worker.proc.terminate()
        for worker in self.started:
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(timeout=5)

    def outputs(self) -> str:
        """The end of each worker's output, for a failure message."""
        return "\n".join(f"--- {w.name} ---\n{w.output()[-4000:]}" for w in self.started)

    def whole_output(self) -> str:
        """Everything every worker wrote, for checks on what they said: the periodic jobs'
        lines soon push any one line out of the end that outputs() shows."""
        return "\n".join(w.output() for w in self.started)


# --- exports ------------------------------------------------------------------------------


def run_async(coro: Any) -> Any:
    """Run one coroutine on its own loop (the tests themselves stay synchronous)."""
    return asyncio.run(coro)


async def _request(url: str, user: Actor, request: ListRequest, env: dict[str, str]) -> str:
    async with services_for(url, env=env) as services:
        requested = await service.request_export(services, user, request, client_ip="127.0.0.1")
    assert not requested.deduplicated
    return requested.export_id


def request_export(
    url: str,
    view: str = "all",
    sort: str | None = None,
    *,
    retention_hours: float = 72,
    max_active: int = 3,
) -> str:
    """The Export click for the seeded export admin, who may have `max_active` exports
    queued or running (0: any number); returns the export id."""
    request = ListRequest(view=view, q="", sort=sort, filters={}, page=None)
    env = {
        "TICKETEXPORT_RETENTION_HOURS": str(retention_hours),
        "TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": str(max_active),
    }
    return str(run_async(_request(url, actor_for(url), request, env)))


async def _cancel(url: str, user: Actor, export_id: str) -> None:
    async with services_for(url) as services:
        await service.cancel_export(services, user, export_id, client_ip="127.0.0.1")


def cancel_export(url: str, export_id: str) -> None:
    run_async(_cancel(url, actor_for(url), export_id))


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    workers: Workers | None = None,
) -> T:
    """Polls `probe` until it returns something truthy; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except psycopg.OperationalError:
            last = None
        if last:
            return last
        time.sleep(interval)
    detail = f"\n{workers.outputs()}" if workers is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){detail}")


def wait_status(
    url: str,
    export_id: str,
    statuses: set[str],
    *,
    timeout: float,
    workers: Workers | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        row = export_row(url, export_id)
        return row if row["status"] in statuses else None

    return wait_for(
        f"export {export_id} to become {sorted(statuses)}",
        probe,
        timeout=timeout,
        workers=workers,
    )


def wait_rows(
    url: str, export_id: str, fraction: float, *, timeout: float, workers: Workers
) -> dict[str, Any]:
    """Waits until the running attempt has written at least `fraction` of its rows."""

    def probe() -> dict[str, Any] | None:
        row = export_row(url, export_id)
        assert row["status"] in ("queued", "running"), row["status"]
        total = row["rows_total"]
        if row["status"] == "running" and total and row["rows_done"] >= fraction * total:
            return row
        return None

    return wait_for(
        f"export {export_id} at {fraction:.0%}", probe, timeout=timeout, workers=workers
    )


def storage_files(home: Path) -> list[str]:
    """Every file under the local storage root, relative to it, but the store's
    installation marker (written when a worker starts)."""
    root = home / "exports"
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER_KEY
    )


def export_files(home: Path, export_id: str) -> list[str]:
    return [f for f in storage_files(home) if f.startswith(f"exports/{export_id}/")]


def stored_digest(home: Path, object_key: str) -> tuple[str, int]:
    """sha-256 and size of the bytes local storage holds under `object_key`, read back."""
    digest = hashlib.sha256()
    size = 0
    with (home / "exports" / object_key).open("rb") as stored:
        while chunk := stored.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def doing_jobs(url: str, export_id: str) -> list[int]:
    """procrastinate jobs for this export still marked as being worked on."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE args->>'export_id' = %s AND status = 'doing'",
            (export_id,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def audit_details(url: str, export_id: str, action: str) -> list[dict[str, Any]]:
    """The details of one export's audit rows of `action`, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT details FROM audit_log WHERE export_id = %s AND action = %s ORDER BY id",
            (export_id, action),
        ).fetchall()
    return [dict(r[0]) for r in rows]


def job_status(url: str, job_id: int) -> str | None:
    """A procrastinate job's status, None when its row is gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    return None if row is None else str(row[0])


@contextlib.contextmanager
def claim_blocked(url: str, export_id: str) -> Iterator[Callable[[], bool]]:
    """Holds the export's row lock: a worker that fetches its job (procrastinate marks it
    'doing') then stops at the export's claim, which locks that row, until the block ends.

    Yields a probe that is true once the job is 'doing' and a backend waits on this lock:
    the worker sits between procrastinate's fetch and the claim, for as long as the test
    wants.
    """
    with psycopg.connect(url) as holder:
        holder.execute("SELECT 1 FROM export_jobs WHERE id = %s FOR UPDATE", (export_id,))
        pid = holder.info.backend_pid

        def waiting_at_claim() -> bool:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT (SELECT j.status::text FROM export_jobs e "
                    "        JOIN procrastinate_jobs j ON j.id = e.procrastinate_job_id "
                    "        WHERE e.id = %s), "
                    "       EXISTS (SELECT 1 FROM pg_stat_activity "
                    "               WHERE %s = ANY (pg_blocking_pids(pid)))",
                    (export_id, pid),
                ).fetchone()
            return row == ("doing", True)

        try:
            yield waiting_at_claim
        finally:
            holder.rollback()


def copy_backends(url: str, export_id: str) -> list[dict[str, Any]]:
    """Backends running this export's COPY (or any COPY at all) right now."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(
            "SELECT pid, state, application_name, query FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND (application_name = %s OR (query ILIKE 'COPY%%' AND state = 'active'))",
            (service.copy_application_name(export_id),),
        )
        return cur.fetchall()


def assert_settled(url: str, export_id: str, home: Path, workers: Workers) -> dict[str, Any]:
    """The promise-6 invariants for one export once it reached a terminal status."""
    row = export_row(url, export_id)
    assert row["status"] in ("completed", "failed", "cancelled", "expired"), row["status"]
    with psycopg.connect(url, autocommit=True) as conn:
        running = conn.execute("SELECT count(*) FROM export_jobs WHERE status = 'running'")
        n_running = running.fetchone()
    assert n_running is not None
    assert n_running[0] == 0, "an export was left running"
    # When maintenance ends an export (expiry, rescue), the row turns terminal first and
    # the worker finishes its job a moment later; it must not stay 'doing'.
    wait_for(
        "no procrastinate job left 'doing'",
        lambda: doing_jobs(url, export_id) == [],
        timeout=6,
        workers=workers,
    )
    expected = [row["object_key"]] if row["status"] == "completed" else []

    # Unfinished uploads of dead attempts are swept by the next maintenance pass.
    def only_expected() -> bool:
        return export_files(home, export_id) == expected

    try:
        wait_for(f"storage to hold exactly {expected}", only_expected, timeout=6, workers=workers)
    except pytest.fail.Exception as timed_out:
        # Which file is left over (a dead attempt's upload or a second finished file)
        # is what tells a slow sweep from an attempt that outlived its export.
        raise AssertionError(f"storage holds {storage_files(home)}") from timed_out
    assert not [f for f in storage_files(home) if f.endswith(".part")]
    if row["status"] == "completed":
        # What the worker recorded is only a claim: the stored bytes must hash to it.
        assert stored_digest(home, row["object_key"]) == (row["sha256"], row["size_bytes"])
    return row


@dataclasses.dataclass(frozen=True)
class Reference:
    """An undisturbed export of the seeded `all` view: what every disturbed run must match."""

    sha256: str
    size: int
    rows: int
