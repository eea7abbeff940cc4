"""Staff users and roles: creation and changes, as the CLI and the seed use them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ticketexport.db import q
from ticketexport.domain.permissions import Permission

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DEV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_hasher = PasswordHasher()


class AccountError(ValueError):
    """A user or role request that cannot be carried out; the message is safe to show."""


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
    return first, last


def hash_password(password: str) -> str:
    if len(password) < 1:
        raise AccountError("the password must not be empty")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _role_ids(conn: psycopg.Connection[Any], names: Sequence[str]) -> list[int]:
    ids = []
    for name in names:
        row = conn.execute(q("role_id_by_name"), {"name": name}).fetchone()
        if row is None:
            raise AccountError(f"unknown role {name!r}")
        ids.append(int(row[0]))
    return ids


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
    address = normalize_email(email)
    first, last = split_name(name)
    hashed = password_hash or hash_password(password)
    with conn.transaction():
        role_ids = _role_ids(conn, roles)
        try:
            with conn.transaction():
                row = conn.execute(
                    q("user_insert"),
                    {
                        "email": address,
                        "first_name": first,
                        "last_name": last,
                        "password_hash": hashed,
                        "is_admin": admin,
                    },
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise AccountError(f"a user with email {address!r} already exists") from None
        assert row is not None
        user_id = int(row[0])
        for role_id in role_ids:
            conn.execute(q("user_role_grant"), {"user_id": user_id, "role_id": role_id})
    return user_id


def set_user(
    conn: psycopg.Connection[Any],
    email: str,
    *,
    admin: bool | None = None,
    active: bool | None = None,
    add_roles: Sequence[str] = (),
    remove_roles: Sequence[str] = (),
) -> None:
    address = normalize_email(email)
    with conn.transaction():
        row = conn.execute(q("user_id_by_email"), {"email": address}).fetchone()
        if row is None:
            raise AccountError(f"no user with email {address!r}")
        user_id = int(row[0])
        if admin is not None:
            conn.execute(q("user_set_admin"), {"id": user_id, "is_admin": admin})
        if active is not None:
            conn.execute(q("user_set_active"), {"id": user_id, "is_active": active})
            if not active:
                # An inactive user keeps no live session.
                conn.execute(q("web_sessions_delete_for_user"), {"user_id": user_id})
        for role_id in _role_ids(conn, add_roles):
            conn.execute(q("user_role_grant"), {"user_id": user_id, "role_id": role_id})
        for role_id in _role_ids(conn, remove_roles):
            conn.execute(q("user_role_revoke"), {"user_id": user_id, "role_id": role_id})


def _check_role_name(name: str) -> str:
    if not _DEV_NAME.match(name):
        raise AccountError(
            f"role name {name!r} must be lower-case letters, digits and underscores, "
            "starting with a letter"
        )
    return name


def add_role(
    conn: psycopg.Connection[Any], developer_name: str, *, label: str, permissions: Permission
) -> int:
    name = _check_role_name(developer_name)
    if not label.strip() or len(label) > 100:
        raise AccountError("a role label must be 1 to 100 characters")
    try:
        with conn.transaction():
            row = conn.execute(
                q("role_insert"),
                {"name": name, "label": label.strip(), "permissions": int(permissions)},
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"a role named {name!r} already exists") from None
    assert row is not None
    return int(row[0])


def set_role(
    conn: psycopg.Connection[Any], developer_name: str, *, permissions: Permission
) -> None:
    with conn.transaction():
        cur = conn.execute(
            q("role_set_permissions"), {"name": developer_name, "permissions": int(permissions)}
        )
        if cur.rowcount != 1:
            raise AccountError(f"unknown role {developer_name!r}")
