-- Every SQL statement the package runs by name. Dynamic list/export SQL is composed by
-- ticketexport.views with psycopg.sql; everything fixed lives here.

-- name: user_by_email
-- A user row for login and the CLI.
SELECT id, email, first_name, last_name, password_hash, is_admin, is_active
FROM users
WHERE email = %(email)s;

-- Accounts (ticketexport.accounts, the `user` and `role` commands) ----------------------

-- name: user_id_by_email
-- The id of the user with this (normalised) address.
SELECT id FROM users WHERE email = %(email)s;

-- name: user_insert
-- A new staff user.
INSERT INTO users (email, first_name, last_name, password_hash, is_admin)
VALUES (%(email)s, %(first_name)s, %(last_name)s, %(password_hash)s, %(is_admin)s)
RETURNING id;

-- name: user_set_admin
-- Grants or removes the administrator flag.
UPDATE users SET is_admin = %(is_admin)s, updated_at = now() WHERE id = %(id)s;

-- name: user_set_active
-- Activates or deactivates a user.
UPDATE users SET is_active = %(is_active)s, updated_at = now() WHERE id = %(id)s;

-- name: user_role_grant
-- Gives a user a role (nothing when they already have it).
INSERT INTO user_roles (user_id, role_id) VALUES (%(user_id)s, %(role_id)s)
ON CONFLICT DO NOTHING;

-- name: user_role_revoke
-- Takes a role from a user.
DELETE FROM user_roles WHERE user_id = %(user_id)s AND role_id = %(role_id)s;

-- name: role_insert
-- A new role.
INSERT INTO roles (developer_name, label, permissions)
VALUES (%(name)s, %(label)s, %(permissions)s)
RETURNING id;

-- name: accounts_lock
-- One change to users, their roles or roles at a time (a transaction-level advisory lock),
-- so the last-administrator check sees every other change.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: accounts_active_administrators
-- Active administrators holding the `administrators` permission (4) through a role.
SELECT count(*)
FROM users u
WHERE u.is_active AND u.is_admin
  AND EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id
              WHERE ur.user_id = u.id AND r.permissions & 4 <> 0);

-- name: roles_by_names
-- The roles with these developer names: id, name, permission bits.
SELECT id, developer_name, permissions FROM roles WHERE developer_name = ANY(%(names)s::text[]);

-- name: accounts_user_state
-- A user as the admin pages and the audit show them, with their roles' developer names.
SELECT u.id, u.email, u.first_name, u.last_name, u.is_admin, u.is_active,
       COALESCE(array_agg(r.developer_name ORDER BY r.developer_name COLLATE "C")
                FILTER (WHERE r.id IS NOT NULL), '{}') AS roles
FROM users u
LEFT JOIN user_roles ur ON ur.user_id = u.id
LEFT JOIN roles r ON r.id = ur.role_id
WHERE u.id = %(id)s
GROUP BY u.id;

-- name: accounts_user_names
-- A user's first and last name.
SELECT first_name, last_name FROM users WHERE id = %(id)s;

-- name: user_set_name
-- Renames a user.
UPDATE users SET first_name = %(first_name)s, last_name = %(last_name)s, updated_at = now()
WHERE id = %(id)s;

-- name: user_set_email
-- Changes a user's (normalised) e-mail address.
UPDATE users SET email = %(email)s, updated_at = now() WHERE id = %(id)s;

-- name: user_set_password
-- Replaces a user's password hash.
UPDATE users SET password_hash = %(password_hash)s, updated_at = now() WHERE id = %(id)s;

-- name: accounts_role_state
-- A role's id, label and permission bits.
SELECT id, label, permissions FROM roles WHERE developer_name = %(name)s;

-- name: role_update
-- Replaces a role's label and permission bits.
UPDATE roles SET label = %(label)s, permissions = %(permissions)s
WHERE developer_name = %(name)s;

-- name: admin_users_page
-- One page of the user list, by e-mail: a search over name and e-mail, after a cursor.
SELECT u.id, u.email, u.first_name, u.last_name, u.is_admin, u.is_active,
       COALESCE(array_agg(r.developer_name ORDER BY r.developer_name COLLATE "C")
                FILTER (WHERE r.id IS NOT NULL), '{}') AS roles
FROM users u
LEFT JOIN user_roles ur ON ur.user_id = u.id
LEFT JOIN roles r ON r.id = ur.role_id
WHERE (%(after)s::text IS NULL OR u.email COLLATE "C" > %(after)s::text COLLATE "C")
  AND (%(q)s::text IS NULL
       OR strpos(lower(u.email || ' ' || u.first_name || ' ' || u.last_name), lower(%(q)s::text)) > 0)
GROUP BY u.id
ORDER BY u.email COLLATE "C"
LIMIT %(limit)s;

-- name: admin_roles_list
-- Every role with its label, permission bits and how many users hold it.
SELECT r.developer_name, r.label, r.permissions, count(ur.user_id) AS users
FROM roles r LEFT JOIN user_roles ur ON ur.role_id = r.id
GROUP BY r.id
ORDER BY r.developer_name COLLATE "C";

-- Queue page (ticketexport.queue_status) ---------------------------------------------

-- name: queue_now
-- The database's clock, which every age on the page is measured against.
SELECT now();

-- name: queue_counts
-- Jobs by queue and status.
SELECT queue_name, status::text, count(*)
FROM procrastinate_jobs
GROUP BY queue_name, status
ORDER BY queue_name COLLATE "C", status::text COLLATE "C";

-- name: queue_oldest_waiting
-- The job that has waited longest to start: its id, queue and when it became due.
SELECT j.id, j.queue_name, COALESCE(j.scheduled_at, min(e.at)) AS due
FROM procrastinate_jobs j
JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred'
WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
GROUP BY j.id
ORDER BY due, j.id
LIMIT 1;

-- name: queue_workers
-- Workers procrastinate knows, latest heartbeat first.
SELECT id, last_heartbeat FROM procrastinate_workers
ORDER BY last_heartbeat DESC, id
LIMIT %(limit)s;

-- name: queue_stalled_exports
-- Running exports without progress for the stall threshold, and queued ones waiting as long.
SELECT e.id, u.email, e.status, e.stage, e.attempt, e.requested_at, e.progress_at,
       e.error_code, e.finished_at
FROM export_jobs e JOIN users u ON u.id = e.requester_id
WHERE e.status IN ('queued', 'running')
  AND COALESCE(e.progress_at, e.started_at, e.requested_at)
      < now() - make_interval(secs => %(stall)s)
ORDER BY COALESCE(e.progress_at, e.started_at, e.requested_at), e.id
LIMIT %(limit)s;

-- name: queue_failing_exports
-- The latest failed exports within the window, with their error codes.
SELECT e.id, u.email, e.status, e.stage, e.attempt, e.requested_at, e.progress_at,
       e.error_code, e.finished_at
FROM export_jobs e JOIN users u ON u.id = e.requester_id
WHERE e.status = 'failed' AND e.finished_at > now() - %(window)s::interval
ORDER BY e.finished_at DESC, e.id
LIMIT %(limit)s;

-- name: queue_failing_codes
-- Failures within the window by error code.
SELECT error_code, count(*)
FROM export_jobs
WHERE status = 'failed' AND finished_at > now() - %(window)s::interval
GROUP BY error_code
ORDER BY count(*) DESC, error_code COLLATE "C";

-- Migrations (ticketexport.db) ---------------------------------------------------------

-- name: migrations_lock
-- One migrator at a time, across processes (a session-level advisory lock).
SELECT pg_advisory_lock(%(key)s);

-- name: migrations_unlock
-- Releases the migrators' lock.
SELECT pg_advisory_unlock(%(key)s);

-- name: migrations_create_history
-- The record of applied migrations and their checksums.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_table_exists
-- Whether any migration was ever applied here.
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: migrations_applied
-- Applied migrations and the checksums they had.
SELECT version, checksum FROM schema_migrations;

-- name: migrations_record
-- Records one applied migration (in the migration's own transaction).
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: tickets_exist
-- Whether the database holds any ticket (the demo seeds an empty one).
SELECT EXISTS (SELECT 1 FROM tickets);

-- name: db_now
-- The database's clock, which every expiry rule is written against.
SELECT now();

-- Installation (ticketexport.storage.marker) --------------------------------------------

-- name: installation_identity
-- This installation's id, and what tells this database apart from a copy of it (a restore
-- into a new database, a new cluster): the cluster's system identifier and the database's oid.
SELECT i.id::text,
       (SELECT system_identifier FROM pg_control_system())::text || '/' || d.oid::text
FROM installation i
JOIN pg_database d ON d.datname = current_database();

-- Web sessions (ticketexport.web) -----------------------------------------

-- name: web_session_insert
-- A new login session; id is the sha-256 of the cookie token.
INSERT INTO web_sessions (id, user_id, csrf_token, expires_at, client_ip, user_agent)
VALUES (%(id)s, %(user_id)s, %(csrf_token)s, now() + make_interval(secs => %(lifetime)s),
        %(client_ip)s, %(user_agent)s);

-- name: web_session_load
-- The session plus its user and effective permissions (union over roles), in one query.
SELECT s.csrf_token, s.last_seen_at, s.expires_at, now() AS db_now,
       u.id, u.email, u.first_name, u.last_name, u.is_admin, u.is_active,
       COALESCE(bit_or(r.permissions), 0) AS permissions
FROM web_sessions s
JOIN users u ON u.id = s.user_id
LEFT JOIN user_roles ur ON ur.user_id = u.id
LEFT JOIN roles r ON r.id = ur.role_id
WHERE s.id = %(id)s
GROUP BY s.id, u.id;

-- name: web_session_touch
-- Record activity so the idle timeout starts again.
UPDATE web_sessions SET last_seen_at = now() WHERE id = %(id)s;

-- name: web_session_delete
-- End one session (logout, expiry, inactive user).
DELETE FROM web_sessions WHERE id = %(id)s;

-- name: web_sessions_delete_for_user
-- An inactive user keeps no live session.
DELETE FROM web_sessions WHERE user_id = %(user_id)s;

-- name: web_sessions_purge_expired
-- Drop a user's sessions past their absolute or idle lifetime, on each login.
DELETE FROM web_sessions
WHERE user_id = %(user_id)s
  AND (expires_at <= now() OR last_seen_at <= now() - make_interval(secs => %(idle)s));

-- Login throttle (ticketexport.signin) --------------------------------------------------

-- name: login_throttle_lock
-- Serialises sign-ins for one address from one client network, and from one network (until
-- the transaction ends), so racing guesses are all counted before any is let through. The
-- address's lock first, always.
SELECT pg_advisory_xact_lock(
           hashtextextended('ticketexport.login-email:' || %(email)s || ' from ' || %(network)s, 0)),
       pg_advisory_xact_lock(hashtextextended('ticketexport.login-network:' || %(network)s, 0));

-- name: login_throttle_check
-- Seconds until the address from the network, and the network, are below their limit of
-- attempts within the window: when the limit-th newest attempt leaves it. NULL: below the
-- limit now.
WITH w AS (SELECT make_interval(secs => %(window)s) AS span)
SELECT (SELECT extract(epoch FROM a.attempted_at + w.span - now())
        FROM login_attempts a
        WHERE a.email = %(email)s AND a.client_network = %(network)s::cidr
          AND a.attempted_at > now() - w.span
        ORDER BY a.attempted_at DESC
        OFFSET %(email_limit)s - 1 LIMIT 1) AS email_wait,
       (SELECT extract(epoch FROM a.attempted_at + w.span - now())
        FROM login_attempts a
        WHERE a.client_network = %(network)s::cidr AND a.attempted_at > now() - w.span
        ORDER BY a.attempted_at DESC
        OFFSET %(network_limit)s - 1 LIMIT 1) AS network_wait
FROM w;

-- name: login_attempt_insert
-- An attempt about to be checked; it stays (as a failure) unless the password was right.
INSERT INTO login_attempts (email, client_network) VALUES (%(email)s, %(network)s::cidr)
RETURNING id;

-- name: login_attempt_delete
-- The attempt succeeded: it does not count against the throttle.
DELETE FROM login_attempts WHERE id = %(id)s;

-- name: login_attempts_prune
-- Drops a few attempts that left the window, oldest first (called as failures arrive).
DELETE FROM login_attempts
WHERE id IN (SELECT id FROM login_attempts
             WHERE attempted_at < now() - make_interval(secs => %(window)s)
             ORDER BY attempted_at
             LIMIT 100);

-- name: login_throttle_audit_claim
-- A row when this refusal is the first for the key since its last one was audited (the
-- caller audits it): the key is then on record for the given seconds. No row: already on
-- record.
INSERT INTO login_throttle_audits (key, audited_until)
VALUES (%(key)s, now() + make_interval(secs => %(seconds)s))
ON CONFLICT (key) DO UPDATE SET audited_until = EXCLUDED.audited_until
    WHERE login_throttle_audits.audited_until <= now()
RETURNING key;

-- name: login_throttle_audits_prune
-- Drops a few keys whose refusals are no longer on record (called as refusals arrive).
DELETE FROM login_throttle_audits
WHERE key IN (SELECT key FROM login_throttle_audits
              WHERE audited_until <= now()
              ORDER BY audited_until
              LIMIT 100);

-- name: stream_states
-- Everything event streams need, in one query (event hub fan-out, resync and recheck):
-- the current state of several exports ('export' rows), and the sessions watching them
-- with their users as they are now ('session' rows; none for a session that ended).
SELECT 'export' AS kind, e.id::text AS id, e.status, e.stage, e.attempt, e.rows_done,
       e.rows_total, e.error_code, e.error_message, e.requester_id, e.expires_at,
       (SELECT m.lost_at FROM media_items m WHERE m.id = e.media_item_id) AS file_lost_at,
       NULL::timestamptz AS last_seen_at, NULL::timestamptz AS db_now, NULL::bigint AS user_id,
       NULL::boolean AS is_active, NULL::boolean AS is_admin, NULL::bigint AS permissions
FROM export_jobs e
WHERE e.id = ANY(%(ids)s::uuid[])
UNION ALL
SELECT 'session', s.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, s.expires_at, NULL,
       s.last_seen_at, now(), u.id, u.is_active, u.is_admin,
       COALESCE((SELECT bit_or(r.permissions)
                 FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                 WHERE ur.user_id = u.id), 0)
FROM web_sessions s
JOIN users u ON u.id = s.user_id
WHERE s.id = ANY(%(sessions)s::text[])
UNION ALL
-- An API token's streams watch as 'token:<id>': live while it is neither revoked nor expired
-- (never idle: its last_seen_at is now) and its owner active, with the owner's rights now.
SELECT 'session', 'token:' || t.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       t.expires_at, NULL, now(), now(), u.id, u.is_active, u.is_admin,
       COALESCE((SELECT bit_or(r.permissions)
                 FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                 WHERE ur.user_id = u.id), 0)
FROM api_tokens t
JOIN users u ON u.id = t.owner_id
WHERE t.revoked_at IS NULL
  AND t.id = ANY(ARRAY(SELECT substr(w, 7)::bigint FROM unnest(%(sessions)s::text[]) AS w
                       WHERE w ~ '^token:[0-9]{1,18}$'));

-- name: event_publish
-- Announces a change to an export; delivered to listeners when the transaction commits.
SELECT pg_notify(%(channel)s, %(export_id)s);

-- name: audit_insert
-- One audit row; called inside the transaction of the action it records.
INSERT INTO audit_log (actor_id, actor_email, action, client_ip, export_id, details)
VALUES (%(actor_id)s, %(actor_email)s, %(action)s, %(client_ip)s::inet, %(export_id)s::uuid,
        %(details)s);

-- name: audit_insert_for_requester
-- One audit row in the name of an export's requester (worker and maintenance actions).
INSERT INTO audit_log (actor_id, actor_email, action, export_id, details)
SELECT u.id, u.email, %(action)s, e.id, %(details)s
FROM export_jobs e
JOIN users u ON u.id = e.requester_id
WHERE e.id = %(export_id)s::uuid;

-- API tokens (ticketexport.tokens) ---------------------------------------------------

-- name: token_insert
-- A new API token of one owner; the secret only as its SHA-256.
INSERT INTO api_tokens (owner_id, name, scopes, secret_sha256, expires_at)
VALUES (%(owner_id)s, %(name)s, %(scopes)s::text[], %(digest)s,
        now() + make_interval(days => %(days)s))
RETURNING id, expires_at;

-- name: token_list
-- Tokens newest first: one owner's, or everyone's (owner_id NULL), with the owner's e-mail.
SELECT t.id, t.owner_id, u.email AS owner_email, t.name, t.scopes, t.created_at,
       t.expires_at, t.last_used_at, t.revoked_at, t.expires_at <= now() AS expired
FROM api_tokens t
JOIN users u ON u.id = t.owner_id
WHERE %(owner_id)s::bigint IS NULL OR t.owner_id = %(owner_id)s::bigint
ORDER BY t.created_at DESC, t.id DESC
LIMIT %(limit)s;

-- name: token_get
-- One token's owner and state, locked for a revocation.
SELECT id, owner_id, name, scopes, revoked_at FROM api_tokens WHERE id = %(id)s FOR UPDATE;

-- name: token_revoke
-- Revokes a token (once); no row when it already was.
UPDATE api_tokens SET revoked_at = now(), revoked_by = %(by)s
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id;

-- name: token_use
-- One API request's token: known, not revoked, not expired, its owner active; counts the
-- request in the token's one-minute window (a new window once the last one has ended) and
-- returns the owner with the permissions they hold now. `at` is the window's clock (NULL:
-- the database's now).
UPDATE api_tokens t
SET last_used_at = now(),
    window_started_at = CASE
        WHEN t.window_started_at IS NULL OR t.window_started_at <= w.at - interval '1 minute'
             OR t.window_started_at > w.at
        THEN w.at ELSE t.window_started_at END,
    window_requests = CASE
        WHEN t.window_started_at IS NULL OR t.window_started_at <= w.at - interval '1 minute'
             OR t.window_started_at > w.at
        THEN 1 ELSE LEAST(t.window_requests, 1000000000) + 1 END
FROM users u, (SELECT COALESCE(%(at)s::timestamptz, now()) AS at) AS w
WHERE t.secret_sha256 = %(digest)s AND t.revoked_at IS NULL AND t.expires_at > now()
  AND u.id = t.owner_id AND u.is_active
RETURNING t.id, t.name, t.scopes, t.window_started_at, t.window_requests, w.at,
          u.id AS owner_id, u.email, u.first_name, u.last_name, u.is_admin,
          COALESCE((SELECT bit_or(r.permissions)
                    FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                    WHERE ur.user_id = u.id), 0) AS permissions;

-- Views: saved views and the list page's lookups -------------------------------------

-- name: views_saved_list
-- The saved views a user sees: their own and the system-wide ones.
SELECT id, name, owner_id
FROM saved_views
WHERE owner_id = %(user_id)s OR owner_id IS NULL
ORDER BY owner_id IS NOT NULL, lower(name COLLATE ticketexport_text) COLLATE "C", id;

-- name: views_saved_get
-- One saved view with its definition, if the user may see it.
SELECT id, name, owner_id, conditions_and, conditions_or, columns, sort
FROM saved_views
WHERE id = %(id)s AND (owner_id = %(user_id)s OR owner_id IS NULL);

-- name: views_saved_insert
-- A new saved view (owner NULL = system-wide).
INSERT INTO saved_views (name, owner_id, created_by_id, conditions_and, conditions_or, columns, sort)
VALUES (%(name)s, %(owner_id)s, %(created_by_id)s, %(conditions_and)s, %(conditions_or)s,
        %(columns)s, %(sort)s)
RETURNING id;

-- name: views_saved_update
-- Replace a saved view's definition and ownership.
UPDATE saved_views
SET name = %(name)s, owner_id = %(owner_id)s, conditions_and = %(conditions_and)s,
    conditions_or = %(conditions_or)s, columns = %(columns)s, sort = %(sort)s, updated_at = now()
WHERE id = %(id)s;

-- name: views_saved_delete
-- Delete one saved view.
DELETE FROM saved_views WHERE id = %(id)s;

-- name: list_page_settings_local
-- A list page's settings, for its transaction only, in one round trip; a setting not
-- asked for is set to the value it already has.
-- ms: a time limit (milliseconds, as text) for each statement, or NULL for none.
-- jit: a list page's statements return at most a page of rows: compiling them to machine
-- code (JIT, chosen by the planner's cost estimate alone) costs more than it ever saves.
-- search: a search's candidate tickets are gathered in one bitmap (trigram indexes, ORed
-- per column). At the default work_mem a common term's bitmap (hundreds of thousands of
-- tickets) goes lossy, and every row of every page it names is read and checked again;
-- the memory is the bitmap's at most (a ticket table's pages).
-- trigram: a term of three characters or more is found through the trigram indexes. The
-- planner assumes matching rows are spread evenly through the table, so for a capped count
-- it may choose to read the tickets in table order until enough match; but tickets are
-- stored in creation order and views select by age (open tickets are mostly recent), so
-- that read can cover most of the table (seconds at 10M tickets). A sequential scan
-- stays possible where no index applies.
SELECT set_config('statement_timeout',
                  coalesce(%(ms)s::text, current_setting('statement_timeout')), true),
       set_config('jit', 'off', true),
       set_config('work_mem',
                  CASE WHEN %(search)s THEN '64MB' ELSE current_setting('work_mem') END, true),
       set_config('enable_seqscan',
                  CASE WHEN %(trigram)s THEN 'off' ELSE current_setting('enable_seqscan') END,
                  true);

-- name: list_page_serial_local
-- A searched page's own statement (after its count) without parallel workers, for its
-- transaction only: with sequential scans priced out (list_page_settings_local), a page of
-- 50 rows, even for a term no ticket holds, was costed high enough to start workers, whose
-- start alone took longer than the whole plan without them (15-70 ms against 5-13 ms at
-- 10M tickets). The count keeps them: a common term's count reads many pages, in parallel.
SELECT set_config('max_parallel_workers_per_gather', '0', true);

-- name: views_rule_ids
-- The lookup rows the built-in views' rules name (views/scope.py, RuleIds), read before a
-- searched list page so its statements carry them as values: the open statuses, the
-- closed ones and the acting user's teams.
SELECT ARRAY(SELECT s.id FROM ticket_statuses s WHERE s.status_type = 'open' ORDER BY s.id),
       ARRAY(SELECT s.id FROM ticket_statuses s WHERE s.status_type = 'closed' ORDER BY s.id),
       ARRAY(SELECT m.team_id FROM team_memberships m WHERE m.user_id = %(user_id)s
             ORDER BY m.team_id);

-- name: views_top_id_band
-- The id band (0024_search_bands.sql) of the newest ticket, NULL without tickets: where a
-- searched count starts (views/compiler.py, compile_count). One probe of the primary key.
SELECT ticketexport_id_band(max(id)) FROM tickets;

-- name: views_statuses
-- Ticket statuses for filters and the editor, in their display order.
SELECT developer_name, label, status_type FROM ticket_statuses ORDER BY sort_order, id;

-- name: views_priorities
-- Ticket priorities, most important first.
SELECT developer_name, label FROM ticket_priorities ORDER BY sort_order, id;

-- name: views_users
-- Staff for the assignee / created-by selects, by displayed name.
SELECT id, CASE WHEN last_name = '' THEN first_name ELSE first_name || ' ' || last_name END
FROM users
ORDER BY lower(first_name COLLATE ticketexport_text) COLLATE "C",
         lower(last_name COLLATE ticketexport_text) COLLATE "C", id;

-- name: views_teams
-- Teams for the team selects, by name.
SELECT id, name FROM teams ORDER BY lower(name COLLATE ticketexport_text) COLLATE "C", id;

-- name: views_known_users
-- Which of these user ids exist.
SELECT id FROM users WHERE id = ANY(%(ids)s::bigint[]);

-- name: views_known_teams
-- Which of these team ids exist.
SELECT id FROM teams WHERE id = ANY(%(ids)s::bigint[]);

-- Exports (ticketexport.exports) ------------------------------------------------------

-- name: user_role_names
-- A user's role developer names, frozen into an export request.
SELECT r.developer_name
FROM user_roles ur JOIN roles r ON r.id = ur.role_id
WHERE ur.user_id = %(user_id)s
ORDER BY r.developer_name COLLATE "C";

-- name: export_request_lock
-- Serialises one user's export requests so the double-submit check cannot race.
SELECT pg_advisory_xact_lock(hashtextextended('ticketexport.export-request', %(user_id)s));

-- name: export_find_duplicate
-- The same user's identical request still queued or running from the last few seconds.
SELECT id FROM export_jobs
WHERE requester_id = %(user_id)s
  AND request_fingerprint = %(fingerprint)s
  AND status IN ('queued', 'running')
  AND requested_at > now() - make_interval(secs => %(seconds)s)
ORDER BY requested_at DESC
LIMIT 1;

-- name: history_horizon_share
-- Taken by every export request before it records its snapshot: maintenance's pruning
-- waits for requests in flight, so it never removes a version one of them can see.
SELECT pg_advisory_xact_lock_shared(hashtextextended('ticketexport.history-horizon', 0));

-- name: export_insert
-- A new export, as of the click: the transaction's start for relative dates, and this
-- statement's snapshot for which row versions it reads.
INSERT INTO export_jobs (requester_id, requested_at, as_of, as_of_snapshot, as_of_lsn, request,
                         view_name, request_fingerprint, expires_at, retry_of_id)
VALUES (%(requester_id)s, now(), now(), pg_current_snapshot(), pg_current_wal_insert_lsn(),
        %(request)s, %(view_name)s, %(fingerprint)s, now() + %(retention)s, %(retry_of)s::uuid)
RETURNING id, requested_at;

-- name: export_changes_base
-- Holds the export whose changes since are asked for (until the request commits), and
-- says whether its retention is over by the clock (read under the history lock).
SELECT expires_at <= clock_timestamp() AS expired
FROM export_jobs
WHERE id = %(id)s::uuid
FOR SHARE;

-- name: export_set_job_id
-- Links the export to its current procrastinate job.
UPDATE export_jobs SET procrastinate_job_id = %(job_id)s WHERE id = %(id)s;

-- name: export_get
-- One export with its requester and file: the columns ticketexport.exports.store.Export reads.
SELECT e.id, e.status, e.stage, e.attempt, e.rows_done, e.rows_total, e.error_code,
       e.error_message, e.requester_id, e.expires_at, m.lost_at AS file_lost_at,
       u.email AS requester_email,
       u.first_name || CASE WHEN u.last_name = '' THEN '' ELSE ' ' || u.last_name END
           AS requester_name,
       e.requested_at, e.as_of, e.as_of_snapshot::text AS as_of_snapshot,
       e.as_of_lsn::text AS as_of_lsn, e.view_name, e.request, e.started_at, e.progress_at,
       e.heartbeat_at, e.finished_at, e.cancel_requested_at, e.auto_downloaded_at,
       e.procrastinate_job_id, e.retry_of_id, e.read_from, e.standby_fallback,
       e.standby_conflicts, e.cleanup_failures, e.media_item_id, m.file_name, m.size_bytes,
       m.content_type, m.storage_backend, m.object_key, m.sha256, e.schedule_id,
       e.schedule_tick, e.delivery_status
FROM export_jobs e
JOIN users u ON u.id = e.requester_id
LEFT JOIN media_items m ON m.id = e.media_item_id
WHERE e.id = %(id)s::uuid;

-- name: export_cancel
-- Cancels a queued or running export; no row when it already finished.
UPDATE export_jobs
SET status = 'cancelled', stage = NULL, finished_at = now(), cancel_requested_at = now()
WHERE id = %(id)s::uuid AND status IN ('queued', 'running')
RETURNING id;

-- name: export_cancel_backends
-- Cancels any statement still running on an export's COPY connection.
SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %(app)s;

-- Export worker (ticketexport.exports.worker); every write is guarded by status and attempt
-- so a superseded attempt can never overwrite a newer one.

-- name: export_lock
-- Locks the export row for the claim; the database's time (no row: no such export).
SELECT now() FROM export_jobs WHERE id = %(id)s::uuid FOR UPDATE;

-- name: export_requeue
-- running → queued with a new attempt (the previous try of the job died).
UPDATE export_jobs
SET status = 'queued', attempt = attempt + 1, stage = NULL, rows_done = 0,
    rows_total = NULL, heartbeat_at = NULL
WHERE id = %(id)s::uuid AND status = 'running';

-- name: export_start
-- queued → running for this worker's job.
UPDATE export_jobs
SET status = 'running', stage = NULL, rows_done = 0, rows_total = NULL,
    started_at = COALESCE(started_at, now()), heartbeat_at = now(), progress_at = now(),
    procrastinate_job_id = COALESCE(%(job_id)s, procrastinate_job_id)
WHERE id = %(id)s::uuid AND status = 'queued'
RETURNING id;

-- name: export_fail_unclaimed
-- queued → failed before any attempt ran (e.g. expired while waiting).
UPDATE export_jobs
SET status = 'failed', stage = NULL, error_code = %(code)s, error_message = %(message)s,
    finished_at = now()
WHERE id = %(id)s::uuid AND status = 'queued'
RETURNING requester_id;

-- name: export_counted
-- The exact total, counted at the start of the attempt.
UPDATE export_jobs SET rows_total = %(total)s, progress_at = now(), heartbeat_at = now()
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: export_read_from
-- Where this attempt reads its rows, and why not the standby when one is configured.
UPDATE export_jobs SET read_from = %(source)s, standby_fallback = %(fallback)s
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: export_standby_conflict
-- A recovery conflict on the standby cut this attempt short.
UPDATE export_jobs SET standby_conflicts = standby_conflicts + 1
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: standby_replayed
-- On the standby: still a standby, has it replayed the click's WAL position, and which
-- cluster is it (a standby of another primary has a system identifier of its own)?
SELECT pg_is_in_recovery(),
       COALESCE(pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn, false),
       (SELECT system_identifier FROM pg_control_system())::text;

-- name: cluster_system_identifier
-- On the primary: its cluster's system identifier, which its standbys share.
SELECT system_identifier::text FROM pg_control_system();

-- name: export_stage
-- Stage change within the running attempt.
UPDATE export_jobs SET stage = %(stage)s, progress_at = now(), heartbeat_at = now()
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: export_progress
-- Rows written so far.
UPDATE export_jobs SET rows_done = %(rows)s, progress_at = now(), heartbeat_at = now()
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: export_heartbeat
-- The attempt is alive; no row means it was cancelled or superseded.
UPDATE export_jobs SET heartbeat_at = now()
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
RETURNING id;

-- name: media_item_insert
-- The stored file's record.
INSERT INTO media_items (kind, file_name, size_bytes, content_type, storage_backend,
                         object_key, sha256)
VALUES ('ticket_export', %(file_name)s, %(size)s, %(content_type)s, %(backend)s, %(key)s,
        %(sha256)s)
RETURNING id;

-- name: media_item_lost
-- The stored file is not the one recorded (its size or SHA-256 differ): it is never served
-- again, and the export answers as one whose file is gone.
UPDATE media_items SET lost_at = now(), lost_reason = %(reason)s
WHERE id = %(id)s::uuid AND lost_at IS NULL;

-- name: media_item_recorded
-- Whether a completed export's media item holds this object (it must never be discarded).
SELECT 1 FROM media_items WHERE object_key = %(key)s;

-- name: export_complete
-- running → completed with its file; refused once the export's retention has ended (it
-- must then fail with expired_before_completion instead).
UPDATE export_jobs
SET status = 'completed', stage = NULL, finished_at = now(), media_item_id = %(media_id)s,
    progress_at = now()
WHERE id = %(id)s::uuid AND status = 'running' AND attempt = %(attempt)s
  AND expires_at > now()
RETURNING requester_id;

-- name: export_fail
-- → failed with a fixed code and safe message (only the current attempt may do this).
UPDATE export_jobs
SET status = 'failed', stage = NULL, error_code = %(code)s, error_message = %(message)s,
    finished_at = now()
WHERE id = %(id)s::uuid AND status IN ('queued', 'running') AND attempt = %(attempt)s
RETURNING requester_id;

-- name: user_access
-- Whether a user is active and their effective permissions now.
SELECT u.id, u.is_active, u.is_admin, COALESCE(bit_or(r.permissions), 0) AS permissions
FROM users u
LEFT JOIN user_roles ur ON ur.user_id = u.id
LEFT JOIN roles r ON r.id = ur.role_id
WHERE u.id = %(user_id)s
GROUP BY u.id;

-- Demo seed (ticketexport.seed) ------------------------------------------------------
-- Bulk rows are generated inside PostgreSQL: every value is a pure function of a row
-- number and the seed's salts through hashint8extended, which PostgreSQL keeps stable
-- across versions because hash partitioning depends on it. `OFFSET 0` keeps each layer a
-- separate projection so every hash is computed once per row, not once per reference.

-- name: seed_session_settings
-- The bulk load's own memory and durability settings, for its transaction only.
SET LOCAL maintenance_work_mem = '512MB';
SET LOCAL work_mem = '256MB';
SET LOCAL synchronous_commit = off;
SET LOCAL jit = off;

-- name: seed_lock
-- Serialise concurrent seeds of one database until the transaction ends.
SELECT pg_advisory_xact_lock(7593862114001);

-- name: seed_existing
-- What would make seeding unsafe: any ticket, team or contact already present.
SELECT EXISTS (SELECT 1 FROM tickets) AS has_tickets,
       EXISTS (SELECT 1 FROM teams) AS has_teams,
       EXISTS (SELECT 1 FROM contacts) AS has_contacts;

-- name: seed_statuses
-- The status lookup, most prominent first.
SELECT id, developer_name, status_type FROM ticket_statuses ORDER BY sort_order, id;

-- name: seed_priorities
-- The priority lookup, most important first.
SELECT id, developer_name FROM ticket_priorities ORDER BY sort_order, id;

-- name: seed_role_insert
-- A demo role, unless the deployment already has one by that name.
INSERT INTO roles (developer_name, label, permissions)
VALUES (%(developer_name)s, %(label)s, %(permissions)s)
ON CONFLICT (developer_name) DO NOTHING;

-- name: seed_effective_permissions
-- Admin flag and effective permissions (union over roles) of the given users.
SELECT u.email, u.is_admin, COALESCE(bit_or(r.permissions), 0) AS permissions
FROM users u
LEFT JOIN user_roles ur ON ur.user_id = u.id
LEFT JOIN roles r ON r.id = ur.role_id
WHERE u.email = ANY (%(emails)s::text[])
GROUP BY u.id
ORDER BY u.email COLLATE "C";

-- name: seed_user_details
-- Deterministic timestamps and activity flags for seeded users (add_user stamps now()).
UPDATE users u
SET created_at = v.created_at, updated_at = v.created_at, is_active = v.is_active
FROM unnest(%(ids)s::bigint[], %(created_at)s::timestamptz[], %(active)s::boolean[])
     AS v (id, created_at, is_active)
WHERE u.id = v.id;

-- name: seed_password_hashes
-- The seeded users' real password hashes, computed while the tickets loaded.
UPDATE users u
SET password_hash = v.password_hash
FROM unnest(%(ids)s::bigint[], %(hashes)s::text[]) AS v (id, password_hash)
WHERE u.id = v.id;

-- name: seed_teams
-- Teams with explicit ids 1..n in the given order.
INSERT INTO teams (id, name)
SELECT ord, name FROM unnest(%(names)s::text[]) WITH ORDINALITY AS t (name, ord);

-- name: seed_memberships
-- Team memberships as parallel arrays.
INSERT INTO team_memberships (team_id, user_id)
SELECT * FROM unnest(%(team_ids)s::bigint[], %(user_ids)s::bigint[]);

-- name: seed_copy_contacts
-- Contacts arrive through COPY with explicit ids.
COPY contacts (id, first_name, last_name, email, organization, created_at) FROM STDIN;

-- name: seed_foreign_keys
-- Foreign keys on the bulk tables, so the seed can validate them once after loading
-- instead of once per row.
SELECT n.nspname AS schema_name, c.relname AS table_name, k.conname,
       pg_get_constraintdef(k.oid) AS definition
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND k.conrelid = ANY (%(tables)s::regclass[])
ORDER BY c.relname, k.conname;

-- name: seed_secondary_indexes
-- Indexes on the bulk tables that back no constraint, with the exact definitions the
-- migrations created, so the seed can rebuild them in one sort each after loading.
SELECT n.nspname AS schema_name, ic.relname AS index_name,
       pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE i.indrelid = ANY (%(tables)s::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY ic.relname;

-- name: seed_tickets
-- Tickets 1..n; the hash of the ticket number (or of its predecessor, for the planted
-- created_at ties) decides every column.
INSERT INTO tickets (
    id, title, description, status_id, priority_id, language, category, team_id,
    assignee_id, created_by_id, contact_id, tags, created_at, updated_at, resolved_at,
    closed_at, sla_due_at, sla_breached, sla_status, snoozed_until
)
SELECT
    id, title, description, status_id, priority_id, language, category, team_id,
    assignee_id, created_by_id, contact_id, tags, created_at, updated_at, resolved_at,
    closed_at, sla_due_at, sla_breached,
    CASE
        WHEN sla_due_at IS NULL THEN NULL
        WHEN is_open AND snoozed_until > %(anchor)s THEN 'Paused'
        WHEN sla_breached THEN 'Breached'
        WHEN NOT is_open THEN 'Met'
        WHEN sla_due_at < %(anchor)s + interval '4 hours' THEN 'At risk'
        ELSE 'On track'
    END,
    snoozed_until
FROM (
    SELECT
        *,
        COALESCE(
            CASE WHEN is_open THEN sla_due_at < %(anchor)s
                 ELSE COALESCE(resolved_at, closed_at) > sla_due_at END,
            false
        ) AS sla_breached
    FROM (
        SELECT
            i AS id,
            is_open,
            (%(titles)s::text[])[1 + mod(h5 & 2097151, cardinality(%(titles)s::text[]))]
                || (%(title_suffixes)s::text[])[
                    1 + mod((h5 >> 21) & 2097151, cardinality(%(title_suffixes)s::text[]))]
                AS title,
            (%(descriptions)s::text[])[
                    1 + mod(h5 >> 42, cardinality(%(descriptions)s::text[]))]
                || (%(signatures)s::text[])[
                    1 + mod(h6 >> 42, cardinality(%(signatures)s::text[]))]
                AS description,
            CASE WHEN is_open
                 THEN (%(open_status_ids)s::smallint[])[
                     1 + mod((h2 >> 21) & 2097151, cardinality(%(open_status_ids)s::smallint[]))]
                 ELSE (%(closed_status_ids)s::smallint[])[ck]
            END AS status_id,
            (%(priority_ids)s::smallint[])[pk] AS priority_id,
            (%(languages)s::text[])[
                1 + mod((h4 >> 21) & 2097151, cardinality(%(languages)s::text[]))] AS language,
            (%(categories)s::text[])[
                1 + mod(h9 & 2097151, cardinality(%(categories)s::text[]))] AS category,
            (%(team_ids)s::bigint[])[tk] AS team_id,
            CASE
                WHEN mod(h7 & 2097151, 100) < 12 THEN NULL
                WHEN tk IS NULL THEN (%(staff_ids)s::bigint[])[
                    1 + mod((h7 >> 21) & 2097151, cardinality(%(staff_ids)s::bigint[]))]
                ELSE (%(team_members)s::bigint[])[
                    (%(team_member_offsets)s::int[])[tk]
                    + mod((h7 >> 21) & 2097151, (%(team_member_counts)s::int[])[tk])]
            END AS assignee_id,
            CASE WHEN mod((h9 >> 21) & 2097151, 100) < 25 THEN NULL
                 ELSE (%(staff_ids)s::bigint[])[
                     1 + mod(h7 >> 42, cardinality(%(staff_ids)s::bigint[]))]
            END AS created_by_id,
            CASE WHEN mod(h8 & 2097151, 100) < 8 THEN NULL
                 ELSE (%(contact_ids)s::bigint[])[
                     1 + mod((h8 >> 21) & 2097151, cardinality(%(contact_ids)s::bigint[]))]
            END AS contact_id,
            string_to_array(
                (%(tag_sets)s::text[])[1 + mod(h8 >> 42, cardinality(%(tag_sets)s::text[]))],
                '|'
            ) AS tags,
            %(anchor)s - make_interval(secs => c) AS created_at,
            %(anchor)s - make_interval(secs => CASE WHEN is_open THEN mod(h3, c + 1)
                                                    ELSE closed_offset END) AS updated_at,
            CASE WHEN is_open OR (grace > 0 AND mod(h9 >> 42, 10) = 0) THEN NULL
                 ELSE %(anchor)s - make_interval(secs => c - dur) END AS resolved_at,
            CASE WHEN is_open THEN NULL
                 ELSE %(anchor)s - make_interval(secs => closed_offset) END AS closed_at,
            CASE WHEN mod(h4 >> 42, 100) < 8 THEN NULL
                 ELSE %(anchor)s - make_interval(
                     secs => c - 3600 * (%(priority_sla_hours)s::int[])[pk]) END
                AS sla_due_at,
            CASE
                WHEN NOT is_open THEN NULL
                WHEN mod(h10 >> 42, 100) < 6
                    THEN %(anchor)s + make_interval(secs => 86400 + mod(h11, 1728000))
                WHEN mod(h10 >> 42, 100) < 10
                    THEN %(anchor)s - make_interval(secs => mod(h11, c + 1))
            END AS snoozed_until
        FROM (
            SELECT
                *,
                c - least(c, dur + CASE WHEN grace > 0
                                        THEN mod((h10 >> 21) & 2097151, grace) ELSE 0 END)
                    AS closed_offset
            FROM (
                SELECT
                    *,
                    mod(h2 & 2097151, 1000) < CASE
                        WHEN c < 3 * 86400 THEN 850
                        WHEN c < 14 * 86400 THEN 600
                        WHEN c < 60 * 86400 THEN 300
                        WHEN c < 180 * 86400 THEN 100
                        ELSE 50
                    END AS is_open,
                    1 + mod((h2 >> 21) & 2097151, cardinality(%(closed_status_ids)s::smallint[]))
                        AS ck,
                    1 + mod(h4 & 2097151, cardinality(%(priority_ids)s::smallint[])) AS pk,
                    CASE WHEN mod(h6 & 2097151, 100) < 10 THEN NULL
                         ELSE 1 + mod((h6 >> 21) & 2097151, cardinality(%(team_ids)s::bigint[]))
                    END AS tk,
                    -- time to resolve: up to ten days, most of them short
                    least(c, 300 + mod(h10 & 2097151, 864000) * mod(h10 & 2097151, 864000) / 864000)
                        AS dur,
                    (%(closed_grace)s::int[])[
                        1 + mod((h2 >> 21) & 2097151,
                                cardinality(%(closed_status_ids)s::smallint[]))] AS grace
                FROM (
                    SELECT
                        *,
                        least(63072000, greatest(60, CASE
                            -- about 3 in 100 tickets land within an hour of a midnight
                            WHEN mod((h1 >> 21) & 2097151, 100) < 3
                                THEN (c0 / 86400) * 86400 + mod(h1 >> 42, 7200) - 3600
                            ELSE c0
                        END)) AS c
                    FROM (
                        SELECT
                            *,
                            -- seconds before the anchor: ticket numbers rise with time,
                            -- jittered by up to six hours either way
                            3600 + ((%(n)s::bigint - j) * 63064800) / %(n)s::bigint
                                + mod(h1 & 2097151, 43200) - 21600 AS c0
                        FROM (
                            SELECT
                                i, j,
                                hashint8extended(j, s[1]) & 9223372036854775807 AS h1,
                                hashint8extended(i, s[2]) & 9223372036854775807 AS h2,
                                hashint8extended(i, s[3]) & 9223372036854775807 AS h3,
                                hashint8extended(i, s[4]) & 9223372036854775807 AS h4,
                                hashint8extended(i, s[5]) & 9223372036854775807 AS h5,
                                hashint8extended(i, s[6]) & 9223372036854775807 AS h6,
                                hashint8extended(i, s[7]) & 9223372036854775807 AS h7,
                                hashint8extended(i, s[8]) & 9223372036854775807 AS h8,
                                hashint8extended(i, s[9]) & 9223372036854775807 AS h9,
                                hashint8extended(i, s[10]) & 9223372036854775807 AS h10,
                                hashint8extended(i, s[11]) & 9223372036854775807 AS h11
                            FROM (
                                SELECT
                                    i,
                                    -- every 47th ticket shares its predecessor's created_at
                                    CASE WHEN i > 1 AND mod(i, 47) = 0 THEN i - 1 ELSE i END
                                        AS j,
                                    %(salts)s::bigint[] AS s
                                FROM generate_series(1::bigint, %(n)s::bigint) AS i
                            ) AS numbered
                            OFFSET 0
                        ) AS hashed
                    ) AS spread
                    OFFSET 0
                ) AS aged
                OFFSET 0
            ) AS decided
            OFFSET 0
        ) AS timed
        OFFSET 0
    ) AS shaped
) AS final;

-- name: seed_tasks
-- Tasks per ticket (0 to 5), mostly done on closed tickets; ids follow ticket and position.
INSERT INTO ticket_tasks (ticket_id, title, is_closed, position, created_at)
SELECT
    t.id,
    (%(task_titles)s::text[])[1 + mod(th & 2097151, cardinality(%(task_titles)s::text[]))],
    mod((th >> 21) & 2097151, 100)
        < CASE WHEN t.status_id = ANY (%(closed_status_ids)s::smallint[]) THEN 95 ELSE 35 END,
    k,
    least(%(anchor)s::timestamptz, t.created_at + make_interval(mins => 17 * k))
FROM (
    SELECT id, status_id, created_at,
           hashint8extended(id, %(salt)s) & 9223372036854775807 AS h
    FROM tickets
    OFFSET 0
) AS t
CROSS JOIN LATERAL generate_series(
    1, (%(task_counts)s::int[])[1 + mod(t.h, cardinality(%(task_counts)s::int[]))]) AS k
CROSS JOIN LATERAL (
    SELECT hashint8extended(t.id * 8 + k, %(salt)s) & 9223372036854775807 AS th
) AS per_task
ORDER BY t.id, k;

-- name: seed_followers
-- 0 to 3 distinct followers per ticket: start + k * step modulo the staff count, with
-- 2 * step below the count so the picks cannot collide. Each row's ticket_open flag is
-- its ticket's, as the trigger (disabled for the load, seed_followers_trigger_off) sets it.
INSERT INTO ticket_followers (ticket_id, user_id, ticket_open)
SELECT t.i, (%(staff_ids)s::bigint[])[1 + mod(t.first + k * t.step, t.staff)],
       s.status_type = 'open'
FROM (
    SELECT
        i,
        h,
        cardinality(%(staff_ids)s::bigint[]) AS staff,
        mod((h >> 21) & 2097151, cardinality(%(staff_ids)s::bigint[])) AS first,
        1 + mod(h >> 42, greatest(1, (cardinality(%(staff_ids)s::bigint[]) - 1) / 2)) AS step
    FROM (
        SELECT i, hashint8extended(i, %(salt)s) & 9223372036854775807 AS h
        FROM generate_series(1::bigint, %(n)s::bigint) AS i
    ) AS hashed
    OFFSET 0
) AS t
JOIN tickets tk ON tk.id = t.i
JOIN ticket_statuses s ON s.id = tk.status_id
CROSS JOIN LATERAL generate_series(
    0, (%(follower_counts)s::int[])[1 + mod(t.h & 2097151,
                                            cardinality(%(follower_counts)s::int[]))] - 1) AS k;

-- name: seed_followers_trigger_off
-- The load writes each follower row's ticket_open itself (seed_followers) instead of
-- looking up its ticket row by row; only inside the seed's transaction, which takes the
-- table's lock anyway to drop its indexes.
ALTER TABLE ticket_followers DISABLE TRIGGER ticket_followers_set_open;

-- name: seed_followers_trigger_on
-- The follower rows' trigger back on once the load's rows are in (seed_followers_trigger_off).
ALTER TABLE ticket_followers ENABLE ALWAYS TRIGGER ticket_followers_set_open;

-- name: seed_reset_sequence
-- Move an identity sequence past ids the seed inserted explicitly ({table} is composed).
SELECT setval(pg_get_serial_sequence(%(table)s, 'id'), COALESCE(max(id), 1), max(id) IS NOT NULL)
FROM {table};

-- Export maintenance (ticketexport.exports.maintenance) ---------------------------------

-- name: maintenance_stuck_running
-- Running attempts whose worker stopped heartbeating, or whose progress stalled.
SELECT e.id, e.attempt, e.rows_done,
       CASE WHEN e.heartbeat_at IS NULL
                 OR e.heartbeat_at < now() - make_interval(secs => %(heartbeat)s)
            THEN 'worker_lost' ELSE 'stalled' END AS reason
FROM export_jobs e
WHERE e.status = 'running'
  AND e.expires_at > now()
  AND (e.heartbeat_at IS NULL
       OR e.heartbeat_at < now() - make_interval(secs => %(heartbeat)s)
       OR e.progress_at < now() - make_interval(secs => %(stall)s))
ORDER BY e.requested_at
FOR UPDATE SKIP LOCKED;

-- name: maintenance_expire_unfinished
-- Queued or running exports whose retention ended first fail.
UPDATE export_jobs
SET status = 'failed', stage = NULL, error_code = %(code)s, error_message = %(message)s,
    finished_at = now()
WHERE id IN (SELECT id FROM export_jobs
             WHERE status IN ('queued', 'running') AND expires_at <= now()
             FOR UPDATE SKIP LOCKED)
RETURNING id, attempt, procrastinate_job_id;

-- name: maintenance_claim_expired
-- One completed export past its expiry, locked for this run's transaction (a concurrent run
-- passes over it); exports whose deletion already failed in this run are left for the next.
SELECT e.id, e.media_item_id, m.object_key, e.cleanup_failures
FROM export_jobs e JOIN media_items m ON m.id = e.media_item_id
WHERE e.status = 'completed' AND e.expires_at <= now()
  AND e.id <> ALL(%(skip)s::uuid[])
ORDER BY e.expires_at, e.id
LIMIT 1
FOR UPDATE OF e SKIP LOCKED;

-- name: export_expire
-- completed → expired once its file is gone.
UPDATE export_jobs SET status = 'expired'
WHERE id = %(id)s::uuid AND status = 'completed' AND expires_at <= now()
RETURNING id;

-- name: media_item_expire
-- The media item's file is deleted; the record stays.
UPDATE media_items SET expired_at = now() WHERE id = %(id)s::uuid AND expired_at IS NULL;

-- name: export_cleanup_failed
-- Deleting an expired export's file failed; the next run tries again.
UPDATE export_jobs SET cleanup_failures = cleanup_failures + 1, cleanup_failed_at = now()
WHERE id = %(id)s::uuid;

-- name: maintenance_keys_kept
-- For each stored export key (with the export and attempt its form names): whether a live
-- media item records it, and whether that attempt is running. One statement, so one
-- snapshot: a completion (file recorded and attempt ended in one transaction) is seen as
-- one or the other, never as neither.
SELECT k.object_key,
       EXISTS (SELECT 1 FROM media_items m
               WHERE m.object_key = k.object_key AND m.expired_at IS NULL) AS recorded,
       EXISTS (SELECT 1 FROM export_jobs e
               WHERE e.id = k.export_id AND e.attempt = k.attempt
                 AND e.status = 'running') AS running
FROM unnest(%(keys)s::text[], %(ids)s::uuid[], %(attempts)s::int[])
     AS k(object_key, export_id, attempt);

-- name: maintenance_prune_export_jobs
-- procrastinate's rows for the jobs of exports that finished longer ago than the retention
-- (or are gone): their outcome lives on in export_jobs and the audit log.
DELETE FROM procrastinate_jobs j
WHERE j.queue_name = %(queue)s
  AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND NOT EXISTS (
      SELECT 1 FROM export_jobs e
      WHERE e.id::text = j.args->>'export_id'
        AND (e.status IN ('queued', 'running')
             OR e.finished_at IS NULL
             OR e.finished_at > now() - make_interval(secs => %(keep_seconds)s)));

-- name: maintenance_queued_exports
-- Queued exports within their retention, with the job meant to run each.
SELECT id, procrastinate_job_id FROM export_jobs
WHERE status = 'queued' AND expires_at > now();

-- name: maintenance_lock_queued
-- One queued export, locked for its rescue; skipped while a worker's claim holds it.
SELECT id, attempt, rows_done, procrastinate_job_id FROM export_jobs
WHERE id = %(id)s::uuid AND status = 'queued' AND expires_at > now()
FOR UPDATE SKIP LOCKED;

-- name: export_requeue_lost_job
-- A queued export whose job was lost before any attempt claimed it: a new attempt.
UPDATE export_jobs SET attempt = attempt + 1, rows_done = 0, rows_total = NULL, heartbeat_at = NULL
WHERE id = %(id)s::uuid AND status = 'queued' AND attempt = %(attempt)s;

-- name: maintenance_jobs_of_unfinished
-- Which of these procrastinate job ids a queued or running export names as its job.
SELECT procrastinate_job_id FROM export_jobs
WHERE status IN ('queued', 'running') AND procrastinate_job_id = ANY(%(ids)s::bigint[]);

-- name: history_horizon_lock
-- Waits for export requests in flight (they hold the shared lock until they commit).
SELECT pg_advisory_xact_lock(hashtextextended('ticketexport.history-horizon', 0));

-- name: history_horizon
-- Under the lock above: this statement's snapshot (every version superseded by a
-- transaction it sees is superseded for every later snapshot too) and the snapshots the
-- exports still read: every unfinished export's, the earlier click an unfinished file of
-- changes is measured from, every completed export's until it expires (a possible base
-- of changes since it), and the latest completed run of every schedule of changes, expired
-- or not (the base of its next run). Each distinct snapshot once.
SELECT pg_current_snapshot()::text AS horizon,
       COALESCE(array_agg(DISTINCT snap), '{}') AS snapshots
FROM (
    SELECT as_of_snapshot::text AS snap
    FROM export_jobs
    WHERE as_of_snapshot IS NOT NULL
      AND (status IN ('queued', 'running')
           OR (status = 'completed' AND expires_at > clock_timestamp()))
    UNION ALL
    SELECT request->'since'->>'snapshot'
    FROM export_jobs
    WHERE status IN ('queued', 'running') AND request ? 'since'
    UNION ALL
    -- The base of each schedule of changes' next file, whatever its retention.
    SELECT base.snap
    FROM schedules s
    CROSS JOIN LATERAL (
        SELECT e.as_of_snapshot::text AS snap
        FROM export_jobs e
        WHERE e.schedule_id = s.id AND e.status IN ('completed', 'expired')
          AND e.as_of_snapshot IS NOT NULL
        ORDER BY e.requested_at DESC, e.id DESC
        LIMIT 1
    ) AS base
    WHERE s.mode = 'changes'
) AS kept;

-- name: history_prune
-- Removes versions no unfinished export's snapshot can see and no later one will
-- ({history} is composed): superseded as the horizon sees it, and not visible to any of
-- the unfinished exports' snapshots.
DELETE FROM {history} AS h
WHERE (h.superseded_by < pg_snapshot_xmin(%(horizon)s::pg_snapshot)
       OR pg_visible_in_snapshot(h.superseded_by, %(horizon)s::pg_snapshot))
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(snapshots)s::text[]::pg_snapshot[]) AS s (snap)
      WHERE (h.row_version < pg_snapshot_xmin(s.snap)
             OR pg_visible_in_snapshot(h.row_version, s.snap))
        AND NOT (h.superseded_by < pg_snapshot_xmin(s.snap)
                 OR pg_visible_in_snapshot(h.superseded_by, s.snap)));

-- Export pages (ticketexport.web.exports) ----------------------------------------------

-- name: export_list
-- One page of exports, newest first; user_id NULL lists everyone's. The columns are
-- export_get's (ticketexport.exports.store.Export).
SELECT e.id, e.status, e.stage, e.attempt, e.rows_done, e.rows_total, e.error_code,
       e.error_message, e.requester_id, e.expires_at, m.lost_at AS file_lost_at,
       u.email AS requester_email,
       u.first_name || CASE WHEN u.last_name = '' THEN '' ELSE ' ' || u.last_name END
           AS requester_name,
       e.requested_at, e.as_of, e.as_of_snapshot::text AS as_of_snapshot,
       e.as_of_lsn::text AS as_of_lsn, e.view_name, e.request, e.started_at, e.progress_at,
       e.heartbeat_at, e.finished_at, e.cancel_requested_at, e.auto_downloaded_at,
       e.procrastinate_job_id, e.retry_of_id, e.read_from, e.standby_fallback,
       e.standby_conflicts, e.cleanup_failures, e.media_item_id, m.file_name, m.size_bytes,
       m.content_type, m.storage_backend, m.object_key, m.sha256, e.schedule_id,
       e.schedule_tick, e.delivery_status
FROM export_jobs e
JOIN users u ON u.id = e.requester_id
LEFT JOIN media_items m ON m.id = e.media_item_id
WHERE (%(user_id)s::bigint IS NULL OR e.requester_id = %(user_id)s::bigint)
  AND (%(before_time)s::timestamptz IS NULL
       OR (e.requested_at, e.id) < (%(before_time)s::timestamptz, %(before_id)s::uuid))
ORDER BY e.requested_at DESC, e.id DESC
LIMIT %(limit)s;

-- name: live_workers
-- Workers whose heartbeat is recent.
SELECT count(*) FROM procrastinate_workers
WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s);

-- name: workers_beating
-- Which of the given procrastinate workers have a recent heartbeat (a worker's own health check).
SELECT id FROM procrastinate_workers
WHERE id = ANY(%(ids)s::bigint[])
  AND last_heartbeat > now() - make_interval(secs => %(seconds)s);

-- name: export_claim_auto_download
-- The requester's one automatic download; no row when it already happened.
UPDATE export_jobs SET auto_downloaded_at = now()
WHERE id = %(id)s::uuid AND requester_id = %(user_id)s AND auto_downloaded_at IS NULL
RETURNING id;

-- name: export_running_count
-- A user's queued and running exports, for the navigation (one indexed count per page).
SELECT count(*) FROM export_jobs
WHERE requester_id = %(user_id)s AND status IN ('queued', 'running');

-- Operations (ticketexport.web.ops) ----------------------------------------------------

-- name: metrics_exports_by_status
-- Export counts by status.
SELECT status, count(*) AS n FROM export_jobs GROUP BY status;

-- name: metrics_cleanup
-- Expired exports whose file is not deleted yet, and deletions that failed so far.
SELECT count(*) FILTER (WHERE status = 'completed' AND expires_at <= now()) AS awaiting,
       COALESCE(sum(cleanup_failures), 0)::bigint AS failures
FROM export_jobs;

-- name: metrics_history_rows
-- Row versions kept per versioned table's history: the statistics' live-row estimate, so a
-- scrape never scans them.
SELECT relname AS history, n_live_tup AS n
FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY(%(tables)s::text[])
ORDER BY relname;

-- name: metrics_history_kept_clicks
-- The distinct clicks history pruning keeps versions for (history_horizon's list): those
-- unfinished exports read, and those kept only because a completed, unexpired export may
-- still be the base of a file of changes.
WITH unfinished AS (
    SELECT as_of_snapshot::text AS snap
    FROM export_jobs
    WHERE status IN ('queued', 'running') AND as_of_snapshot IS NOT NULL
    UNION
    SELECT request->'since'->>'snapshot'
    FROM export_jobs
    WHERE status IN ('queued', 'running') AND request ? 'since'
), bases AS (
    SELECT as_of_snapshot::text AS snap
    FROM export_jobs
    WHERE status = 'completed' AND expires_at > clock_timestamp()
      AND as_of_snapshot IS NOT NULL
    EXCEPT
    SELECT snap FROM unfinished
)
SELECT (SELECT count(*) FROM unfinished) AS unfinished,
       (SELECT count(*) FROM bases) AS possible_base;

-- name: metrics_download_failures
-- Downloads that did not deliver the file, by reason (each one is audited).
SELECT details->>'reason' AS reason, count(*) AS n
FROM audit_log
WHERE action = 'export.download_failed'
GROUP BY 1;

-- name: metrics_export_totals
-- Rows, bytes and a duration histogram over exports that completed (expired ones included).
SELECT count(*) AS completed,
       COALESCE(sum(e.rows_done), 0)::bigint AS rows,
       COALESCE(sum(m.size_bytes), 0)::bigint AS bytes,
       COALESCE(sum(extract(epoch FROM e.finished_at - e.started_at)), 0)::float8
           AS duration_sum,
       ARRAY(SELECT (SELECT count(*) FROM export_jobs x
                     WHERE x.status IN ('completed', 'expired')
                       AND x.media_item_id IS NOT NULL
                       AND extract(epoch FROM x.finished_at - x.started_at) <= t.b)
             FROM unnest(%(buckets)s::float8[]) WITH ORDINALITY AS t (b, n)
             ORDER BY t.n) AS bucket_counts
FROM export_jobs e
JOIN media_items m ON m.id = e.media_item_id
WHERE e.status IN ('completed', 'expired');

-- name: primary_wal_position
-- The primary's current WAL position, to compare a standby's replay with, and its cluster's
-- system identifier.
SELECT pg_current_wal_lsn()::text, (SELECT system_identifier FROM pg_control_system())::text;

-- name: standby_lag
-- On the standby: still a standby, and how far behind the primary's position it replays
-- (seconds since the last replayed transaction while behind; 0 once caught up).
SELECT pg_is_in_recovery(),
       CASE WHEN pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END,
       greatest(pg_wal_lsn_diff(%(lsn)s::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint,
       (SELECT system_identifier FROM pg_control_system())::text;

-- name: metrics_export_reads
-- Where exports read their rows, and why not the standby when one was configured.
SELECT read_from, COALESCE(standby_fallback, '') AS fallback, count(*) AS n
FROM export_jobs WHERE read_from IS NOT NULL
GROUP BY 1, 2;

-- name: metrics_queue
-- Waiting export jobs and live workers.
SELECT (SELECT count(*) FROM procrastinate_jobs
        WHERE queue_name = 'exports' AND status = 'todo') AS exports_waiting,
       (SELECT count(*) FROM procrastinate_workers
        WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s)) AS live_workers;

-- Schedules (ticketexport.schedules) -----------------------------------------------------

-- name: export_insert_scheduled
-- A schedule's run: an export as of this statement, recorded with its schedule and tick
-- (the unique index on the two refuses a second run of one tick).
INSERT INTO export_jobs (requester_id, requested_at, as_of, as_of_snapshot, as_of_lsn, request,
                         view_name, request_fingerprint, expires_at, schedule_id, schedule_tick,
                         delivery_status, notify_status)
VALUES (%(requester_id)s, now(), now(), pg_current_snapshot(), pg_current_wal_insert_lsn(),
        %(request)s, %(view_name)s, %(fingerprint)s, now() + %(retention)s, %(schedule_id)s,
        %(tick)s, %(delivery)s, %(notify)s)
RETURNING id, requested_at;

-- name: schedule_owner_lock
-- Serialises one owner's schedule changes, so two creations cannot both take the last place.
SELECT pg_advisory_xact_lock(hashtextextended('ticketexport.schedules', %(owner_id)s));

-- name: schedule_count_for_owner
-- How many schedules a user owns.
SELECT count(*) FROM schedules WHERE owner_id = %(owner_id)s;

-- name: schedule_insert
-- A new schedule; its first tick is the first one after its creation.
INSERT INTO schedules (owner_id, name, slug, request, view_name, cadence, every_minutes, minute,
                       at_time, weekday, mode, destination, notify, next_tick)
VALUES (%(owner_id)s, %(name)s, %(slug)s, %(request)s, %(view_name)s, %(cadence)s,
        %(every_minutes)s, %(minute)s, %(at_time)s, %(weekday)s, %(mode)s, %(destination)s,
        %(notify)s, %(next_tick)s)
RETURNING id;

-- name: schedule_list
-- Schedules, newest first: one owner's, or everyone's (owner_id NULL).
SELECT s.id, s.name, s.owner_id, u.email AS owner_email, s.view_name, s.cadence,
       s.every_minutes, s.minute, s.at_time, s.weekday, s.mode, s.destination, s.notify,
       s.paused_at, s.paused_reason, s.next_tick, s.last_tick, s.created_at
FROM schedules s
JOIN users u ON u.id = s.owner_id
WHERE %(owner_id)s::bigint IS NULL OR s.owner_id = %(owner_id)s::bigint
ORDER BY s.id DESC
LIMIT 500;

-- name: schedule_get
-- One schedule with its owner's address.
SELECT s.*, u.email AS owner_email
FROM schedules s
JOIN users u ON u.id = s.owner_id
WHERE s.id = %(id)s;

-- name: schedule_lock
-- One schedule, locked for a change.
SELECT * FROM schedules WHERE id = %(id)s FOR UPDATE;

-- name: schedule_pause
-- Stops a schedule's ticks until it is resumed (nothing when it is already paused).
UPDATE schedules SET paused_at = now(), paused_reason = %(reason)s
WHERE id = %(id)s AND paused_at IS NULL
RETURNING id;

-- name: schedule_resume
-- Starts a paused schedule again from its next tick after now: ticks missed while it was
-- paused are not made up.
UPDATE schedules SET paused_at = NULL, paused_reason = NULL, next_tick = %(next_tick)s
WHERE id = %(id)s AND paused_at IS NOT NULL
RETURNING id;

-- name: schedule_delete
-- Removes a schedule; its runs stay, as exports, with the link to it cleared.
DELETE FROM schedules WHERE id = %(id)s RETURNING id;

-- name: schedule_due
-- The next schedule whose tick has come, locked; one another worker holds is skipped.
SELECT s.* FROM schedules s
WHERE s.paused_at IS NULL AND s.next_tick <= %(now)s
ORDER BY s.next_tick, s.id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: schedule_advance
-- Records the tick taken and the next one to wait for.
UPDATE schedules SET last_tick = %(tick)s, next_tick = %(next_tick)s WHERE id = %(id)s;

-- name: schedule_tick_claim
-- Takes a tick; nothing when it was taken already (by any worker, ever).
INSERT INTO schedule_ticks (schedule_id, tick, outcome)
VALUES (%(schedule_id)s, %(tick)s, %(outcome)s)
ON CONFLICT DO NOTHING
RETURNING tick;

-- name: schedule_tick_record
-- What came of a tick taken: its outcome and run.
UPDATE schedule_ticks SET outcome = %(outcome)s, export_id = %(export_id)s::uuid
WHERE schedule_id = %(schedule_id)s AND tick = %(tick)s;

-- name: schedule_active_run
-- The schedule's run still queued or running, if any.
SELECT id FROM export_jobs
WHERE schedule_id = %(schedule_id)s AND status IN ('queued', 'running')
LIMIT 1;

-- name: schedule_base_run
-- A schedule's latest completed run (expired included: its versions are kept while the
-- schedule exists), the base of its next file of changes; held until the request commits.
SELECT id, as_of, as_of_snapshot::text AS as_of_snapshot
FROM export_jobs
WHERE schedule_id = %(schedule_id)s AND status IN ('completed', 'expired')
  AND as_of_snapshot IS NOT NULL
ORDER BY requested_at DESC, id DESC
LIMIT 1
FOR SHARE;

-- name: schedule_latest_file
-- A schedule's latest completed run whose file is there to serve: not expired, not lost.
SELECT e.id
FROM export_jobs e
JOIN media_items m ON m.id = e.media_item_id
WHERE e.schedule_id = %(schedule_id)s AND e.status = 'completed'
  AND e.expires_at > now() AND m.lost_at IS NULL
ORDER BY e.requested_at DESC, e.id DESC
LIMIT 1;

-- name: schedule_runs
-- A schedule's recent runs, newest first.
SELECT e.id, e.status, e.schedule_tick, e.requested_at, e.finished_at, e.rows_total,
       e.error_code, e.delivery_status, e.notify_status
FROM export_jobs e
WHERE e.schedule_id = %(schedule_id)s
ORDER BY e.requested_at DESC, e.id DESC
LIMIT %(limit)s;

-- name: schedule_skipped_ticks
-- A schedule's recent ticks that made no run, newest first.
SELECT tick, outcome, recorded_at FROM schedule_ticks
WHERE schedule_id = %(schedule_id)s AND outcome = 'skipped'
ORDER BY tick DESC
LIMIT %(limit)s;

-- name: schedule_delivers
-- Whether a schedule sends its files to a destination (its owner must then be an admin).
SELECT destination IS NOT NULL FROM schedules WHERE id = %(id)s;

-- name: delivery_drop_unfinished
-- Runs that ended without a file have nothing to deliver, and runs of a deleted schedule
-- nowhere to deliver to.
UPDATE export_jobs SET delivery_status = NULL
WHERE delivery_status = 'pending'
  AND (status IN ('failed', 'cancelled', 'expired') OR schedule_id IS NULL);

-- name: notify_drop_orphaned
-- Runs of a deleted schedule: nobody to tell any more.
UPDATE export_jobs SET notify_status = NULL
WHERE notify_status = 'pending' AND schedule_id IS NULL;

-- name: delivery_waiting
-- Whether any run waits for its delivery or its message (the ticker then defers the job).
SELECT EXISTS (
    SELECT 1 FROM export_jobs
    WHERE (delivery_status = 'pending' AND status <> 'queued' AND status <> 'running')
       OR (notify_status = 'pending' AND status IN ('completed', 'failed', 'cancelled'))
);

-- name: delivery_claim_locked
-- A completed run waiting for delivery, locked by this worker while it copies the file (a
-- worker lost mid-way releases it, still pending, to the next).
SELECT id FROM export_jobs
WHERE delivery_status = 'pending' AND status = 'completed'
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: delivery_source
-- What a delivery copies: the run's file and its schedule's destination and folder.
SELECT e.id, e.status, m.file_name, m.object_key, m.content_type, s.destination, s.slug,
       s.id AS schedule_id
FROM export_jobs e
JOIN media_items m ON m.id = e.media_item_id
JOIN schedules s ON s.id = e.schedule_id
WHERE e.id = %(id)s::uuid;

-- name: delivery_record
-- The outcome of a delivery.
UPDATE export_jobs
SET delivery_status = %(status)s, delivery_attempts = %(attempts)s,
    delivered_at = CASE WHEN %(status)s = 'delivered' THEN now() END
WHERE id = %(id)s::uuid AND delivery_status = 'pending';

-- name: metrics_delivery_failures
-- Runs whose delivery failed, for /metrics.
SELECT count(*) AS n FROM export_jobs WHERE delivery_status = 'delivery_failed';

-- name: notify_claim
-- A run that ended and whose owner asked to be told, locked while the message is sent.
SELECT e.id, e.status, e.error_message, e.view_name, s.name AS schedule_name,
       u.email AS owner_email
FROM export_jobs e
JOIN schedules s ON s.id = e.schedule_id
JOIN users u ON u.id = e.requester_id
WHERE e.notify_status = 'pending' AND e.status IN ('completed', 'failed', 'cancelled')
LIMIT 1
FOR UPDATE OF e SKIP LOCKED;

-- name: notify_record
-- Whether the owner's message about a run was sent.
UPDATE export_jobs SET notify_status = %(status)s WHERE id = %(id)s::uuid;
