-- 0006: credentials that mint short-lived tokens (issue 14). doc is the
-- tokensource.Spec JSON (names of credentials, never values);
-- refresh_sealed is a rotated refresh token whose source store is
-- read-only, sealed by the built-in store's key (base64, '' when none).
CREATE TABLE token_sources (
    name           TEXT NOT NULL PRIMARY KEY,
    doc            TEXT NOT NULL,
    refresh_sealed TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);
