"""The procrastinate application: the tasks of exports/ on a connector, and their schedule."""

from __future__ import annotations

import atexit
import contextlib
import functools
from pathlib import Path

import procrastinate

from ticketexport.config import Settings
from ticketexport.exports import tasks
from ticketexport.jobqueue import (
    MAINTENANCE_PERIODIC_ID,
    MAINTENANCE_TASK,
    NAMESPACE,
    SCHEDULE_TICK_PERIODIC_ID,
    SCHEDULE_TICK_SECONDS,
    SCHEDULE_TICK_TASK,
    cron_for,
    maintenance_interval,
)
from ticketexport.schedules import tasks as schedule_tasks


def build_app(connector: procrastinate.PsycopgConnector) -> procrastinate.App:
    """A procrastinate App with the project's tasks, on `connector`.

    Each process builds its own (the composition root opens it on the process's pool); the
    module-level `app` below is the one procrastinate's command line loads. Each app gets a
    blueprint of its own: adding one renames its tasks and binds them to that app.
    """
    app = procrastinate.App(connector=connector)
    app.add_tasks_from(tasks.blueprint(), namespace=NAMESPACE)
    app.add_tasks_from(schedule_tasks.blueprint(), namespace=NAMESPACE)
    return app


def schedule_maintenance(app: procrastinate.App, settings: Settings) -> None:
    """Run maintenance periodically on the workers of `app`, at the settings' interval, and
    the schedules' ticker every few seconds."""
    app.periodic(
        cron=cron_for(maintenance_interval(settings)), periodic_id=MAINTENANCE_PERIODIC_ID
    )(app.tasks[MAINTENANCE_TASK])
    app.periodic(cron=cron_for(SCHEDULE_TICK_SECONDS), periodic_id=SCHEDULE_TICK_PERIODIC_ID)(
        app.tasks[SCHEDULE_TICK_TASK]
    )


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
