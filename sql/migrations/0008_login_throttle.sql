-- Sign-in attempts that count against the login throttle (ticketexport.web.auth), kept in
-- the database so every web process sees the same counts. A row is written before the
-- password is checked (so concurrent guesses cannot slip past the limit) and removed when
-- the password was right; what stays is a failed attempt. Rows older than the window are
-- pruned a few at a time as new failures arrive.
CREATE TABLE login_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the address as typed (trimmed, lower-cased), known to us or not
    email text NOT NULL,
    client_ip inet,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_email_idx ON login_attempts (email, attempted_at);
CREATE INDEX login_attempts_client_idx ON login_attempts (client_ip, attempted_at)
    WHERE client_ip IS NOT NULL;
CREATE INDEX login_attempts_at_idx ON login_attempts (attempted_at);
