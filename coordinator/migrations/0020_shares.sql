-- Workspaces shared read-only with a user (docs/admin.md, "Sharing"): the
-- user reads it as a team viewer would, and acts on nothing.
CREATE TABLE workspace_shares (
    workspace_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_name)
);
CREATE INDEX workspace_shares_user ON workspace_shares (user_name);
