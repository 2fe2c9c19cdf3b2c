//! When a workspace's backup is due (pure; `now` passed in): every
//! interval while it runs, once after every stop, and after a failure not
//! before a backoff that doubles up to a bound.

use super::lifecycle::State;
use std::collections::BTreeMap;

/// The `[backups]` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Root of the workspaces' repositories: an absolute path (on each
    /// node: backups survive a workspace, not its node) or `s3:URL`
    /// (shared: a workspace restores anywhere). Each workspace's repository
    /// is `<root>/<workspace id>`.
    pub repository: String,
    /// Environment restic gets for the store (credentials).
    pub env: BTreeMap<String, String>,
    pub interval_ms: i64,
    pub retry_min_ms: i64,
    pub retry_max_ms: i64,
    /// Backups running at once across the cluster.
    pub parallel: usize,
    /// A local-path root is the same store on every node (a shared mount,
    /// e.g. NFS), so a workspace can move to another node from it.
    pub shared_path: bool,
    /// A delete waits for a backup of the workspace stopped (`may_delete`).
    pub before_delete: bool,
    /// What a prune keeps of a workspace's backups (restic's --keep-last,
    /// --keep-daily, --keep-weekly), and how often one runs per workspace.
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub prune_every_ms: i64,
    /// A deleted workspace's backups are dropped this long after its
    /// delete (0: never).
    pub keep_deleted_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            repository: "/var/lib/berth/backups".into(),
            env: BTreeMap::new(),
            interval_ms: 300_000,
            retry_min_ms: 5_000,
            retry_max_ms: 300_000,
            parallel: 4,
            shared_path: false,
            before_delete: true,
            keep_last: 10,
            keep_daily: 7,
            keep_weekly: 4,
            prune_every_ms: 86_400_000,
            keep_deleted_ms: 30 * 86_400_000,
        }
    }
}

/// Whether `r` can be a repository root: an absolute path (no `..`) or
/// `s3:URL`.
pub fn check_repository(r: &str) -> Result<(), &'static str> {
    let local = r.starts_with('/') && !r.split('/').any(|p| p == "..");
    if (local || r.starts_with("s3:")) && !r.chars().any(char::is_control) {
        Ok(())
    } else {
        Err("an absolute path or s3:URL")
    }
}

impl Policy {
    /// Workspace `id`'s repository.
    pub fn repository_of(&self, id: &str) -> String {
        format!("{}/{id}", self.repository.trim_end_matches('/'))
    }

    /// Whether every node reaches the repositories (S3, or a shared path).
    pub fn shared(&self) -> bool {
        self.shared_path || !self.repository.starts_with('/')
    }
}

/// Why a workspace cannot run on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Away {
    /// The node missed its heartbeats past the grace period.
    Lost,
    /// The node was removed from the cluster.
    Gone,
    /// The node is being drained.
    Draining,
    /// The node has no room for its start.
    Full,
    /// It failed there (a start that timed out, a node that lost it).
    Failed,
}

impl Away {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lost => "is lost",
            Self::Gone => "is gone",
            Self::Draining => "is draining",
            Self::Full => "is full",
            Self::Failed => "failed it",
        }
    }
}

/// A workspace's newest confirmed backup, as the move decision reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newest {
    /// The workspace's generation (intent) when it was taken.
    pub generation: u64,
    /// Of the workspace stopped (nothing wrote it meanwhile).
    pub stopped: bool,
    /// Taken by its node after stopping it, cut off from the coordinator
    /// (the agent's `[coordinator] stop_after_seconds`): the node will not
    /// start it again by itself.
    pub fenced: bool,
    pub taken_at_ms: i64,
}

/// What the move decision reads of a workspace and its newest backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveFacts {
    pub state: State,
    pub wants_stopped: bool,
    pub generation: u64,
    pub state_since_ms: i64,
    /// When the coordinator last heard the workspace's node.
    pub node_last_seen_ms: i64,
    pub newest: Option<Newest>,
}

/// Whether a workspace whose node cannot have it may start on another node
/// from its newest backup: only if that backup holds all it has, since its
/// node (lost, gone, draining, full) may still hold newer data. A stopped
/// workspace is held by a backup of it stopped taken since it stopped; an
/// unknown one (its stop time lost with its node) by a backup of it
/// stopped under the intent it still has, when that intent was to stop,
/// or when its node stopped it itself after it stopped hearing from the
/// coordinator (fenced; a fenced backup from an earlier cut is not it).
/// After a failure there is no better copy to wait for, and the newest
/// backup is it.
pub fn may_move(p: &Policy, away: Away, f: &MoveFacts) -> Result<(), &'static str> {
    if !p.shared() {
        return Err("its backups are on its node's own disk ([backups] repository is a local path and shared_path is off)");
    }
    let Some(b) = f.newest else {
        return Err("it has no backup");
    };
    let held = match (away, f.state) {
        (Away::Failed, _) => true,
        (_, State::Stopped) => b.stopped && b.taken_at_ms >= f.state_since_ms,
        (_, State::Unknown) => {
            let fenced_since = b.fenced && b.taken_at_ms > f.node_last_seen_ms;
            b.generation == f.generation && b.stopped && (f.wants_stopped || fenced_since)
        }
        _ => false,
    };
    if held {
        Ok(())
    } else {
        Err("no backup holds what it had when it stopped (it was not stopped, or the backup after the stop was not confirmed)")
    }
}

/// Whether a prune of a workspace's backups is due at `now` (one of them
/// is being taken), its last at `pruned_ms`.
pub fn prune_due(p: &Policy, pruned_ms: i64, now: i64) -> bool {
    now.saturating_sub(pruned_ms) >= p.prune_every_ms
}

/// Whether a workspace deleted at `deleted_ms` has its backups dropped at
/// `now`.
pub fn drop_due(p: &Policy, deleted_ms: i64, now: i64) -> bool {
    p.keep_deleted_ms > 0 && now.saturating_sub(deleted_ms) >= p.keep_deleted_ms
}

/// Whether a workspace may be deleted now without losing work: nothing of
/// it is on a node (never placed, or already going), or a backup of it
/// stopped is confirmed since it stopped. A failed one is never backed up
/// again, and goes too. Else the delete waits: it is stopped first, and
/// deleted once its stop's backup is confirmed.
pub fn may_delete(
    p: &Policy,
    state: State,
    on_node: bool,
    since_ms: i64,
    newest: Option<Newest>,
) -> bool {
    if !p.before_delete {
        return true;
    }
    match state {
        State::Pending | State::Deleting | State::Deleted | State::Failed => true,
        _ if !on_node => true,
        State::Stopped => newest.is_some_and(|b| b.stopped && b.taken_at_ms >= since_ms),
        _ => false,
    }
}

/// What a workspace's backup key is sealed to (with the secrets key).
pub fn sealing_context(workspace_id: &str) -> Vec<u8> {
    [b"backup\0".as_slice(), workspace_id.as_bytes()].concat()
}

/// What the decision reads of a workspace and its backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub state: State,
    pub state_since_ms: i64,
    /// When the newest confirmed backup was taken.
    pub last_backup_ms: Option<i64>,
    /// Consecutive failures, and when the last attempt started.
    pub failures: u32,
    pub last_attempt_ms: i64,
}

/// Why a backup is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The interval passed while it runs.
    Periodic,
    /// It stopped since its last backup.
    Final,
}

/// When the next backup is due (Unix ms), and why; None: none is.
pub fn next(p: &Policy, f: &Facts) -> Option<(i64, Due)> {
    let last = f.last_backup_ms.unwrap_or(i64::MIN);
    let (at, why) = match f.state {
        State::Running => (
            last.max(f.state_since_ms).saturating_add(p.interval_ms),
            Due::Periodic,
        ),
        State::Stopped if last < f.state_since_ms => (f.state_since_ms, Due::Final),
        _ => return None,
    };
    Some((at.max(retry_at(p, f)), why))
}

/// The order due backups take the slots in (smallest first): a stopped
/// workspace's (a move, a delete, a preempted node wait on it) before a
/// running one's, and within each the one unsaved longest first, the
/// nearest the coordinator knows to "most dirty bytes first".
pub fn urgency(f: &Facts) -> (bool, i64) {
    (
        f.state != State::Stopped,
        f.last_backup_ms.unwrap_or(i64::MIN),
    )
}

/// Whether a backup is due at `now`.
pub fn due(p: &Policy, f: &Facts, now: i64) -> Option<Due> {
    next(p, f).filter(|(at, _)| *at <= now).map(|(_, why)| why)
}

/// Not before this after `failures` failures: the minimum, doubled per
/// further failure, at most the maximum.
fn retry_at(p: &Policy, f: &Facts) -> i64 {
    if f.failures == 0 {
        return i64::MIN;
    }
    let shift = (f.failures - 1).min(20);
    let wait = p
        .retry_min_ms
        .saturating_mul(1 << shift)
        .min(p.retry_max_ms);
    f.last_attempt_ms.saturating_add(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: State, since: i64, last: Option<i64>) -> Facts {
        Facts {
            state,
            state_since_ms: since,
            last_backup_ms: last,
            failures: 0,
            last_attempt_ms: 0,
        }
    }

    #[test]
    fn due_as_the_table_says() {
        let p = Policy {
            interval_ms: 1000,
            ..Policy::default()
        };
        let cases: &[(Facts, i64, Option<Due>)] = &[
            // Running: an interval after it started, then after the last backup.
            (facts(State::Running, 0, None), 999, None),
            (facts(State::Running, 0, None), 1000, Some(Due::Periodic)),
            (facts(State::Running, 0, Some(500)), 1499, None),
            (
                facts(State::Running, 0, Some(500)),
                1500,
                Some(Due::Periodic),
            ),
            // A backup from before it started again does not count.
            (facts(State::Running, 2000, Some(500)), 2999, None),
            // Stopped: once, right away, unless a backup followed the stop.
            (
                facts(State::Stopped, 2000, Some(1500)),
                2000,
                Some(Due::Final),
            ),
            (facts(State::Stopped, 2000, None), 2000, Some(Due::Final)),
            (facts(State::Stopped, 2000, Some(2100)), 9000, None),
            // Other states: never.
            (facts(State::Starting, 0, None), 9000, None),
            (facts(State::Failed, 0, None), 9000, None),
            (facts(State::Deleting, 0, None), 9000, None),
        ];
        for (f, now, want) in cases {
            assert_eq!(due(&p, f, *now), *want, "{f:?} at {now}");
        }
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_bound() {
        let p = Policy {
            retry_min_ms: 100,
            retry_max_ms: 1000,
            ..Policy::default()
        };
        let after = |failures| {
            let f = Facts {
                failures,
                last_attempt_ms: 10_000,
                ..facts(State::Stopped, 5_000, None)
            };
            next(&p, &f).map(|(at, _)| at - 10_000)
        };
        assert_eq!(after(1), Some(100));
        assert_eq!(after(2), Some(200));
        assert_eq!(after(4), Some(800));
        assert_eq!(after(5), Some(1000));
        assert_eq!(after(60), Some(1000));
    }

    #[test]
    fn stops_backups_go_first_the_longest_unsaved_first() {
        let f = |state, last: Option<i64>| Facts {
            state,
            state_since_ms: 0,
            last_backup_ms: last,
            failures: 0,
            last_attempt_ms: 0,
        };
        let mut all = [
            ("running, old", f(State::Running, Some(10))),
            ("stopped, recent", f(State::Stopped, Some(900))),
            ("running, never", f(State::Running, None)),
            ("stopped, old", f(State::Stopped, Some(100))),
            ("stopped, never", f(State::Stopped, None)),
        ];
        all.sort_by_key(|(_, f)| urgency(f));
        let order: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            order,
            [
                "stopped, never",
                "stopped, old",
                "stopped, recent",
                "running, never",
                "running, old"
            ]
        );
    }

    #[test]
    fn prunes_and_drops_come_when_the_policy_says() {
        let p = Policy::default();
        assert!(prune_due(&p, 0, 86_400_000));
        assert!(!prune_due(&p, 1_000, 86_400_000));
        assert!(prune_due(&p, 1_000, 86_401_000));
        let day = 86_400_000;
        assert!(!drop_due(&p, 0, 29 * day));
        assert!(drop_due(&p, 0, 30 * day));
        let forever = Policy {
            keep_deleted_ms: 0,
            ..Policy::default()
        };
        assert!(!drop_due(&forever, 0, 3650 * day));
    }

    #[test]
    fn a_delete_waits_for_a_backup_of_the_workspace_stopped() {
        let p = Policy::default();
        let off = Policy {
            before_delete: false,
            ..Policy::default()
        };
        let b = |stopped, taken_at_ms| {
            Some(Newest {
                generation: 1,
                stopped,
                fenced: false,
                taken_at_ms,
            })
        };
        // Stopped at 1000.
        let cases: &[(&Policy, State, bool, Option<Newest>, bool)] = &[
            (&p, State::Stopped, true, b(true, 1500), true),
            (&p, State::Stopped, true, b(true, 1000), true),
            // Its stop not backed up yet, or a backup of it running.
            (&p, State::Stopped, true, b(true, 900), false),
            (&p, State::Stopped, true, b(false, 1500), false),
            (&p, State::Stopped, true, None, false),
            // Running, on its way, or unknown: stopped and backed up first.
            (&p, State::Running, true, b(true, 1500), false),
            (&p, State::Starting, true, None, false),
            (&p, State::Stopping, true, None, false),
            (&p, State::Unknown, true, b(true, 1500), false),
            // Nothing of it on a node.
            (&p, State::Pending, false, None, true),
            (&p, State::Scheduled, false, None, true),
            (&p, State::Failed, true, None, true),
            (&p, State::Deleting, true, None, true),
            // Turned off: at once.
            (&off, State::Running, true, None, true),
        ];
        for (policy, state, on_node, newest, ok) in cases {
            assert_eq!(
                may_delete(policy, *state, *on_node, 1000, *newest),
                *ok,
                "{state:?} on_node={on_node} {newest:?}"
            );
        }
    }

    #[test]
    fn a_move_needs_a_shared_store_and_a_backup_that_holds_everything() {
        let shared = Policy {
            repository: "s3:http://127.0.0.1:9000/b".into(),
            ..Policy::default()
        };
        let local = Policy::default();
        let nfs = Policy {
            shared_path: true,
            ..Policy::default()
        };
        // Stopped at 1000, generation 7.
        // Its node last heard at 1200.
        let f = |state, wants_stopped, newest| MoveFacts {
            state,
            wants_stopped,
            generation: 7,
            state_since_ms: 1000,
            node_last_seen_ms: 1200,
            newest,
        };
        let b = |generation, stopped, taken_at_ms| {
            Some(Newest {
                generation,
                stopped,
                fenced: false,
                taken_at_ms,
            })
        };
        let fenced = |generation, taken_at_ms| {
            Some(Newest {
                generation,
                stopped: true,
                fenced: true,
                taken_at_ms,
            })
        };
        let held = b(7, true, 1500);
        let cases: &[(&Policy, Away, MoveFacts, bool)] = &[
            (&shared, Away::Lost, f(State::Unknown, true, held), true),
            (&nfs, Away::Draining, f(State::Stopped, true, held), true),
            (&shared, Away::Gone, f(State::Stopped, true, held), true),
            // A start waiting for room: its intent is newer than the backup,
            // which still holds all it had since it stopped.
            (
                &shared,
                Away::Full,
                f(State::Stopped, false, b(6, true, 1500)),
                true,
            ),
            // Per-node disks: nothing to move from.
            (&local, Away::Lost, f(State::Unknown, true, held), false),
            (&local, Away::Failed, f(State::Failed, false, held), false),
            // No backup at all.
            (&shared, Away::Lost, f(State::Unknown, true, None), false),
            (&shared, Away::Failed, f(State::Failed, false, None), false),
            // Lost while it ran, or wanted running: the node may hold newer data.
            (&shared, Away::Lost, f(State::Unknown, false, held), false),
            // Unless the node, cut off, stopped it and backed it up since.
            (
                &shared,
                Away::Lost,
                f(State::Unknown, false, fenced(7, 1500)),
                true,
            ),
            // A fenced backup from an earlier cut (it ran again since), or
            // of an older intent: not all of it.
            (
                &shared,
                Away::Lost,
                f(State::Unknown, false, fenced(7, 1100)),
                false,
            ),
            (
                &shared,
                Away::Lost,
                f(State::Unknown, false, fenced(6, 1500)),
                false,
            ),
            (
                &local,
                Away::Lost,
                f(State::Unknown, false, fenced(7, 1500)),
                false,
            ),
            // A backup of an older intent (started and stopped since), one
            // from before the stop, or a live one: not all of it.
            (
                &shared,
                Away::Lost,
                f(State::Unknown, true, b(6, true, 1500)),
                false,
            ),
            (
                &shared,
                Away::Full,
                f(State::Stopped, false, b(6, true, 900)),
                false,
            ),
            (
                &shared,
                Away::Draining,
                f(State::Stopped, true, b(7, false, 1500)),
                false,
            ),
            // Not a state a move leaves from.
            (
                &shared,
                Away::Draining,
                f(State::Running, false, held),
                false,
            ),
            // Failed: the newest backup is the best copy there is.
            (
                &shared,
                Away::Failed,
                f(State::Failed, false, b(3, false, 10)),
                true,
            ),
        ];
        for (p, away, facts, ok) in cases {
            assert_eq!(
                may_move(p, *away, facts).is_ok(),
                *ok,
                "{away:?} {facts:?} shared={}",
                p.shared()
            );
        }
    }

    #[test]
    fn repositories_are_per_workspace() {
        let p = Policy {
            repository: "s3:http://127.0.0.1:9000/b/".into(),
            ..Policy::default()
        };
        assert_eq!(p.repository_of("w1"), "s3:http://127.0.0.1:9000/b/w1");
    }
}
