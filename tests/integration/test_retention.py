"""Retention: expired files deleted and marked exactly once, whatever happens half-way."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.databases import Seeding
from tests.support.services import actor_for, services_for
from tests.support.web import running
from ticketexport.exports import maintenance, service
from ticketexport.exports.worker import ExportRun
from ticketexport.services import Services
from ticketexport.storage import StorageError, marker, probe_key
from ticketexport.storage.local import LocalStorage
from ticketexport.views.model import ListRequest


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=60, seed=5, anchor=dt.date(2026, 6, 1))


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    env = {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0"}
    async with services_for(
        seeded_url, tmp_path, env=env, storage=LocalStorage(tmp_path / "store"), claim=True
    ) as services:
        yield services


async def _completed(deps: Services, url: str, count: int) -> list[dict[str, Any]]:
    """`count` exports run to completion (distinct sorts and searches: no double submit)."""
    user = actor_for(url)
    done = []
    for n in range(count):
        request = ListRequest(view="all", q=str(n), sort=None, filters={}, page=None)
        requested = await service.request_export(deps, user, request, client_ip=None)
        row = _row(url, requested.export_id)
        await ExportRun(deps, requested.export_id, row["procrastinate_job_id"]).run()
        row = _row(url, requested.export_id)
        assert row["status"] == "completed", row["error_code"]
        done.append(row)
    return done


def _row(url: str, export_id: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(
            "SELECT e.*, m.object_key, m.expired_at AS media_expired_at FROM export_jobs e "
            "LEFT JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
            (export_id,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def _expire(url: str, *exports: dict[str, Any], at: str = "now()") -> None:
    """Move exports' retention so that it ends at `at` (SQL)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for export in exports:
            conn.execute(
                f"UPDATE export_jobs SET requested_at = {at} - interval '73 hours', "
                f"expires_at = {at} WHERE id = %s",
                (export["id"],),
            )


def _audited(url: str, export_id: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_log WHERE export_id = %s AND action = 'export.expired'",
            (export_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _stored(deps: Services, key: str) -> bool:
    assert isinstance(deps.storage, LocalStorage)
    return (deps.storage.root / key).is_file()


async def test_expiry_boundary_idempotency_and_a_missing_object(
    deps: Services, seeded_url: str
) -> None:
    kept, due, gone = await _completed(deps, seeded_url, 3)
    _expire(seeded_url, kept, at="now() + interval '1 minute'")
    # Due the instant its retention ends: expires_at <= now() at the run.
    _expire(seeded_url, due, gone)
    assert isinstance(deps.storage, LocalStorage)
    (deps.storage.root / gone["object_key"]).unlink()  # already missing: no error

    report = await maintenance.run_maintenance(deps)
    assert (report.expired, report.cleanup_failures) == (2, 0)
    for export in (due, gone):
        row = _row(seeded_url, str(export["id"]))
        assert row["status"] == "expired"
        assert row["media_expired_at"] is not None
        assert not _stored(deps, export["object_key"])
        assert _audited(seeded_url, str(export["id"])) == 1
    row = _row(seeded_url, str(kept["id"]))
    assert (row["status"], row["media_expired_at"]) == ("completed", None)
    assert _stored(deps, kept["object_key"])

    again = await maintenance.run_maintenance(deps)
    assert (again.expired, again.cleanup_failures, again.orphans_removed) == (0, 0, 0)
    assert [_audited(seeded_url, str(e["id"])) for e in (due, gone, kept)] == [1, 1, 0]
    assert _stored(deps, kept["object_key"])


class _SlowDeletes(LocalStorage):
    """Real files; each delete takes a moment, so two runs overlap for certain."""

    async def delete(self, key: str) -> None:
        await asyncio.sleep(0.05)
        await super().delete(key)


async def test_two_runs_at_once_clean_each_export_exactly_once(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    exports = await _completed(deps, seeded_url, 6)
    _expire(seeded_url, *exports)
    slow = _SlowDeletes(tmp_path / "store")
    async with services_for(seeded_url, tmp_path, storage=slow) as other:
        first, second = await asyncio.gather(
            maintenance.run_maintenance(dataclasses.replace(deps, storage=slow)),
            maintenance.run_maintenance(other),
        )
    assert first.expired + second.expired == 6
    assert first.expired > 0, "the runs did not overlap"
    assert second.expired > 0, "the runs did not overlap"
    for export in exports:
        assert _row(seeded_url, str(export["id"]))["status"] == "expired"
        assert _audited(seeded_url, str(export["id"])) == 1
        assert not _stored(deps, export["object_key"])


class _Crash(BaseException):
    """The process dies: nothing after this point runs."""


class _CrashAfterDelete(LocalStorage):
    async def delete(self, key: str) -> None:
        await super().delete(key)
        raise _Crash


async def test_a_crash_between_the_delete_and_the_mark_is_finished_by_the_next_run(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    (export,) = await _completed(deps, seeded_url, 1)
    _expire(seeded_url, export)
    crashing = dataclasses.replace(deps, storage=_CrashAfterDelete(tmp_path / "store"))
    with pytest.raises(_Crash):
        await maintenance.run_maintenance(crashing)
    row = _row(seeded_url, str(export["id"]))
    assert not _stored(deps, export["object_key"])
    assert (row["status"], row["media_expired_at"]) == ("completed", None)
    assert _audited(seeded_url, str(export["id"])) == 0

    report = await maintenance.run_maintenance(deps)
    assert report.expired == 1
    row = _row(seeded_url, str(export["id"]))
    assert row["status"] == "expired"
    assert row["media_expired_at"] is not None
    assert _audited(seeded_url, str(export["id"])) == 1


class _Refuses(LocalStorage):
    """Real files, but one object cannot be deleted (a permissions or lock problem)."""

    def __init__(self, root: Path, refused: str) -> None:
        super().__init__(root)
        self.refused = refused

    async def delete(self, key: str) -> None:
        if key == self.refused:
            raise StorageError("access denied")
        await super().delete(key)


async def test_an_undeletable_object_blocks_nothing_is_counted_and_retried(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    stuck, *others = await _completed(deps, seeded_url, 3)
    _expire(seeded_url, stuck, *others)
    refusing = dataclasses.replace(deps, storage=_Refuses(tmp_path / "store", stuck["object_key"]))
    report = await maintenance.run_maintenance(refusing)
    assert (report.expired, report.cleanup_failures) == (2, 1)
    for export in others:
        assert _row(seeded_url, str(export["id"]))["status"] == "expired"
    row = _row(seeded_url, str(stuck["id"]))
    assert (row["status"], row["cleanup_failures"]) == ("completed", 1)
    assert _stored(deps, stuck["object_key"])

    async with running(seeded_url) as web:
        text = await (await web.client.get("/metrics")).text()
    assert re.search(r"^ticketexport_file_cleanup_failures_total 1\.0$", text, re.M), text
    assert re.search(r"^ticketexport_expired_files_pending 1\.0$", text, re.M), text

    again = await maintenance.run_maintenance(refusing)
    assert (again.expired, again.cleanup_failures) == (0, 1)
    fixed = await maintenance.run_maintenance(deps)
    assert (fixed.expired, fixed.cleanup_failures) == (1, 0)
    row = _row(seeded_url, str(stuck["id"]))
    assert (row["status"], row["cleanup_failures"]) == ("expired", 2)
    assert not _stored(deps, stuck["object_key"])
    assert _audited(seeded_url, str(stuck["id"])) == 1


async def test_the_sweep_removes_what_no_export_records_and_nothing_else(
    deps: Services, seeded_url: str
) -> None:
    (done,) = await _completed(deps, seeded_url, 1)
    request = ListRequest(view="all", q="", sort="oldest", filters={}, page=None)
    requested = await service.request_export(deps, actor_for(seeded_url), request, client_ip=None)
    running_export = _row(seeded_url, requested.export_id)
    storage = deps.storage
    assert isinstance(storage, LocalStorage)

    async def put(key: str) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield b"x"

        await storage.put_stream(key, one(), content_type="text/csv")

    done_id, running_id = str(done["id"]), str(running_export["id"])
    # An earlier attempt of a completed export stored a file it never recorded.
    await put(f"exports/{done_id}/0/tickets.csv")
    # The running attempt's file (not recorded yet) stays; its dead predecessor's goes.
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET status = 'running', attempt = 2, heartbeat_at = now(), "
            "progress_at = now() WHERE id = %s",
            (running_id,),
        )
    await put(f"exports/{running_id}/2/tickets.csv")
    await put(f"exports/{running_id}/1/tickets.csv")
    (storage.root / f"exports/{running_id}/1/tickets.csv.0123.part").write_bytes(b"half")
    # Not an export key: not ours to judge.
    await put("exports/readme.txt")
    stale, fresh = probe_key(now=1.0), probe_key()
    await put(stale)
    await put(fresh)

    report = await maintenance.run_maintenance(deps)
    # The dead attempt's file and its unfinished upload go together.
    assert report.orphans_removed == 2
    assert report.probes_removed == 1
    assert sorted(await storage.list_keys()) == sorted(
        [
            done["object_key"],
            f"exports/{running_id}/2/tickets.csv",
            "exports/readme.txt",
            fresh,
            marker.MARKER_KEY,
        ]
    )
    assert await storage.pending_uploads() == []


async def test_job_rows_of_long_finished_exports_are_pruned(
    deps: Services, seeded_url: str
) -> None:
    old, recent = await _completed(deps, seeded_url, 2)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = ANY(%s)",
            ([old["procrastinate_job_id"], recent["procrastinate_job_id"]],),
        )
        conn.execute(
            "UPDATE export_jobs SET finished_at = now() - interval '73 hours' WHERE id = %s",
            (old["id"],),
        )
    report = await maintenance.run_maintenance(deps)
    assert report.jobs_pruned == 1
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT args->>'export_id' FROM procrastinate_jobs WHERE queue_name = 'exports'"
        ).fetchall()
    assert left == [(str(recent["id"]),)]
