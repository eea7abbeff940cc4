"""Throw-away databases on the suite's server: create, clone from a template, drop."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
