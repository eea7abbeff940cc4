"""The procrastinate application: the export task, periodic maintenance, and how to defer."""

from __future__ import annotations

import atexit
import contextlib
import functools
from pathlib import Path
from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg

from ticketexport.config import Settings
from ticketexport.domain.exports import MAX_ATTEMPTS
from ticketexport.exports.failures import Transient

EXPORT_TASK = "ticketexport:export_tickets"
MAINTENANCE_TASK = "ticketexport:maintenance"
EXPORT_QUEUE = "exports"
MAINTENANCE_QUEUE = "maintenance"
MAINTENANCE_PERIODIC_ID = "export-maintenance"


def maintenance_interval(settings: Settings) -> float:
    """Often enough to notice a lost worker or a stall soon after its threshold."""
    return max(1.0, min(settings.stall_seconds / 3, settings.heartbeat_seconds * 3, 30.0))


def cron_for(seconds: float) -> str:
    """Every `seconds` (1–59) as a six-field cron (croniter's seconds field comes last)."""
    step = max(1, min(59, round(seconds)))
    return f"* * * * * */{step}"


def build_app(connector: procrastinate.PsycopgConnector) -> procrastinate.App:
    """A procrastinate App with the project's tasks, on `connector`.

    Each process builds its own (the composition root opens it on the process's pool); the
    module-level `app` below is the one procrastinate's command line loads. Task bodies
    import their implementation when they run, so deferring a job needs nothing but this
    module.
    """
    app = procrastinate.App(connector=connector)

    @app.task(
        name=EXPORT_TASK,
        queue=EXPORT_QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(
            max_attempts=MAX_ATTEMPTS - 1,
            exponential_wait=1,
            retry_exceptions={Transient},
        ),
    )
    async def export_tickets(context: procrastinate.JobContext, export_id: str) -> None:
        from ticketexport.exports.worker import ExportRun

        services = context.additional_context["services"]
        await ExportRun(services, export_id, context.job.id).run()

    @app.task(
        name=MAINTENANCE_TASK,
        queue=MAINTENANCE_QUEUE,
        pass_context=True,
        queueing_lock="ticketexport-maintenance",
    )
    async def maintenance(context: procrastinate.JobContext, timestamp: int) -> None:
        from ticketexport.exports.maintenance import run_periodic

        await run_periodic(context.additional_context["services"], context.app)

    return app


def schedule_maintenance(app: procrastinate.App, settings: Settings) -> None:
    """Run maintenance periodically on the workers of `app`, at the settings' interval."""
    app.periodic(
        cron=cron_for(maintenance_interval(settings)), periodic_id=MAINTENANCE_PERIODIC_ID
    )(app.tasks[MAINTENANCE_TASK])


async def defer_export(
    app: procrastinate.App, conn: psycopg.AsyncConnection[Any], export_id: str
) -> int:
    """Defer the export's job on `conn`, in the caller's transaction (one commit or neither)."""
    task = app.tasks[EXPORT_TASK]
    return await task.configure(connection=conn).defer_async(export_id=export_id)


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


# procrastinate's own command line -------------------------------------------------------


@functools.cache
def _embedded_url(home: str) -> str:
    """The embedded server under the home, started or joined for the rest of this process."""
    from ticketexport.embedded import embedded_database

    stack = contextlib.ExitStack()
    url = stack.enter_context(embedded_database(Path(home)))
    atexit.register(stack.close)
    return url


def _conninfo_from_environment() -> str:
    """Read when the first connection is made, not at import, so loading the app for
    `procrastinate --app=ticketexport.jobs.app …` needs no database and no settings."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings.database_url
    return _embedded_url(str(settings.home))


# `procrastinate --app=ticketexport.jobs.app healthchecks` (or `shell`) uses this one.
app = build_app(
    procrastinate.PsycopgConnector(conninfo=_conninfo_from_environment, min_size=1, max_size=2)
)
