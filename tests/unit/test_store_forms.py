"""The forms the product writes in a store, and the only ones it will ever delete."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo

import pytest

from ticketexport.domain import exports as rules
from ticketexport.exports.formats import FORMATS
from ticketexport.storage import StorageError, check_key, probe_is_stale, probe_key
from ticketexport.storage.marker import Installation, parse

EXPORT_ID = "6f1c1d1e-8f53-4a59-9f0e-2b7f8a3c9d10"


@pytest.mark.parametrize("extension", sorted(f.extension for f in FORMATS.values()))
def test_every_key_an_attempt_writes_names_its_export_and_attempt(extension: str) -> None:
    name = rules.file_name(
        "Überfällig: my tickets!",
        dt.datetime(2026, 6, 1, 12),
        zoneinfo.ZoneInfo("UTC"),
        extension=extension,
    )
    for attempt in (1, 2, 3):
        key = rules.object_key(EXPORT_ID, attempt, name)
        assert check_key(key) == key
        assert rules.object_key_owner(key) == (EXPORT_ID, attempt)


@pytest.mark.parametrize(
    "key",
    [
        f"exports/{EXPORT_ID.upper()}/1/tickets.csv",  # not the canonical spelling
        f"exports/{EXPORT_ID.replace('-', '')}/1/tickets.csv",
        f"exports/{{{EXPORT_ID}}}/1/tickets.csv",
        f"exports/{EXPORT_ID}/01/tickets.csv",  # not how an attempt number is written
        f"exports/{EXPORT_ID}/one/tickets.csv",
        f"exports/{EXPORT_ID}/1/reports/tickets.csv",  # more than one file name
        f"exports/{EXPORT_ID}/1/",
        f"exports/{EXPORT_ID}/1/..",
        f"exports/{EXPORT_ID}/tickets.csv",
        f"exports/{EXPORT_ID}",
        f"backup/exports/{EXPORT_ID}/1/tickets.csv",
        "exports/notes.txt",
        f"Exports/{EXPORT_ID}/1/tickets.csv",
    ],
)
def test_keys_of_any_other_form_are_not_export_files(key: str) -> None:
    assert rules.object_key_owner(key) is None


def test_only_probes_of_exactly_the_probe_form_are_stale() -> None:
    old = 1_000.0
    assert probe_is_stale(probe_key(now=old), now=old + 301)
    assert not probe_is_stale(probe_key(now=old), now=old + 10)
    stamp = f"{int(old * 1000):015d}"
    for key in (
        "probe/2024-report.pdf",
        f"probe/{stamp}-{uuid.uuid4().hex}.bak",
        f"probe/{stamp}-{uuid.uuid4().hex.upper()}",
        f"probe/1000000-{uuid.uuid4().hex}",
        f"probe/old/{stamp}-{uuid.uuid4().hex}",
        f"probes/{stamp}-{uuid.uuid4().hex}",
        f"exports/{EXPORT_ID}/1/tickets.csv",
    ):
        assert not probe_is_stale(key, now=old + 10**9), key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/exports/x",
        "exports//x",
        "exports/x/",
        "exports/./x",
        "exports/../x",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a\x85b",
        ".",
        "..",
    ],
)
def test_object_keys_obey_the_local_backends_rule_everywhere(key: str) -> None:
    with pytest.raises(StorageError):
        check_key(key)


def test_a_marker_names_an_installation_and_one_database() -> None:
    ours = Installation(id=EXPORT_ID, database="7316201371649251479/16384")
    assert parse(ours.marker()) == ours
    assert ours.marker().decode().splitlines()[0] == EXPORT_ID
    # An operator may write the id alone.
    assert parse(f"{EXPORT_ID.upper()}\n".encode()) == Installation(id=EXPORT_ID, database=None)
    for text in (
        b"",
        b"not an id\n",
        b"\xff\xfe",
        f"{EXPORT_ID}\nhost x\n".encode(),
        f"{EXPORT_ID}\ndatabase \n".encode(),
        f"{EXPORT_ID}\na\nb\n".encode(),
    ):
        assert parse(text) is None, text
