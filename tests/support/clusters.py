"""Throw-away PostgreSQL clusters the tests build themselves: a primary and its streaming
hot standby, from the server binaries on this machine (the system's or the embedded
package's), run as the `postgres` account when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from tests.support.components import missing_component
from tests.support.servers import free_port
from ticketexport.embedded import package_bin

_NEEDED = ("initdb", "pg_ctl", "pg_basebackup", "pg_resetwal", "postgres")


def server_binaries() -> Path:  # noqa: RET503 - missing_component never returns
    """A directory holding initdb, pg_ctl, pg_basebackup and postgres; the newest system
    installation first, then the embedded package's. Missing: a missing component."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    bundled = package_bin()
    if bundled is not None:
        candidates.append(bundled)
    for directory in candidates:
        if all((directory / name).exists() for name in _NEEDED):
            return directory
    missing_component("no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) found")


def _owner() -> pwd.struct_passwd | None:
    """The account the server runs as: postgres when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        missing_component("running as root needs a 'postgres' system account for initdb")


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    owner = _owner()
    if owner is not None:
        argv = ["runuser", "-u", owner.pw_name, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[-1]).name}: {proc.stderr.strip()[-800:]}")
    return proc


@dataclasses.dataclass
class Cluster:
    """One server: its data directory, port and socket directory."""

    bindir: Path
    data: Path
    port: int
    sockets: Path

    def url(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, connect_timeout=5
        )

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], check=check)

    def start(self) -> None:
        self.ctl(
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data / "server.log"),
            "-o",
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-w", "-m", mode, "stop", check=False)

    def running(self) -> bool:
        return self.ctl("status", check=False).returncode == 0

    def log_tail(self) -> str:
        path = self.data / "server.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-3000:]
        return ""


class ReplicatedPair:
    """A primary and a streaming hot standby of it, on loopback ports (and more standbys
    on request).

    `wal_start` (a WAL file name) starts the primary's WAL there instead of at the
    beginning, as pg_resetwal does: a cluster whose positions are far ahead of another's.
    """

    def __init__(self, root: Path, *, wal_start: str | None = None) -> None:
        bindir = server_binaries()
        self.root = root
        self.wal_start = wal_start
        self.primary = Cluster(bindir, root / "primary", free_port(), root / "sockets")
        self.standby = Cluster(bindir, root / "standby", free_port(), root / "sockets")
        self.more: list[Cluster] = []

    def create(self) -> None:
        self.primary.sockets.mkdir()
        owner = _owner()
        if owner is not None:
            for path in (self.root, self.primary.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        _run(
            [
                str(self.primary.bindir / "initdb"),
                "-D",
                str(self.primary.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        with (self.primary.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            # Throw-away data: durability only costs time. Replication stays on.
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            conf.write("max_wal_senders = 6\nwal_level = replica\n")
        if self.wal_start is not None:
            _run(
                [
                    str(self.primary.bindir / "pg_resetwal"),
                    "-l",
                    self.wal_start,
                    str(self.primary.data),
                ]
            )
        self.primary.start()
        self._base_backup(self.standby)
        self.standby.start()
        self.wait_for_standby()

    def _base_backup(self, standby: Cluster) -> None:
        _run(
            [
                str(self.primary.bindir / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        )

    def add_standby(self) -> Cluster:
        """One more streaming hot standby of the primary, running and replaying."""
        standby = Cluster(
            self.primary.bindir,
            self.root / f"standby-{len(self.more) + 2}",
            free_port(),
            self.primary.sockets,
        )
        self._base_backup(standby)
        self.more.append(standby)
        standby.start()
        self.wait_for_standby(standby)
        return standby

    def wait_for_standby(self, standby: Cluster | None = None, timeout: float = 60) -> None:
        standby = standby or self.standby
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(standby.url(), autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row == (True,):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby never came up:\n{standby.log_tail()}")
            time.sleep(0.1)

    def ensure_standby(self) -> None:
        """The standby running and replaying (a test may have stopped or paused it)."""
        if not self.standby.running():
            self.standby.start()
        self.wait_for_standby()
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_replayed(self, timeout: float = 30, standby: Cluster | None = None) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect((standby or self.standby).url(), autocommit=True) as conn:
            while True:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)
                ).fetchone()
                if done == (True,):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError("the standby did not catch up")
                time.sleep(0.05)

    def destroy(self) -> None:
        for standby in (*self.more, self.standby):
            standby.stop("immediate")
        self.primary.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def replicated_pair(*, wal_start: str | None = None) -> Iterator[ReplicatedPair]:
    # Under /tmp, not the run directory: the server account must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="te-replicas-"))
    pair = ReplicatedPair(root, wal_start=wal_start)
    try:
        pair.create()
        yield pair
    finally:
        pair.destroy()


def linguistic_initdb_args() -> list[str]:
    """initdb arguments for a server whose default collation is linguistic (ICU en-US)."""
    return ["--locale-provider=icu", "--icu-locale=en-US", "--locale=C.UTF-8"]


class IcuServer:
    """A single throw-away server whose default collation is ICU's en-US: what a suite that
    promises locale independence must also pass on. The embedded package is built without
    ICU, so the system's server binaries are needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster = Cluster(server_binaries(), root / "data", free_port(), root / "sockets")

    def create(self) -> None:
        self.cluster.sockets.mkdir()
        owner = _owner()
        if owner is not None:
            for path in (self.root, self.cluster.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        proc = _run(
            [
                str(self.cluster.bindir / "initdb"),
                "-D",
                str(self.cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                *linguistic_initdb_args(),
            ],
            check=False,
        )
        if proc.returncode != 0:
            if "ICU" in proc.stderr or "icu" in proc.stderr:
                missing_component(f"no PostgreSQL server built with ICU: {proc.stderr.strip()}")
            raise RuntimeError(f"initdb: {proc.stderr.strip()[-800:]}")
        with (self.cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            # Throw-away data: durability only costs time.
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            conf.write("max_connections = 300\n")
        self.cluster.start()

    def destroy(self) -> None:
        self.cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def icu_server() -> Iterator[Cluster]:
    """A running server whose default collation is ICU en-US, removed afterwards."""
    # Under /tmp, not the run directory: the server account must be able to reach it.
    server = IcuServer(Path(tempfile.mkdtemp(prefix="te-icu-")))
    try:
        server.create()
        yield server.cluster
    finally:
        server.destroy()
