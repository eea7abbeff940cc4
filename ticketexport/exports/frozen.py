"""The frozen request: what an export is of, written at the click and read by everyone after."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

from ticketexport.domain import exports as rules
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission

# Stored in every request; a new shape gets a new number, and from_json reads each.
REQUEST_VERSION = 1
# The keys of the stored JSON that decide what the file holds: two clicks with the same
# values are the same export (the double-submit rule), whoever the requester's roles are.
FINGERPRINT_KEYS = ("view", "q", "sort", "filters", "timezone", "actor", "format", "since")

_T = TypeVar("_T")


class MalformedRequest(ValueError):
    """A stored request that is not one this code wrote (an edited or foreign row)."""


def _get(data: Mapping[str, Any], key: str, kind: type[_T] | tuple[type, ...]) -> _T:
    if not isinstance(data, Mapping) or key not in data:
        raise MalformedRequest(f"the request has no {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise MalformedRequest(f"the request's {key!r} is a {type(value).__name__}")
    return value  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class FrozenView:
    """The view as it was at the click: its definition is copied, not referred to."""

    key: str
    name: str
    # The built-in view's key; None for a saved view (its `saved_view_id` names it).
    builtin: str | None
    saved_view_id: int | None
    # views.model.definition_to_json's form, parsed again by the worker.
    definition: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class FrozenActor:
    """Whose view it is: "my tickets" stays the requester's, even on a retry by an admin."""

    id: int
    is_admin: bool
    permissions: int

    def actor(self) -> Actor:
        return Actor(id=self.id, is_admin=self.is_admin, permissions=Permission(self.permissions))


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who clicked (or retried), for the audit and the worker's permission check."""

    id: int
    email: str
    is_admin: bool
    permissions: int
    roles: tuple[str, ...]

    @classmethod
    def of(cls, user: Actor, roles: list[str]) -> Requester:
        return cls(
            id=user.id,
            email=user.email,
            is_admin=user.is_admin,
            permissions=int(user.permissions),
            roles=tuple(roles),
        )


@dataclasses.dataclass(frozen=True)
class Since:
    """The earlier export a file of changes is measured from: its click, as recorded in its
    row when this one was requested (so the worker never reads that row again)."""

    export_id: str
    as_of: dt.datetime
    snapshot: str

    def to_json(self) -> dict[str, Any]:
        return {
            "export_id": self.export_id,
            "as_of": self.as_of.isoformat(),
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_json(cls, data: Any) -> Since:
        raw = _get(data, "as_of", str)
        try:
            as_of = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise MalformedRequest("the request's since.as_of is not an instant") from None
        if as_of.tzinfo is None:
            raise MalformedRequest("the request's since.as_of has no time zone")
        return cls(
            export_id=_get(data, "export_id", str),
            as_of=as_of,
            snapshot=_get(data, "snapshot", str),
        )


@dataclasses.dataclass(frozen=True)
class FrozenRequest:
    """Everything the worker needs, as it is at the click (export_jobs.request)."""

    view: FrozenView
    q: str
    sort: str | None
    filters: Mapping[str, str]
    timezone: str
    # None only in requests from before formats were recorded (they are CSV).
    format: str | None
    actor: FrozenActor
    requester: Requester
    version: int = REQUEST_VERSION
    # Set for a file of the changes since an earlier export of the same request.
    since: Since | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored JSON, key for key as it has always been written."""
        stored: dict[str, Any] = {
            "version": self.version,
            "view": {
                "key": self.view.key,
                "name": self.view.name,
                "builtin": self.view.builtin,
                "saved_view_id": self.view.saved_view_id,
                "definition": dict(self.view.definition),
            },
            "q": self.q,
            "sort": self.sort,
            "filters": dict(sorted(self.filters.items())),
            "timezone": self.timezone,
        }
        if self.format is not None:
            stored["format"] = self.format
        stored["actor"] = dataclasses.asdict(self.actor)
        stored["requester"] = {
            **dataclasses.asdict(self.requester),
            "roles": list(self.requester.roles),
        }
        if self.since is not None:
            stored["since"] = self.since.to_json()
        return stored

    @classmethod
    def from_json(cls, data: Any) -> FrozenRequest:
        """The request a row holds; MalformedRequest when it is not one this code writes."""
        view = _get(data, "view", Mapping)
        actor = _get(data, "actor", Mapping)
        requester = _get(data, "requester", Mapping)
        filters = _get(data, "filters", Mapping)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in filters.items()):
            raise MalformedRequest("the request's filters are not all text")
        roles = _get(requester, "roles", list)
        return cls(
            version=_get(data, "version", int),
            view=FrozenView(
                key=_get(view, "key", str),
                name=_get(view, "name", str),
                builtin=_get(view, "builtin", (str, type(None))),
                saved_view_id=_get(view, "saved_view_id", (int, type(None))),
                definition=_get(view, "definition", Mapping),
            ),
            q=_get(data, "q", str),
            sort=_get(data, "sort", (str, type(None))),
            filters=dict(filters),
            timezone=_get(data, "timezone", str),
            format=_get(data, "format", str) if "format" in data else None,
            actor=FrozenActor(
                id=_get(actor, "id", int),
                is_admin=_get(actor, "is_admin", bool),
                permissions=_get(actor, "permissions", int),
            ),
            requester=Requester(
                id=_get(requester, "id", int),
                email=_get(requester, "email", str),
                is_admin=_get(requester, "is_admin", bool),
                permissions=_get(requester, "permissions", int),
                roles=tuple(str(role) for role in roles),
            ),
            since=Since.from_json(_get(data, "since", Mapping)) if "since" in data else None,
        )

    @classmethod
    def read(cls, data: Any) -> FrozenRequest | None:
        """The request a row holds, or None for pages that show what they can of any row."""
        try:
            return cls.from_json(data)
        except MalformedRequest:
            return None

    def with_requester(self, requester: Requester) -> FrozenRequest:
        """The same export asked for by someone else (a retry)."""
        return dataclasses.replace(self, requester=requester)

    def changes_since(self, since: Since, requester: Requester) -> FrozenRequest:
        """The same request asked again by its requester for the changes since `since`."""
        return dataclasses.replace(self, requester=requester, since=since)

    def fingerprint(self) -> str:
        stored = self.to_json()
        return rules.fingerprint({key: stored[key] for key in FINGERPRINT_KEYS if key in stored})
