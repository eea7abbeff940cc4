-- The login throttle counts failed sign-ins per (e-mail address, client network) and per
-- client network, a client network being an IPv4 address or an IPv6 /64 (one host's or
-- one site's addresses): failures from one network never lock an account for another,
-- and an IPv6 client cannot escape the count by changing its address within its /64.
ALTER TABLE login_attempts ADD COLUMN client_network cidr;
UPDATE login_attempts
SET client_network = network(set_masklen(client_ip, CASE family(client_ip) WHEN 4 THEN 32 ELSE 64 END))
WHERE client_ip IS NOT NULL;
-- An attempt recorded without an address (one that did not parse) has no network to
-- count against; such attempts only ever counted per address, which no longer counts alone.
DELETE FROM login_attempts WHERE client_network IS NULL;
ALTER TABLE login_attempts ALTER COLUMN client_network SET NOT NULL;
DROP INDEX login_attempts_email_idx;
DROP INDEX login_attempts_client_idx;
ALTER TABLE login_attempts DROP COLUMN client_ip;
CREATE INDEX login_attempts_email_network_idx ON login_attempts (email, client_network, attempted_at);
CREATE INDEX login_attempts_network_idx ON login_attempts (client_network, attempted_at);

-- Throttled sign-ins are audited once per throttled key (an address from a network, or a
-- network) and window, not once per refused request: a key's row says until when its
-- refusals are already on record. Rows past that are pruned a few at a time.
CREATE TABLE login_throttle_audits (
    key text PRIMARY KEY,
    audited_until timestamptz NOT NULL
);
CREATE INDEX login_throttle_audits_until_idx ON login_throttle_audits (audited_until);
