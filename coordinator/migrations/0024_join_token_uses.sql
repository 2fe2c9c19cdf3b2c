-- A join token may join several nodes (a DaemonSet's one Secret, every node
-- of a Kubernetes cluster: docs/install.md): `uses` of at most `max_uses`,
-- until it expires or is revoked. Tokens made before were one-time: a used
-- one has had its one use.
ALTER TABLE join_tokens ADD COLUMN max_uses BIGINT NOT NULL DEFAULT 1;
ALTER TABLE join_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE join_tokens ADD COLUMN revoked_at_ms BIGINT;
UPDATE join_tokens SET uses = 1 WHERE used_at_ms IS NOT NULL;
