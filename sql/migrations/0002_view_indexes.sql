-- Indexes the list page's keyset queries need (ticketexport/views/compiler.py builds them).
-- Sort keys that put empty values last are expressions; these indexes repeat them exactly
-- so the default orders stay index-driven. Counts of the per-person views read the
-- (person, status) pairs from an index instead of visiting every ticket row.

-- "closed" and "recently-closed" order by closing time, newest first, empty last.
CREATE INDEX tickets_closed_sort_idx
    ON tickets ((coalesce(closed_at, '0002-01-01 00:00:00+00'::timestamptz)) DESC, id DESC);

-- sort=sla: due soonest first, empty last.
CREATE INDEX tickets_sla_sort_idx
    ON tickets ((coalesce(sla_due_at, '9998-12-31 00:00:00+00'::timestamptz)), id);

-- The "unassigned" view in its default order.
CREATE INDEX tickets_unassigned_idx
    ON tickets (created_at DESC, id DESC) WHERE assignee_id IS NULL AND team_id IS NULL;

-- Counting "my", "created by me" and "team" views: status type and snooze from the index.
CREATE INDEX tickets_assignee_status_idx ON tickets (assignee_id, status_id) INCLUDE (snoozed_until);
CREATE INDEX tickets_team_status_idx ON tickets (team_id, status_id) INCLUDE (snoozed_until);
CREATE INDEX tickets_created_by_status_idx
    ON tickets (created_by_id, status_id) INCLUDE (snoozed_until);

-- Counting "following" and "recently-closed" without visiting each ticket row.
CREATE INDEX tickets_id_status_idx ON tickets (id) INCLUDE (status_id, snoozed_until, created_at);
CREATE INDEX tickets_closed_status_idx ON tickets (closed_at) INCLUDE (status_id)
    WHERE closed_at IS NOT NULL;
