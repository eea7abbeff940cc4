-- export_overview names the earlier export a file of changes is measured from
-- (request->'since', recorded at the click), as the last column so that views built on it
-- keep theirs.

CREATE OR REPLACE VIEW export_overview AS
SELECT e.id AS export_id,
       e.status,
       e.stage,
       e.attempt,
       e.requested_at,
       e.as_of,
       e.started_at,
       e.finished_at,
       e.expires_at,
       u.id AS requester_id,
       u.email AS requester_email,
       e.view_name,
       e.rows_done,
       e.rows_total,
       CASE WHEN e.rows_total IS NULL THEN NULL
            WHEN e.rows_total = 0 THEN 100
            ELSE (e.rows_done * 100 / e.rows_total)::int END AS percent,
       COALESCE(e.finished_at, now()) - e.started_at AS duration,
       CASE WHEN e.started_at IS NULL
                 OR COALESCE(e.finished_at, now()) <= e.started_at THEN NULL
            ELSE round(e.rows_done
                       / extract(epoch FROM COALESCE(e.finished_at, now()) - e.started_at), 1)
       END AS rows_per_second,
       e.progress_at AS last_progress_at,
       now() - e.progress_at AS since_last_progress,
       e.heartbeat_at AS last_heartbeat_at,
       e.error_code,
       e.error_message,
       e.procrastinate_job_id,
       j.status::text AS job_status,
       j.attempts AS job_attempts,
       j.worker_id AS job_worker_id,
       w.last_heartbeat AS worker_last_heartbeat,
       m.file_name,
       m.size_bytes,
       m.storage_backend,
       m.object_key,
       m.sha256,
       e.retry_of_id,
       (e.request->'since'->>'export_id')::uuid AS since_export_id
FROM export_jobs e
JOIN users u ON u.id = e.requester_id
LEFT JOIN procrastinate_jobs j ON j.id = e.procrastinate_job_id
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
LEFT JOIN media_items m ON m.id = e.media_item_id;

COMMENT ON VIEW export_overview IS
    'One row per export with its procrastinate job, requester, duration, rows/s, last progress, error, and the export a file of changes is measured from (since_export_id).';
