-- Retention bookkeeping: which stored files are gone, and cleanups that keep failing.

-- Set when maintenance has deleted the object: the record stays (audit, DBAs), the file
-- does not. A media item without it is a file that must exist.
ALTER TABLE media_items ADD COLUMN expired_at timestamptz;

-- Deletions of an expired export's object that failed; retried on every maintenance run
-- and exported as a metric so an operator sees a store refusing deletes.
ALTER TABLE export_jobs ADD COLUMN cleanup_failures integer NOT NULL DEFAULT 0
    CHECK (cleanup_failures >= 0);
ALTER TABLE export_jobs ADD COLUMN cleanup_failed_at timestamptz;

-- Completed exports waiting for expiry, found without scanning the expired ones.
CREATE INDEX export_jobs_completed_expiry_idx ON export_jobs (expires_at)
    WHERE status = 'completed';
