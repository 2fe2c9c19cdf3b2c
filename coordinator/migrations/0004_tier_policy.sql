-- The tier a workspace was created from, and what that tier granted it
-- beyond the security defaults (kept with the workspace: a tier changed in
-- the configuration later does not change existing workspaces).
ALTER TABLE workspaces ADD COLUMN tier TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN nested_userns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workspaces ADD COLUMN egress_allow TEXT NOT NULL DEFAULT '[]';
