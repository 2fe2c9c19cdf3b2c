//! Review requests (`docs/portal.md`, "Reviews"): a workspace submitted for
//! review with a note and a priority; pending → in_review → approved or
//! changes_requested; a change requested is resubmitted as pending.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How soon a review is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReviewPriority {
    Low,
    #[default]
    Normal,
    High,
}

impl ReviewPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewPriority::Low => "low",
            ReviewPriority::Normal => "normal",
            ReviewPriority::High => "high",
        }
    }
}

/// `POST /v1/workspaces/{name}/reviews`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// What to look at (at most 2000 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub note: String,
    #[serde(default)]
    pub priority: ReviewPriority,
}

/// A step's comment (`approve`, `request-changes`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviewStep {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub comment: String,
}

/// A review request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Review {
    pub id: String,
    pub workspace: String,
    pub owner: String,
    pub note: String,
    pub priority: String,
    /// pending, in_review, approved or changes_requested.
    pub state: String,
    pub requested_by: String,
    /// Who took it ("" while pending).
    pub reviewer: String,
    /// The reviewer's last comment.
    pub comment: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
