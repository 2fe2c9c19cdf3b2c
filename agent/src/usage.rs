//! What the node's workspaces use, for the heartbeat: CPU as a rate over the
//! time since the previous reading, memory and disk as they are now.

use std::collections::HashMap;
use std::time::Instant;

use berth_proto::link::{NodeUsage, WorkspaceUsage};

/// One workspace's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub name: String,
    /// CPU time used since its cgroup was made.
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// Turns successive readings into rates; remembers each workspace's last one.
#[derive(Debug, Default)]
pub struct Rates {
    before: HashMap<String, (u64, Instant)>,
}

impl Rates {
    /// The node's usage at `now`, workspace by workspace and in all. A
    /// workspace seen for the first time, or whose counter went back (a new
    /// cgroup under the same name), reads 0 CPU until its next reading.
    pub fn usage(&mut self, readings: Vec<Reading>, now: Instant) -> NodeUsage {
        let mut before = HashMap::with_capacity(readings.len());
        let mut total = NodeUsage::default();
        for r in readings {
            let cpu_millis = match self.before.get(&r.name) {
                Some(&(cpu, at)) if r.cpu_nanos >= cpu => {
                    let ms = now.saturating_duration_since(at).as_millis().max(1) as u64;
                    // ns of CPU per ms of wall time / 1000 = thousandths of a core.
                    (r.cpu_nanos - cpu) / 1000 / ms
                }
                _ => 0,
            };
            before.insert(r.name.clone(), (r.cpu_nanos, now));
            total.cpu_millis = total.cpu_millis.saturating_add(cpu_millis);
            total.memory_bytes = total.memory_bytes.saturating_add(r.memory_bytes);
            total.disk_bytes = total.disk_bytes.saturating_add(r.disk_bytes);
            total.workspaces.push(WorkspaceUsage {
                name: r.name,
                cpu_millis,
                memory_bytes: r.memory_bytes,
                disk_bytes: r.disk_bytes,
            });
        }
        // Workspaces gone since are forgotten.
        self.before = before;
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(name: &str, cpu_nanos: u64) -> Reading {
        Reading {
            name: name.into(),
            cpu_nanos,
            memory_bytes: 10,
            disk_bytes: 100,
        }
    }

    #[test]
    fn cpu_is_a_rate_per_workspace_and_the_node_sums_them() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        let first = r.usage(vec![reading("a", 5_000_000_000), reading("b", 0)], t0);
        assert_eq!(first.cpu_millis, 0, "no rate without an earlier reading");
        assert_eq!((first.memory_bytes, first.disk_bytes), (20, 200));
        // Two seconds later: a used one core, b half a core.
        let t1 = t0 + Duration::from_secs(2);
        let u = r.usage(
            vec![reading("a", 7_000_000_000), reading("b", 1_000_000_000)],
            t1,
        );
        let per: Vec<_> = u
            .workspaces
            .iter()
            .map(|w| (w.name.as_str(), w.cpu_millis))
            .collect();
        assert_eq!(per, [("a", 1000), ("b", 500)]);
        assert_eq!(u.cpu_millis, 1500);
    }

    #[test]
    fn a_counter_that_goes_back_or_a_workspace_that_left_starts_over() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        r.usage(vec![reading("a", 9_000_000_000), reading("b", 1)], t0);
        let t1 = t0 + Duration::from_secs(1);
        // a was made again (its counter restarted); b is gone.
        let u = r.usage(vec![reading("a", 1_000)], t1);
        assert_eq!(u.cpu_millis, 0);
        assert_eq!(u.workspaces.len(), 1);
        // b comes back: no rate from its old reading.
        let u = r.usage(
            vec![reading("b", 2_000_000_000)],
            t1 + Duration::from_secs(1),
        );
        assert_eq!(u.cpu_millis, 0);
    }
}
