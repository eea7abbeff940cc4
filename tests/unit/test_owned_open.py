"""The scope keys a searched count of an owner's open tickets is given, and where not."""

from __future__ import annotations

import datetime

import pytest

from ticketexport.domain.actor import Actor
from ticketexport.views import compiler
from ticketexport.views.scope import RuleIds
from ticketexport.views.service import builtin_view, parse_list_request

NOW = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
IDS = RuleIds(open=(1, 2), closed=(5,), teams=(3, 4))


def _count(view: str, actor: Actor, rule_ids: RuleIds | None) -> tuple[str, dict[str, object]]:
    statement, params = compiler.compile_count(
        builtin_view(view),
        parse_list_request({"view": view, "q": "printer"}),
        actor,
        now=NOW,
        tz="UTC",
        rule_ids=rule_ids,
    )
    return statement.as_string(None), params


@pytest.mark.parametrize(
    ("view", "keys"),
    [
        ("team-tickets", [2 << 56 | t << 16 | s for t in (3, 4) for s in (1, 2)]),
        ("my-tickets", [3 << 56 | 9 << 16 | s for s in (1, 2)]),
        ("created-by-me", [4 << 56 | 9 << 16 | s for s in (1, 2)]),
        ("unassigned", [5 << 56 | s for s in (1, 2)]),
    ],
)
def test_an_owners_view_is_its_scope_keys(view: str, keys: list[int]) -> None:
    text, params = _count(view, Actor(9, is_admin=False, permissions=0), IDS)
    assert "ticketexport_scope_keys(t.status_id, t.team_id, t.assignee_id, t.created_by_id)" in text
    assert keys in params.values()
    # Without the lookups, the rule reads them in the statement as before.
    text, _ = _count(view, Actor(9, is_admin=False, permissions=0), None)
    assert "ticketexport_scope_keys" not in text
    assert "status_type" in text


@pytest.mark.parametrize(
    ("actor_id", "ids"),
    [
        (1 << 40, IDS),
        (9, RuleIds(open=(1, 1 << 15), closed=(5,), teams=(3,))),
        (9, RuleIds(open=(1,), closed=(5,), teams=(-3,))),
    ],
)
def test_ids_out_of_the_keys_range_keep_the_rule(actor_id: int, ids: RuleIds) -> None:
    """An owner or status id the keys cannot hold (the function gives such a ticket no
    key) leaves the view's own conditions, with the lookups as values."""
    actor = Actor(actor_id, is_admin=False, permissions=0)
    views = ["team-tickets"] if actor_id == 9 else ["my-tickets", "created-by-me"]
    for view in views:
        text, params = _count(view, actor, ids)
        assert "ticketexport_scope_keys" not in text, view
        assert list(ids.open) in params.values(), view


def test_views_of_no_owner_never_use_scope_keys() -> None:
    for view in ("all", "open", "following", "overdue", "snoozed", "closed", "recently-closed"):
        text, _ = _count(view, Actor(9, is_admin=False, permissions=0), IDS)
        assert "ticketexport_scope_keys" not in text, view
