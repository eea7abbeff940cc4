"""The `ticketexport` command as an operator runs it: real process, real database."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.components import missing_component
from tests.support.sockets import LateServer
from ticketexport import accounts
from ticketexport.domain.permissions import Permission

ERROR_PREFIX = "ticketexport: error: "


def run(url: str, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    if home is not None:
        env["TICKETEXPORT_HOME"] = str(home)
    # No secret key: these commands must not need one.
    env.pop("TICKETEXPORT_SECRET_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "ticketexport", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit status 2 and exactly one line on stderr, naming the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _user(conn: psycopg.Connection[Any], email: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT u.first_name, u.last_name, u.is_admin, u.is_active, u.password_hash, "
        "coalesce(array_agg(r.developer_name ORDER BY r.developer_name) "
        "FILTER (WHERE r.id IS NOT NULL), '{}') "
        "FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id "
        "LEFT JOIN roles r ON r.id = ur.role_id WHERE u.email = %s "
        "GROUP BY u.id",
        (email,),
    ).fetchone()


def _add_role(url: str, name: str, permissions: str = "") -> None:
    proc = run(url, "role", "add", name, "--label", name.title(), "--permissions", permissions)
    assert proc.returncode == 0, proc.stderr


# Success paths ------------------------------------------------------------------------


def test_user_add_creates_a_user_with_a_verifiable_password(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    _add_role(db_url, "exporters", "import_export_tickets")
    proc = run(
        db_url,
        "user",
        "add",
        "Ana.Admin@Example.COM",
        "--name",
        "Ana María Admin",
        "--password",
        "s3cret pass",
        "--admin",
        "--role",
        "exporters",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("user ana.admin@example.com added (id ")
    row = _user(conn, "ana.admin@example.com")
    assert row is not None
    first, last, is_admin, is_active, password_hash, roles = row
    assert (first, last, is_admin, is_active, roles) == (
        "Ana",
        "María Admin",
        True,
        True,
        ["exporters"],
    )
    assert accounts.verify_password(password_hash, "s3cret pass")
    assert not accounts.verify_password(password_hash, "wrong")


def test_user_set_changes_flags_and_roles(db_url: str, conn: psycopg.Connection[Any]) -> None:
    _add_role(db_url, "agents", "manage_tickets")
    _add_role(db_url, "exporters", "import_export_tickets")
    assert run(db_url, "user", "add", "bo@example.com", "--name", "Bo", "--password", "p",
               "--role", "agents").returncode == 0  # fmt: skip
    user_id = conn.execute("SELECT id FROM users WHERE email = 'bo@example.com'").fetchone()
    assert user_id is not None
    conn.execute(
        "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) "
        "VALUES (repeat('a', 64), %s, repeat('c', 43), now() + interval '1 hour')",
        user_id,
    )

    proc = run(db_url, "user", "set", "BO@example.com", "--admin", "--inactive",
               "--add-role", "exporters", "--remove-role", "agents")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "user bo@example.com updated"
    row = _user(conn, "bo@example.com")
    assert row is not None
    assert (row[2], row[3], row[5]) == (True, False, ["exporters"])
    # Deactivating a user ends their sessions.
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)

    proc = run(db_url, "user", "set", "bo@example.com", "--no-admin", "--active")
    assert proc.returncode == 0, proc.stderr
    row = _user(conn, "bo@example.com")
    assert row is not None
    assert (row[2], row[3]) == (False, True)


def test_role_add_and_set(db_url: str, conn: psycopg.Connection[Any]) -> None:
    proc = run(db_url, "role", "add", "leads", "--label", "Team leads",
               "--permissions", "users, Manage_Teams")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert conn.execute(
        "SELECT label, permissions FROM roles WHERE developer_name = 'leads'"
    ).fetchone() == ("Team leads", int(Permission.USERS | Permission.MANAGE_TEAMS))

    proc = run(db_url, "role", "set", "leads", "--permissions", "import_export_tickets")
    assert proc.returncode == 0, proc.stderr
    assert conn.execute(
        "SELECT permissions FROM roles WHERE developer_name = 'leads'"
    ).fetchone() == (512,)


def test_migrate_reports_what_it_applied_then_nothing(empty_db_url: str) -> None:
    first = run(empty_db_url, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: procrastinate_schema.sql, 0001_domain.sql")
    second = run(empty_db_url, "migrate")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "nothing to apply"


def _start(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "ticketexport", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_migrate_waits_for_a_database_that_is_still_starting(empty_db_url: str) -> None:
    """A container runtime may start migrate beside a database that is initialising."""
    late = LateServer(empty_db_url)
    try:
        proc = _start(late.url, "migrate", "--wait", "120")
        # It keeps trying while the database drops connections...
        late.wait_for_attempts(2)
        assert proc.poll() is None
        # ...and migrates once it answers.
        late.open()
        out, err = proc.communicate(timeout=120)
    finally:
        late.close()
    assert proc.returncode == 0, err
    assert out.startswith("applied: procrastinate_schema.sql"), out


def test_migrate_gives_up_after_its_wait_with_one_line(empty_db_url: str) -> None:
    late = LateServer(empty_db_url)
    try:
        proc = run(late.url, "migrate", "--wait", "2")
        assert late.attempts >= 2
        assert_clean_error(proc, "cannot reach the database")
        # Without --wait, one attempt and the same error.
        attempts = late.attempts
        assert_clean_error(run(late.url, "migrate"), "cannot reach the database")
        assert late.attempts == attempts + 1
    finally:
        late.close()


def test_python_dash_m_and_the_console_script_agree(db_url: str) -> None:
    script = Path(sys.executable).with_name("ticketexport")
    if not script.exists():
        missing_component("the ticketexport console script next to this interpreter")
    proc = subprocess.run(
        [str(script), "migrate"],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "nothing to apply"), proc.stderr


# Clean errors -------------------------------------------------------------------------


def test_duplicate_email_is_one_line(db_url: str, conn: psycopg.Connection[Any]) -> None:
    assert (
        run(db_url, "user", "add", "dup@example.com", "--name", "A", "--password", "p").returncode
        == 0
    )
    proc = run(db_url, "user", "add", "DUP@example.com", "--name", "B", "--password", "p")
    assert_clean_error(proc, "already exists", "dup@example.com")
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_unknown_role_is_one_line_and_creates_nothing(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    proc = run(db_url, "user", "add", "x@example.com", "--name", "X", "--password", "p",
               "--role", "no_such_role")  # fmt: skip
    assert_clean_error(proc, "unknown role", "no_such_role")
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_unknown_role_in_user_set(db_url: str) -> None:
    assert (
        run(db_url, "user", "add", "y@example.com", "--name", "Y", "--password", "p").returncode
        == 0
    )
    assert_clean_error(
        run(db_url, "user", "set", "y@example.com", "--add-role", "ghosts"), "unknown role"
    )


def test_unknown_user_in_user_set(db_url: str) -> None:
    assert_clean_error(run(db_url, "user", "set", "nobody@example.com", "--admin"), "no user")


@pytest.mark.parametrize("email", ["not-an-email", "two@@example.com", "a b@example.com", "@x"])
def test_malformed_email_is_one_line(db_url: str, email: str) -> None:
    proc = run(db_url, "user", "add", email, "--name", "X", "--password", "p")
    assert_clean_error(proc, "not a valid email address")


def test_unknown_permission_is_one_line(db_url: str, conn: psycopg.Connection[Any]) -> None:
    proc = run(db_url, "role", "add", "r", "--label", "R", "--permissions", "users,fly")
    assert_clean_error(proc, "unknown permission", "'fly'")
    assert conn.execute("SELECT count(*) FROM roles").fetchone() == (0,)
    _add_role(db_url, "r")
    assert_clean_error(
        run(db_url, "role", "set", "r", "--permissions", "root"), "unknown permission"
    )


def test_unknown_role_in_role_set(db_url: str) -> None:
    assert_clean_error(run(db_url, "role", "set", "ghosts", "--permissions", "users"), "ghosts")


def test_duplicate_and_malformed_role_names(db_url: str) -> None:
    _add_role(db_url, "agents")
    assert_clean_error(run(db_url, "role", "add", "agents", "--label", "A"), "already exists")
    assert_clean_error(run(db_url, "role", "add", "Bad-Name", "--label", "B"), "Bad-Name")


@pytest.mark.parametrize("anchor", ["2024-13-01", "yesterday", "2024/01/01", ""])
def test_bad_anchor_is_one_line(db_url: str, anchor: str) -> None:
    proc = run(db_url, "seed", "--tickets", "10", "--anchor", anchor)
    assert_clean_error(proc, "is not a date")


@pytest.mark.parametrize("tickets", ["-1", "ten", "1.5"])
def test_bad_ticket_count_is_one_line(db_url: str, tickets: str) -> None:
    assert_clean_error(run(db_url, "seed", "--tickets", tickets), "--tickets")


@pytest.mark.parametrize(
    "args",
    [
        ["user", "add", "a@example.com", "--name", "A", "--password", "p"],
        ["role", "add", "agents", "--label", "Agents"],
        ["seed", "--tickets", "1"],
    ],
)
def test_pending_migrations_are_one_line(empty_db_url: str, args: list[str]) -> None:
    proc = run(empty_db_url, *args)
    assert_clean_error(proc, "pending migration", "ticketexport migrate")


def test_a_changed_migration_is_one_line(db_url: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE schema_migrations SET checksum = md5(checksum) WHERE version = '0001'")
    assert_clean_error(run(db_url, "migrate"), "0001_domain.sql changed after it was applied")
    assert_clean_error(
        run(db_url, "role", "add", "r", "--label", "R"), "changed after it was applied"
    )


def test_unreachable_database_is_one_line() -> None:
    # Port 1 on loopback: nothing listens there.
    proc = run("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5", "migrate")
    assert_clean_error(proc, "cannot reach the database")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["user"],
        ["user", "add", "a@example.com"],
        ["role", "add", "r", "--label", "R", "--bogus"],
    ],
)
def test_usage_errors_are_one_line(db_url: str, args: list[str]) -> None:
    assert_clean_error(run(db_url, *args))


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("TICKETEXPORT_TIMEZONE", "Mars/Olympus", "TICKETEXPORT_TIMEZONE"),
        ("TICKETEXPORT_PORT", "http", "TICKETEXPORT_PORT"),
        ("TICKETEXPORT_COOKIE_SECURE", "perhaps", "TICKETEXPORT_COOKIE_SECURE"),
    ],
)
def test_bad_settings_are_one_line(db_url: str, name: str, value: str, needle: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, name: value}
    proc = subprocess.run(
        [sys.executable, "-m", "ticketexport", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_clean_error(proc, needle)


@pytest.mark.parametrize(
    "value", ["10.0.0.1:8080", "proxy.internal", "10.0.0.1, 10.0.0.300", "10.0.0.0/8;::1"]
)
def test_a_bad_trusted_proxy_stops_serve_at_start(db_url: str, tmp_path: Path, value: str) -> None:
    """Silently ignored, such a value would leave every client looking like the proxy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "TICKETEXPORT_HOME": str(tmp_path),
        "TICKETEXPORT_SECRET_KEY": "k" * 32,
        "TICKETEXPORT_PORT": str(port),
        "TICKETEXPORT_TRUSTED_PROXY": value,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ticketexport", "serve"],
        env=env,
        capture_output=True,
        text=True,
        # Started, it would serve until stopped: this long means it did not refuse.
        timeout=60,
        check=False,
    )
    assert_clean_error(proc, "TICKETEXPORT_TRUSTED_PROXY")


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_one_line(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, command: str
) -> None:
    # A ticket, so `demo` finds data and does not seed its own.
    conn.execute("INSERT INTO tickets (title, status_id, priority_id) VALUES ('t', 1, 1)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "TICKETEXPORT_HOME": str(tmp_path / "home"),
            "TICKETEXPORT_SECRET_KEY": "k" * 32,
            "TICKETEXPORT_HOST": "127.0.0.1",
            "TICKETEXPORT_PORT": str(port),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "ticketexport", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    in_use = os.strerror(errno.EADDRINUSE)
    assert errors == [f"{ERROR_PREFIX}cannot listen on 127.0.0.1:{port}: {in_use}"]
    # Nothing else on stderr but the process's own JSON log lines.
    others = [line for line in proc.stderr.splitlines() if not line.startswith(ERROR_PREFIX)]
    assert all(line.startswith("{") for line in others), others
