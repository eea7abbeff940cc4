"""How an export attempt ends early: a fixed failure, a transient outage, or superseded."""

from __future__ import annotations

# The file outgrew the largest object the storage backend can hold (its parts or blocks
# limit times the part size; see docs/operations.md).
FILE_TOO_LARGE = "file_too_large"
# Storage unreachable or refusing writes after the automatic attempts.
STORAGE_UNAVAILABLE = "storage_unavailable"


class ExportFailed(Exception):
    """Ends the export as failed with a fixed, safe error code."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


class Transient(Exception):
    """The database or storage went away; the attempt may succeed if run again."""

    def __init__(self, code: str, cause: BaseException) -> None:
        super().__init__(f"{code}: {type(cause).__name__}: {cause}")
        self.code = code


class Superseded(Exception):
    """The row is no longer this attempt's to write (cancelled, re-queued, expired)."""
