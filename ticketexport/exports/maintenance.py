"""Periodic maintenance: rescue crashed or stalled exports, expire files, sweep orphans."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import procrastinate
import procrastinate.exceptions
import psycopg
from psycopg import sql

from ticketexport import audit, events, jobqueue
from ticketexport.db import VERSIONED_TABLES, q
from ticketexport.domain import exports as rules
from ticketexport.domain.exports import MAX_ATTEMPTS, copy_application_name
from ticketexport.exports import store
from ticketexport.exports.store import Attempt
from ticketexport.standby import stop_standby_reads
from ticketexport.storage import PROBE_PREFIX, StorageError, marker, probe_is_stale

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    requeued: int = 0
    failed: int = 0
    # Stalled procrastinate jobs (their worker gone) recorded as failed.
    jobs_retired: int = 0
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
    await _rescue_lost_jobs(services, report)
    await _sweep_storage(services, report)
    await _prune_export_jobs(services, report)
    await _prune_history(services, report)
    return report


async def _rescue(services: Services, report: Report) -> None:
    """Running attempts whose heartbeat stopped (their worker is gone) or whose progress
    stalled: a new attempt on a new job, or a failure once the attempts are used up.

    The old job is left to procrastinate: a live worker ends it once its attempt finds the
    row no longer its own; a dead worker's job is retired by `_rescue_lost_jobs`.
    """
    rescued: list[str] = []
    async with services.pool.connection() as conn, conn.transaction():
        stuck = await store.stuck_running(
            conn, heartbeat_s=heartbeat_timeout(services), stall_s=services.settings.stall_seconds
        )
        for export, reason in stuck:
            # Whatever the old attempt is still doing in the database, it stops now.
            await conn.execute(
                q("export_cancel_backends"), {"app": copy_application_name(export.id)}
            )
            await _requeue_or_fail(
                services, conn, export, report, lost_job=False, reason=reason, code=reason
            )
            rescued.append(export.id)
    for export_id in rescued:
        await stop_standby_reads(services, export_id)


async def _requeue_or_fail(
    services: Services,
    conn: psycopg.AsyncConnection[Any],
    export: Attempt,
    report: Report,
    *,
    lost_job: bool,
    reason: str,
    code: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """A new attempt on a new job for an export whose attempt was lost (running, or still
    queued when its job was lost: `lost_job`), or, its attempts used up, its failure with
    `code`; audited in the requester's name and announced, in the caller's transaction.

    A new job rather than procrastinate's retry of the old one: an attempt is owned by its
    job id, so a worker that was only frozen and wakes up holding the old job finds the
    export no longer its own instead of running it a second time.
    """
    export_id = export.id
    attempt = export.attempt
    if attempt < MAX_ATTEMPTS:
        if lost_job:
            await store.requeue_lost_job(conn, export_id, attempt)
        else:
            await store.requeue(conn, export_id)
        job_id = await jobqueue.defer_export(services.jobs, conn, export_id)
        await store.set_job(conn, export_id, job_id)
        action = "export.requeued"
        recorded: dict[str, Any] = {
            "reason": reason,
            "attempt": attempt + 1,
            "rows_done": export.rows_done,
            "procrastinate_job_id": job_id,
        }
        report.requeued += 1
    else:
        await store.fail(conn, export_id, attempt, code)
        action = "export.failed"
        recorded = {"error_code": code, "attempt": attempt}
        if reason != code:
            recorded["reason"] = reason
        report.failed += 1
    await audit.record_for_requester(
        conn,
        action,
        export_id=export_id,
        details={**recorded, **(details or {}), "by": "maintenance"},
    )
    await events.publish(conn, export_id)
    log.warning("rescued a %s export", reason, extra={"export_id": export_id, "action": action})


async def _expire_unfinished(services: Services, report: Report) -> None:
    code = "expired_before_completion"
    async with services.pool.connection() as conn, conn.transaction():
        for export in await store.expire_unfinished(conn, code):
            await conn.execute(
                q("export_cancel_backends"), {"app": copy_application_name(export.id)}
            )
            if export.procrastinate_job_id is not None:
                await jobqueue.abort_job(services.jobs, conn, export.procrastinate_job_id)
            await audit.record_for_requester(
                conn,
                "export.failed",
                export_id=export.id,
                details={"error_code": code, "attempt": export.attempt, "by": "maintenance"},
            )
            await events.publish(conn, export.id)
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
            export = await store.claim_expired(conn, failed)
            if export is None:
                return
            export_id = export.id
            try:
                await services.storage.delete(export.object_key)
            except (StorageError, OSError):
                log.exception(
                    "could not delete an expired export file; retrying on the next run",
                    extra={"export_id": export_id, "object_key": export.object_key},
                )
                await store.cleanup_failed(conn, export_id)
                failed.append(export_id)
                report.cleanup_failures += 1
                continue
            if not await store.expire(conn, export):
                continue
            await audit.record_for_requester(
                conn,
                "export.expired",
                export_id=export_id,
                details={"object_key": export.object_key, "by": "maintenance"},
            )
            await events.publish(conn, export_id)
        report.expired += 1


async def _rescue_lost_jobs(services: Services, report: Report) -> None:
    """Queued exports that no job will run any more, and jobs no worker will ever finish.

    An export's job is lost when its row is gone or has ended while the export still waits
    (deleted or cancelled by hand, failed before the claim), or when procrastinate reports
    it stalled: taken ('doing') by a worker that stopped heartbeating, say one killed
    between fetching the job and claiming the export. Such an export gets a new attempt on
    a new job, counted like any other, or fails once its attempts are used up. A running
    export is judged by its attempt's own heartbeat instead (`_rescue`): a worker whose
    procrastinate heartbeat stopped during a database outage may still be running it.

    Then every stalled job that no unfinished export still names is recorded as failed, so
    it neither shows as running forever nor holds a lock the jobs behind it wait on.
    """
    app = services.jobs
    stalled = {
        job.id: job
        for job in await jobqueue.stalled_jobs(app, heartbeat_timeout(services))
        if job.id is not None
    }
    # The exports first, their jobs second: a new export's job commits with it, so every
    # export read here has its job in the listing below unless that job is really gone.
    async with services.pool.connection() as conn:
        queued = await store.queued(conn)
    live = await jobqueue.live_export_jobs(app) if queued else set()
    for export_id, job_id in queued:
        if job_id in live and job_id not in stalled:
            continue
        await _rescue_queued(services, report, export_id, job_id, stalled)
    await _retire_stalled(services, report, stalled)


async def _rescue_queued(
    services: Services,
    report: Report,
    export_id: str,
    job_id: int | None,
    stalled: Mapping[int, procrastinate.jobs.Job],
) -> None:
    """Re-queue (or fail) one queued export whose job looked lost, once its row is locked
    and the job checked again: a worker claiming it right now holds the lock and wins."""
    async with services.pool.connection() as conn, conn.transaction():
        export = await store.lock_queued(conn, export_id)
        if export is None or export.procrastinate_job_id != job_id:
            return
        status = None if job_id is None else await jobqueue.job_status(services.jobs, job_id)
        if status == procrastinate.jobs.Status.DOING and job_id in stalled:
            reason, code = "worker_lost", "worker_lost"
        elif status in (procrastinate.jobs.Status.TODO, procrastinate.jobs.Status.DOING):
            return  # it can still run (fetched, or put back for a retry, meanwhile)
        else:
            reason, code = "job_lost", "internal"
        await _requeue_or_fail(
            services,
            conn,
            export,
            report,
            lost_job=True,
            reason=reason,
            code=code,
            details={
                "lost_job_id": job_id,
                "lost_job_status": None if status is None else status.value,
            },
        )


async def _retire_stalled(
    services: Services, report: Report, stalled: Mapping[int, procrastinate.jobs.Job]
) -> None:
    if not stalled:
        return
    async with services.pool.connection() as conn:
        # A running export's attempt may outlive its worker's procrastinate heartbeat; a
        # queued one whose rescue waited for a claim's lock is looked at again next time.
        held = await store.jobs_of_unfinished(conn, sorted(stalled))
    for job_id, job in sorted(stalled.items()):
        if job_id in held or not await jobqueue.retire_job(services.jobs, job_id):
            continue
        report.jobs_retired += 1
        log.warning(
            "recorded a job whose worker is gone as failed",
            extra={
                "job_id": job_id,
                "queue": job.queue,
                "export_id": job.task_kwargs.get("export_id"),
                "worker_id": job.worker_id,
            },
        )


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
    async with services.pool.connection() as conn:
        kept = await store.keys_kept(conn, owners)

    orphans = {
        key for key in objects if key in owners and not (kept[key].recorded or kept[key].running)
    }
    for key in sorted(orphans):
        try:
            await storage.delete(key)
            report.orphans_removed += 1
            log.warning("removed an export file no export records", extra={"object_key": key})
        except (StorageError, OSError):
            log.exception("could not remove an orphan export file", extra={"object_key": key})
    # An unfinished upload of no running attempt goes too; aborting it never touches a
    # complete object under the same key (a recorded file stays).
    for key in sorted(k for k in set(uploads) - orphans if k in owners and not kept[k].running):
        try:
            await storage.abort_uploads(key)
            report.orphans_removed += 1
        except (StorageError, OSError):
            log.exception("could not remove an orphan upload", extra={"object_key": key})


async def _prune_export_jobs(services: Services, report: Report) -> None:
    """procrastinate's rows of exports that finished more than a retention period ago."""
    keep = services.settings.retention_hours * 3600
    async with services.pool.connection() as conn:
        report.jobs_pruned += await store.prune_finished_jobs(conn, jobqueue.EXPORT_QUEUE, keep)


async def run_periodic(services: Services, app: procrastinate.App) -> None:
    """The periodic task's body: one pass, then prune the queue's finished maintenance jobs."""
    try:
        report = await run_maintenance(services)
    except (psycopg.OperationalError, OSError):
        log.warning("maintenance skipped: database unavailable")
        return
    except procrastinate.exceptions.ConnectorException as exc:
        # procrastinate's own calls wrap the driver's errors.
        if not isinstance(exc.__cause__, (psycopg.OperationalError, OSError)):
            raise
        log.warning("maintenance skipped: database unavailable")
        return
    if report != Report():
        log.info("maintenance", extra=dataclasses.asdict(report))
    # Our own periodic runs would otherwise pile up in procrastinate_jobs.
    await app.job_manager.delete_old_jobs(
        nb_hours=1, queue=jobqueue.MAINTENANCE_QUEUE, include_failed=True, include_cancelled=True
    )


async def _prune_history(services: Services, report: Report) -> None:
    """Delete row versions that no unfinished export, no possible base of a file of
    changes (a completed export until it expires, the base of an unfinished one), and no
    later export can read.

    The horizon snapshot and the unfinished exports' snapshots are read once requests in
    flight have committed (each holds the shared side of the lock from before it records
    its snapshot), so a request that records its snapshot later sees every transaction the
    horizon sees: the versions those superseded are gone for it too. Versions written after
    an unfinished export's snapshot are not visible to it either, so a long run of updates
    while exports wait keeps history bounded, whatever long transactions run elsewhere.
    """
    async with services.pool.connection() as conn, conn.transaction():
        horizon, snapshots = await store.history_horizon(conn)
    for table in VERSIONED_TABLES:
        statement = q("history_prune").format(history=sql.Identifier(f"{table}_history"))
        async with services.pool.connection() as conn:
            cur = await conn.execute(statement, {"horizon": horizon, "snapshots": snapshots})
            report.versions_pruned += cur.rowcount
