"""Permission flags: the brief's bit values, parsing, the union over roles, the access rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ticketexport.domain.permissions import (
    ALL_PERMISSIONS,
    LABELS,
    Permission,
    can_download,
    can_export,
    effective,
    parse_permissions,
    permission_name,
)

# The brief's table, verbatim: these numbers are stored in roles.permissions.
BRIEF_FLAGS = {
    "system_settings": 1,
    "audit_logs": 2,
    "administrators": 4,
    "templates": 8,
    "users": 16,
    "manage_teams": 32,
    "manage_tickets": 64,
    "access_reports": 128,
    "manage_system_views": 256,
    "import_export_tickets": 512,
    "edit_wiki_articles": 1024,
}


def test_flags_match_the_brief() -> None:
    assert {permission_name(p): p.value for p in Permission} == BRIEF_FLAGS


def test_all_permissions_is_every_flag() -> None:
    assert int(ALL_PERMISSIONS) == sum(BRIEF_FLAGS.values()) == 2047
    assert all(p in ALL_PERMISSIONS for p in Permission)


def test_the_schema_allows_exactly_the_known_bits() -> None:
    schema = (Path(__file__).resolve().parents[2] / "sql/migrations/0001_domain.sql").read_text(
        encoding="utf-8"
    )
    match = re.search(r"permissions integer .*CHECK \(permissions BETWEEN 0 AND (\d+)\)", schema)
    assert match is not None
    assert int(match.group(1)) == int(ALL_PERMISSIONS)


def test_every_flag_has_a_label() -> None:
    assert set(LABELS) == set(Permission)
    assert LABELS[Permission.IMPORT_EXPORT_TICKETS] == "Import / Export Tickets"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Permission(0)),
        ("  ", Permission(0)),
        ("users", Permission.USERS),
        ("import_export_tickets", Permission.IMPORT_EXPORT_TICKETS),
        ("users,manage_teams", Permission.USERS | Permission.MANAGE_TEAMS),
        (" Users , MANAGE_TEAMS ", Permission.USERS | Permission.MANAGE_TEAMS),
        ("users,,users,", Permission.USERS),
        (",".join(BRIEF_FLAGS), ALL_PERMISSIONS),
    ],
)
def test_parse_permissions(text: str, expected: Permission) -> None:
    assert parse_permissions(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("fly", "fly"),
        ("users,fly", "fly"),
        ("import-export-tickets", "import-export-tickets"),
        ("512", "512"),
        ("users;audit_logs", "users;audit_logs"),
    ],
)
def test_unknown_permissions_are_named(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="unknown permission") as info:
        parse_permissions(text)
    assert repr(bad) in str(info.value)
    # The message lists what would have been accepted.
    assert "import_export_tickets" in str(info.value)


def test_names_round_trip() -> None:
    for flag in Permission:
        assert parse_permissions(permission_name(flag)) == flag


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([], Permission(0)),
        ([0], Permission(0)),
        ([512], Permission.IMPORT_EXPORT_TICKETS),
        ([1, 512], Permission.SYSTEM_SETTINGS | Permission.IMPORT_EXPORT_TICKETS),
        ([512, 512 | 64], Permission.IMPORT_EXPORT_TICKETS | Permission.MANAGE_TICKETS),
        ([2047, 0], ALL_PERMISSIONS),
    ],
)
def test_effective_is_the_union_over_roles(roles: list[int], expected: Permission) -> None:
    assert effective(roles) == expected


def test_effective_accepts_any_iterable() -> None:
    assert effective(iter((16, 32))) == Permission.USERS | Permission.MANAGE_TEAMS


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [
        (Permission(0), False),
        (ALL_PERMISSIONS & ~Permission.IMPORT_EXPORT_TICKETS, False),
        (Permission.IMPORT_EXPORT_TICKETS, True),
        (Permission.IMPORT_EXPORT_TICKETS | Permission.USERS, True),
    ],
)
def test_can_export_needs_512(permissions: Permission, allowed: bool) -> None:
    assert can_export(permissions) is allowed


@pytest.mark.parametrize(
    ("is_admin", "permissions", "allowed"),
    [
        # The four cells of the access matrix.
        (True, Permission.IMPORT_EXPORT_TICKETS, True),
        (True, Permission(0), False),
        (False, Permission.IMPORT_EXPORT_TICKETS, False),
        (False, Permission(0), False),
        # Other flags do not stand in for either half.
        (True, ALL_PERMISSIONS & ~Permission.IMPORT_EXPORT_TICKETS, False),
        (False, ALL_PERMISSIONS, False),
        (True, Permission.ADMINISTRATORS, False),
    ],
)
def test_can_download_needs_admin_and_512(
    is_admin: bool, permissions: Permission, allowed: bool
) -> None:
    assert can_download(is_admin=is_admin, permissions=permissions) is allowed


def test_can_download_with_permissions_from_several_roles() -> None:
    union = effective([Permission.USERS, Permission.IMPORT_EXPORT_TICKETS])
    assert can_download(is_admin=True, permissions=union)
    assert not can_download(is_admin=False, permissions=union)
