-- A search's count stops at 10,001 matches, but a bitmap scan of a GIN index cannot stop
-- early: for a common word it gathers every ticket holding the word's trigrams (hundreds of
-- thousands at 10M tickets) before the count reads its first row, about half a second
-- whatever the cap. These indexes hold, before each searched column's trigrams, the
-- ticket's id band (ticketexport_id_band: ids in runs of 2^20, btree_gin gives GIN the
-- band's equality), so a GIN scan can be confined to one band: the count reads the newest
-- band first, then the next, and stops as soon as the cap is reached, so a common word
-- costs one band's worth of its trigrams. A search with no band condition (the list page
-- itself, an export) reads the same indexes, the band column left out.
--
-- They replace 0013's and 0016's indexes of the same columns. Building them reads every
-- ticket once per index (minutes at millions of tickets) while writes to the tickets
-- wait; more memory makes the builds faster.
CREATE EXTENSION IF NOT EXISTS btree_gin;

SET LOCAL maintenance_work_mem = '256MB';

-- The band of a ticket id: 1,048,576 ids each. Immutable, so an index can hold it; the
-- compiler writes exactly this call (views/conditions.py, ID_BAND_BITS).
CREATE FUNCTION ticketexport_id_band(id bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN id >> 20;

DROP INDEX tickets_search_id_idx;
DROP INDEX tickets_search_title_idx;
DROP INDEX tickets_search_language_idx;
DROP INDEX tickets_search_category_idx;
DROP INDEX tickets_search_sla_status_idx;
DROP INDEX tickets_search_tags_idx;
DROP INDEX tickets_search_description_idx;
DROP INDEX tickets_search_status_title_idx;

CREATE INDEX tickets_search_id_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((id::text) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
-- The title's trigrams beside the ticket's status as well (0016's reason: a view that
-- selects by status finds the candidates holding both, instead of reading every ticket
-- whose title holds the term to drop the closed ones). One index serves views with and
-- without a status rule: GIN reads only the columns a condition names.
CREATE INDEX tickets_search_title_idx ON tickets
    USING gin (status_id, ticketexport_id_band(id),
        translate(lower((title) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
CREATE INDEX tickets_search_language_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((coalesce(language, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_category_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((coalesce(category, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_sla_status_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((coalesce(sla_status, '')) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_tags_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((ticketexport_tags_text(tags)) COLLATE ticketexport_text), 'ς', 'σ')
        gin_trgm_ops);
CREATE INDEX tickets_search_description_idx ON tickets
    USING gin (ticketexport_id_band(id),
        translate(lower((description) COLLATE ticketexport_text), 'ς', 'σ') gin_trgm_ops);
-- A search finds the tickets of the contacts whose name holds the term through this index
-- (`contact_id = ANY (…)`); with the band beside the contact, a band's part of the count
-- reads that band's tickets of those contacts alone. It replaces 0001's index of the
-- contact alone, which it also serves.
DROP INDEX tickets_contact_idx;
CREATE INDEX tickets_contact_idx ON tickets (contact_id, ticketexport_id_band(id));
