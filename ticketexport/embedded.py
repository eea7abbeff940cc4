"""An embedded PostgreSQL under TICKETEXPORT_HOME for when DATABASE_URL is unset."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

# platformdirs (used by pgserver) warns about a missing XDG_RUNTIME_DIR on servers; it is
# harmless and would break the one-line output of CLI commands.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


class EmbeddedError(RuntimeError):
    """The embedded server could not be started."""


def _pgserver_url(data: Path) -> Iterator[str]:
    from pgserver.postgres_server import get_server

    # "stop" shuts the server down when the last process that asked for it exits,
    # so `serve` and `worker` started separately share one server safely.
    server = get_server(data, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def _find_pg_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _run_as(user: str | None, argv: list[str]) -> None:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise EmbeddedError(f"{Path(argv[0]).name} failed: {proc.stderr.strip()[-500:]}")


def _initdb_url(data: Path, bindir: Path) -> Iterator[str]:
    # PostgreSQL refuses to run as root; hand the data directory to the postgres account.
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise EmbeddedError("running as root needs a 'postgres' system account") from None
        user = "postgres"
    # Unix socket paths are limited to about 100 bytes, so the socket lives in a short
    # private directory rather than beside a possibly deep data directory.
    sockdir = Path(tempfile.mkdtemp(prefix="te-pg-"))
    if user is not None:
        for path in (data.parent, sockdir):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(data, pw.pw_uid, pw.pw_gid)
        _run_as(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )
    _run_as(
        user,
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "server.log"),
            "-o",
            f"-k {sockdir} -c listen_addresses=''",
            "start",
        ],
    )
    try:
        yield f"postgresql://postgres@/postgres?host={quote(str(sockdir), safe='/')}"
    finally:
        with contextlib.suppress(EmbeddedError):
            _run_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(sockdir, ignore_errors=True)


@contextlib.contextmanager
def embedded_database(home: Path, *, prefer: str = "auto") -> Iterator[str]:
    """Start (or join) the embedded server and yield a URL for its `postgres` database.

    `prefer` is "auto" (pgserver, else initdb/pg_ctl from PATH), "pgserver" or "initdb".
    """
    home.mkdir(parents=True, exist_ok=True)
    use_pgserver = prefer == "pgserver"
    if prefer == "auto":
        try:
            import pgserver  # noqa: F401
        except ImportError:
            use_pgserver = False
        else:
            use_pgserver = True
    if use_pgserver:
        yield from _pgserver_url(home / "pgdata")
        return
    bindir = _find_pg_bin()
    if bindir is None:
        raise EmbeddedError(
            "DATABASE_URL is unset and neither the pgserver package nor initdb is available"
        )
    yield from _initdb_url(home / "pgdata-initdb", bindir)
