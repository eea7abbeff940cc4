"""API tokens' pure rules: the secret's form, its digest, the form's checks; the API's cursor;
the manifest's types and CSVW description."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from ticketexport import tokens
from ticketexport.exports import manifest
from ticketexport.views.columns import COLUMNS
from ticketexport.web import api


def test_a_new_secret_is_tex_and_43_url_safe_characters() -> None:
    seen = {tokens.new_secret() for _ in range(50)}
    assert len(seen) == 50
    for secret in seen:
        assert tokens.well_formed(secret)
        assert len(secret) == 4 + 43
        assert tokens.digest(secret) == hashlib.sha256(secret.encode()).digest()


@pytest.mark.parametrize(
    "secret",
    ["", "tex_", "tex_" + "a" * 42, "tex_" + "a" * 44, "TEX_" + "a" * 43, "tex_" + "+" * 43],
)
def test_malformed_secrets_are_not_looked_up(secret: str) -> None:
    assert not tokens.well_formed(secret)


def test_the_form_defaults_and_orders_scopes() -> None:
    parsed = tokens.parse_request("  BI  ", ["views:read", "exports:read"], "")
    assert parsed == tokens.TokenRequest("BI", ("exports:read", "views:read"), 90)
    assert tokens.parse_request("x", ["exports:write"], "365").days == 365
    assert tokens.parse_request("x", ["exports:write"], " 1 ").days == 1


@pytest.mark.parametrize(
    ("name", "scopes", "days", "message"),
    [
        ("", ["views:read"], "", "name"),
        (" ", ["views:read"], "", "name"),
        ("x" * 101, ["views:read"], "", "at most 100"),
        ("a\nb", ["views:read"], "", "control"),
        ("x", [], "", "at least one scope"),
        ("x", ["views:write"], "", "Unknown scope"),
        ("x", ["views:read"], "0", "1 to 365"),
        ("x", ["views:read"], "366", "1 to 365"),
        ("x", ["views:read"], "0090", "1 to 365"),
        ("x", ["views:read"], "²", "1 to 365"),
        ("x", ["views:read"], "9" * 400, "1 to 365"),
    ],
)
def test_the_form_names_each_problem(name: str, scopes: list[str], days: str, message: str) -> None:
    with pytest.raises(tokens.TokenInvalid, match=message):
        tokens.parse_request(name, scopes, days)


def test_cursors_name_an_export_and_nothing_else() -> None:
    export_id = str(uuid.uuid4())
    cursor = api._cursor(export_id)
    assert len(cursor) == 22
    assert api._after(cursor) == export_id
    # The last character's low four bits lie beyond the 16 bytes: only one spelling is ours.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other_end = cursor[:-1] + alphabet[alphabet.index(cursor[-1]) ^ 1]
    forged = ("", cursor + "A", cursor[:-1] + "=", "+" * 22, "é" * 22, other_end)
    for text in forged:
        if api._cursor(export_id) == text:
            continue
        with pytest.raises(api.ApiError) as raised:
            api._after(text)
        assert raised.value.status == 400


def test_manifest_types_per_format() -> None:
    columns = tuple(COLUMNS[key] for key in ("id", "title", "created_at", "snoozed", "tags"))
    for export_format, snoozed in (("csv", "boolean"), ("xlsx", "string"), ("parquet", "boolean")):
        types = [manifest._type(column, export_format) for column in columns]
        assert types == ["integer", "string", "datetime", snoozed, "string"]
    described = manifest.csvw("tickets.csv", columns)
    assert described["@context"] == "http://www.w3.org/ns/csvw"
    assert described["url"] == "tickets.csv"
    assert described["dialect"]["lineTerminators"] == ["\n"]
    assert [c["titles"] for c in described["tableSchema"]["columns"]] == [
        "Ticket ID",
        "Title",
        "Created",
        "Snoozed",
        "Tags",
    ]
    assert described["tableSchema"]["columns"][3]["datatype"] == {
        "base": "boolean",
        "format": "Yes|No",
    }
