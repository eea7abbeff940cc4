"""Saved views pages: the list, the editor (create and edit) and delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ticketexport.domain.permissions import Permission
from ticketexport.views import saved, service
from ticketexport.views.model import ViewInputError
from ticketexport.web import view_form
from ticketexport.web.keys import USER, pool_of
from ticketexport.web.render import PageError, render


def _view_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def view_list(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    async with pool_of(request).connection() as conn:
        views = await saved.list_saved_views(conn, user)
    return render(request, "views_list.html", {"views": views})


async def _editor(
    request: web.Request,
    state: view_form.FormState,
    *,
    view_id: int | None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    user = request[USER]
    async with pool_of(request).connection() as conn:
        options = await service.filter_options(conn)
    context: dict[str, Any] = {
        "form": state,
        "view_id": view_id,
        "error": error,
        "options": options,
        "may_share": user.has(Permission.MANAGE_SYSTEM_VIEWS),
        **view_form.editor_choices(),
    }
    return render(request, "view_edit.html", context, status=status)


async def view_new(request: web.Request) -> web.StreamResponse:
    return await _editor(request, view_form.blank_state(), view_id=None)


async def view_edit(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    view_id = _view_id(request)
    async with pool_of(request).connection() as conn:
        view = await saved.get_saved_view(conn, view_id, user)
    if not view.editable:
        raise PageError(
            403, "Only people with the Manage System Views permission can edit this view."
        )
    state = view_form.state_from_definition(view.definition, system_wide=view.system_wide)
    return await _editor(request, state, view_id=view_id)


async def _save(request: web.Request, view_id: int | None) -> web.StreamResponse:
    user = request[USER]
    if view_id is not None:
        # Someone else's view is not there at all, whatever the form holds.
        async with pool_of(request).connection() as conn:
            await saved.get_saved_view(conn, view_id, user)
    form = await request.post()
    try:
        state = view_form.state_from_form(form)
    except ViewInputError as exc:
        state = view_form.blank_state()
        return await _editor(request, state, view_id=view_id, error=str(exc), status=400)
    if state.system_wide and not user.has(Permission.MANAGE_SYSTEM_VIEWS):
        raise PageError(403, "Only people with the Manage System Views permission can share views.")
    try:
        definition = view_form.definition_from_state(state, form)
    except ViewInputError as exc:
        return await _editor(request, state, view_id=view_id, error=str(exc), status=400)
    actor = user
    error: str | None = None
    async with pool_of(request).connection() as conn:
        try:
            if view_id is None:
                view_id = await saved.create_saved_view(
                    conn, actor, definition, system_wide=state.system_wide
                )
            else:
                await saved.update_saved_view(
                    conn, actor, view_id, definition, system_wide=state.system_wide
                )
        except ViewInputError as exc:
            # e.g. a user or team id that does not exist (checked against the database).
            error = str(exc)
        except PermissionError:
            raise PageError(
                403, "Only people with the Manage System Views permission can change this view."
            ) from None
    if error is not None:
        return await _editor(request, state, view_id=view_id, error=error, status=400)
    raise web.HTTPSeeOther(f"/staff/tickets?view={view_id}")


async def view_create(request: web.Request) -> web.StreamResponse:
    return await _save(request, None)


async def view_update(request: web.Request) -> web.StreamResponse:
    return await _save(request, _view_id(request))


async def view_delete(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    async with pool_of(request).connection() as conn:
        try:
            await saved.delete_saved_view(conn, user, _view_id(request))
        except PermissionError:
            raise PageError(
                403, "Only people with the Manage System Views permission can delete this view."
            ) from None
    raise web.HTTPSeeOther("/staff/views")
