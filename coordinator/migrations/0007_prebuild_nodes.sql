-- Prebuilds between nodes (docs/prebuilds.md): where a ready prebuild's
-- layer is in the registry (REPOSITORY@sha256:DIGEST, empty: only on the
-- node that built it), and which prebuild layers each node holds.
ALTER TABLE prebuilds ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN cached_prebuilds TEXT NOT NULL DEFAULT '[]';
