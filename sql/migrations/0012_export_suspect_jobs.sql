-- export_suspect also lists the exports no job can run, with the reason each one is listed.
--
-- Besides running exports whose progress or heartbeat is older than a minute, it lists
-- every queued or running export whose procrastinate job is gone, has ended, was taken by
-- a worker that is gone, or waits behind a lock that such a job holds: what maintenance
-- rescues, while it waits for the rescue. A worker is taken for gone once procrastinate
-- pruned it or its last heartbeat is older than 30 seconds (three heartbeats at the
-- default TICKETEXPORT_HEARTBEAT_SECONDS of 10); maintenance itself judges by the
-- configured heartbeat. The columns stay those of export_overview, plus suspect_reason.

CREATE OR REPLACE VIEW export_suspect AS
SELECT o.*, s.reason AS suspect_reason
FROM export_overview o
LEFT JOIN procrastinate_jobs j ON j.id = o.procrastinate_job_id
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN j.id IS NULL THEN 'job_missing'
        WHEN j.status NOT IN ('todo', 'doing') THEN 'job_finished'
        WHEN j.status = 'doing'
             AND (j.worker_id IS NULL
                  OR o.worker_last_heartbeat < now() - interval '30 seconds')
            THEN 'worker_lost'
        WHEN j.status = 'todo'
             AND EXISTS (
                 SELECT 1
                 FROM procrastinate_jobs h
                 LEFT JOIN procrastinate_workers hw ON hw.id = h.worker_id
                 WHERE h.lock = j.lock
                   AND h.status = 'doing'
                   AND (hw.id IS NULL OR hw.last_heartbeat < now() - interval '30 seconds'))
            THEN 'lock_held_by_lost_worker'
        WHEN o.status = 'running' AND o.last_heartbeat_at < now() - interval '1 minute'
            THEN 'no_heartbeat'
        WHEN o.status = 'running' AND o.last_progress_at < now() - interval '1 minute'
            THEN 'no_progress'
    END AS reason
) AS s
WHERE o.status IN ('queued', 'running')
  AND s.reason IS NOT NULL
ORDER BY o.requested_at;

COMMENT ON VIEW export_suspect IS
    'Queued or running exports that look stuck, and why (suspect_reason): job_missing, '
    'job_finished, worker_lost, lock_held_by_lost_worker, no_heartbeat, no_progress.';
