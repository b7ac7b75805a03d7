-- 0004: the activity log in chunks (issue 11). One row per entry with
-- six indexes cost more CPU per proxied request than the proxy can
-- spare; a chunk holds up to 64 entries of one batch, sorted by (at,
-- id) and spanning a bounded time (state/activity.go), encoded into
-- data (state/activitycodec.go), and the filters find chunks through
-- activity_keys. The entries of 0003's table are not carried over: the
-- log is a bounded history, not a record that must be kept.
DROP TABLE activity;

-- id is the id of the chunk's first entry when it was written (a
-- batch written again as a whole finds its chunks there and skips
-- them); first_at and last_at its first and last entry's at (BIGINT
-- unix nanoseconds). data is BYTEA on PostgreSQL; SQLite stores the
-- BLOB it is given as it is (the type name's NUMERIC affinity converts
-- text only).
CREATE TABLE activity_chunks (
    id       TEXT NOT NULL PRIMARY KEY,
    first_at BIGINT NOT NULL,
    last_at  BIGINT NOT NULL,
    entries  INTEGER NOT NULL,
    data     BYTEA NOT NULL
);
-- Pages walk the chunks by their last entry, newest or oldest first.
CREATE INDEX activity_chunks_last_at ON activity_chunks (last_at, id);

-- One row per distinct non-empty value of a filterable field (session,
-- agent, service, host, decision, code, status) in a chunk: bit i of
-- bits is set when the chunk's entry i has it. A filtered page walks
-- one value's rows in the chunks' order (the primary key) and joins
-- the other filters' rows of the same chunk. first_at is the chunk's,
-- so that a walk skips chunks without reading them.
CREATE TABLE activity_keys (
    field    TEXT NOT NULL,
    value    TEXT NOT NULL,
    last_at  BIGINT NOT NULL,
    chunk    TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    bits     BIGINT NOT NULL,
    PRIMARY KEY (field, value, last_at, chunk)
);
-- A chunk's rows, when it goes or is rewritten.
CREATE INDEX activity_keys_chunk ON activity_keys (chunk);
