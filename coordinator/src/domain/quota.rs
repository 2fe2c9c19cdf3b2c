//! Quotas: what a workspace counts against its owner's limits, as a pure
//! function of its state and intent, and whether a change stays within
//! them. The store applies the check in the transaction of the create or
//! start, with the owner's row locked (`store::quotas`).

use crate::domain::lifecycle::{Desired, State};
use crate::domain::scheduler::Resources;
use serde::{Deserialize, Serialize};

/// A user's limits; None: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Workspaces wanting to run (pending, starting, running) at once.
    pub running: Option<u64>,
    /// Workspaces kept (any state but deleted).
    pub workspaces: Option<u64>,
    /// CPU and memory of the workspaces wanting to run.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Disk of every workspace kept.
    pub disk_bytes: Option<u64>,
    /// What its running workspaces may cost in a calendar month (UTC),
    /// by the cost model (`domain::report`).
    pub monthly_budget: Option<f64>,
}

impl Limits {
    /// Each limit of `over` where it has one, else this one's.
    pub fn overridden_by(self, over: Limits) -> Limits {
        Limits {
            running: over.running.or(self.running),
            workspaces: over.workspaces.or(self.workspaces),
            cpu_millis: over.cpu_millis.or(self.cpu_millis),
            memory_bytes: over.memory_bytes.or(self.memory_bytes),
            disk_bytes: over.disk_bytes.or(self.disk_bytes),
            monthly_budget: over.monthly_budget.or(self.monthly_budget),
        }
    }
}

/// What counts against the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub running: u64,
    pub workspaces: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Usage {
    pub fn plus(self, o: Usage) -> Usage {
        Usage {
            running: self.running + o.running,
            workspaces: self.workspaces + o.workspaces,
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
            disk_bytes: self.disk_bytes + o.disk_bytes,
        }
    }

    /// Whether `self` counts more than `prev` anywhere.
    pub fn grows_from(&self, prev: &Usage) -> bool {
        self.running > prev.running
            || self.workspaces > prev.workspaces
            || self.cpu_millis > prev.cpu_millis
            || self.memory_bytes > prev.memory_bytes
            || self.disk_bytes > prev.disk_bytes
    }
}

/// What a workspace in `state`, wanting `desired`, counts: nothing once
/// deleted (or being deleted); its disk while kept; its CPU, memory and a
/// running slot while it wants to run.
pub fn uses(state: State, desired: Desired, r: Resources) -> Usage {
    if matches!(state, State::Deleted | State::Deleting) || desired == Desired::Deleted {
        return Usage::default();
    }
    let run = desired == Desired::Running && state != State::Failed;
    Usage {
        running: u64::from(run),
        workspaces: 1,
        cpu_millis: if run { r.cpu_millis } else { 0 },
        memory_bytes: if run { r.memory_bytes } else { 0 },
        disk_bytes: r.disk_bytes,
    }
}

/// The first limit `after` breaks, named with the usage, e.g. "running
/// workspaces: 3 of 2". Only what grew from `before` is checked: a limit
/// lowered below what is already used refuses more, not what is there.
pub fn exceeded(l: &Limits, before: &Usage, after: &Usage) -> Option<String> {
    let count = |name: &str, limit: Option<u64>, b: u64, a: u64, unit: fn(u64) -> String| {
        limit
            .filter(|&max| a > b && a > max)
            .map(|max| format!("{name}: {} of {}", unit(a), unit(max)))
    };
    let n = |v: u64| v.to_string();
    let milli = |v: u64| format!("{v}m");
    let mib = |v: u64| format!("{} MiB", v.div_ceil(1 << 20));
    count(
        "running workspaces",
        l.running,
        before.running,
        after.running,
        n,
    )
    .or_else(|| {
        count(
            "workspaces",
            l.workspaces,
            before.workspaces,
            after.workspaces,
            n,
        )
    })
    .or_else(|| {
        count(
            "CPU",
            l.cpu_millis,
            before.cpu_millis,
            after.cpu_millis,
            milli,
        )
    })
    .or_else(|| {
        count(
            "memory",
            l.memory_bytes,
            before.memory_bytes,
            after.memory_bytes,
            mib,
        )
    })
    .or_else(|| {
        count(
            "disk",
            l.disk_bytes,
            before.disk_bytes,
            after.disk_bytes,
            mib,
        )
    })
}

/// Whether a start is refused by the monthly budget: `spent` this month.
pub fn over_budget(l: &Limits, spent: f64) -> Option<String> {
    l.monthly_budget
        .filter(|&b| spent >= b)
        .map(|b| format!("monthly budget: {spent:.2} spent of {b:.2}"))
}

/// The first millisecond of the calendar month (UTC) holding `now_ms`.
pub fn month_start_ms(now_ms: i64) -> i64 {
    let days = now_ms.div_euclid(86_400_000);
    let (_, _, day) = berth_proto::units::civil_from_days(days);
    (days - (day - 1)) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Resources = Resources {
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        disk_bytes: 4 << 30,
    };

    #[test]
    fn what_a_workspace_counts() {
        let run = uses(State::Pending, Desired::Running, R);
        assert_eq!((run.running, run.workspaces, run.cpu_millis), (1, 1, 1000));
        let stopped = uses(State::Stopped, Desired::Stopped, R);
        assert_eq!(
            (stopped.running, stopped.cpu_millis, stopped.disk_bytes),
            (0, 0, 4 << 30)
        );
        assert_eq!(uses(State::Deleting, Desired::Deleted, R), Usage::default());
        assert_eq!(uses(State::Failed, Desired::Running, R).running, 0);
        assert!(run.grows_from(&stopped) && !stopped.grows_from(&run));
    }

    #[test]
    fn the_first_limit_broken_is_named_with_the_usage() {
        let l = Limits {
            running: Some(2),
            memory_bytes: Some(2 << 30),
            ..Limits::default()
        };
        let two = uses(State::Running, Desired::Running, R).plus(uses(
            State::Running,
            Desired::Running,
            R,
        ));
        let three = two.plus(uses(State::Pending, Desired::Running, R));
        assert_eq!(exceeded(&l, &two, &two), None);
        assert_eq!(
            exceeded(&l, &two, &three).as_deref(),
            Some("running workspaces: 3 of 2")
        );
        let mem = Limits {
            memory_bytes: Some(2 << 30),
            ..Limits::default()
        };
        assert_eq!(
            exceeded(&mem, &two, &three).as_deref(),
            Some("memory: 3072 MiB of 2048 MiB")
        );
        // A stop under a lowered limit is not refused: nothing grew.
        let one = uses(State::Running, Desired::Running, R);
        assert_eq!(
            exceeded(
                &Limits {
                    running: Some(0),
                    ..l
                },
                &one,
                &one
            ),
            None
        );
        let over = Limits {
            monthly_budget: Some(10.0),
            ..Limits::default()
        };
        assert_eq!(over_budget(&over, 9.99), None);
        assert_eq!(
            over_budget(&over, 10.0).as_deref(),
            Some("monthly budget: 10.00 spent of 10.00")
        );
        let d = Limits {
            running: Some(5),
            workspaces: Some(9),
            ..Limits::default()
        };
        let o = Limits {
            running: Some(1),
            ..Limits::default()
        };
        assert_eq!(d.overridden_by(o).running, Some(1));
        assert_eq!(d.overridden_by(o).workspaces, Some(9));
    }

    #[test]
    fn months_start_on_the_first_utc() {
        // 2026-12-03T22:38:18Z -> 2026-12-01T00:00:00Z
        assert_eq!(month_start_ms(1_796_337_498_000), 1_796_083_200_000);
        // 2024-02-29T12:00:00Z -> 2024-02-01T00:00:00Z
        assert_eq!(month_start_ms(1_709_208_000_000), 1_706_745_600_000);
        assert_eq!(month_start_ms(0), 0);
    }
}
