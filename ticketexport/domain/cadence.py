"""When a schedule runs: its cadence, parsed from the form, and its ticks around an instant."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator, Mapping

from ticketexport.domain.errors import Invalid

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
KINDS = ("every", "hourly", "daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_EVERY_MINUTES = 1440
# The longest daylight-saving gap in the tz database is two hours (Antarctica/Troll);
# a local time is looked for this many minutes past its nominal one at most.
_GAP_MINUTES = 180
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclasses.dataclass(frozen=True)
class Cadence:
    """`every` N minutes (anchored at 1970-01-01 00:00 UTC), `hourly` at a minute, `daily`
    at a local time, or `weekly` on a weekday (0 Monday … 6 Sunday) at a local time."""

    kind: str
    every_minutes: int | None = None
    minute: int | None = None
    time: dt.time | None = None
    weekday: int | None = None

    def describe(self) -> str:
        """The cadence in words, for the pages."""
        if self.kind == "every":
            return f"Every {self.every_minutes} minutes"
        if self.kind == "hourly":
            return f"Hourly at minute {self.minute:02d}"
        assert self.time is not None
        at = self.time.strftime("%H:%M")
        if self.kind == "daily":
            return f"Daily at {at}"
        assert self.weekday is not None
        return f"Weekly on {WEEKDAYS[self.weekday].capitalize()} at {at}"


def parse(fields: Mapping[str, str], *, min_minutes: int) -> Cadence:
    """The cadence a form's fields describe; Invalid naming the field otherwise. Fields that
    the chosen cadence does not use must be empty, so nothing is silently ignored."""
    kind = fields.get("cadence", "")
    if kind not in KINDS:
        raise Invalid("cadence must be one of every, hourly, daily or weekly")
    used = {
        "every": {"every_minutes"},
        "hourly": {"minute"},
        "daily": {"time"},
        "weekly": {"weekday", "time"},
    }[kind]
    for name in ("every_minutes", "minute", "time", "weekday"):
        if name not in used and fields.get(name, ""):
            raise Invalid(f"{name} does not apply to the {kind} cadence")
    if kind == "every":
        minutes = _whole(fields.get("every_minutes", ""), "every_minutes")
        if not min_minutes <= minutes <= MAX_EVERY_MINUTES:
            raise Invalid(f"every_minutes must be between {min_minutes} and {MAX_EVERY_MINUTES}")
        return Cadence(kind, every_minutes=minutes)
    if kind == "hourly":
        minute = _whole(fields.get("minute", ""), "minute")
        if not 0 <= minute <= 59:
            raise Invalid("minute must be between 0 and 59")
        return Cadence(kind, minute=minute)
    match = _TIME.match(fields.get("time", ""))
    if match is None:
        raise Invalid("time must be HH:MM, from 00:00 to 23:59")
    at = dt.time(int(match.group(1)), int(match.group(2)))
    if kind == "daily":
        return Cadence(kind, time=at)
    weekday = fields.get("weekday", "")
    if weekday not in WEEKDAYS:
        raise Invalid("weekday must be one of " + ", ".join(WEEKDAYS))
    return Cadence(kind, time=at, weekday=WEEKDAYS.index(weekday))


def _whole(raw: str, name: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 5:
        raise Invalid(f"{name} must be a whole number")
    return int(raw)


def _minute_floor(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(UTC).replace(second=0, microsecond=0)


def resolve_local(day: dt.date, at: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The instant a local wall time on `day` means: a time skipped by a daylight-saving
    change is the next minute that exists; one that occurs twice is its first occurrence."""
    wall = dt.datetime.combine(day, at)
    for step in range(_GAP_MINUTES + 1):
        candidate = wall + dt.timedelta(minutes=step)
        # fold=0 is the earlier of two occurrences; a time in a gap does not come back
        # unchanged from UTC.
        aware = candidate.replace(tzinfo=zone, fold=0)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == candidate:
            return aware.astimezone(UTC)
    raise ValueError(f"no valid local time near {wall} in {zone.key}")


def _local_days(instant: dt.datetime, zone: zoneinfo.ZoneInfo, step: int) -> Iterator[dt.date]:
    """Local dates from the day before `instant`'s (a resolved time can fall on the next
    day) onwards (step 1) or from the day after backwards (step -1), eight days and more."""
    day = instant.astimezone(zone).date() - dt.timedelta(days=step)
    for _ in range(10):
        yield day
        day += dt.timedelta(days=step)


def _daily_candidates(
    cadence: Cadence, zone: zoneinfo.ZoneInfo, instant: dt.datetime, step: int
) -> Iterator[dt.datetime]:
    assert cadence.time is not None
    for day in _local_days(instant, zone, step):
        if cadence.kind == "weekly" and day.weekday() != cadence.weekday:
            continue
        yield resolve_local(day, cadence.time, zone)


def _hourly_candidates(
    cadence: Cadence, zone: zoneinfo.ZoneInfo, instant: dt.datetime, step: int
) -> Iterator[dt.datetime]:
    # Every instant whose local minute is the cadence's: whatever the zone's offset (half
    # and quarter hours included), one an hour.
    start = _minute_floor(instant)
    for offset in range(0, 2 * 60 + 1):
        candidate = start + dt.timedelta(minutes=step * offset)
        if candidate.astimezone(zone).minute == cadence.minute:
            yield candidate


def latest_tick(cadence: Cadence, zone: zoneinfo.ZoneInfo, now: dt.datetime) -> dt.datetime:
    """The latest tick at or before `now` (UTC)."""
    if cadence.kind == "every":
        assert cadence.every_minutes is not None
        minutes = int((now - EPOCH).total_seconds() // 60)
        return EPOCH + dt.timedelta(minutes=minutes - minutes % cadence.every_minutes)
    candidates = (
        _hourly_candidates(cadence, zone, now, -1)
        if cadence.kind == "hourly"
        else _daily_candidates(cadence, zone, now, -1)
    )
    for candidate in candidates:
        if candidate <= now:
            return candidate
    raise ValueError("no tick found")


def next_tick(cadence: Cadence, zone: zoneinfo.ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first tick strictly after `after` (UTC)."""
    if cadence.kind == "every":
        assert cadence.every_minutes is not None
        minutes = int((after - EPOCH).total_seconds() // 60)
        return EPOCH + dt.timedelta(
            minutes=minutes - minutes % cadence.every_minutes + cadence.every_minutes
        )
    candidates = (
        _hourly_candidates(cadence, zone, after + dt.timedelta(minutes=1), 1)
        if cadence.kind == "hourly"
        else _daily_candidates(cadence, zone, after, 1)
    )
    for candidate in candidates:
        if candidate > after:
            return candidate
    raise ValueError("no tick found")
