"""The export and maintenance tasks, declared beside their code for the job app to add."""

from __future__ import annotations

import procrastinate

from ticketexport.domain.exports import MAX_ATTEMPTS
from ticketexport.exports.failures import Transient
from ticketexport.exports.maintenance import run_periodic
from ticketexport.exports.worker import ExportRun
from ticketexport.jobqueue import (
    EXPORT_QUEUE,
    EXPORT_TASK_NAME,
    MAINTENANCE_QUEUE,
    MAINTENANCE_TASK_NAME,
)


def blueprint() -> procrastinate.Blueprint:
    """A new blueprint with both tasks; the app adds it under jobqueue.NAMESPACE."""
    tasks = procrastinate.Blueprint()

    @tasks.task(
        name=EXPORT_TASK_NAME,
        queue=EXPORT_QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(
            max_attempts=MAX_ATTEMPTS - 1,
            exponential_wait=1,
            retry_exceptions={Transient},
        ),
    )
    async def export_tickets(context: procrastinate.JobContext, export_id: str) -> None:
        services = context.additional_context["services"]
        await ExportRun(services, export_id, context.job.id).run()

    @tasks.task(
        name=MAINTENANCE_TASK_NAME,
        queue=MAINTENANCE_QUEUE,
        pass_context=True,
        queueing_lock="ticketexport-maintenance",
    )
    async def maintenance(context: procrastinate.JobContext, timestamp: int) -> None:
        await run_periodic(context.additional_context["services"], context.app)

    return tasks
