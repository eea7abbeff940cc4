"""Throw-away databases on the suite's server: create, clone from a template, drop."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from ticketexport import seed


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def create_database(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        if template:
            conn.execute(
                # FILE_COPY copies the small template's files instead of WAL-logging every
                # page; several times faster per test on a server with fsync on.
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(
                sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name)
                )
            )
    return with_dbname(server, name)


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def scratch_database(server: str, template: str | None = None) -> Iterator[str]:
    name = f"te_test_{secrets.token_hex(6)}"
    url = create_database(server, name, template)
    try:
        yield url
    finally:
        drop_database(server, name)


@dataclasses.dataclass(frozen=True)
class Seeding:
    """What a seeded template holds: the demo seed with `tickets` tickets around `anchor`."""

    tickets: int
    seed: int
    anchor: dt.date


class SeededTemplates:
    """Migrated and seeded template databases, each made on first use and kept until
    `drop_all`: seeding thousands of tickets once per run instead of once per test."""

    def __init__(self, server: str, migrated_template: str) -> None:
        self.server = server
        self.migrated_template = migrated_template
        self._names: dict[Seeding, str] = {}

    def name(self, seeding: Seeding) -> str:
        """The template database holding `seeding`, created and seeded if it is new."""
        if seeding not in self._names:
            name = f"te_seeded_{secrets.token_hex(6)}"
            url = create_database(self.server, name, self.migrated_template)
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    seed.seed(
                        conn, tickets=seeding.tickets, seed=seeding.seed, anchor=seeding.anchor
                    )
            except BaseException:
                drop_database(self.server, name)
                raise
            self._names[seeding] = name
        return self._names[seeding]

    def drop_all(self) -> None:
        for name in self._names.values():
            drop_database(self.server, name)
        self._names.clear()


def export_row(url: str, export_id: str) -> dict[str, Any]:
    """An export's row with its file's key, digest and size, read by plain SQL (the tests'
    and the benchmarks' view of it, independent of ticketexport.exports.store)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(
            "SELECT e.*, m.object_key, m.sha256, m.size_bytes FROM export_jobs e "
            "LEFT JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
            (export_id,),
        )
        row = cur.fetchone()
    assert row is not None, export_id
    return row


def reachable(url: str, timeout: int = 2) -> bool:
    """Whether a server answers at `url` within `timeout` seconds."""
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False
