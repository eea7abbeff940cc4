"""Staff users and roles: creation and changes, as the CLI, the seed and the admin pages use them.

Each change is written once, as a plan: a generator that yields the named statements it
needs and receives their rows. `run` carries a plan out on a blocking connection (the CLI,
the seed) and `run_async` on a pooled one (the admin pages), so both keep the same rules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.types.json import Jsonb

from ticketexport.db import q
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission, permission_name

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DEV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_hasher = PasswordHasher()
# The longest password accepted: argon2 takes any length, a form should not.
MAX_PASSWORD = 1024
# Serialises every change to users, their roles and roles, so two administrators demoting
# each other at once cannot both pass the last-administrator check.
ACCOUNTS_LOCK_KEY = 0x6163636F756E74  # "account"

T = TypeVar("T")


class AccountError(ValueError):
    """A user or role request that cannot be carried out; the message is safe to show."""


class AccountDenied(AccountError):
    """The acting user may not make this change (escalation or a guard rail)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One named statement of a plan, with its parameters."""

    name: str
    params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Rows:
    """What a step returned: its rows (none for a statement without a result) and count."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


Plan = Generator[Step, Rows, T]


@dataclasses.dataclass(frozen=True)
class ActingUser:
    """Who makes a change from the admin pages, and from where: the guards and the audit
    apply to them. The CLI acts with no one (a shell on the server is trusted)."""

    actor: Actor
    client_ip: str | None = None


def _advance(plan: Plan[T], outcome: Rows | psycopg.errors.IntegrityError | None) -> Step:
    """The plan's next step, given what its last one returned or raised (StopIteration
    carries the plan's result)."""
    if isinstance(outcome, psycopg.errors.IntegrityError):
        return plan.throw(outcome)
    return next(plan) if outcome is None else plan.send(outcome)


class _Driver(Generic[T]):
    """A plan carried out step by step: what each step returned or raised goes back in."""

    def __init__(self, plan: Plan[T]) -> None:
        self.plan = plan
        self.outcome: Rows | psycopg.errors.IntegrityError | None = None
        self.result: T | None = None

    def next_step(self) -> Step | None:
        """The next statement to run; None once the plan returned (its value in `result`)."""
        try:
            return _advance(self.plan, self.outcome)
        except StopIteration as done:
            self.result = done.value
            return None


def run(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    """Carry out a plan in one transaction on a blocking connection."""
    driver = _Driver(plan)
    with conn.transaction():
        while (step := driver.next_step()) is not None:
            try:
                cur = conn.execute(q(step.name), step.params)
            except psycopg.errors.IntegrityError as exc:
                driver.outcome = exc
            else:
                driver.outcome = Rows(cur.fetchall() if cur.description else [], cur.rowcount)
    return driver.result  # type: ignore[return-value]


async def run_async(conn: psycopg.AsyncConnection[Any], plan: Plan[T]) -> T:
    """Carry out a plan in one transaction on an asynchronous connection."""
    driver = _Driver(plan)
    async with conn.transaction():
        while (step := driver.next_step()) is not None:
            try:
                cur = await conn.execute(q(step.name), step.params)
            except psycopg.errors.IntegrityError as exc:
                driver.outcome = exc
            else:
                rows = await cur.fetchall() if cur.description else []
                driver.outcome = Rows(rows, cur.rowcount)
    return driver.result  # type: ignore[return-value]


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not (3 <= len(value) <= 254) or not _EMAIL.match(value):
        raise AccountError(f"{email!r} is not a valid email address")
    return value


def split_name(name: str) -> tuple[str, str]:
    """ "First Last" → ("First", "Last"); a single word is a first name."""
    parts = name.strip().split(None, 1)
    if not parts:
        raise AccountError("a name is required")
    first, last = parts[0], (parts[1] if len(parts) > 1 else "")
    if len(first) > 100 or len(last) > 100:
        raise AccountError("first and last name are at most 100 characters each")
    if "\x00" in name:
        raise AccountError("a name cannot contain a NUL character")
    return first, last


def hash_password(password: str) -> str:
    if len(password) < 1:
        raise AccountError("the password must not be empty")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise AccountError(
            f"the password must be at most {MAX_PASSWORD} characters, with no NUL character"
        )
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_role_name(name: str) -> str:
    if not _DEV_NAME.match(name):
        raise AccountError(
            f"role name {name!r} must be lower-case letters, digits and underscores, "
            "starting with a letter"
        )
    return name


def _check_label(label: str) -> str:
    value = label.strip()
    if not value or len(value) > 100 or "\x00" in value:
        raise AccountError("a role label must be 1 to 100 characters")
    return value


def permission_names(bits: int) -> list[str]:
    """A bit-field as the sorted list of permission names (audit details, forms)."""
    return [permission_name(p) for p in Permission if p & bits]


# Plans ---------------------------------------------------------------------------------


def _lock() -> Plan[None]:
    yield Step("accounts_lock", {"key": ACCOUNTS_LOCK_KEY})


def _administrators_left() -> Plan[int]:
    row = (yield Step("accounts_active_administrators", {})).one()
    assert row is not None
    return int(row[0])


def _roles(names: Sequence[str]) -> Plan[dict[str, tuple[int, int]]]:
    """developer name → (id, permission bits), every name known or AccountError."""
    wanted = sorted(set(names))
    rows = (yield Step("roles_by_names", {"names": wanted})).rows
    found = {str(name): (int(role_id), int(bits)) for role_id, name, bits in rows}
    for name in wanted:
        if name not in found:
            raise AccountError(f"unknown role {name!r}")
    return found


def _may_grant(by: ActingUser | None, roles: Mapping[str, tuple[int, int]]) -> None:
    """No escalation: granting a role needs every permission it holds."""
    if by is None:
        return
    for name, (_, bits) in sorted(roles.items()):
        missing = Permission(bits) & ~by.actor.permissions
        if missing:
            raise AccountDenied(
                f"you cannot grant the role {name!r}: it holds permissions you do not have "
                f"({', '.join(permission_names(int(missing)))})"
            )


def _may_set_admin(by: ActingUser | None) -> None:
    if by is not None and not by.actor.has(Permission.ADMINISTRATORS):
        raise AccountDenied("changing the administrator flag needs the Administrators permission")


def _keep_an_administrator(before: int, by: ActingUser | None) -> Plan[None]:
    """No change leaves no active administrator holding `administrators` (when there was
    one: a new installation starts with none). The CLI is exempt: a shell on the server
    is how an installation that lost its last administrator gets one back."""
    if by is None:
        return
    after = yield from _administrators_left()
    if before > 0 and after == 0:
        raise AccountDenied(
            "this change would leave no active administrator with the Administrators permission"
        )


def _audit(by: ActingUser | None, action: str, details: Mapping[str, Any]) -> Plan[None]:
    if by is None:
        return
    yield Step(
        "audit_insert",
        {
            "actor_id": by.actor.id,
            "actor_email": by.actor.email or None,
            "action": action,
            "client_ip": by.client_ip,
            "export_id": None,
            "details": Jsonb(dict(details)),
        },
    )


def _user_state(user_id: int) -> Plan[dict[str, Any]]:
    row = (yield Step("accounts_user_state", {"id": user_id})).one()
    if row is None:
        raise AccountError("no such user")
    _, email, first, last, is_admin, is_active, roles = row
    return {
        "email": email,
        "name": f"{first} {last}".strip(),
        "admin": bool(is_admin),
        "active": bool(is_active),
        "roles": sorted(roles),
    }


def add_user_plan(
    email: str,
    *,
    name: str,
    password_hash: str,
    admin: bool = False,
    roles: Sequence[str] = (),
    by: ActingUser | None = None,
) -> Plan[int]:
    """Create a user; returns the new id."""
    address = normalize_email(email)
    first, last = split_name(name)
    if admin:
        _may_set_admin(by)
    yield from _lock()
    found = yield from _roles(roles)
    _may_grant(by, found)
    try:
        row = (
            yield Step(
                "user_insert",
                {
                    "email": address,
                    "first_name": first,
                    "last_name": last,
                    "password_hash": password_hash,
                    "is_admin": admin,
                },
            )
        ).one()
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"a user with email {address!r} already exists") from None
    assert row is not None
    user_id = int(row[0])
    for role_id, _ in found.values():
        yield Step("user_role_grant", {"user_id": user_id, "role_id": role_id})
    after = yield from _user_state(user_id)
    yield from _audit(by, "user.created", {"target": address, "before": None, "after": after})
    return user_id


def update_user_plan(
    user_id: int,
    *,
    name: str | None = None,
    email: str | None = None,
    password_hash: str | None = None,
    admin: bool | None = None,
    active: bool | None = None,
    roles: Sequence[str] | None = None,
    add_roles: Sequence[str] = (),
    remove_roles: Sequence[str] = (),
    by: ActingUser | None = None,
) -> Plan[None]:
    """Change a user: every argument left None stays as it is. `roles` replaces the user's
    roles; `add_roles` and `remove_roles` change them (the CLI's spelling)."""
    names = split_name(name) if name is not None else None
    address = normalize_email(email) if email is not None else None
    yield from _lock()
    administrators = yield from _administrators_left()
    before = yield from _user_state(user_id)
    if admin is not None and admin != before["admin"]:
        _may_set_admin(by)
    if by is not None and by.actor.id == user_id:
        if admin is False and before["admin"]:
            raise AccountDenied("you cannot remove your own administrator flag")
        if active is False and before["active"]:
            raise AccountDenied("you cannot deactivate yourself")
    target = set(before["roles"]) if roles is None else set(roles)
    target = (target | set(add_roles)) - set(remove_roles)
    known = yield from _roles(sorted(target | set(before["roles"]) | set(remove_roles)))
    granted = {n: known[n] for n in sorted(target - set(before["roles"]))}
    _may_grant(by, granted)
    if names is not None:
        current = (yield Step("accounts_user_names", {"id": user_id})).one()
        if current is None or tuple(current) != names:
            yield Step(
                "user_set_name", {"id": user_id, "first_name": names[0], "last_name": names[1]}
            )
    if address is not None and address != before["email"]:
        try:
            yield Step("user_set_email", {"id": user_id, "email": address})
        except psycopg.errors.UniqueViolation:
            raise AccountError(f"a user with email {address!r} already exists") from None
    if password_hash is not None:
        yield Step("user_set_password", {"id": user_id, "password_hash": password_hash})
    if admin is not None and admin != before["admin"]:
        yield Step("user_set_admin", {"id": user_id, "is_admin": admin})
    if active is not None and active != before["active"]:
        yield Step("user_set_active", {"id": user_id, "is_active": active})
    if active is False:
        # An inactive user keeps no live session; their event streams end at the next
        # keep-alive recheck, which finds the session gone.
        yield Step("web_sessions_delete_for_user", {"user_id": user_id})
    for role_name in sorted(target - set(before["roles"])):
        yield Step("user_role_grant", {"user_id": user_id, "role_id": known[role_name][0]})
    for role_name in sorted(set(before["roles"]) - target):
        yield Step("user_role_revoke", {"user_id": user_id, "role_id": known[role_name][0]})
    yield from _keep_an_administrator(administrators, by)
    after = yield from _user_state(user_id)
    details: dict[str, Any] = {"target": after["email"], "before": before, "after": after}
    if password_hash is not None:
        details["password_changed"] = True
    if after != before or password_hash is not None:
        yield from _audit(by, "user.updated", details)


def _role_state(developer_name: str) -> Plan[dict[str, Any]]:
    row = (yield Step("accounts_role_state", {"name": developer_name})).one()
    if row is None:
        raise AccountError(f"unknown role {developer_name!r}")
    return {"label": row[1], "permissions": permission_names(int(row[2]))}


def add_role_plan(
    developer_name: str,
    *,
    label: str,
    permissions: Permission,
    by: ActingUser | None = None,
) -> Plan[int]:
    name = _check_role_name(developer_name)
    text = _check_label(label)
    if by is not None and permissions & ~by.actor.permissions:
        raise AccountDenied("a role cannot hold permissions you do not have")
    yield from _lock()
    try:
        row = (
            yield Step(
                "role_insert", {"name": name, "label": text, "permissions": int(permissions)}
            )
        ).one()
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"a role named {name!r} already exists") from None
    assert row is not None
    after = yield from _role_state(name)
    yield from _audit(by, "role.created", {"target": name, "before": None, "after": after})
    return int(row[0])


def update_role_plan(
    developer_name: str,
    *,
    label: str | None = None,
    permissions: Permission,
    by: ActingUser | None = None,
) -> Plan[None]:
    text = _check_label(label) if label is not None else None
    yield from _lock()
    administrators = yield from _administrators_left()
    before = yield from _role_state(developer_name)
    row = (yield Step("accounts_role_state", {"name": developer_name})).one()
    assert row is not None
    added = Permission(int(permissions) & ~int(row[2]))
    if by is not None and added & ~by.actor.permissions:
        raise AccountDenied(
            "you cannot add permissions you do not have to a role "
            f"({', '.join(permission_names(int(added & ~by.actor.permissions)))})"
        )
    yield Step(
        "role_update",
        {
            "name": developer_name,
            "label": text if text is not None else before["label"],
            "permissions": int(permissions),
        },
    )
    yield from _keep_an_administrator(administrators, by)
    after = yield from _role_state(developer_name)
    if after != before:
        yield from _audit(
            by, "role.updated", {"target": developer_name, "before": before, "after": after}
        )


# The CLI's and the seed's entry points -------------------------------------------------


def add_user(
    conn: psycopg.Connection[Any],
    email: str,
    *,
    name: str,
    password: str,
    admin: bool = False,
    roles: Sequence[str] = (),
    password_hash: str | None = None,
) -> int:
    """Create a user in one transaction; returns the new id."""
    normalize_email(email)
    split_name(name)
    hashed = password_hash or hash_password(password)
    return run(
        conn, add_user_plan(email, name=name, password_hash=hashed, admin=admin, roles=roles)
    )


def user_id_for(conn: psycopg.Connection[Any], email: str) -> int:
    address = normalize_email(email)
    row = conn.execute(q("user_id_by_email"), {"email": address}).fetchone()
    if row is None:
        raise AccountError(f"no user with email {address!r}")
    return int(row[0])


def set_user(
    conn: psycopg.Connection[Any],
    email: str,
    *,
    admin: bool | None = None,
    active: bool | None = None,
    add_roles: Sequence[str] = (),
    remove_roles: Sequence[str] = (),
) -> None:
    user_id = user_id_for(conn, email)
    run(
        conn,
        update_user_plan(
            user_id, admin=admin, active=active, add_roles=add_roles, remove_roles=remove_roles
        ),
    )


def add_role(
    conn: psycopg.Connection[Any], developer_name: str, *, label: str, permissions: Permission
) -> int:
    return run(conn, add_role_plan(developer_name, label=label, permissions=permissions))


def set_role(
    conn: psycopg.Connection[Any], developer_name: str, *, permissions: Permission
) -> None:
    run(conn, update_role_plan(developer_name, permissions=permissions))


# What the admin pages read ------------------------------------------------------------

USERS_PAGE = 50


@dataclasses.dataclass(frozen=True)
class UserLine:
    id: int
    email: str
    name: str
    admin: bool
    active: bool
    roles: list[str]


@dataclasses.dataclass(frozen=True)
class RoleLine:
    developer_name: str
    label: str
    permissions: Permission
    users: int

    @property
    def permission_names(self) -> list[str]:
        return permission_names(int(self.permissions))


def _user_line(row: tuple[Any, ...]) -> UserLine:
    return UserLine(
        id=int(row[0]),
        email=row[1],
        name=f"{row[2]} {row[3]}".strip(),
        admin=bool(row[4]),
        active=bool(row[5]),
        roles=list(row[6]),
    )


async def list_users(
    conn: psycopg.AsyncConnection[Any], *, search: str | None, after: str | None
) -> tuple[list[UserLine], str | None]:
    """One page of users by e-mail, and the e-mail the next page starts after (or None)."""
    cur = await conn.execute(
        q("admin_users_page"), {"q": search, "after": after, "limit": USERS_PAGE + 1}
    )
    lines = [_user_line(row) for row in await cur.fetchall()]
    more = len(lines) > USERS_PAGE
    lines = lines[:USERS_PAGE]
    return lines, (lines[-1].email if more and lines else None)


async def get_user(conn: psycopg.AsyncConnection[Any], user_id: int) -> UserLine | None:
    cur = await conn.execute(q("accounts_user_state"), {"id": user_id})
    row = await cur.fetchone()
    return _user_line(row) if row else None


async def list_roles(conn: psycopg.AsyncConnection[Any]) -> list[RoleLine]:
    cur = await conn.execute(q("admin_roles_list"))
    return [
        RoleLine(str(name), str(label), Permission(int(bits)), int(users))
        for name, label, bits, users in await cur.fetchall()
    ]
