"""The SQL compiler and the independent Python reference agree on rows, order and values."""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.support import reference_views, view_data
from tests.support.clusters import icu_server
from tests.support.databases import drop_database, scratch_database, with_dbname
from ticketexport import db
from ticketexport.domain.actor import Actor
from ticketexport.exports import formats
from ticketexport.views import compiler, conditions, cursor, registry
from ticketexport.views.model import (
    ListRequest,
    ResolvedView,
    definition_to_json,
    parse_definition,
)
from ticketexport.views.scope import RuleIds
from ticketexport.views.service import builtin_view, parse_list_request

ACTOR = Actor(view_data.ACTOR_ID, is_admin=False, permissions=0)
ALL_PAIRS = {
    (field.key, op.key)
    for field in registry.FIELDS.values()
    for op in registry.OPERATORS[field.type]
}

Pick = Callable[[Sequence[Any]], Any]


@pytest.fixture(scope="module")
def dataset(server_url: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    with (
        scratch_database(server_url, template_db) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        with conn.transaction():
            view_data.build(conn)
        yield conn


@pytest.fixture(scope="module")
def reference(dataset: psycopg.Connection[Any]) -> reference_views.Evaluator:
    rows = reference_views.fetch(dataset)
    return reference_views.Evaluator(rows, now=view_data.NOW, tz=view_data.TZ, actor_id=ACTOR.id)


@pytest.fixture(scope="module")
def pools(reference: reference_views.Evaluator) -> dict[str, list[str]]:
    return make_pools(reference)


def make_pools(reference: reference_views.Evaluator) -> dict[str, list[str]]:
    """Text values worth searching for, per text field and for the search box."""
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    pools: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {
        key: [] for key, f in registry.FIELDS.items() if f.type == "text"
    }
    for row in reference.rows:
        for key in samples:
            if key == "tags":
                samples[key].extend(row["tags"])
            else:
                samples[key].append(reference.text_value(row, key))
    for key, values in samples.items():
        chosen: list[str] = []
        for value in values:
            if not value.strip():
                continue
            start = rng.randrange(len(value))
            end = rng.randrange(start, len(value)) + 1
            for candidate in (value, value[:end], value[start:], value[start:end], value.upper()):
                if candidate.strip():
                    chosen.append(candidate)
        chosen.extend(["zzz-nowhere", "%", "_", "\\", "'"])
        pools[key] = sorted(set(chosen))
    search: set[str] = set()
    for row in reference.rows[:120]:
        for column in reference.SEARCHED:
            text = reference.shown(row, column)
            if text.strip():
                start = rng.randrange(len(text))
                search.add(text[start : start + rng.randint(1, 6)].strip() or text)
    search.update(["1", "2", ", ", "%", "_", "nothing-matches-this"])
    pools["search"] = sorted(s for s in search if s.strip())
    return pools


DAYS = [
    "2025-11-01",
    "2025-11-02",
    "2025-11-03",
    "2026-02-28",
    "2026-03-01",
    "2026-03-07",
    "2026-03-08",
    "2026-03-09",
    "2026-03-10",
    "2025-12-24",
]


def value_for(
    field: registry.Field, op: registry.Operator, pick: Pick, pools: dict[str, list[str]]
) -> Any:
    kind = op.value_kind
    if kind == "none":
        return None
    if kind == "text":
        return pick(pools[field.key])
    if kind == "number":
        return pick(
            [0, 1, 2, 17, 30, 100, 225, 449, 450, 451] if field.key == "id" else [1, 5, 15, 30, 31]
        )
    if kind == "date":
        return pick(DAYS)
    if kind == "relative":
        return {"amount": pick([1, 2, 3, 7, 30, 45]), "unit": pick(["hours", "days", "months"])}
    if kind == "preset":
        return pick(registry.PRESETS)
    if kind == "status_type":
        return pick(["open", "closed"])
    if kind == "priority_ref":
        return pick(["urgent", "high", "normal", "low"])
    if kind == "ids":
        if field.type == "status":
            options: list[Any] = [
                "new",
                "open",
                "pending",
                "on_hold",
                "resolved",
                "closed",
                "waiting",
                "ghost",
            ]
        elif field.type == "priority":
            options = ["urgent", "high", "normal", "low"]
        elif field.type == "team":
            options = [1, 2, 3, 4, 99]
        else:
            options = [1, 2, 3, 4, 5, 6, 99]
        if op.key in ("is", "is_not"):
            return [pick(options)]
        count = pick([1, 2, 3])
        return list(dict.fromkeys(pick(options) for _ in range(count)))
    raise AssertionError(kind)


def random_condition(pick: Pick, pools: dict[str, list[str]]) -> dict[str, Any]:
    field = registry.FIELDS[pick(sorted(registry.FIELDS))]
    op = pick(registry.OPERATORS[field.type])
    return {"field": field.key, "operator": op.key, "value": value_for(field, op, pick, pools)}


def sql_rows(
    conn: psycopg.Connection[Any],
    view: ResolvedView,
    params: dict[str, str],
    *,
    grouped: bool = False,
) -> list[tuple[int, list[str]]]:
    request = parse_list_request(params)
    compiled = compiler.compile_list(
        view,
        request,
        ACTOR,
        now=view_data.NOW,
        tz=view_data.TZ,
        # a limit above the dataset's size: the grouped plan then returns every row
        limit=100_000 if grouped else None,
        grouped=grouped,
    )
    rows = conn.execute(compiled.statement, compiled.params).fetchall()
    width = len(compiled.columns)
    return [(row[width], list(row[:width])) for row in rows]


def check(
    conn: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    *,
    builtin: str | None,
    definition: dict[str, Any],
    params: dict[str, str],
    page_size: int | None = None,
    seed_hint: str = "",
) -> list[tuple[int, list[str]]]:
    """Fails unless the compiler's rows (all at once, and page by page when `page_size`
    is given) are the reference's; returns them."""
    parsed = parse_definition(definition)
    if builtin is not None:
        view = builtin_view(builtin)
    else:
        view = ResolvedView(
            key="1", name=parsed.name, definition=parsed, saved_view_id=1, builtin=None
        )
    got = sql_rows(conn, view, params)
    request = parse_list_request(params)
    if request.sort in ("priority", "status", "assignee"):
        # The group-by-group plan large views use must give the very same rows.
        assert sql_rows(conn, view, params, grouped=True) == got
    expected = reference.run(
        builtin=builtin,
        definition=definition_to_json(view.definition),
        filters=request.filters,
        q=request.q,
        sort=request.sort,
    )
    if got == expected and page_size is not None:
        # Small pages where the view is small: at most about a dozen pages a view.
        got = paged_rows(conn, view, params, max(page_size, -(-len(expected) // 12)))
        seed_hint = f"page size {page_size} {seed_hint}"
    if got != expected:
        got_ids = [r[0] for r in got]
        want_ids = [r[0] for r in expected]
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        pytest.fail(
            f"compiler and reference disagree ({seed_hint}) for builtin={builtin} "
            f"definition={definition} "
            f"params={params}: {len(got_ids)} vs {len(want_ids)} rows; first difference at "
            f"{first}: sql={got[first : first + 2]} reference={expected[first : first + 2]}; "
            f"only in sql={sorted(set(got_ids) - set(want_ids))[:10]} "
            f"only in reference={sorted(set(want_ids) - set(got_ids))[:10]}"
        )
    return got


def saved(
    conditions_and: list[Any], conditions_or: list[Any], columns: list[str], sort: list[Any]
) -> dict[str, Any]:
    return {
        "name": "generated",
        "conditions_and": conditions_and,
        "conditions_or": conditions_or,
        "columns": columns,
        "sort": sort,
    }


EVERY_COLUMN = list(registry.COLUMNS)


# Every column shown, in views of at most MAX_COLUMNS that take turns.
CHUNKS = view_data.column_chunks(EVERY_COLUMN, registry.MAX_COLUMNS)


def test_every_field_and_operator_alone(
    dataset: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    pools: dict[str, list[str]],
) -> None:
    rng = random.Random(11)  # noqa: S311 - reproducible test data, not secrets
    matched_some = 0
    checks = 0
    for field_key, op_key in sorted(ALL_PAIRS):
        field = registry.FIELDS[field_key]
        op = registry.operator(field.type, op_key)
        assert op is not None
        values = [value_for(field, op, rng.choice, pools) for _ in range(3)]
        if op.value_kind == "preset":
            values = list(registry.PRESETS)
        elif op.value_kind == "relative":
            values = [{"amount": a, "unit": u} for a in (1, 2, 30) for u in registry.RELATIVE_UNITS]
        for value in values:
            condition = {"field": field_key, "operator": op_key, "value": value}
            # the column chunks take turns, so each stays one view of at most MAX_COLUMNS
            columns = CHUNKS[checks % len(CHUNKS)]
            checks += 1
            rows = check(
                dataset,
                reference,
                builtin=None,
                definition=saved([condition], [], columns, [{"column": "id", "direction": "asc"}]),
                params={},
            )
            matched_some += 0 < len(rows) < len(reference.rows)
    # The generated values must split the data, or the agreement above proves little.
    assert matched_some > len(ALL_PAIRS)


@pytest.mark.parametrize("builtin", list(registry.BUILTIN_VIEWS))
def test_builtin_views_every_sort_and_snooze_filter(
    dataset: psycopg.Connection[Any], reference: reference_views.Evaluator, builtin: str
) -> None:
    sizes = set()
    for sort in [*registry.SORTS, ""]:
        for snoozed in ["", "exclude", "only", "any"]:
            rows = check(
                dataset,
                reference,
                builtin=builtin,
                definition=definition_to_json(builtin_view(builtin).definition),
                params={"view": builtin, "sort": sort, "snoozed": snoozed},
            )
            sizes.add(len(rows))
    assert max(sizes) > 0


@pytest.mark.parametrize("builtin", list(registry.BUILTIN_VIEWS))
def test_builtin_views_searched_count_given_the_rules_lookups(
    dataset: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    pools: dict[str, list[str]],
    builtin: str,
) -> None:
    """A searched count given the rules' lookups as values (the open and closed statuses,
    the user's teams: what a list page hands its count for a trigram-long term) counts the
    reference's rows, as the count that reads them in its own statement does; with the
    search's lookup matches found beforehand as well (as a list page finds them), or not."""
    row = dataset.execute(db.q("views_rule_ids"), {"user_id": ACTOR.id}).fetchone()
    assert row is not None
    rule_ids = RuleIds(open=tuple(row[0]), closed=tuple(row[1]), teams=tuple(row[2]))
    # The data gives every rule something to tell apart.
    assert rule_ids.open
    assert rule_ids.closed
    assert rule_ids.teams
    view = builtin_view(builtin)
    terms = [t for t in pools["search"] if len(t) >= conditions.TRIGRAM_TERM][::5]
    counts = set()
    contacts_found = 0
    for term in terms:
        request = parse_list_request({"view": builtin, "q": term})
        expected = reference.run(
            builtin=builtin,
            definition=definition_to_json(view.definition),
            filters=request.filters,
            q=request.q,
            sort=request.sort,
        )
        found = _search_matches(dataset, view, request)
        for known in (rule_ids, None):
            for matches in (found, None):
                for cap in (registry.COUNT_CAP, 3):
                    statement, params = compiler.compile_count(
                        view,
                        request,
                        ACTOR,
                        now=view_data.NOW,
                        tz=view_data.TZ,
                        cap=cap,
                        rule_ids=known,
                        search_matches=matches,
                    )
                    counted = dataset.execute(statement, params).fetchone()
                    assert counted == (min(len(expected), cap + 1),), (term, known, matches, cap)
        counts.add(len(expected))
        contacts_found += bool(found and found.get("contact"))
    # Terms that some rows hold and some do not, or the agreement proves little.
    assert len(counts) > 1, counts
    # Some terms are contacts' names: the team's search reads those through its own index.
    assert contacts_found > 0


def _search_matches(
    conn: psycopg.Connection[Any], view: ResolvedView, request: ListRequest
) -> dict[str, list[int]] | None:
    """The search's lookup matches by column, found as a list page finds them."""
    found = conditions.search_lookups(view, request, ACTOR, now=view_data.NOW, tz=view_data.TZ)
    if found is None:
        return None
    statement, params, keys = found
    row = conn.execute(statement, params).fetchone()
    assert row is not None  # a SELECT of arrays has one row
    return {key: list(ids) for key, ids in zip(keys, row, strict=True)}


def test_every_column_sorts_both_ways(
    dataset: psycopg.Connection[Any], reference: reference_views.Evaluator
) -> None:
    for i, column in enumerate(registry.SORTABLE_COLUMNS):
        for direction in ("asc", "desc"):
            columns = CHUNKS[i % len(CHUNKS)]
            check(
                dataset,
                reference,
                builtin=None,
                definition=saved([], [], columns, [{"column": column, "direction": direction}]),
                params={"sort": "view"},
            )


def test_export_query_matches_reference_with_formula_guard(
    dataset: psycopg.Connection[Any], reference: reference_views.Evaluator
) -> None:
    for columns in CHUNKS:
        _export_matches_reference(dataset, reference, columns)


def _export_matches_reference(
    dataset: psycopg.Connection[Any], reference: reference_views.Evaluator, columns: list[str]
) -> None:
    definition = saved([], [], columns, [{"column": "title", "direction": "desc"}])
    parsed = parse_definition(definition)
    view = ResolvedView(key="1", name="x", definition=parsed, saved_view_id=1, builtin=None)
    request = parse_list_request({"q": "a"})
    statement = formats.CSV.select(
        compiler.compile_export(
            view, request, ACTOR, view_data.NOW, view_data.TZ, snapshot=None
        ).rows
    )
    # empty values are NULL in the export so that COPY writes an empty cell
    got = [[v or "" for v in row] for row in dataset.execute(statement).fetchall()]
    expected = reference.run(
        builtin=None, definition=definition_to_json(parsed), filters={}, q="a", sort=None
    )

    assert got == [[reference_views.csv_guard(v) for v in values] for _, values in expected]
    assert any(v.startswith("'=") for row in got for v in row)


# The property test searches: CI runs a fixed seed (reproducible), and every run also runs
# a rotating one, printed in any failure; TICKETEXPORT_VIEW_SEED=N replays that one.
FIXED_SEED = 20260309
ROTATING_SEED = int(os.environ.get("TICKETEXPORT_VIEW_SEED") or secrets.randbits(32))
EXAMPLES = int(os.environ.get("TICKETEXPORT_VIEW_EXAMPLES") or 120)

# Text values are drawn from the data (whole values, pieces, upper-cased) and generated
# from an alphabet that holds the characters whose case mapping is not one to one.
ALPHABET = "aAeEiIİıoOsSßẞσςΣοΟδΔéÉиИ %_\\'-=,1 "
DAY_RANGE = (datetime.date(2025, 9, 1), datetime.date(2026, 5, 1))


def generated_value(
    field: registry.Field, op: registry.Operator, data: st.DataObject, pools: dict[str, list[str]]
) -> Any:
    kind = op.value_kind
    if kind == "text":
        return data.draw(
            st.one_of(
                st.sampled_from(pools[field.key]),
                st.text(ALPHABET, min_size=1, max_size=4).filter(str.strip),
            )
        )
    if kind == "number":
        top = 470 if field.key == "id" else 35
        return data.draw(st.integers(-2, top))
    if kind == "date":
        return data.draw(st.dates(*DAY_RANGE)).isoformat()
    if kind == "relative":
        return {
            "amount": data.draw(st.integers(1, registry.MAX_RELATIVE)),
            "unit": data.draw(st.sampled_from(registry.RELATIVE_UNITS)),
        }

    def pick(options: Sequence[Any]) -> Any:
        return data.draw(st.sampled_from(list(options)))

    return value_for(field, op, pick, pools)


def generated_condition(
    data: st.DataObject, pools: dict[str, list[str]], pairs: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    field_key, op_key = data.draw(st.sampled_from(pairs))
    field = registry.FIELDS[field_key]
    op = registry.operator(field.type, op_key)
    assert op is not None
    value = generated_value(field, op, data, pools)
    return {"field": field_key, "operator": op_key, "value": value}


FILTER_VALUES: dict[str, list[str]] = {
    "status": ["new", "open", "pending", "resolved", "waiting"],
    "type": ["open", "closed"],
    "priority": ["urgent", "high", "normal", "low"],
    "assignee": ["1", "2", "3", "7", "none"],
    "team": ["1", "2", "5", "none"],
    "contact": ["1", "7", "none"],
    "created_by": ["1", "6", "7", "none"],
    "snoozed": ["exclude", "only", "any"],
}


def paged_rows(
    conn: psycopg.Connection[Any], view: ResolvedView, params: dict[str, str], page_size: int
) -> list[tuple[int, list[str]]]:
    """Every row of the view read page by page, each page after the previous page's last
    row through the opaque cursor the list page hands out."""
    request = parse_list_request(params)
    rows: list[tuple[int, list[str]]] = []
    after = None
    while True:
        compiled = compiler.compile_list(
            view,
            request,
            ACTOR,
            now=view_data.NOW,
            tz=view_data.TZ,
            after=after,
            limit=page_size + 1,
        )
        page = conn.execute(compiled.statement, compiled.params).fetchall()
        width = len(compiled.columns)
        rows.extend((row[width], list(row[:width])) for row in page[:page_size])
        if len(page) <= page_size:
            return rows
        token = cursor.encode(compiled.signature, page[page_size - 1][width + 1 :])
        after = cursor.decode(token, compiled.signature, compiled.key_kinds)
        assert len(rows) <= len(view_data_rows(conn)), "paging does not end"


def view_data_rows(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute("SELECT id FROM tickets").fetchall()


def compare_generated_views(
    dataset: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    pools: dict[str, list[str]],
    hypothesis_seed: int,
    *,
    examples: int = EXAMPLES,
) -> None:
    """Generated views (up to 6 sort levels, generated values, any page size) agree with the
    reference on every page; every field and operator pair was among the compared views."""
    covered: set[tuple[str, str]] = set()
    pairs = sorted(ALL_PAIRS)

    def search(fresh: list[tuple[str, str]], examples: int, round_: int) -> None:
        """`examples` generated views, each with one condition drawn from `fresh` (fixed for
        the run: a strategy that followed `covered` would replay differently)."""

        @seed(hypothesis_seed + round_)
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
            print_blob=True,
        )
        @given(data=st.data())
        def compare(data: st.DataObject) -> None:
            def pick(options: Sequence[Any]) -> Any:
                return data.draw(st.sampled_from(list(options)))

            builtin = pick([None, None, None, *registry.BUILTIN_VIEWS])
            if builtin is None:
                # The first condition's pair comes from `fresh`; the rest are any pair.
                conditions_and = [generated_condition(data, pools, fresh)]
                conditions_and += [
                    generated_condition(data, pools, pairs) for _ in range(pick([0, 0, 1, 2]))
                ]
                conditions_or = [
                    generated_condition(data, pools, pairs) for _ in range(pick([0, 0, 1, 2, 3]))
                ]
                if pick([False, True]):
                    # Sometimes the fresh pair is one of the OR alternatives instead.
                    conditions_or.append(conditions_and.pop(0))
                    if len(conditions_or) == 1:
                        conditions_or.append(generated_condition(data, pools, pairs))
                columns = data.draw(
                    st.lists(st.sampled_from(EVERY_COLUMN), min_size=1, max_size=20, unique=True)
                )
                levels = data.draw(
                    st.lists(
                        st.sampled_from(list(registry.SORTABLE_COLUMNS)),
                        min_size=1,
                        max_size=registry.MAX_SORT_LEVELS,
                        unique=True,
                    )
                )
                sort = [{"column": c, "direction": pick(["asc", "desc"])} for c in levels]
                definition = saved(conditions_and, conditions_or, columns, sort)
            else:
                definition = definition_to_json(builtin_view(builtin).definition)
            params: dict[str, str] = {"sort": pick(["", *registry.SORTS])}
            if builtin is not None:
                params["view"] = builtin
            for key in data.draw(
                st.lists(st.sampled_from(list(FILTER_VALUES)), max_size=2, unique=True)
            ):
                params[key] = pick(FILTER_VALUES[key])
            if pick([False, False, True]):
                params["q"] = data.draw(
                    st.one_of(
                        st.sampled_from(pools["search"]),
                        st.text(ALPHABET, min_size=1, max_size=3).filter(str.strip),
                    )
                )
            page_size = data.draw(st.sampled_from([1, 7, 50, 1000]))
            check(
                dataset,
                reference,
                builtin=builtin,
                definition=definition,
                params=params,
                page_size=page_size,
                seed_hint=f"TICKETEXPORT_VIEW_SEED={hypothesis_seed}",
            )
            # What the compared view held, read back from the definition the compiler was given.
            parsed = parse_definition(definition)
            covered.update(
                (c.field, c.operator) for c in (*parsed.conditions_and, *parsed.conditions_or)
            )

        compare()

    search(pairs, examples, 0)
    # Hypothesis favours simple draws, so a bounded search leaves pairs out; each of those
    # gets a short search of its own whose views all hold it. What is asserted is what the
    # compared views held, read back from their definitions.
    for round_, pair in enumerate(sorted(ALL_PAIRS - covered), start=1):
        search([pair], 2, round_)
    missing = sorted(ALL_PAIRS - covered)
    assert not missing, f"no compared view held: {missing}"


def test_generated_views_agree_fixed_seed(
    dataset: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    pools: dict[str, list[str]],
) -> None:
    compare_generated_views(dataset, reference, pools, FIXED_SEED)


def test_generated_views_agree_rotating_seed(
    dataset: psycopg.Connection[Any],
    reference: reference_views.Evaluator,
    pools: dict[str, list[str]],
) -> None:
    compare_generated_views(dataset, reference, pools, ROTATING_SEED)


def test_every_sort_key_has_empty_values_and_ties(reference: reference_views.Evaluator) -> None:
    """Paging and sorting are only tested where a level can decide nothing: every sortable
    column (the ticket id aside) has ties among its values, and every one that can be empty
    is empty somewhere."""
    never_empty = {"id", "title", "status", "priority", "created_at", "updated_at", "snoozed"}
    for column in registry.SORTABLE_COLUMNS:
        if column == "id":
            continue
        shown = [reference.shown(row, column) for row in reference.rows]
        filled = [v for v in shown if v]
        assert len(set(filled)) < len(filled), f"no ties in {column}"
        if column not in never_empty:
            assert len(filled) < len(shown), f"no empty {column}"


def test_now_is_near_dst_and_midnight_data_exists(reference: reference_views.Evaluator) -> None:
    """The dataset really contains the awkward instants the semantics must survive."""
    local_times = [r["created_at"].astimezone(view_data.ZONE) for r in reference.rows]
    assert any(t.date() == datetime.date(2026, 3, 8) for t in local_times)
    assert any(t.date() == datetime.date(2025, 11, 2) for t in local_times)
    assert any(t.hour == 23 and t.minute >= 30 for t in local_times)
    assert any(t.hour == 0 for t in local_times)
    assert any(r["sla_due_at"] is None for r in reference.rows)


@contextlib.contextmanager
def linguistic_database(server_url: str) -> Iterator[str]:
    """A database whose default collation is ICU en-US: made on the suite's server when it
    has ICU, else on a throw-away server of the system's binaries."""
    name = f"te_icu_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                    "LOCALE 'C.UTF-8' TEMPLATE template0"
                ).format(sql.Identifier(name))
            )
    except psycopg.Error:
        # The embedded server is built without ICU.
        with icu_server() as cluster:
            yield cluster.url("postgres")
        return
    try:
        yield with_dbname(server_url, name)
    finally:
        drop_database(server_url, name)


def test_generated_views_agree_on_a_linguistic_default_collation(server_url: str) -> None:
    """The compiler names its collations: on a database whose default collation sorts and
    folds linguistically (ICU en-US) it still agrees with the reference."""
    with linguistic_database(server_url) as url:
        db.migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            provider = conn.execute(
                "SELECT datlocprovider FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            # Linguistic for real: en-US puts 'a' before 'B', code-point order does not.
            linguistic = conn.execute("SELECT 'a' < 'B', 'a' COLLATE \"C\" < 'B'").fetchone()
            assert (provider, linguistic) == (("i",), (True, False))
            with conn.transaction():
                view_data.build(conn)
            evaluator = reference_views.Evaluator(
                reference_views.fetch(conn), now=view_data.NOW, tz=view_data.TZ, actor_id=ACTOR.id
            )
            compare_generated_views(
                conn, evaluator, make_pools(evaluator), FIXED_SEED, examples=EXAMPLES // 2
            )
