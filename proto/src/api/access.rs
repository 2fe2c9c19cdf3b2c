//! Who may do what: roles, API tokens, SSH keys, sign-in links.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The role of an API token's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses "admin" or "member".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// Request for an API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9._@-]{1,64}$"))]
    pub user: String,
    /// admin or member.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(admin|member)$"))]
    pub role: String,
}

/// A new API token: shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiTokenCreated {
    pub token: String,
    pub user: String,
    pub role: String,
}

/// Who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    pub user: String,
    pub role: String,
}

/// A public key to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    /// One OpenSSH public key line, e.g. the contents of `~/.ssh/id_ed25519.pub`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 16384, pattern = "^[^\\u0000]*$")
    )]
    pub public_key: String,
    /// A label (default: the key's comment). Printable, at most 100 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 100, pattern = "^[ -~]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A registered SSH key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SshKey {
    pub id: String,
    pub name: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key, OpenSSH format, without comment.
    pub public_key: String,
    pub created_at_ms: i64,
}

/// The host key a workspace's SSH server presents (its node's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SshHostKey {
    pub node: String,
    /// OpenSSH public key, e.g. `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// Where a new sign-in link leads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// A page under /w/, e.g. /w/demo/terminal.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^/w/([!-.0-\[\]-~]+/)*[!-.0-\[\]-~]*$", max_length = 1024)
    )]
    pub next: String,
}

/// A one-time sign-in link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SignInLink {
    /// Path on this coordinator; opening it signs the browser in and goes to `next`.
    pub url: String,
    pub expires_in_seconds: u64,
}
