"""Promise 6 with real worker processes: SIGKILL mid-export or before the claim, a hung
worker, a locked table, a job removed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.workers import (
    TICKETS,
    Reference,
    Workers,
    assert_settled,
    audit_details,
    claim_blocked,
    doing_jobs,
    export_files,
    export_row,
    job_status,
    request_export,
    storage_files,
    wait_for,
    wait_rows,
    wait_status,
)

pytestmark = pytest.mark.slow

# 6,000 rows at 1,500 rows/s: about four seconds of streaming to aim a kill into.
THROTTLE = 1500


def _audit_actions(url: str, export_id: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT action FROM audit_log WHERE export_id = %s ORDER BY id", (export_id,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def _completed_like_a_calm_export(
    url: str, export_id: str, home: Path, workers: Workers, reference: Reference, attempt: int
) -> dict[str, Any]:
    row = wait_status(url, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == attempt
    assert row["rows_done"] == row["rows_total"] == reference.rows
    assert (row["sha256"], row["size_bytes"]) == (reference.sha256, reference.size)
    assert row["object_key"].startswith(f"exports/{export_id}/{attempt}/")
    assert_settled(url, export_id, home, workers)
    return row


@pytest.mark.parametrize("kill_at", [None, 0.3, 0.7], ids=["early", "30pct", "70pct"])
def test_sigkill_mid_export_completes_on_another_worker(
    seeded_url: str,
    home: Path,
    workers: Workers,
    reference_export: Reference,
    kill_at: float | None,
) -> None:
    export_id = request_export(seeded_url)
    a = workers.start(seeded_url, max_rows_per_s=THROTTLE, name="a")
    if kill_at is None:
        # As soon as the attempt is running: counting, or before the first rows.
        hit = wait_status(seeded_url, export_id, {"running"}, timeout=30, workers=workers)
        assert hit["rows_done"] < TICKETS
    else:
        hit = wait_rows(seeded_url, export_id, kill_at, timeout=30, workers=workers)
        assert hit["rows_done"] < TICKETS, "the export finished before it could be killed"
    a.kill()
    assert export_row(seeded_url, export_id)["status"] == "running"
    if kill_at is not None:
        # The dead attempt left its unfinished upload behind: that is what must be swept.
        assert any(f.endswith(".part") for f in export_files(home, export_id))

    workers.start(seeded_url, name="b")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] in (2, 3)
    assert row["rows_done"] == row["rows_total"] == reference_export.rows
    assert row["sha256"] == reference_export.sha256
    assert row["size_bytes"] == reference_export.size
    assert row["object_key"].startswith(f"exports/{export_id}/{row['attempt']}/")
    assert_settled(seeded_url, export_id, home, workers)
    # Nothing else anywhere under the storage root: only the completed object.
    assert storage_files(home) == [row["object_key"]]
    actions = _audit_actions(seeded_url, export_id)
    assert "export.requeued" in actions
    assert actions[-1] == "export.completed"


def test_two_kills_in_a_row_still_complete(
    seeded_url: str, home: Path, workers: Workers, reference_export: Reference
) -> None:
    """Attempt 1 and attempt 2 both die mid-stream; attempt 3 (the last) completes."""
    export_id = request_export(seeded_url)
    a = workers.start(seeded_url, max_rows_per_s=THROTTLE, name="a")
    wait_rows(seeded_url, export_id, 0.3, timeout=30, workers=workers)
    a.kill()
    b = workers.start(seeded_url, max_rows_per_s=THROTTLE, name="b")

    def second_attempt_streaming() -> bool:
        row = export_row(seeded_url, export_id)
        return bool(
            row["status"] == "running"
            and row["attempt"] == 2
            and row["rows_total"]
            and row["rows_done"] >= 0.3 * row["rows_total"]
        )

    wait_for("attempt 2 at 30%", second_attempt_streaming, timeout=30, workers=workers)
    b.kill()
    workers.start(seeded_url, name="c")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 3
    assert row["sha256"] == reference_export.sha256
    assert_settled(seeded_url, export_id, home, workers)


def test_hung_worker_is_rescued_and_cannot_overwrite_when_it_wakes(
    seeded_url: str, home: Path, workers: Workers, reference_export: Reference
) -> None:
    """SIGSTOP: the heartbeat stops, maintenance on another worker re-queues (worker_lost)."""
    export_id = request_export(seeded_url)
    a = workers.start(seeded_url, max_rows_per_s=THROTTLE, name="a")
    wait_rows(seeded_url, export_id, 0.3, timeout=30, workers=workers)
    a.pause()
    workers.start(seeded_url, name="b")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 2
    assert row["sha256"] == reference_export.sha256

    # The hung worker wakes up: its attempt is over and it must not touch the row or files.
    a.resume()
    wait_for(
        "the woken worker to drop its attempt",
        lambda: {"superseded", "no_longer_running_here"} & set(a.events(export_id)),
        timeout=10,
        workers=workers,
    )
    assert a.alive(), "a worker whose attempt was superseded should keep serving"
    after = export_row(seeded_url, export_id)
    assert (after["status"], after["attempt"], after["sha256"]) == (
        "completed",
        2,
        reference_export.sha256,
    )
    assert_settled(seeded_url, export_id, home, workers)
    requeued = audit_details(seeded_url, export_id, "export.requeued")
    assert [d["reason"] for d in requeued] == ["worker_lost"]


def test_stalled_export_is_requeued_and_completes_once_unblocked(
    seeded_url: str, home: Path, workers: Workers, reference_export: Reference
) -> None:
    """The worker is alive (heartbeat fine) but its count waits on a lock: reason stalled."""
    export_id = request_export(seeded_url)
    with psycopg.connect(seeded_url) as locker:
        locker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        workers.start(seeded_url, name="a")
        wait_status(seeded_url, export_id, {"running"}, timeout=30, workers=workers)

        def requeued() -> bool:
            return export_row(seeded_url, export_id)["attempt"] >= 2

        # stall threshold 3 s, maintenance about every second
        wait_for("the stalled export to be re-queued", requeued, timeout=15, workers=workers)
        requeued = audit_details(seeded_url, export_id, "export.requeued")
        assert requeued[0]["reason"] == "stalled"

        # The worker is alive: its cancelled count ends the old job through procrastinate
        # a moment after the rescue commits, never left 'doing'.
        def only_the_new_job_doing() -> bool:
            current = export_row(seeded_url, export_id)["procrastinate_job_id"]
            return doing_jobs(seeded_url, export_id) in ([], [current])

        wait_for("the stalled attempt's job to end", only_the_new_job_doing, timeout=10)
        locker.rollback()
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 2
    assert row["sha256"] == reference_export.sha256
    # The rescue's cancel of the stalled count is not taken for an outage and retried.
    assert "will retry" not in workers.whole_output()
    assert_settled(seeded_url, export_id, home, workers)


def test_stalled_on_the_last_attempt_fails_with_a_clear_code(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    """Locked for good: every attempt stalls, the last one fails as `stalled`."""
    export_id = request_export(seeded_url)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        # Two attempts already spent: the next stall is the last.
        conn.execute("UPDATE export_jobs SET attempt = 3 WHERE id = %s", (export_id,))
    with psycopg.connect(seeded_url) as locker:
        locker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        workers.start(seeded_url, name="a")
        row = wait_status(
            seeded_url, export_id, {"failed", "completed"}, timeout=20, workers=workers
        )
        locker.rollback()
    assert row["status"] == "failed"
    assert row["error_code"] == "stalled"
    assert row["error_message"]
    assert_settled(seeded_url, export_id, home, workers)


def test_worker_killed_between_fetch_and_claim_runs_again(
    seeded_url: str, home: Path, workers: Workers, reference_export: Reference
) -> None:
    """procrastinate marked the job 'doing', then its worker died before the export's claim:
    the export is still queued, and nothing would ever run it without the rescue."""
    export_id = request_export(seeded_url)
    lost_job = export_row(seeded_url, export_id)["procrastinate_job_id"]
    with claim_blocked(seeded_url, export_id) as waiting_at_claim:
        a = workers.start(seeded_url, name="a")
        wait_for("worker a to wait at the claim", waiting_at_claim, timeout=30, workers=workers)
        a.kill()
    row = export_row(seeded_url, export_id)
    assert (row["status"], row["attempt"]) == ("queued", 1)
    assert job_status(seeded_url, lost_job) == "doing"

    workers.start(seeded_url, name="b")
    row = _completed_like_a_calm_export(
        seeded_url, export_id, home, workers, reference_export, attempt=2
    )
    assert row["procrastinate_job_id"] != lost_job
    # procrastinate's job of the dead worker is recorded as failed, not left 'doing'.
    assert job_status(seeded_url, lost_job) == "failed"
    [requeued] = audit_details(seeded_url, export_id, "export.requeued")
    assert requeued["reason"] == "worker_lost"
    assert requeued["attempt"] == 2
    assert (requeued["lost_job_id"], requeued["lost_job_status"]) == (lost_job, "doing")
    assert requeued["procrastinate_job_id"] == row["procrastinate_job_id"]
    assert _audit_actions(seeded_url, export_id)[-1] == "export.completed"


@pytest.mark.parametrize("how", ["deleted", "cancelled"])
def test_export_whose_job_was_removed_by_hand_runs_again(
    seeded_url: str, home: Path, workers: Workers, reference_export: Reference, how: str
) -> None:
    """A DBA deletes the waiting job's row, or cancels it in SQL: the export gets a new job."""
    export_id = request_export(seeded_url)
    lost_job = export_row(seeded_url, export_id)["procrastinate_job_id"]
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        if how == "deleted":
            conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (lost_job,))
        else:
            conn.execute(
                "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE id = %s", (lost_job,)
            )
    workers.start(seeded_url, name="a")
    row = _completed_like_a_calm_export(
        seeded_url, export_id, home, workers, reference_export, attempt=2
    )
    assert row["procrastinate_job_id"] != lost_job
    [requeued] = audit_details(seeded_url, export_id, "export.requeued")
    assert requeued["reason"] == "job_lost"
    expected_status = None if how == "deleted" else "cancelled"
    assert (requeued["lost_job_id"], requeued["lost_job_status"]) == (lost_job, expected_status)
