-- A new versioned table is one call, as a new versioned column is (0014_versioned_tables.sql):
--
--     CREATE TABLE ticket_labels (id bigint PRIMARY KEY, name text NOT NULL, …);
--     CALL versioning_add_table('ticket_labels', one_version_per_id => true);
--
-- gives the table its row_version, a <table>_history with the kept columns (every column,
-- or the `kept` list: never a secret no view reads), the history's indexes, the declaration
-- row in versioned_tables, the trigger and as-of functions versioning_build writes from the
-- catalog, and the triggers that keep versions and refuse TRUNCATE, firing ALWAYS: what
-- 0007_versions.sql wrote out by hand for each of its nine tables. A view reads the table
-- once its name is in ticketexport.db.VERSIONED_TABLES too (a test holds the two equal).

CREATE PROCEDURE versioning_add_table(
    tbl text, kept text[] DEFAULT NULL, one_version_per_id boolean DEFAULT false
)
LANGUAGE plpgsql AS $$
DECLARE
    live regclass := format('%I', tbl)::regclass;
    history text := tbl || '_history';
    missing text;
    history_columns text;
    key_columns text;
BEGIN
    IF kept IS NULL THEN
        SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO kept
        FROM pg_attribute a
        WHERE a.attrelid = live AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname <> 'row_version';
    END IF;
    SELECT string_agg(k.name, ', ') INTO missing
    FROM unnest(kept) AS k (name)
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = live AND a.attname = k.name AND a.attnum > 0
                        AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION '% has no column %: create the table first', tbl, missing;
    END IF;
    IF one_version_per_id AND NOT 'id' = ANY (kept) THEN
        RAISE EXCEPTION 'one version per id needs % to keep its id', tbl;
    END IF;

    -- Rows from before the call are versions every snapshot sees ('1'), as in 0007.
    EXECUTE format('ALTER TABLE %s ADD COLUMN row_version xid8 NOT NULL DEFAULT %L', live, '1');
    EXECUTE format('ALTER TABLE %s ALTER COLUMN row_version SET DEFAULT pg_current_xact_id()',
                   live);

    -- The kept columns with the live columns' types and NOT NULLs, in the order given.
    SELECT string_agg(format('%I %s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                             CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END),
                      ', ' ORDER BY k.position)
    INTO history_columns
    FROM unnest(kept) WITH ORDINALITY AS k (name, position)
    JOIN pg_attribute a ON a.attrelid = live AND a.attname = k.name;
    EXECUTE format('CREATE TABLE %I (%s, row_version xid8 NOT NULL, superseded_by xid8 NOT NULL)',
                   history, history_columns);

    -- The versions of one row are found by its primary key; pruning goes by superseded_by.
    SELECT string_agg(format('%I', a.attname), ', '
                      ORDER BY array_position(i.indkey::int2[], a.attnum))
    INTO key_columns
    FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
    WHERE i.indrelid = live AND i.indisprimary AND a.attname = ANY (kept);
    IF key_columns IS NOT NULL THEN
        EXECUTE format('CREATE INDEX %I ON %I (%s)', history || '_key_idx', history, key_columns);
    END IF;
    EXECUTE format('CREATE INDEX %I ON %I (superseded_by)', history || '_superseded_idx', history);

    INSERT INTO versioned_tables (name, one_version_per_id) VALUES (tbl, one_version_per_id);
    CALL versioning_build(tbl);

    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION %I()',
                   tbl || '_keep_version', live, tbl || '_keep_version');
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', live, tbl || '_keep_version');
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION versions_refuse_truncate()',
                   tbl || '_refuse_truncate', live);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', live, tbl || '_refuse_truncate');
END
$$;
