-- Versions of every row an export can read, so an export reads the database exactly as it
-- was at the click (its recorded snapshot), whenever and wherever its worker runs.
--
-- Each versioned table gets `row_version`, the 64-bit id of the transaction that wrote the
-- row as it is now (pg_current_xact_id(); '1' for rows older than this migration, which every
-- snapshot sees). An UPDATE or DELETE first copies the old version into `<table>_history`
-- with `superseded_by`, the transaction that replaced or removed it. History keeps only the
-- columns views read (never password hashes, sessions or secrets); an update that leaves
-- those columns alone keeps no history.
--
-- `<table>_as_of(snapshot)` is the table as that snapshot saw it: live rows and history rows
-- in one UNION ALL with a single visibility test on the versions' own transaction ids. It is
-- an inlinable SQL function, so filters and sorts reach the tables and their indexes. A
-- transaction id below the snapshot's xmin is visible without a lookup (every id that reaches
-- these tables belongs to a committed transaction: an aborted one leaves no rows behind).
-- The small tables joined by id to every ticket read DISTINCT ON (id): at most one version
-- per id is visible anyway, and it tells the planner so (a UNION ALL has no statistics, and
-- without it a join to contacts was estimated at 90 million rows and planned as a million
-- index probes).
--
-- Triggers fire ALWAYS (also under session_replication_role = replica), TRUNCATE is refused,
-- and maintenance prunes history no unfinished export can need (see docs/operations.md).

CREATE FUNCTION versions_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% keeps row versions for exports; delete rows instead of truncating',
        TG_TABLE_NAME USING ERRCODE = 'feature_not_supported';
END
$$;


-- tickets -------------------------------------------------------------------------------

ALTER TABLE tickets ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE tickets ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE tickets_history (
    id bigint NOT NULL,
    title text NOT NULL,
    description text NOT NULL,
    status_id smallint NOT NULL,
    priority_id smallint NOT NULL,
    language text,
    category text,
    team_id bigint,
    assignee_id bigint,
    created_by_id bigint,
    contact_id bigint,
    tags text[] NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    resolved_at timestamptz,
    closed_at timestamptz,
    sla_due_at timestamptz,
    sla_breached boolean NOT NULL,
    sla_status text,
    snoozed_until timestamptz,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX tickets_history_id_idx ON tickets_history (id);
CREATE INDEX tickets_history_superseded_idx ON tickets_history (superseded_by);

CREATE FUNCTION tickets_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO tickets_history (id, title, description, status_id, priority_id, language,
            category, team_id, assignee_id, created_by_id, contact_id, tags, created_at,
            updated_at, resolved_at, closed_at, sla_due_at, sla_breached, sla_status,
            snoozed_until, row_version, superseded_by)
        VALUES (OLD.id, OLD.title, OLD.description, OLD.status_id, OLD.priority_id,
            OLD.language, OLD.category, OLD.team_id, OLD.assignee_id, OLD.created_by_id,
            OLD.contact_id, OLD.tags, OLD.created_at, OLD.updated_at, OLD.resolved_at,
            OLD.closed_at, OLD.sla_due_at, OLD.sla_breached, OLD.sla_status, OLD.snoozed_until,
            OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tickets_keep_version BEFORE UPDATE OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_keep_version();
ALTER TABLE tickets ENABLE ALWAYS TRIGGER tickets_keep_version;
CREATE TRIGGER tickets_refuse_truncate BEFORE TRUNCATE ON tickets
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE tickets ENABLE ALWAYS TRIGGER tickets_refuse_truncate;

CREATE FUNCTION tickets_as_of(snap pg_snapshot) RETURNS SETOF tickets_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.*
    FROM (
        SELECT id, title, description, status_id, priority_id, language, category, team_id,
            assignee_id, created_by_id, contact_id, tags, created_at, updated_at, resolved_at,
            closed_at, sla_due_at, sla_breached, sla_status, snoozed_until, row_version,
            NULL::xid8 AS superseded_by FROM tickets
        UNION ALL
        SELECT id, title, description, status_id, priority_id, language, category, team_id,
            assignee_id, created_by_id, contact_id, tags, created_at, updated_at, resolved_at,
            closed_at, sla_due_at, sla_breached, sla_status, snoozed_until, row_version,
            superseded_by FROM tickets_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION tickets_as_of(pg_snapshot) IS
    'tickets as the given snapshot saw it (the columns views read, and their versions).';

-- contacts ------------------------------------------------------------------------------

ALTER TABLE contacts ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE contacts ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE contacts_history (
    id bigint NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    organization text,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX contacts_history_id_idx ON contacts_history (id);
CREATE INDEX contacts_history_superseded_idx ON contacts_history (superseded_by);

CREATE FUNCTION contacts_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.first_name, NEW.last_name, NEW.email, NEW.organization) IS NOT DISTINCT FROM
                (OLD.id, OLD.first_name, OLD.last_name, OLD.email, OLD.organization) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO contacts_history (id, first_name, last_name, email, organization,
            row_version, superseded_by)
        VALUES (OLD.id, OLD.first_name, OLD.last_name, OLD.email, OLD.organization,
            OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER contacts_keep_version BEFORE UPDATE OR DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION contacts_keep_version();
ALTER TABLE contacts ENABLE ALWAYS TRIGGER contacts_keep_version;
CREATE TRIGGER contacts_refuse_truncate BEFORE TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE contacts ENABLE ALWAYS TRIGGER contacts_refuse_truncate;

CREATE FUNCTION contacts_as_of(snap pg_snapshot) RETURNS SETOF contacts_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT DISTINCT ON (v.id) v.*
    FROM (
        SELECT id, first_name, last_name, email, organization, row_version, NULL::xid8 AS
            superseded_by FROM contacts
        UNION ALL
        SELECT id, first_name, last_name, email, organization, row_version, superseded_by FROM
            contacts_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION contacts_as_of(pg_snapshot) IS
    'contacts as the given snapshot saw it (the columns views read, and their versions).';

-- users ---------------------------------------------------------------------------------

ALTER TABLE users ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE users ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE users_history (
    id bigint NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX users_history_id_idx ON users_history (id);
CREATE INDEX users_history_superseded_idx ON users_history (superseded_by);

CREATE FUNCTION users_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.first_name, NEW.last_name) IS NOT DISTINCT FROM
                (OLD.id, OLD.first_name, OLD.last_name) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO users_history (id, first_name, last_name, row_version, superseded_by)
        VALUES (OLD.id, OLD.first_name, OLD.last_name, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_keep_version BEFORE UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_keep_version();
ALTER TABLE users ENABLE ALWAYS TRIGGER users_keep_version;
CREATE TRIGGER users_refuse_truncate BEFORE TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE users ENABLE ALWAYS TRIGGER users_refuse_truncate;

CREATE FUNCTION users_as_of(snap pg_snapshot) RETURNS SETOF users_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT DISTINCT ON (v.id) v.*
    FROM (
        SELECT id, first_name, last_name, row_version, NULL::xid8 AS superseded_by FROM users
        UNION ALL
        SELECT id, first_name, last_name, row_version, superseded_by FROM users_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION users_as_of(pg_snapshot) IS
    'users as the given snapshot saw it (the columns views read, and their versions).';

-- teams ---------------------------------------------------------------------------------

ALTER TABLE teams ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE teams ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE teams_history (
    id bigint NOT NULL,
    name text NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX teams_history_id_idx ON teams_history (id);
CREATE INDEX teams_history_superseded_idx ON teams_history (superseded_by);

CREATE FUNCTION teams_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.name) IS NOT DISTINCT FROM
                (OLD.id, OLD.name) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO teams_history (id, name, row_version, superseded_by)
        VALUES (OLD.id, OLD.name, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER teams_keep_version BEFORE UPDATE OR DELETE ON teams
    FOR EACH ROW EXECUTE FUNCTION teams_keep_version();
ALTER TABLE teams ENABLE ALWAYS TRIGGER teams_keep_version;
CREATE TRIGGER teams_refuse_truncate BEFORE TRUNCATE ON teams
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE teams ENABLE ALWAYS TRIGGER teams_refuse_truncate;

CREATE FUNCTION teams_as_of(snap pg_snapshot) RETURNS SETOF teams_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT DISTINCT ON (v.id) v.*
    FROM (
        SELECT id, name, row_version, NULL::xid8 AS superseded_by FROM teams
        UNION ALL
        SELECT id, name, row_version, superseded_by FROM teams_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION teams_as_of(pg_snapshot) IS
    'teams as the given snapshot saw it (the columns views read, and their versions).';

-- team_memberships ----------------------------------------------------------------------

ALTER TABLE team_memberships ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE team_memberships ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE team_memberships_history (
    team_id bigint NOT NULL,
    user_id bigint NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX team_memberships_history_user_id_team_id_idx ON team_memberships_history (user_id,
    team_id);
CREATE INDEX team_memberships_history_superseded_idx ON team_memberships_history (superseded_by);

CREATE FUNCTION team_memberships_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.team_id, NEW.user_id) IS NOT DISTINCT FROM
                (OLD.team_id, OLD.user_id) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO team_memberships_history (team_id, user_id, row_version, superseded_by)
        VALUES (OLD.team_id, OLD.user_id, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER team_memberships_keep_version BEFORE UPDATE OR DELETE ON team_memberships
    FOR EACH ROW EXECUTE FUNCTION team_memberships_keep_version();
ALTER TABLE team_memberships ENABLE ALWAYS TRIGGER team_memberships_keep_version;
CREATE TRIGGER team_memberships_refuse_truncate BEFORE TRUNCATE ON team_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE team_memberships ENABLE ALWAYS TRIGGER team_memberships_refuse_truncate;

CREATE FUNCTION team_memberships_as_of(snap pg_snapshot) RETURNS SETOF team_memberships_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.*
    FROM (
        SELECT team_id, user_id, row_version, NULL::xid8 AS superseded_by FROM team_memberships
        UNION ALL
        SELECT team_id, user_id, row_version, superseded_by FROM team_memberships_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION team_memberships_as_of(pg_snapshot) IS
    'team_memberships as the given snapshot saw it (the columns views read, and their versions).';

-- ticket_followers ----------------------------------------------------------------------

ALTER TABLE ticket_followers ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE ticket_followers ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE ticket_followers_history (
    ticket_id bigint NOT NULL,
    user_id bigint NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX ticket_followers_history_user_id_ticket_id_idx ON ticket_followers_history
    (user_id, ticket_id);
CREATE INDEX ticket_followers_history_superseded_idx ON ticket_followers_history (superseded_by);

CREATE FUNCTION ticket_followers_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.ticket_id, NEW.user_id) IS NOT DISTINCT FROM
                (OLD.ticket_id, OLD.user_id) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO ticket_followers_history (ticket_id, user_id, row_version, superseded_by)
        VALUES (OLD.ticket_id, OLD.user_id, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ticket_followers_keep_version BEFORE UPDATE OR DELETE ON ticket_followers
    FOR EACH ROW EXECUTE FUNCTION ticket_followers_keep_version();
ALTER TABLE ticket_followers ENABLE ALWAYS TRIGGER ticket_followers_keep_version;
CREATE TRIGGER ticket_followers_refuse_truncate BEFORE TRUNCATE ON ticket_followers
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE ticket_followers ENABLE ALWAYS TRIGGER ticket_followers_refuse_truncate;

CREATE FUNCTION ticket_followers_as_of(snap pg_snapshot) RETURNS SETOF ticket_followers_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.*
    FROM (
        SELECT ticket_id, user_id, row_version, NULL::xid8 AS superseded_by FROM ticket_followers
        UNION ALL
        SELECT ticket_id, user_id, row_version, superseded_by FROM ticket_followers_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION ticket_followers_as_of(pg_snapshot) IS
    'ticket_followers as the given snapshot saw it (the columns views read, and their versions).';

-- ticket_tasks --------------------------------------------------------------------------

ALTER TABLE ticket_tasks ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE ticket_tasks ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE ticket_tasks_history (
    id bigint NOT NULL,
    ticket_id bigint NOT NULL,
    is_closed boolean NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX ticket_tasks_history_ticket_id_idx ON ticket_tasks_history (ticket_id);
CREATE INDEX ticket_tasks_history_superseded_idx ON ticket_tasks_history (superseded_by);

CREATE FUNCTION ticket_tasks_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.ticket_id, NEW.is_closed) IS NOT DISTINCT FROM
                (OLD.id, OLD.ticket_id, OLD.is_closed) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO ticket_tasks_history (id, ticket_id, is_closed, row_version, superseded_by)
        VALUES (OLD.id, OLD.ticket_id, OLD.is_closed, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ticket_tasks_keep_version BEFORE UPDATE OR DELETE ON ticket_tasks
    FOR EACH ROW EXECUTE FUNCTION ticket_tasks_keep_version();
ALTER TABLE ticket_tasks ENABLE ALWAYS TRIGGER ticket_tasks_keep_version;
CREATE TRIGGER ticket_tasks_refuse_truncate BEFORE TRUNCATE ON ticket_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE ticket_tasks ENABLE ALWAYS TRIGGER ticket_tasks_refuse_truncate;

CREATE FUNCTION ticket_tasks_as_of(snap pg_snapshot) RETURNS SETOF ticket_tasks_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.*
    FROM (
        SELECT id, ticket_id, is_closed, row_version, NULL::xid8 AS superseded_by FROM ticket_tasks
        UNION ALL
        SELECT id, ticket_id, is_closed, row_version, superseded_by FROM ticket_tasks_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION ticket_tasks_as_of(pg_snapshot) IS
    'ticket_tasks as the given snapshot saw it (the columns views read, and their versions).';

-- ticket_statuses -----------------------------------------------------------------------

ALTER TABLE ticket_statuses ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE ticket_statuses ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE ticket_statuses_history (
    id smallint NOT NULL,
    developer_name text NOT NULL,
    label text NOT NULL,
    sort_order integer NOT NULL,
    status_type text NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX ticket_statuses_history_id_idx ON ticket_statuses_history (id);
CREATE INDEX ticket_statuses_history_superseded_idx ON ticket_statuses_history (superseded_by);

CREATE FUNCTION ticket_statuses_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.developer_name, NEW.label, NEW.sort_order, NEW.status_type) IS NOT
            DISTINCT FROM
                (OLD.id, OLD.developer_name, OLD.label, OLD.sort_order, OLD.status_type) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO ticket_statuses_history (id, developer_name, label, sort_order, status_type,
            row_version, superseded_by)
        VALUES (OLD.id, OLD.developer_name, OLD.label, OLD.sort_order, OLD.status_type,
            OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ticket_statuses_keep_version BEFORE UPDATE OR DELETE ON ticket_statuses
    FOR EACH ROW EXECUTE FUNCTION ticket_statuses_keep_version();
ALTER TABLE ticket_statuses ENABLE ALWAYS TRIGGER ticket_statuses_keep_version;
CREATE TRIGGER ticket_statuses_refuse_truncate BEFORE TRUNCATE ON ticket_statuses
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE ticket_statuses ENABLE ALWAYS TRIGGER ticket_statuses_refuse_truncate;

CREATE FUNCTION ticket_statuses_as_of(snap pg_snapshot) RETURNS SETOF ticket_statuses_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT DISTINCT ON (v.id) v.*
    FROM (
        SELECT id, developer_name, label, sort_order, status_type, row_version, NULL::xid8 AS
            superseded_by FROM ticket_statuses
        UNION ALL
        SELECT id, developer_name, label, sort_order, status_type, row_version, superseded_by
            FROM ticket_statuses_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION ticket_statuses_as_of(pg_snapshot) IS
    'ticket_statuses as the given snapshot saw it (the columns views read, and their versions).';

-- ticket_priorities ---------------------------------------------------------------------

ALTER TABLE ticket_priorities ADD COLUMN row_version xid8 NOT NULL DEFAULT '1';
ALTER TABLE ticket_priorities ALTER COLUMN row_version SET DEFAULT pg_current_xact_id();

CREATE TABLE ticket_priorities_history (
    id smallint NOT NULL,
    developer_name text NOT NULL,
    label text NOT NULL,
    sort_order integer NOT NULL,
    row_version xid8 NOT NULL,
    superseded_by xid8 NOT NULL
);
CREATE INDEX ticket_priorities_history_id_idx ON ticket_priorities_history (id);
CREATE INDEX ticket_priorities_history_superseded_idx ON ticket_priorities_history (superseded_by);

CREATE FUNCTION ticket_priorities_keep_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.developer_name, NEW.label, NEW.sort_order) IS NOT DISTINCT FROM
                (OLD.id, OLD.developer_name, OLD.label, OLD.sort_order) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO ticket_priorities_history (id, developer_name, label, sort_order,
            row_version, superseded_by)
        VALUES (OLD.id, OLD.developer_name, OLD.label, OLD.sort_order, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ticket_priorities_keep_version BEFORE UPDATE OR DELETE ON ticket_priorities
    FOR EACH ROW EXECUTE FUNCTION ticket_priorities_keep_version();
ALTER TABLE ticket_priorities ENABLE ALWAYS TRIGGER ticket_priorities_keep_version;
CREATE TRIGGER ticket_priorities_refuse_truncate BEFORE TRUNCATE ON ticket_priorities
    FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate();
ALTER TABLE ticket_priorities ENABLE ALWAYS TRIGGER ticket_priorities_refuse_truncate;

CREATE FUNCTION ticket_priorities_as_of(snap pg_snapshot) RETURNS SETOF ticket_priorities_history
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT DISTINCT ON (v.id) v.*
    FROM (
        SELECT id, developer_name, label, sort_order, row_version, NULL::xid8 AS superseded_by
            FROM ticket_priorities
        UNION ALL
        SELECT id, developer_name, label, sort_order, row_version, superseded_by FROM
            ticket_priorities_history
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$$;
COMMENT ON FUNCTION ticket_priorities_as_of(pg_snapshot) IS
    'ticket_priorities as the given snapshot saw it (the columns views read, and their versions).';

-- Exports record what the click could see -------------------------------------------------

ALTER TABLE export_jobs ADD COLUMN as_of_snapshot pg_snapshot;
COMMENT ON COLUMN export_jobs.as_of_snapshot IS
    'pg_current_snapshot() of the request: the export reads every versioned table as of it.';
-- A hot standby that has replayed this far has every transaction the snapshot sees.
ALTER TABLE export_jobs ADD COLUMN as_of_lsn pg_lsn;
COMMENT ON COLUMN export_jobs.as_of_lsn IS
    'The primary''s WAL insert position at the click: a standby must replay this far first.';
-- Where the latest attempt read its rows, and why it read the primary when a standby is set.
ALTER TABLE export_jobs ADD COLUMN read_from text CHECK (read_from IN ('primary', 'standby'));
ALTER TABLE export_jobs ADD COLUMN standby_fallback text
    CHECK (standby_fallback IN ('lagging', 'unreachable', 'not_in_recovery', 'conflicts'));
-- Attempts cut short by a recovery conflict on the standby; after two, read the primary.
ALTER TABLE export_jobs ADD COLUMN standby_conflicts integer NOT NULL DEFAULT 0
    CHECK (standby_conflicts >= 0);

