-- 0003: the activity log (issue 11): one row per proxied request or
-- refusal. Same conventions as before: one text for both backends,
-- times as BIGINT unix nanoseconds. No column holds a secret: path has
-- no query, credentials is a JSON array of names, reason the scrubbed
-- refusal text.
CREATE TABLE activity (
    id          TEXT NOT NULL PRIMARY KEY,
    at          BIGINT NOT NULL,
    instance    TEXT NOT NULL,
    session     TEXT NOT NULL,
    agent       TEXT NOT NULL,
    service     TEXT NOT NULL,
    method      TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    decision    TEXT NOT NULL,
    code        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    bytes_in    BIGINT NOT NULL,
    bytes_out   BIGINT NOT NULL,
    duration_ns BIGINT NOT NULL,
    credentials TEXT NOT NULL,
    client      TEXT NOT NULL
);
-- Newest first, alone or within one value of a filter: each index ends
-- with (at, id), the order of a page, so no query sorts what it reads.
CREATE INDEX activity_at ON activity (at, id);
CREATE INDEX activity_session ON activity (session, at, id);
CREATE INDEX activity_agent ON activity (agent, at, id);
CREATE INDEX activity_service ON activity (service, at, id);
CREATE INDEX activity_host ON activity (host, at, id);
CREATE INDEX activity_decision ON activity (decision, at, id);
