-- 0001: everything a broker (or a cluster of brokers) shares.
-- Portable types only, one text for SQLite and PostgreSQL: TEXT,
-- BIGINT/INTEGER; bytes as base64 TEXT; times as BIGINT unix
-- nanoseconds. NOT NULL on the TEXT keys because SQLite would otherwise
-- accept NULL in a primary key.

-- The catalog: doc is the services.Service JSON.
CREATE TABLE services (
    name       TEXT NOT NULL PRIMARY KEY,
    doc        TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Agent sessions. token_hash is the hex SHA-256 of the token (the token
-- itself is never stored); services a JSON array; placeholders a JSON
-- object credential -> placeholder. revoked_at and last_used are NULL
-- until set.
CREATE TABLE sessions (
    id           TEXT NOT NULL PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    services     TEXT NOT NULL,
    placeholders TEXT NOT NULL,
    agent        TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used    BIGINT,
    requests     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- The built-in store: its header (format version, KDF algorithm,
-- parameters and salt, the password check) and its sealed records,
-- each sealed with the same additional data as in the file format
-- (name, version, updated_at) so an import copies them verbatim.
CREATE TABLE builtin_header (
    store TEXT NOT NULL PRIMARY KEY,
    doc   TEXT NOT NULL
);
CREATE TABLE builtin_credentials (
    store      TEXT NOT NULL REFERENCES builtin_header (store),
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    nonce      TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    PRIMARY KEY (store, name)
);

-- Caddy's storage for a cluster (its CA): values are sealed by the
-- caller, stored as unpadded base64.
CREATE TABLE caddy_storage (
    key      TEXT NOT NULL PRIMARY KEY,
    value    TEXT NOT NULL,
    modified BIGINT NOT NULL
);
CREATE TABLE caddy_locks (
    name    TEXT NOT NULL PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires BIGINT NOT NULL
);

-- Small facts about the database itself (services_import_claim, the
-- storage module's salt).
CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
