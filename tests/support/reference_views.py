"""A second, independent implementation of view semantics in plain Python, for cross-checks.

It reads the raw data with one plain SELECT and filters, sorts and formats in Python. It
shares nothing with ticketexport.views except the registry's names.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable, Mapping, Sequence
from functools import cmp_to_key
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

RAW_SELECT = """
SELECT t.id, t.title, t.description, t.language, t.category, t.tags,
       t.created_at, t.updated_at, t.resolved_at, t.closed_at, t.sla_due_at,
       t.sla_breached, t.sla_status, t.snoozed_until,
       t.contact_id, t.team_id, t.assignee_id, t.created_by_id,
       st.developer_name, st.label, st.sort_order, st.status_type,
       pr.developer_name, pr.label, pr.sort_order,
       ua.first_name, ua.last_name, uc.first_name, uc.last_name, tm.name,
       ct.first_name, ct.last_name, ct.email, ct.organization,
       (SELECT array_agg(k.is_closed) FROM ticket_tasks k WHERE k.ticket_id = t.id),
       (SELECT array_agg(f.user_id) FROM ticket_followers f WHERE f.ticket_id = t.id),
       (SELECT array_agg(m.user_id) FROM team_memberships m WHERE m.team_id = t.team_id)
FROM tickets t
JOIN ticket_statuses st ON st.id = t.status_id
JOIN ticket_priorities pr ON pr.id = t.priority_id
LEFT JOIN users ua ON ua.id = t.assignee_id
LEFT JOIN users uc ON uc.id = t.created_by_id
LEFT JOIN teams tm ON tm.id = t.team_id
LEFT JOIN contacts ct ON ct.id = t.contact_id
"""

NAMES = [
    "id",
    "title",
    "description",
    "language",
    "category",
    "tags",
    "created_at",
    "updated_at",
    "resolved_at",
    "closed_at",
    "sla_due_at",
    "sla_breached",
    "sla_status",
    "snoozed_until",
    "contact_id",
    "team_id",
    "assignee_id",
    "created_by_id",
    "status_dev",
    "status_label",
    "status_order",
    "status_type",
    "priority_dev",
    "priority_label",
    "priority_order",
    "ua_first",
    "ua_last",
    "uc_first",
    "uc_last",
    "team_name",
    "ct_first",
    "ct_last",
    "ct_email",
    "ct_org",
    "tasks",
    "followers",
    "team_members",
]

Row = dict[str, Any]


def fetch(conn: psycopg.Connection[Any]) -> list[Row]:
    rows = conn.execute(RAW_SELECT).fetchall()
    result = []
    for raw in rows:
        row = dict(zip(NAMES, raw, strict=True))
        row["tasks"] = row["tasks"] or []
        row["followers"] = row["followers"] or []
        row["team_members"] = row["team_members"] or []
        result.append(row)
    return result


# The CSV formula guard, stated on its own: a text cell a spreadsheet would evaluate is
# one that starts with = + - @ TAB CR or LF, or whose first character after leading white
# space (which an import may trim: "  =1+1") or invisible characters is = + - @.
GUARD_FIRST = ("=", "+", "-", "@", "\t", "\r", "\n")
GUARD_AFTER_SPACE = ("=", "+", "-", "@")
# Unicode's White_Space characters, the BOM, and what a reader may drop or not show: the
# information separators U+001C-U+001F, the Mongolian vowel separator, the zero-width
# space, non-joiner and joiner, and the word joiner.
SPACES = (
    "\t\n\v\f\r \u0085\u00a0\u1680"
    + "".join(chr(code) for code in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "\x1c\x1d\x1e\x1f\u180e\u200b\u200c\u200d\u2060"
)


def csv_guard(value: str) -> str:
    """What the CSV holds for a text value: prefixed with ' when a spreadsheet would run it."""
    if value[:1] in GUARD_FIRST or value.lstrip(SPACES)[:1] in GUARD_AFTER_SPACE:
        return "'" + value
    return value


def csv_unguard(value: str) -> str:
    """The value behind a CSV cell: the guard's quote taken off, and only that."""
    if value.startswith("'") and csv_guard(value[1:]) == value:
        return value[1:]
    return value


def fold(text: str) -> str:
    """Case-insensitive form, stated independently of the compiler: each character on its
    own lower-cased (no context, so a word-final Σ is σ) and kept one character (İ, whose
    full lower case is "i" plus a combining dot, becomes "i"), then ς folded to σ. ß stays
    ß and ẞ becomes ß; "ss" is not ß."""
    return "".join(c.lower()[:1] for c in text).replace("ς", "σ")


def _name(first: str | None, last: str | None) -> str:
    if first is None:
        return ""
    return first if last == "" else f"{first} {last}"


class Evaluator:
    """Evaluates one view over the fetched rows at a fixed instant in one zone."""

    def __init__(self, rows: list[Row], *, now: datetime.datetime, tz: str, actor_id: int):
        self.rows = rows
        self.now = now
        self.zone = ZoneInfo(tz)
        self.actor_id = actor_id
        self.priority_orders = {r["priority_dev"]: r["priority_order"] for r in rows}

    # values -----------------------------------------------------------------

    def is_snoozed(self, row: Row) -> bool:
        return row["snoozed_until"] is not None and row["snoozed_until"] > self.now

    def timestamp(self, value: datetime.datetime | None) -> str:
        if value is None:
            return ""
        local = value.astimezone(self.zone)
        offset = local.utcoffset()
        assert offset is not None
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        minutes = abs(minutes)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def shown(self, row: Row, column: str) -> str:
        if column == "id":
            return str(row["id"])
        if column in ("title", "description"):
            return str(row[column])
        if column in ("language", "category", "sla_status"):
            return row[column] or ""
        if column == "status":
            return str(row["status_label"])
        if column == "priority":
            return str(row["priority_label"])
        if column == "assignee":
            return _name(row["ua_first"], row["ua_last"])
        if column == "created_by":
            return _name(row["uc_first"], row["uc_last"])
        if column == "contact":
            return _name(row["ct_first"], row["ct_last"])
        if column == "team":
            return row["team_name"] or ""
        if column == "contact_id":
            return "" if row["contact_id"] is None else str(row["contact_id"])
        if column == "tags":
            return ", ".join(row["tags"])
        if column in ("created_at", "updated_at", "closed_at", "sla_due_at", "snoozed_until"):
            return self.timestamp(row[column])
        if column == "snoozed":
            return "Yes" if self.is_snoozed(row) else "No"
        if column == "tasks":
            tasks = row["tasks"]
            return f"{sum(1 for t in tasks if t)} / {len(tasks)}" if tasks else ""
        raise KeyError(column)

    # dates ------------------------------------------------------------------

    def day_start(self, day: datetime.date) -> datetime.datetime:
        return datetime.datetime(day.year, day.month, day.day, tzinfo=self.zone)

    def local_now(self) -> datetime.datetime:
        return self.now.astimezone(self.zone).replace(tzinfo=None)

    def wall(self, local: datetime.datetime) -> datetime.datetime:
        return local.replace(tzinfo=self.zone)

    @staticmethod
    def add_months(local: datetime.datetime, months: int) -> datetime.datetime:
        index = local.year * 12 + local.month - 1 + months
        year, month = divmod(index, 12)
        month += 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        return local.replace(year=year, month=month, day=day)

    def preset_range(self, preset: str) -> tuple[datetime.datetime, datetime.datetime]:
        today = self.local_now().date()
        day = datetime.timedelta(days=1)
        if preset == "today":
            return self.day_start(today), self.day_start(today + day)
        if preset == "yesterday":
            return self.day_start(today - day), self.day_start(today)
        if preset.endswith("_week"):
            monday = today - datetime.timedelta(days=today.weekday())
            shift = {"this_week": 0, "last_week": -7, "next_week": 7}[preset]
            start = monday + datetime.timedelta(days=shift)
            return self.day_start(start), self.day_start(start + datetime.timedelta(days=7))
        first = datetime.datetime(today.year, today.month, 1)
        shift = {"this_month": 0, "last_month": -1, "next_month": 1}[preset]
        return (
            self.wall(self.add_months(first, shift)),
            self.wall(self.add_months(first, shift + 1)),
        )

    def date_match(self, value: datetime.datetime | None, op: str, arg: Any) -> bool:
        if op == "is_empty":
            return value is None
        if op == "is_not_empty":
            return value is not None
        if value is None:
            return False
        if op in ("on", "before", "after", "on_or_before", "on_or_after"):
            day = datetime.date.fromisoformat(arg)
            start = self.day_start(day)
            end = self.day_start(day + datetime.timedelta(days=1))
            return {
                "on": start <= value < end,
                "before": value < start,
                "after": value >= end,
                "on_or_before": value < end,
                "on_or_after": value >= start,
            }[op]
        if op in ("within_past", "within_next"):
            amount = arg["amount"] * (-1 if op == "within_past" else 1)
            if arg["unit"] == "hours":
                other = self.now + datetime.timedelta(hours=amount)
            elif arg["unit"] == "days":
                other = self.wall(self.local_now() + datetime.timedelta(days=amount))
            else:
                other = self.wall(self.add_months(self.local_now(), amount))
            low, high = (other, self.now) if amount < 0 else (self.now, other)
            return low <= value <= high
        if op == "preset":
            start, end = self.preset_range(arg)
            return start <= value < end
        raise KeyError(op)

    # conditions -------------------------------------------------------------

    @staticmethod
    def text_match(value: str, op: str, arg: str) -> bool:
        v, a = fold(value), fold(arg)
        return {
            "equals": v == a,
            "contains": a in v,
            "starts_with": v.startswith(a),
            "ends_with": v.endswith(a),
        }[op]

    def text_value(self, row: Row, field: str) -> str:
        return {
            "title": lambda: row["title"],
            "description": lambda: row["description"],
            "category": lambda: row["category"] or "",
            "contact_name": lambda: _name(row["ct_first"], row["ct_last"]),
            "contact_email": lambda: row["ct_email"] or "",
            "contact_organization": lambda: row["ct_org"] or "",
            "sla_status": lambda: row["sla_status"] or "",
            "language": lambda: row["language"] or "",
        }[field]()

    def condition(self, row: Row, c: Mapping[str, Any]) -> bool:
        field, op, arg = c["field"], c["operator"], c.get("value")
        negated = op.startswith("not_") and op != "not_empty"
        base = op[4:] if negated else op
        if field == "tags":
            if op == "is_empty":
                return not row["tags"]
            if op == "is_not_empty":
                return bool(row["tags"])
            hit = any(self.text_match(tag, base, arg) for tag in row["tags"])
            return not hit if negated else hit
        if field in (
            "title",
            "description",
            "category",
            "contact_name",
            "contact_email",
            "contact_organization",
            "sla_status",
            "language",
        ):
            value = self.text_value(row, field)
            if op == "is_empty":
                return value == ""
            if op == "is_not_empty":
                return value != ""
            hit = self.text_match(value, base, arg)
            return not hit if negated else hit
        if field in ("id", "contact_id"):
            number = row[field]
            if op == "is_empty":
                return number is None
            if op == "is_not_empty":
                return number is not None
            arg = int(arg)
            if op == "ne":
                return number != arg
            if number is None:
                return False
            return {
                "eq": number == arg,
                "lt": number < arg,
                "le": number <= arg,
                "gt": number > arg,
                "ge": number >= arg,
            }[op]
        if field in (
            "created_at",
            "updated_at",
            "resolved_at",
            "closed_at",
            "sla_due_at",
            "snoozed_until",
        ):
            return self.date_match(row[field], op, arg)
        if field in ("status", "priority"):
            mine = row["status_dev"] if field == "status" else row["priority_dev"]
            if op == "type_is":
                return bool(row["status_type"] == arg)
            if op in ("more_important_than", "less_important_than"):
                ref = self.priority_orders.get(arg)
                if ref is None:
                    return False
                order = row["priority_order"]
                return bool(order < ref if op == "more_important_than" else order > ref)
            values = arg if isinstance(arg, list) else [arg]
            inside = mine in values
            return inside if op in ("is", "any_of") else not inside
        if field in ("assignee", "created_by", "team"):
            key = {"assignee": "assignee_id", "created_by": "created_by_id", "team": "team_id"}
            who = row[key[field]]
            if op == "is_empty":
                return who is None
            if op == "is_not_empty":
                return who is not None
            values = [int(v) for v in (arg if isinstance(arg, list) else [arg])]
            inside = who is not None and who in values
            return inside if op in ("is", "any_of") else not inside
        flags: dict[str, Callable[[], bool]] = {
            "sla_breached": lambda: bool(row["sla_breached"]),
            "snoozed": lambda: self.is_snoozed(row),
            "has_contact": lambda: row["contact_id"] is not None,
            "has_tasks": lambda: bool(row["tasks"]),
            "has_open_tasks": lambda: any(not done for done in row["tasks"]),
        }
        flag = flags[field]()
        return flag if op == "is_true" else not flag

    # views ------------------------------------------------------------------

    def builtin(self, row: Row, key: str, snoozed_param: str | None) -> bool:
        is_open = row["status_type"] == "open"
        awake = not self.is_snoozed(row)
        # A top-bar snoozed= value takes over the "not snoozed" part of these views' rules.
        if snoozed_param is not None:
            awake = True
        me = self.actor_id
        rules = {
            "all": lambda: True,
            "open": lambda: is_open and awake,
            "unassigned": lambda: (
                row["assignee_id"] is None and row["team_id"] is None and is_open and awake
            ),
            "my-tickets": lambda: row["assignee_id"] == me and is_open and awake,
            "created-by-me": lambda: row["created_by_id"] == me and is_open and awake,
            "team-tickets": lambda: me in row["team_members"] and is_open and awake,
            "following": lambda: me in row["followers"] and is_open and awake,
            "overdue": lambda: is_open and row["sla_breached"] and awake,
            "snoozed": lambda: self.is_snoozed(row),
            "closed": lambda: row["status_type"] == "closed",
            "recently-closed": lambda: (
                row["status_type"] == "closed"
                and row["closed_at"] is not None
                and row["closed_at"] >= self.now - datetime.timedelta(days=7)
            ),
        }
        return bool(rules[key]())

    def filters(self, row: Row, filters: Mapping[str, str]) -> bool:
        for key, value in filters.items():
            if key == "snoozed":
                if value == "exclude" and self.is_snoozed(row):
                    return False
                if value == "only" and not self.is_snoozed(row):
                    return False
            elif key == "status":
                if row["status_dev"] != value:
                    return False
            elif key == "type":
                if row["status_type"] != value:
                    return False
            elif key == "priority":
                if row["priority_dev"] != value:
                    return False
            else:
                column = {
                    "assignee": "assignee_id",
                    "team": "team_id",
                    "contact": "contact_id",
                    "created_by": "created_by_id",
                }[key]
                wanted = None if value == "none" else int(value)
                if row[column] != wanted:
                    return False
        return True

    SEARCHED = frozenset(
        {
            "id",
            "title",
            "status",
            "priority",
            "language",
            "category",
            "assignee",
            "team",
            "contact",
            "sla_status",
            "tags",
            "created_by",
            "description",
        }
    )

    def search(self, row: Row, q: str, columns: Sequence[str]) -> bool:
        needle = fold(q)
        return any(needle in fold(self.shown(row, c)) for c in columns if c in self.SEARCHED)

    # sorting ----------------------------------------------------------------

    def compare_level(self, a: Row, b: Row, column: str, descending: bool) -> int:
        def cmp(x: Any, y: Any) -> int:
            return (x > y) - (x < y)

        def nulls_last(x: Any, y: Any) -> int:
            if x is None or y is None:
                return (x is None) - (y is None)
            return -cmp(x, y) if descending else cmp(x, y)

        if column == "id":
            return nulls_last(a["id"], b["id"])
        if column == "status":
            return nulls_last(a["status_order"], b["status_order"])
        if column == "priority":
            return nulls_last(a["priority_order"], b["priority_order"])
        if column in (
            "contact_id",
            "created_at",
            "updated_at",
            "closed_at",
            "sla_due_at",
            "snoozed_until",
        ):
            return nulls_last(a[column], b[column])
        if column == "snoozed":
            return nulls_last(self.is_snoozed(a), self.is_snoozed(b))
        ta, tb = self.shown(a, column), self.shown(b, column)
        return nulls_last(
            (fold(ta)[:60], ta[:60]) if ta else None,
            (fold(tb)[:60], tb[:60]) if tb else None,
        )

    NAMED_SORTS: Mapping[str, list[tuple[str, bool]]] = {
        "newest": [("created_at", True), ("id", True)],
        "oldest": [("created_at", False), ("id", False)],
        "priority": [("priority", False), ("created_at", True), ("id", True)],
        "status": [("status", False), ("created_at", True), ("id", True)],
        "assignee": [("assignee", False), ("created_at", True), ("id", True)],
        "sla": [("sla_due_at", False), ("id", False)],
    }

    BUILTIN_ORDER: Mapping[str, list[tuple[str, bool]]] = {
        "closed": [("closed_at", True), ("id", True)],
        "recently-closed": [("closed_at", True), ("id", True)],
    }

    def levels(
        self, sort: str | None, builtin: str | None, definition: Mapping[str, Any]
    ) -> list[tuple[str, bool]]:
        if sort in self.NAMED_SORTS:
            return list(self.NAMED_SORTS[sort])
        if builtin is not None:
            return list(self.BUILTIN_ORDER.get(builtin, [("created_at", True), ("id", True)]))
        levels = [(s["column"], s["direction"] == "desc") for s in definition["sort"]]
        if all(column != "id" for column, _ in levels):
            levels.append(("id", levels[-1][1]))
        return levels

    # the whole view ---------------------------------------------------------

    def run(
        self,
        *,
        builtin: str | None,
        definition: Mapping[str, Any],
        filters: Mapping[str, str],
        q: str,
        sort: str | None,
    ) -> list[tuple[int, list[str]]]:
        """(ticket id, displayed values) for every row of the view, in the view's order."""
        columns = list(definition["columns"])
        snoozed_param = filters.get("snoozed")
        takes_over = builtin in {
            "open",
            "unassigned",
            "my-tickets",
            "created-by-me",
            "team-tickets",
            "following",
            "overdue",
        }
        selected = []
        for row in self.rows:
            if builtin is not None and not self.builtin(
                row, builtin, snoozed_param if takes_over else None
            ):
                continue
            if not all(self.condition(row, c) for c in definition["conditions_and"]):
                continue
            ors = definition["conditions_or"]
            if ors and not any(self.condition(row, c) for c in ors):
                continue
            if not self.filters(row, filters):
                continue
            if q and not self.search(row, q, columns):
                continue
            selected.append(row)
        levels = self.levels(sort, builtin, definition)

        def compare(a: Row, b: Row) -> int:
            for column, descending in levels:
                result = self.compare_level(a, b, column, descending)
                if result:
                    return result
            return 0

        selected.sort(key=cmp_to_key(compare))
        return [(row["id"], [self.shown(row, c) for c in columns]) for row in selected]
