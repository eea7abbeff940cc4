"""The scope keys a searched count of an owner's open tickets is given, and where not."""

from __future__ import annotations

import datetime
import re

import pytest

from ticketexport.domain.actor import Actor
from ticketexport.views import compiler, registry
from ticketexport.views.scope import RuleIds
from ticketexport.views.service import builtin_view, parse_list_request

NOW = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
IDS = RuleIds(open=(1, 2), closed=(5,), teams=(3, 4))


SCOPE = "ticketexport_scope_keys(t.status_id, t.team_id, t.assignee_id, t.created_by_id)"


def _bound(text: str, params: dict[str, object], before: str, after: str) -> list[object]:
    """The values bound where `before` %(pN)s `after` stands in the statement: the compiler
    builds every view's rule, so the parameters hold other views' values as well."""
    pattern = re.escape(before) + r"%\((p\d+)\)s" + re.escape(after)
    return [params[name] for name in re.findall(pattern, text)]


def _count(
    view: str,
    actor: Actor,
    rule_ids: RuleIds | None,
    matches: dict[str, list[int]] | None = None,
) -> tuple[str, dict[str, object]]:
    statement, params = compiler.compile_count(
        builtin_view(view),
        parse_list_request({"view": view, "q": "printer"}),
        actor,
        now=NOW,
        tz="UTC",
        rule_ids=rule_ids,
        search_matches=matches,
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
    if view == "team-tickets":
        # Read one searched column at a time: the title's part is the keys alone.
        (text,) = [part for part in _parts(text) if "LIKE" in part and "t.title" in part]
    assert _bound(text, params, f"({SCOPE} && ", "::bigint[])") == [keys]
    assert "t.status_id = ANY" not in text
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
    owners = {
        "team-tickets": ("(t.team_id = ANY (", "::bigint[]))", list(ids.teams)),
        "my-tickets": ("(t.assignee_id = ", "::bigint)", actor_id),
        "created-by-me": ("(t.created_by_id = ", "::bigint)", actor_id),
    }
    views = ["team-tickets"] if actor_id == 9 else ["my-tickets", "created-by-me"]
    for view in views:
        text, params = _count(view, actor, ids)
        assert "ticketexport_scope_keys" not in text, view
        before, after, value = owners[view]
        assert _bound(text, params, before, after) == [value], view
        opened = _bound(text, params, "(t.status_id = ANY (", "::smallint[]))")
        assert opened == [list(ids.open)], view


def test_views_of_no_owner_never_use_scope_keys() -> None:
    for view in ("all", "open", "following", "overdue", "snoozed", "closed", "recently-closed"):
        text, _ = _count(view, Actor(9, is_admin=False, permissions=0), IDS)
        assert "ticketexport_scope_keys" not in text, view


# The search's lookup matches, as a list page finds them: contacts 11 and 12 hold the term.
MATCHES: dict[str, list[int]] = {
    "status": [],
    "priority": [],
    "assignee": [7],
    "team": [],
    "contact": [11, 12],
}
COUNTED_BY_PARTS = "SELECT 1 FROM ((SELECT t.id FROM"


def _parts(text: str) -> list[str]:
    """The parts of a count read one searched column at a time, one per column."""
    assert text.startswith(f"SELECT count(*) FROM ({COUNTED_BY_PARTS}"), text[:80]
    return text.split(") UNION (")


def test_a_teams_search_is_counted_one_column_at_a_time() -> None:
    """Given the lookups, the team's view counts each searched column's tickets apart (the
    title's by the scope keys, each other column's by the teams and the open statuses as
    values; the contacts' one contact at a time, which tickets_team_status_contact_idx
    holds after the team and the status), each part stopping past the cap, and every
    ticket found once (UNION)."""
    text, params = _count("team-tickets", Actor(9, is_admin=False, permissions=0), IDS, MATCHES)
    parts = _parts(text)
    # The default columns' searched ones: id, title, status, priority, assignee, team, contact.
    assert len(parts) == 7
    assert all(part.rstrip(")").endswith(" LIMIT 10001") for part in parts[:-1])
    assert parts[-1].endswith(" LIMIT 10001)) AS found LIMIT 10001) AS limited")
    (contact,) = [part for part in parts if 't."contact_id" = m.id AND ' in part]
    assert _bound(contact, params, "unnest(", "::bigint[]) AS m(id) CROSS JOIN LATERAL") == [
        [11, 12]
    ]
    assert "OFFSET 0" in contact
    assert _bound(contact, params, "(t.team_id = ANY (", "::bigint[]))") == [[3, 4]]
    assert _bound(contact, params, "(t.status_id = ANY (", "::smallint[]))") == [[1, 2]]
    assert SCOPE not in contact
    assert sum(SCOPE in part for part in parts) == 1
    # Every part keeps the rest of the rule.
    assert all("t.snoozed_until IS NULL OR" in part for part in parts)


@pytest.mark.parametrize(
    ("view", "actor_id", "ids"),
    [
        *((view, 9, IDS) for view in registry.BUILTIN_VIEWS if view != "team-tickets"),
        ("team-tickets", 9, None),
        ("team-tickets", 9, RuleIds(open=(1,), closed=(5,), teams=(-3,))),
    ],
)
def test_other_counts_are_one_condition(view: str, actor_id: int, ids: RuleIds | None) -> None:
    """Every other view (a smaller owner's too), and the team's without the lookups or with
    a team the keys cannot hold, is one statement of ORed columns: another view's owner
    never shapes its count."""
    text, params = _count(view, Actor(actor_id, is_admin=False, permissions=0), ids, MATCHES)
    assert COUNTED_BY_PARTS not in text, view
    assert " UNION " not in text, view
    assert _bound(text, params, 't."contact_id" = ANY (', "::bigint[])") == [[11, 12]], view


def test_each_lookups_matches_are_bound_as_its_columns_type() -> None:
    """The status's and the priority's matches are smallint[], the columns' type: btree_gin's
    operators on PostgreSQL 15 compare a smallint with a smallint only, so a bigint[] would
    leave the title's and the lookups' indexes unable to read a band's part by them."""
    matches = {"status": [3], "priority": [1], "assignee": [7], "team": [4], "contact": [11]}
    text, params = _count("all", Actor(9, is_admin=False, permissions=0), None, matches)
    for key, cast, ids in (
        ("status_id", "smallint[]", [3]),
        ("priority_id", "smallint[]", [1]),
        ("assignee_id", "bigint[]", [7]),
        ("team_id", "bigint[]", [4]),
        ("contact_id", "bigint[]", [11]),
    ):
        assert _bound(text, params, f't."{key}" = ANY (', f"::{cast})") == [ids], key
