-- The intent (generation) a backup was taken under: a backup of a stopped
-- workspace under its current generation holds everything it has
-- (docs/backups.md, "Moving to another node").
ALTER TABLE backups ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

-- Workspaces moved to another node from a backup: the create on the new node
-- restores `backup_id` before the workspace first runs. One row per
-- workspace, its latest move; `done_ms` = 0 while the create has not
-- succeeded. `from_node` keeps a stale copy there: it is deleted once the
-- move is done and that node is connected.
CREATE TABLE moves (
    workspace_id TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    id_base BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    from_node TEXT NOT NULL,
    why TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    done_ms BIGINT NOT NULL DEFAULT 0
);
