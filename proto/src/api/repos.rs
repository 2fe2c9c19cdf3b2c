//! Workspaces from a repository: what a create names, what the workspace
//! reports of its clone and lifecycle steps, sync, and the git credentials
//! a user keeps for the hosts of their repositories.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The repository a workspace is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// http(s) URL of the repository, without credentials (keep those with
    /// `POST /v1/git-credentials`).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^https?://((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[A-Za-z0-9._~/-]*[A-Za-z0-9_~-]$",
            max_length = 2048
        )
    )]
    pub url: String,
    /// Branch to check out; the remote's default when omitted.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[A-Za-z0-9_+][A-Za-z0-9_+-]*([./][A-Za-z0-9_+-]+)*$",
            max_length = 255
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit to check out (hex, 4 to 64 digits); the branch's head when omitted.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{4,64}$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A partial clone (`--filter=blob:none`), for big repositories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Replaces the command detected for a repository without
    /// devcontainer.json (an empty string runs none).
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 4096, pattern = "^[^\\u0000]*$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_command: Option<String>,
}

/// A step of making a repository workspace ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InitStep {
    /// clone, configure, onCreateCommand, updateContentCommand,
    /// postCreateCommand or postStartCommand.
    pub name: String,
    /// pending, running, done, failed or skipped.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of a failed step's output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
    /// A failed step's error code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
}

/// A port the configuration forwards, with its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ForwardPort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// What a repository workspace reports of its clone and configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Init {
    /// The commit checked out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// Where the repository is inside the workspace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folder: String,
    /// What configured it: a devcontainer.json path, "detected: <kind>" or "none".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default)]
    pub steps: Vec<InitStep>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ForwardPort>,
    /// The prebuild it started from, when one was found for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuild: Option<PrebuildUse>,
}

/// `POST /v1/workspaces/{name}/sync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    /// `git push` instead of `git pull --rebase`.
    #[serde(default)]
    pub push: bool,
}

/// How a sync went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncResult {
    /// up_to_date, fast_forwarded, rebased, conflict, pushed, rejected or failed.
    pub outcome: String,
    /// Files in conflict, or git's lines for a refused push.
    #[serde(default)]
    pub files: Vec<String>,
    pub message: String,
    /// The head after the sync.
    pub commit: String,
}

/// `POST /v1/git-credentials`: a token for the repositories of one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddGitCredential {
    /// Host name (and port), as in the repository URLs: `git.example`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$",
            max_length = 259
        )
    )]
    pub host: String,
    /// The token (a password for HTTP Basic authentication). Stored
    /// encrypted; never shown again.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 4096,
            pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
        )
    )]
    pub token: String,
    /// User name sent with it; default `x-access-token`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = "^[ -~]*$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A stored git credential (its token is never returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GitCredential {
    pub host: String,
    pub username: String,
    pub created_at_ms: i64,
}

/// The prebuild a repository workspace started from (`Init::prebuild`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrebuildUse {
    pub key: String,
    /// The commit it was built at.
    pub commit: String,
    pub built_at_ms: i64,
    /// used, updated (the branch moved on: fetched, updateContentCommand
    /// again) or missing (not on the workspace's node: cloned instead).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// `POST /v1/prebuilds`: build a prebuild of a repository's branch now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunPrebuild {
    pub repo: Repo,
    /// The image of the build (and of the workspaces that use it); the
    /// coordinator's default when omitted.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(localhost|[!-.0-?A-~]*[.:][!-.0-?A-~]*)/[a-z0-9._-]+(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?$",
            max_length = 512
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The tier whose resources the build gets; default as for a workspace.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A prebuild: a repository's /workspace after its clone, onCreateCommand
/// and updateContentCommand, held as a layer by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Prebuild {
    pub id: String,
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// building, ready or failed.
    pub state: String,
    /// Repository + commit + configuration hash (empty until built).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// The node that built it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The nodes holding its layer now (the builder, and those that pulled it).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Where nodes pull its layer from: REPOSITORY@sha256:DIGEST in the
    /// registry (`[prebuilds] registry`); empty when it was not pushed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Size of the layer.
    pub bytes: u64,
    pub files: u64,
    /// A failed build's error code and message (the end of its log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The build's steps.
    #[serde(default)]
    pub steps: Vec<InitStep>,
    pub requested_by: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: i64,
}

/// What `POST /v1/webhooks/git` did with a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookResult {
    /// A push: started, queued (behind a build of the same branch) or
    /// ignored. A pull request: workspace_created, workspace_deleted or ignored.
    pub outcome: String,
    /// Why it was ignored (not a push, a branch not configured).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuild: Option<Prebuild>,
    /// The pull request's workspace (its owner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}
