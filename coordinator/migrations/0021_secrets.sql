-- Secrets (docs/admin.md, "Secrets"): a user's ('user:<name>') or a team's
-- ('team:<name>'), sealed with the coordinators' key outside the store
-- (crate::secrets), bound to their scope and name.
CREATE TABLE secrets (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    as_file BIGINT NOT NULL,
    prebuild BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
