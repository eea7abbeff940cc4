"""The job queue as the use cases see it: task and queue names, deferring by name, job states."""

from __future__ import annotations

from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg

from ticketexport.config import Settings

# The tasks are declared in exports/tasks.py by their short names and added to the app
# under NAMESPACE, which makes these full names.
NAMESPACE = "ticketexport"
EXPORT_TASK_NAME = "export_tickets"
MAINTENANCE_TASK_NAME = "maintenance"
EXPORT_TASK = f"{NAMESPACE}:{EXPORT_TASK_NAME}"
MAINTENANCE_TASK = f"{NAMESPACE}:{MAINTENANCE_TASK_NAME}"
EXPORT_QUEUE = "exports"
MAINTENANCE_QUEUE = "maintenance"
MAINTENANCE_PERIODIC_ID = "export-maintenance"
SCHEDULE_TICK_TASK_NAME = "schedule_tick"
SCHEDULE_TICK_TASK = f"{NAMESPACE}:{SCHEDULE_TICK_TASK_NAME}"
SCHEDULE_TICK_PERIODIC_ID = "schedule-ticker"
# Ticks fall on whole minutes; the ticker looks this often, so a run starts within seconds.
SCHEDULE_TICK_SECONDS = 5
DELIVERY_TASK_NAME = "deliver_runs"
DELIVERY_TASK = f"{NAMESPACE}:{DELIVERY_TASK_NAME}"


def maintenance_interval(settings: Settings) -> float:
    """Often enough to notice a lost worker or a stall soon after its threshold."""
    return max(1.0, min(settings.stall_seconds / 3, settings.heartbeat_seconds * 3, 30.0))


def cron_for(seconds: float) -> str:
    """Every `seconds` (1–59) as a six-field cron (croniter's seconds field comes last)."""
    step = max(1, min(59, round(seconds)))
    return f"* * * * * */{step}"


async def defer_export(
    app: procrastinate.App, conn: psycopg.AsyncConnection[Any], export_id: str
) -> int:
    """Defer the export's job on `conn`, in the caller's transaction (one commit or neither).

    By the task's name: the task lives with its code in exports/, which this module, used
    by that code, does not import.
    """
    task = app.configure_task(EXPORT_TASK, allow_unknown=False, connection=conn)
    return await task.defer_async(export_id=export_id)


async def abort_job(
    app: procrastinate.App, conn: psycopg.AsyncConnection[Any], job_id: int
) -> None:
    """Cancel a waiting job, or ask the worker running it to abort, in the caller's
    transaction (the worker is notified when it commits)."""
    await app.job_manager.cancel_job_by_id_async(job_id, abort=True, connection=conn)


async def stalled_jobs(
    app: procrastinate.App, seconds_since_heartbeat: float
) -> list[procrastinate.jobs.Job]:
    """Jobs marked 'doing' whose worker is gone: silent for `seconds_since_heartbeat`, or
    already pruned by procrastinate. Every queue: a lost job of any task can hold a lock
    that the jobs behind it wait on."""
    found = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=seconds_since_heartbeat)
    return list(found)


async def live_export_jobs(app: procrastinate.App) -> set[int]:
    """Ids of the export jobs a worker may still run: waiting ('todo') or taken ('doing').

    Two listings, not one snapshot: a job put back for a retry between them shows in
    neither, so callers confirm a job missing here with `job_status` before acting.
    """
    ids: set[int] = set()
    for status in (procrastinate.jobs.Status.TODO, procrastinate.jobs.Status.DOING):
        listed = await app.job_manager.list_jobs_async(
            queue=EXPORT_QUEUE, task=EXPORT_TASK, status=status.value
        )
        ids.update(job.id for job in listed if job.id is not None)
    return ids


async def job_status(app: procrastinate.App, job_id: int) -> procrastinate.jobs.Status | None:
    """The job's status now, or None when its row is gone."""
    found = [job.status for job in await app.job_manager.list_jobs_async(id=job_id)]
    return procrastinate.jobs.Status(found[0]) if found else None


async def retire_job(app: procrastinate.App, job_id: int) -> bool:
    """Record as failed a stalled job whose worker is gone: that worker would have recorded
    its outcome, and nothing else will. False when the job had ended meanwhile (another
    maintenance run retired it, or its worker was only slow and finished it)."""
    try:
        await app.job_manager.finish_job_by_id_async(
            job_id, status=procrastinate.jobs.Status.FAILED, delete_job=False
        )
    except procrastinate.exceptions.ConnectorException as exc:
        # procrastinate_finish_job_v1 raises when the job is no longer todo or doing.
        if isinstance(exc.__cause__, psycopg.errors.RaiseException):
            return False
        raise
    return True
