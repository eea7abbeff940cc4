"""What a process runs on: the settings, pools, store and job queue the composition root opened."""

from __future__ import annotations

import dataclasses
from typing import Any

import procrastinate
from psycopg_pool import AsyncConnectionPool

from ticketexport import events
from ticketexport.config import Settings
from ticketexport.storage import Storage
from ticketexport.storage.marker import Installation


@dataclasses.dataclass(frozen=True)
class Services:
    """What the process's web handlers, use cases, jobs and maintenance are given."""

    settings: Settings
    database_url: str
    pool: AsyncConnectionPool[Any]
    storage: Storage
    jobs: procrastinate.App
    # This database's installation id and identity: whose store it is (storage.marker).
    installation: Installation
    # Only in processes that serve the web: the one LISTEN connection, fanned out.
    hub: events.EventHub | None = None
    # The hot standby exports read from (TICKETEXPORT_EXPORT_DATABASE_URL), for replay
    # checks and lag reports; the exports' own statements run on connections of their own.
    standby_pool: AsyncConnectionPool[Any] | None = None
