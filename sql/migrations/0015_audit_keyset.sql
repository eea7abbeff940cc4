-- The audit page reads newest first, by (occurred_at, id), one page after another, with
-- or without a filter by action, actor or export: one index per way in, each ending in the
-- page order, so a page is an index range scan however many rows the log holds.
CREATE INDEX audit_log_keyset_idx ON audit_log (occurred_at DESC, id DESC);
CREATE INDEX audit_log_action_keyset_idx ON audit_log (action, occurred_at DESC, id DESC);
CREATE INDEX audit_log_actor_email_keyset_idx
    ON audit_log (actor_email, occurred_at DESC, id DESC) WHERE actor_email IS NOT NULL;
CREATE INDEX audit_log_export_keyset_idx
    ON audit_log (export_id, occurred_at DESC, id DESC) WHERE export_id IS NOT NULL;
-- Superseded by the keyset indexes, which serve every query these served.
DROP INDEX audit_log_occurred_idx;
DROP INDEX audit_log_export_idx;
