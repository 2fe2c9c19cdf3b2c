-- Review requests (docs/portal.md, "Reviews"): a workspace submitted for
-- review by whoever may act on it, taken and decided by someone else who
-- may read it. Each step is a conditional UPDATE on `state`.
CREATE TABLE reviews (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    note TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX reviews_workspace ON reviews (workspace_id);
