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
from ticketexport.storage import PROBE_PREFIX, StorageError, marker, probe_is_stale

if TYPE_CHECKING:
    from ticketexport.bootstrap import Services

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    # Expired exports whose file could not be deleted this run (retried on the next).
    cleanup_failures: int = 0
    orphans_removed: int = 0
    probes_removed: int = 0
    jobs_pruned: int = 0
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
    await _sweep_storage(services, report)
    await _prune_export_jobs(services, report)
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
    """Delete each expired export's file, then mark its media item and export expired.

    One export at a time, its row locked (SKIP LOCKED) from before the delete until the
    marks commit: two runs never clean the same export, and a run that dies half-way leaves
    the row completed, so the next run deletes again (a missing object is no error) and
    marks it. A file that cannot be deleted is counted on its row and passed over until the
    next run; the others go on. Nothing is deleted from a store that is not this
    database's (its exports stay completed, and answer 410, until it is).
    """
    if not await _store_is_ours(services):
        return
    failed: list[str] = []
    while True:
        async with services.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("maintenance_claim_expired"), {"skip": failed})
            export = await cur.fetchone()
            if export is None:
                return
            export_id = str(export["id"])
            try:
                await services.storage.delete(export["object_key"])
            except (StorageError, OSError):
                log.exception(
                    "could not delete an expired export file; retrying on the next run",
                    extra={"export_id": export_id, "object_key": export["object_key"]},
                )
                await cur.execute(q("export_cleanup_failed"), {"id": export_id})
                failed.append(export_id)
                report.cleanup_failures += 1
                continue
            await cur.execute(q("media_item_expire"), {"id": export["media_item_id"]})
            await cur.execute(q("export_expire"), {"id": export_id})
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


async def _store_is_ours(services: Services) -> bool:
    """Whether the store's marker names this database: maintenance deletes nothing from a
    store that is not (another installation's, or a restored copy's) or cannot say."""
    try:
        reason = await marker.foreign(services.storage, services.installation)
    except (StorageError, OSError):
        log.exception("could not read the store's installation marker; deleting nothing")
        return False
    if reason is not None:
        log.warning("the store is not this installation's: deleting nothing from it (%s)", reason)
        return False
    return True


async def _sweep_storage(services: Services, report: Report) -> None:
    """Remove every export object and unfinished upload that no live media item records and
    no running attempt owns, and probe objects left by processes that died during their
    start-up check: only keys of exactly the forms the product writes, and only from a
    store whose marker names this database.

    The store is listed first, the database asked second, in one statement (one snapshot)
    that answers both "recorded?" and "running?". A completion records the file and ends
    the attempt in one transaction, so that snapshot sees the attempt running or the file
    recorded, never neither. An attempt's object can only become recorded while that
    attempt is the export's running one (the completion is guarded by status and attempt),
    and an export never goes back to an earlier attempt: an object that is neither recorded
    nor owned in that snapshot never will be, so removing it cannot race a completion. What
    an interrupted attempt left behind (a file it stored but could not record, an upload it
    could not abort while the store or database was away) goes on the next pass.
    """
    storage = services.storage
    if not await _store_is_ours(services):
        return
    try:
        objects = await storage.list_keys("exports/")
        uploads = await storage.pending_uploads("exports/")
        probes = set(await storage.list_keys(PROBE_PREFIX))
        probes.update(await storage.pending_uploads(PROBE_PREFIX))
    except (StorageError, OSError):
        log.exception("could not list the stored files")
        return
    for key in sorted(probes):
        if not probe_is_stale(key):
            continue
        try:
            await storage.delete(key)
            report.probes_removed += 1
        except (StorageError, OSError):
            log.exception("could not remove a stale probe object", extra={"object_key": key})
    owners = {
        key: owner
        for key in {*objects, *uploads}
        if (owner := rules.object_key_owner(key)) is not None
    }
    if not owners:
        return
    ours = sorted(owners)
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            q("maintenance_keys_kept"),
            {
                "keys": ours,
                "ids": [owners[key][0] for key in ours],
                "attempts": [owners[key][1] for key in ours],
            },
        )
        kept = {str(key): (recorded, running) for key, recorded, running in await cur.fetchall()}

    orphans = {key for key in objects if key in owners and not any(kept[key])}
    for key in sorted(orphans):
        try:
            await storage.delete(key)
            report.orphans_removed += 1
            log.warning("removed an export file no export records", extra={"object_key": key})
        except (StorageError, OSError):
            log.exception("could not remove an orphan export file", extra={"object_key": key})
    # An unfinished upload of no running attempt goes too; aborting it never touches a
    # complete object under the same key (a recorded file stays).
    for key in sorted(k for k in set(uploads) - orphans if k in owners and not kept[k][1]):
        try:
            await storage.abort_uploads(key)
            report.orphans_removed += 1
        except (StorageError, OSError):
            log.exception("could not remove an orphan upload", extra={"object_key": key})


async def _prune_export_jobs(services: Services, report: Report) -> None:
    """procrastinate's rows of exports that finished more than a retention period ago."""
    keep = services.settings.retention_hours * 3600
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            q("maintenance_prune_export_jobs"),
            {"queue": jobs.EXPORT_QUEUE, "keep_seconds": keep},
        )
        report.jobs_pruned += max(cur.rowcount, 0)


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
