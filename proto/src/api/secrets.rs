//! Secrets (`docs/admin.md`, "Secrets"): a user's or a team's, given to
//! their workspaces as environment variables or files. Their values are
//! write-only: no answer carries one.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How a secret reaches a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// An environment variable of every process Berth starts in the
    /// workspace (shells, `berth exec`, lifecycle commands); a change takes
    /// effect at the workspace's next start.
    #[default]
    Env,
    /// A file `/run/secrets/<name>` (read-only, the workspace user's,
    /// mode 0400); a change takes effect at once in running workspaces.
    File,
}

/// A secret to set: exactly one of `value` (UTF-8) and `value_base64`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 65536))]
    pub value: Option<String>,
    /// A binary value (a file secret's), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 87384))]
    pub value_base64: Option<String>,
    #[serde(default)]
    pub kind: SecretKind,
    /// Also given to the repository's prebuilds (which see no other).
    #[serde(default)]
    pub prebuild: bool,
}

/// A secret as listed: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Secret {
    pub name: String,
    /// The team it belongs to; empty for the caller's own.
    #[serde(default)]
    pub team: String,
    pub kind: SecretKind,
    pub prebuild: bool,
    /// The value's size.
    pub bytes: u64,
    /// 1 when set first, one more at each change.
    pub version: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// What setting or removing a secret did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecretChange {
    /// The secret now (absent after a removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Running workspaces whose files changed at once.
    #[serde(default)]
    pub updated: Vec<String>,
    /// Running workspaces that see the change at their next start (an
    /// environment variable, or a node that could not be reached now).
    #[serde(default)]
    pub at_next_start: Vec<String>,
}

/// The largest secret value.
pub const SECRET_MAX_BYTES: usize = 64 << 10;

/// Whether `name` may name a secret: an environment variable's name (and
/// a file's), `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
