"""Opaque keyset cursors: the last row's sort key values, signed by the sort they belong to."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Sequence
from typing import Any

from ticketexport.views.model import ViewInputError

VERSION = 1
# Six text sort levels of 60 four-byte characters (twice: lower-cased and as typed) fit.
MAX_CURSOR = 6144
MAX_TEXT_KEY = 400
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_BAD = "the page cursor is not valid; start again from the first page"


def _storable(text: str) -> bool:
    """Whether PostgreSQL text can hold this: no NUL, and no lone surrogate (JSON's \\ud800
    decodes to one, and it has no UTF-8 form)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode(signature: str, values: Sequence[Any]) -> str:
    """The cursor pointing just after the row with these sort key values."""
    keys: list[Any] = []
    for value in values:
        if isinstance(value, datetime.datetime):
            keys.append(value.isoformat())
        else:
            keys.append(value)
    raw = json.dumps(
        {"v": VERSION, "s": signature, "k": keys}, ensure_ascii=False, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def unpack(token: str) -> dict[str, Any]:
    """Check a cursor's outer shape (done when the request is parsed)."""
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= MAX_CURSOR
        or not _TOKEN.fullmatch(token)
    ):
        raise ViewInputError(_BAD)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ViewInputError(_BAD) from None
    if (
        not isinstance(data, dict)
        or set(data) != {"v", "s", "k"}
        or data["v"] != VERSION
        or not isinstance(data["s"], str)
        or not isinstance(data["k"], list)
    ):
        raise ViewInputError(_BAD)
    return data


def decode(token: str, signature: str, kinds: Sequence[str]) -> tuple[Any, ...]:
    """The sort key values in a cursor made for this view and sort, strictly checked."""
    data = unpack(token)
    if data["s"] != signature:
        raise ViewInputError(
            "the page cursor belongs to another view or sort; start again from the first page"
        )
    keys = data["k"]
    if len(keys) != len(kinds):
        raise ViewInputError(_BAD)
    result: list[Any] = []
    for kind, value in zip(kinds, keys, strict=True):
        if kind == "ts":
            if not isinstance(value, str) or len(value) > 40:
                raise ViewInputError(_BAD)
            try:
                parsed = datetime.datetime.fromisoformat(value)
            except ValueError:
                raise ViewInputError(_BAD) from None
            if parsed.tzinfo is None:
                raise ViewInputError(_BAD)
            result.append(parsed)
        elif kind == "int":
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not -(2**63) <= value < 2**63
            ):
                raise ViewInputError(_BAD)
            result.append(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ViewInputError(_BAD)
            result.append(value)
        elif kind == "text":
            if not isinstance(value, str) or len(value) > MAX_TEXT_KEY or not _storable(value):
                raise ViewInputError(_BAD)
            result.append(value)
        else:
            raise AssertionError(kind)
    return tuple(result)
