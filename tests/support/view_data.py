"""A small, deliberately awkward ticket dataset for checking view semantics."""

from __future__ import annotations

import datetime
import random
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

TZ = "America/New_York"
ZONE = ZoneInfo(TZ)
# The day after the spring DST change, mid-morning local time: "within the past N days"
# reaches back across the change, and no calendar step lands in a skipped hour.
NOW = datetime.datetime(2026, 3, 9, 14, 5, 17, tzinfo=datetime.UTC)
ACTOR_ID = 1

# Many scripts, and the characters whose case mapping is not one plain character to one:
# the Turkish dotted İ (whose full lower case is two characters) and dotless ı, the sharp s
# and its capital ẞ, and Greek sigma with its word-final form ς. The reference folds them as
# the brief's "case-insensitive" is defined in columns.lowered.
WORDS = [
    "Printer",
    "printer",
    "PRINTER jam",
    "Café résumé",
    "ÉCOLE",
    "Принтер не работает",
    "ПРИНТЕР",
    "Αθήνα",
    "ΑΘΗΝΑ",
    "打印机故障",
    "طابعة معطلة",
    "emoji 🎉 party",
    "100% _done_",
    "back\\slash",
    "quote ' and \"",
    "=SUM(A1)",
    "-minus",
    "@at",
    "comma, inside",
    "Ümlaut Öl",
    "İSTANBUL şube",
    "istanbul Iğdır ılık",
    "Straße",
    "STRASSE",
    "GROẞE Maße",
    "ΟΔΟΣ",
    "οδός Σίσυφος",
    "ΣΊΣΥΦΟΣ",
]
TAGS = ["vip", "VIP", "billing", "Счёт", "紧急", "ñandú", "=cmd", "tag with space", "İzmir", "ΣΟΣ"]
CATEGORIES = [None, "Hardware", "hardware", "Софт", "网络", "Billing", "Maße", "ΟΔΟΣ"]
SLA_STATUSES = [None, "on track", "At risk", "Нарушено", "İhlal", "Σφάλμας"]
LANGUAGES = [None, "en", "de", "ru", "zh-Hans", "ar"]


def _local(year: int, month: int, day: int, hour: int, minute: int) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=ZONE).astimezone(datetime.UTC)


# Instants near local midnight, on DST change days (2025-11-02, 2026-03-08) and ties.
SPECIAL_INSTANTS = [
    _local(2026, 3, 8, 0, 30),
    _local(2026, 3, 8, 1, 59),
    _local(2026, 3, 8, 3, 0),
    _local(2026, 3, 7, 23, 30),
    _local(2026, 3, 9, 0, 15),
    _local(2026, 3, 8, 23, 45),
    _local(2025, 11, 2, 0, 10),
    _local(2025, 11, 2, 1, 30),
    datetime.datetime(2025, 11, 2, 6, 30, tzinfo=datetime.UTC),  # 01:30 EST, the second one
    _local(2025, 11, 1, 23, 50),
    _local(2026, 3, 1, 0, 0),
    _local(2026, 2, 28, 23, 59),
    _local(2026, 3, 2, 0, 0),  # a Monday
    _local(2026, 3, 9, 9, 0),
    NOW,
    NOW - datetime.timedelta(hours=1),
    NOW + datetime.timedelta(hours=2),
]


def _instant(rng: random.Random) -> datetime.datetime:
    if rng.random() < 0.35:
        return rng.choice(SPECIAL_INSTANTS)
    base = datetime.datetime(2025, 10, 1, tzinfo=datetime.UTC)
    # whole minutes so that ties on timestamps are frequent
    return base + datetime.timedelta(minutes=rng.randrange(0, 220 * 24 * 60, 30))


def build(conn: psycopg.Connection[Any], *, tickets: int = 450, seed: int = 20260309) -> None:
    """Fill a migrated database with lookups, people and `tickets` tickets."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    # An extra open status sharing its sort order with 'pending', for ties in the status sort.
    conn.execute(
        "INSERT INTO ticket_statuses (id, developer_name, label, sort_order, status_type) "
        "VALUES (7, 'waiting', 'Ожидание', 30, 'open') ON CONFLICT DO NOTHING"
    )
    people = [
        ("Ann", "Lee"),
        ("Анна", "Иванова"),
        ("Анна", "Иванова"),
        ("明", ""),
        ("zoë", "Ålund"),
        ("Bob", "O'Brien"),
        ("İlker", "Straße"),
        ("ΟΔΥΣΣΕΑΣ", "Σίσυφος"),
    ]
    for i, (first, last) in enumerate(people, start=1):
        conn.execute(
            "INSERT INTO users (id, email, first_name, last_name, password_hash) "
            "VALUES (%s, %s, %s, %s, 'x')",
            (i, f"user{i}@example.test", first, last),
        )
    for i, name in enumerate(
        ["Support", "Αθήνα team", "技术支持", "support 2", "İSTANBUL ΟΜΑΔΑΣ"], start=1
    ):
        conn.execute("INSERT INTO teams (id, name) VALUES (%s, %s)", (i, name))
    for team, user in [(1, 1), (2, 1), (2, 2), (3, 3), (4, 5), (5, 7), (5, 8)]:
        conn.execute(
            "INSERT INTO team_memberships (team_id, user_id) VALUES (%s, %s)", (team, user)
        )
    for i in range(1, 31):
        first = rng.choice(["Omar", "Ольга", "Li", "Émile", "Sam", "سارة", "İpek", "ΛΕΩΝΙΔΑΣ"])
        last = rng.choice(["", "Hassan", "Петрова", "Wang", "Dupont", "Weiß", "Παππάς"])
        email = rng.choice([None, f"c{i}@Example.test", f"C{i}@mail.test"])
        org = rng.choice([None, "ACME", "acme", "ООО Ромашка", "株式会社", "GROẞHANDEL", "ΟΜΙΛΟΣ"])
        conn.execute(
            "INSERT INTO contacts (id, first_name, last_name, email, organization) "
            "VALUES (%s, %s, %s, %s, %s)",
            (i, first, last, email, org),
        )
    statuses = [1, 2, 3, 4, 5, 6, 7]
    closed_statuses = {5, 6}
    for tid in range(1, tickets + 1):
        created = _instant(rng)
        updated = created + datetime.timedelta(minutes=rng.choice([0, 0, 30, 600, 4000]))
        status = rng.choice(statuses)
        closed_at = None
        if status in closed_statuses or rng.random() < 0.05:
            closed_at = max(created, rng.choice([_instant(rng), NOW - datetime.timedelta(days=6)]))
        resolved_at = closed_at if rng.random() < 0.5 else None
        sla_due = None if rng.random() < 0.3 else _instant(rng)
        snoozed = rng.choice(
            [
                None,
                None,
                None,
                NOW + datetime.timedelta(days=2),
                NOW - datetime.timedelta(days=1),
                NOW,
            ]
        )
        title = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
        if rng.random() < 0.1:
            title = "Same long prefix " * 5 + str(rng.randint(0, 3))
        description = rng.choice(
            ["", "", " ".join(rng.sample(WORDS, 2)), "x" * 70 + rng.choice("ab")]
        )
        tags = rng.sample(TAGS, rng.choice([0, 0, 1, 2, 3]))
        conn.execute(
            "INSERT INTO tickets (id, title, description, status_id, priority_id, language, "
            "category, team_id, assignee_id, created_by_id, contact_id, tags, created_at, "
            "updated_at, resolved_at, closed_at, sla_due_at, sla_breached, sla_status, "
            "snoozed_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s)",
            (
                tid,
                title,
                description,
                status,
                rng.choice([1, 2, 3, 3, 4]),
                rng.choice(LANGUAGES),
                rng.choice(CATEGORIES),
                rng.choice([None, None, 1, 2, 3, 4, 5]),
                rng.choice([None, None, 1, 1, 2, 3, 4, 5, 6, 7, 8]),
                rng.choice([None, 1, 2, 3, 6, 7]),
                rng.choice([None, *range(1, 31)]),
                tags,
                created,
                updated,
                resolved_at,
                closed_at,
                sla_due,
                rng.random() < 0.3,
                rng.choice(SLA_STATUSES),
                snoozed,
            ),
        )
        for position in range(rng.choice([0, 0, 0, 1, 2, 3])):
            conn.execute(
                "INSERT INTO ticket_tasks (ticket_id, title, is_closed, position) "
                "VALUES (%s, %s, %s, %s)",
                (tid, f"task {position}", rng.random() < 0.5, position),
            )
        for user in rng.sample(range(1, 9), rng.choice([0, 0, 1, 2])):
            conn.execute(
                "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", (tid, user)
            )


def column_chunks(columns: list[str], size: int) -> list[list[str]]:
    """Views of `size` columns (a view holds at most MAX_COLUMNS) that together show every
    column: consecutive windows, the last one ending at the last column."""
    if len(columns) <= size:
        return [columns]
    starts = [*range(0, len(columns) - size, size), len(columns) - size]
    return [columns[start : start + size] for start in starts]
