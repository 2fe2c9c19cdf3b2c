-- Quotas per user (docs/admin.md, "Quotas"): an admin's limits for one
-- user, each NULL for the configured default; and the row a create or
-- start of the user's locks, so two at once are checked one after the
-- other (PostgreSQL; SQLite serialises writers anyway).
CREATE TABLE quotas (
    user_name TEXT PRIMARY KEY,
    running BIGINT,
    workspaces BIGINT,
    cpu_millis BIGINT,
    memory_bytes BIGINT,
    disk_bytes BIGINT,
    monthly_budget DOUBLE PRECISION
);
CREATE TABLE quota_locks (
    user_name TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
