-- Trigram indexes for the search box (ticketexport/views/compiler.py, search_predicate): a
-- term of three or more characters is looked up as `folded text LIKE '%term%'` in these
-- GIN indexes of pg_trgm (a contrib module of PostgreSQL itself), then checked exactly.
-- Each index holds a searched column's folded displayed text, written exactly as the
-- compiler writes it (columns.lowered), so the planner matches the expressions. Columns
-- shown from another table (status, priority, people, team) are searched in that table
-- first, then found through the ticket's own foreign-key index; contacts can be many, so
-- their names get a trigram index too.
--
-- Building them reads every ticket once (minutes on millions of tickets) while writes to
-- the tickets wait; more memory makes the build faster.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

SET LOCAL maintenance_work_mem = '256MB';

-- array_to_string is only stable (its element type's output could change); for text[] it
-- is not, and an index expression needs an immutable function. Same text as the Tags
-- column's display.
CREATE FUNCTION ticketexport_tags_text(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(tags, ', ');

CREATE INDEX tickets_search_id_idx ON tickets
    USING gin (translate(lower((id::text) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
CREATE INDEX tickets_search_title_idx ON tickets
    USING gin (translate(lower((title) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
CREATE INDEX tickets_search_language_idx ON tickets
    USING gin (translate(lower((coalesce(language, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_category_idx ON tickets
    USING gin (translate(lower((coalesce(category, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_sla_status_idx ON tickets
    USING gin (translate(lower((coalesce(sla_status, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_tags_idx ON tickets
    USING gin (translate(lower((ticketexport_tags_text(tags)) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_description_idx ON tickets
    USING gin (translate(lower((description) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);

CREATE INDEX contacts_search_name_idx ON contacts
    USING gin (translate(lower(((CASE WHEN id IS NULL THEN '' WHEN last_name = '' THEN first_name
        ELSE first_name || ' ' || last_name END)) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
