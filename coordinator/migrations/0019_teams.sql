-- Teams (docs/admin.md, "Teams"): members with a role each (admin,
-- member, viewer); a workspace may belong to one, and team members see and
-- act on it by role. Usage keeps the team for costs by team.
CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE team_members (
    team TEXT NOT NULL REFERENCES teams (name),
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (team, user_name)
);
CREATE INDEX team_members_user ON team_members (user_name);
ALTER TABLE workspaces ADD COLUMN team TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_hours ADD COLUMN team TEXT NOT NULL DEFAULT '';
