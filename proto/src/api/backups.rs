//! Backups: each confirmed backup of a workspace's own data, the state of
//! its backups, and restoring one.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The environment restic may be given for a backup store: its
/// credentials, never a variable that changes what it runs or where it
/// writes (the coordinator's configuration and the agent both check it).
pub const STORE_ENV: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "RESTIC_COMPRESSION",
];

/// One confirmed backup (a restic snapshot in the workspace's repository).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Backup {
    /// restic's snapshot id.
    pub id: String,
    /// The instant it holds (Unix ms).
    pub taken_at_ms: i64,
    /// The node it was taken on.
    pub node: String,
    /// Bytes new to the store (after deduplication, before compression).
    pub bytes_added: u64,
    /// Bytes and files it covers.
    pub bytes_total: u64,
    pub files: u64,
    /// "snapshot" (one instant of the running workspace), "stopped"
    /// (nothing ran) or "live" (read while it ran: its node's volumes
    /// cannot be cloned).
    pub consistency: String,
    /// How long the workload's writes waited for it (ms).
    pub pause_ms: u32,
    pub duration_ms: u64,
    /// What it covers, relative to the volume ("workspace", "rootfs/upper/home", ...).
    pub paths: Vec<String>,
    /// Bytes under /workspace it left out because a .gitignore ignores
    /// them (when the workspace asks for that; else 0).
    #[serde(default)]
    pub bytes_excluded: u64,
}

/// The state of a workspace's backups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BackupStatus {
    /// The newest confirmed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Backup>,
    /// How many confirmed backups there are.
    pub count: u64,
    /// Consecutive failed attempts, and the last one's error.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next backup is due (Unix ms; absent: none is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<i64>,
    /// Its latest move to another node from a backup: where from, and why,
    /// including what did not come with it (`GET` of one workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
    /// A delete waits for the backup of its stop since then (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_requested_at_ms: Option<i64>,
    /// Its backups leave out what its .gitignore files ignore.
    #[serde(default)]
    pub exclude_ignored: bool,
}

/// `POST /v1/workspaces/{name}/backups/settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Leave out of its backups what its repository's .gitignore files
    /// ignore (`node_modules`, build output: what the prebuild or init can
    /// make again). Off by default: an ignored `.env` can matter.
    pub exclude_ignored: bool,
}

/// A workspace's move to another node, restored from one of its backups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Moved {
    pub from_node: String,
    pub backup_id: String,
    /// Why, and what the backup does not hold when it does not hold all.
    pub why: String,
    pub requested_at_ms: i64,
    /// When the new node had restored it; absent while it is on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at_ms: Option<i64>,
}

/// `GET /v1/workspaces/{name}/backups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Backups {
    pub status: BackupStatus,
    /// Newest first.
    pub backups: Vec<Backup>,
}

/// `POST /v1/workspaces/{name}/restore`: a backup by id, or the newest
/// taken at or before `at` (RFC 3339); neither: the newest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{8,64}$"))]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: Option<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Restored {
    pub backup: Backup,
    pub duration_ms: u64,
    /// Set when the workspace's node is lost: it starts on another node
    /// from this backup (changes made after it are not in it), and
    /// `duration_ms` is 0: the restore happens as it is created there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}
