-- A searched view of one team's, one person's or nobody's open tickets (team-tickets,
-- my-tickets, created-by-me, unassigned) holds few of the tickets a common word is in:
-- 6,387 of the 338,456 whose title holds "printer" at 10M tickets are open in the user's
-- two teams. The title's index found all 338,456 (or the 28,472 open ones, a GIN scan per
-- open status) and each one was then read from the table to check its team: 300-500 ms.
--
-- The title's trigrams now sit beside the ticket's scope keys as well: one key per owner
-- (team, assignee, creator; and "unassigned", neither assignee nor team) together with
-- the status, so the open tickets of a user's teams are a handful of keys, and a GIN scan
-- given them and the term finds exactly the view's candidates (55-60 ms, then 6,387 table
-- rows). The compiler writes exactly this call with the keys (views/scope.py, owned_open).
--
-- It replaces 0024's title index, which it holds whole. Building it reads every ticket once
-- (about two minutes at 10M tickets) while writes to the tickets wait.
SET LOCAL maintenance_work_mem = '256MB';

-- A key is tag << 56 | owner id << 16 | status id: tag 2 the team, 3 the assignee, 4 the
-- creator, 5 neither assignee nor team (owner id 0). Only ids that fit (owners 0 to 2^40 - 1,
-- statuses 0 to 2^15 - 1) give a key, so two keys are equal only for the same owner and
-- status; the compiler uses the keys only for ids that fit and otherwise writes the rule.
CREATE FUNCTION ticketexport_scope_keys(
    status_id smallint, team_id bigint, assignee_id bigint, created_by_id bigint
) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN status_id >= 0 THEN array_remove(ARRAY[
        CASE WHEN team_id >= 0 AND team_id < 1099511627776
             THEN (2::bigint << 56) | (team_id << 16) | status_id END,
        CASE WHEN assignee_id >= 0 AND assignee_id < 1099511627776
             THEN (3::bigint << 56) | (assignee_id << 16) | status_id END,
        CASE WHEN created_by_id >= 0 AND created_by_id < 1099511627776
             THEN (4::bigint << 56) | (created_by_id << 16) | status_id END,
        CASE WHEN assignee_id IS NULL AND team_id IS NULL
             THEN (5::bigint << 56) | status_id END], NULL)
    ELSE '{}' END;

DROP INDEX tickets_search_title_idx;
-- GIN reads only the columns a condition names: the status for a view of open or closed
-- tickets (0016), the scope keys for a view of an owner's, the band for a banded count.
CREATE INDEX tickets_search_title_idx ON tickets
    USING gin (status_id,
        ticketexport_scope_keys(status_id, team_id, assignee_id, created_by_id),
        ticketexport_id_band(id),
        translate(lower((title) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
