"""The export rows: the Export type, read from a row here only, and every statement on them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ticketexport.db import q
from ticketexport.domain import exports as rules
from ticketexport.domain.exports import Stage, Status
from ticketexport.exports.frozen import FrozenRequest, Since

__all__ = [
    "Attempt",
    "Delivery",
    "ExpiredFile",
    "Export",
    "ExportFile",
    "ExportState",
    "NewFile",
    "RunEnded",
    "ScheduleRun",
    "StoredKey",
]

Conn = psycopg.AsyncConnection[Any]


@dataclasses.dataclass(frozen=True)
class ExportState:
    """What a status stream shows of an export: the event hub reads just these."""

    id: str
    status: Status
    stage: Stage | None
    attempt: int
    rows_done: int
    rows_total: int | None
    error_code: str | None
    error_message: str | None
    requester_id: int
    expires_at: dt.datetime
    # Set once the stored file was found missing or changed: it is never served again.
    file_lost_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ExportState:
        """A state as the event hub's query (stream_states) reads it."""
        return cls(**_state_fields(row))


@dataclasses.dataclass(frozen=True)
class ExportFile:
    """The stored file of a completed export (its media item)."""

    media_item_id: str
    name: str
    size_bytes: int
    content_type: str
    backend: str
    object_key: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Export(ExportState):
    """One export, as its row and its requester and file are now."""

    requester_email: str
    requester_name: str
    requested_at: dt.datetime
    # The instant the file reflects (the click), and the snapshot and WAL position it reads.
    as_of: dt.datetime
    as_of_snapshot: str | None
    as_of_lsn: str | None
    view_name: str
    # The request as the click froze it; None for a row this code did not write.
    frozen: FrozenRequest | None
    # The stored request's format key (None: CSV, from before formats were recorded).
    format: str | None
    started_at: dt.datetime | None
    progress_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancel_requested_at: dt.datetime | None
    auto_downloaded_at: dt.datetime | None
    procrastinate_job_id: int | None
    retry_of_id: str | None
    read_from: str | None
    standby_fallback: str | None
    standby_conflicts: int
    cleanup_failures: int
    file: ExportFile | None
    # A schedule's run: its schedule (None once deleted), the tick it is for (None: run by
    # hand) and the copy to the schedule's destination (None: none asked for).
    schedule_id: int | None = None
    schedule_tick: dt.datetime | None = None
    delivery_status: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Export:
        """An export as export_get and export_list read it: the one place a row becomes one."""
        request = row["request"]
        stored_format = request.get("format") if isinstance(request, Mapping) else None
        file = None
        if row["media_item_id"] is not None:
            file = ExportFile(
                media_item_id=str(row["media_item_id"]),
                name=row["file_name"],
                size_bytes=int(row["size_bytes"]),
                content_type=row["content_type"],
                backend=row["storage_backend"],
                object_key=row["object_key"],
                sha256=row["sha256"],
            )
        return cls(
            **_state_fields(row),
            **{name: row[name] for name in _AS_READ},
            frozen=FrozenRequest.read(request),
            format=stored_format if isinstance(stored_format, str) else None,
            retry_of_id=None if row["retry_of_id"] is None else str(row["retry_of_id"]),
            standby_conflicts=int(row["standby_conflicts"]),
            cleanup_failures=int(row["cleanup_failures"]),
            file=file,
            schedule_id=row.get("schedule_id"),
            schedule_tick=row.get("schedule_tick"),
            delivery_status=row.get("delivery_status"),
        )

    @property
    def active(self) -> bool:
        return self.status in (Status.QUEUED, Status.RUNNING)


# Export's fields that are the row's columns of the same name, as the driver reads them.
_AS_READ = (
    "requester_email",
    "requester_name",
    "requested_at",
    "as_of",
    "as_of_snapshot",
    "as_of_lsn",
    "view_name",
    "started_at",
    "progress_at",
    "heartbeat_at",
    "finished_at",
    "cancel_requested_at",
    "auto_downloaded_at",
    "procrastinate_job_id",
    "read_from",
    "standby_fallback",
)


def _state_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "status": Status(row["status"]),
        "stage": None if row["stage"] is None else Stage(row["stage"]),
        "attempt": int(row["attempt"]),
        "rows_done": int(row["rows_done"]),
        "rows_total": None if row["rows_total"] is None else int(row["rows_total"]),
        "error_code": row["error_code"],
        "error_message": row["error_message"],
        "requester_id": int(row["requester_id"]),
        "expires_at": row["expires_at"],
        "file_lost_at": row["file_lost_at"],
    }


@dataclasses.dataclass(frozen=True)
class Attempt:
    """An export's current attempt, as maintenance rescues it."""

    id: str
    attempt: int
    rows_done: int
    procrastinate_job_id: int | None = None


@dataclasses.dataclass(frozen=True)
class ExpiredFile:
    """A completed export past its expiry, locked for the deletion of its file."""

    id: str
    media_item_id: str
    object_key: str
    cleanup_failures: int


@dataclasses.dataclass(frozen=True)
class StoredKey:
    """Whether a stored export object is recorded by a live media item, and whether the
    attempt its key names is running."""

    recorded: bool
    running: bool


@dataclasses.dataclass(frozen=True)
class NewFile:
    """A file an attempt stored, to be recorded with its completion."""

    name: str
    size: int
    content_type: str
    backend: str
    object_key: str
    sha256: str


async def _one(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> Any:
    cur = await conn.execute(q(name), params)
    return await cur.fetchone()


async def _changed(conn: Conn, name: str, params: Mapping[str, Any]) -> bool:
    """Whether a guarded statement (one with RETURNING) found its row."""
    return await _one(conn, name, params) is not None


# --- reading --------------------------------------------------------------------------


async def get(conn: Conn, export_id: str) -> Export | None:
    """The export, or None when there is none (a malformed id included)."""
    try:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("export_get"), {"id": export_id})
        row = await cur.fetchone()
    except psycopg.errors.InvalidTextRepresentation:
        return None
    return None if row is None else Export.from_row(row)


async def page(
    conn: Conn,
    *,
    requester_id: int | None,
    before_time: dt.datetime | None,
    before_id: str | None,
    limit: int,
) -> list[Export]:
    """Up to `limit` exports requested before the cursor, newest first: one requester's,
    or everyone's (None)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        q("export_list"),
        {
            "user_id": requester_id,
            "before_time": before_time,
            "before_id": before_id,
            "limit": limit,
        },
    )
    return [Export.from_row(row) for row in await cur.fetchall()]


async def running_count(conn: Conn, user_id: int) -> int:
    """The user's queued and running exports (one indexed count)."""
    row = await _one(conn, "export_running_count", {"user_id": user_id})
    return int(row[0]) if row else 0


# --- the click ------------------------------------------------------------------------


async def lock_requests(conn: Conn, user_id: int) -> None:
    """Serialise one user's requests (until the transaction ends)."""
    await conn.execute(q("export_request_lock"), {"user_id": user_id})


async def find_duplicate(conn: Conn, user_id: int, fingerprint: str, seconds: int) -> str | None:
    """The same user's identical request still queued or running from the last `seconds`."""
    row = await _one(
        conn,
        "export_find_duplicate",
        {"user_id": user_id, "fingerprint": fingerprint, "seconds": seconds},
    )
    return None if row is None else str(row[0])


async def _insert(
    conn: Conn,
    statement: str,
    *,
    requester_id: int,
    frozen: FrozenRequest,
    retention: dt.timedelta,
    **more: Any,
) -> str:
    """A new queued export by the named statement, its id."""
    # Maintenance's pruning of row versions waits for requests in flight (the shared lock
    # is held to commit), so it never removes a version this snapshot can see.
    await conn.execute(q("history_horizon_share"))
    row = await _one(
        conn,
        statement,
        {
            "requester_id": requester_id,
            "request": Jsonb(frozen.to_json()),
            "view_name": frozen.view.name,
            "fingerprint": frozen.fingerprint(),
            "retention": retention,
            **more,
        },
    )
    assert row is not None
    return str(row[0])


async def insert(
    conn: Conn,
    *,
    requester_id: int,
    frozen: FrozenRequest,
    retention: dt.timedelta,
    retry_of: str | None,
) -> str:
    """A new queued export as of this transaction's start and this statement's snapshot."""
    return await _insert(
        conn,
        "export_insert",
        requester_id=requester_id,
        frozen=frozen,
        retention=retention,
        retry_of=retry_of,
    )


async def insert_scheduled(
    conn: Conn,
    *,
    requester_id: int,
    frozen: FrozenRequest,
    retention: dt.timedelta,
    schedule_id: int,
    tick: dt.datetime | None,
    deliver: bool,
    notify: bool,
) -> str:
    """A schedule's run, as `insert` makes an export, recorded with its schedule and tick
    (a unique index refuses a second run of one tick)."""
    return await _insert(
        conn,
        "export_insert_scheduled",
        requester_id=requester_id,
        frozen=frozen,
        retention=retention,
        schedule_id=schedule_id,
        tick=tick,
        delivery="pending" if deliver else None,
        notify="pending" if notify else None,
    )


async def lock_as_base(conn: Conn, export_id: str) -> bool | None:
    """Hold an export (to the end of the transaction) as the base of changes since it:
    whether its retention is over by the clock now, None when there is no such export.

    The history lock comes first: pruning waits for this request, so pruning that starts
    later finds the new export's `since` and keeps the base's row versions, and pruning
    that ran before judged the base's expiry by an earlier instant than this."""
    await conn.execute(q("history_horizon_share"))
    try:
        row = await _one(conn, "export_changes_base", {"id": export_id})
    except psycopg.errors.InvalidTextRepresentation:
        return None
    return None if row is None else bool(row[0])


async def set_job(conn: Conn, export_id: str, job_id: int) -> None:
    """Link the export to its current procrastinate job."""
    await conn.execute(q("export_set_job_id"), {"id": export_id, "job_id": job_id})


async def cancel(conn: Conn, export_id: str) -> bool:
    """queued or running → cancelled; False when it already finished."""
    return await _changed(conn, "export_cancel", {"id": export_id})


async def claim_auto_download(conn: Conn, export_id: str, user_id: int) -> bool:
    """The requester's one automatic download; False when it already happened."""
    return await _changed(conn, "export_claim_auto_download", {"id": export_id, "user_id": user_id})


# --- the worker's attempt -------------------------------------------------------------


async def lock(conn: Conn, export_id: str) -> dt.datetime | None:
    """Lock the row for a claim (to the end of the transaction); the database's time, or
    None when there is no such export."""
    row = await _one(conn, "export_lock", {"id": export_id})
    return None if row is None else row[0]


async def requeue(conn: Conn, export_id: str) -> None:
    """running → queued with a new attempt (the attempt that ran is over)."""
    await conn.execute(q("export_requeue"), {"id": export_id})


async def requeue_lost_job(conn: Conn, export_id: str, attempt: int) -> None:
    """A queued export whose job was lost before any attempt claimed it: a new attempt."""
    await conn.execute(q("export_requeue_lost_job"), {"id": export_id, "attempt": attempt})


async def start(conn: Conn, export_id: str, job_id: int | None) -> bool:
    """queued → running for this job's attempt."""
    return await _changed(conn, "export_start", {"id": export_id, "job_id": job_id})


async def fail(conn: Conn, export_id: str, attempt: int, code: str) -> bool:
    """→ failed with `code` and its safe message, if `attempt` is still the export's."""
    return await _changed(
        conn,
        "export_fail",
        {"id": export_id, "attempt": attempt, "code": code, "message": rules.safe_message(code)},
    )


async def fail_unclaimed(conn: Conn, export_id: str, code: str) -> bool:
    """queued → failed before any attempt ran."""
    return await _changed(
        conn,
        "export_fail_unclaimed",
        {"id": export_id, "code": code, "message": rules.safe_message(code)},
    )


async def counted(conn: Conn, export_id: str, attempt: int, total: int) -> bool:
    """The attempt's exact total; False when the attempt is no longer the running one (so
    for every guarded update below)."""
    return await _changed(
        conn, "export_counted", {"id": export_id, "attempt": attempt, "total": total}
    )


async def read_from(
    conn: Conn, export_id: str, attempt: int, source: str, fallback: str | None
) -> bool:
    """Where the attempt reads its rows, and why not the standby."""
    return await _changed(
        conn,
        "export_read_from",
        {"id": export_id, "attempt": attempt, "source": source, "fallback": fallback},
    )


async def standby_conflict(conn: Conn, export_id: str, attempt: int) -> bool:
    """A recovery conflict on the standby cut the attempt short."""
    return await _changed(conn, "export_standby_conflict", {"id": export_id, "attempt": attempt})


async def stage(conn: Conn, export_id: str, attempt: int, stage: Stage) -> bool:
    return await _changed(
        conn, "export_stage", {"id": export_id, "attempt": attempt, "stage": stage.value}
    )


async def progress(conn: Conn, export_id: str, attempt: int, rows: int) -> bool:
    return await _changed(
        conn, "export_progress", {"id": export_id, "attempt": attempt, "rows": rows}
    )


async def heartbeat(conn: Conn, export_id: str, attempt: int) -> bool:
    """The attempt is alive; False once it was cancelled or superseded."""
    return await _changed(conn, "export_heartbeat", {"id": export_id, "attempt": attempt})


async def complete(conn: Conn, export_id: str, attempt: int, file: NewFile) -> bool:
    """Record the stored file and complete the attempt; False (roll the transaction back)
    when the attempt is no longer running or the retention ended first."""
    media = await _one(
        conn,
        "media_item_insert",
        {
            "file_name": file.name,
            "size": file.size,
            "content_type": file.content_type,
            "backend": file.backend,
            "key": file.object_key,
            "sha256": file.sha256,
        },
    )
    assert media is not None
    return await _changed(
        conn, "export_complete", {"id": export_id, "attempt": attempt, "media_id": media[0]}
    )


async def file_recorded(conn: Conn, object_key: str) -> bool:
    """Whether a media item holds this object (a completed export's file)."""
    return await _one(conn, "media_item_recorded", {"key": object_key}) is not None


async def file_lost(conn: Conn, media_item_id: str, reason: str) -> None:
    """The stored object is not the recorded file: never served again."""
    await conn.execute(q("media_item_lost"), {"id": media_item_id, "reason": reason})


# --- maintenance ----------------------------------------------------------------------


async def stuck_running(
    conn: Conn, *, heartbeat_s: float, stall_s: float
) -> list[tuple[Attempt, str]]:
    """Running attempts whose worker stopped heartbeating ('worker_lost') or whose
    progress stalled ('stalled'), locked (SKIP LOCKED) to the end of the transaction."""
    cur = await conn.execute(
        q("maintenance_stuck_running"), {"heartbeat": heartbeat_s, "stall": stall_s}
    )
    return [
        (Attempt(id=str(export_id), attempt=int(attempt), rows_done=int(rows)), str(reason))
        for export_id, attempt, rows, reason in await cur.fetchall()
    ]


async def expire_unfinished(conn: Conn, code: str) -> list[Attempt]:
    """Fail every queued or running export whose retention ended first."""
    cur = await conn.execute(
        q("maintenance_expire_unfinished"), {"code": code, "message": rules.safe_message(code)}
    )
    return [
        Attempt(id=str(export_id), attempt=int(attempt), rows_done=0, procrastinate_job_id=job)
        for export_id, attempt, job in await cur.fetchall()
    ]


async def claim_expired(conn: Conn, skip: Sequence[str]) -> ExpiredFile | None:
    """One completed export past its expiry, locked (SKIP LOCKED), other than `skip`."""
    row = await _one(conn, "maintenance_claim_expired", {"skip": list(skip)})
    if row is None:
        return None
    export_id, media_item_id, object_key, failures = row
    return ExpiredFile(
        id=str(export_id),
        media_item_id=str(media_item_id),
        object_key=object_key,
        cleanup_failures=int(failures),
    )


async def cleanup_failed(conn: Conn, export_id: str) -> None:
    """Deleting the expired export's file failed; counted on its row."""
    await conn.execute(q("export_cleanup_failed"), {"id": export_id})


async def expire(conn: Conn, expired: ExpiredFile) -> bool:
    """completed → expired, its file deleted (the media item's record stays)."""
    await conn.execute(q("media_item_expire"), {"id": expired.media_item_id})
    return await _changed(conn, "export_expire", {"id": expired.id})


async def queued(conn: Conn) -> list[tuple[str, int | None]]:
    """Queued exports within their retention, with the job meant to run each."""
    cur = await conn.execute(q("maintenance_queued_exports"))
    return [(str(export_id), job_id) for export_id, job_id in await cur.fetchall()]


async def lock_queued(conn: Conn, export_id: str) -> Attempt | None:
    """One queued export locked for its rescue; None while a worker's claim holds it."""
    row = await _one(conn, "maintenance_lock_queued", {"id": export_id})
    if row is None:
        return None
    found, attempt, rows, job_id = row
    return Attempt(
        id=str(found), attempt=int(attempt), rows_done=int(rows), procrastinate_job_id=job_id
    )


async def jobs_of_unfinished(conn: Conn, job_ids: Sequence[int]) -> set[int]:
    """Which of these procrastinate jobs a queued or running export names as its job."""
    cur = await conn.execute(q("maintenance_jobs_of_unfinished"), {"ids": list(job_ids)})
    return {int(row[0]) for row in await cur.fetchall()}


async def keys_kept(conn: Conn, owners: Mapping[str, tuple[str, int]]) -> dict[str, StoredKey]:
    """For each stored key and the export and attempt its form names: recorded, running;
    one statement, so one snapshot."""
    keys = sorted(owners)
    cur = await conn.execute(
        q("maintenance_keys_kept"),
        {
            "keys": keys,
            "ids": [owners[key][0] for key in keys],
            "attempts": [owners[key][1] for key in keys],
        },
    )
    return {
        str(key): StoredKey(recorded=bool(recorded), running=bool(running))
        for key, recorded, running in await cur.fetchall()
    }


async def prune_finished_jobs(conn: Conn, queue: str, keep_seconds: float) -> int:
    """Delete procrastinate's rows for the jobs of exports finished longer ago than
    `keep_seconds` (or gone); how many."""
    cur = await conn.execute(
        q("maintenance_prune_export_jobs"), {"queue": queue, "keep_seconds": keep_seconds}
    )
    return max(cur.rowcount, 0)


async def history_horizon(conn: Conn) -> tuple[str, list[str]]:
    """Once export requests in flight committed: this statement's snapshot and those of
    every unfinished export (in the caller's transaction, which holds the lock)."""
    await conn.execute(q("history_horizon_lock"))
    row = await _one(conn, "history_horizon")
    assert row is not None
    return str(row[0]), list(row[1])


# --- schedules' runs ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleRun:
    """One run of a schedule, as the schedule's page lists it."""

    id: str
    status: Status
    schedule_tick: dt.datetime | None
    requested_at: dt.datetime
    finished_at: dt.datetime | None
    rows_total: int | None
    error_code: str | None
    delivery_status: str | None


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A completed run to copy to its schedule's destination."""

    id: str
    file_name: str
    object_key: str
    content_type: str
    destination: str | None
    slug: str


@dataclasses.dataclass(frozen=True)
class RunEnded:
    """A run whose owner asked to be told when it ends."""

    id: str
    status: Status
    error_message: str | None
    view_name: str
    schedule_name: str
    owner_email: str


async def schedule_base(conn: Conn, schedule_id: int) -> Since | None:
    """The base of a schedule's next file of changes: its latest completed run, read under
    history pruning's shared lock (taken here, held to commit, so the versions it names
    are still there and stay until the new run's `since` keeps them); None before any."""
    await conn.execute(q("history_horizon_share"))
    row = await _one(conn, "schedule_base_run", {"schedule_id": schedule_id})
    if row is None:
        return None
    export_id, as_of, snapshot = row
    return Since(export_id=str(export_id), as_of=as_of, snapshot=str(snapshot))


async def active_run(conn: Conn, schedule_id: int) -> str | None:
    """The schedule's run still queued or running, if any."""
    row = await _one(conn, "schedule_active_run", {"schedule_id": schedule_id})
    return None if row is None else str(row[0])


async def schedule_latest_file(conn: Conn, schedule_id: int) -> str | None:
    """The schedule's latest completed run with its file still there, if any."""
    row = await _one(conn, "schedule_latest_file", {"schedule_id": schedule_id})
    return None if row is None else str(row[0])


async def schedule_runs(conn: Conn, schedule_id: int, limit: int) -> list[ScheduleRun]:
    """A schedule's recent runs, newest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_runs"), {"schedule_id": schedule_id, "limit": limit})
    return [
        ScheduleRun(
            id=str(row["id"]),
            status=Status(row["status"]),
            schedule_tick=row["schedule_tick"],
            requested_at=row["requested_at"],
            finished_at=row["finished_at"],
            rows_total=row["rows_total"],
            error_code=row["error_code"],
            delivery_status=row["delivery_status"],
        )
        for row in await cur.fetchall()
    ]


async def drop_undeliverable(conn: Conn) -> None:
    """Runs that ended without a file, or whose schedule is gone, have nothing to deliver
    and nobody to tell."""
    await conn.execute(q("delivery_drop_unfinished"))
    await conn.execute(q("notify_drop_orphaned"))


async def delivery_waiting(conn: Conn) -> bool:
    """Whether a run waits for its delivery or its message."""
    row = await _one(conn, "delivery_waiting")
    return bool(row and row[0])


async def claim_delivery(conn: Conn) -> Delivery | None:
    """A completed run waiting for delivery, locked (SKIP LOCKED) to the end of the
    transaction: a worker lost mid-copy leaves it pending for the next."""
    row = await _one(conn, "delivery_claim_locked")
    if row is None:
        return None
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("delivery_source"), {"id": row[0]})
    found = await cur.fetchone()
    if found is None:
        return Delivery(
            id=str(row[0]), file_name="", object_key="", content_type="", destination=None, slug=""
        )
    return Delivery(
        id=str(found["id"]),
        file_name=found["file_name"],
        object_key=found["object_key"],
        content_type=found["content_type"],
        destination=found["destination"],
        slug=found["slug"],
    )


async def record_delivery(conn: Conn, export_id: str, status: str, attempts: int) -> None:
    """The outcome of a delivery: delivered or delivery_failed."""
    await conn.execute(
        q("delivery_record"), {"id": export_id, "status": status, "attempts": attempts}
    )


async def claim_notice(conn: Conn) -> RunEnded | None:
    """An ended run whose owner asked for a message, locked (SKIP LOCKED)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("notify_claim"))
    row = await cur.fetchone()
    if row is None:
        return None
    return RunEnded(
        id=str(row["id"]),
        status=Status(row["status"]),
        error_message=row["error_message"],
        view_name=row["view_name"],
        schedule_name=row["schedule_name"],
        owner_email=row["owner_email"],
    )


async def record_notice(conn: Conn, export_id: str, status: str) -> None:
    """Whether the owner's message about a run was sent."""
    await conn.execute(q("notify_record"), {"id": export_id, "status": status})
