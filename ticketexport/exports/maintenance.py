"""Periodic maintenance: rescue crashed or stalled exports, expire files, sweep orphans."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import procrastinate
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ticketexport import audit, events, jobs
from ticketexport.db import VERSIONED_TABLES, q
from ticketexport.domain import exports as rules
from ticketexport.domain.exports import MAX_ATTEMPTS, copy_application_name
from ticketexport.standby import stop_standby_reads
from ticketexport.storage import StorageError

if TYPE_CHECKING:
    from ticketexport.bootstrap import Services

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    orphans_removed: int = 0
    versions_pruned: int = 0


def heartbeat_timeout(services: Services) -> float:
    """A running attempt whose heartbeat is older than this has lost its worker."""
    return max(services.settings.heartbeat_seconds * 3, 2.0)


async def run_maintenance(services: Services) -> Report:
    """One pass; safe to run from many workers at once (rows are claimed SKIP LOCKED)."""
    report = Report()
    await _rescue(services, report)
    await _expire_unfinished(services, report)
    await _expire_completed(services, report)
    await _fail_orphaned_queued(services, report)
    await _sweep_uploads(services, report)
    await _prune_history(services, report)
    return report


async def _rescue(services: Services, report: Report) -> None:
    rescued: list[str] = []
    async with services.pool.connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            q("maintenance_stuck_running"),
            {"heartbeat": heartbeat_timeout(services), "stall": services.settings.stall_seconds},
        )
        for export in await cur.fetchall():
            export_id = str(export["id"])
            reason = export["reason"]
            # Whatever the old attempt is still doing in the database, it stops now.
            await cur.execute(
                q("export_cancel_backends"), {"app": copy_application_name(export_id)}
            )
            if export["procrastinate_job_id"] is not None:
                await cur.execute(
                    q("procrastinate_finish_stale_job"),
                    {"job_id": export["procrastinate_job_id"]},
                )
            if export["attempt"] < MAX_ATTEMPTS:
                await cur.execute(q("export_requeue"), {"id": export_id})
                job_id = await jobs.defer_export(services.jobs, conn, export_id)
                await cur.execute(q("export_set_job_id"), {"id": export_id, "job_id": job_id})
                action, details = (
                    "export.requeued",
                    {
                        "reason": reason,
                        "attempt": export["attempt"] + 1,
                        "rows_done": export["rows_done"],
                        "procrastinate_job_id": job_id,
                    },
                )
                report.requeued += 1
            else:
                await cur.execute(
                    q("export_fail"),
                    {
                        "id": export_id,
                        "attempt": export["attempt"],
                        "code": reason,
                        "message": rules.safe_message(reason),
                    },
                )
                action, details = (
                    "export.failed",
                    {"error_code": reason, "attempt": export["attempt"]},
                )
                report.failed += 1
            await audit.record_for_requester(
                conn,
                action,
                export_id=export_id,
                details={**details, "by": "maintenance"},
            )
            await events.publish(conn, export_id)
            rescued.append(export_id)
            log.warning(
                "rescued a %s export", reason, extra={"export_id": export_id, "action": action}
            )
    for export_id in rescued:
        await stop_standby_reads(services, export_id)


async def _expire_unfinished(services: Services, report: Report) -> None:
    code = "expired_before_completion"
    async with services.pool.connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            q("maintenance_expire_unfinished"), {"code": code, "message": rules.safe_message(code)}
        )
        for export in await cur.fetchall():
            export_id = str(export["id"])
            await cur.execute(
                q("export_cancel_backends"), {"app": copy_application_name(export_id)}
            )
            if export["procrastinate_job_id"] is not None:
                await jobs.abort_job(services.jobs, conn, export["procrastinate_job_id"])
            await audit.record_for_requester(
                conn,
                "export.failed",
                export_id=export_id,
                details={"error_code": code, "attempt": export["attempt"], "by": "maintenance"},
            )
            await events.publish(conn, export_id)
            report.failed += 1


async def _expire_completed(services: Services, report: Report) -> None:
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("maintenance_due_for_expiry"))
        due = await cur.fetchall()
    for export in due:
        export_id = str(export["id"])
        try:
            await services.storage.delete(export["object_key"])
        except (StorageError, OSError):
            log.exception("could not delete an expired export file", extra={"export_id": export_id})
            continue
        async with services.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(q("export_expire"), {"id": export_id})
            if await cur.fetchone() is None:
                continue
            await audit.record_for_requester(
                conn,
                "export.expired",
                export_id=export_id,
                details={"object_key": export["object_key"], "by": "maintenance"},
            )
            await events.publish(conn, export_id)
        report.expired += 1


async def _fail_orphaned_queued(services: Services, report: Report) -> None:
    """Queued exports whose job ended without running them (it failed before the claim)."""
    code = "internal"
    async with services.pool.connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            q("maintenance_fail_orphaned_queued"),
            {"code": code, "message": rules.safe_message(code)},
        )
        for export in await cur.fetchall():
            await audit.record_for_requester(
                conn,
                "export.failed",
                export_id=str(export["id"]),
                details={"error_code": code, "reason": "job_lost", "by": "maintenance"},
            )
            await events.publish(conn, str(export["id"]))
            report.failed += 1


async def _sweep_uploads(services: Services, report: Report) -> None:
    """Unfinished uploads that no running attempt owns are removed."""
    try:
        pending = await services.storage.pending_uploads("exports/")
    except (StorageError, OSError):
        log.exception("could not list unfinished uploads")
        return
    if not pending:
        return
    owners: dict[str, tuple[str, int]] = {}
    for key in pending:
        parts = key.split("/")
        if len(parts) >= 3 and parts[2].isdigit():
            owners[key] = (parts[1], int(parts[2]))
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            q("maintenance_running_attempts"),
            {"ids": sorted({owner[0] for owner in owners.values()})},
        )
        running = {(str(row[0]), int(row[1])) for row in await cur.fetchall()}
    for key in pending:
        if owners.get(key) in running:
            continue
        try:
            # Only the unfinished upload: the attempt may have completed since the listing,
            # and its finished file must stay.
            await services.storage.abort_uploads(key)
            report.orphans_removed += 1
        except (StorageError, OSError):
            log.exception("could not remove an orphan upload", extra={"object_key": key})


async def run_periodic(services: Services, app: procrastinate.App) -> None:
    """The periodic task's body: one pass, then prune the queue's finished maintenance jobs."""
    try:
        report = await run_maintenance(services)
    except (psycopg.OperationalError, OSError):
        log.warning("maintenance skipped: database unavailable")
        return
    if report != Report():
        log.info("maintenance", extra=dataclasses.asdict(report))
    # Our own periodic runs would otherwise pile up in procrastinate_jobs.
    await app.job_manager.delete_old_jobs(
        nb_hours=1, queue=jobs.MAINTENANCE_QUEUE, include_failed=True, include_cancelled=True
    )


async def _prune_history(services: Services, report: Report) -> None:
    """Delete row versions that no unfinished export, and no later one, can read.

    The horizon snapshot and the unfinished exports' snapshots are read once requests in
    flight have committed (each holds the shared side of the lock from before it records
    its snapshot), so a request that records its snapshot later sees every transaction the
    horizon sees: the versions those superseded are gone for it too. Versions written after
    an unfinished export's snapshot are not visible to it either, so a long run of updates
    while exports wait keeps history bounded, whatever long transactions run elsewhere.
    """
    async with services.pool.connection() as conn, conn.transaction():
        await conn.execute(q("history_horizon_lock"))
        cur = await conn.execute(q("history_horizon"))
        row = await cur.fetchone()
    assert row is not None
    horizon, snapshots = row
    for table in VERSIONED_TABLES:
        statement = q("history_prune").format(history=sql.Identifier(f"{table}_history"))
        async with services.pool.connection() as conn:
            cur = await conn.execute(statement, {"horizon": horizon, "snapshots": snapshots})
            report.versions_pruned += cur.rowcount
