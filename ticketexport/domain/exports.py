"""Export lifecycle rules: statuses, transitions, error codes, progress, file names and keys."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Stage(enum.StrEnum):
    COUNTING = "counting"
    EXPORTING = "exporting"
    STORING = "storing"


# The only transitions the brief allows; the database trigger enforces the same table.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.QUEUED, Status.COMPLETED, Status.FAILED, Status.CANCELLED}),
    Status.COMPLETED: frozenset({Status.EXPIRED}),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.EXPIRED: frozenset(),
}

# Attempts of one export, automatic retries after a crash or outage included.
MAX_ATTEMPTS = 3

ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})


def can_transition(old: Status, new: Status) -> bool:
    return new in TRANSITIONS[old]


# Fixed, safe messages: details never reach the user, they go to the log.
ERROR_MESSAGES: dict[str, str] = {
    "permission_revoked": (
        "The requester no longer has the Import / Export Tickets permission, "
        "so the export was stopped."
    ),
    "requester_inactive": "The requester's account is no longer active, so the export was stopped.",
    "view_unavailable": "The view this export was based on can no longer be read.",
    "storage_unavailable": "The file could not be stored. Please retry the export.",
    "database_unavailable": "The database was unavailable while exporting. Please retry.",
    "expired_before_completion": ("The export did not finish before its retention period ended."),
    "row_count_mismatch": "The export wrote a different number of rows than it counted.",
    "too_many_rows_for_xlsx": (
        "The view has more rows than an Excel worksheet holds (1,048,575 below the header). "
        "Export it as CSV, or narrow the view with filters or a search."
    ),
    "file_too_large": (
        "The file grew larger than the configured storage can hold in one object. "
        "Narrow the view with filters or a search, or choose csv.gz, and export again."
    ),
    "stalled": "The export stopped making progress and was abandoned after its last attempt.",
    "worker_lost": "The worker running this export stopped and no attempts remain.",
    "internal": "The export failed because of an internal error. Please retry.",
}


def safe_message(code: str) -> str:
    return ERROR_MESSAGES.get(code, ERROR_MESSAGES["internal"])


def percent(rows_done: int, rows_total: int | None) -> int | None:
    """Integer 0–100, None before the count; an empty export is 100% once counted."""
    if rows_total is None:
        return None
    if rows_total <= 0:
        return 100
    return max(0, min(100, (rows_done * 100) // rows_total))


_SLUG_DROP = re.compile(r"[^a-z0-9]+")


def slugify(name: str, limit: int = 40) -> str:
    """ASCII slug of a view name: accents folded, everything else collapsed to '-'."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_DROP.sub("-", folded.lower()).strip("-")
    slug = slug[:limit].rstrip("-")
    return slug or "view"


def file_name(view_name: str, as_of: dt.datetime, tz: dt.tzinfo, *, extension: str = "csv") -> str:
    """tickets-<slug ≤ 40>-<YYYYMMDD-HHMMSS>.<extension>, the stamp in the organisation's
    zone."""
    stamp = as_of.astimezone(tz).strftime("%Y%m%d-%H%M%S")
    return f"tickets-{slugify(view_name)}-{stamp}.{extension}"


# What object_key() writes: the canonical (lower-case, hyphenated) export id, the attempt
# as plain digits, one file name (a single segment; object keys hold no "." or ".." one).
_OBJECT_KEY = re.compile(
    r"exports/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"/(0|[1-9][0-9]{0,8})/(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f]+"
)


def object_key(export_id: str, attempt: int, file_name: str) -> str:
    """Where one attempt of an export stores its file: a key of its own per attempt, so an
    interrupted attempt's leftovers can never be mistaken for (or overwrite) a later
    attempt's file, and maintenance tells by the key whether a running attempt owns it."""
    return f"exports/{export_id}/{attempt}/{file_name}"


def object_key_owner(key: str) -> tuple[str, int] | None:
    """(export id, attempt) of a key in exactly the form object_key() writes; None for any
    other key, which is never the product's to delete."""
    match = _OBJECT_KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def fingerprint(request: Mapping[str, Any]) -> str:
    """Stable digest of a frozen request, for the double-submit rule."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def copy_application_name(export_id: str) -> str:
    """application_name of the connection that runs an export's COPY (for pg_stat_activity,
    and so a cancel or a rescue can stop that statement from any process)."""
    return f"ticketexport-export:{export_id}"
