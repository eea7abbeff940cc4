"""Cancel on a real worker process: within 2 seconds no COPY runs and no file remains."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import Seeding
from tests.support.sockets import unix_socket_url
from tests.support.workers import (
    ANCHOR,
    SEED,
    Workers,
    assert_settled,
    cancel_export,
    copy_backends,
    export_files,
    export_row,
    request_export,
    wait_for,
    wait_rows,
    wait_status,
)
from ticketexport.exports import service

pytestmark = pytest.mark.slow

CANCEL_DEADLINE = 2.0
# The worker reaches the database through a Unix-domain socket, whose buffers hold some
# 200 kB (loopback TCP's grow to tens of megabytes), and the COPY's output (some 4 MB) is
# far more than that: at 60% the database is still sending, so the cancel interrupts a
# running statement rather than one that has already sent its last row.
CANCEL_SEEDING = Seeding(tickets=20_000, seed=SEED, anchor=ANCHOR)
# The database runs some 2,500 rows ahead of the throttled worker (what the socket and the
# client's buffers hold), so at 60% about 5,500 rows are left to send: 5.5 s at this
# throttle, well over the deadline. A cancel that left the COPY running would still find
# it running when the deadline passes.
THROTTLE = 1_000


@pytest.fixture(scope="session")
def seeding() -> Seeding:
    return CANCEL_SEEDING


class _CleanProbe:
    """Whether a cancelled export is gone from the database and storage, asked over one
    connection opened before the click: a probe that connected afresh each time would
    add its own connection set-up, on a loaded machine a large part of the 2 seconds.

    It also keeps the most rows the export's COPY was seen to have sent (PostgreSQL's own
    count, pg_stat_progress_copy), so a test can tell a COPY that was cut short from one
    that ran to its end."""

    def __init__(self, url: str, home: Path, export_id: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.home = home
        self.export_id = export_id
        self.copied = 0

    def copy_progress(self) -> int | None:
        """Rows the export's COPY has sent so far; None when no COPY of it runs."""
        row = self.conn.execute(
            "SELECT p.tuples_processed FROM pg_stat_progress_copy p "
            "JOIN pg_stat_activity a ON a.pid = p.pid WHERE a.application_name = %s",
            (service.copy_application_name(self.export_id),),
        ).fetchone()
        if row is None:
            return None
        self.copied = max(self.copied, int(row[0]))
        return int(row[0])

    def __call__(self) -> bool:
        self.copy_progress()
        row = self.conn.execute(
            "SELECT e.status, (SELECT count(*) FROM pg_stat_activity a "
            "WHERE a.pid <> pg_backend_pid() AND a.datname = current_database() "
            "AND (a.application_name = %s OR (a.query ILIKE 'COPY%%' AND a.state = 'active'))) "
            "FROM export_jobs e WHERE e.id = %s",
            (service.copy_application_name(self.export_id), self.export_id),
        ).fetchone()
        return row == ("cancelled", 0) and export_files(self.home, self.export_id) == []

    def close(self) -> None:
        self.conn.close()


def _assert_copy_running(url: str, export_id: str) -> None:
    """The export's COPY is an active statement in pg_stat_activity and has not yet sent
    every row (its stream is throttled on the worker's side, so the database holds it)."""
    statements = [
        b
        for b in copy_backends(url, export_id)
        if b["application_name"] == service.copy_application_name(export_id)
        and b["state"] == "active"
        and b["query"].lstrip().upper().startswith("COPY")
    ]
    assert statements, f"no running COPY to cancel: {copy_backends(url, export_id)}"
    row = export_row(url, export_id)
    assert row["rows_done"] < row["rows_total"], "the COPY already wrote every row"


def _job_status(url: str, export_id: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT j.status FROM export_jobs e "
            "JOIN procrastinate_jobs j ON j.id = e.procrastinate_job_id WHERE e.id = %s",
            (export_id,),
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("at", [0.2, 0.6], ids=["20pct", "60pct"])
def test_cancel_mid_stream_stops_the_copy_and_leaves_no_file(
    seeded_url: str,
    home: Path,
    workers: Workers,
    at: float,
    record_property: Callable[[str, object], None],
) -> None:
    export_id = request_export(seeded_url)
    worker = workers.start(unix_socket_url(seeded_url), max_rows_per_s=THROTTLE, name="a")
    wait_rows(seeded_url, export_id, at, timeout=30, workers=workers)
    # The COPY statement is still running in the database and its upload exists: this is
    # what the cancel must interrupt. A COPY that had already sent its last row would let
    # the test pass without proving anything.
    _assert_copy_running(seeded_url, export_id)
    assert any(f.endswith(".part") for f in export_files(home, export_id))

    probe = _CleanProbe(seeded_url, home, export_id)
    at_click = probe.copy_progress()
    total = export_row(seeded_url, export_id)["rows_total"]
    assert at_click is not None, "no COPY of the export runs at the click"
    # What is left would take the throttled worker well past the deadline.
    assert (total - at_click) / THROTTLE > 2 * CANCEL_DEADLINE, (at_click, total)
    clicked = time.monotonic()
    cancel_export(seeded_url, export_id)
    try:
        wait_for(
            "no COPY and no file for the cancelled export",
            probe,
            timeout=CANCEL_DEADLINE,
            interval=0.02,
            workers=workers,
        )
    finally:
        probe.close()
    elapsed = time.monotonic() - clicked
    record_property("cancel_to_clean_seconds", round(elapsed, 3))
    assert elapsed < CANCEL_DEADLINE

    # It stays that way: once the worker has let go of the job, the row is still cancelled
    # and no file was written (an event to wait for, not a pause).
    wait_for(
        "the procrastinate job to end",
        lambda: _job_status(seeded_url, export_id) not in ("todo", "doing"),
        timeout=30,
        workers=workers,
    )
    row = export_row(seeded_url, export_id)
    assert row["status"] == "cancelled"
    assert row["media_item_id"] is None
    # The COPY's own count, last seen before it went: it was stopped, it did not finish.
    assert probe.copied < total, f"the COPY sent {probe.copied} of {total} rows"
    assert worker.alive()
    events = worker.events(export_id)
    assert "started" in events, events
    assert not {"completed", "failed", "retrying"} & set(events), events
    assert_settled(seeded_url, export_id, home, workers)

    # The worker is free for the next export.
    second = request_export(seeded_url)
    done = wait_status(seeded_url, second, {"completed", "failed"}, timeout=30, workers=workers)
    assert done["status"] == "completed", done["error_code"]


def test_cancel_while_counting_stops_the_query(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    """The count waits on a lock; the cancel still ends its statement within 2 seconds."""
    export_id = request_export(seeded_url)
    with psycopg.connect(seeded_url) as locker:
        locker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        worker = workers.start(seeded_url, name="a")

        def counting() -> bool:
            row = export_row(seeded_url, export_id)
            return row["stage"] == "counting" and bool(copy_backends(seeded_url, export_id))

        wait_for("the export to count", counting, timeout=30, workers=workers)
        probe = _CleanProbe(seeded_url, home, export_id)
        clicked = time.monotonic()
        cancel_export(seeded_url, export_id)
        try:
            wait_for(
                "the counting connection to go",
                probe,
                timeout=CANCEL_DEADLINE,
                interval=0.02,
                workers=workers,
            )
        finally:
            probe.close()
        assert time.monotonic() - clicked < CANCEL_DEADLINE
        # The count was interrupted, not finished: no total was ever recorded.
        assert export_row(seeded_url, export_id)["rows_total"] is None
        locker.rollback()
    # The cancelled statement is not mistaken for an outage and retried.
    wait_for(
        "the procrastinate job to end",
        lambda: _job_status(seeded_url, export_id) not in ("todo", "doing"),
        timeout=5,
        workers=workers,
    )
    events = worker.events(export_id)
    assert "started" in events, events
    assert "retrying" not in events, events
    assert not {"failed", "completed"} & set(events), events
    assert_settled(seeded_url, export_id, home, workers)


def test_cancel_while_queued_never_runs(seeded_url: str, home: Path, workers: Workers) -> None:
    export_id = request_export(seeded_url)
    cancel_export(seeded_url, export_id)
    assert _job_status(seeded_url, export_id) == "cancelled"
    # Requested after the cancelled one, so a worker that has run it has passed the
    # cancelled export in the queue: an event to wait for instead of a fixed sleep.
    later = request_export(seeded_url)
    worker = workers.start(seeded_url, name="a")
    done = wait_status(seeded_url, later, {"completed", "failed"}, timeout=60, workers=workers)
    assert done["status"] == "completed", done["error_code"]
    assert worker.events(export_id) == []
    row = export_row(seeded_url, export_id)
    assert (row["status"], row["started_at"], row["attempt"]) == ("cancelled", None, 1)
    assert_settled(seeded_url, export_id, home, workers)
