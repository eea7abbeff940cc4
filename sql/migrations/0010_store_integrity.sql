-- Nothing lost: a store bound to one installation, files that went missing or changed, and
-- a standby of another cluster.

-- This installation's id, given once, here: a dump and restore carries the row, so the
-- restored database knows which installation it was. The store's marker object names it
-- (ticketexport.storage.marker).
CREATE TABLE installation (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO installation DEFAULT VALUES;

-- A completed export's file found to differ from what was recorded (its size, or its
-- SHA-256 while a download streamed it): never served again; the download answers 410.
ALTER TABLE media_items
    ADD COLUMN lost_at timestamptz,
    ADD COLUMN lost_reason text CHECK (lost_reason IN ('size_mismatch', 'digest_mismatch')),
    ADD CONSTRAINT media_items_lost_reason_with_time CHECK ((lost_at IS NULL) = (lost_reason IS NULL));

-- A standby whose system identifier is not the primary's is a standby of another cluster:
-- never read.
ALTER TABLE export_jobs DROP CONSTRAINT export_jobs_standby_fallback_check;
ALTER TABLE export_jobs ADD CONSTRAINT export_jobs_standby_fallback_check
    CHECK (standby_fallback IN ('lagging', 'unreachable', 'not_in_recovery', 'conflicts',
                                'other_cluster'));

-- /metrics counts failed downloads by reason from the audit log; they are few, and this
-- keeps the count off the rest of the log.
CREATE INDEX audit_log_download_failed_idx ON audit_log ((details->>'reason'))
    WHERE action = 'export.download_failed';
