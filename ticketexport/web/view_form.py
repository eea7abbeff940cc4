"""The saved-view editor's form: its state for re-rendering, and its parsing into a view."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from multidict import MultiDictProxy

from ticketexport.views import registry
from ticketexport.views.model import (
    Condition,
    ViewDefinition,
    ViewInputError,
    parse_condition,
    parse_definition,
    shown,
)
from ticketexport.views.registry import FieldType

GROUPS = {"and": "All of these conditions", "or": "Any of these conditions"}
_GROUP_KEYS = {"and": "conditions_and", "or": "conditions_or"}
_GROUP_WHERE = {"and": "'All of' condition", "or": "'Any of' condition"}
# Blank rows offered below the filled ones; the script reveals them one at a time.
MIN_ROWS = 8
SPARE_ROWS = 2
SORT_ROWS = registry.MAX_SORT_LEVELS
ID_TYPES = (FieldType.PERSON, FieldType.TEAM, FieldType.STATUS, FieldType.PRIORITY)
MAX_FORM_VALUE = 10_000


@dataclasses.dataclass
class RowState:
    """One condition row exactly as typed, so a rejected form comes back unchanged."""

    field: str = ""
    op: str = ""
    text: str = ""
    number: str = ""
    date: str = ""
    amount: str = ""
    unit: str = "days"
    preset: str = ""
    ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    status_type: str = ""
    priority_ref: str = ""


@dataclasses.dataclass
class ColumnState:
    key: str
    label: str
    checked: bool
    order: str


@dataclasses.dataclass
class FormState:
    name: str
    system_wide: bool
    rows: dict[str, list[RowState]]
    columns: list[ColumnState]
    sort: list[tuple[str, str]]


def _padded(rows: list[RowState]) -> list[RowState]:
    count = min(max(MIN_ROWS, len(rows) + SPARE_ROWS), registry.MAX_CONDITIONS)
    return rows + [RowState() for _ in range(count - len(rows))]


def _row_from_condition(condition: Condition) -> RowState:
    field = registry.FIELDS[condition.field]
    op = registry.operator(field.type, condition.operator)
    row = RowState(field=condition.field, op=condition.operator)
    kind = op.value_kind if op else "none"
    value = condition.value
    if kind == "text":
        row.text = str(value)
    elif kind == "number":
        row.number = str(value)
    elif kind == "date":
        row.date = str(value)
    elif kind == "relative" and isinstance(value, Mapping):
        row.amount, row.unit = str(value.get("amount", "")), str(value.get("unit", "days"))
    elif kind == "preset":
        row.preset = str(value)
    elif kind == "ids":
        row.ids = {field.type.value: [str(v) for v in value]}
    elif kind == "status_type":
        row.status_type = str(value)
    elif kind == "priority_ref":
        row.priority_ref = str(value)
    return row


def _columns_state(
    checked: list[str], orders: Mapping[str, str] | None = None
) -> list[ColumnState]:
    result = []
    for key, column in registry.COLUMNS.items():
        if orders is not None:
            order = orders.get(key, "")
        else:
            order = str(checked.index(key) + 1) if key in checked else ""
        result.append(ColumnState(key, column.label, key in checked, order))
    # Chosen columns first, in their order, so the form reads like the list will look.
    chosen = sorted((c for c in result if c.checked), key=lambda c: _order_key(c.order))
    return chosen + [c for c in result if not c.checked]


def _order_key(order: str) -> tuple[int, int]:
    stripped = order.strip()
    if stripped.isdigit() and len(stripped) <= 6:
        return (0, int(stripped))
    return (1, 0)


def blank_state() -> FormState:
    return FormState(
        name="",
        system_wide=False,
        rows={group: _padded([]) for group in GROUPS},
        columns=_columns_state(list(registry.DEFAULT_COLUMNS)),
        sort=_padded_sort([("created_at", "desc")]),
    )


def _padded_sort(levels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return levels + [("", "asc")] * (SORT_ROWS - len(levels))


def state_from_definition(definition: ViewDefinition, *, system_wide: bool) -> FormState:
    return FormState(
        name=definition.name,
        system_wide=system_wide,
        rows={
            "and": _padded([_row_from_condition(c) for c in definition.conditions_and]),
            "or": _padded([_row_from_condition(c) for c in definition.conditions_or]),
        },
        columns=_columns_state(list(definition.columns)),
        sort=_padded_sort([(s.column, "desc" if s.descending else "asc") for s in definition.sort]),
    )


def _get(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _get_all(form: MultiDictProxy[Any], name: str) -> list[str]:
    return [v for v in form.getall(name, []) if isinstance(v, str)]


def _row_count(form: MultiDictProxy[Any], group: str) -> int:
    highest = -1
    prefix = f"{group}-"
    for key in form:
        if key.startswith(prefix):
            index = key[len(prefix) :].split("-", 1)[0]
            if index.isdigit() and len(index) <= 3:
                highest = max(highest, int(index))
    return highest + 1


def state_from_form(form: MultiDictProxy[Any]) -> FormState:
    """The submitted form as typed (bounded, so a hostile post cannot blow up the page)."""
    for key in form:
        value = form.get(key)
        if isinstance(value, str) and len(value) > MAX_FORM_VALUE:
            raise ViewInputError(
                f"the form field {shown(key)} is too long ({len(value)} characters)"
            )
    rows: dict[str, list[RowState]] = {}
    for group in GROUPS:
        count = _row_count(form, group)
        if count > registry.MAX_CONDITIONS:
            raise ViewInputError(
                f"{GROUPS[group].lower()}: at most {registry.MAX_CONDITIONS} conditions"
            )
        group_rows = []
        for i in range(count):
            p = f"{group}-{i}-"
            group_rows.append(
                RowState(
                    field=_get(form, p + "field"),
                    op=_get(form, p + "op"),
                    text=_get(form, p + "text"),
                    number=_get(form, p + "number"),
                    date=_get(form, p + "date"),
                    amount=_get(form, p + "amount"),
                    unit=_get(form, p + "unit") or "days",
                    preset=_get(form, p + "preset"),
                    ids={t.value: _get_all(form, f"{p}ids-{t.value}") for t in ID_TYPES},
                    status_type=_get(form, p + "status_type"),
                    priority_ref=_get(form, p + "priority_ref"),
                )
            )
        # Keep typed rows where they were; only trailing blanks are trimmed and re-padded.
        while group_rows and not group_rows[-1].field:
            group_rows.pop()
        rows[group] = _padded(group_rows)
    checked = _get_all(form, "col")
    orders = {key: _get(form, f"order-{key}") for key in registry.COLUMNS}
    sort = [(_get(form, f"sort-{i}-column"), _get(form, f"sort-{i}-dir")) for i in range(SORT_ROWS)]
    return FormState(
        name=_get(form, "name"),
        system_wide=_get(form, "system_wide") == "1",
        rows=rows,
        columns=_columns_state(checked, orders),
        sort=sort,
    )


def _row_value(row: RowState, field: registry.Field, kind: str) -> Any:
    if kind == "none":
        return None
    if kind == "text":
        return row.text
    if kind == "number":
        return row.number
    if kind == "date":
        return row.date
    if kind == "relative":
        return {"amount": row.amount, "unit": row.unit}
    if kind == "preset":
        return row.preset
    if kind == "ids":
        return row.ids.get(field.type.value, [])
    if kind == "status_type":
        return row.status_type
    if kind == "priority_ref":
        return row.priority_ref
    return None


def definition_from_state(state: FormState, form: MultiDictProxy[Any]) -> ViewDefinition:
    """Validate the form into a view definition; ViewInputError names the first problem."""
    data: dict[str, Any] = {"name": state.name}
    for group, rows in state.rows.items():
        conditions = []
        for i, row in enumerate(rows):
            if not row.field:
                continue
            where = f"{_GROUP_WHERE[group]} {i + 1}"
            field = registry.FIELDS.get(row.field)
            op = registry.operator(field.type, row.op) if field else None
            value = _row_value(row, field, op.value_kind) if field and op else None
            # parse_condition names an unknown field or operator and checks the value.
            condition = parse_condition(
                {"field": row.field, "operator": row.op, "value": value}, where
            )
            conditions.append(
                {"field": condition.field, "operator": condition.operator, "value": condition.value}
            )
        data[_GROUP_KEYS[group]] = conditions
    checked = _get_all(form, "col")
    for key in checked:
        if key not in registry.COLUMNS:
            raise ViewInputError(f"unknown column {shown(key)}")
    if len(set(checked)) != len(checked):
        raise ViewInputError("a column was chosen twice")
    orders: dict[str, int] = {}
    for key in checked:
        raw = _get(form, f"order-{key}").strip()
        if not raw:
            continue
        if not raw.isdigit() or len(raw) > 3:
            raise ViewInputError(
                f"the position of column '{registry.COLUMNS[key].label}' must be a number "
                f"from 1 to 999, not {shown(raw)}"
            )
        orders[key] = int(raw)
    registry_order = list(registry.COLUMNS)
    data["columns"] = sorted(
        checked,
        key=lambda k: (k not in orders, orders.get(k, 0), registry_order.index(k)),
    )
    sort = []
    for i, (column, direction) in enumerate(state.sort):
        if not column:
            continue
        if direction not in ("asc", "desc"):
            raise ViewInputError(
                f"sort level {i + 1}: direction must be ascending or descending, "
                f"not {shown(direction)}"
            )
        sort.append({"column": column, "direction": direction})
    data["sort"] = sort
    if not sort:
        raise ViewInputError("choose at least one sort level")
    if not checked:
        raise ViewInputError("choose at least one column")
    return parse_definition(data)


def editor_choices() -> dict[str, Any]:
    """Field, operator and column choices for the template, straight from the registry."""
    return {
        "fields": list(registry.FIELDS.values()),
        "fields_by_key": registry.FIELDS,
        "operators": registry.OPERATORS,
        "field_types": list(FieldType),
        "presets": registry.PRESETS,
        "units": registry.RELATIVE_UNITS,
        "sortable": [(k, registry.COLUMNS[k].label) for k in registry.SORTABLE_COLUMNS],
        "groups": GROUPS,
        "id_types": [t.value for t in ID_TYPES],
    }
