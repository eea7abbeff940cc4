"""Exports read from a streaming hot standby: the same bytes as on the primary, waiting for
replay to reach the click, falling back to the primary past the lag limit or when the
standby goes away. The tests build the primary and the standby themselves."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg._conninfo_attempts
import psycopg._conninfo_attempts_async
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.clusters import Cluster, ReplicatedPair, replicated_pair
from tests.support.databases import with_dbname
from tests.support.exports import csv_in_transaction
from tests.support.services import actor_for, services_for
from tests.support.web import running
from tests.support.workers import (
    Workers,
    export_row,
    run_async,
    storage_files,
    wait_for,
    wait_rows,
    wait_status,
)
from ticketexport import db, seed
from ticketexport.domain.exports import copy_application_name
from ticketexport.exports import service
from ticketexport.exports.worker import ExportRun
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

TICKETS = 3000
THROTTLE = 3000
TEMPLATE = "te_standby_template"


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair() as created:
        with psycopg.connect(created.primary.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        template = created.primary.url(TEMPLATE)
        db.migrate(template)
        with psycopg.connect(template, autocommit=True) as conn:
            seed.seed(conn, tickets=TICKETS, seed=5, anchor=None)
        yield created


@pytest.fixture
def urls(pair: ReplicatedPair) -> Iterator[tuple[str, str]]:
    """A fresh seeded database on the primary, and the same database on the standby."""
    pair.ensure_standby()
    name = f"te_standby_{secrets.token_hex(4)}"
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    pair.wait_replayed()
    try:
        yield pair.primary.url(name), pair.standby.url(name)
    finally:
        pair.ensure_standby()
        with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _click(url: str, view: str = "all", sort: str | None = "priority") -> str:
    async def go() -> str:
        async with services_for(url) as services:
            request = ListRequest(view=view, q="", sort=sort, filters={}, page=None)
            requested = await service.request_export(
                services, actor_for(url), request, client_ip=None
            )
            return requested.export_id

    return str(run_async(go()))


def _copies(url: str, export_id: str) -> int:
    """Connections of this export whose statement is its COPY (running, or done and the
    rows still on their way to the throttled worker)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND query ILIKE 'COPY%%'",
            (copy_application_name(export_id),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _stored(home: Path, row: dict[str, Any]) -> bytes:
    return (home / "exports" / row["object_key"]).read_bytes()


def _standby_env(standby: str, max_lag: float = 30) -> dict[str, str]:
    return {
        "TICKETEXPORT_EXPORT_DATABASE_URL": standby,
        "TICKETEXPORT_STANDBY_MAX_LAG_SECONDS": str(max_lag),
    }


def test_an_export_read_on_the_standby_is_the_one_read_on_the_primary(
    pair: ReplicatedPair, urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    primary, standby = urls
    with psycopg.connect(primary) as reference:
        reference.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reference.execute("SELECT 1")
        export_id = _click(primary)
        # Written after the click and replayed before the read: not in the file.
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("UPDATE tickets SET title = 'changed after the click'")
        pair.wait_replayed()
        # The same statements, as of the same snapshot, read on the primary (while the
        # export waits: once it is done, maintenance may prune the versions they read).
        queued = export_row(primary, export_id)
        with psycopg.connect(primary, autocommit=True) as conn:
            on_primary, _ = csv_in_transaction(
                conn, queued["request"], queued["as_of"], snapshot=queued["as_of_snapshot"]
            )
        workers.start(primary, max_rows_per_s=THROTTLE, extra_env=_standby_env(standby))
        running_row = wait_rows(primary, export_id, 0.2, timeout=60, workers=workers)
        assert _copies(standby, export_id) == 1, (
            "the COPY is not running on the standby",
            running_row["read_from"],
            running_row["standby_fallback"],
            workers.outputs(),
        )
        assert _copies(primary, export_id) == 0, "the primary runs the export's COPY"
        row = wait_status(primary, export_id, {"completed", "failed"}, timeout=60, workers=workers)
        assert row["status"] == "completed", row["error_code"]
        expected, _ = csv_in_transaction(reference, row["request"], row["as_of"])
    assert (row["read_from"], row["standby_fallback"]) == ("standby", None)
    stored = _stored(home, row)
    assert stored == on_primary == expected
    assert b"changed after the click" not in stored
    assert row["rows_done"] == row["rows_total"] == TICKETS


def test_a_standby_behind_the_click_makes_the_worker_wait(
    urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    primary, standby = urls
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    export_id = _click(primary)
    workers.start(primary, extra_env=_standby_env(standby, max_lag=120))
    # The claim sets `running`; the attempt's first stage, counting, is the next update.
    wait_for(
        "the export to reach its counting stage",
        lambda: (row := export_row(primary, export_id))["stage"] == "counting" and row,
        timeout=60,
        workers=workers,
    )
    # Held at counting: nothing read on either server while replay is paused.
    waiting_since = time.monotonic()
    while time.monotonic() - waiting_since < 2.0:
        row = export_row(primary, export_id)
        assert (row["status"], row["stage"], row["rows_total"]) == ("running", "counting", None)
        assert _copies(primary, export_id) == _copies(standby, export_id) == 0
        time.sleep(0.2)
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    row = wait_status(primary, export_id, {"completed", "failed"}, timeout=60, workers=workers)
    assert (row["status"], row["read_from"]) == ("completed", "standby")
    assert row["rows_done"] == TICKETS


def test_past_the_lag_limit_the_primary_gives_the_same_file(
    urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    primary, standby = urls
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    with psycopg.connect(primary) as reference:
        reference.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reference.execute("SELECT 1")
        export_id = _click(primary)
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("DELETE FROM tickets WHERE id % 3 = 0")
        workers.start(primary, extra_env=_standby_env(standby, max_lag=1))
        row = wait_status(primary, export_id, {"completed", "failed"}, timeout=60, workers=workers)
        expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
    assert row["status"] == "completed", row["error_code"]
    assert (row["read_from"], row["standby_fallback"]) == ("primary", "lagging")
    assert _stored(home, row) == expected
    assert row["rows_total"] == total == TICKETS
    assert "standby_fallback" in workers.whole_output()


def _active_copy(url: str, export_id: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND query ILIKE 'COPY%%' AND state = 'active'",
            (copy_application_name(export_id),),
        ).fetchone()
    return row is not None and row[0] > 0


def _bulk(pair: ReplicatedPair, primary: str) -> None:
    """Enough rows that the standby is still sending a COPY's output well after it starts,
    replayed on the standby. Loopback socket buffers grow to tens of megabytes (a receive
    buffer of up to 32 MB, net.ipv4.tcp_rmem, on this machine), and the export's columns
    show the title: 150,000 titles of about 470 characters are some 70 MB, so at a fifth
    read the standby has more left to send than the buffers hold. With short titles (7 MB
    in all) the whole output could sit in the buffers before the check below."""
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tickets (title, description, status_id, priority_id) "
            "SELECT 'Bulk ' || g || repeat(' padding', 58), 'x', 1 + g % 6, 1 + g % 4 "
            "FROM generate_series(1, 150000) AS g"
        )
    pair.wait_replayed()


def test_a_standby_that_stops_mid_export_ends_in_a_completed_file(
    pair: ReplicatedPair, urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    primary, standby = urls
    _bulk(pair, primary)
    with psycopg.connect(primary) as reference:
        reference.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reference.execute("SELECT 1")
        export_id = _click(primary)
        workers.start(primary, max_rows_per_s=25_000, extra_env=_standby_env(standby, 5))
        running_row = wait_rows(primary, export_id, 0.2, timeout=60, workers=workers)
        assert _active_copy(standby, export_id), (
            "the standby's COPY is not running",
            running_row["read_from"],
            running_row["standby_fallback"],
            workers.outputs(),
        )
        pair.standby.stop("immediate")
        row = wait_status(primary, export_id, {"completed", "failed"}, timeout=120, workers=workers)
        expected, _ = csv_in_transaction(reference, row["request"], row["as_of"])
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 2
    assert (row["read_from"], row["standby_fallback"]) == ("primary", "unreachable")
    stored = _stored(home, row)
    assert stored == expected
    assert row["sha256"] == hashlib.sha256(stored).hexdigest()
    wait_for(
        "only the completed file in storage",
        lambda: storage_files(home) == [row["object_key"]],
        timeout=10,
        workers=workers,
    )


async def test_healthz_and_metrics_report_the_standby_without_failing(
    urls: tuple[str, str],
) -> None:
    primary, standby = urls
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    async with running(
        primary, export_database_url=standby, standby_max_lag_seconds=0.5, health_cache_seconds=0
    ) as web:
        health = await web.client.get("/healthz")
        body = await health.json()
        assert health.status == 200, body
        assert body["standby"] == "ok"
        with psycopg.connect(standby, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        with psycopg.connect(primary, autocommit=True) as conn:
            for _ in range(3):
                conn.execute("UPDATE tickets SET title = title || '.' WHERE id < 50")
                await asyncio.sleep(0.4)
        health = await web.client.get("/healthz")
        body = await health.json()
        assert health.status == 200, body
        assert body["standby"] == "lagging"
        assert body["details"]["standby"]["lag_seconds"] > 0.5
        metrics = await (await web.client.get("/metrics")).text()
        assert "ticketexport_standby_up 1.0" in metrics
        assert "ticketexport_standby_replay_lag_seconds" in metrics

    async with running(
        primary, export_database_url=with_dbname(standby, "no_such_database")
    ) as web:
        health = await web.client.get("/healthz")
        body = await health.json()
        assert health.status == 200, body
        assert body["standby"] == "unreachable"
        metrics = await (await web.client.get("/metrics")).text()
        assert "ticketexport_standby_up 0.0" in metrics


# --- only a standby of this primary, and only the connection that was checked -----------


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[ReplicatedPair]:
    """A primary and standby of another cluster, whose WAL starts far beyond any position
    `pair` reaches: by its replay position alone, its standby has replayed past any click."""
    with replicated_pair(wal_start="00000001000000FF00000000") as other:
        yield other


def _dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def test_a_standby_of_another_cluster_is_never_read(
    urls: tuple[str, str], home: Path, workers: Workers, elsewhere: ReplicatedPair
) -> None:
    primary, _ = urls
    name = _dbname(primary)
    # The same database name and schema on another cluster, holding other tickets.
    with psycopg.connect(elsewhere.primary.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        db.migrate(elsewhere.primary.url(name))
        with psycopg.connect(elsewhere.primary.url(name), autocommit=True) as conn:
            seed.seed(conn, tickets=TICKETS, seed=9, anchor=None)
        elsewhere.wait_replayed()
        foreign = elsewhere.standby.url(name)
        with psycopg.connect(primary) as reference:
            reference.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reference.execute("SELECT 1")
            export_id = _click(primary)
            workers.start(primary, extra_env=_standby_env(foreign, max_lag=2))
            row = wait_status(
                primary, export_id, {"completed", "failed"}, timeout=90, workers=workers
            )
            expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
        assert row["status"] == "completed", (row["error_code"], workers.outputs())
        assert (row["read_from"], row["standby_fallback"]) == ("primary", "other_cluster")
        assert _stored(home, row) == expected
        assert row["rows_total"] == total == TICKETS
        assert _copies(foreign, export_id) == 0

        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")

        async def health() -> tuple[int, dict[str, Any], str]:
            async with running(primary, export_database_url=foreign) as web:
                response = await web.client.get("/healthz")
                metrics = await (await web.client.get("/metrics")).text()
                return response.status, await response.json(), metrics

        status, body, metrics = run_async(health())
        assert body["standby"] == "other_cluster", body
        # Reported, and never a reason for 503: the primary is what exports read instead.
        assert (status, body["status"]) == (200, "ok")
        assert "ticketexport_standby_up 0.0" in metrics
    finally:
        with psycopg.connect(elsewhere.primary.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def second_standby(pair: ReplicatedPair) -> Cluster:
    """Another streaming standby of `pair`'s primary, for a URL that balances the two."""
    return pair.add_standby()


class _RoundRobin:
    """What a load balancer in front of the standbys decides, made deterministic: each new
    export connection goes to the next host in turn. psycopg shuffles the hosts of a
    `load_balance_hosts=random` URL at random; here the shuffle rotates them instead."""

    def __init__(self, first: int) -> None:
        self.turn = first

    def __call__(self, attempts: list[dict[str, Any]]) -> None:
        if not str(attempts[0].get("application_name", "")).startswith("ticketexport-export:"):
            return  # the standby pool's own connections (status reports) keep their order
        k = self.turn % len(attempts)
        attempts[:] = attempts[k:] + attempts[:k]
        self.turn += 1


def test_a_load_balanced_standby_url_never_yields_a_stale_file(
    pair: ReplicatedPair,
    urls: tuple[str, str],
    second_standby: Cluster,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary, _ = urls
    name = _dbname(primary)
    pair.wait_replayed(standby=second_standby)
    behind = second_standby.url(name)
    with psycopg.connect(behind, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        # Before the click, and replayed by one standby only: the other stays behind it.
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("UPDATE tickets SET title = 'changed before the click ' || id")
        pair.wait_replayed()
        balanced = make_conninfo(
            host="127.0.0.1,127.0.0.1",
            port=f"{pair.standby.port},{second_standby.port}",
            dbname=name,
            user="postgres",
            connect_timeout=5,
            load_balance_hosts="random",
        )
        with psycopg.connect(primary) as reference:
            reference.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reference.execute("SELECT 1")
            # Each order the balancer may hand out the two standbys in.
            for first in (0, 1):
                turns = _RoundRobin(first)
                monkeypatch.setattr(psycopg._conninfo_attempts, "shuffle", turns)
                monkeypatch.setattr(psycopg._conninfo_attempts_async, "shuffle", turns)
                export_id = _click(primary, sort="oldest" if first else "newest")
                row = run_async(_run_here(primary, home, export_id, balanced))
                expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
                assert row["status"] == "completed", row["error_code"]
                assert turns.turn > first, "no export connection went through the balancer"
                stored = _stored(home, row)
                assert b"changed before the click" in stored
                assert stored == expected, (first, row["read_from"], row["standby_fallback"])
                assert row["rows_total"] == total == TICKETS
    finally:
        with psycopg.connect(behind, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


async def _run_here(primary: str, home: Path, export_id: str, standby: str) -> dict[str, Any]:
    """One attempt of the export, in this process (where the balancer is scripted)."""
    env = _standby_env(standby, max_lag=2)
    async with services_for(primary, home, env=env) as services:
        await ExportRun(services, export_id, None).run()
    return export_row(primary, export_id)


def test_a_standby_url_that_is_not_in_recovery_reads_the_primary_and_says_so(
    urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    """TICKETEXPORT_EXPORT_DATABASE_URL naming a server that is no standby (here the primary
    itself, as after a promotion): the export reads the primary, records why, and /healthz
    and /metrics tell the operator, without failing."""
    primary, _ = urls
    export_id = _click(primary)
    queued = export_row(primary, export_id)
    with psycopg.connect(primary, autocommit=True) as conn:
        expected, _ = csv_in_transaction(
            conn, queued["request"], queued["as_of"], snapshot=queued["as_of_snapshot"]
        )
    workers.start(primary, extra_env=_standby_env(primary, max_lag=2))
    row = wait_status(primary, export_id, {"completed", "failed"}, timeout=60, workers=workers)
    assert row["status"] == "completed", row["error_code"]
    assert (row["read_from"], row["standby_fallback"]) == ("primary", "not_in_recovery")
    assert _stored(home, row) == expected

    async def report() -> tuple[int, dict[str, Any], str]:
        async with running(primary, export_database_url=primary) as web:
            health = await web.client.get("/healthz")
            metrics = await (await web.client.get("/metrics")).text()
            return health.status, await health.json(), metrics

    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    status, body, metrics = run_async(report())
    assert status == 200, body
    assert body["standby"] == "not_in_recovery"
    assert "ticketexport_standby_up 0.0" in metrics
    # The fallback metric counts the export by the server it read and why.
    assert (
        'ticketexport_export_reads_total{fallback="not_in_recovery",source="primary"} 1.0'
        in metrics
    ), [line for line in metrics.splitlines() if "export_reads" in line]


@contextlib.contextmanager
def _conflicts_at_once(pair: ReplicatedPair) -> Iterator[None]:
    """The standby cancels a query in the way of replay at once instead of after 30 s."""
    with psycopg.connect(pair.standby.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(pair.standby.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
            conn.execute("SELECT pg_reload_conf()")


def _conflict(primary: str) -> None:
    """Row versions the standby's running COPY still sees, removed on the primary: replaying
    their removal conflicts with the COPY, which the standby cancels."""
    with psycopg.connect(primary, autocommit=True) as conn:
        # One new version (the same values: no history kept) and its predecessor vacuumed
        # away; replay cancels every standby query whose snapshot is older.
        conn.execute("UPDATE tickets SET title = title WHERE id = (SELECT min(id) FROM tickets)")
        conn.execute("VACUUM tickets")


def _conflicts(primary: str, export_id: str) -> int:
    return int(export_row(primary, export_id)["standby_conflicts"])


def test_recovery_conflicts_retry_on_the_standby_then_read_the_primary(
    pair: ReplicatedPair, urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    primary, standby = urls
    _bulk(pair, primary)
    export_id = _click(primary)
    queued = export_row(primary, export_id)
    with psycopg.connect(primary, autocommit=True) as conn:
        expected, _ = csv_in_transaction(
            conn, queued["request"], queued["as_of"], snapshot=queued["as_of_snapshot"]
        )
    with _conflicts_at_once(pair):
        # Each attempt's COPY is still sending (more than the socket buffers hold) when its
        # conflict comes; a finished statement holds no snapshot to conflict with.
        worker = workers.start(primary, max_rows_per_s=10_000, extra_env=_standby_env(standby))
        # With no delay allowed, any pruning of row versions in this database (the job
        # queue's, the export row's own heartbeat) cancels the standby's COPY too: an attempt
        # can be cut short before this test's conflict comes, and that counts the same.
        for attempt in (1, 2):
            wait_for(
                f"attempt {attempt}'s COPY on the standby, or its conflict",
                lambda attempt=attempt: (
                    _conflicts(primary, export_id) >= attempt
                    or (
                        export_row(primary, export_id)["attempt"] == attempt
                        and _active_copy(standby, export_id)
                    )
                ),
                timeout=60,
                workers=workers,
            )
            if _conflicts(primary, export_id) < attempt:
                _conflict(primary)
            wait_for(
                f"attempt {attempt}'s conflict to be recorded",
                lambda attempt=attempt: _conflicts(primary, export_id) == attempt,
                timeout=30,
                workers=workers,
            )
        row = wait_status(primary, export_id, {"completed", "failed"}, timeout=90, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 3
    assert (row["read_from"], row["standby_fallback"]) == ("primary", "conflicts")
    assert _stored(home, row) == expected
    assert worker.events(export_id).count("standby_conflict") == 2


def test_changes_read_on_the_standby_are_the_changes_read_on_the_primary(
    pair: ReplicatedPair, urls: tuple[str, str], home: Path, workers: Workers
) -> None:
    """A file of changes reads both clicks' versions on the standby: the same bytes as the
    same statements give on the primary."""
    primary, standby = urls
    base = _click(primary)
    workers.start(primary)
    done = wait_status(primary, base, {"completed", "failed"}, timeout=60, workers=workers)
    assert done["status"] == "completed", (done["error_code"], workers.outputs())
    workers.stop_all()
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET title = 'changed between' WHERE id % 4 = 0")
        conn.execute("UPDATE contacts SET first_name = 'Renamed' WHERE id % 5 = 0")
        conn.execute("DELETE FROM tickets WHERE id % 9 = 0")

    async def changes() -> str:
        async with services_for(primary) as services:
            requested = await service.request_changes(
                services, actor_for(primary), base, client_ip=None
            )
            return requested.export_id

    delta = str(run_async(changes()))
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET title = 'changed after the click'")
    pair.wait_replayed()
    queued = export_row(primary, delta)
    with psycopg.connect(primary, autocommit=True) as conn:
        on_primary, total = csv_in_transaction(
            conn, queued["request"], queued["as_of"], snapshot=queued["as_of_snapshot"]
        )
    workers.start(primary, extra_env=_standby_env(standby))
    row = wait_status(primary, delta, {"completed", "failed"}, timeout=60, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert (row["read_from"], row["standby_fallback"]) == ("standby", None)
    stored = _stored(home, row)
    assert stored == on_primary
    assert b"changed after the click" not in stored
    assert b"changed between" in stored
    assert row["rows_done"] == row["rows_total"] == total > 0
