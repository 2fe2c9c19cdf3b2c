-- What the idle detector on a workspace's node last said of it (JSON, empty
-- before its first report), and until when a keepalive holds it (Unix ms,
-- 0 for none).
ALTER TABLE workspaces ADD COLUMN idle_report TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN keepalive_until_ms BIGINT NOT NULL DEFAULT 0;
