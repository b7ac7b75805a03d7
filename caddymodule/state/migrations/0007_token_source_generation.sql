-- 0007: a token source's generation (issue 14 review): it grows when a
-- redefinition changes where the refresh token comes from (token_url or
-- the refresh_token credential), so a fetch started under the old
-- definition cannot keep its rotated refresh token for the new one.
ALTER TABLE token_sources ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
