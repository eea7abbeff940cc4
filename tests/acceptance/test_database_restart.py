"""Promise 6 across a PostgreSQL restart: a throwaway cluster restarted under a live export."""

from __future__ import annotations

import contextlib
import dataclasses
import os
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
    export_row,
    request_export,
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
    user: str | None
    template: str

    def pg_ctl(self, *args: str) -> None:
        embedded._run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args])


def _pg_bindir() -> Path | None:
    """The system's PostgreSQL binaries, else the ones bundled with pgserver."""
    found = embedded._find_pg_bin()
    if found is not None:
        return found
    try:
        import pgserver
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "initdb").exists() else None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _pg_bindir()
    if bindir is None:
        missing_component("no initdb/pg_ctl binaries (system PostgreSQL or pgserver)")
        raise AssertionError  # unreachable: missing_component skips or fails
    home = Path(tempfile.mkdtemp(prefix="te-restart-"))
    # The server may run as the postgres account (when tests run as root): it must reach
    # its data directory through this one.
    home.chmod(0o755)
    try:
        started = contextlib.contextmanager(embedded._initdb_url)
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
                user="postgres" if os.geteuid() == 0 else None,
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
