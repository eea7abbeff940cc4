"""Deterministic demo data: staff, teams and contacts from Python, tickets from SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, LiteralString, cast

import psycopg
from psycopg import sql

from ticketexport import accounts, db
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission

# The tables the bulk load fills; their foreign keys and secondary indexes are rebuilt once
# after loading, which is many times faster than maintaining them row by row.
BULK_TABLES = ("tickets", "ticket_tasks", "ticket_followers")

STAFF_COUNT = 60
STAFF_PASSWORD = "demo-staff"  # noqa: S105 - a published demo password, printed by summary()
MAX_CONTACTS = 20_000
# Stands in for a password hash until the real ones, computed on a thread while PostgreSQL
# loads tickets, replace it before commit; verify_password rejects it as malformed.
_PENDING_HASH = "!hash-pending"


class SeedError(ValueError):
    """The database cannot be seeded as asked; the message is safe to show."""


@dataclasses.dataclass(frozen=True)
class DemoLogin:
    """One cell of the access matrix: admin or not, export permission or not."""

    email: str
    password: str
    name: str
    is_admin: bool
    roles: tuple[str, ...]
    can: str

    @property
    def can_export(self) -> bool:
        """Whether the demo roles are meant to grant import_export_tickets."""
        return "exporter" in self.roles or "administrator" in self.roles


DEMO_LOGINS = (
    DemoLogin(
        "admin.export@example.com",
        "demo-admin-export",
        "Alex Morgan",
        True,
        ("administrator",),
        "admin with the export permission: exports and downloads",
    ),
    DemoLogin(
        "admin@example.com",
        "demo-admin",
        "Blair Chen",
        True,
        ("agent", "supervisor"),
        "admin without the export permission: cannot export or download",
    ),
    DemoLogin(
        "agent.export@example.com",
        "demo-agent-export",
        "Casey Novak",
        False,
        ("agent", "exporter"),
        "staff with the export permission: exports, cannot download",
    ),
    DemoLogin(
        "agent@example.com",
        "demo-agent",
        "Devon Ortiz",
        False,
        ("agent",),
        "staff without the export permission: browses only",
    ),
)

ROLES: tuple[tuple[str, str, Permission], ...] = (
    ("agent", "Agent", Permission.MANAGE_TICKETS | Permission.EDIT_WIKI_ARTICLES),
    (
        "supervisor",
        "Supervisor",
        Permission.MANAGE_TEAMS
        | Permission.MANAGE_TICKETS
        | Permission.ACCESS_REPORTS
        | Permission.MANAGE_SYSTEM_VIEWS,
    ),
    ("exporter", "Ticket exporter", Permission.IMPORT_EXPORT_TICKETS),
    ("administrator", "Administrator", ALL_PERMISSIONS),
)


@dataclasses.dataclass(frozen=True)
class SeedReport:
    """What one seed run created, and the logins to try it with."""

    seed: int
    anchor: dt.date
    tickets: int
    tasks: int
    followers: int
    users: int
    teams: int
    contacts: int
    seconds: float
    logins: tuple[DemoLogin, ...] = DEMO_LOGINS
    staff_password: str = STAFF_PASSWORD

    def summary(self) -> str:
        width = max(len(login.email) for login in self.logins)
        lines = [
            f"seeded {self.tickets:,} tickets ({self.tasks:,} tasks, {self.followers:,} "
            f"followers), {self.users:,} staff users, {self.teams:,} teams and "
            f"{self.contacts:,} contacts in {self.seconds:.1f} s "
            f"(seed {self.seed}, anchor {self.anchor.isoformat()})",
            "demo logins:",
        ]
        lines += [
            f"  {login.email:<{width}}  password: {login.password:<18}  {login.can}"
            for login in self.logins
        ]
        lines.append(
            f"the other {self.users - len(self.logins)} staff users (agents) share the "
            f"password: {self.staff_password}"
        )
        return "\n".join(lines)


# Text the tickets are made of ------------------------------------------------------------
# Deliberately hostile to CSV writers and spreadsheets: separators, quotes, both kinds of
# line break, formula triggers, right-to-left and CJK scripts, emoji, backslashes, and
# strings that COPY's text format would misread.

TITLES = (
    "Printer on 3rd floor jams on every job",
    "Cannot log in after password reset",
    "VPN drops every 10 minutes, again",
    'Invoice shows "0.00" for March',
    "Refund, not store credit, please",
    "Laptop battery swollen – replace urgently",
    "Outlook keeps asking for credentials",
    "New starter: accounts, laptop, badge",
    'Wi-Fi in meeting room "Everest" is slow',
    "=SUM(A1:A3)",
    '=HYPERLINK("http://example.com","click")',
    "+1 call back",
    "+44 20 7946 0000 keeps ringing out",
    "-5 degrees in the server room?",
    "-- dashes at the start",
    "@team help",
    "@here printer is on fire 🔥",
    "\tTabbed title pasted from a spreadsheet",
    "Line one\nline two of a title",
    "Windows path C:\\Users\\ops\\report.xlsx won't open",
    "\\N",
    "NULL",
    "Не работает принтер на третьем этаже",
    "Счёт №4521, оплата не прошла",
    "Ο εκτυπωτής δεν λειτουργεί",
    "Πρόβλημα με τον λογαριασμό, επείγον",
    "打印机无法连接网络",
    "パスワードをリセットできません",
    "계정이 잠겼습니다",
    "لا أستطيع تسجيل الدخول إلى حسابي",
    "הזמנה מספר 1234 לא הגיעה",
    "Café order form: prix “TTC”, not HT",
    "Zoë's account was merged twice",
    "Naïve date parsing breaks Müller's report",
    "e\u0301clair combining accent in name",
    "Emoji in subject 🎉🚀 and a family 👩‍👩‍👧",
    "Flag emoji 🇺🇦🇯🇵 break the export",
    'Semicolons; commas, and "quotes" all at once',
    "'Leading apostrophe already",
    " Leading space title",
    "Trailing space title ",
    "Order #A-1042: wrong size, wrong colour",
    "SLA breach on ticket escalation path",
    "Request: add 'Priority' column to report",
    "Mobile app crashes on Android 14",
    "Cannot upload files larger than 10 MB",
    "Two-factor codes arrive late",
    "Shipping address, billing address mixed up",
    "Access to shared drive \\\\fs01\\finance",
    "Monitor flickers at 144 Hz",
    "Keyboard layout switches to AZERTY",
    "Calendar invites show wrong time zone (UTC+05:30)",
    "50% discount code not applied",
    "Réinitialisation du mot de passe impossible",
    "Rechnung doppelt abgebucht, bitte prüfen",
    "No puedo acceder al portal de clientes",
    "Pedido atrasado há duas semanas",
    "Export to CSV shows ###### in Excel",
    "Ticket with a very long title: "
    + "the customer describes the same problem again and again, " * 7
    + "and then stops",
)

TITLE_SUFFIXES = ("",) * 12 + (
    " (again)",
    " – urgent",
    ", second request",
    ' "ASAP"',
    " [EU]",
    " 🙏",
    " / follow-up",
    " (Re: Re: Fwd:)",
)

DESCRIPTIONS = (
    "",
    "Hi team,\n\nThe printer on the third floor jams on every job since Monday.\n"
    "We tried turning it off and on again.\n\nThanks",
    "Hello,\r\nI reset my password this morning, and now I cannot log in at all.\r\n"
    'The error says "account locked".\r\nRegards',
    'Customer says: "I was charged twice, once on the 3rd and once on the 4th."',
    'Steps to reproduce:\n1. Open the app\n2. Tap "Upload"\n3. Pick a 12 MB file\n'
    "Expected: upload, Actual: crash",
    "=1+2 was typed into the form by the customer",
    "+ added by the phone system, do not reply",
    "- forwarded from the shared mailbox -",
    "@support please have a look, this blocks month-end closing",
    "Добрый день!\nПринтер не печатает, горит красная лампочка.\nСпасибо",
    "Καλημέρα,\nο λογαριασμός μου κλειδώθηκε μετά από τρεις προσπάθειες.",
    "您好，\n我的订单还没有发货，请帮忙查一下。\n谢谢！",
    "お世話になっております。\nパスワードの再設定メールが届きません。",
    "مرحبا،\nلا أستطيع الوصول إلى حسابي منذ أمس.\nشكرا",
    "שלום,\nההזמנה שלי עדיין לא הגיעה.\nתודה",
    "Mixed scripts: English, Русский, Ελληνικά, 中文, العربية, עברית – all in one line",
    "Emoji report 😀😃😄😁 and skin tones 👍🏽👍🏿, plus ZWJ 👨‍💻",
    "Path is C:\\temp\\new\\report.csv and the share is \\\\fs01\\data",
    "Backslash-N sequence: \\N and a literal tab:\there",
    'Quote at the end"',
    '"Quoted from start to end"',
    "Comma,separated,values,inside,a,description",
    "Line endings mixed:\r\nCRLF here\nLF here\rCR alone here",
    "\r\nStarts with a line break",
    "Long description. " + "The quick brown fox jumps over the lazy dog, again. " * 12,
    "Sent from my phone",
    "Please see the attached screenshot (not attached).",
    "Reopened: the fix did not work, same error as before.",
)

SIGNATURES = ("",) * 10 + (
    "\n\n-- \nSent from my iPhone",
    "\r\n\r\nKind regards,\r\nThe Finance Team",
    '\n\nJ. "Jay" Smith, Operations',
    "\n\nСпасибо, Мария",
    "\n\n🙂",
)

TASK_TITLES = (
    "Call the customer back",
    "Check the logs",
    "Order replacement part",
    "Update the knowledge base article",
    "Escalate to tier 2",
    "Confirm fix with customer, then close",
    'Ask for the "exact" error message',
    "=A1*2 (sic, from the customer form)",
    "+ schedule on-site visit",
    "- remove old device from inventory",
    "@finance approve refund",
    "Проверить оплату",
    "確認する",
    "Send survey 📋",
)

LANGUAGES: tuple[str | None, ...] = (
    ("en",) * 14
    + ("de", "de", "fr", "fr", "es", "pt-BR", "ru", "el", "ja", "zh-Hans", "ko", "ar", "he")
    + (None, None)
)

CATEGORIES: tuple[str | None, ...] = (
    "Technical support",
    "Technical support",
    "Account access",
    "Billing, invoices",
    "Hardware",
    "Network",
    'Feature request "wishlist"',
    "Onboarding",
    "Shipping & delivery",
    "Сервис",
    None,
    None,
)

# Tag combinations, `|`-separated (tags hold no `|`); the empty string is a ticket
# without tags, and repeats make some tags and counts more common than others.
TAG_SETS = ("",) * 6 + (
    "billing",
    "vpn",
    "printer",
    "password",
    "hardware|laptop",
    "billing|refund",
    "vip",
    "vip|escalated",
    "network|vpn|remote",
    "onboarding|hr|laptop|badge",
    "email|outlook",
    "mobile|android",
    "bug|regression",
    "feature-request",
    "счёт",
    "срочно|оплата",
    "ネットワーク",
    "كلمة-المرور",
    "café|écran",
    "🔥|urgent",
    "escalated|sla|vip|billing",
)

TEAMS = (
    "Support, Tier 1",
    "Support, Tier 2",
    "Billing & Payments",
    'Network "Core" Ops',
    "Onboarding",
    "Служба поддержки",
    "カスタマーサポート",
    "الدعم الفني",
)

# (display, ascii for email addresses)
FIRST_NAMES = (
    ("Amelia", "amelia"),
    ("Jonas", "jonas"),
    ("Zoë", "zoe"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("Seán", "sean"),
    ("Renée", "renee"),
    ("José", "jose"),
    ("Priya", "priya"),
    ("Kwame", "kwame"),
    ("Иван", "ivan"),
    ("Мария", "maria"),
    ("Νίκος", "nikos"),
    ("Ελένη", "eleni"),
    ("美咲", "misaki"),
    ("伟", "wei"),
    ("ليلى", "layla"),
    ("נועה", "noa"),
    ("Mary-Kate", "marykate"),
    ("D'Arcy", "darcy"),
)

LAST_NAMES = (
    ("O'Brien", "obrien"),
    ("Müller", "mueller"),
    ("Nguyễn", "nguyen"),
    ("van der Berg", "vanderberg"),
    ("García Márquez", "garciamarquez"),
    ("Smith", "smith"),
    ("Kowalski", "kowalski"),
    ("Okafor", "okafor"),
    ("Петрова", "petrova"),
    ("Παπαδόπουλος", "papadopoulos"),
    ("佐藤", "sato"),
    ("王", "wang"),
    ("حداد", "haddad"),
    ("כהן", "cohen"),
    ('"Doc" Holliday', "holliday"),
    ("Lee, Jr.", "leejr"),
    ("", "solo"),
)

ORGANIZATIONS: tuple[str | None, ...] = (
    "Acme, Inc.",
    'The "Best" Bakery',
    "Müller & Söhne GmbH",
    "ООО «Ромашка»",
    "株式会社サンプル",
    "شركة المثال",
    "=Formula Ltd",
    "+Plus Partners",
    "-Minus Corp",
    "@Mention Media",
    "Globex Corporation",
    "Initech",
    None,
    None,
    None,
)

MAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")

# Weights pick how common each known status and priority is; a deployment's own extra
# lookups get weight 1. Closed statuses carry a grace period between resolving and closing.
STATUS_WEIGHTS = {"new": 2, "open": 4, "pending": 2, "on_hold": 1, "resolved": 2, "closed": 3}
CLOSE_GRACE_SECONDS = {"resolved": 0}
DEFAULT_CLOSE_GRACE_SECONDS = 3 * 86400
PRIORITY_WEIGHTS = {"urgent": 1, "high": 3, "normal": 10, "low": 4}
PRIORITY_SLA_HOURS = {"urgent": 4, "high": 24, "normal": 72, "low": 168}
DEFAULT_SLA_HOURS = 72
# Most tickets have no tasks and few followers; the rest spread up to the maximum.
TASK_COUNTS = (0,) * 8 + (1, 1, 1, 2, 2, 3, 4, 5)
FOLLOWER_COUNTS = (0,) * 5 + (1, 1, 1, 2, 3)


def seed(
    conn: psycopg.Connection[Any],
    *,
    tickets: int,
    seed: int = 1,
    anchor: dt.date | None = None,
) -> SeedReport:
    """Fill an empty migrated database with demo data; creates no exports.

    The database must hold no tickets, teams or contacts, and no user with one of the
    seed's email addresses; otherwise nothing is written and SeedError (a ValueError)
    says why. Users created before (an operator's own admin, say) are kept, and roles of
    the seed's names that already exist are reused as long as the demo access matrix
    still holds. Everything is one transaction, so a failed seed leaves nothing behind.

    Teams, contacts and tickets get explicit ids from 1, which is why those tables must be
    empty; identity sequences are moved past them afterwards.

    Deterministic: into an empty migrated database, the same seed and anchor give the same
    tickets, users, teams, contacts, tasks, followers and memberships, ids included, on
    PostgreSQL 15 and 16 alike (password hashes differ: argon2 salts them). Timestamps lie
    in the two years before midnight UTC at the start of `anchor` (default: today, UTC).
    """
    if tickets < 0:
        raise SeedError("the number of tickets must not be negative")
    if seed < 0:
        raise SeedError("the seed must not be negative")
    started = time.monotonic()
    anchor = anchor or dt.datetime.now(dt.UTC).date()
    anchor_at = dt.datetime.combine(anchor, dt.time(), tzinfo=dt.UTC)
    rng = random.Random(seed)  # noqa: S311 - demo data, reproducibility is the point

    # argon2 is deliberately slow; hashing overlaps the bulk load, whose single-threaded
    # INSERTs leave a core free.
    with ThreadPoolExecutor(max_workers=1) as hashing, conn.transaction():
        hashes = hashing.submit(_hash_passwords)
        conn.execute(db.q("seed_lock"))
        _refuse_unless_empty(conn)
        statuses = _status_pools(conn)
        priorities = _priority_pool(conn)
        _ensure_roles(conn)
        staff_ids, emails = _add_users(conn, rng, anchor_at)
        _check_access_matrix(conn)
        team_ids, members = _add_teams(conn, rng, staff_ids)
        contact_ids = _add_contacts(conn, rng, anchor_at, _contact_count(tickets))
        counts = _load_tickets(
            conn,
            tickets=tickets,
            seed=seed,
            anchor_at=anchor_at,
            statuses=statuses,
            priorities=priorities,
            staff_ids=staff_ids,
            team_ids=team_ids,
            members=members,
            contact_ids=contact_ids,
        )
        demo_hashes, staff_hash = hashes.result()
        conn.execute(
            db.q("seed_password_hashes"),
            {
                "ids": staff_ids,
                "hashes": demo_hashes + [staff_hash] * (len(staff_ids) - len(demo_hashes)),
            },
        )
        for table in ("teams", "contacts", "tickets", "ticket_tasks"):
            conn.execute(
                db.q("seed_reset_sequence").format(table=sql.Identifier(table)),
                {"table": table},
            )
        # Fresh statistics, committed with the rows, so the first list page and export plan
        # against real numbers. ANALYZE counts this transaction's own rows as live.
        for table in (*BULK_TABLES, "users", "teams", "team_memberships", "contacts"):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))

    return SeedReport(
        seed=seed,
        anchor=anchor,
        tickets=tickets,
        tasks=counts[0],
        followers=counts[1],
        users=len(emails),
        teams=len(team_ids),
        contacts=len(contact_ids),
        seconds=time.monotonic() - started,
    )


def _refuse_unless_empty(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(db.q("seed_existing")).fetchone()
    assert row is not None
    has_tickets, has_teams, has_contacts = row
    if has_tickets:
        raise SeedError("the database already has tickets; seed only an empty database")
    if has_teams or has_contacts:
        raise SeedError("the database already has teams or contacts; seed only an empty database")


@dataclasses.dataclass(frozen=True)
class _StatusPools:
    open_ids: list[int]
    closed_ids: list[int]
    closed_grace: list[int]


def _weighted(name: str, weights: dict[str, int]) -> int:
    return weights.get(name, 1)


def _status_pools(conn: psycopg.Connection[Any]) -> _StatusPools:
    pools = _StatusPools([], [], [])
    for status_id, name, status_type in conn.execute(db.q("seed_statuses")).fetchall():
        for _ in range(_weighted(name, STATUS_WEIGHTS)):
            if status_type == "open":
                pools.open_ids.append(int(status_id))
            else:
                pools.closed_ids.append(int(status_id))
                pools.closed_grace.append(
                    CLOSE_GRACE_SECONDS.get(name, DEFAULT_CLOSE_GRACE_SECONDS)
                )
    if not pools.open_ids or not pools.closed_ids:
        raise SeedError(
            "ticket_statuses needs at least one open and one closed status; "
            "run `ticketexport migrate`"
        )
    return pools


def _priority_pool(conn: psycopg.Connection[Any]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    hours: list[int] = []
    for priority_id, name in conn.execute(db.q("seed_priorities")).fetchall():
        for _ in range(_weighted(name, PRIORITY_WEIGHTS)):
            ids.append(int(priority_id))
            hours.append(PRIORITY_SLA_HOURS.get(name, DEFAULT_SLA_HOURS))
    if not ids:
        raise SeedError("ticket_priorities is empty; run `ticketexport migrate`")
    return ids, hours


def _ensure_roles(conn: psycopg.Connection[Any]) -> None:
    for name, label, permissions in ROLES:
        conn.execute(
            db.q("seed_role_insert"),
            {"developer_name": name, "label": label, "permissions": int(permissions)},
        )


def _check_access_matrix(conn: psycopg.Connection[Any]) -> None:
    """Pre-existing roles of the same names must not blur the four demo cells."""
    rows = conn.execute(
        db.q("seed_effective_permissions"), {"emails": [d.email for d in DEMO_LOGINS]}
    ).fetchall()
    found = {email: (is_admin, Permission(bits)) for email, is_admin, bits in rows}
    for login in DEMO_LOGINS:
        is_admin, permissions = found[login.email]
        if (
            is_admin != login.is_admin
            or (Permission.IMPORT_EXPORT_TICKETS in permissions) != login.can_export
        ):
            raise SeedError(
                f"existing roles {', '.join(login.roles)} give {login.email} the wrong "
                "export permission for the demo access matrix; fix or rename those roles"
            )


def _hash_passwords() -> tuple[list[str], str]:
    """argon2 hashes of the demo logins' passwords, in order, and of the agents' password."""
    demo = [accounts.hash_password(login.password) for login in DEMO_LOGINS]
    return demo, accounts.hash_password(STAFF_PASSWORD)


def _add_users(
    conn: psycopg.Connection[Any], rng: random.Random, anchor_at: dt.datetime
) -> tuple[list[int], list[str]]:
    """The four access-matrix users first, then the agents; returns ids and emails.

    Everyone gets the pending hash here; seed() stores the real ones before commit.
    """
    ids: list[int] = []
    emails: list[str] = []
    active: list[bool] = []
    try:
        for login in DEMO_LOGINS:
            ids.append(
                accounts.add_user(
                    conn,
                    login.email,
                    name=login.name,
                    password=login.password,
                    admin=login.is_admin,
                    roles=login.roles,
                    password_hash=_PENDING_HASH,
                )
            )
            emails.append(login.email)
            active.append(True)
        taken = set(emails)
        inactive = set(rng.sample(range(STAFF_COUNT), 3))
        for number in range(STAFF_COUNT):
            first, first_ascii = rng.choice(FIRST_NAMES)
            last, last_ascii = rng.choice(LAST_NAMES)
            email = f"{first_ascii}.{last_ascii}@example.com"
            suffix = 2
            while email in taken:
                email = f"{first_ascii}.{last_ascii}{suffix}@example.com"
                suffix += 1
            taken.add(email)
            roll = rng.random()
            roles = ["agent"]
            if roll < 0.15:
                roles.append("supervisor")
            elif roll < 0.25:
                roles.append("exporter")
            ids.append(
                accounts.add_user(
                    conn,
                    email,
                    name=f"{first} {last}".strip(),
                    password=STAFF_PASSWORD,
                    roles=roles,
                    password_hash=_PENDING_HASH,
                )
            )
            emails.append(email)
            active.append(number not in inactive)
    except accounts.AccountError as exc:
        raise SeedError(f"cannot seed: {exc}") from None
    created = [
        anchor_at - dt.timedelta(days=800 + rng.randrange(200), seconds=rng.randrange(86400))
        for _ in ids
    ]
    conn.execute(db.q("seed_user_details"), {"ids": ids, "created_at": created, "active": active})
    return ids, emails


def _add_teams(
    conn: psycopg.Connection[Any], rng: random.Random, staff_ids: Sequence[int]
) -> tuple[list[int], list[list[int]]]:
    """Teams 1..n and their members; every team gets at least one member."""
    conn.execute(db.q("seed_teams"), {"names": list(TEAMS)})
    team_ids = list(range(1, len(TEAMS) + 1))
    members: list[list[int]] = [[] for _ in TEAMS]
    demo, agents = staff_ids[: len(DEMO_LOGINS)], staff_ids[len(DEMO_LOGINS) :]
    # The demo users sit in the first teams, so "Team tickets" shows something for them.
    for index, user_id in enumerate(demo):
        members[index % 2].append(user_id)
    for index, user_id in enumerate(agents):
        home = index % len(TEAMS)
        members[home].append(user_id)
        if rng.random() < 0.3:
            other = rng.randrange(len(TEAMS))
            if other != home:
                members[other].append(user_id)
    pairs = [
        (team_id, user_id)
        for team_id, ids in zip(team_ids, members, strict=True)
        for user_id in ids
    ]
    conn.execute(
        db.q("seed_memberships"),
        {"team_ids": [p[0] for p in pairs], "user_ids": [p[1] for p in pairs]},
    )
    return team_ids, members


def _contact_count(tickets: int) -> int:
    return min(MAX_CONTACTS, max(50, tickets // 50))


def _add_contacts(
    conn: psycopg.Connection[Any], rng: random.Random, anchor_at: dt.datetime, count: int
) -> list[int]:
    ids = list(range(1, count + 1))
    copy_statement = db.q("seed_copy_contacts")
    with conn.cursor() as cur, cur.copy(copy_statement) as copy:
        for contact_id in ids:
            first, first_ascii = rng.choice(FIRST_NAMES)
            last, last_ascii = rng.choice(LAST_NAMES)
            email = (
                None
                if rng.random() < 0.1
                else f"{first_ascii}.{last_ascii}.{contact_id}@{rng.choice(MAIL_DOMAINS)}"
            )
            created = anchor_at - dt.timedelta(
                days=731 + rng.randrange(365), seconds=rng.randrange(86400)
            )
            copy.write_row((contact_id, first, last, email, rng.choice(ORGANIZATIONS), created))
    return ids


def _salts(seed: int, purpose: str, count: int) -> list[int]:
    """Per-purpose salts for hashint8extended, derived from the seed by sha-256."""
    salts = []
    for index in range(count):
        digest = hashlib.sha256(f"ticketexport:{seed}:{purpose}:{index}".encode()).digest()
        salts.append(int.from_bytes(digest[:8], "big", signed=True))
    return salts


def _load_tickets(
    conn: psycopg.Connection[Any],
    *,
    tickets: int,
    seed: int,
    anchor_at: dt.datetime,
    statuses: _StatusPools,
    priorities: tuple[list[int], list[int]],
    staff_ids: list[int],
    team_ids: list[int],
    members: list[list[int]],
    contact_ids: list[int],
) -> tuple[int, int]:
    """Tickets, tasks and followers in bulk; returns (tasks, followers) counted."""
    if tickets == 0:
        return 0, 0
    offsets: list[int] = []
    flat: list[int] = []
    for team_members in members:
        offsets.append(len(flat) + 1)
        flat.extend(team_members)
    # Big loads go much faster without per-row foreign-key checks and index maintenance;
    # both are rebuilt below inside this same transaction, so nobody sees them missing.
    # Room for one-pass index sorts; a seed need not wait for its commit to reach disk; and
    # generate_series' row estimates would make JIT spend seconds compiling for nothing.
    conn.execute(db.q("seed_session_settings"))
    foreign_keys = conn.execute(db.q("seed_foreign_keys"), {"tables": list(BULK_TABLES)}).fetchall()
    indexes = conn.execute(db.q("seed_secondary_indexes"), {"tables": list(BULK_TABLES)}).fetchall()
    for schema, table, name, _definition in foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(schema, table), sql.Identifier(name)
            )
        )
    for schema, name, _definition in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))

    conn.execute(
        db.q("seed_tickets"),
        {
            "n": tickets,
            "salts": _salts(seed, "tickets", 11),
            "anchor": anchor_at,
            "titles": list(TITLES),
            "title_suffixes": list(TITLE_SUFFIXES),
            "descriptions": list(DESCRIPTIONS),
            "signatures": list(SIGNATURES),
            "open_status_ids": statuses.open_ids,
            "closed_status_ids": statuses.closed_ids,
            "closed_grace": statuses.closed_grace,
            "priority_ids": priorities[0],
            "priority_sla_hours": priorities[1],
            "languages": list(LANGUAGES),
            "categories": list(CATEGORIES),
            "tag_sets": list(TAG_SETS),
            "staff_ids": staff_ids,
            "team_ids": team_ids,
            "team_members": flat,
            "team_member_offsets": offsets,
            "team_member_counts": [len(m) for m in members],
            "contact_ids": contact_ids,
        },
    )
    tasks = conn.execute(
        db.q("seed_tasks"),
        {
            "salt": _salts(seed, "tasks", 1)[0],
            "anchor": anchor_at,
            "task_titles": list(TASK_TITLES),
            "task_counts": list(TASK_COUNTS),
            "closed_status_ids": statuses.closed_ids,
        },
    ).rowcount
    conn.execute(db.q("seed_followers_trigger_off"))
    followers = conn.execute(
        db.q("seed_followers"),
        {
            "n": tickets,
            "salt": _salts(seed, "followers", 1)[0],
            "staff_ids": staff_ids,
            "follower_counts": list(FOLLOWER_COUNTS),
        },
    ).rowcount
    conn.execute(db.q("seed_followers_trigger_on"))

    for _schema, _name, definition in indexes:
        # The definition comes from pg_get_indexdef, i.e. from the catalog, not from input.
        conn.execute(sql.SQL(cast(LiteralString, definition)))
    for schema, table, name, definition in foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(schema, table), sql.Identifier(name)
            )
            + sql.SQL(cast(LiteralString, definition))
        )
    return tasks, followers
