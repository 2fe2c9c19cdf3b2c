-- A workspace's backups may leave out what its .gitignore files ignore
-- (docs/backups.md), and each backup says how many bytes that left out.
ALTER TABLE backup_state ADD COLUMN exclude_ignored BIGINT NOT NULL DEFAULT 0;
ALTER TABLE backups ADD COLUMN bytes_excluded BIGINT NOT NULL DEFAULT 0;
