//! What a workspace holds on its node, as a pure function of its lifecycle
//! state. The store applies the difference between what a workspace held and
//! what it holds next in the transaction that changes its state, so a node's
//! allocation is, by construction, the sum of what its workspaces hold (and
//! can be recomputed from the rows: `repair`). A release is never applied
//! twice because nothing is released that the previous state did not hold.

use crate::domain::lifecycle::State;
use crate::domain::scheduler::Resources;

/// What a workspace in `state` on `node` holds of `r`: all of it while it
/// may run (and while unknown: it may still run), its disk only while its
/// volume merely exists (stopped, failed, being deleted), nothing unplaced.
pub fn held(state: State, node: Option<&str>, r: Resources) -> Resources {
    if node.is_none() {
        return Resources::default();
    }
    match state {
        State::Pending | State::Deleted => Resources::default(),
        State::Scheduled | State::Starting | State::Running | State::Stopping | State::Unknown => r,
        State::Stopped | State::Failed | State::Deleting => Resources {
            disk_bytes: r.disk_bytes,
            ..Resources::default()
        },
    }
}

/// A change of a node's allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    /// Workspaces counted against the node's slots (those holding anything).
    pub slots: i64,
}

impl Delta {
    /// From holding `prev` to holding `next`.
    pub fn between(prev: Resources, next: Resources) -> Self {
        let d = |a: u64, b: u64| {
            i64::try_from(b).unwrap_or(i64::MAX) - i64::try_from(a).unwrap_or(i64::MAX)
        };
        let holds = |r: Resources| i64::from(r != Resources::default());
        Self {
            cpu_millis: d(prev.cpu_millis, next.cpu_millis),
            memory_bytes: d(prev.memory_bytes, next.memory_bytes),
            disk_bytes: d(prev.disk_bytes, next.disk_bytes),
            slots: holds(next) - holds(prev),
        }
    }

    /// The change of a workspace leaving `node` entirely (what it held goes).
    pub fn release(prev: Resources) -> Self {
        Self::between(prev, Resources::default())
    }

    /// Whether the change takes anything more (then it needs room).
    pub fn grows(&self) -> bool {
        self.cpu_millis > 0 || self.memory_bytes > 0 || self.disk_bytes > 0 || self.slots > 0
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a start found no room on its node, e.g. "node n1 is full: 500m CPU short".
pub fn shortfall(node: &str, free: Resources, need: Resources) -> String {
    let mut short = Vec::new();
    if need.cpu_millis > free.cpu_millis {
        short.push(format!("{}m CPU", need.cpu_millis - free.cpu_millis));
    }
    if need.memory_bytes > free.memory_bytes {
        short.push(format!(
            "{} MiB memory",
            (need.memory_bytes - free.memory_bytes).div_ceil(1 << 20)
        ));
    }
    if need.disk_bytes > free.disk_bytes {
        short.push(format!(
            "{} MiB disk",
            (need.disk_bytes - free.disk_bytes).div_ceil(1 << 20)
        ));
    }
    if short.is_empty() {
        format!("waiting for room on node {node}")
    } else {
        format!(
            "waiting for room on node {node}: {} short",
            short.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Resources = Resources {
        cpu_millis: 500,
        memory_bytes: 1 << 30,
        disk_bytes: 4 << 30,
    };

    #[test]
    fn stopped_holds_disk_only_and_unplaced_nothing() {
        assert_eq!(held(State::Running, Some("n"), R), R);
        assert_eq!(held(State::Unknown, Some("n"), R), R);
        let disk = held(State::Stopped, Some("n"), R);
        assert_eq!(
            (disk.cpu_millis, disk.memory_bytes, disk.disk_bytes),
            (0, 0, 4 << 30)
        );
        assert_eq!(held(State::Failed, Some("n"), R), disk);
        assert_eq!(held(State::Deleting, Some("n"), R), disk);
        assert_eq!(held(State::Deleted, Some("n"), R), Resources::default());
        assert_eq!(held(State::Running, None, R), Resources::default());
    }

    #[test]
    fn the_failed_then_deleted_path_releases_once() {
        // The double release of issue 9: running -> failed -> deleting -> deleted.
        let path = [
            State::Running,
            State::Failed,
            State::Deleting,
            State::Deleted,
        ];
        let mut alloc = Delta::between(Resources::default(), held(path[0], Some("n"), R));
        for w in path.windows(2) {
            let d = Delta::between(held(w[0], Some("n"), R), held(w[1], Some("n"), R));
            alloc.cpu_millis += d.cpu_millis;
            alloc.memory_bytes += d.memory_bytes;
            alloc.disk_bytes += d.disk_bytes;
            alloc.slots += d.slots;
        }
        assert!(alloc.is_zero(), "{alloc:?}");
        let start = Delta::between(
            held(State::Stopped, Some("n"), R),
            held(State::Starting, Some("n"), R),
        );
        assert!(start.grows() && start.slots == 0 && start.disk_bytes == 0);
        assert!(!Delta::release(R).grows());
    }

    #[test]
    fn shortfall_names_what_is_missing() {
        let free = Resources {
            cpu_millis: 200,
            memory_bytes: 2 << 30,
            disk_bytes: 0,
        };
        assert_eq!(
            shortfall("n1", free, R),
            "waiting for room on node n1: 300m CPU, 4096 MiB disk short"
        );
    }
}
