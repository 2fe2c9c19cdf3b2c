//! What admins read: the audit log.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// One audit log entry: a state-changing API request or a tunnel session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    /// Its place in the chain, from 1, without gaps.
    pub seq: i64,
    pub at_ms: i64,
    /// The user acting ("" for an anonymous request).
    pub actor: String,
    /// The id of the API token used (the `<id>` of `bt_<id>_…`).
    pub token_id: String,
    /// admin or member ("" for none).
    pub role: String,
    pub source_ip: String,
    pub user_agent: String,
    /// Method and route template, e.g. `POST /v1/workspaces/{name}/stop`.
    pub action: String,
    /// The request's path, with the owner it names (`?owner=`).
    pub resource: String,
    /// The HTTP status answered (101: a tunnel session opened).
    pub status: i64,
    /// The error code of a refusal or failure ("" on success).
    pub error_code: String,
    /// Also the `X-Request-Id` header of the answer.
    pub request_id: String,
    /// What changed, as JSON: the request (secrets left out) and the
    /// workspace's state before and after.
    pub diff: String,
    /// HMAC-SHA256 over the entry and the previous entry's MAC.
    pub mac: String,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<i64>,
}

/// Whether the audit log's chain holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked before the first break (all of them when ok).
    pub checked: i64,
    /// Entries written, by the chain's head.
    pub written: i64,
    /// Where the chain breaks, e.g. "entry 17 does not match its MAC".
    pub problem: Option<String>,
    /// The entry at which it breaks.
    pub broken_at: Option<i64>,
}
