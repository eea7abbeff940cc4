"""Maintenance finds every queued export whose job can no longer run it, and every job whose
worker is gone, with procrastinate's own workers and job calls against a real database."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.databases import Seeding
from tests.support.services import actor_for, services_for
from tests.support.workers import audit_details
from ticketexport import jobqueue
from ticketexport.domain.exports import MAX_ATTEMPTS
from ticketexport.exports import maintenance, service
from ticketexport.exports.worker import ExportRun
from ticketexport.services import Services
from ticketexport.views.model import ListRequest

Status = procrastinate.jobs.Status


@pytest.fixture
def seeding() -> Seeding:
    """The data behind `seeded_url` in this module: 300 seeded tickets."""
    return Seeding(tickets=300, seed=5, anchor=dt.date(2026, 6, 1))


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """A worker process's services, with the default heartbeat and stall settings: a
    worker is gone after 30 s of silence (the tests backdate heartbeats by an hour), so no
    live worker or attempt here can look lost however slowly the test runs."""
    env = {"TICKETEXPORT_HEARTBEAT_SECONDS": "10", "TICKETEXPORT_STALL_SECONDS": "300"}
    async with services_for(seeded_url, tmp_path, env=env) as services:
        yield services


async def _request(deps: Services, sort: str = "newest") -> tuple[str, int]:
    """An Export click; returns the export id and its procrastinate job id."""
    request = ListRequest(view="all", q="", sort=sort, filters={}, page=None)
    requested = await service.request_export(
        deps, actor_for(deps.database_url), request, client_ip=None
    )
    export = _export(deps, requested.export_id)
    return requested.export_id, int(export["procrastinate_job_id"])


def _export(deps: Services, export_id: str) -> dict[str, Any]:
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        row = (
            conn.cursor(row_factory=dict_row)
            .execute("SELECT * FROM export_jobs WHERE id = %s", (export_id,))
            .fetchone()
        )
    assert row is not None
    return row


def _job(deps: Services, job_id: int) -> dict[str, Any] | None:
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT id, status::text, queue_name, task_name, args, lock "
                "FROM procrastinate_jobs WHERE id = %s",
                (job_id,),
            )
            .fetchone()
        )


def _suspects(deps: Services) -> dict[str, str]:
    """export_suspect as a DBA reads it: export id → why it is listed."""
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT export_id::text, suspect_reason FROM export_suspect")
        return {str(r[0]): str(r[1]) for r in rows.fetchall()}


def _audited(deps: Services, export_id: str, action: str) -> list[dict[str, Any]]:
    return audit_details(deps.database_url, export_id, action)


async def _take(deps: Services, queue: str = jobqueue.EXPORT_QUEUE) -> tuple[int, int]:
    """A procrastinate worker registers and fetches the next job of `queue`, as a worker
    process does before it runs the task; returns (worker id, job id)."""
    manager = deps.jobs.job_manager
    worker_id = await manager.register_worker()
    job = await manager.fetch_job(queues=[queue], worker_id=worker_id)
    assert job is not None
    assert job.id is not None
    return worker_id, job.id


def _silence(deps: Services, worker_id: int) -> None:
    """The worker stops heartbeating (killed): its last heartbeat is an hour old."""
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
            "WHERE id = %s",
            (worker_id,),
        )


async def _deleted(deps: Services, job_id: int) -> None:
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (job_id,))


async def _cancelled(deps: Services, job_id: int) -> None:
    # What `procrastinate … shell` cancel does to a waiting job.
    assert await deps.jobs.job_manager.cancel_job_by_id_async(job_id)


def _ended(status: Status) -> Callable[[Services, int], Awaitable[None]]:
    async def end(deps: Services, job_id: int) -> None:
        # A worker took the job and recorded this outcome without claiming the export
        # (its task failed before the claim, say, or a DBA marked it by hand).
        worker_id, taken = await _take(deps)
        assert taken == job_id
        await deps.jobs.job_manager.finish_job_by_id_async(job_id, status, delete_job=False)
        await deps.jobs.job_manager.unregister_worker(worker_id)

    return end


async def _worker_silent(deps: Services, job_id: int) -> None:
    worker_id, taken = await _take(deps)
    assert taken == job_id
    _silence(deps, worker_id)


async def _worker_pruned(deps: Services, job_id: int) -> None:
    # A worker starting elsewhere prunes the silent one: the job keeps no worker at all.
    worker_id, taken = await _take(deps)
    assert taken == job_id
    _silence(deps, worker_id)
    assert worker_id in await deps.jobs.job_manager.prune_stalled_workers(60)
    job = _job(deps, job_id)
    assert job is not None
    assert job["status"] == "doing"


# how the job was lost → (requeue reason, the lost job's status, export_suspect's reason)
LOSSES: dict[str, tuple[Callable[[Services, int], Awaitable[None]], str, str | None, str]] = {
    "deleted": (_deleted, "job_lost", None, "job_missing"),
    "cancelled": (_cancelled, "job_lost", "cancelled", "job_finished"),
    "failed": (_ended(Status.FAILED), "job_lost", "failed", "job_finished"),
    "succeeded": (_ended(Status.SUCCEEDED), "job_lost", "succeeded", "job_finished"),
    "aborted": (_ended(Status.ABORTED), "job_lost", "aborted", "job_finished"),
    "worker_silent": (_worker_silent, "worker_lost", "doing", "worker_lost"),
    "worker_pruned": (_worker_pruned, "worker_lost", "doing", "worker_lost"),
}


@pytest.mark.parametrize("how", list(LOSSES))
async def test_a_queued_export_whose_job_was_lost_runs_again_on_a_new_job(
    deps: Services, how: str
) -> None:
    lose, reason, lost_status, suspect = LOSSES[how]
    export_id, lost_job = await _request(deps)
    assert _suspects(deps) == {}
    await lose(deps, lost_job)
    # While it waits for the rescue, the DBA view says why it is stuck.
    assert _suspects(deps) == {export_id: suspect}

    report = await maintenance.run_maintenance(deps)

    assert (report.requeued, report.failed) == (1, 0)
    export = _export(deps, export_id)
    assert (export["status"], export["attempt"]) == ("queued", 2)
    new_job = export["procrastinate_job_id"]
    assert new_job != lost_job
    job = _job(deps, new_job)
    assert job is not None
    assert (job["status"], job["queue_name"], job["task_name"], job["args"]) == (
        "todo",
        jobqueue.EXPORT_QUEUE,
        jobqueue.EXPORT_TASK,
        {"export_id": export_id},
    )
    assert _audited(deps, export_id, "export.requeued") == [
        {
            "reason": reason,
            "attempt": 2,
            "rows_done": 0,
            "procrastinate_job_id": new_job,
            "lost_job_id": lost_job,
            "lost_job_status": lost_status,
            "by": "maintenance",
        }
    ]
    if reason == "worker_lost":
        # The dead worker's job is recorded as failed: nothing shows it as running.
        assert report.jobs_retired == 1
        assert (_job(deps, lost_job) or {}).get("status") == "failed"
    else:
        assert report.jobs_retired == 0
    assert _suspects(deps) == {}

    # Nothing more to do on the next pass; the new job runs the export's second attempt.
    assert await maintenance.run_maintenance(deps) == maintenance.Report()
    await ExportRun(deps, export_id, new_job).run()
    export = _export(deps, export_id)
    assert (export["status"], export["attempt"]) == ("completed", 2)


@pytest.mark.parametrize(
    ("how", "code"), [("deleted", "internal"), ("worker_silent", "worker_lost")]
)
async def test_a_lost_job_on_the_last_attempt_fails_the_export(
    deps: Services, how: str, code: str
) -> None:
    lose, reason, lost_status, _ = LOSSES[how]
    export_id, lost_job = await _request(deps)
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        # Two attempts already spent on lost workers.
        conn.execute("UPDATE export_jobs SET attempt = %s WHERE id = %s", (MAX_ATTEMPTS, export_id))
    await lose(deps, lost_job)

    report = await maintenance.run_maintenance(deps)

    assert (report.requeued, report.failed) == (0, 1)
    export = _export(deps, export_id)
    assert (export["status"], export["error_code"]) == ("failed", code)
    assert export["error_message"]
    assert export["finished_at"] is not None
    assert export["procrastinate_job_id"] == lost_job
    expected: dict[str, Any] = {
        "error_code": code,
        "attempt": MAX_ATTEMPTS,
        "lost_job_id": lost_job,
        "lost_job_status": lost_status,
        "by": "maintenance",
    }
    if reason != code:
        expected["reason"] = reason
    assert _audited(deps, export_id, "export.failed") == [expected]
    assert _audited(deps, export_id, "export.requeued") == []


async def test_a_job_waiting_behind_a_lock_held_by_a_lost_worker_is_freed(deps: Services) -> None:
    """A job that a dead worker took keeps its lock; the jobs sharing that lock would wait
    forever. Maintenance records the stalled holder as failed, which frees them."""
    manager = deps.jobs.job_manager
    holder = (
        await deps.jobs.tasks[jobqueue.MAINTENANCE_TASK]
        .configure(lock="shared")
        .defer_async(timestamp=0)
    )
    worker_id, taken = await _take(deps, jobqueue.MAINTENANCE_QUEUE)
    assert taken == holder
    _silence(deps, worker_id)
    export_id, waiting_job = await _request(deps)
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET lock = 'shared' WHERE id = %s", (waiting_job,))
    live = await manager.register_worker()
    assert await manager.fetch_job(queues=[jobqueue.EXPORT_QUEUE], worker_id=live) is None
    assert _suspects(deps) == {export_id: "lock_held_by_lost_worker"}

    report = await maintenance.run_maintenance(deps)

    assert (report.requeued, report.failed, report.jobs_retired) == (0, 0, 1)
    assert (_job(deps, holder) or {}).get("status") == "failed"
    # The export keeps its own job, which can run now.
    export = _export(deps, export_id)
    assert (export["status"], export["attempt"], export["procrastinate_job_id"]) == (
        "queued",
        1,
        waiting_job,
    )
    assert _suspects(deps) == {}
    fetched = await manager.fetch_job(queues=[jobqueue.EXPORT_QUEUE], worker_id=live)
    assert fetched is not None
    assert fetched.id == waiting_job


async def test_jobs_that_can_still_run_are_left_alone(deps: Services) -> None:
    """Waiting, or taken by a live worker and about to be claimed: nothing to rescue."""
    waiting_id, waiting_job = await _request(deps, sort="newest")
    taken_id, taken_job = await _request(deps, sort="oldest")
    _, fetched = await _take(deps)
    assert fetched == waiting_job  # oldest first; the next one is taken below
    _, fetched = await _take(deps)
    assert fetched == taken_job
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        # The first goes back to waiting, as procrastinate's retry would put it.
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL WHERE id = %s",
            (waiting_job,),
        )

    report = await maintenance.run_maintenance(deps)

    assert report == maintenance.Report()
    for export_id, job_id in ((waiting_id, waiting_job), (taken_id, taken_job)):
        export = _export(deps, export_id)
        assert (export["status"], export["attempt"], export["procrastinate_job_id"]) == (
            "queued",
            1,
            job_id,
        )
    assert _suspects(deps) == {}


async def test_a_running_attempt_outliving_its_workers_heartbeat_is_judged_by_its_own(
    deps: Services,
) -> None:
    """procrastinate's worker heartbeat stopped (a database outage stops it) but the
    export's attempt still records progress: neither the export nor its job is touched.
    Once the attempt's own heartbeat stops too, the export is re-queued and the job
    retired in the same pass."""
    export_id, job_id = await _request(deps)
    worker_id, taken = await _take(deps)
    assert taken == job_id
    _silence(deps, worker_id)
    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET status = 'running', heartbeat_at = now(), "
            "progress_at = now() WHERE id = %s",
            (export_id,),
        )

    report = await maintenance.run_maintenance(deps)

    assert report == maintenance.Report()
    assert (_job(deps, job_id) or {}).get("status") == "doing"
    assert _export(deps, export_id)["status"] == "running"
    # A DBA sees it: its worker is silent.
    assert _suspects(deps) == {export_id: "worker_lost"}

    with psycopg.connect(deps.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
            (export_id,),
        )
    report = await maintenance.run_maintenance(deps)

    assert (report.requeued, report.jobs_retired) == (1, 1)
    export = _export(deps, export_id)
    assert (export["status"], export["attempt"]) == ("queued", 2)
    assert export["procrastinate_job_id"] != job_id
    assert (_job(deps, job_id) or {}).get("status") == "failed"
    assert [d["reason"] for d in _audited(deps, export_id, "export.requeued")] == ["worker_lost"]


async def test_an_export_being_claimed_is_rescued_only_after_the_claim_lets_go(
    deps: Services,
) -> None:
    """A worker's claim holds the export's row: maintenance passes over it meanwhile."""
    export_id, job_id = await _request(deps)
    await _deleted(deps, job_id)
    with psycopg.connect(deps.database_url) as claim:
        claim.execute("SELECT 1 FROM export_jobs WHERE id = %s FOR UPDATE", (export_id,))
        report = await maintenance.run_maintenance(deps)
        assert report.requeued == 0
        assert _export(deps, export_id)["attempt"] == 1
        claim.rollback()
    report = await maintenance.run_maintenance(deps)
    assert report.requeued == 1
    assert _export(deps, export_id)["attempt"] == 2
