"""The procrastinate application: the export task and periodic maintenance, for workers."""

from __future__ import annotations

import procrastinate

from ticketexport.config import Settings


def maintenance_interval(settings: Settings) -> float:
    """Often enough to notice a lost worker or a stall soon after its threshold."""
    return max(1.0, min(settings.stall_seconds / 3, settings.heartbeat_seconds * 3, 30.0))


def build_app(database_url: str, settings: Settings) -> procrastinate.App:
    """A procrastinate App on its own small pool (opened by the caller with open_async)."""
    from ticketexport.exports import maintenance, worker

    connector = procrastinate.PsycopgConnector(conninfo=database_url, min_size=1, max_size=4)
    app = procrastinate.App(connector=connector)
    app.add_tasks_from(worker.blueprint, namespace="ticketexport")
    maintenance.register(app, maintenance_interval(settings))
    return app
