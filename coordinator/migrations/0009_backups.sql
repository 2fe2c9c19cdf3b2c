-- Confirmed backups of workspaces (docs/backups.md): restic snapshots in
-- each workspace's own repository. Kept after the workspace is deleted.
CREATE TABLE backups (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    node TEXT NOT NULL,
    taken_at_ms BIGINT NOT NULL,
    bytes_added BIGINT NOT NULL,
    bytes_total BIGINT NOT NULL,
    files BIGINT NOT NULL,
    consistency TEXT NOT NULL,
    pause_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    -- The node id of the workspace's uid 0 then (a restore shifts from it).
    id_base BIGINT NOT NULL,
    -- JSON array of the volume paths it covers.
    paths TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX backups_by_time ON backups (workspace_id, taken_at_ms);

-- Per workspace: its repository, its key (sealed with the secrets key),
-- and its failed attempts since the last confirmed backup.
CREATE TABLE backup_state (
    workspace_id TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    last_attempt_ms BIGINT NOT NULL DEFAULT 0
);
