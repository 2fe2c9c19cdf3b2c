//! A node as the coordinator keeps it, and when silence changes its
//! status. Pure.

use crate::domain::scheduler::Resources;
pub use berth_proto::api::NodeStatus;
use std::collections::{BTreeMap, BTreeSet};

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub status: NodeStatus,
    pub cordoned: bool,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    pub cached_images: BTreeSet<String>,
    /// Keys of the prebuild layers the node holds.
    pub cached_prebuilds: BTreeSet<String>,
    pub capacity: Resources,
    pub slots: u32,
    pub allocated: Resources,
    pub allocated_slots: u32,
    pub agent_version: String,
    /// The node's SSH host key (OpenSSH public key), "" before it registered.
    pub ssh_host_key: String,
    pub joined_at_ms: i64,
    pub last_seen_ms: i64,
    pub status_since_ms: i64,
    /// A drain's deadline (Unix ms): its running workspaces move then; 0:
    /// none pending.
    pub drain_deadline_ms: i64,
}

/// Why a join token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    Unknown,
    Expired,
    /// Every one of its uses is spent.
    Used,
    Revoked,
}

/// What a node says about itself when it (re)connects.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub capacity: Resources,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub cached: BTreeSet<String>,
    pub prebuilds: BTreeSet<String>,
    pub agent_version: String,
    pub ssh_host_key: String,
}

/// How long a node may be silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// Past this, nothing new is placed on it.
    pub unreachable_after_ms: i64,
    /// Past this, its workspaces are unknown.
    pub lost_after_ms: i64,
}

/// The status a node moves to after `silent_ms` without a word, if it
/// changes. `may_lose`: the coordinator has run a whole lost period itself
/// (after a restart nobody is declared lost before agents could reconnect).
pub fn after_silence(
    status: NodeStatus,
    silent_ms: i64,
    may_lose: bool,
    s: Silence,
) -> Option<NodeStatus> {
    match status {
        NodeStatus::Ready if silent_ms > s.unreachable_after_ms => Some(NodeStatus::Unreachable),
        NodeStatus::Unreachable if may_lose && silent_ms > s.lost_after_ms => {
            Some(NodeStatus::Lost)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_makes_a_node_unreachable_then_lost() {
        let s = Silence {
            unreachable_after_ms: 10,
            lost_after_ms: 60,
        };
        use NodeStatus::*;
        for (status, silent, may_lose, next) in [
            (Ready, 5, true, None),
            (Ready, 11, true, Some(Unreachable)),
            (Ready, 100, true, Some(Unreachable)),
            (Unreachable, 50, true, None),
            (Unreachable, 61, true, Some(Lost)),
            (Unreachable, 61, false, None),
            (Lost, 1000, true, None),
            (Joined, 1000, true, None),
        ] {
            assert_eq!(
                after_silence(status, silent, may_lose, s),
                next,
                "{status:?} {silent}"
            );
        }
    }
}
