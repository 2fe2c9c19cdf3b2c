-- An API token may expire (those a sign-in with an OIDC provider gives:
-- docs/admin.md, "OIDC sign-in"); NULL: it lasts until revoked.
ALTER TABLE api_tokens ADD COLUMN expires_at_ms BIGINT;
