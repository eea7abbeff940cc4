"""Schedule pages and actions: my schedules, one schedule, create, pause, resume, run, delete."""

from __future__ import annotations

from aiohttp import web

from ticketexport.exports.frozen import FrozenRequest
from ticketexport.schedules import service
from ticketexport.web.exports import describe_request, requested_view
from ticketexport.web.keys import USER, pool_of, services_of, settings_of
from ticketexport.web.render import PageError, posted_fields, render
from ticketexport.web.security import client_ip

# The creation form's own fields; every other one is the list page's.
SCHEDULE_FIELDS = (
    "name",
    "cadence",
    "every_minutes",
    "minute",
    "time",
    "weekday",
    "mode",
    "destination",
    "notify",
)
ACTIONS = ("pause", "resume", "run", "delete")
# Schedule ids are bigints.
_MAX_ID = 2**63 - 1


async def schedule_create(request: web.Request) -> web.StreamResponse:
    """POST /staff/schedules: the list's fields + format + the schedule's → 303 to it."""
    fields = await posted_fields(request)
    own = {key: fields.pop(key) for key in SCHEDULE_FIELDS if key in fields}
    list_request, export_format = requested_view(fields)
    schedule_id = await service.create_schedule(
        services_of(request),
        request[USER],
        list_request,
        export_format=export_format,
        fields=own,
        client_ip=client_ip(request),
    )
    raise web.HTTPSeeOther(f"/staff/schedules/{schedule_id}")


def _describe(row: dict[str, object]) -> str:
    return service.cadence_of(row).describe()


async def schedule_list(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    query = request.query
    unknown = set(query) - {"all"}
    if unknown:
        raise PageError(400, f"unknown parameter {sorted(unknown)[0][:40]!r}")
    if query.get("all", "1") != "1":
        raise PageError(400, "all must be 1")
    everyone = "all" in query
    if everyone and not service.may_list_everyones(user):
        raise PageError(
            403, "Only administrators with the export permission see everyone's schedules."
        )
    async with pool_of(request).connection() as conn:
        rows = await service.list_schedules(conn, owner_id=None if everyone else user.id)
    return render(
        request,
        "schedules.html",
        {
            "items": [{"row": row, "cadence": _describe(row)} for row in rows],
            "everyone": everyone,
            "can_see_all": service.may_list_everyones(user),
        },
    )


def _schedule_id(request: web.Request) -> int:
    value = int(request.match_info["id"])
    if value > _MAX_ID:
        raise service.ScheduleNotFound()
    return value


async def schedule_show(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    schedule_id = _schedule_id(request)
    settings = settings_of(request)
    async with pool_of(request).connection() as conn:
        row = await service.visible_schedule(conn, user, schedule_id)
        runs, skipped = await service.recent_runs(conn, schedule_id)
    return render(
        request,
        "schedule.html",
        {
            "schedule": row,
            "cadence": _describe(row),
            "timezone": settings.timezone,
            "summary": describe_request(FrozenRequest.read(row["request"])),
            "runs": runs,
            "skipped": skipped,
        },
    )


async def schedule_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    schedule_id = _schedule_id(request)
    export_id = await service.change_schedule(
        services_of(request), request[USER], schedule_id, action, client_ip=client_ip(request)
    )
    if action == "delete":
        raise web.HTTPSeeOther("/staff/schedules")
    if export_id is not None:
        raise web.HTTPSeeOther(f"/staff/exports/{export_id}")
    raise web.HTTPSeeOther(f"/staff/schedules/{schedule_id}")


def add_routes(app: web.Application) -> None:
    sid = r"{id:[0-9]{1,19}}"
    router = app.router
    router.add_get("/staff/schedules", schedule_list)
    router.add_post("/staff/schedules", schedule_create)
    router.add_get(f"/staff/schedules/{sid}", schedule_show)
    router.add_post(f"/staff/schedules/{sid}/{{action:pause|resume|run|delete}}", schedule_action)
