"""Schedule cadences: parsing the form, and ticks around an instant, across DST changes."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from ticketexport.domain import cadence
from ticketexport.domain.errors import Invalid

UTC = dt.UTC
NY = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(zone: zoneinfo.ZoneInfo, *args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


def ticks(c: cadence.Cadence, zone: zoneinfo.ZoneInfo, start: dt.datetime, end: dt.datetime):
    """Every tick in (start, end], by walking next_tick."""
    found = []
    at = start
    while True:
        at = cadence.next_tick(c, zone, at)
        if at > end:
            return found
        found.append(at)


def test_every_is_anchored_on_the_epoch_in_utc() -> None:
    c = cadence.Cadence("every", every_minutes=7)
    now = utc(2026, 12, 6, 22, 18, 30)
    latest = cadence.latest_tick(c, BERLIN, now)
    minutes = (latest - cadence.EPOCH).total_seconds() / 60
    assert minutes % 7 == 0
    assert latest <= now < latest + dt.timedelta(minutes=7)
    assert cadence.next_tick(c, BERLIN, latest) == latest + dt.timedelta(minutes=7)
    # An instant on a tick is that tick; the next one is strictly after.
    assert cadence.latest_tick(c, BERLIN, latest) == latest


def test_hourly_follows_the_local_minute_in_a_half_hour_zone() -> None:
    c = cadence.Cadence("hourly", minute=15)
    now = utc(2026, 12, 6, 10, 0)
    nxt = cadence.next_tick(c, KOLKATA, now)
    assert nxt.astimezone(KOLKATA).minute == 15
    assert nxt == utc(2026, 12, 6, 10, 45)  # 16:15 IST
    assert cadence.latest_tick(c, KOLKATA, now) == utc(2026, 12, 6, 9, 45)


def test_daily_time_skipped_by_spring_forward_runs_at_the_next_valid_minute() -> None:
    # 2026-03-08: New York's clocks go from 02:00 to 03:00; 02:30 does not exist.
    c = cadence.Cadence("daily", time=dt.time(2, 30))
    found = ticks(c, NY, utc(2026, 3, 6, 12), utc(2026, 3, 10, 3))
    assert found == [
        local(NY, 2026, 3, 7, 2, 30),
        local(NY, 2026, 3, 8, 3, 0),
        local(NY, 2026, 3, 9, 2, 30),
    ]


def test_daily_time_repeated_by_fall_back_runs_once() -> None:
    # 2026-11-01: New York's 01:30 happens twice (EDT, then EST).
    c = cadence.Cadence("daily", time=dt.time(1, 30))
    found = ticks(c, NY, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert found == [local(NY, 2026, 11, 1, 1, 30, fold=0), local(NY, 2026, 11, 2, 1, 30)]
    # Just after the second 01:30, the latest tick is still the first one.
    second = local(NY, 2026, 11, 1, 1, 30, fold=1)
    assert second - found[0] == dt.timedelta(hours=1)
    assert cadence.latest_tick(c, NY, second + dt.timedelta(minutes=1)) == found[0]


def test_weekly_runs_on_its_weekday_across_a_dst_change() -> None:
    # Sundays at 02:30 in Berlin; 2026-03-29 is the spring-forward Sunday.
    c = cadence.Cadence("weekly", time=dt.time(2, 30), weekday=6)
    found = ticks(c, BERLIN, utc(2026, 3, 16), utc(2026, 4, 6))
    assert [t.astimezone(BERLIN).strftime("%a %d %H:%M") for t in found] == [
        "Sun 22 02:30",
        "Sun 29 03:00",
        "Sun 05 02:30",
    ]


def test_hourly_ticks_every_hour_across_fall_back() -> None:
    c = cadence.Cadence("hourly", minute=30)
    found = ticks(c, NY, utc(2026, 11, 1, 3), utc(2026, 11, 1, 9))
    # Six UTC hours, six ticks: the repeated local hour is a real hour of its own.
    assert len(found) == 6
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(found))


def test_latest_tick_after_an_outage_is_the_latest_missed_one() -> None:
    c = cadence.Cadence("every", every_minutes=5)
    start = utc(2026, 1, 1, 0, 0)
    after_outage = start + dt.timedelta(minutes=63, seconds=20)
    assert cadence.latest_tick(c, UTC_ZONE, after_outage) == start + dt.timedelta(minutes=60)


UTC_ZONE = zoneinfo.ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "cadence must be one of"),
        ({"cadence": "yearly"}, "cadence must be one of"),
        ({"cadence": "every"}, "every_minutes must be a whole number"),
        ({"cadence": "every", "every_minutes": "4"}, "between 5 and 1440"),
        ({"cadence": "every", "every_minutes": "1441"}, "between 5 and 1440"),
        ({"cadence": "every", "every_minutes": "-5"}, "whole number"),
        ({"cadence": "every", "every_minutes": "٥"}, "whole number"),
        ({"cadence": "every", "every_minutes": "10", "time": "07:00"}, "time does not apply"),
        ({"cadence": "hourly", "minute": "60"}, "between 0 and 59"),
        ({"cadence": "daily", "time": "24:00"}, "HH:MM"),
        ({"cadence": "daily", "time": "7:00"}, "HH:MM"),
        ({"cadence": "daily", "time": "07:00:00"}, "HH:MM"),
        ({"cadence": "weekly", "time": "07:00"}, "weekday must be one of"),
        ({"cadence": "weekly", "time": "07:00", "weekday": "Mon"}, "weekday must be one of"),
    ],
)
def test_bad_cadence_fields_are_named(fields: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        cadence.parse(fields, min_minutes=5)


def test_good_cadences_parse() -> None:
    assert cadence.parse({"cadence": "every", "every_minutes": "15"}, min_minutes=5) == (
        cadence.Cadence("every", every_minutes=15)
    )
    assert (
        cadence.parse({"cadence": "every", "every_minutes": "1"}, min_minutes=1).every_minutes == 1
    )
    weekly = cadence.parse({"cadence": "weekly", "time": "23:59", "weekday": "sun"}, min_minutes=5)
    assert weekly == cadence.Cadence("weekly", time=dt.time(23, 59), weekday=6)
    assert weekly.describe() == "Weekly on Sun at 23:59"
