-- Workspace ports whose HTTP previews anyone may open (the owner always can).
CREATE TABLE public_ports (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    port BIGINT NOT NULL CHECK (port BETWEEN 1 AND 65535),
    PRIMARY KEY (workspace_id, port)
);
