-- Usage and capacity history (docs/admin.md, "Capacity and cost"): per
-- workspace and hour, how long it ran, how long of that it was idle, and
-- what its reservations cost; per hour, the fleet's allocation (the
-- forecast's samples). `last_ms` keeps two coordinators from counting one
-- interval twice.
CREATE TABLE usage_hours (
    hour_ms BIGINT NOT NULL,
    workspace_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    tier TEXT NOT NULL,
    running_ms BIGINT NOT NULL,
    idle_ms BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    idle_cost DOUBLE PRECISION NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, workspace_id)
);
CREATE TABLE capacity_hours (
    hour_ms BIGINT PRIMARY KEY,
    cpu_allocated BIGINT NOT NULL,
    cpu_allocatable BIGINT NOT NULL,
    memory_allocated BIGINT NOT NULL,
    memory_allocatable BIGINT NOT NULL,
    disk_allocated BIGINT NOT NULL,
    disk_allocatable BIGINT NOT NULL,
    workspaces_allocated BIGINT NOT NULL,
    workspaces_allocatable BIGINT NOT NULL
);
