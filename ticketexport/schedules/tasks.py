"""The schedule tasks: the periodic ticker, and the deliveries it hands to the workers."""

from __future__ import annotations

import contextlib
import logging

import procrastinate
import procrastinate.exceptions

from ticketexport.jobqueue import (
    DELIVERY_TASK,
    DELIVERY_TASK_NAME,
    EXPORT_QUEUE,
    MAINTENANCE_QUEUE,
    SCHEDULE_TICK_TASK_NAME,
)
from ticketexport.schedules.delivery import deliver_pending, notify_pending, waiting
from ticketexport.schedules.ticker import run_due

log = logging.getLogger(__name__)

DELIVERY_LOCK = "ticketexport-deliveries"


def blueprint() -> procrastinate.Blueprint:
    """A new blueprint with the ticker and the delivery task."""
    tasks = procrastinate.Blueprint()

    @tasks.task(
        name=SCHEDULE_TICK_TASK_NAME,
        queue=MAINTENANCE_QUEUE,
        pass_context=True,
        queueing_lock="ticketexport-schedule-tick",
    )
    async def schedule_tick(context: procrastinate.JobContext, timestamp: int) -> None:
        services = context.additional_context["services"]
        await run_due(services)
        if not await waiting(services):
            return
        # Deliveries and messages take as long as the destination does: on the export
        # workers, one job at a time, never in the way of the next tick.
        with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
            await context.app.configure_task(
                DELIVERY_TASK, queueing_lock=DELIVERY_LOCK
            ).defer_async()

    @tasks.task(name=DELIVERY_TASK_NAME, queue=EXPORT_QUEUE, pass_context=True)
    async def deliveries(context: procrastinate.JobContext) -> None:
        services = context.additional_context["services"]
        await deliver_pending(services)
        await notify_pending(services)

    return tasks
