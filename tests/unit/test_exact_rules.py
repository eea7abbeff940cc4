"""Edges of the pure rules that the broader tests pass over: percent at its bounds, slugs of
names that start or end with punctuation, a fingerprint pinned across releases, the
cursor's exact limits and messages, format lookups, and the file bytes however COPY's
output is split into blocks."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import openpyxl
import pytest

from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Invalid
from ticketexport.domain.exports import fingerprint, percent, slugify
from ticketexport.domain.permissions import Permission, parse_permissions
from ticketexport.exports import formats, xlsx
from ticketexport.views import cursor
from ticketexport.views.columns import COLUMNS
from ticketexport.views.model import ViewInputError

BAD_CURSOR = "the page cursor is not valid; start again from the first page"


def test_percent_at_its_bounds() -> None:
    assert percent(0, 1) == 0  # one row to go is not done
    assert percent(1, 1) == 100
    assert percent(0, 0) == 100  # an empty export is complete once counted
    assert percent(101, 100) == 100  # never past 100, whatever the counts say
    assert percent(1, 3) == 33
    assert percent(0, None) is None


def test_slugs_lose_leading_and_trailing_punctuation() -> None:
    assert slugify("(My view)") == "my-view"
    assert slugify("  Überfällige Tickets!  ") == "uberfallige-tickets"
    assert slugify("a" * 39 + " b") == "a" * 39  # cut at 40, then no dangling dash
    assert slugify("!!!") == "view"


def test_the_double_submit_fingerprint_is_stable_across_releases() -> None:
    """Fingerprints are stored with every export: the digest of a request must not change
    when the code does (compact separators, sorted keys, text as UTF-8)."""
    request = {"view": {"key": "all"}, "q": "Ünïcode", "sort": None, "filters": {"b": 1, "a": 2}}
    canonical = '{"filters":{"a":2,"b":1},"q":"Ünïcode","sort":null,"view":{"key":"all"}}'
    assert fingerprint(request) == hashlib.sha256(canonical.encode()).hexdigest()


def test_an_actor_holds_its_permissions_as_flags() -> None:
    actor = Actor(id=1, is_admin=True, permissions=512)  # type: ignore[arg-type]
    assert isinstance(actor.permissions, Permission)
    assert actor.has(Permission.IMPORT_EXPORT_TICKETS)
    assert actor.may_download


def test_parse_permissions_skips_empty_items_and_names_the_known() -> None:
    assert parse_permissions(" , users,, audit_logs ,") == Permission.USERS | Permission.AUDIT_LOGS
    with pytest.raises(ValueError, match=r"unknown permission 'x'; known: access_reports, ad"):
        parse_permissions("users,x")


def _token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _keys(*keys: Any) -> str:
    return _token({"v": 1, "s": "sig", "k": list(keys)})


def test_cursor_messages_are_exact() -> None:
    token = cursor.encode("sig", [1])
    with pytest.raises(ViewInputError) as other:
        cursor.decode(token, "other", ["int"])
    assert str(other.value) == (
        "the page cursor belongs to another view or sort; start again from the first page"
    )
    for bad, kinds in ((_keys(5), ["ts"]), (_keys("yesterday"), ["ts"]), (_keys("x"), ["int"])):
        with pytest.raises(ViewInputError) as refused:
            cursor.decode(bad, "sig", kinds)
        assert str(refused.value) == BAD_CURSOR


def test_cursor_timestamps_up_to_40_characters() -> None:
    forty = "2026-06-01T12:00:00.1234+05:30:00.123456"
    assert len(forty) == 40
    assert cursor.decode(_keys(forty), "sig", ["ts"]) == (datetime.datetime.fromisoformat(forty),)
    with pytest.raises(ViewInputError):
        cursor.decode(_keys("2026-06-01T12:00:00.12345+05:30:00.123456"), "sig", ["ts"])


def test_cursor_integers_span_bigint() -> None:
    for value in (-(2**63), 2**63 - 1):
        assert cursor.decode(_keys(value), "sig", ["int"]) == (value,)
    for value in (-(2**63) - 1, 2**63):
        with pytest.raises(ViewInputError):
            cursor.decode(_keys(value), "sig", ["int"])


@pytest.mark.parametrize("text", ["a\x00b", "\ud800"], ids=["nul", "lone-surrogate"])
def test_cursor_text_postgresql_cannot_hold_is_refused(text: str) -> None:
    raw = json.dumps({"v": 1, "s": "sig", "k": [text]}).encode()
    token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(ViewInputError) as refused:
        cursor.decode(token, "sig", ["text"])
    assert str(refused.value) == BAD_CURSOR


def test_format_lookups() -> None:
    assert formats.recorded("no-such-format") is formats.CSV  # an old row's unknown format
    assert formats.recorded(None) is formats.CSV
    with pytest.raises(Invalid) as refused:
        formats.get("p" * 50)
    assert str(refused.value) == (
        f"unknown format {'p' * 40!r}; use one of {', '.join(formats.FORMATS)}"
    )


async def _blocks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _encoded(fmt: formats.ExportFormat, parts: list[bytes], layout: formats.Layout) -> bytes:
    return b"".join([b async for b in fmt.encode(_blocks(parts), layout)])


@pytest.mark.parametrize("key", list(formats.FORMATS))
def test_the_file_does_not_depend_on_how_copy_splits_its_output(key: str) -> None:
    fmt = formats.FORMATS[key]
    layout = formats.Layout(title="Split", columns=(COLUMNS["id"], COLUMNS["title"]))
    if key == "xlsx":
        rows = _xlsx_rows(3)
    elif key == "parquet":
        rows = [b"1,One\n", b'2,"Two\nlines"\n', b"3,\n"]
    else:
        rows = [b"Ticket ID,Title\n", b"1,One\n", b"2,Two\n", b"3,Three\n"]
    whole = asyncio.run(_encoded(fmt, [b"".join(rows)], layout))
    split = asyncio.run(_encoded(fmt, rows, layout))
    assert whole == split


def _xlsx_rows(count: int) -> list[bytes]:
    """Worksheet rows as the xlsx format's COPY writes them, one line each."""
    return [
        f'<row r="{n + 2}"><c r="A{n + 2}"><v>{n}</v></c></row>\n'.encode() for n in range(count)
    ]


def test_cursor_tokens_hold_only_their_alphabet_and_at_most_max_cursor_characters() -> None:
    token = cursor.encode("sig", [1])
    with pytest.raises(ViewInputError):  # a decoder would skip the dot
        cursor.decode(token[:4] + "." + token[4:], "sig", ["int"])
    # The longest token allowed, and one character more.
    fill = "a" * 300
    keys: list[str] = []
    while len(cursor.encode("sig", [*keys, fill])) <= cursor.MAX_CURSOR:
        keys.append(fill)
    last = ""
    while len(cursor.encode("sig", [*keys, last])) < cursor.MAX_CURSOR:
        last += "a"
    exact = cursor.encode("sig", [*keys, last])
    assert len(exact) == cursor.MAX_CURSOR
    assert cursor.decode(exact, "sig", ["text"] * (len(keys) + 1)) == (*keys, last)
    longer = cursor.encode("sig", [*keys, last + "aaa"])
    assert len(longer) > cursor.MAX_CURSOR
    with pytest.raises(ViewInputError):
        cursor.decode(longer, "sig", ["text"] * (len(keys) + 1))


def test_cursor_text_keys_up_to_their_limit_and_of_their_type() -> None:
    limit = "é" * cursor.MAX_TEXT_KEY
    assert cursor.decode(_keys(limit), "sig", ["text"]) == (limit,)
    for bad in (limit + "é", 5, None):
        with pytest.raises(ViewInputError):
            cursor.decode(_keys(bad), "sig", ["text"])


def test_an_unknown_key_kind_is_a_programming_error_naming_it() -> None:
    with pytest.raises(AssertionError, match=r"^money$"):
        cursor.decode(_keys(1), "sig", ["money"])


def test_a_recorded_format_is_found_by_its_key() -> None:
    for key, fmt in formats.FORMATS.items():
        assert formats.recorded(key) is fmt


def test_a_workbook_holds_exactly_its_parts_and_reads_back() -> None:
    layout = formats.Layout(title="Parts", columns=(COLUMNS["id"], COLUMNS["title"]))
    rows = [
        b'<row r="2"><c r="A2"><v>7</v></c><c r="B2" t="inlineStr"><is><t>Seven</t></is></c>'
        b"</row>\n",
        b'<row r="3"><c r="A3"><v>8</v></c><c r="B3" t="inlineStr"><is><t>Eight</t></is></c>'
        b"</row>\n",
    ]
    data = asyncio.run(_encoded(formats.XLSX, rows, layout))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [i.filename for i in infos] == [
            "[Content_Types].xml",
            "_rels/.rels",
            "xl/_rels/workbook.xml.rels",
            "xl/styles.xml",
            xlsx.SHEET,
            "xl/workbook.xml",
        ]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
        assert archive.read("[Content_Types].xml") == xlsx.CONTENT_TYPES
        assert archive.read("_rels/.rels") == xlsx.ROOT_RELS
        assert archive.read("xl/_rels/workbook.xml.rels") == xlsx.WORKBOOK_RELS
        assert archive.read("xl/styles.xml") == xlsx.STYLES
        assert archive.read("xl/workbook.xml") == xlsx.workbook(layout, 2)
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    assert book.sheetnames == ["Parts"]
    assert list(book["Parts"].iter_rows(values_only=True)) == [
        ("Ticket ID", "Title"),
        (7, "Seven"),
        (8, "Eight"),
    ]


def test_a_cursor_token_is_pinned_across_releases() -> None:
    """Page links carry tokens (bookmarks, shared URLs): compact JSON, text as UTF-8,
    base64url without padding."""
    when = datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.UTC)
    token = cursor.encode("sig", [when, 7, "é", False])
    raw = '{"v":1,"s":"sig","k":["2026-06-01T12:00:00+00:00",7,"é",false]}'
    assert token == base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
