-- A search's part for a lookup column (priority, assignee, team) is the tickets that
-- refer to the lookup rows whose name holds the term: "urgent" is every urgent ticket,
-- "ren" every ticket of three agents. A searched count past the cap is read band by band
-- (0024_search_bands.sql), and those parts had no index with the band: each band read
-- every such ticket from the table to check its band ("ren" in `closed` at 10M: 347,218
-- tickets read, 1.2 s; "urgent" in `overdue`, 310 ms with the machine busy).
--
-- One GIN index holds each ticket's band with its status, priority, assignee and team
-- (btree_gin, 0016_search_status_trigrams.sql), so a band's part is one scan of it given
-- the band and the lookup's ids (and the view's statuses). Its keys repeat across many
-- tickets, so it is small: 67 MB at 10M tickets, built in about 6 s while writes to the
-- tickets wait.
SET LOCAL maintenance_work_mem = '256MB';

CREATE INDEX tickets_search_lookups_idx ON tickets USING gin (
    ticketexport_id_band(id), status_id, priority_id, assignee_id, team_id
);
