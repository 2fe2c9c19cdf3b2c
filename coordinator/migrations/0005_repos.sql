-- Workspaces made from a repository: the repository as asked (JSON, empty
-- for none), and its clone and lifecycle steps as its node last reported
-- them (JSON, empty before the first report).
ALTER TABLE workspaces ADD COLUMN repo TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN init_report TEXT NOT NULL DEFAULT '';

-- A user's git credential for one host. The token is sealed (AES-256-GCM)
-- with the coordinators' secrets key, which is not in the store: a copy of
-- the store alone does not reveal it.
CREATE TABLE git_credentials (
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (owner, host)
);

-- A value sealed with the secrets key when it was first used: a
-- coordinator given another key finds out at start, not at a user's clone.
CREATE TABLE secrets_check (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    sealed TEXT NOT NULL
);
