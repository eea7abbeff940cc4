"""The `ticketexport` command line: argparse subcommands over the services."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import psycopg

from ticketexport import accounts, db
from ticketexport.config import ConfigError, Settings
from ticketexport.domain.permissions import parse_permissions
from ticketexport.embedded import EmbeddedError


class CliError(Exception):
    """A one-line message for the user; the process exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus the message; the brief wants one line and exit 2.
        sys.stderr.write(f"ticketexport: error: {message}\n")
        raise SystemExit(2)


def _anchor(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ticketexport", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("demo", help="embedded database, migrate, seed, web and worker in one")
    sub.add_parser("serve", help="the web application only")
    worker = sub.add_parser("worker", help="run export jobs")
    worker.add_argument("--concurrency", type=_positive, default=2)
    migrate = sub.add_parser("migrate", help="apply the procrastinate schema and sql/ migrations")
    migrate.add_argument(
        "--wait",
        type=_positive,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the database to accept connections (a starting container)",
    )
    health = sub.add_parser(
        "healthcheck", help="exit 0 when the web or worker process here is healthy, else 1"
    )
    health.add_argument("process", choices=["web", "worker"])
    storage = sub.add_parser("storage", help="the file store")
    storage_sub = storage.add_subparsers(dest="action", required=True, parser_class=_Parser)
    storage_sub.add_parser(
        "adopt", help="make the configured store this installation's (rewrites its marker)"
    )

    seed = sub.add_parser("seed", help="demo data (creates no exports)")
    seed.add_argument("--tickets", type=_positive, required=True)
    seed.add_argument("--seed", type=_positive, default=1)
    seed.add_argument("--anchor", type=_anchor, default=None)

    user = sub.add_parser("user", help="add or change a staff user")
    user_sub = user.add_subparsers(dest="action", required=True, parser_class=_Parser)
    user_add = user_sub.add_parser("add")
    user_add.add_argument("email")
    user_add.add_argument("--name", required=True)
    user_add.add_argument("--password", required=True)
    user_add.add_argument("--admin", action="store_true")
    user_add.add_argument("--role", action="append", default=[])
    user_set = user_sub.add_parser("set")
    user_set.add_argument("email")
    user_set.add_argument("--admin", action=argparse.BooleanOptionalAction, default=None)
    user_set.add_argument("--active", action=argparse.BooleanOptionalAction, default=None)
    user_set.add_argument("--add-role", action="append", default=[])
    user_set.add_argument("--remove-role", action="append", default=[])
    # --inactive reads better than --no-active, and the brief spells it that way.
    user_set.add_argument("--inactive", dest="active", action="store_false")

    role = sub.add_parser("role", help="add or change a role")
    role_sub = role.add_subparsers(dest="action", required=True, parser_class=_Parser)
    role_add = role_sub.add_parser("add")
    role_add.add_argument("developer_name")
    role_add.add_argument("--label", required=True)
    role_add.add_argument("--permissions", default="")
    role_set = role_sub.add_parser("set")
    role_set.add_argument("developer_name")
    role_set.add_argument("--permissions", required=True)
    return parser


def _with_connection(settings: Settings, args: argparse.Namespace) -> int:
    with db.database_url(settings) as url:
        if args.command == "migrate":
            if args.wait:
                db.wait_until_reachable(url, args.wait)
            applied = db.migrate(url)
            print("applied: " + ", ".join(applied) if applied else "nothing to apply")
            return 0
        with psycopg.connect(url, autocommit=True) as conn:
            _require_migrated(conn)
            if args.command == "seed":
                from ticketexport import seed

                report = seed.seed(conn, tickets=args.tickets, seed=args.seed, anchor=args.anchor)
                print(report.summary())
                return 0
            if args.command == "user":
                return _user(conn, args)
            if args.command == "role":
                return _role(conn, args)
        if args.command == "storage":
            return asyncio.run(_adopt_storage(settings, url))
    raise CliError(f"unknown command {args.command!r}")


def _require_migrated(conn: psycopg.Connection[Any]) -> None:
    try:
        pending = db.pending_migrations(conn)
    except db.MigrationError as exc:
        raise CliError(str(exc)) from None
    if pending:
        raise CliError(
            f"the database has {len(pending)} pending migration(s); "
            "run `ticketexport migrate` first"
        )


async def _adopt_storage(settings: Settings, url: str) -> int:
    """`storage adopt`: after a restore into a new database, say, the store is this one's."""
    from ticketexport.storage import StorageError, marker
    from ticketexport.storage.backends import from_url

    where = settings.storage_url.split("?", 1)[0]
    try:
        storage = from_url(settings.storage_url)
    except StorageError as exc:
        raise CliError(f"TICKETEXPORT_STORAGE_URL: {exc}") from None
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            ours = await marker.installation_of(conn)
        previous = await marker.adopt(storage, ours)
    except (StorageError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise CliError(f"TICKETEXPORT_STORAGE_URL ({where}): {reason}") from None
    finally:
        await storage.close()
    before = previous.describe() if previous is not None else "no installation"
    print(f"{where} now belongs to {ours.describe()} (it belonged to {before})")
    return 0


def _user(conn: psycopg.Connection[Any], args: argparse.Namespace) -> int:
    if args.action == "add":
        user_id = accounts.add_user(
            conn,
            args.email,
            name=args.name,
            password=args.password,
            admin=args.admin,
            roles=args.role,
        )
        print(f"user {accounts.normalize_email(args.email)} added (id {user_id})")
    else:
        accounts.set_user(
            conn,
            args.email,
            admin=args.admin,
            active=args.active,
            add_roles=args.add_role,
            remove_roles=args.remove_role,
        )
        print(f"user {accounts.normalize_email(args.email)} updated")
    return 0


def _role(conn: psycopg.Connection[Any], args: argparse.Namespace) -> int:
    permissions = parse_permissions(args.permissions)
    if args.action == "add":
        accounts.add_role(conn, args.developer_name, label=args.label, permissions=permissions)
        print(f"role {args.developer_name} added")
    else:
        accounts.set_role(conn, args.developer_name, permissions=permissions)
        print(f"role {args.developer_name} updated")
    return 0


def _healthcheck(settings: Settings, process: str) -> int:
    """0 and one line on stdout when healthy; 1 and one line on stderr when not (a
    container runtime treats any other status as reserved)."""
    from ticketexport import health

    try:
        report = health.check_web(settings) if process == "web" else health.check_worker(settings)
    except health.Unhealthy as exc:
        sys.stderr.write(f"ticketexport: unhealthy: {exc}\n")
        return 1
    print(f"healthy: {report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        settings = Settings.from_env()
        if args.command == "healthcheck":
            return _healthcheck(settings, args.process)
        if args.command in {"demo", "serve", "worker"}:
            from ticketexport import runtime

            return runtime.run(args.command, settings, concurrency=getattr(args, "concurrency", 2))
        return _with_connection(settings, args)
    except (
        CliError,
        ConfigError,
        accounts.AccountError,
        db.MigrationError,
        EmbeddedError,
        ValueError,
    ) as exc:
        sys.stderr.write(f"ticketexport: error: {exc}\n")
        return 2
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"ticketexport: error: cannot reach the database: {first}\n")
        return 2
    except KeyboardInterrupt:
        return 130
