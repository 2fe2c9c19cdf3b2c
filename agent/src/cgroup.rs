//! Reads a workspace's cgroup usage and limits on cgroup v1 or v2 (and sets
//! its CPU quota once it runs). The file parsers are pure; `CgroupReader`
//! only knows where the files are.

use berth_proto::agent::Usage;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Reads cgroup files below a root (normally /sys/fs/cgroup).
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    version: Version,
}

impl CgroupReader {
    /// Detects the hierarchy under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        Self { root, version }
    }

    /// The detected hierarchy.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The directory of the cgroup at `path` (v2; v1: its memory controller's).
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V2 => self.root.join(rel),
            Version::V1 => self.root.join("memory").join(rel),
        }
    }

    /// Inactive file pages of the cgroup at `path` (what cAdvisor takes
    /// from its usage for the working set).
    pub fn inactive_file(&self, path: &str) -> u64 {
        let stat = read(&self.dir_of(path).join("memory.stat"));
        let key = match self.version {
            Version::V2 => "inactive_file",
            Version::V1 => "total_inactive_file",
        };
        parse_keyed(&stat, key)
    }

    /// Whether swap is accounted (so a "no swap" limit can be written).
    pub fn swap_accounting(&self, parent: &str) -> bool {
        match self.version {
            Version::V1 => self
                .root
                .join("memory/memory.memsw.limit_in_bytes")
                .exists(),
            Version::V2 => {
                let p = self.root.join(parent.trim_start_matches('/'));
                p.join("memory.swap.max").exists()
                    || self.root.join("memory.swap.max").exists()
                    || has_subtree_controller(&self.root, "memory")
            }
        }
    }

    /// The directories a cgroup path occupies (one per v1 controller, one on v2).
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V2 => vec![self.root.join(rel)],
            Version::V1 => [
                "cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer", "blkio",
            ]
            .iter()
            .map(|c| self.root.join(c).join(rel))
            .filter(|p| p.exists())
            .collect(),
        }
    }

    /// The processes in the cgroup at `path` (none if it is absent).
    pub fn procs(&self, path: &str) -> Vec<u32> {
        let rel = path.trim_start_matches('/');
        let dir = match self.version {
            Version::V2 => self.root.join(rel),
            Version::V1 => self.root.join("pids").join(rel),
        };
        read(&dir.join("cgroup.procs"))
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// CPU time the cgroup at `path` used so far, in nanoseconds.
    pub fn cpu_nanos(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V1 => parse_u64(&read(
                &self.root.join("cpuacct").join(rel).join("cpuacct.usage"),
            )),
            Version::V2 => parse_keyed(&read(&self.root.join(rel).join("cpu.stat")), "usage_usec")
                .saturating_mul(1000),
        }
    }

    /// Time (µs, so far) some task of the cgroup at `path` stalled on I/O
    /// or memory (PSI's `some` totals of `io.pressure` and
    /// `memory.pressure`); None on cgroup v1, or a kernel without PSI.
    pub fn stall_micros(&self, path: &str) -> Option<u64> {
        if self.version != Version::V2 {
            return None;
        }
        let dir = self.root.join(path.trim_start_matches('/'));
        let io = psi_some_total(&read(&dir.join("io.pressure")))?;
        let memory = psi_some_total(&read(&dir.join("memory.pressure"))).unwrap_or(0);
        Some(io.saturating_add(memory))
    }

    /// Sets the CPU quota of the cgroup at `path` (microseconds per period).
    pub fn set_cpu_quota(&self, path: &str, quota_us: i64, period_us: u64) -> std::io::Result<()> {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V1 => std::fs::write(
                self.root.join("cpu").join(rel).join("cpu.cfs_quota_us"),
                quota_us.to_string(),
            ),
            Version::V2 => std::fs::write(
                self.root.join(rel).join("cpu.max"),
                format!("{quota_us} {period_us}"),
            ),
        }
    }

    /// Usage and limits of the cgroup at `path` (e.g. "/berth/ws-1"); absent
    /// files read as zero, so a stopped workspace reports zeros.
    pub fn usage(&self, path: &str) -> Usage {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V1 => {
                let f = |ctrl: &str, file: &str| read(&self.root.join(ctrl).join(rel).join(file));
                Usage {
                    cpu_usage_nanos: parse_u64(&f("cpuacct", "cpuacct.usage")),
                    memory_bytes: parse_u64(&f("memory", "memory.usage_in_bytes")),
                    memory_limit_bytes: parse_u64(&f("memory", "memory.limit_in_bytes")),
                    pids: parse_u64(&f("pids", "pids.current")),
                    pids_limit: parse_max(&f("pids", "pids.max")),
                    cpu_quota_micros: f("cpu", "cpu.cfs_quota_us").trim().parse().unwrap_or(-1),
                    cpu_period_micros: parse_u64(&f("cpu", "cpu.cfs_period_us")),
                }
            }
            Version::V2 => {
                let f = |file: &str| read(&self.root.join(rel).join(file));
                let (quota, period) = parse_cpu_max(&f("cpu.max"));
                Usage {
                    cpu_usage_nanos: parse_keyed(&f("cpu.stat"), "usage_usec").saturating_mul(1000),
                    memory_bytes: parse_u64(&f("memory.current")),
                    memory_limit_bytes: parse_max(&f("memory.max")),
                    pids: parse_u64(&f("pids.current")),
                    pids_limit: parse_max(&f("pids.max")),
                    cpu_quota_micros: quota,
                    cpu_period_micros: period,
                }
            }
        }
    }

    /// How many times the kernel OOM-killed a process in the cgroup.
    pub fn oom_kills(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        match self.version {
            Version::V1 => parse_keyed(
                &read(
                    &self
                        .root
                        .join("memory")
                        .join(rel)
                        .join("memory.oom_control"),
                ),
                "oom_kill",
            ),
            Version::V2 => parse_keyed(
                &read(&self.root.join(rel).join("memory.events")),
                "oom_kill",
            ),
        }
    }
}

fn has_subtree_controller(root: &Path, ctrl: &str) -> bool {
    read(&root.join("cgroup.subtree_control"))
        .split_whitespace()
        .any(|c| c == ctrl)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The `total` (µs) of a PSI file's `some` line ("some avg10=0.00
/// avg60=0.00 avg300=0.00 total=1234").
fn psi_some_total(s: &str) -> Option<u64> {
    s.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total=")?.parse().ok())
}

/// Parses a single integer file; anything else reads as 0.
pub fn parse_u64(s: &str) -> u64 {
    s.trim().parse().unwrap_or(0)
}

/// Parses a limit file where "max" means unlimited (u64::MAX).
pub fn parse_max(s: &str) -> u64 {
    match s.trim() {
        "max" => u64::MAX,
        v => v.parse().unwrap_or(0),
    }
}

/// Parses a "key value" line file (cpu.stat, memory.events, memory.oom_control).
pub fn parse_keyed(s: &str, key: &str) -> u64 {
    s.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Parses v2 cpu.max: "quota period" or "max period"; -1 means no quota.
pub fn parse_cpu_max(s: &str) -> (i64, u64) {
    let mut it = s.split_whitespace();
    let quota = match it.next() {
        Some("max") | None => -1,
        Some(q) => q.parse().unwrap_or(-1),
    };
    (quota, it.next().and_then(|p| p.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_u64("123\n"), 123);
        assert_eq!(parse_u64(""), 0);
        assert_eq!(parse_max("max\n"), u64::MAX);
        assert_eq!(parse_max("64\n"), 64);
        assert_eq!(
            parse_keyed("usage_usec 250\nuser_usec 100\n", "usage_usec"),
            250
        );
        assert_eq!(
            parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            3
        );
        assert_eq!(parse_keyed("low 0\noom 2\noom_kill 1\n", "oom_kill"), 1);
        assert_eq!(parse_cpu_max("150000 100000\n"), (150_000, 100_000));
        assert_eq!(parse_cpu_max("max 100000"), (-1, 100_000));
    }

    #[test]
    fn reads_v1_and_v2_layouts() {
        let v1 = tempfile::tempdir().unwrap();
        for (ctrl, file, val) in [
            ("cpuacct", "cpuacct.usage", "5000"),
            ("memory", "memory.usage_in_bytes", "4096"),
            ("memory", "memory.limit_in_bytes", "8192"),
            (
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("pids", "pids.current", "3"),
            ("pids", "pids.max", "64"),
            ("cpu", "cpu.cfs_quota_us", "50000"),
            ("cpu", "cpu.cfs_period_us", "100000"),
        ] {
            let d = v1.path().join(ctrl).join("berth/ws");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), val).unwrap();
        }
        let r = CgroupReader::new(v1.path());
        assert_eq!(r.version(), Version::V1);
        let u = r.usage("/berth/ws");
        assert_eq!(
            (u.cpu_usage_nanos, u.memory_bytes, u.memory_limit_bytes),
            (5000, 4096, 8192)
        );
        assert_eq!(
            (
                u.pids,
                u.pids_limit,
                u.cpu_quota_micros,
                u.cpu_period_micros
            ),
            (3, 64, 50_000, 100_000)
        );
        assert_eq!(r.oom_kills("/berth/ws"), 2);

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let d = v2.path().join("berth/ws");
        std::fs::create_dir_all(&d).unwrap();
        for (file, val) in [
            ("cpu.stat", "usage_usec 7\n"),
            ("memory.current", "100"),
            ("memory.max", "max"),
            ("memory.events", "oom 1\noom_kill 1\n"),
            ("pids.current", "2"),
            ("pids.max", "10"),
            ("cpu.max", "20000 100000"),
        ] {
            std::fs::write(d.join(file), val).unwrap();
        }
        let r = CgroupReader::new(v2.path());
        assert_eq!(r.version(), Version::V2);
        let u = r.usage("berth/ws");
        assert_eq!(
            (u.cpu_usage_nanos, u.memory_bytes, u.memory_limit_bytes),
            (7000, 100, u64::MAX)
        );
        assert_eq!((u.pids, u.pids_limit, u.cpu_quota_micros), (2, 10, 20_000));
        assert_eq!(r.oom_kills("berth/ws"), 1);
        // No PSI files (a kernel without PSI): no stall figure.
        assert_eq!(r.stall_micros("berth/ws"), None);
        std::fs::write(
            d.join("io.pressure"),
            "some avg10=1.50 avg60=0.30 avg300=0.06 total=120000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=9000\n",
        )
        .unwrap();
        assert_eq!(r.stall_micros("berth/ws"), Some(120_000));
        std::fs::write(
            d.join("memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
        )
        .unwrap();
        assert_eq!(r.stall_micros("berth/ws"), Some(120_005));
        assert_eq!(r.dirs("/berth/ws"), vec![d]);
    }
}
