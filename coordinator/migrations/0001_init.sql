-- Berth coordinator schema. Written once for both SQLite and PostgreSQL:
-- TEXT and BIGINT only, flags as 0/1, no dialect-specific defaults.

-- The cluster CA (one row). Kept in the store so that every coordinator of
-- an HA pair signs with the same CA.
CREATE TABLE ca (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    used_by_node TEXT
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    -- joined (certificate issued, never registered), ready, unreachable, lost
    status TEXT NOT NULL,
    cordoned BIGINT NOT NULL DEFAULT 0,
    draining BIGINT NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    cached_images TEXT NOT NULL DEFAULT '[]',
    cap_cpu_millis BIGINT NOT NULL DEFAULT 0,
    cap_memory_bytes BIGINT NOT NULL DEFAULT 0,
    cap_disk_bytes BIGINT NOT NULL DEFAULT 0,
    cap_slots BIGINT NOT NULL DEFAULT 0,
    -- What placed workspaces hold. Placement increments these only with a
    -- guarded UPDATE (... WHERE alloc + need <= cap), so two schedulers can
    -- never overcommit a node; the CHECKs catch any bug in the releases.
    alloc_cpu_millis BIGINT NOT NULL DEFAULT 0 CHECK (alloc_cpu_millis >= 0),
    alloc_memory_bytes BIGINT NOT NULL DEFAULT 0 CHECK (alloc_memory_bytes >= 0),
    alloc_disk_bytes BIGINT NOT NULL DEFAULT 0 CHECK (alloc_disk_bytes >= 0),
    alloc_slots BIGINT NOT NULL DEFAULT 0 CHECK (alloc_slots >= 0),
    agent_version TEXT NOT NULL DEFAULT '',
    joined_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    status_since_ms BIGINT NOT NULL
);

CREATE TABLE workspaces (
    -- Also the workspace's name on its node.
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    image TEXT NOT NULL,
    cpu_millis BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    disk_bytes BIGINT NOT NULL,
    pids BIGINT NOT NULL,
    env TEXT NOT NULL,
    node_selector TEXT NOT NULL,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    node TEXT REFERENCES nodes (id),
    -- Fencing token sent with every command; bumped on every change of intent.
    generation BIGINT NOT NULL,
    -- Row version for compare-and-set updates.
    version BIGINT NOT NULL,
    reason TEXT,
    ip TEXT,
    exit_code BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    state_since_ms BIGINT NOT NULL
);
-- A name is unique per owner among the workspaces that are not deleted.
CREATE UNIQUE INDEX workspaces_owner_name ON workspaces (owner, name) WHERE state <> 'deleted';
CREATE INDEX workspaces_state ON workspaces (state);
CREATE INDEX workspaces_node ON workspaces (node);

-- One row per placement decision; the primary key makes a second placement
-- of the same workspace generation impossible, whichever coordinator tries.
CREATE TABLE placements (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    generation BIGINT NOT NULL,
    node TEXT NOT NULL REFERENCES nodes (id),
    placed_at_ms BIGINT NOT NULL,
    placed_by TEXT NOT NULL,
    PRIMARY KEY (workspace_id, generation)
);
