"""File downloads: the permission check at download time, byte ranges, Content-Disposition."""

from __future__ import annotations

import contextlib
import re
import urllib.parse
import uuid
from collections.abc import Mapping

from aiohttp import web

from ticketexport.domain.actor import Actor
from ticketexport.exports import files, service
from ticketexport.web.keys import USER, services_of
from ticketexport.web.render import PageError
from ticketexport.web.security import client_ip

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def export_id_of(request: web.Request) -> str:
    """The export id in the path, normalised; a malformed one is simply not found."""
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise PageError(404) from None


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact name in filename*."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", file_name) or "export"
    return (
        f'attachment; filename="{fallback}"; '
        f"filename*=UTF-8''{urllib.parse.quote(file_name, safe='')}"
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range as (start, end inclusive); None for the whole file.

    Raises ValueError for an unsatisfiable range. Multiple ranges get the whole file,
    which RFC 9110 allows."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, min(end, size - 1)


async def export_download(request: web.Request) -> web.StreamResponse:
    """GET /staff/exports/{id}/download: the stored file, streamed through the app.

    The object is checked before the status line (a missing file answers 410, a store that
    does not answer 503); a failure after the first byte drops the connection at once, so
    the client sees a body short of its Content-Length instead of waiting on it. HEAD
    answers with the headers GET would send: no body, no download audit row, no use of the
    automatic download; a refusal is audited as for GET.
    """
    return await send_file(
        request, request[USER], export_id_of(request), auto=request.query.get("auto") == "1"
    )


async def send_file(
    request: web.Request,
    user: Actor,
    export_id: str,
    *,
    auto: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """The export's file for `user`, checked now: the browser download and the API's.
    `headers` are added to the file's answer (a full or partial file, or 416)."""
    more = dict(headers or {})
    services = services_of(request)
    ip = client_ip(request)
    head = request.method == "HEAD"
    export = await service.authorize_download(
        services, user, export_id, auto=auto, client_ip=ip, head=head
    )
    if export is None:
        # Another tab or browser already downloaded it automatically: do nothing.
        return web.Response(status=204, headers={"Cache-Control": "no-store"})
    file = export.file
    # authorize_download hands on only a completed export with its file.
    assert file is not None
    size = file.size_bytes
    try:
        byte_range = parse_range(request.headers.get("Range"), size)
    except ValueError:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", **more})
    if byte_range is not None and request.headers.get("If-Range") not in (
        None,
        f'"{file.sha256}"',
    ):
        byte_range = None
    start, end = byte_range if byte_range is not None else (0, size - 1)
    download = files.Download(
        user=user,
        export=export,
        start=start,
        end=end,
        client_ip=ip,
        ranged=byte_range is not None,
    )
    await files.check(services, download, record=not head)
    body = None if head else await files.open_body(services, download)
    response = web.StreamResponse(
        status=206 if byte_range is not None else 200,
        headers={
            # The stored media item says what the file is; the format chose it at export time.
            "Content-Type": file.content_type,
            "Content-Disposition": content_disposition(file.name),
            "Accept-Ranges": "bytes",
            "ETag": f'"{file.sha256}"',
            "Cache-Control": "no-store",
            "Content-Length": str(max(0, end - start + 1)),
            **more,
        },
    )
    if byte_range is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if body is None:
        # aiohttp sends whatever a handler writes, HEAD or not: write nothing.
        await response.prepare(request)
        await response.write_eof()
        return response
    async with contextlib.aclosing(body):
        await service.record_download(
            services,
            user,
            export_id,
            client_ip=ip,
            details={
                "bytes": max(0, end - start + 1),
                "size": size,
                "range": f"{start}-{end}" if byte_range is not None else None,
                "auto": auto,
            },
        )
        await response.prepare(request)
        try:
            async for chunk in body:
                await response.write(chunk)
        except files.Interrupted:
            _drop(request)
            return response
    await response.write_eof()
    return response


def _drop(request: web.Request) -> None:
    """End the connection now: the status line and part of the body are sent, so the only
    honest signal left is a body short of its Content-Length (the client reports an
    incomplete download instead of waiting for the rest)."""
    request.protocol.force_close()
    transport = request.transport
    if transport is not None:
        transport.abort()
