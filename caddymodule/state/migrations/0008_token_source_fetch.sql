-- 0008: second review of token sources (issue 14).
--
-- token_source_generations hands out generations database-wide, so a
-- deleted and recreated source never gets a generation an old fetch
-- still holds (its single row is the counter; the UPDATE that takes a
-- number locks it on PostgreSQL).
CREATE TABLE token_source_generations (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO token_source_generations (id, last) SELECT 1, COALESCE(MAX(generation), 0) FROM token_sources;
-- refresh_version grows with every rotated refresh token kept for the
-- row (a feed reader ignores an older row; the sealed write is
-- conditional on it). fetch_owner/fetch_until are the fetch lease of a
-- rotating source: one broker at a time presents its refresh token
-- (fetch_until is unix nanoseconds of the database's clock, 0 free).
ALTER TABLE token_sources ADD COLUMN refresh_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE token_sources ADD COLUMN fetch_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE token_sources ADD COLUMN fetch_until BIGINT NOT NULL DEFAULT 0;
-- refresh_cred is the refresh_token credential the source reads (NULL
-- for other kinds, and for rows written before 0008 until their next
-- PUT): one source per refresh token.
ALTER TABLE token_sources ADD COLUMN refresh_cred TEXT;
CREATE UNIQUE INDEX token_sources_refresh_cred ON token_sources (refresh_cred);
