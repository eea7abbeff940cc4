"""The export job: COPY (SELECT …) TO STDOUT streamed straight into storage."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import tempfile
import time
import zoneinfo
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ticketexport import audit, events, standby
from ticketexport.db import close_quietly, fetch_one, in_thread, q
from ticketexport.domain import exports as rules
from ticketexport.domain.actor import Actor
from ticketexport.domain.exports import MAX_ATTEMPTS, Stage, Status, copy_application_name
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats, store
from ticketexport.exports.copyreader import CopyReader
from ticketexport.exports.failures import (
    FILE_TOO_LARGE,
    STORAGE_UNAVAILABLE,
    ExportFailed,
    Superseded,
    Transient,
)
from ticketexport.exports.frozen import FrozenRequest
from ticketexport.exports.store import Export, NewFile
from ticketexport.storage import StorageError, StorageLimitExceeded
from ticketexport.views import model as view_model
from ticketexport.views import service as view_service
from ticketexport.views.compiler import compile_changes, compile_export

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)

__all__ = ["MAX_ATTEMPTS", "ExportFailed", "ExportRun", "Superseded", "Transient"]

# Progress is written (and announced) at most this often.
PROGRESS_INTERVAL = 0.5
# How long the end of an attempt waits for its heartbeat task to stop.
HEARTBEAT_STOP_SECONDS = 2.0
# The export's count and COPY sessions run without JIT. An export's plan costs far above
# jit_above_cost (an as-of read of 1M tickets is estimated at ~570,000), so PostgreSQL would
# compile it with inlining and optimisation: measured at 4 s of a 1M-ticket export and 5 s
# of a 100k-ticket one of every column (bench/features.py, bench/README.md), paid before the
# first row, while a streaming scan that formats text gains next to nothing from it.
EXPORT_SESSION_OPTIONS = "-c jit=off"
# How a hot standby cancels a query that conflicts with the WAL it must replay
# ("canceling statement due to conflict with recovery").
RECOVERY_CONFLICTS = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.DatabaseDropped,
)


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What one export writes, decided from its frozen request alone (any attempt, any host)."""

    format: formats.ExportFormat
    select: sql.Composed
    count: sql.Composed
    file_name: str
    layout: formats.Layout
    # Counted by running the statement itself into a spool file (see ExportRun._spool): a
    # file of changes, whose count would cost as much as the statement.
    spooled: bool = False


def view_of(frozen: FrozenRequest) -> tuple[view_service.ResolvedView, view_service.ListRequest]:
    """The view and list request a frozen request holds, as the compiler takes them."""
    view = frozen.view
    definition = view_model.parse_definition(view.definition)
    resolved = view_service.ResolvedView(
        key=view.key,
        name=view.name,
        definition=definition,
        saved_view_id=view.saved_view_id,
        builtin=view.builtin,
    )
    request = view_service.ListRequest(
        view=view.key, q=frozen.q, sort=frozen.sort, filters=frozen.filters, page=None
    )
    return resolved, request


async def search_matches(
    conn: psycopg.AsyncConnection[Any],
    frozen: FrozenRequest,
    as_of: dt.datetime,
    snapshot: str | None,
) -> dict[str, list[int]] | None:
    """The ids of the lookup rows (status, priority, people, team) the export's search term
    finds, as of the click's snapshot (conditions.search_lookups): given them, the export's
    statements read a searched view through the trigram indexes, as its list page does,
    instead of every ticket. None when the search has no such column to look in, or the
    request is not one to plan (plan_export then says why)."""
    try:
        resolved, request = view_of(frozen)
        actor = frozen.actor.actor()
    except (KeyError, TypeError, ValueError):
        return None
    return await view_service.search_matches(
        conn, resolved, request, actor, now=as_of, tz=frozen.timezone, snapshot=snapshot
    )


def plan_export(
    frozen: FrozenRequest,
    as_of: dt.datetime,
    snapshot: str | None,
    matches: Mapping[str, list[int]] | None = None,
) -> ExportPlan:
    """The export's SELECT, its row count and its file name, as the frozen request stored in
    its row says, reading the data as of the click's snapshot; `matches` are the search's
    lookup matches as of that snapshot (search_matches). A request with `since` is a file of
    the changes since that earlier click (compiler.compile_changes)."""
    try:
        fmt = formats.get(frozen.format)
        resolved, request = view_of(frozen)
        actor = frozen.actor.actor()
        tz = frozen.timezone
        zone = zoneinfo.ZoneInfo(tz)
    except (KeyError, TypeError, ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        # ViewInputError and an unknown format are ValueErrors too.
        raise ExportFailed("view_unavailable", repr(exc)) from exc
    since = frozen.since
    if since is None:
        compiled = compile_export(
            resolved,
            request,
            actor,
            as_of,
            tz,
            snapshot=snapshot,
            typed=fmt.typed,
            search_matches=matches,
        )
    elif snapshot is None:
        raise ExportFailed("view_unavailable", "a file of changes needs the click's snapshot")
    else:
        compiled = compile_changes(
            resolved,
            request,
            actor,
            as_of,
            tz,
            snapshot=snapshot,
            since_as_of=since.as_of,
            since_snapshot=since.snapshot,
            typed=fmt.typed,
        )
    return ExportPlan(
        format=fmt,
        select=fmt.select(compiled.rows),
        count=compiled.count,
        file_name=rules.file_name(resolved.name, as_of, zone, extension=fmt.extension),
        layout=formats.Layout(title=resolved.name, columns=compiled.rows.columns, timezone=tz),
        spooled=since is not None,
    )


@dataclasses.dataclass
class _Spool:
    """A statement's COPY output on local disk: where each block ended and the rows by then."""

    file: IO[bytes]
    marks: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    rows: int = 0


async def _spooled_blocks(spool: _Spool) -> AsyncGenerator[tuple[bytes, int], None]:
    """The spooled blocks as they were read, each with the rows read by its end."""
    await asyncio.to_thread(spool.file.seek, 0)
    start = 0
    for end, rows in spool.marks:
        block = await asyncio.to_thread(spool.file.read, end - start)
        start = end
        yield block, rows


class _Refused(Exception):
    """The completion found the row no longer this attempt's to complete."""


class ExportRun:
    """One attempt at one export, from claim to the stored file."""

    def __init__(self, services: Services, export_id: str, job_id: int | None) -> None:
        self.services = services
        self.export_id = export_id
        self.job_id = job_id
        self.attempt = 0
        self.rows = 0
        self.total: int | None = None
        self.started = time.monotonic()
        # Set once the stored file is about to be recorded: from then on the row stops being
        # "running" because of this attempt's own completion, not a cancel or a rescue.
        self.completing = False
        # The key of the object this attempt stored, once put_stream returned (before then
        # the backend itself removes whatever a failed or cancelled write left).
        self.stored_key: str | None = None
        # Whether this attempt's count and COPY run on the standby.
        self.reading_standby = False
        # The frozen request's format, for the audit rows (set once the export is claimed).
        self.format_key = formats.DEFAULT_FORMAT
        # The schedule this export is a run of (set once the export is claimed).
        self.schedule_id: int | None = None
        self.log_extra: dict[str, Any] = {"export_id": export_id, "job_id": job_id}

    # --- row updates ----------------------------------------------------------------

    async def _update(self, change: Callable[[store.Conn], Awaitable[bool]]) -> bool:
        """Run a guarded update (it changes the row only while this attempt owns it) and
        announce it."""
        async with self.services.pool.connection() as conn, conn.transaction():
            changed = await change(conn)
            if changed:
                await events.publish(conn, self.export_id)
            return changed

    async def _claim(self) -> Export | None:
        """queued → running (after a crash: running → queued → running, attempt + 1)."""
        async with self.services.pool.connection() as conn, conn.transaction():
            now = await store.lock(conn, self.export_id)
            export = None if now is None else await store.get(conn, self.export_id)
            if export is None or now is None or not export.active:
                return None
            if self.job_id is not None and export.procrastinate_job_id not in (None, self.job_id):
                # Maintenance handed this export to a newer job; this one is stale.
                return None
            attempt = export.attempt
            if export.status == Status.RUNNING:
                if attempt >= MAX_ATTEMPTS:
                    self._adopt(export, attempt)
                    await self._record_failure(conn, "worker_lost")
                    return None
                # A previous try of this job died mid-way: that attempt is over.
                await store.requeue(conn, self.export_id)
                attempt += 1
            if export.expires_at <= now:
                self._adopt(export, attempt)
                await self._record_failure(conn, "expired_before_completion", unclaimed=True)
                return None
            started = await store.start(conn, self.export_id, self.job_id)
            assert started
            await events.publish(conn, self.export_id)
            return await store.get(conn, self.export_id)

    def _adopt(self, export: Export, attempt: int) -> None:
        """Take the claimed row's attempt and format for the updates, logs and audit rows."""
        self.attempt = attempt
        self.log_extra["attempt"] = self.attempt
        self.format_key = (export.frozen and export.frozen.format) or formats.DEFAULT_FORMAT
        self.schedule_id = export.schedule_id

    async def _record_failure(
        self,
        conn: psycopg.AsyncConnection[Any],
        code: str,
        *,
        unclaimed: bool = False,
        duration_s: float | None = None,
    ) -> None:
        """Fail the export with `code` (if this attempt still may) and audit it."""
        if unclaimed:
            failed = await store.fail_unclaimed(conn, self.export_id, code)
        else:
            failed = await store.fail(conn, self.export_id, self.attempt, code)
        if not failed:
            return
        details: dict[str, Any] = {
            "error_code": code,
            "rows": self.rows,
            "attempt": self.attempt,
            "job_id": self.job_id,
            "format": self.format_key,
        }
        if duration_s is not None:
            details["duration_s"] = duration_s
        await audit.record_for_requester(
            conn, "export.failed", export_id=self.export_id, details=details
        )
        if code == "permission_revoked" and self.schedule_id is not None:
            await self._pause_schedule(conn, self.schedule_id)
        await events.publish(conn, self.export_id)

    async def _pause_schedule(self, conn: psycopg.AsyncConnection[Any], schedule_id: int) -> None:
        """A schedule's run refused for its owner's rights pauses the schedule (audited):
        the next tick would only be refused again."""
        cur = await conn.execute(
            q("schedule_pause"),
            {"id": schedule_id, "reason": "the owner's rights no longer allow it"},
        )
        if await cur.fetchone() is not None:
            await audit.record_for_requester(
                conn,
                "schedule.paused",
                export_id=self.export_id,
                details={"schedule_id": schedule_id, "reason": "permission_revoked"},
            )

    # --- the run ----------------------------------------------------------------------

    async def run(self) -> None:
        export = await self._claim()
        if export is None:
            log.info("export has nothing to do", extra={**self.log_extra, "event": "nothing_to_do"})
            return
        self._adopt(export, export.attempt)
        log.info("export started", extra={**self.log_extra, "event": "started"})
        heartbeat = asyncio.create_task(self._heartbeat(asyncio.current_task()))
        key: str | None = None
        try:
            frozen = export.frozen
            if frozen is None:
                raise ExportFailed("view_unavailable", "the stored request is malformed")
            await self._check_requester(frozen, export.schedule_id)
            matches = None
            if frozen.since is None:  # a file of changes reads its search as a subquery
                async with self.services.pool.connection() as conn:
                    matches = await search_matches(
                        conn, frozen, export.as_of, export.as_of_snapshot
                    )
            plan = plan_export(frozen, export.as_of, export.as_of_snapshot, matches)
            key = rules.object_key(self.export_id, self.attempt, plan.file_name)
            await self._copy_to_storage(plan, key, export)
        except Superseded:
            log.info("export superseded; stopping", extra={**self.log_extra, "event": "superseded"})
            await self._discard(key)
        except ExportFailed as exc:
            log.warning(
                "export failed: %s",
                exc,
                extra={**self.log_extra, "event": "failed", "error_code": exc.code},
            )
            await self._discard(key)
            await self._fail(exc.code)
        except Transient as exc:
            await self._discard(key)
            if self.reading_standby and isinstance(exc.__cause__, RECOVERY_CONFLICTS):
                # The standby cancelled our read to replay changes it had to apply; the
                # next attempt reads there once more, then from the primary.
                log.warning(
                    "a recovery conflict on the standby cut the export short",
                    extra={**self.log_extra, "event": "standby_conflict"},
                )
                with contextlib.suppress(psycopg.Error, OSError):
                    await self._update_quiet(store.standby_conflict)
            if not await self._still_ours():
                # A cancel or a maintenance rescue cut our statement short: not an outage,
                # and a procrastinate retry of this job would only find nothing to do.
                log.info(
                    "export stopped by a cancel or rescue",
                    extra={**self.log_extra, "event": "stopped"},
                )
                return
            if self.attempt >= MAX_ATTEMPTS:
                log.exception(
                    "export failed after its last attempt",
                    extra={**self.log_extra, "event": "failed", "error_code": exc.code},
                )
                await self._fail(exc.code)
                return
            log.warning(
                "export hit a transient error; will retry: %s",
                exc,
                extra={**self.log_extra, "event": "retrying", "error_code": exc.code},
            )
            raise
        except asyncio.CancelledError:
            # Aborted (cancel) or shutting down: never leave a file behind.
            await asyncio.shield(self._discard(key))
            raise
        except Exception:
            log.exception(
                "export failed unexpectedly",
                extra={**self.log_extra, "event": "failed", "error_code": "internal"},
            )
            await self._discard(key)
            await self._fail("internal")
        finally:
            heartbeat.cancel()
            # A heartbeat cancelled mid-query waits for the server to confirm, with no
            # limit, on a connection a database restart may have left hanging: the
            # attempt's end must not depend on it.
            done, _ = await asyncio.wait([heartbeat], timeout=HEARTBEAT_STOP_SECONDS)
            if not done:
                log.warning(
                    "heartbeat did not stop; leaving it behind",
                    extra={**self.log_extra, "event": "heartbeat_stuck"},
                )

    async def _check_requester(self, frozen: FrozenRequest, schedule_id: int | None) -> None:
        async with self.services.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("user_access"), {"user_id": frozen.requester.id})
            user = await cur.fetchone()
        if user is None or not user["is_active"]:
            raise ExportFailed("permission_revoked", "requester inactive or gone")
        requester = Actor(
            id=user["id"], is_admin=user["is_admin"], permissions=Permission(user["permissions"])
        )
        if not requester.may_export:
            raise ExportFailed("permission_revoked", "requester lost permission 512")
        if schedule_id is not None and not requester.is_admin:
            async with self.services.pool.connection() as conn:
                cur = await conn.execute(q("schedule_delivers"), {"id": schedule_id})
                delivers = await cur.fetchone()
            if delivers is not None and delivers[0]:
                # A file sent outside the product escapes the download check.
                raise ExportFailed("permission_revoked", "schedule owner is no longer an admin")

    async def _connect(self, url: str, *, blocking: bool = False, connect_timeout: int = 10) -> Any:
        """A connection of the export's own, named so pg_stat_activity (and cancel) find it."""
        params: dict[str, Any] = {
            "autocommit": True,
            "application_name": copy_application_name(self.export_id),
            "connect_timeout": connect_timeout,
            "options": EXPORT_SESSION_OPTIONS,
        }
        try:
            if blocking:
                return await asyncio.to_thread(psycopg.connect, url, **params)
            return await psycopg.AsyncConnection.connect(url, **params)
        except psycopg.OperationalError as exc:
            raise Transient("database_unavailable", exc) from exc

    async def _reader(self, export: Export) -> tuple[str, psycopg.Connection[Any]]:
        """The database this attempt reads from, and the one connection its count and its
        COPY both run on.

        With a standby configured, that connection must reach a standby of this primary
        (the same system identifier) whose replay has passed the click's WAL position (so
        it has every transaction the click's snapshot sees), within the lag limit. The
        check and the reads share the connection: a multi-host or load-balanced URL hands
        each new connection to whichever server it picks, and a read on one other than the
        one checked could be on a standby still behind the click, a silently stale file. A
        lagging, unreachable, promoted or foreign standby, or one whose recovery conflicts
        cut short two attempts already, gives way to the primary. The file is the same
        either way.
        """
        settings = self.services.settings
        primary = self.services.database_url
        skip, fallback = standby.skip_standby(settings, export.as_of_lsn, export.standby_conflicts)
        lsn = export.as_of_lsn
        if skip or settings.export_database_url is None or lsn is None:
            return await self._read_on(primary, "primary", fallback)
        deadline = time.monotonic() + settings.standby_max_lag_seconds
        try:
            conn: psycopg.Connection[Any] = await self._connect(
                settings.export_database_url,
                blocking=True,
                connect_timeout=max(1, round(settings.standby_max_lag_seconds)),
            )
        except Transient:
            return await self._read_on(primary, "primary", "unreachable")
        try:
            reason = await standby.replay_not_reached(
                self.services,
                conn,
                lsn,
                deadline,
                waiting=lambda: self._stage(Stage.COUNTING),
            )
            if reason is None:
                await self._record_reader("standby", None)
                return "standby", conn
        except BaseException:
            await close_quietly(conn)
            raise
        await close_quietly(conn)
        return await self._read_on(primary, "primary", reason)

    async def _read_on(
        self, url: str, source: str, fallback: str | None
    ) -> tuple[str, psycopg.Connection[Any]]:
        if fallback is not None:
            log.warning(
                "export reads the primary instead of the standby",
                extra={**self.log_extra, "event": "standby_fallback", "reason": fallback},
            )
        await self._record_reader(source, fallback)
        return source, await self._connect(url, blocking=True)

    async def _record_reader(self, source: str, fallback: str | None) -> None:
        attempt = self.attempt
        if not await self._update(
            lambda conn: store.read_from(conn, self.export_id, attempt, source, fallback)
        ):
            raise Superseded

    async def _copy_to_storage(self, plan: ExportPlan, key: str, export: Export) -> None:
        storage = self.services.storage
        await self._stage(Stage.COUNTING)
        source, conn = await self._reader(export)
        self.reading_standby = source == "standby"
        spool: _Spool | None = None
        try:
            if plan.spooled:
                spool = await self._spool(conn, plan)
                total = self.total = spool.rows
            else:
                try:
                    counted = await in_thread(conn, fetch_one, conn, plan.count, None)
                except psycopg.OperationalError as exc:
                    raise Transient("database_unavailable", exc) from exc
                self.total = int(counted[0])
            total = self.total
            attempt = self.attempt
            if not await self._update(
                lambda conn: store.counted(conn, self.export_id, attempt, total)
            ):
                raise Superseded
            limit = plan.format.max_rows
            if limit is not None and self.total > limit:
                raise ExportFailed(
                    plan.format.too_many_rows,
                    f"{self.total} rows, {plan.format.key} holds {limit}",
                )
            await self._stage(Stage.EXPORTING)
            blocks = self._blocks(conn, plan) if spool is None else self._replay(spool)
            stream = plan.format.encode(blocks, plan.layout)
            try:
                stored = await storage.put_stream(
                    key, stream, content_type=plan.format.content_type
                )
                self.stored_key = key
            except StorageLimitExceeded as exc:
                raise ExportFailed(FILE_TOO_LARGE, str(exc)) from exc
            except StorageError as exc:
                raise Transient(STORAGE_UNAVAILABLE, exc) from exc
            except psycopg.OperationalError as exc:
                raise Transient("database_unavailable", exc) from exc
            except OSError as exc:
                raise Transient(STORAGE_UNAVAILABLE, exc) from exc
            finally:
                # Stops the reader thread and its statement if storage gave up first.
                await blocks.aclose()
        finally:
            if spool is not None:
                spool.file.close()
            await close_quietly(conn)
        if self.rows != self.total:
            raise ExportFailed("row_count_mismatch", f"counted {self.total}, wrote {self.rows}")
        await self._stage(Stage.STORING)
        self.completing = True
        await self._complete(plan, key, stored.size, stored.sha256)

    async def _blocks(
        self, conn: psycopg.Connection[Any], plan: ExportPlan
    ) -> AsyncGenerator[bytes, None]:
        """COPY's output in blocks; counts rows and reports progress on the way."""
        reader = CopyReader(
            conn,
            plan.format.copy_statement(plan.select),
            header_lines=plan.format.header_lines,
            max_rows_per_s=self.services.settings.export_max_rows_per_s,
        )
        async for block in self._counted(reader.blocks()):
            yield block

    async def _spool(self, conn: psycopg.Connection[Any], plan: ExportPlan) -> _Spool:
        """The COPY's output in a temporary file, its rows counted on the way.

        A file of changes reads the view twice and joins the two; counting its rows first
        would cost as much again, so the statement runs once, during the counting stage,
        into a file on local disk (deleted when closed, or by the system if the process
        dies), and is stored from there. Memory holds one block and a mark per block."""
        reader = CopyReader(
            conn,
            plan.format.copy_statement(plan.select),
            header_lines=plan.format.header_lines,
            max_rows_per_s=self.services.settings.export_max_rows_per_s,
        )
        # Outlives this call: the caller closes it once the file is stored.
        spooled = tempfile.TemporaryFile(prefix="ticketexport-changes-")  # noqa: SIM115
        spool = _Spool(file=spooled)
        try:
            async for block, rows in reader.blocks():
                if block:
                    await asyncio.to_thread(spool.file.write, block)
                spool.marks.append((spool.file.tell(), rows))
                spool.rows = rows
        except psycopg.OperationalError as exc:
            spool.file.close()
            raise Transient("database_unavailable", exc) from exc
        except BaseException:
            spool.file.close()
            raise
        return spool

    async def _replay(self, spool: _Spool) -> AsyncGenerator[bytes, None]:
        """The spooled COPY output, block by block as it was read; progress on the way."""
        async for block in self._counted(_spooled_blocks(spool)):
            yield block

    async def _counted(
        self, blocks: AsyncIterator[tuple[bytes, int]]
    ) -> AsyncGenerator[bytes, None]:
        """The blocks, each with the rows read so far: those are counted, and progress is
        reported at most every PROGRESS_INTERVAL and once at the end."""
        last_progress = time.monotonic()
        async for block, rows in blocks:
            self.rows = rows
            if block:
                yield block
            now = time.monotonic()
            if now - last_progress >= PROGRESS_INTERVAL:
                last_progress = now
                await self._progress()
        await self._progress()

    async def _progress(self) -> None:
        attempt, rows = self.attempt, self.rows
        if not await self._update(lambda conn: store.progress(conn, self.export_id, attempt, rows)):
            raise Superseded

    async def _stage(self, stage: Stage) -> None:
        attempt = self.attempt
        if not await self._update(lambda conn: store.stage(conn, self.export_id, attempt, stage)):
            raise Superseded

    async def _heartbeat(self, main: asyncio.Task[Any] | None) -> None:
        """Marks the attempt alive; stops the run when the row is no longer ours."""
        interval = self.services.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                alive = await self._update_quiet(store.heartbeat)
            except (psycopg.Error, OSError):
                log.warning(
                    "heartbeat failed", extra={**self.log_extra, "event": "heartbeat_failed"}
                )
                continue
            if not alive and main is not None:
                if self.completing:
                    # Our own completion committed (the row is no longer running because it
                    # is done); cancelling now would only throw away the finished file.
                    return
                log.info(
                    "export no longer running here; cancelling",
                    extra={**self.log_extra, "event": "no_longer_running_here"},
                )
                main.cancel()
                return

    async def _still_ours(self) -> bool:
        """Whether this attempt still owns the row; True when the database cannot say."""
        try:
            # Waits for a cancel or rescue in flight to commit, then sees its outcome.
            return await self._update_quiet(store.heartbeat)
        except (psycopg.Error, OSError):
            return True

    async def _update_quiet(
        self, change: Callable[[store.Conn, str, int], Awaitable[bool]]
    ) -> bool:
        """A guarded update of this attempt's, announced to no one."""
        async with self.services.pool.connection() as conn:
            return await change(conn, self.export_id, self.attempt)

    async def _complete(self, plan: ExportPlan, key: str, size: int, sha256: str) -> None:
        try:
            await self._record_completion(plan, key, size, sha256)
        except _Refused:
            if await self._still_ours():
                # Still running as this attempt, so only the expiry refused it.
                raise ExportFailed(
                    "expired_before_completion", "retention ended before the file was recorded"
                ) from None
            raise Superseded from None

    async def _record_completion(self, plan: ExportPlan, key: str, size: int, sha256: str) -> None:
        async with self.services.pool.connection() as conn, conn.transaction():
            stored = NewFile(
                name=plan.file_name,
                size=size,
                content_type=plan.format.content_type,
                backend=self.services.storage.backend,
                object_key=key,
                sha256=sha256,
            )
            if not await store.complete(conn, self.export_id, self.attempt, stored):
                # Cancelled while storing, or the retention ended first: roll back the
                # media row, then drop the file.
                raise _Refused
            duration = time.monotonic() - self.started
            await audit.record_for_requester(
                conn,
                "export.completed",
                export_id=self.export_id,
                details={
                    "rows": self.rows,
                    "bytes": size,
                    "sha256": sha256,
                    "attempt": self.attempt,
                    "duration_s": round(duration, 3),
                    "job_id": self.job_id,
                    "format": self.format_key,
                },
            )
            await events.publish(conn, self.export_id)
        log.info(
            "export completed",
            extra={**self.log_extra, "event": "completed", "rows": self.rows, "bytes": size},
        )

    async def _fail(self, code: str) -> None:
        try:
            async with self.services.pool.connection() as conn, conn.transaction():
                await self._record_failure(
                    conn, code, duration_s=round(time.monotonic() - self.started, 3)
                )
        except (psycopg.Error, OSError):
            # The database is gone too; maintenance fails the row once it is back.
            log.exception(
                "could not record the export failure",
                extra={**self.log_extra, "event": "failure_not_recorded"},
            )

    async def _discard(self, key: str | None) -> None:
        """Remove this attempt's file, unless its completion may have committed: an
        interruption that lands after the completion must never take a recorded file."""
        if key is None or key != self.stored_key:
            # Nothing stored: a write that failed or was cancelled removed its own upload,
            # or, with the store unreachable, left it to maintenance's sweep.
            return
        if self.completing:
            try:
                async with self.services.pool.connection() as conn:
                    recorded = await store.file_recorded(conn, key)
            except (psycopg.Error, OSError):
                # Cannot tell: keep the file. Maintenance removes it once the database
                # answers again if no export records it (and this attempt no longer runs).
                log.warning(
                    "kept a file whose completion is unknown",
                    extra={**self.log_extra, "event": "kept_unknown_file"},
                )
                return
            if recorded:
                return
        try:
            await self.services.storage.delete(key)
        except (StorageError, OSError):
            log.exception(
                "could not remove a partial export file",
                extra={**self.log_extra, "event": "partial_file_left"},
            )
