"""The acting user: who does something, with the permissions they hold at that moment."""

from __future__ import annotations

import dataclasses

from ticketexport.domain.permissions import Permission, can_download, can_export


@dataclasses.dataclass(frozen=True)
class Actor:
    """One staff member as every layer sees them: web request, use case, compiler, worker.

    Loaded fresh for each request (or from an export's frozen request in the worker), so
    permissions are the ones held now. `email` and `name` are empty where only the identity
    and permissions were recorded (the view's acting user in a frozen export request).
    """

    id: int
    is_admin: bool
    permissions: Permission
    email: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        # Frozen requests and rows carry the bit-field as a plain int.
        object.__setattr__(self, "permissions", Permission(int(self.permissions)))

    def has(self, flag: Permission) -> bool:
        return flag in self.permissions

    @property
    def may_export(self) -> bool:
        return can_export(self.permissions)

    @property
    def may_download(self) -> bool:
        """Downloading needs an administrator who also holds the export permission."""
        return can_download(is_admin=self.is_admin, permissions=self.permissions)
