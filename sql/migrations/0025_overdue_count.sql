-- The "overdue" view's count: open tickets past their SLA, not snoozed. Breached tickets
-- are a small share of all of them and spread through the table, so counting 10,001 read
-- the table from its oldest rows until that many passed (about 230,000 rows, 90 ms at 10M
-- tickets). This partial index holds the breached tickets alone, by status, with the snooze
-- time beside them: the count reads 10,001 of its entries and no table row.
--
-- Building it reads every ticket once (about half a minute at 10M tickets) while writes to
-- the tickets wait.
CREATE INDEX tickets_breached_status_idx ON tickets (status_id) INCLUDE (snoozed_until)
    WHERE sla_breached;
