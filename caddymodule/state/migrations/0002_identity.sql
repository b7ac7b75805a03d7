-- 0002: who may do what (issue 10): agents and their tokens, operators
-- and their logins, access requests, the audit trail, and session
-- leases. Same conventions as 0001: portable types, one text for both
-- backends, times as BIGINT unix nanoseconds, secrets never stored
-- (token_hash is the hex SHA-256 of a token; password_hash an argon2id
-- PHC string).

-- Agents. services is a JSON array of service names, or ["*"] for
-- every service (present and future); max_session_ttl in nanoseconds.
CREATE TABLE agents (
    name            TEXT NOT NULL PRIMARY KEY,
    token_hash      TEXT NOT NULL UNIQUE,
    services        TEXT NOT NULL,
    max_session_ttl BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Operators: people, with a role (viewer, admin, owner).
CREATE TABLE operators (
    name          TEXT NOT NULL PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- An operator's logins, deleted with the operator or when their
-- password changes. A login has two secrets, one row each with the
-- same login_id: its bearer token (via 'bearer', the avo_ token) and
-- its cookie's secret (via 'cookie', avc_), which is worth less because
-- browsers send cookies to every port of the host. Logout deletes both.
CREATE TABLE operator_logins (
    token_hash TEXT NOT NULL PRIMARY KEY,
    login_id   TEXT NOT NULL,
    via        TEXT NOT NULL,
    operator   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX operator_logins_operator ON operator_logins (operator);
CREATE INDEX operator_logins_login ON operator_logins (login_id);

-- What agents asked for: a service or a host (one of them set), and
-- how an operator decided. decided_at is NULL while pending.
CREATE TABLE access_requests (
    id              TEXT NOT NULL PRIMARY KEY,
    agent           TEXT NOT NULL,
    session         TEXT NOT NULL DEFAULT '',
    service         TEXT NOT NULL DEFAULT '',
    host            TEXT NOT NULL DEFAULT '',
    reason          TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    decided_by      TEXT NOT NULL DEFAULT '',
    decision_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX access_requests_status ON access_requests (status, created_at);
CREATE INDEX access_requests_agent ON access_requests (agent, status);

-- The audit trail: one row per management change. detail is short
-- text, never a value, password or token.
CREATE TABLE audit (
    id         TEXT NOT NULL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    client     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at, id);

-- Session leases: lease_timeout in nanoseconds (0: no lease), and the
-- time the lease lapses unless renewed (NULL: no lease). Sessions from
-- before keep their TTL semantics.
ALTER TABLE sessions ADD COLUMN lease_timeout BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_until BIGINT;
CREATE INDEX sessions_agent ON sessions (agent);
