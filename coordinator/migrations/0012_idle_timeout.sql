-- A workspace's own idle timeout (docs/idle.md), within its tier's bound;
-- 0: its tier's.
ALTER TABLE workspaces ADD COLUMN idle_timeout_ms BIGINT NOT NULL DEFAULT 0;
