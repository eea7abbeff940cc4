"""Times as people read them: `6 Dec 2026, 13:06 UTC` in the organisation's zone, inside
`<time datetime="ISO">`, and recent ones also as "3 min ago"."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from markupsafe import Markup, escape

# How far back a time still reads better as an age ("3 h ago") beside the date.
RECENT = dt.timedelta(hours=24)


def readable(value: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    local = value.astimezone(zone)
    return f"{local.day} {local:%b %Y}, {local:%H:%M} {local.tzname() or ''}".rstrip()


def ago(value: dt.datetime, now: dt.datetime) -> str | None:
    """ "3 min ago" for a time within the past day; None for older or future times."""
    delta = now - value
    if delta < dt.timedelta(0) or delta >= RECENT:
        return None
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


def zone_names(zone: zoneinfo.ZoneInfo, around: dt.datetime) -> dict[int, str]:
    """The zone's abbreviation by UTC offset in minutes, for a page's script to write times
    as the server does: browsers know offsets but name most zones only "GMT+5:30"."""
    names: dict[int, str] = {}
    # Daily across a year either side catches both sides of every daylight-saving change.
    for day in range(-200, 201):
        local = (around + dt.timedelta(days=day)).astimezone(zone)
        offset = local.utcoffset()
        if offset is not None and local.tzname():
            names.setdefault(int(offset.total_seconds() // 60), str(local.tzname()))
    return names


def time_tag(
    value: dt.datetime | None, zone: zoneinfo.ZoneInfo, now: dt.datetime | None = None
) -> Markup:
    """The HTML for one time; an em dash for none."""
    if value is None:
        return Markup("—")
    local = value.astimezone(zone)
    html = Markup('<time datetime="{}">{}</time>').format(
        local.isoformat(timespec="seconds"), readable(value, zone)
    )
    recent = ago(value, now or dt.datetime.now(dt.UTC))
    if recent:
        html += Markup(' <span class="ago">({})</span>').format(escape(recent))
    return html
