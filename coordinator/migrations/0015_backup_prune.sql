-- When a workspace's backups were last pruned to the retention policy
-- (docs/backups.md, "Retention"); 0: never.
ALTER TABLE backup_state ADD COLUMN pruned_ms BIGINT NOT NULL DEFAULT 0;
