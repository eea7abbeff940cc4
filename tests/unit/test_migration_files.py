"""Migration files: applied ones never change name, new ones come after every existing one."""

from __future__ import annotations

from ticketexport import db

# Every migration that has shipped, in order. An applied migration is never renamed or
# renumbered (its version is what schema_migrations records); a new one is numbered above
# all of these, then added here when it ships.
SHIPPED = (
    ("0001", "0001_domain.sql"),
    ("0002", "0002_view_indexes.sql"),
    ("0004", "0004_reference_data.sql"),
    ("0005", "0005_dba_views.sql"),
    ("0006", "0006_list_perf.sql"),
)


def _files() -> list[tuple[str, str]]:
    return [
        (m.version, m.name)
        for m in db.available_migrations()
        if m.version != db.PROCRASTINATE_VERSION
    ]


def test_shipped_migrations_keep_their_numbers_and_names() -> None:
    present = set(_files())
    missing = [pair for pair in SHIPPED if pair not in present]
    assert missing == [], f"shipped migrations renamed or removed: {missing}"


def test_new_migrations_are_numbered_after_every_shipped_one() -> None:
    newest = max(version for version, _ in SHIPPED)
    shipped = set(SHIPPED)
    misplaced = [
        name for version, name in _files() if (version, name) not in shipped and version <= newest
    ]
    assert misplaced == [], (
        f"new migrations must be numbered above {newest} (never reuse a gap): {misplaced}"
    )


def test_files_apply_in_number_order() -> None:
    versions = [version for version, _ in _files()]
    assert versions == sorted(versions)
    assert len(versions) == len(set(versions))
