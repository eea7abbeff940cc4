"""Export lifecycle rules that need no database: transitions, progress, names."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from ticketexport.domain import exports
from ticketexport.domain.exports import Status

ALLOWED = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("running", "queued"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("completed", "expired"),
}


@pytest.mark.parametrize("old", list(Status))
@pytest.mark.parametrize("new", list(Status))
def test_transition_table_is_the_briefs(old: Status, new: Status) -> None:
    assert exports.can_transition(old, new) == ((old.value, new.value) in ALLOWED)


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [
        (0, None, None),
        (0, 0, 100),
        (0, 10, 0),
        (3, 10, 30),
        (9, 10, 90),
        (10, 10, 100),
        (1, 3, 33),
        (2, 3, 66),
    ],
)
def test_percent(done: int, total: int | None, expected: int | None) -> None:
    assert exports.percent(done, total) == expected


def test_percent_never_decreases_as_rows_grow() -> None:
    values = [exports.percent(done, 997) for done in range(998)]
    assert values == sorted(values)  # type: ignore[type-var]
    assert values[-1] == 100


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("My tickets", "my-tickets"),
        ("Überfällige Tickets — Q1, 2026!", "uberfallige-tickets-q1-2026"),
        ("Заявки", "view"),
        ("   ", "view"),
        ("a" * 60, "a" * 40),
        ("x" * 39 + " y", "x" * 39),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert exports.slugify(name) == slug
    assert len(exports.slugify(name)) <= 40


def test_file_name_uses_the_organisation_zone() -> None:
    as_of = dt.datetime(2026, 3, 8, 6, 59, 58, tzinfo=dt.UTC)
    tz = zoneinfo.ZoneInfo("America/New_York")
    assert exports.file_name("Open", as_of, tz) == "tickets-open-20260308-015958.csv"


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    a = exports.fingerprint({"view": "open", "q": "x", "filters": {"a": "1", "b": "2"}})
    b = exports.fingerprint({"filters": {"b": "2", "a": "1"}, "q": "x", "view": "open"})
    c = exports.fingerprint({"view": "open", "q": "y", "filters": {"a": "1", "b": "2"}})
    assert a == b
    assert a != c


def test_unknown_error_codes_get_the_internal_message() -> None:
    assert exports.safe_message("no_such_code") == exports.ERROR_MESSAGES["internal"]
    assert "Import / Export Tickets" in exports.safe_message("permission_revoked")
