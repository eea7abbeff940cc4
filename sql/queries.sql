-- Every SQL statement the package runs by name. Dynamic list/export SQL is composed by
-- ticketexport.views with psycopg.sql; everything fixed lives here.

-- name: user_by_email
-- A user row for login and the CLI.
SELECT id, email, first_name, last_name, password_hash, is_admin, is_active
FROM users
WHERE email = %(email)s;
