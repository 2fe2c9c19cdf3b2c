-- SSH: users' public keys (the agents get them with each SSH connection)
-- and each node's host key (what `berth ssh --known-hosts` prints).

CREATE TABLE ssh_keys (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    -- "ssh-ed25519 AAAA..." without the comment.
    public_key TEXT NOT NULL,
    -- "SHA256:..." as ssh-keygen -l prints it.
    fingerprint TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (owner, fingerprint)
);

CREATE INDEX ssh_keys_owner ON ssh_keys (owner);

ALTER TABLE nodes ADD COLUMN ssh_host_key TEXT NOT NULL DEFAULT '';
