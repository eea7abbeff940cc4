"""What one compilation of a view works with: the binder of its values and its context
(instant, zone, actor, snapshot, the lookups read so far)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any, Literal

from psycopg import sql

from ticketexport.db import VERSIONED_TABLES
from ticketexport.domain.actor import Actor
from ticketexport.views.registry import Owner

# The tag of each owner's keys in ticketexport_scope_keys (sql/migrations/0026_search_scope.sql):
# a key is tag << 56 | owner id << 16 | status id, for owner ids below 2**40 and status ids
# from 0 to 2**15 - 1; the function gives no key for other values.
_SCOPE_TAGS: dict[Owner, int] = {"team": 2, "assignee": 3, "creator": 4, "unassigned": 5}
_SCOPE_OWNER_LIMIT = 1 << 40
_SCOPE_STATUS_LIMIT = 1 << 15

Cast = Literal[
    "text", "bigint", "bigint[]", "smallint[]", "text[]", "timestamptz", "date", "integer"
]

_CASTS: dict[Cast, sql.SQL] = {
    "text": sql.SQL("::text"),
    "bigint": sql.SQL("::bigint"),
    "bigint[]": sql.SQL("::bigint[]"),
    "smallint[]": sql.SQL("::smallint[]"),
    "text[]": sql.SQL("::text[]"),
    "timestamptz": sql.SQL("::timestamptz"),
    "date": sql.SQL("::date"),
    "integer": sql.SQL("::integer"),
}


class Binder:
    """Turns values into bound named placeholders, or into quoted literals for COPY."""

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self.params: dict[str, Any] = {}

    def __call__(self, value: Any, cast: Cast) -> sql.Composable:
        if self.inline:
            if isinstance(value, list):
                # psycopg quotes array literals with their element types; the cast fixes the type
                inner: sql.Composable = sql.SQL("ARRAY[{}]").format(
                    sql.SQL(", ").join(sql.Literal(v) for v in value)
                )
                return sql.Composed([inner, _CASTS[cast]])
            return sql.Composed([sql.Literal(value), _CASTS[cast]])
        name = f"p{len(self.params)}"
        self.params[name] = value
        return sql.Composed([sql.Placeholder(name), _CASTS[cast]])


@dataclasses.dataclass(frozen=True)
class RuleIds:
    """The lookup rows the built-in views' rules name, read beforehand: the ids of the open
    and of the closed statuses, and of the acting user's teams (queries.sql,
    views_rule_ids)."""

    open: tuple[int, ...]
    closed: tuple[int, ...]
    teams: tuple[int, ...]


class Context:
    """Everything one compilation needs: the binder, the evaluation instant, zone, actor."""

    def __init__(
        self,
        binder: Binder,
        now: datetime.datetime,
        tz: str,
        actor: Actor,
        *,
        snapshot: str | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("the evaluation instant must be timezone-aware")
        self.bind = binder
        self.now = now
        self.tz = tz
        self.actor = actor
        # A recorded pg_snapshot: read every table as it was then (see _as_of below).
        self.snapshot = snapshot
        # Aliases of the lookups (columns.LOOKUPS) the expressions built so far read.
        self.joins: set[str] = set()
        # The search's lookup matches, found beforehand (see search_lookups), by column.
        self.search_matches: Mapping[str, list[int]] | None = None
        # The rules' lookups, read beforehand (a list page's search); None reads them in
        # the statement itself. Never used as of a snapshot, whose lookups are versions.
        self.rule_ids: RuleIds | None = None
        # False writes an owner's rule as its condition even given the lookups: only the
        # title's index holds the scope keys, so a count read one search column at a time
        # writes them beside the title's part alone (compiler._counted_rows).
        self.scope_keys = True
        # The owner whose rule was written as scope keys (owned_open), if any.
        self.owned: Owner | None = None

    def table(self, name: str) -> sql.Composable:
        """The relation a table is read through. Every table the compiled SQL reads is named
        here and nowhere else: as of a snapshot, each one is its versions' `<table>_as_of`
        function (sql/migrations/0007_versions.sql), which PostgreSQL inlines."""
        if self.snapshot is None:
            return sql.Identifier(name)
        if name not in VERSIONED_TABLES:
            raise AssertionError(f"{name} keeps no versions and cannot be read as of a snapshot")
        return sql.SQL("{}({}::pg_snapshot)").format(
            sql.Identifier(f"{name}_as_of"), sql.Literal(self.snapshot)
        )

    def take_joins(self) -> set[str]:
        """The lookup joins read since the last call, so each part's needs are known apart."""
        found, self.joins = self.joins, set()
        return found

    def now_(self) -> sql.Composable:
        return self.bind(self.now, "timestamptz")

    def tz_(self) -> sql.Composable:
        return self.bind(self.tz, "text")

    def local_now(self) -> sql.Composable:
        return sql.SQL("({} AT TIME ZONE {})").format(self.now_(), self.tz_())

    def at_zone(self, local: sql.Composable) -> sql.Composable:
        """A local wall-clock timestamp in the organisation's zone as an instant."""
        return sql.SQL("(({}) AT TIME ZONE {})").format(local, self.tz_())

    def snoozed(self) -> sql.Composable:
        return sql.SQL("(t.snoozed_until IS NOT NULL AND t.snoozed_until > {})").format(self.now_())

    def not_snoozed(self) -> sql.Composable:
        return sql.SQL("(t.snoozed_until IS NULL OR t.snoozed_until <= {})").format(self.now_())

    def open_(self) -> sql.Composable:
        return is_open(self)

    def closed_(self) -> sql.Composable:
        return is_closed(self)

    def owned_open(self, owner: Owner, condition: sql.Composable) -> sql.Composable:
        """The open tickets `condition` selects, `owner` saying what it selects them by.

        Given the rules' lookups (a searched count), this is one condition on the ticket's
        scope keys (0026_search_scope.sql) in place of `condition`, so `condition` must be
        exactly the owner's (the user's teams, the user as assignee or creator, no assignee
        and no team). The title's trigram index holds the keys, so a scan of it finds the
        term among the view's own tickets alone (6,387 of 338,456 candidates for
        `team-tickets` "printer" at 10M). Otherwise, or where an id is out of the keys'
        range, the condition and the open statuses."""
        keys = self._scope_keys(owner)
        if keys is None:
            return sql.SQL("({} AND {})").format(condition, self.open_())
        self.owned = owner
        return sql.SQL(
            "(ticketexport_scope_keys(t.status_id, t.team_id, t.assignee_id, t.created_by_id)"
            " && {})"
        ).format(self.bind(keys, "bigint[]"))

    def _scope_keys(self, owner: Owner) -> list[int] | None:
        if self.rule_ids is None or self.snapshot is not None or not self.scope_keys:
            return None
        owners = {
            "team": self.rule_ids.teams,
            "assignee": (self.actor.id,),
            "creator": (self.actor.id,),
            "unassigned": (0,),
        }[owner]
        statuses = self.rule_ids.open
        if not all(0 <= o < _SCOPE_OWNER_LIMIT for o in owners) or not all(
            0 <= s < _SCOPE_STATUS_LIMIT for s in statuses
        ):
            return None
        tag = _SCOPE_TAGS[owner] << 56
        return [tag | o << 16 | s for o in owners for s in statuses]

    def my_teams(self) -> sql.Composable:
        """The ids of the acting user's teams, as an array."""
        if self.rule_ids is not None and self.snapshot is None:
            return self.bind(list(self.rule_ids.teams), "bigint[]")
        return sql.SQL("ARRAY(SELECT m.team_id FROM {} m WHERE m.user_id = {})").format(
            self.table("team_memberships"), self.bind(self.actor.id, "bigint")
        )

    def followed_open(self, alias: str) -> sql.Composable:
        """A condition on a ticket_followers row (as `alias`) that every row of a followed
        open ticket meets: its `ticket_open` flag (sql/migrations/0018_followers_open.sql),
        which the partial index of those rows answers. The flag keeps no versions, so as of
        a snapshot it is `true` and the ticket's own status decides alone."""
        if self.snapshot is not None:
            return sql.SQL("true")
        return sql.SQL("{}.ticket_open").format(sql.Identifier(alias))


# Status rules ----------------------------------------------------------------------------


# Lookups become arrays of ids evaluated once (an InitPlan), so the ticket indexes that
# lead with status_id, team_id or id can use them as index conditions whatever the
# planner's row estimates for the tiny lookup tables. A searched list page reads the
# rules' lookups beforehand instead (RuleIds): it plans for its own values each time, and
# given the ids the planner knows how many tickets they hold, so it can weigh a view's
# own indexes against the search's.
def lookup_where(
    ctx: Context, key: str, table: str, column: str, value: sql.Composable
) -> sql.Composable:
    """Tickets whose `key` is the id of a `table` row with `column` = `value`."""
    return sql.SQL("(t.{} = ANY (ARRAY(SELECT s.id FROM {} s WHERE s.{} = {})))").format(
        sql.Identifier(key), ctx.table(table), sql.Identifier(column), value
    )


def status_where(ctx: Context, column: str, value: sql.Composable) -> sql.Composable:
    return lookup_where(ctx, "status_id", "ticket_statuses", column, value)


def _known_statuses(ctx: Context, ids: tuple[int, ...]) -> sql.Composable:
    # The statuses' own type (smallint): the title's trigram index holds status_id through
    # btree_gin, whose operators on PostgreSQL 15 compare a smallint with a smallint only.
    return sql.SQL("(t.status_id = ANY ({}))").format(ctx.bind(list(ids), "smallint[]"))


def is_open(ctx: Context) -> sql.Composable:
    if ctx.rule_ids is not None and ctx.snapshot is None:
        return _known_statuses(ctx, ctx.rule_ids.open)
    return status_where(ctx, "status_type", sql.Literal("open"))


def is_closed(ctx: Context) -> sql.Composable:
    if ctx.rule_ids is not None and ctx.snapshot is None:
        return _known_statuses(ctx, ctx.rule_ids.closed)
    return status_where(ctx, "status_type", sql.Literal("closed"))
