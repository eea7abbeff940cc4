"""The frozen request's stored JSON: its exact shape, its round trip and what it refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ticketexport.domain import exports as rules
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports.frozen import (
    FrozenActor,
    FrozenRequest,
    FrozenView,
    MalformedRequest,
    Requester,
)

# A request as export_jobs.request holds it, written out by hand.
STORED: dict[str, Any] = {
    "version": 1,
    "view": {
        "key": "saved:7",
        "name": "Open in Paris",
        "builtin": None,
        "saved_view_id": 7,
        "definition": {"columns": ["id", "subject"], "conditions": []},
    },
    "q": "printer",
    "sort": "-updated",
    "filters": {"priority": "high", "status": "open"},
    "timezone": "Europe/Paris",
    "format": "xlsx",
    "actor": {"id": 3, "is_admin": False, "permissions": 512},
    "requester": {
        "id": 5,
        "email": "admin@example.com",
        "is_admin": True,
        "permissions": 512,
        "roles": ["Support", "Admin"],
    },
}


def test_the_stored_json_reads_and_writes_back_key_for_key() -> None:
    frozen = FrozenRequest.from_json(STORED)
    assert frozen.view == FrozenView(
        key="saved:7",
        name="Open in Paris",
        builtin=None,
        saved_view_id=7,
        definition={"columns": ["id", "subject"], "conditions": []},
    )
    assert frozen.actor == FrozenActor(id=3, is_admin=False, permissions=512)
    assert frozen.requester.roles == ("Support", "Admin")
    assert frozen.to_json() == STORED
    assert list(frozen.to_json()) == list(STORED)


def test_a_request_from_before_formats_were_recorded_keeps_no_format() -> None:
    stored = {key: value for key, value in STORED.items() if key != "format"}
    frozen = FrozenRequest.from_json(stored)
    assert frozen.format is None
    assert frozen.to_json() == stored


def test_the_fingerprint_covers_what_the_file_holds_not_who_asked() -> None:
    frozen = FrozenRequest.from_json(STORED)
    expected = rules.fingerprint(
        {
            key: STORED[key]
            for key in ("view", "q", "sort", "filters", "timezone", "actor", "format")
        }
    )
    assert frozen.fingerprint() == expected
    other = Requester.of(Actor(id=9, is_admin=True, permissions=Permission(512)), ["Other"])
    assert frozen.with_requester(other).fingerprint() == expected
    assert frozen.with_requester(other).to_json()["requester"] == {
        "id": 9,
        "email": "",
        "is_admin": True,
        "permissions": 512,
        "roles": ["Other"],
    }


def test_the_actor_is_the_one_whose_view_it_is() -> None:
    actor = FrozenRequest.from_json(STORED).actor.actor()
    assert actor == Actor(id=3, is_admin=False, permissions=Permission(512))


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    stored = copy.deepcopy(STORED)
    inner = stored
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return stored


def _with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    stored = copy.deepcopy(STORED)
    inner = stored
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return stored


MALFORMED = {
    "not an object": [],
    "empty": {},
    "no view": _without(("view",)),
    "no requester": _without(("requester",)),
    "no timezone": _without(("timezone",)),
    "a view without its definition": _without(("view", "definition")),
    "an actor id as text": _with(("actor", "id"), "3"),
    "a filter that is not text": _with(("filters",), {"status": 1}),
    "a format that is not text": _with(("format",), 2),
    "roles that are not a list": _with(("requester", "roles"), "Admin"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_request_this_code_did_not_write_is_refused(case: str) -> None:
    with pytest.raises(MalformedRequest):
        FrozenRequest.from_json(MALFORMED[case])
    assert FrozenRequest.read(MALFORMED[case]) is None
