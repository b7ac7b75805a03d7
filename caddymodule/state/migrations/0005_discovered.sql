-- 0005: discovered hosts (issue 12): the hosts agents tried that no
-- service covered, one row per host and port, merged by every broker
-- (state/discovered.go). schemes, agents and sessions are JSON arrays
-- of at most a few of the most recent names (an auth scheme such as
-- "Bearer", never a value); key is host:port, the paging order's tie
-- breaker.
CREATE TABLE discovered_hosts (
    key        TEXT NOT NULL PRIMARY KEY,
    host       TEXT NOT NULL,
    port       INTEGER NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    count      BIGINT NOT NULL,
    schemes    TEXT NOT NULL,
    agents     TEXT NOT NULL,
    sessions   TEXT NOT NULL
);
CREATE INDEX discovered_hosts_last_seen ON discovered_hosts (last_seen, key);
