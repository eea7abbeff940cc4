-- Versioned tables from one declaration (the scheme itself is described in 0007_versions.sql).
--
-- A table is versioned by one row in `versioned_tables`; the columns kept per version are
-- the columns of its `<table>_history`. From those two, `versioning_build(table)` writes the
-- table's trigger function `<table>_keep_version()` and its as-of function
-- `<table>_as_of(snapshot)`, reading the column list from the catalog. Adding a versioned
-- column is therefore:
--
--     ALTER TABLE tickets ADD COLUMN channel text;
--     CALL versioning_add_column('tickets', 'channel');
--
-- which adds the column to the history table (with the live column's type) and rebuilds
-- both functions: no column list is written out again. Every versioned table's functions
-- are rebuilt from the declaration here, replacing 0007's hand-written ones.

CREATE TABLE versioned_tables (
    name text PRIMARY KEY,
    -- Small tables joined by id to every ticket read DISTINCT ON (id): at most one version
    -- per id is visible anyway, and it tells the planner so (0007_versions.sql).
    one_version_per_id boolean NOT NULL
);

INSERT INTO versioned_tables (name, one_version_per_id) VALUES
    ('tickets', false),
    ('contacts', true),
    ('users', true),
    ('teams', true),
    ('team_memberships', false),
    ('ticket_followers', false),
    ('ticket_tasks', false),
    ('ticket_statuses', true),
    ('ticket_priorities', true);

CREATE FUNCTION versioning_kept_columns(tbl text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    -- The history table's columns in their order, without the two version ids.
    SELECT array_agg(a.attname::text ORDER BY a.attnum)
    FROM pg_attribute a
    WHERE a.attrelid = format('%I', tbl || '_history')::regclass
      AND a.attnum > 0
      AND NOT a.attisdropped
      AND a.attname NOT IN ('row_version', 'superseded_by')
$$;

CREATE PROCEDURE versioning_build(tbl text)
LANGUAGE plpgsql AS $build$
DECLARE
    declared versioned_tables%ROWTYPE;
    kept text[];
    history_columns text;
    live_columns text;
BEGIN
    SELECT * INTO declared FROM versioned_tables WHERE name = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not declared in versioned_tables', tbl;
    END IF;
    kept := versioning_kept_columns(tbl);

    -- An update that leaves the kept columns alone keeps no history.
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF ROW(%2$s) IS NOT DISTINCT FROM ROW(%3$s) THEN
            RETURN NEW;
        END IF;
        NEW.row_version := me;
    END IF;
    -- A version this transaction wrote itself was never visible to any other snapshot.
    IF OLD.row_version <> me THEN
        INSERT INTO %4$I (%5$s, row_version, superseded_by)
        VALUES (%3$s, OLD.row_version, me);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$body$$f$,
        tbl || '_keep_version',
        (SELECT string_agg(format('NEW.%I', c), ', ') FROM unnest(kept) AS c),
        (SELECT string_agg(format('OLD.%I', c), ', ') FROM unnest(kept) AS c),
        tbl || '_history',
        (SELECT string_agg(format('%I', c), ', ') FROM unnest(kept) AS c));

    -- Live rows and history rows in one UNION ALL with a single visibility test, in the
    -- history table's column order (the function returns its row type).
    SELECT string_agg(
               CASE a.attname
                   WHEN 'superseded_by' THEN 'NULL::xid8 AS superseded_by'
                   ELSE format('%I', a.attname)
               END, ', ' ORDER BY a.attnum),
           string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
    INTO live_columns, history_columns
    FROM pg_attribute a
    WHERE a.attrelid = format('%I', tbl || '_history')::regclass
      AND a.attnum > 0
      AND NOT a.attisdropped;
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I(snap pg_snapshot) RETURNS SETOF %2$I
LANGUAGE sql STABLE PARALLEL SAFE AS $body$
    SELECT %3$sv.*
    FROM (
        SELECT %4$s FROM %5$I
        UNION ALL
        SELECT %6$s FROM %2$I
    ) AS v
    WHERE (v.row_version < pg_snapshot_xmin(snap) OR pg_visible_in_snapshot(v.row_version, snap))
      AND (v.superseded_by IS NULL
           OR (v.superseded_by >= pg_snapshot_xmin(snap)
               AND NOT pg_visible_in_snapshot(v.superseded_by, snap)))
$body$$f$,
        tbl || '_as_of',
        tbl || '_history',
        CASE WHEN declared.one_version_per_id THEN 'DISTINCT ON (v.id) ' ELSE '' END,
        live_columns,
        tbl,
        history_columns);
    EXECUTE format(
        'COMMENT ON FUNCTION %I(pg_snapshot) IS %L',
        tbl || '_as_of',
        tbl || ' as the given snapshot saw it (the columns views read, and their versions).');
END
$build$;

CREATE PROCEDURE versioning_add_column(tbl text, col text)
LANGUAGE plpgsql AS $$
DECLARE
    column_type text;
BEGIN
    SELECT format_type(a.atttypid, a.atttypmod) INTO column_type
    FROM pg_attribute a
    WHERE a.attrelid = format('%I', tbl)::regclass AND a.attname = col AND NOT a.attisdropped;
    IF column_type IS NULL THEN
        RAISE EXCEPTION '%.% does not exist: add it to the table first', tbl, col;
    END IF;
    -- History rows of versions from before the column have none: NULL, whatever the
    -- live column's default or constraints.
    EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', tbl || '_history', col, column_type);
    CALL versioning_build(tbl);
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOR tbl IN SELECT name FROM versioned_tables ORDER BY name LOOP
        CALL versioning_build(tbl);
    END LOOP;
END
$$;
