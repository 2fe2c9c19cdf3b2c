-- Deletes waiting for a workspace's final backup (docs/backups.md, "Delete"):
-- the workspace is stopped, and deleted once a backup of it stopped is
-- confirmed; nothing under /workspace goes before that.
CREATE TABLE deletes (
    workspace_id TEXT PRIMARY KEY,
    requested_ms BIGINT NOT NULL
);

-- A drain with a deadline (`berth nodes drain N --deadline 10m`): its running
-- workspaces are warned, and stopped and moved at this time (Unix ms) if
-- still running; 0: no deadline pending.
ALTER TABLE nodes ADD COLUMN drain_deadline_ms BIGINT NOT NULL DEFAULT 0;
