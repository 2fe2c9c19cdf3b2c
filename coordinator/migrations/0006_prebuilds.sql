-- Prebuilds (docs/prebuilds.md): a build of a repository's branch (at a
-- commit a push named, else its head), and the layer it made once ready
-- (key = repository + commit + configuration hash), held by the node that
-- built it.
CREATE TABLE prebuilds (
    id TEXT PRIMARY KEY,
    repo_url TEXT NOT NULL,
    branch TEXT NOT NULL,
    -- queued, building, ready, failed, superseded (a newer push came
    -- while it was queued) or expired (more than `keep` newer ones).
    state TEXT NOT NULL,
    -- What the build runs with (empty: the defaults).
    image TEXT NOT NULL DEFAULT '',
    tier TEXT NOT NULL DEFAULT '',
    pkey TEXT NOT NULL DEFAULT '',
    commit_sha TEXT NOT NULL DEFAULT '',
    config_hash TEXT NOT NULL DEFAULT '',
    folder TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    bytes BIGINT NOT NULL DEFAULT 0,
    files BIGINT NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    steps TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX prebuilds_repo ON prebuilds (repo_url, branch, state);
