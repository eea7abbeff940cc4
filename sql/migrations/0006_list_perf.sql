-- Indexes for the list page's team-tickets view sorted by assignee or priority
-- (ticketexport/views/compiler.py, _grouped_page): a page is read team by team and group
-- by group, each (team, group) pair one range of these indexes in the list's order
-- (newest first). Status and snooze time are included so the view's "open, not snoozed"
-- rule is checked in the index, without visiting the closed tickets' rows.
CREATE INDEX tickets_team_assignee_idx
    ON tickets (team_id, assignee_id, created_at DESC, id DESC) INCLUDE (status_id, snoozed_until);
CREATE INDEX tickets_team_priority_idx
    ON tickets (team_id, priority_id, created_at DESC, id DESC) INCLUDE (status_id, snoozed_until);
