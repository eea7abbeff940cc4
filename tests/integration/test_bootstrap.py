"""The composition root and procrastinate: pooled connections, atomic defer and cancel, and
procrastinate's own command line against the project's app."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.services import actor_for, services_for
from tests.support.web import make_user
from ticketexport import audit, jobqueue
from ticketexport.domain.permissions import Permission
from ticketexport.exports import service
from ticketexport.views.model import ListRequest

REQUEST = ListRequest(view="all", q="", sort=None, filters={}, page=None)
EXPORTER = "exporter@example.com"


@pytest.fixture
def exporter(conn: psycopg.Connection[Any]) -> str:
    make_user(conn, EXPORTER, permissions=int(Permission.IMPORT_EXPORT_TICKETS), admin=True)
    return EXPORTER


def _job(conn: psycopg.Connection[Any], export_id: str) -> tuple[str, str, bool]:
    row = conn.execute(
        "SELECT e.status, j.status::text, j.abort_requested FROM export_jobs e "
        "JOIN procrastinate_jobs j ON j.id = e.procrastinate_job_id WHERE e.id = %s",
        (export_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_checkouts_of_live_connections_cost_no_round_trip(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[int] = []
    execute = psycopg.AsyncConnection.execute

    async def counting_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "":  # the pool's liveness check is an empty query
            pings.append(self.info.backend_pid)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", counting_execute)
    async with services_for(db_url) as services:
        for _ in range(5):
            async with services.pool.connection() as conn:
                await conn.execute("SELECT 1")
        assert pings == [], "a live idle connection was pinged before use"


async def test_a_connection_the_server_closed_is_never_handed_out(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async with services_for(db_url) as services:
        async with services.pool.connection() as pooled:
            cur = await pooled.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
        assert row is not None
        dead_pid = row[0]
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (dead_pid,))
        # The server's goodbye reaches the socket once the backend has gone.
        for _ in range(100):
            gone = conn.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", (dead_pid,)
            ).fetchone()
            if gone == (True,):
                break
            await asyncio.sleep(0.05)
        async with services.pool.connection() as pooled:
            cur = await pooled.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
        assert row is not None
        assert row[0] != dead_pid


async def test_the_export_and_its_job_commit_together(
    db_url: str, conn: psycopg.Connection[Any], exporter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the job is deferred rolls the job back with the export row."""
    user = actor_for(db_url, exporter)

    async def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("the process died here")

    async with services_for(db_url) as services:
        monkeypatch.setattr(audit, "record", crash)
        with pytest.raises(RuntimeError):
            await service.request_export(services, user, REQUEST, client_ip=None)
    assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (0,)


@pytest.mark.parametrize("crash_at", ["before_abort", "after_abort"])
async def test_a_cancel_interrupted_half_way_changes_nothing(
    db_url: str,
    conn: psycopg.Connection[Any],
    exporter: str,
    monkeypatch: pytest.MonkeyPatch,
    crash_at: str,
) -> None:
    """The export is marked cancelled and its job's abort requested in one transaction: a
    crash between the two steps leaves neither, so no cancelled export's job runs on."""
    user = actor_for(db_url, exporter)
    async with services_for(db_url) as services:
        requested = await service.request_export(services, user, REQUEST, client_ip=None)
        job_id = conn.execute(
            "SELECT procrastinate_job_id FROM export_jobs WHERE id = %s", (requested.export_id,)
        ).fetchone()
        # Running, as a worker would have it, so the abort must reach a live task.
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", job_id)
        conn.execute(
            "UPDATE export_jobs SET status = 'running', started_at = now() WHERE id = %s",
            (requested.export_id,),
        )

        async def crash(*_: Any, **__: Any) -> None:
            raise RuntimeError("the process died here")

        if crash_at == "before_abort":
            monkeypatch.setattr(jobqueue, "abort_job", crash)
        else:
            monkeypatch.setattr(audit, "record", crash)
        with pytest.raises(RuntimeError):
            await service.cancel_export(services, user, requested.export_id, client_ip=None)
        assert _job(conn, requested.export_id) == ("running", "doing", False)

        monkeypatch.undo()
        await service.cancel_export(services, user, requested.export_id, client_ip=None)
    assert _job(conn, requested.export_id) == ("cancelled", "doing", True)


def _procrastinate(db_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")}
    env.update({"DATABASE_URL": db_url, "TICKETEXPORT_HOME": str(home)})
    return subprocess.run(
        [sys.executable, "-m", "procrastinate", "--app=ticketexport.jobs.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_procrastinates_command_line_loads_the_app(
    db_url: str, exporter: str, tmp_path: Path
) -> None:
    checked = _procrastinate(db_url, tmp_path, "healthchecks")
    assert checked.returncode == 0, checked.stderr
    assert "DB connection: OK" in checked.stdout
    assert "Found procrastinate_jobs table: OK" in checked.stdout

    async with services_for(db_url) as services:
        requested = await service.request_export(
            services, actor_for(db_url, exporter), REQUEST, client_ip=None
        )
    listed = _procrastinate(db_url, tmp_path, "shell", "list_jobs", "queue=exports")
    assert listed.returncode == 0, listed.stderr
    assert f"{jobqueue.EXPORT_TASK} on exports - [todo]" in listed.stdout
    tasks = _procrastinate(db_url, tmp_path, "shell", "list_tasks")
    assert jobqueue.EXPORT_TASK in tasks.stdout
    assert requested.export_id
