"""Hostile and malformed view input is refused with a message naming the problem."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketexport.views import cursor, registry
from ticketexport.views.model import ViewInputError, definition_to_json, parse_definition
from ticketexport.views.service import parse_list_request

HOSTILE = [
    "'; DROP TABLE tickets; --",
    "1 OR 1=1",
    '" OR ""="',
    "all'--",
    "\u202eevil",
    "ЖЖЖ",
    "🎉",
    "a\x00b",
    "x" * 10_240,
    "%s",
    "%(p0)s",
    "{}",
    "\\",
    "  ",
]

GOOD = {
    "name": "Mine",
    "conditions_and": [{"field": "title", "operator": "contains", "value": "printer"}],
    "conditions_or": [],
    "columns": ["id", "title"],
    "sort": [{"column": "created_at", "direction": "desc"}],
}


def definition(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    data.update(changes)
    return data


def test_labels_and_defaults_are_the_briefs() -> None:
    assert [c.label for c in registry.COLUMNS.values()] == [
        "Ticket ID",
        "Title",
        "Status",
        "Priority",
        "Language",
        "Category",
        "Assignee",
        "Team",
        "Contact ID",
        "Contact",
        "SLA Status",
        "SLA Due",
        "Created",
        "Last Updated",
        "Closed",
        "Tags",
        "Created By",
        "Description",
        "Snoozed",
        "Snoozed Until",
        "Tasks",
    ]
    assert registry.DEFAULT_COLUMNS == (
        "id",
        "title",
        "status",
        "priority",
        "assignee",
        "team",
        "contact",
        "created_at",
    )
    for ops in registry.OPERATORS.values():
        for op in ops:
            assert op.value_kind in registry.VALUE_KINDS


# parse_list_request -------------------------------------------------------------------


def test_defaults() -> None:
    request = parse_list_request({})
    assert (request.view, request.q, request.sort, dict(request.filters), request.page) == (
        "all",
        "",
        None,
        {},
        None,
    )
    request = parse_list_request({"view": "42", "q": "  printer ", "status": "", "sort": "sla"})
    assert (request.view, request.q, request.sort, dict(request.filters)) == (
        "42",
        "printer",
        "sla",
        {},
    )


@pytest.mark.parametrize("key", ["view", "q", "sort", "page", *registry.FILTER_PARAMS])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_in_every_parameter(key: str, value: str) -> None:
    try:
        request = parse_list_request({key: value})
    except ViewInputError as exc:
        message = str(exc)
        assert message
        assert "Traceback" not in message
        assert "SQL" not in message
        assert key in message or "cursor" in message or "view" in message or "sort" in message
        return
    # Only a search text may contain arbitrary characters; it is bound, never spliced.
    assert key == "q" or not value.strip()
    assert "\x00" not in request.q
    assert len(request.q) <= registry.MAX_SEARCH


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ViewInputError, match="unknown parameter 'colour'"):
        parse_list_request({"colour": "red"})
    with pytest.raises(ViewInputError, match="unknown parameter"):
        parse_list_request({"q'; --": "x"})


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"view": "nope"}, "unknown view"),
        ({"view": "0"}, "unknown view"),
        ({"view": "-1"}, "unknown view"),
        ({"sort": "created_at"}, "unknown sort"),
        ({"type": "archived"}, "type="),
        ({"snoozed": "yes"}, "snoozed="),
        ({"assignee": "1.5"}, "assignee="),
        ({"team": "-3"}, "team="),
        ({"contact": "0x10"}, "contact="),
        ({"created_by": "99999999999999999999999"}, "created_by="),
        ({"status": "Open"}, "status="),
        ({"priority": "high priority"}, "priority="),
        ({"q": "x" * 201}, "too long"),
        ({"q": "a\x00"}, "NUL"),
    ],
)
def test_named_problems(params: dict[str, str], fragment: str) -> None:
    with pytest.raises(ViewInputError) as info:
        parse_list_request(params)
    assert fragment in str(info.value)


def _token(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "page",
    [
        "not a cursor!",
        "AAAA",
        "====",
        _token([1, 2]),
        _token({"v": 2, "s": "x", "k": []}),
        _token({"v": 1, "s": "x"}),
        _token({"v": 1, "s": 5, "k": []}),
        _token({"v": 1, "s": "x", "k": {}}),
        _token({"v": 1, "s": "x", "k": [], "extra": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "A" * 7000,
    ],
)
def test_bad_cursors(page: str) -> None:
    with pytest.raises(ViewInputError, match=r"cursor|page="):
        parse_list_request({"page": page})


def test_cursor_round_trip_and_strict_types() -> None:
    when = datetime.datetime(2026, 3, 8, 7, 30, tzinfo=datetime.UTC)
    token = cursor.encode("sig", [when, 7, "é", False])
    assert cursor.decode(token, "sig", ["ts", "int", "text", "bool"]) == (when, 7, "é", False)
    with pytest.raises(ViewInputError, match="another view or sort"):
        cursor.decode(token, "other", ["ts", "int", "text", "bool"])
    for kinds in (["int", "int", "text", "bool"], ["ts", "bool", "text", "bool"], ["ts", "int"]):
        with pytest.raises(ViewInputError, match="cursor"):
            cursor.decode(token, "sig", kinds)
    naive = _token({"v": 1, "s": "sig", "k": ["2026-03-08T07:30:00"]})
    with pytest.raises(ViewInputError, match="cursor"):
        cursor.decode(naive, "sig", ["ts"])
    huge = _token({"v": 1, "s": "sig", "k": [2**70]})
    with pytest.raises(ViewInputError, match="cursor"):
        cursor.decode(huge, "sig", ["int"])


@settings(max_examples=300, derandomize=True)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=300), max_size=4))
def test_any_query_is_parsed_or_refused_cleanly(params: dict[str, str]) -> None:
    try:
        parse_list_request(params)
    except ViewInputError as exc:
        message = str(exc)
        assert message


# parse_definition -----------------------------------------------------------------------


def test_round_trip() -> None:
    parsed = parse_definition(GOOD)
    assert parse_definition(definition_to_json(parsed)) == parsed
    assert definition_to_json(parsed) == GOOD


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"owner": 1}, "unknown keys"),
        ({"name": ""}, "view name"),
        ({"name": "x" * 10_240}, "too long"),
        ({"name": "a\x00b"}, "NUL"),
        ({"name": "tab\there"}, "control characters"),
        ({"name": 5}, "view name"),
        ({"columns": []}, "columns"),
        ({"columns": ["id"] * 21}, "columns"),
        ({"columns": ["id", "id"]}, "twice"),
        ({"columns": ["id", "password_hash"]}, "unknown column 'password_hash'"),
        ({"columns": "id"}, "'columns' must be a list"),
        ({"sort": []}, "sort levels"),
        ({"sort": [{"column": "id", "direction": "asc"}] * 7}, "sort levels"),
        ({"sort": [{"column": "tasks", "direction": "asc"}]}, "cannot be sorted"),
        ({"sort": [{"column": "id", "direction": "up"}]}, "direction"),
        ({"sort": [{"column": "id; DROP", "direction": "asc"}]}, "cannot be sorted"),
        ({"sort": [{"column": "id"}, {"column": "id"}]}, "twice"),
        ({"conditions_and": "title"}, "must be a list"),
        ({"conditions_and": [{"field": "title"}] * 51}, "more than 50"),
        ({"conditions_or": ["title"]}, "conditions_or[0]"),
        (
            {"conditions_and": [{"field": "secret", "operator": "equals", "value": "x"}]},
            "unknown field 'secret'",
        ),
        (
            {"conditions_and": [{"field": "title", "operator": "gt", "value": "x"}]},
            "no operator 'gt'",
        ),
        (
            {
                "conditions_and": [
                    {"field": "title", "operator": "equals", "value": "x", "sql": "1"}
                ]
            },
            "unknown keys",
        ),
        (
            {"conditions_and": [{"field": "title", "operator": "equals", "value": ""}]},
            "must not be empty",
        ),
        (
            {"conditions_and": [{"field": "title", "operator": "equals", "value": 5}]},
            "must be text",
        ),
        ({"conditions_and": [{"field": "title", "operator": "equals", "value": "a\x00"}]}, "NUL"),
        (
            {"conditions_and": [{"field": "title", "operator": "equals", "value": "x" * 10_240}]},
            "too long",
        ),
        (
            {"conditions_and": [{"field": "title", "operator": "is_empty", "value": "x"}]},
            "takes no value",
        ),
        ({"conditions_and": [{"field": "id", "operator": "eq", "value": True}]}, "whole number"),
        (
            {"conditions_and": [{"field": "id", "operator": "eq", "value": "1 OR 1=1"}]},
            "whole number",
        ),
        ({"conditions_and": [{"field": "id", "operator": "eq", "value": 2**64}]}, "between"),
        (
            {"conditions_and": [{"field": "created_at", "operator": "on", "value": "2026-02-30"}]},
            "real date",
        ),
        (
            {"conditions_and": [{"field": "created_at", "operator": "on", "value": "yesterday"}]},
            "YYYY-MM-DD",
        ),
        (
            {
                "conditions_and": [
                    {
                        "field": "created_at",
                        "operator": "within_past",
                        "value": {"amount": 0, "unit": "days"},
                    }
                ]
            },
            "between",
        ),
        (
            {
                "conditions_and": [
                    {
                        "field": "created_at",
                        "operator": "within_past",
                        "value": {"amount": 3, "unit": "weeks"},
                    }
                ]
            },
            "unit",
        ),
        (
            {"conditions_and": [{"field": "created_at", "operator": "within_past", "value": 3}]},
            "amount",
        ),
        (
            {"conditions_and": [{"field": "created_at", "operator": "preset", "value": "someday"}]},
            "must be one of",
        ),
        (
            {"conditions_and": [{"field": "assignee", "operator": "any_of", "value": []}]},
            "at least one",
        ),
        (
            {
                "conditions_and": [
                    {"field": "assignee", "operator": "any_of", "value": list(range(1, 300))}
                ]
            },
            "too many",
        ),
        (
            {"conditions_and": [{"field": "assignee", "operator": "is", "value": [1, 2]}]},
            "exactly one",
        ),
        (
            {"conditions_and": [{"field": "assignee", "operator": "is", "value": ["me"]}]},
            "whole number",
        ),
        (
            {"conditions_and": [{"field": "status", "operator": "any_of", "value": ["Open'--"]}]},
            "developer name",
        ),
        (
            {"conditions_and": [{"field": "status", "operator": "type_is", "value": "archived"}]},
            "open or closed",
        ),
        (
            {
                "conditions_and": [
                    {"field": "priority", "operator": "more_important_than", "value": 3}
                ]
            },
            "developer name",
        ),
    ],
)
def test_definition_problems_are_named(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ViewInputError) as info:
        parse_definition(definition(**changes))
    assert fragment in str(info.value)


def test_values_are_normalised() -> None:
    parsed = parse_definition(
        definition(
            conditions_and=[
                {"field": "assignee", "operator": "any_of", "value": ["3", 3, 4]},
                {"field": "team", "operator": "is", "value": "2"},
                {"field": "id", "operator": "ge", "value": " 12 "},
                {
                    "field": "created_at",
                    "operator": "within_next",
                    "value": {"amount": "2", "unit": "months"},
                },
                {"field": "snoozed", "operator": "is_true", "value": ""},
            ]
        )
    )
    assert [c.value for c in parsed.conditions_and] == [
        [3, 4],
        [2],
        12,
        {"amount": 2, "unit": "months"},
        None,
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, derandomize=True)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "conditions_and": st.lists(
                st.fixed_dictionaries(
                    {
                        "field": st.sampled_from([*registry.FIELDS, "x"]),
                        "operator": st.sampled_from(
                            sorted({op.key for ops in registry.OPERATORS.values() for op in ops})
                        ),
                        "value": json_values,
                    }
                ),
                max_size=3,
            ),
            "conditions_or": json_values,
            "columns": st.lists(st.sampled_from([*registry.COLUMNS, "x"]), max_size=4),
            "sort": json_values,
        },
    )
)
def test_any_json_is_parsed_or_refused_cleanly(data: dict[str, Any]) -> None:
    try:
        parsed = parse_definition(data)
    except ViewInputError as exc:
        message = str(exc)
        assert message
    else:
        assert parse_definition(definition_to_json(parsed)) == parsed


def test_the_largest_cursor_fits() -> None:
    """Six descending text levels of 60 four-byte characters still make a valid cursor."""
    text = "🎉" * 60
    keys = [False, text, text] * 6 + [2**62]
    token = cursor.encode("sig", keys)
    assert len(token) <= cursor.MAX_CURSOR
    request = parse_list_request({"page": token})
    assert cursor.decode(request.page or "", "sig", ["bool", "text", "text"] * 6 + ["int"])
