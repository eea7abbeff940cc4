"""A Unix-domain socket URL for a database the suite reaches over TCP, when the server has one."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.components import missing_component


def _system_id(url: str) -> int | None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        return int(row[0]) if row else None
    return None


def unix_socket_url(url: str) -> str:  # noqa: RET503 - missing_component never returns
    """`url` by way of the server's Unix-domain socket (the same server, checked by its
    system identifier). A socket's buffers hold some 200 kB; loopback TCP's grow to tens of
    megabytes, enough to take a whole export's output from the server before the reader
    has read a fraction of it."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if host.startswith("/"):
        return url
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT system_identifier, current_setting('unix_socket_directories') "
            "FROM pg_control_system()"
        ).fetchone()
    assert row is not None
    wanted, directories = int(row[0]), str(row[1])
    for directory in (d.strip() for d in directories.split(",")):
        if not directory.startswith("/"):
            continue
        params.pop("hostaddr", None)
        candidate = make_conninfo(**{**params, "host": directory})
        if _system_id(candidate) == wanted:
            return candidate
    missing_component(f"the database server at {host} has no Unix-domain socket this host reaches")
