"""Permission flags and the access rules built on them."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Permission(enum.IntFlag):
    """Role permission bits; a user's effective permissions are the union over roles."""

    SYSTEM_SETTINGS = 1
    AUDIT_LOGS = 2
    ADMINISTRATORS = 4
    TEMPLATES = 8
    USERS = 16
    MANAGE_TEAMS = 32
    MANAGE_TICKETS = 64
    ACCESS_REPORTS = 128
    MANAGE_SYSTEM_VIEWS = 256
    IMPORT_EXPORT_TICKETS = 512
    EDIT_WIKI_ARTICLES = 1024


ALL_PERMISSIONS = Permission(sum(p.value for p in Permission))

LABELS: dict[Permission, str] = {
    Permission.SYSTEM_SETTINGS: "System Settings",
    Permission.AUDIT_LOGS: "Audit Logs",
    Permission.ADMINISTRATORS: "Administrators",
    Permission.TEMPLATES: "Templates",
    Permission.USERS: "Users",
    Permission.MANAGE_TEAMS: "Manage Teams",
    Permission.MANAGE_TICKETS: "Manage Tickets",
    Permission.ACCESS_REPORTS: "Access Reports",
    Permission.MANAGE_SYSTEM_VIEWS: "Manage System Views",
    Permission.IMPORT_EXPORT_TICKETS: "Import / Export Tickets",
    Permission.EDIT_WIKI_ARTICLES: "Edit Wiki Articles",
}


def permission_name(flag: Permission) -> str:
    """The CLI spelling of one flag, e.g. ``import_export_tickets``."""
    assert flag.name is not None  # single flags always have a name
    return flag.name.lower()


def parse_permissions(text: str) -> Permission:
    """Parse ``a,b,c`` (names as the brief spells them); an empty string means none."""
    result = Permission(0)
    known = {permission_name(p): p for p in Permission}
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in known:
            raise ValueError(
                f"unknown permission {raw.strip()!r}; known: {', '.join(sorted(known))}"
            )
        result |= known[name]
    return result


def effective(role_bits: Iterable[int]) -> Permission:
    """Union of the roles' bit-fields."""
    result = Permission(0)
    for bits in role_bits:
        result |= Permission(bits)
    return result


def can_export(permissions: Permission) -> bool:
    return Permission.IMPORT_EXPORT_TICKETS in permissions


def can_download(*, is_admin: bool, permissions: Permission) -> bool:
    """Downloading needs an administrator who also holds the export permission."""
    return is_admin and can_export(permissions)
