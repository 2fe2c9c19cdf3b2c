//! Nodes and joining them.

use super::whole;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A node's standing with the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Its certificate was issued; it never registered.
    Joined,
    Ready,
    /// Silent past the unreachable timeout: nothing new is placed on it.
    Unreachable,
    /// Silent past the lost timeout: its workspaces are unknown.
    Lost,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Joined => "joined",
            NodeStatus::Ready => "ready",
            NodeStatus::Unreachable => "unreachable",
            NodeStatus::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            NodeStatus::Joined,
            NodeStatus::Ready,
            NodeStatus::Unreachable,
            NodeStatus::Lost,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Node {
    pub id: String,
    pub status: NodeStatus,
    pub connected_here: bool,
    pub cordoned: bool,
    pub draining: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub cached_images: Vec<String>,
    pub capacity: NodeResources,
    pub allocated: NodeResources,
    pub agent_version: String,
    pub last_seen_ms: i64,
    /// Draining, and nothing of its workspaces needs it any more: none
    /// runs or is on its way, each stopped one's stop is backed up.
    #[serde(default)]
    pub drained: bool,
    /// A drain's deadline (Unix ms): what still runs on it then stops and
    /// moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<i64>,
}

/// `POST /v1/nodes/{id}/drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct DrainBody {
    /// Let running workspaces run (warned) this long before they stop and
    /// move; 0 (the default): at once. At most 7 days.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    #[serde(deserialize_with = "super::whole::u64")]
    pub deadline_seconds: u64,
}

/// Amounts of resources on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub workspaces: u32,
}

/// Request for a join token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds: Option<u64>,
    /// How many nodes may join with it (default 1: one-time; at most
    /// 10000). A DaemonSet's Secret needs one for every node it may run on.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub uses: Option<u32>,
}

/// A new join token: shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JoinTokenCreated {
    pub token: String,
    pub expires_at_ms: i64,
}
