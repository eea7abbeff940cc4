"""The API's OpenAPI 3.1 description, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from ticketexport.domain.exports import Status
from ticketexport.exports import formats
from ticketexport.tokens import SCOPES
from ticketexport.views import registry

_ERROR = {"$ref": "#/components/responses/Error"}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The export's id.",
    "schema": {"type": "string", "format": "uuid"},
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_FILE_TYPES = sorted({f.content_type for f in formats.FORMATS.values()} | {"text/csv"})


def _json(ref: str, description: str, **headers: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }
    if headers:
        found["headers"] = headers
    return found


def _operation(
    summary: str,
    scope: str | None,
    responses: dict[str, Any],
    *,
    operation_id: str,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, "default": _ERROR},
    }
    if scope is not None:
        op["description"] = f"Needs a token with the scope `{scope}`."
        op["security"] = [{"bearerAuth": [scope]}]
    else:
        op["security"] = []
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


_LOCATION = {"description": "The export's URL in this API.", "schema": {"type": "string"}}
_ACTION_BODY = {
    "required": False,
    "description": "Nothing is needed; an empty body or an empty object.",
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": False, "maxProperties": 0}
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "ticketexport API",
        "version": "1",
        "description": (
            "Ticket exports for scripts and BI tools. Authenticate with an API token made on "
            "/staff/tokens (`Authorization: Bearer tex_…`); it acts with its owner's rights "
            "as they are at each request. A missing, unknown, expired or revoked token, or "
            "one whose owner is inactive, answers 401; a token without the route's scope "
            "403; anything the owner may not see or download now 404. Past the requests a "
            "token may make in a minute: 429 with Retry-After."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearerAuth": []}],
    "paths": {
        "/openapi.json": {
            "get": _operation(
                "This description.",
                None,
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                operation_id="getOpenApi",
            )
        },
        "/views": {
            "get": _operation(
                "The views the owner's list page offers, built-in and saved.",
                "views:read",
                {"200": _json("ViewList", "The views.")},
                operation_id="listViews",
            )
        },
        "/exports": {
            "get": _operation(
                "The owner's exports, newest first, a page at a time.",
                "exports:read",
                {"200": _json("ExportPage", "One page of exports.")},
                operation_id="listExports",
                parameters=[
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page, as it was given; "
                        "one that this API did not hand out to this token's owner is 400.",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                ],
            ),
            "post": _operation(
                "Request an export of a view (the Export button's rules: validation, double "
                "submit, the active-export limit, audit).",
                "exports:write",
                {"202": _json("Export", "The export, queued.", Location=_LOCATION)},
                operation_id="requestExport",
                body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Request"}}
                    },
                },
            ),
        },
        "/exports/{id}": {
            "get": _operation(
                "One export.",
                "exports:read",
                {"200": _json("Export", "The export.")},
                operation_id="getExport",
                parameters=[_ID],
            )
        },
        "/exports/{id}/file": {
            "get": _operation(
                "The export's file, as the browser download (byte ranges; downloading "
                "needs the owner to be an administrator with the export permission now).",
                "exports:read",
                {
                    "200": {
                        "description": "The whole file.",
                        "content": {kind: {} for kind in _FILE_TYPES},
                    },
                    "206": {
                        "description": "The byte range asked for.",
                        "content": {kind: {} for kind in _FILE_TYPES},
                    },
                    "416": {"description": "The byte range is outside the file."},
                },
                operation_id="getExportFile",
                parameters=[
                    _ID,
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/schedules/{id}/latest": {
            "get": _operation(
                "The file of the schedule's latest completed run whose file is still there, "
                "as GET /exports/{id}/file serves it (byte ranges, the same download rights); "
                "Content-Location names that export. 404 when the owner may not see the "
                "schedule (its owner, or an administrator with the export permission) or "
                "it has no such run yet (error code no_completed_run).",
                "exports:read",
                {
                    "200": {
                        "description": "The whole file.",
                        "headers": {"Content-Location": _LOCATION},
                        "content": {kind: {} for kind in _FILE_TYPES},
                    },
                    "206": {
                        "description": "The byte range asked for.",
                        "headers": {"Content-Location": _LOCATION},
                        "content": {kind: {} for kind in _FILE_TYPES},
                    },
                    "416": {"description": "The byte range is outside the file."},
                },
                operation_id="getScheduleLatestFile",
                parameters=[
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "The schedule's id.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    },
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/exports/{id}/events": {
            "get": _operation(
                "Server-sent events: `event: export` with the state "
                "{id, status, stage, attempt, rows, total, percent, error, download_url}, "
                "until the export ends.",
                "exports:read",
                {
                    "200": {
                        "description": "The event stream.",
                        "content": {
                            "text/event-stream": {
                                "schema": {
                                    "type": "object",
                                    "required": ["event", "data"],
                                    "properties": {
                                        "event": {"const": "export"},
                                        "id": {"type": "string"},
                                        "data": {
                                            "type": "string",
                                            "contentMediaType": "application/json",
                                        },
                                    },
                                }
                            }
                        },
                    }
                },
                operation_id="exportEvents",
                parameters=[_ID],
            )
        },
        "/exports/{id}/manifest": {
            "get": _operation(
                "What the file holds: size, SHA-256, rows, columns, and for CSV a CSVW "
                "table description (download rights apply).",
                "exports:read",
                {"200": _json("Manifest", "The manifest.")},
                operation_id="getExportManifest",
                parameters=[_ID],
            )
        },
        "/exports/{id}/cancel": {
            "post": _operation(
                "Cancel a queued or running export (409 once it has ended).",
                "exports:write",
                {"200": _json("Export", "The export, cancelled.")},
                operation_id="cancelExport",
                parameters=[_ID],
                body=_ACTION_BODY,
            )
        },
        "/exports/{id}/changes": {
            "post": _operation(
                "A new export of the changes since this one: its frozen request as of now, "
                "the file holding a Change column (upsert or delete) and Ticket ID. Only "
                "its requester may ask; 409 unless it completed and has not expired.",
                "exports:write",
                {"202": _json("Export", "The new export, queued.", Location=_LOCATION)},
                operation_id="exportChanges",
                parameters=[_ID],
                body=_ACTION_BODY,
            )
        },
        "/exports/{id}/retry": {
            "post": _operation(
                "A new export of a failed or cancelled export's frozen request, as of now.",
                "exports:write",
                {"202": _json("Export", "The new export, queued.", Location=_LOCATION)},
                operation_id="retryExport",
                parameters=[_ID],
                body=_ACTION_BODY,
            )
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token: tex_ and 43 URL-safe characters. Scopes: "
                + ", ".join(SCOPES)
                + ".",
            }
        },
        "responses": {
            "Error": {
                "description": "An error (400, 401, 403, 404, 409, 410, 413, 429, 503).",
                "headers": {
                    "Retry-After": {
                        "description": "On 429: seconds until the token may ask again.",
                        "schema": {"type": "string"},
                    }
                },
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "pattern": "^[a-z][a-z_]*$"},
                            "message": {"type": "string"},
                        },
                    }
                },
            },
            "ViewList": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "label"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "description": "A built-in view's key or a saved view's id.",
                        },
                        "label": {"type": "string"},
                    },
                },
            },
            "Request": {
                "type": "object",
                "additionalProperties": False,
                "description": "A view to export, or `since` alone: the changes since that "
                "earlier export (as POST /exports/{id}/changes). A field given as null is as "
                "if it were not given.",
                "properties": {
                    "view": {
                        "type": ["string", "null"],
                        "description": "A key from GET /views (default all): "
                        + ", ".join(registry.BUILTIN_VIEWS)
                        + ", or a saved view's id.",
                    },
                    "q": {"type": ["string", "null"], "maxLength": registry.MAX_SEARCH},
                    "sort": {"type": ["string", "null"], "enum": [*registry.SORTS, None]},
                    "filters": {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            key: {"type": ["string", "null"]} for key in registry.FILTER_PARAMS
                        },
                    },
                    "format": {"type": ["string", "null"], "enum": [*formats.FORMATS, None]},
                    "since": {
                        "type": "string",
                        "format": "uuid",
                        "description": "An earlier completed export of the token's owner; "
                        "no other field with it.",
                    },
                },
            },
            "Export": {
                "type": "object",
                "required": [
                    "id",
                    "status",
                    "stage",
                    "attempt",
                    "rows",
                    "total",
                    "percent",
                    "error",
                    "format",
                    "view",
                    "requested_at",
                    "as_of",
                    "completed_at",
                    "expires_at",
                    "since",
                    "schedule_id",
                    "download_url",
                ],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "status": {"type": "string", "enum": [s.value for s in Status]},
                    "stage": {
                        "type": ["string", "null"],
                        "enum": ["counting", "exporting", "storing", None],
                    },
                    "attempt": {"type": "integer", "minimum": 1},
                    "rows": {"type": "integer", "minimum": 0},
                    "total": {"type": ["integer", "null"], "minimum": 0},
                    "percent": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                    "error": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["code", "message"],
                                "properties": {
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        ]
                    },
                    "format": {"type": "string", "enum": list(formats.FORMATS)},
                    "view": {"type": ["string", "null"]},
                    "requested_at": {"type": "string", "format": "date-time"},
                    "as_of": {"type": "string", "format": "date-time"},
                    "completed_at": _NULLABLE_TIME,
                    "expires_at": {"type": "string", "format": "date-time"},
                    "since": {
                        "type": ["string", "null"],
                        "description": "The earlier export a file of changes is measured "
                        "from; null for a full export.",
                    },
                    "schedule_id": {
                        "type": ["integer", "null"],
                        "description": "The schedule this export is a run of; null when it "
                        "is not one, or its schedule was deleted.",
                    },
                    "download_url": {
                        "type": ["string", "null"],
                        "description": "This API's …/file URL; null when the owner may not "
                        "download it now.",
                    },
                },
            },
            "ExportPage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Export"}},
                    "next": {
                        "type": ["string", "null"],
                        "description": "The cursor of the next page; null on the last.",
                    },
                },
            },
            "Column": {
                "type": "object",
                "required": ["name", "label", "type"],
                "properties": {
                    "name": {"type": "string"},
                    "label": {"type": "string"},
                    "type": {
                        "type": "string",
                        "enum": ["integer", "datetime", "boolean", "string"],
                    },
                },
            },
            "Manifest": {
                "type": "object",
                "required": [
                    "export_id",
                    "view",
                    "request",
                    "format",
                    "file_name",
                    "bytes",
                    "sha256",
                    "rows",
                    "as_of",
                    "requested_at",
                    "completed_at",
                    "since",
                    "columns",
                ],
                "properties": {
                    "export_id": {"type": "string", "format": "uuid"},
                    "view": {"type": ["string", "null"]},
                    "request": {"type": ["object", "null"]},
                    "format": {"type": "string", "enum": list(formats.FORMATS)},
                    "file_name": {"type": "string"},
                    "bytes": {"type": "integer", "minimum": 0},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "rows": {"type": "integer", "minimum": 0},
                    "as_of": {"type": "string", "format": "date-time"},
                    "requested_at": {"type": "string", "format": "date-time"},
                    "completed_at": _NULLABLE_TIME,
                    "since": {
                        "type": ["string", "null"],
                        "description": "The earlier export a file of changes is measured "
                        "from; null for a full export.",
                    },
                    "columns": {"type": "array", "items": {"$ref": "#/components/schemas/Column"}},
                    "csvw": {
                        "type": "object",
                        "description": "CSV only: a CSV on the Web table description.",
                    },
                },
            },
        },
    },
}
