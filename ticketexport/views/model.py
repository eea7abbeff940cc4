"""View definitions as values, and the strict parser that turns untrusted JSON into them."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ticketexport.domain.errors import Invalid, NotFound
from ticketexport.views import registry
from ticketexport.views.registry import FieldType

DEV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
MAX_BIGINT = 2**63 - 1


class ViewInputError(Invalid):
    """Untrusted view input is malformed; the message names the problem and is safe to show."""


class ViewNotFound(NotFound):
    """The saved view does not exist or the acting user may not see it."""

    default_message = "That saved view does not exist or you cannot see it."


@dataclasses.dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: Any


@dataclasses.dataclass(frozen=True)
class SortLevel:
    column: str
    descending: bool


@dataclasses.dataclass(frozen=True)
class ViewDefinition:
    name: str
    conditions_and: tuple[Condition, ...]
    conditions_or: tuple[Condition, ...]
    columns: tuple[str, ...]
    sort: tuple[SortLevel, ...]


@dataclasses.dataclass(frozen=True)
class ListRequest:
    """The validated query parameters of the list page (and of an export request)."""

    view: str
    q: str
    sort: str | None
    filters: Mapping[str, str]
    page: str | None


@dataclasses.dataclass(frozen=True)
class ResolvedView:
    """A built-in or saved view, ready to compile."""

    key: str
    name: str
    definition: ViewDefinition
    saved_view_id: int | None
    builtin: str | None


def shown(value: object, limit: int = 40) -> str:
    """A short, printable rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_text(value: object, what: str, *, max_length: int, allow_empty: bool = False) -> str:
    """A string without NUL bytes and within the length limit."""
    if not isinstance(value, str):
        raise ViewInputError(f"{what} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise ViewInputError(f"{what} must not contain NUL characters")
    if len(value) > max_length:
        raise ViewInputError(f"{what} is too long ({len(value)} characters, at most {max_length})")
    if not allow_empty and not value.strip():
        raise ViewInputError(f"{what} must not be empty")
    return value


def parse_int(
    value: object, what: str, *, minimum: int = -MAX_BIGINT, maximum: int = MAX_BIGINT
) -> int:
    """A whole number given as an int or as decimal digits."""
    if isinstance(value, bool):
        raise ViewInputError(f"{what} must be a whole number, not {shown(value)}")
    if isinstance(value, str):
        if not re.fullmatch(r"-?[0-9]{1,19}", value.strip()):
            raise ViewInputError(f"{what} must be a whole number, not {shown(value)}")
        value = int(value.strip())
    if not isinstance(value, int):
        raise ViewInputError(f"{what} must be a whole number, not {shown(value)}")
    if not minimum <= value <= maximum:
        raise ViewInputError(f"{what} must be between {minimum} and {maximum}, not {value}")
    return value


def parse_dev_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not DEV_NAME.fullmatch(value):
        raise ViewInputError(
            f"{what} must be a developer name like 'in_progress', not {shown(value)}"
        )
    return value


def _parse_ids(value: object, what: str, field_type: FieldType, *, single: bool) -> list[Any]:
    items: Sequence[object]
    if isinstance(value, list | tuple):
        items = value
    elif isinstance(value, str | int) and not isinstance(value, bool):
        items = [value]
    else:
        raise ViewInputError(f"{what} must be a list of values, not {shown(value)}")
    if not items:
        raise ViewInputError(f"{what} needs at least one value")
    if len(items) > registry.MAX_IDS:
        raise ViewInputError(f"{what} has too many values (at most {registry.MAX_IDS})")
    if single and len(items) != 1:
        raise ViewInputError(f"{what} takes exactly one value")
    result: list[Any] = []
    for item in items:
        parsed: Any
        if field_type in (FieldType.STATUS, FieldType.PRIORITY):
            parsed = parse_dev_name(item, what)
        else:
            parsed = parse_int(item, what, minimum=1)
        if parsed not in result:
            result.append(parsed)
    return result


def parse_value(field: registry.Field, op: registry.Operator, value: object) -> Any:
    """The normalised, JSON-able value for one condition, or ViewInputError."""
    what = f"the value of '{field.key} {op.key}'"
    kind = op.value_kind
    if kind == "none":
        if value not in (None, "", []):
            raise ViewInputError(f"'{field.key} {op.key}' takes no value, got {shown(value)}")
        return None
    if kind == "text":
        return check_text(value, what, max_length=registry.MAX_TEXT_VALUE)
    if kind == "number":
        return parse_int(value, what)
    if kind == "date":
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ViewInputError(f"{what} must be a date YYYY-MM-DD, not {shown(value)}")
        try:
            day = datetime.date.fromisoformat(value)
        except ValueError:
            raise ViewInputError(f"{what} is not a real date: {shown(value)}") from None
        if not 1900 <= day.year <= 9998:
            raise ViewInputError(f"{what} must be a date between 1900 and 9998")
        return day.isoformat()
    if kind == "relative":
        if not isinstance(value, Mapping) or set(value) != {"amount", "unit"}:
            raise ViewInputError(f"{what} must be {{'amount': N, 'unit': 'hours|days|months'}}")
        amount = parse_int(
            value["amount"], what + " amount", minimum=1, maximum=registry.MAX_RELATIVE
        )
        unit = value["unit"]
        if unit not in registry.RELATIVE_UNITS:
            raise ViewInputError(f"{what} unit must be hours, days or months, not {shown(unit)}")
        return {"amount": amount, "unit": unit}
    if kind == "preset":
        if value not in registry.PRESETS:
            raise ViewInputError(
                f"{what} must be one of {', '.join(registry.PRESETS)}, not {shown(value)}"
            )
        return value
    if kind == "ids":
        return _parse_ids(value, what, field.type, single=op.key in ("is", "is_not"))
    if kind == "status_type":
        if value not in ("open", "closed"):
            raise ViewInputError(f"{what} must be open or closed, not {shown(value)}")
        return value
    if kind == "priority_ref":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        return parse_dev_name(value, what)
    raise AssertionError(f"unhandled value kind {kind}")  # registry and parser disagree


def parse_condition(data: object, where: str) -> Condition:
    if not isinstance(data, Mapping):
        raise ViewInputError(f"{where} must be an object with field, operator and value")
    unknown = set(data) - {"field", "operator", "value"}
    if unknown:
        raise ViewInputError(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    field_key = data.get("field")
    if not isinstance(field_key, str) or field_key not in registry.FIELDS:
        raise ViewInputError(f"{where}: unknown field {shown(field_key)}")
    field = registry.FIELDS[field_key]
    op_key = data.get("operator")
    op = registry.operator(field.type, op_key) if isinstance(op_key, str) else None
    if op is None:
        raise ViewInputError(f"{where}: field '{field_key}' has no operator {shown(op_key)}")
    return Condition(field_key, op.key, parse_value(field, op, data.get("value")))


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list | tuple):
        raise ViewInputError(f"'{key}' must be a list")
    return list(value)


def parse_definition(data: Mapping[str, Any]) -> ViewDefinition:
    """Validate the JSON shape of a saved view; ViewInputError names the first problem."""
    if not isinstance(data, Mapping):
        raise ViewInputError("a view definition must be an object")
    unknown = set(data) - {"name", "conditions_and", "conditions_or", "columns", "sort"}
    if unknown:
        raise ViewInputError(
            f"unknown keys in the view definition: {', '.join(sorted(map(str, unknown)))}"
        )
    name = check_text(data.get("name"), "the view name", max_length=100).strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ViewInputError("the view name must not contain control characters")
    groups: list[tuple[Condition, ...]] = []
    for key in ("conditions_and", "conditions_or"):
        items = _list(data, key)
        if len(items) > registry.MAX_CONDITIONS:
            raise ViewInputError(f"'{key}' has more than {registry.MAX_CONDITIONS} conditions")
        groups.append(tuple(parse_condition(item, f"{key}[{i}]") for i, item in enumerate(items)))
    columns = _list(data, "columns")
    if not 1 <= len(columns) <= registry.MAX_COLUMNS:
        raise ViewInputError(f"a view needs between 1 and {registry.MAX_COLUMNS} columns")
    for column in columns:
        if not isinstance(column, str) or column not in registry.COLUMNS:
            raise ViewInputError(f"unknown column {shown(column)}")
    if len(set(columns)) != len(columns):
        raise ViewInputError("a column appears twice in the view")
    sort_items = _list(data, "sort")
    if not 1 <= len(sort_items) <= registry.MAX_SORT_LEVELS:
        raise ViewInputError(f"a view needs between 1 and {registry.MAX_SORT_LEVELS} sort levels")
    sort: list[SortLevel] = []
    for i, item in enumerate(sort_items):
        if not isinstance(item, Mapping) or set(item) - {"column", "direction"}:
            raise ViewInputError(f"sort[{i}] must be an object with column and direction")
        column = item.get("column")
        if not isinstance(column, str) or column not in registry.SORTABLE_COLUMNS:
            raise ViewInputError(f"sort[{i}]: column {shown(column)} cannot be sorted on")
        direction = item.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise ViewInputError(
                f"sort[{i}]: direction must be asc or desc, not {shown(direction)}"
            )
        if any(level.column == column for level in sort):
            raise ViewInputError(f"sort[{i}]: column '{column}' is sorted on twice")
        sort.append(SortLevel(column, direction == "desc"))
    return ViewDefinition(name, groups[0], groups[1], tuple(columns), tuple(sort))


def definition_to_json(d: ViewDefinition) -> dict[str, Any]:
    """The JSON shape parse_definition accepts; a round trip gives an equal definition."""

    def conditions(items: tuple[Condition, ...]) -> list[dict[str, Any]]:
        return [{"field": c.field, "operator": c.operator, "value": c.value} for c in items]

    return {
        "name": d.name,
        "conditions_and": conditions(d.conditions_and),
        "conditions_or": conditions(d.conditions_or),
        "columns": list(d.columns),
        "sort": [
            {"column": s.column, "direction": "desc" if s.descending else "asc"} for s in d.sort
        ],
    }
