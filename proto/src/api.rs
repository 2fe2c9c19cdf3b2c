//! The REST API's request and response types (`/v1`), defined once for the
//! coordinator that serves them, the CLI and the tests that call them. With
//! the `openapi` feature (the coordinator's) they also describe themselves
//! for the OpenAPI document; the bounds and patterns given there are the
//! ones the coordinator enforces.

mod access;
mod admin;
mod backups;
mod files;
mod idle;
mod nodes;
mod repos;
mod reviews;
mod secrets;
mod tunnels;

pub use access::*;
pub use admin::*;
pub use backups::*;
pub use files::*;
pub use idle::*;
pub use nodes::*;
pub use repos::*;
pub use reviews::*;
pub use secrets::*;
pub use tunnels::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;
/// The pattern of a workspace name (also a DNS label).
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$";

/// Where a workspace is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Scheduled,
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Deleted,
    Failed,
    Unknown,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 10] = [
        State::Pending,
        State::Scheduled,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Deleting,
        State::Deleted,
        State::Failed,
        State::Unknown,
    ];

    /// The lowercase name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Scheduled => "scheduled",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Deleting => "deleting",
            State::Deleted => "deleted",
            State::Failed => "failed",
            State::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
    Deleted,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Desired::Running, Desired::Stopped, Desired::Deleted]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Integers as JSON Schema counts them: `3` and `3.0` are the same integer.
pub mod whole {
    use serde::{de::Error, Deserialize, Deserializer};

    fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        if let Some(v) = n.as_u64() {
            return Ok(Some(v));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
                Ok(Some(f as u64))
            }
            _ => Err(D::Error::custom(format!(
                "invalid value {n}: expected a non-negative integer"
            ))),
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        num(d)
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        num(d)?.ok_or_else(|| D::Error::custom("expected a non-negative integer, not null"))
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match num(d)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("invalid value {v}: too large"))),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `not_found`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// Request to create a workspace. Resources come from the tier (default
/// `small`), each overridable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1 to 40 of a-z, 0-9 and '-'; unique among the caller's workspaces.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    )]
    pub name: String,
    /// Image reference, host[:port]/repository[:tag][@sha256:digest] (the
    /// host names a registry: it has a '.' or ':' or is localhost).
    /// Omitted: the coordinator's default image (`--default-image`), if it has one.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(localhost|[!-.0-?A-~]*[.:][!-.0-?A-~]*)/[a-z0-9._-]+(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?$",
            max_length = 512
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource tier (see `GET /v1/tiers`; the built-in ones are small,
    /// medium and large); default `small`, or the first configured tier.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// CPU in thousandths of a core.
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 64000))]
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_millis: Option<u32>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 16777216, maximum = 274877906944_u64)
    )]
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_bytes: Option<u64>,
    /// Size of the persistent /workspace volume.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 16777216, maximum = 1099511627776_u64)
    )]
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_bytes: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 16, maximum = 65536))]
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids: Option<u32>,
    /// Environment variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Labels a node must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Start once placed (default true). A workspace from a repository
    /// created with `false` runs for its clone and configuration (up to
    /// `waitFor`), then stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Make it from a repository: cloned into it, configured by its
    /// devcontainer.json (or by what the repository looks like), running
    /// once the configuration's `waitFor` step is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<Repo>,
    /// The team it belongs to (the caller must be its admin or member):
    /// the team's members see and act on it by role.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// A workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub image: String,
    pub state: State,
    pub desired: Desired,
    pub node: Option<String>,
    pub generation: u64,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub exit_code: Option<i64>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The tier it was created from.
    #[serde(default)]
    pub tier: String,
    /// The team it belongs to ("" for none).
    #[serde(default)]
    pub team: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The repository it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<Repo>,
    /// Its clone and lifecycle steps, as its node last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    /// While its node makes it: how far the pull it waits on got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// While it runs: awake or idle, why, and when the idle policy stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    /// Its backups: the newest, how many, failures (`GET` of one workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// While it runs: what it uses, as its node last said (each heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a running workspace uses now, beside what it is given
/// (`cpu_millis`, `memory_bytes`, `disk_bytes` of [`Workspace`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Usage {
    /// CPU over the node's last heartbeat interval, in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory charged to its cgroup (page cache included).
    pub memory_bytes: u64,
    /// Bytes used on its volume.
    pub disk_bytes: u64,
    /// When its node measured it.
    pub at_ms: i64,
}

/// How far a pull a workspace waits on got (an image, or a prebuild layer
/// from the registry), as its node reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Progress {
    /// "image" or "prebuild".
    pub what: String,
    /// The image reference, or the prebuild's key.
    pub reference: String,
    /// "fetching" or "unpacking".
    pub phase: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub done_layers: u32,
    pub total_layers: u32,
}

/// A change of a workspace, as the event stream shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkspaceEvent {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub state: State,
    pub desired: Desired,
    pub node: Option<String>,
    pub generation: u64,
    pub reason: Option<String>,
    pub at_ms: i64,
    /// Set on an event that reports a pull's progress (the state is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// A command to run in a workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments (no NUL).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 4096))]
    pub argv: Vec<String>,
    /// Environment variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory, absolute (default /workspace).
    #[cfg_attr(feature = "openapi", schema(pattern = "^/[^\\u0000]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Text given on standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Seconds before the call gives up (default 60, at most 3600).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_seconds: Option<u64>,
    /// Who runs the command: the workspace's user (default, no capabilities)
    /// or root of the workspace's own user namespace (not root on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ExecUser>,
}

/// Who an exec runs as inside the workspace.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExecUser {
    User,
    Root,
}

/// What a command did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecResult {
    pub exit_code: i32,
    /// Standard output (UTF-8, invalid bytes replaced), at most 1 MiB.
    pub stdout: String,
    /// Standard error, at most 1 MiB.
    pub stderr: String,
    /// Output past 1 MiB per stream was dropped (the command ran to its end).
    #[serde(default)]
    pub truncated: bool,
}

/// A resource tier: a workspace's default resources and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Tier {
    pub name: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
    /// Workspaces of this tier may create nested user namespaces (rootless
    /// tools inside); refused by seccomp otherwise.
    #[serde(default)]
    pub nested_userns: bool,
    /// Private IPv4 ranges its workspaces may reach beyond the egress
    /// policy (DNS and the internet); cloud metadata never.
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// A running workspace idle this long is stopped (0: never).
    #[serde(default = "tier_defaults::idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Its open terminals are warned this long before (0: no warning).
    #[serde(default = "tier_defaults::idle_warning")]
    pub idle_warning_seconds: u64,
    /// A running workspace is stopped after running this long, idle or
    /// not (0: no limit).
    #[serde(default)]
    pub max_lifetime_seconds: u64,
    /// The longest `berth keepalive` allowed.
    #[serde(default = "tier_defaults::max_keepalive")]
    pub max_keepalive_seconds: u64,
    /// The longest idle timeout a workspace may set for itself (`berth
    /// idle-timeout`); 0: at most the tier's `idle_timeout_seconds` (a
    /// workspace may shorten it, not lengthen it).
    #[serde(default)]
    pub max_idle_timeout_seconds: u64,
    /// A workspace stopped this long is deleted, once a backup holds all
    /// it had (0: never); its backups are kept.
    #[serde(default)]
    pub stopped_ttl_seconds: u64,
}

/// The caller's own settings (`GET /v1/config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserConfig {
    /// The dotfiles repository applied to each new workspace: cloned into
    /// ~/.dotfiles and installed (docs/repositories.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dotfiles: Option<String>,
}

/// `PUT /v1/config/dotfiles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetDotfiles {
    /// An http(s) URL without credentials (as a repository's); null: none.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^https?://((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[A-Za-z0-9._~/-]*[A-Za-z0-9_~-]$",
            max_length = 2048
        )
    )]
    #[serde(default)]
    pub url: Option<String>,
}

/// The idle policy a tier has unless its configuration says otherwise.
pub mod tier_defaults {
    pub fn idle_timeout() -> u64 {
        30 * 60
    }
    pub fn idle_warning() -> u64 {
        5 * 60
    }
    pub fn max_keepalive() -> u64 {
        8 * 3600
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_and_write_as_the_api_spells_them() {
        for s in State::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            NodeStatus::parse("unreachable"),
            Some(NodeStatus::Unreachable)
        );
        assert_eq!(Role::parse("member"), Some(Role::Member));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let c: CreateWorkspace =
            serde_json::from_str(r#"{"name": "a", "cpu_millis": 3.0, "memory_bytes": 16777216}"#)
                .unwrap();
        assert_eq!((c.cpu_millis, c.memory_bytes), (Some(3), Some(16 << 20)));
        assert!(serde_json::from_str::<CreateWorkspace>(r#"{"name": "a", "pids": 1.5}"#).is_err());
    }
}
