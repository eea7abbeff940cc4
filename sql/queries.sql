-- Every SQL statement the package runs by name. Dynamic list/export SQL is composed by
-- ticketexport.views with psycopg.sql; everything fixed lives here.

-- name: user_by_email
-- A user row for login and the CLI.
SELECT id, email, first_name, last_name, password_hash, is_admin, is_active
FROM users
WHERE email = %(email)s;

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

-- name: web_sessions_purge_expired
-- Drop a user's sessions past their absolute or idle lifetime, on each login.
DELETE FROM web_sessions
WHERE user_id = %(user_id)s
  AND (expires_at <= now() OR last_seen_at <= now() - make_interval(secs => %(idle)s));

-- Web sessions and audit (ticketexport.web) -----------------------------------------

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

-- name: web_sessions_purge_expired
-- Drop a user's sessions past their absolute or idle lifetime, on each login.
DELETE FROM web_sessions
WHERE user_id = %(user_id)s
  AND (expires_at <= now() OR last_seen_at <= now() - make_interval(secs => %(idle)s));

-- name: web_audit_insert
-- One audit row; actor may be unknown (failed login).
INSERT INTO audit_log (actor_id, actor_email, action, client_ip, export_id, details)
VALUES (%(actor_id)s, %(actor_email)s, %(action)s, %(client_ip)s, %(export_id)s,
        %(details)s);

-- name: export_states
-- Current live state of several exports at once (event hub fan-out and resync).
SELECT e.id::text AS id, e.status, e.stage, e.attempt, e.rows_done, e.rows_total,
       e.error_code, e.error_message, e.requester_id, e.expires_at
FROM export_jobs e
WHERE e.id = ANY(%(ids)s::uuid[]);

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
