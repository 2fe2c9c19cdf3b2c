//! The idle detector: samples of one workspace in, a verdict with its
//! reasons out. Pure (the time is in the sample), so a table of samples
//! tests every rule.
//!
//! A workspace is awake while real work happens in it, and only then:
//!
//! - its cgroup uses at least `cpu_percent` of a core (a build, a test run,
//!   with nobody connected, stays up);
//! - a terminal in it had input or output lately (the pts device's access
//!   and change times, which the kernel keeps at 8-second grain, as `w`
//!   reads them): an SSH or web terminal session someone types in or a
//!   command writes to;
//! - a tunnel (SSH, port, preview, terminal) moved more than a trickle of
//!   bytes: an open connection that only exchanges keep-alives (an IDE left
//!   open) does not count;
//! - it has TCP connections of its own (not Berth's tunnels) and its
//!   interface moved more than a trickle of bytes besides the tunnels';
//! - on cgroup v2, its tasks stalled on I/O or memory (PSI) at least
//!   `stall_percent` of the time: work waiting on a disk uses little CPU.
//!
//! Idle since = the last time one of those held (the start, if none ever did).

/// When a sample counts as activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPU use, in percent of one core, that keeps a workspace awake.
    pub cpu_percent: f64,
    /// Tunnel bytes (both ways, all sessions of a kind) per sample that count.
    pub tunnel_bytes: u64,
    /// Interface bytes per sample, beyond the tunnels', that count.
    pub net_bytes: u64,
    /// A terminal's input or output this recent counts (at least the
    /// sampling interval; the kernel's pts times have 8-second grain).
    pub tty_window_ms: u64,
    /// Time some task stalled on I/O or memory (PSI), in percent of the
    /// time between two samples, that keeps a workspace awake.
    pub stall_percent: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_percent: 5.0,
            tunnel_bytes: 4096,
            net_bytes: 64 * 1024,
            tty_window_ms: 20_000,
            stall_percent: 5.0,
        }
    }
}

/// A terminal a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tty {
    /// e.g. "pts/0".
    pub name: String,
    /// Unix ms of the last input (the device's access time) and output
    /// (its modification time).
    pub input_ms: u64,
    pub output_ms: u64,
}

/// One process of the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// Its command line, shortened.
    pub command: String,
    /// Unix ms it started (with the pid, tells a reused pid apart).
    pub start_ms: u64,
    /// CPU time it used, user and system.
    pub cpu_nanos: u64,
    pub tty: Option<Tty>,
}

/// Tunnel counters of one kind, as the agent keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: String,
    pub open: u64,
    /// Bytes both ways since the agent started.
    pub bytes: u64,
}

/// What the agent read of one workspace at one time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// The cgroup's CPU time so far.
    pub cpu_nanos: u64,
    pub procs: Vec<Proc>,
    pub tunnels: Vec<Tunnel>,
    /// Established TCP connections in its network namespace that are not
    /// the agent's tunnels.
    pub connections: u32,
    /// Bytes through its interface, both ways, so far.
    pub net_bytes: u64,
    /// Time (µs, so far) some task stalled on I/O or memory: PSI, on
    /// cgroup v2 only.
    pub stall_micros: Option<u64>,
}

/// Why a workspace is awake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// "cpu", "tty", "ssh", "port", "preview", "terminal", "network" or
    /// "pressure".
    pub kind: String,
    /// What: a command, a terminal, a count of connections.
    pub detail: String,
    /// CPU percent of a core, for "cpu"; percent of the time stalled, for
    /// "pressure".
    pub percent: u32,
    /// Since when it holds (Unix ms), and when it last held.
    pub since_ms: u64,
    pub last_ms: u64,
}

/// The detector's answer after a sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Set when idle: since when.
    pub idle_since_ms: Option<u64>,
    /// Set when awake: why.
    pub reasons: Vec<Reason>,
    pub sampled_at_ms: u64,
    /// How many processes it runs, and the command of the newest.
    pub processes: u32,
    pub newest: String,
}

impl Verdict {
    /// Whether a report of `self` tells the coordinator something `prev` did
    /// not: awake and idle swapped, or the kinds of reasons changed.
    pub fn differs(&self, prev: &Verdict) -> bool {
        fn kinds(v: &Verdict) -> Vec<&str> {
            let mut k: Vec<&str> = v.reasons.iter().map(|r| r.kind.as_str()).collect();
            k.dedup();
            k
        }
        self.idle_since_ms.is_some() != prev.idle_since_ms.is_some() || kinds(self) != kinds(prev)
    }
}

/// The detector of one workspace.
#[derive(Debug, Clone)]
pub struct Detector {
    limits: Limits,
    prev: Option<Sample>,
    last_active_ms: u64,
    cpu_since_ms: Option<u64>,
    /// Since when each tunnel kind moved bytes, sample after sample.
    tunnel_since: Vec<(String, u64)>,
    net_since_ms: Option<u64>,
    stall_since_ms: Option<u64>,
}

impl Detector {
    /// A detector for a workspace that started at `started_ms`.
    pub fn new(limits: Limits, started_ms: u64) -> Self {
        Self {
            limits,
            prev: None,
            last_active_ms: started_ms,
            cpu_since_ms: None,
            tunnel_since: Vec::new(),
            net_since_ms: None,
            stall_since_ms: None,
        }
    }

    /// The interface byte count of the last sample.
    pub fn last_net_bytes(&self) -> Option<u64> {
        self.prev.as_ref().map(|p| p.net_bytes)
    }

    /// Whether it has a sample to compare the next one with.
    pub fn primed(&self) -> bool {
        self.prev.is_some()
    }

    /// Takes one sample; the verdict as of its time.
    pub fn observe(&mut self, s: Sample) -> Verdict {
        let mut reasons = Vec::new();
        if let Some(prev) = &self.prev {
            let dt_ms = s.at_ms.saturating_sub(prev.at_ms).max(1);
            // CPU: the cgroup's, named after the process that used most.
            let used = s.cpu_nanos.saturating_sub(prev.cpu_nanos);
            let percent = used as f64 / (dt_ms as f64 * 1e6) * 100.0;
            if percent >= self.limits.cpu_percent {
                let since = *self.cpu_since_ms.get_or_insert(prev.at_ms);
                reasons.push(Reason {
                    kind: "cpu".into(),
                    detail: top_process(prev, &s),
                    percent: percent.round() as u32,
                    since_ms: since,
                    last_ms: s.at_ms,
                });
            } else {
                self.cpu_since_ms = None;
            }
            // Tunnels: more than a trickle of bytes.
            let mut moved_tunnel_bytes = 0;
            let mut since = Vec::new();
            for t in &s.tunnels {
                let before = prev
                    .tunnels
                    .iter()
                    .find(|p| p.kind == t.kind)
                    .map_or(0, |p| p.bytes);
                let moved = t.bytes.saturating_sub(before);
                moved_tunnel_bytes += moved;
                if moved >= self.limits.tunnel_bytes {
                    let start = self
                        .tunnel_since
                        .iter()
                        .find(|(k, _)| *k == t.kind)
                        .map_or(prev.at_ms, |(_, at)| *at);
                    since.push((t.kind.clone(), start));
                    reasons.push(Reason {
                        kind: t.kind.clone(),
                        detail: format!("{} open, {} bytes", t.open, moved),
                        percent: 0,
                        since_ms: start,
                        last_ms: s.at_ms,
                    });
                }
            }
            self.tunnel_since = since;
            // Stalls on I/O or memory (cgroup v2's PSI).
            if let (Some(before), Some(now)) = (prev.stall_micros, s.stall_micros) {
                let percent = now.saturating_sub(before) as f64 / (dt_ms as f64 * 1e3) * 100.0;
                if percent >= self.limits.stall_percent {
                    let since = *self.stall_since_ms.get_or_insert(prev.at_ms);
                    reasons.push(Reason {
                        kind: "pressure".into(),
                        detail: "waiting on I/O or memory".into(),
                        percent: percent.round() as u32,
                        since_ms: since,
                        last_ms: s.at_ms,
                    });
                } else {
                    self.stall_since_ms = None;
                }
            }
            // The workspace's own connections.
            let net = s.net_bytes.saturating_sub(prev.net_bytes);
            if s.connections > 0 && net.saturating_sub(moved_tunnel_bytes) >= self.limits.net_bytes
            {
                let since = *self.net_since_ms.get_or_insert(prev.at_ms);
                reasons.push(Reason {
                    kind: "network".into(),
                    detail: format!("{} connections, {} bytes", s.connections, net),
                    percent: 0,
                    since_ms: since,
                    last_ms: s.at_ms,
                });
            } else {
                self.net_since_ms = None;
            }
        }
        // Terminals: recent input or output, whoever holds them.
        let mut ttys: Vec<&Proc> = s.procs.iter().filter(|p| p.tty.is_some()).collect();
        ttys.sort_by_key(|p| (p.tty.as_ref().map(|t| t.name.clone()), p.start_ms));
        ttys.dedup_by_key(|p| p.tty.as_ref().map(|t| t.name.clone()));
        for p in ttys {
            let Some(t) = &p.tty else { continue };
            let last = t.input_ms.max(t.output_ms);
            // Input or output long ago still dates the idleness.
            self.last_active_ms = self.last_active_ms.max(last.min(s.at_ms));
            if last + self.limits.tty_window_ms < s.at_ms {
                continue;
            }
            let what = if t.input_ms >= t.output_ms {
                "input"
            } else {
                "output"
            };
            reasons.push(Reason {
                kind: "tty".into(),
                detail: format!("{} on {} ({what})", p.command, t.name),
                percent: 0,
                since_ms: last,
                last_ms: last,
            });
        }
        for r in &reasons {
            self.last_active_ms = self.last_active_ms.max(r.last_ms);
        }
        let newest = s.procs.iter().max_by_key(|p| p.start_ms);
        let v = Verdict {
            idle_since_ms: reasons.is_empty().then_some(self.last_active_ms),
            reasons,
            sampled_at_ms: s.at_ms,
            processes: s.procs.len() as u32,
            newest: newest.map(|p| p.command.clone()).unwrap_or_default(),
        };
        self.prev = Some(s);
        v
    }
}

/// The command of the process that used the most CPU between two samples.
fn top_process(prev: &Sample, s: &Sample) -> String {
    s.procs
        .iter()
        .map(|p| {
            let before = prev
                .procs
                .iter()
                .find(|q| q.pid == p.pid && q.start_ms == p.start_ms)
                .map_or(0, |q| q.cpu_nanos);
            (p.cpu_nanos.saturating_sub(before), p)
        })
        .max_by_key(|(used, _)| *used)
        .map(|(_, p)| p.command.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;

    fn proc(pid: u32, cmd: &str, cpu_s: u64, tty: Option<(u64, u64)>) -> Proc {
        Proc {
            pid,
            command: cmd.into(),
            start_ms: 1_000,
            cpu_nanos: cpu_s * 1_000_000_000,
            tty: tty.map(|(i, o)| Tty {
                name: "pts/0".into(),
                input_ms: i,
                output_ms: o,
            }),
        }
    }

    fn sample(at: u64, cpu_s: f64) -> Sample {
        Sample {
            at_ms: at,
            cpu_nanos: (cpu_s * 1e9) as u64,
            procs: vec![proc(1, "sleep infinity", 0, None)],
            ..Default::default()
        }
    }

    fn run(limits: Limits, samples: Vec<Sample>) -> Verdict {
        let mut d = Detector::new(limits, 0);
        let mut v = Verdict::default();
        for s in samples {
            v = d.observe(s);
        }
        v
    }

    #[test]
    fn the_rules_in_a_table() {
        let l = Limits::default();
        let tunnel = |bytes| Tunnel {
            kind: "ssh".into(),
            open: 1,
            bytes,
        };
        let with = |mut s: Sample, f: &dyn Fn(&mut Sample)| {
            f(&mut s);
            s
        };
        // (what, samples, idle since (None = awake), reason kinds)
        type Row = (&'static str, Vec<Sample>, Option<u64>, Vec<&'static str>);
        let table: Vec<Row> = vec![
            (
                "nothing ever happened",
                vec![sample(10 * SEC, 0.0), sample(20 * SEC, 0.01)],
                Some(0),
                vec![],
            ),
            (
                "a build uses a core",
                vec![sample(10 * SEC, 0.0), sample(20 * SEC, 8.0)],
                None,
                vec!["cpu"],
            ),
            (
                "below the cpu limit",
                vec![sample(10 * SEC, 0.0), sample(20 * SEC, 0.4)],
                Some(0),
                vec![],
            ),
            (
                "the build ended 10 s ago",
                vec![
                    sample(10 * SEC, 0.0),
                    sample(20 * SEC, 8.0),
                    sample(30 * SEC, 8.0),
                ],
                Some(20 * SEC),
                vec![],
            ),
            (
                "cgroup v2: waiting on its disk 30% of the time, little cpu",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.stall_micros = Some(0)),
                    with(sample(20 * SEC, 0.1), &|s| s.stall_micros = Some(3_000_000)),
                ],
                None,
                vec!["pressure"],
            ),
            (
                "cgroup v2: hardly any stall",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.stall_micros = Some(0)),
                    with(sample(20 * SEC, 0.0), &|s| s.stall_micros = Some(100_000)),
                ],
                Some(0),
                vec![],
            ),
            (
                "cgroup v1: no stall figure, nothing concluded from it",
                vec![sample(10 * SEC, 0.0), sample(20 * SEC, 0.0)],
                Some(0),
                vec![],
            ),
            (
                "an ssh session with keep-alives only",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.tunnels = vec![tunnel(5000)]),
                    with(sample(20 * SEC, 0.0), &|s| s.tunnels = vec![tunnel(5200)]),
                ],
                Some(0),
                vec![],
            ),
            (
                "an ssh session moving bytes",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.tunnels = vec![tunnel(5000)]),
                    with(sample(20 * SEC, 0.0), &|s| {
                        s.tunnels = vec![tunnel(500_000)]
                    }),
                ],
                None,
                vec!["ssh"],
            ),
            (
                "typing in a terminal",
                vec![
                    sample(10 * SEC, 0.0),
                    with(sample(20 * SEC, 0.0), &|s| {
                        s.procs.push(proc(7, "bash", 0, Some((18 * SEC, 0))))
                    }),
                ],
                None,
                vec!["tty"],
            ),
            (
                "a terminal left alone for a minute",
                vec![
                    sample(10 * SEC, 0.0),
                    with(sample(80 * SEC, 0.0), &|s| {
                        s.procs.push(proc(7, "bash", 0, Some((15 * SEC, 16 * SEC))))
                    }),
                ],
                Some(16 * SEC),
                vec![],
            ),
            (
                "a download of its own",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.connections = 1),
                    with(sample(20 * SEC, 0.0), &|s| {
                        s.connections = 1;
                        s.net_bytes = 10 << 20
                    }),
                ],
                None,
                vec!["network"],
            ),
            (
                "traffic that is the tunnels' own",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| {
                        s.connections = 1;
                        s.tunnels = vec![tunnel(0)]
                    }),
                    with(sample(20 * SEC, 0.0), &|s| {
                        s.connections = 1;
                        s.tunnels = vec![tunnel(1 << 20)];
                        s.net_bytes = (1 << 20) + 1000
                    }),
                ],
                None,
                vec!["ssh"],
            ),
            (
                "connections that carry nothing",
                vec![
                    with(sample(10 * SEC, 0.0), &|s| s.connections = 3),
                    with(sample(20 * SEC, 0.0), &|s| {
                        s.connections = 3;
                        s.net_bytes = 900
                    }),
                ],
                Some(0),
                vec![],
            ),
        ];
        for (what, samples, idle, kinds) in table {
            let v = run(l, samples);
            assert_eq!(v.idle_since_ms, idle, "{what}: {v:?}");
            let got: Vec<&str> = v.reasons.iter().map(|r| r.kind.as_str()).collect();
            assert_eq!(got, kinds, "{what}");
        }
    }

    #[test]
    fn cpu_is_named_after_the_busiest_process_and_dated_from_its_start() {
        let mut d = Detector::new(Limits::default(), 0);
        let s = |at: u64, cpu: u64, build: u64| Sample {
            at_ms: at,
            cpu_nanos: cpu * 1_000_000_000,
            procs: vec![
                proc(1, "sleep", 0, None),
                proc(9, "npm run build", build, None),
            ],
            ..Default::default()
        };
        d.observe(s(10 * SEC, 0, 0));
        d.observe(s(20 * SEC, 4, 4));
        let v = d.observe(s(30 * SEC, 8, 8));
        assert_eq!(v.reasons[0].detail, "npm run build");
        assert_eq!(v.reasons[0].percent, 40);
        assert_eq!(v.reasons[0].since_ms, 10 * SEC);
        assert_eq!(v.processes, 2);
    }

    #[test]
    fn reports_when_awake_and_idle_swap_or_reasons_change() {
        let idle = Verdict {
            idle_since_ms: Some(5),
            ..Default::default()
        };
        let later = Verdict {
            idle_since_ms: Some(5),
            sampled_at_ms: 99,
            ..Default::default()
        };
        let r = |k: &str| Reason {
            kind: k.into(),
            detail: String::new(),
            percent: 1,
            since_ms: 0,
            last_ms: 0,
        };
        let cpu = Verdict {
            reasons: vec![r("cpu")],
            ..Default::default()
        };
        let cpu_tty = Verdict {
            reasons: vec![r("cpu"), r("tty")],
            ..Default::default()
        };
        assert!(!later.differs(&idle));
        assert!(cpu.differs(&idle));
        assert!(cpu_tty.differs(&cpu));
        assert!(!cpu.differs(&cpu.clone()));
    }
}
