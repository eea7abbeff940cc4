"""Reading the audit log: filters, keyset pages newest first, and the filtered rows as CSV."""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import datetime as dt
import io
import json
import re
import uuid
import zoneinfo
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import psycopg
from psycopg import sql

from ticketexport.domain import cells
from ticketexport.domain.errors import Invalid

PAGE_SIZE = 50
# Rows fetched at a time while streaming the CSV: memory stays bounded however many match.
CSV_BATCH = 1000
CSV_HEADER = (
    "id",
    "occurred_at",
    "actor_id",
    "actor_email",
    "action",
    "client_ip",
    "export_id",
    "details",
)
_ACTION = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$")
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_COLUMNS = sql.SQL(
    "id, occurred_at, actor_id, actor_email, action, host(client_ip), export_id::text, details"
)


@dataclasses.dataclass(frozen=True)
class AuditFilters:
    """The audit page's filters as typed (for the form) and as checked (for the query)."""

    action: str = ""
    actor: str = ""
    export: str = ""
    from_: str = ""
    to: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def query_string(self) -> dict[str, str]:
        """The filters as URL parameters, without the empty ones."""
        pairs = {
            "action": self.action,
            "actor": self.actor,
            "export": self.export,
            "from": self.from_,
            "to": self.to,
        }
        return {key: value for key, value in pairs.items() if value}


@dataclasses.dataclass(frozen=True)
class AuditRow:
    id: int
    occurred_at: dt.datetime
    actor_id: int | None
    actor_email: str | None
    action: str
    client_ip: str | None
    export_id: str | None
    details: dict[str, Any]

    @property
    def changes(self) -> list[tuple[str, str, str]]:
        """(field, before, after) for each value a change row says differs."""
        before, after = self.details.get("before"), self.details.get("after")
        if not isinstance(after, dict):
            return []
        old = before if isinstance(before, dict) else {}
        found = []
        for key in sorted(after):
            if old.get(key) != after[key] or not isinstance(before, dict):
                found.append((key, _show(old.get(key)), _show(after[key])))
        return found


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


@dataclasses.dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    next_cursor: str | None


def _instant(text: str, zone: zoneinfo.ZoneInfo, *, end: bool, name: str) -> dt.datetime:
    """A date (the whole day) or a local date and time, in the organisation's zone."""
    try:
        if _DATE.match(text):
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time(), tzinfo=zone)
            return moment + dt.timedelta(days=1) if end else moment
        if _DATETIME.match(text):
            moment = dt.datetime.fromisoformat(text).replace(tzinfo=zone)
            return moment + dt.timedelta(minutes=1) if end and text.count(":") == 1 else moment
    except (ValueError, OverflowError):
        pass
    raise Invalid(f"{name} must be a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM)")


def parse_filters(query: Mapping[str, str], zone: zoneinfo.ZoneInfo) -> AuditFilters:
    """Check the filters from a query string; a malformed one is refused with its name."""
    action = query.get("action", "").strip()
    actor = query.get("actor", "").strip()
    export = query.get("export", "").strip()
    start_text = query.get("from", "").strip()
    end_text = query.get("to", "").strip()
    if action and not _ACTION.match(action):
        raise Invalid("action must be an action name such as user.updated")
    if actor and (len(actor) > 254 or "\x00" in actor):
        raise Invalid("actor must be an e-mail address of at most 254 characters")
    if export:
        try:
            export = str(uuid.UUID(export)) if len(export) <= 64 else ""
        except ValueError:
            export = ""
        if not export:
            raise Invalid("export must be an export id")
    start = _instant(start_text, zone, end=False, name="from") if start_text else None
    end = _instant(end_text, zone, end=True, name="to") if end_text else None
    if start is not None and end is not None and end <= start:
        raise Invalid("to must be after from")
    return AuditFilters(action, actor.lower(), export, start_text, end_text, start, end)


def encode_cursor(row: AuditRow) -> str:
    raw = f"{row.occurred_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[dt.datetime, int]:
    """The (occurred_at, id) a page continues after; anything malformed is refused."""
    bad = Invalid("the page cursor is not valid; start again from the first page")
    if not _CURSOR.match(token):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, _, ident = raw.partition("|")
        moment = dt.datetime.fromisoformat(at)
        row_id = int(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise bad from None
    if moment.tzinfo is None or not ident.isdigit() or not 0 < row_id < 2**63:
        raise bad
    return moment, row_id


def _where(filters: AuditFilters, after: tuple[dt.datetime, int] | None) -> sql.Composable:
    parts: list[sql.Composable] = []
    if filters.action:
        parts.append(sql.SQL("action = {}").format(sql.Literal(filters.action)))
    if filters.actor:
        parts.append(sql.SQL("actor_email = {}").format(sql.Literal(filters.actor)))
    if filters.export:
        parts.append(sql.SQL("export_id = {}::uuid").format(sql.Literal(filters.export)))
    if filters.start is not None:
        parts.append(sql.SQL("occurred_at >= {}").format(sql.Literal(filters.start)))
    if filters.end is not None:
        parts.append(sql.SQL("occurred_at < {}").format(sql.Literal(filters.end)))
    if after is not None:
        parts.append(
            sql.SQL("(occurred_at, id) < ({}::timestamptz, {}::bigint)").format(
                sql.Literal(after[0]), sql.Literal(after[1])
            )
        )
    if not parts:
        return sql.SQL("")
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(parts)


def _row(values: tuple[Any, ...]) -> AuditRow:
    return AuditRow(
        id=int(values[0]),
        occurred_at=values[1],
        actor_id=values[2],
        actor_email=values[3],
        action=values[4],
        client_ip=values[5],
        export_id=values[6],
        details=values[7] if isinstance(values[7], dict) else {},
    )


def page_query(filters: AuditFilters, after: tuple[dt.datetime, int] | None) -> sql.Composed:
    """One page plus one row (to know whether another page follows), newest first."""
    return sql.SQL(
        "SELECT {} FROM audit_log {} ORDER BY occurred_at DESC, id DESC LIMIT {}"
    ).format(_COLUMNS, _where(filters, after), sql.Literal(PAGE_SIZE + 1))


async def read_page(
    conn: psycopg.AsyncConnection[Any], filters: AuditFilters, cursor: str | None
) -> AuditPage:
    after = decode_cursor(cursor) if cursor else None
    cur = await conn.execute(page_query(filters, after))
    rows = [_row(values) for values in await cur.fetchall()]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return AuditPage(rows, encode_cursor(rows[-1]) if more and rows else None)


def csv_line(row: AuditRow, zone: zoneinfo.ZoneInfo) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [
            row.id,
            row.occurred_at.astimezone(zone).isoformat(timespec="seconds"),
            "" if row.actor_id is None else row.actor_id,
            cells.guard(row.actor_email or ""),
            row.action,
            row.client_ip or "",
            row.export_id or "",
            cells.guard(json.dumps(row.details, ensure_ascii=False, sort_keys=True)),
        ]
    )
    return out.getvalue()


async def stream_csv(
    conn: psycopg.AsyncConnection[Any], filters: AuditFilters, zone: zoneinfo.ZoneInfo
) -> AsyncGenerator[bytes, None]:
    """The header and every filtered row, newest first, a batch at a time from a
    server-side cursor (in a transaction of its own on `conn`)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(CSV_HEADER)
    yield ("\ufeff" + out.getvalue()).encode()
    query = sql.SQL("SELECT {} FROM audit_log {} ORDER BY occurred_at DESC, id DESC").format(
        _COLUMNS, _where(filters, None)
    )
    async with conn.transaction(), conn.cursor(name="audit_csv") as cur:
        await cur.execute(query)
        while True:
            batch = await cur.fetchmany(CSV_BATCH)
            if not batch:
                return
            yield "".join(csv_line(_row(values), zone) for values in batch).encode()


# Every action the product records, for the filter's choices.
ACTIONS = frozenset(
    {
        "audit.exported",
        "export.cancelled",
        "export.completed",
        "export.deduplicated",
        "export.delivered",
        "export.delivery_failed",
        "export.denied",
        "export.download_denied",
        "export.download_failed",
        "export.downloaded",
        "export.expired",
        "export.failed",
        "export.requested",
        "export.requeued",
        "export.retried",
        "login.failed",
        "login.succeeded",
        "login.throttled",
        "role.created",
        "role.updated",
        "schedule.created",
        "schedule.deleted",
        "schedule.denied",
        "schedule.paused",
        "schedule.resumed",
        "schedule.run_requested",
        "schedule.tick_skipped",
        "token.created",
        "token.revoked",
        "user.created",
        "user.updated",
    }
)
