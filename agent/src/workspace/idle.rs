//! Sampling running workspaces for the idle detector, and telling their
//! terminals what is about to happen to them.

use super::*;
use crate::idle::detector::{Limits, Tunnel, Verdict};
use crate::idle::sample::{tell_terminals, Reader, Target};
use crate::idle::Detector;

impl Manager {
    /// Samples every running workspace every `[idle] sample_seconds`, for ever.
    pub async fn watch_idle(&self) {
        let every = Duration::from_secs(self.inner.cfg.file.idle.sample_seconds);
        let reader = Reader::new(self.inner.host.proc(), self.inner.cgroups.clone());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample_idle(&reader).await;
        }
    }

    /// One round: each running workspace's sample goes to its detector; a
    /// verdict that tells something new is reported as a change.
    pub async fn sample_idle(&self, reader: &Reader) {
        let Ok(records) = self.inner.records.all() else {
            return;
        };
        let gateway = self.inner.net.subnet().gateway();
        let net_limit = self.inner.cfg.file.idle.net_bytes;
        let prev_net: HashMap<String, Option<u64>> = {
            let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter()
                .map(|(name, (d, _))| (name.clone(), d.last_net_bytes()))
                .collect()
        };
        let targets: Vec<(String, i64, Target)> = records
            .into_iter()
            .filter(|r| r.phase == Phase::Ready && r.started_at_ms > 0)
            .map(|r| {
                let target = Target {
                    cgroup: self.cgroups_path(&r.name),
                    veth: Some(self.inner.net.veth_name(&r.name)),
                    gateway,
                    prev_net_bytes: prev_net.get(&r.name).copied().flatten(),
                    net_limit,
                };
                (r.name, r.started_at_ms, target)
            })
            .collect();
        let reader = reader.clone();
        let at_ms = berth_proto::units::now_ms() as u64;
        let t = std::time::Instant::now();
        let samples = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(name, started, t)| {
                    let s = reader.sample(&t, at_ms);
                    (name, started, s)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        tracing::debug!(
            workspaces = samples.len(),
            us = t.elapsed().as_micros() as u64,
            "idle sampled"
        );
        let limits = self.idle_limits();
        let mut changed = Vec::new();
        {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            let running: HashSet<&str> = samples
                .iter()
                .filter(|(_, _, s)| !s.procs.is_empty())
                .map(|(n, _, _)| n.as_str())
                .collect();
            idle.retain(|name, _| running.contains(name.as_str()));
            for (name, started, mut s) in samples {
                if s.procs.is_empty() {
                    continue;
                }
                s.tunnels = self
                    .inner
                    .activity
                    .of(&name)
                    .into_iter()
                    .map(|t| Tunnel {
                        kind: t.kind,
                        open: t.open,
                        bytes: t.bytes_in + t.bytes_out,
                    })
                    .collect();
                let (d, last) = idle.entry(name.clone()).or_insert_with(|| {
                    (
                        Detector::new(limits, started.max(0) as u64),
                        Verdict::default(),
                    )
                });
                // The first sample only primes it: CPU and bytes are rates.
                let primed = d.primed();
                let v = d.observe(s);
                if !primed {
                    continue;
                }
                if last.sampled_at_ms == 0 || v.differs(last) {
                    changed.push(name);
                }
                *last = v;
            }
        }
        for name in changed {
            let _ = self.inner.changes.send(name);
        }
    }

    fn idle_limits(&self) -> Limits {
        let c = &self.inner.cfg.file.idle;
        Limits {
            cpu_percent: c.cpu_percent,
            tunnel_bytes: c.tunnel_bytes,
            net_bytes: c.net_bytes,
            tty_window_ms: (c.sample_seconds * 2000).max(10_000),
            stall_percent: c.stall_percent,
        }
    }

    /// The idle verdict of `name`, once it was sampled twice.
    pub(super) fn idle_verdict(&self, name: &str) -> Option<pb::IdleVerdict> {
        let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (_, v) = idle.get(name)?;
        (v.sampled_at_ms != 0).then(|| to_proto(v))
    }

    /// Writes `message` to the terminals of workspace `name`.
    pub async fn notify(&self, name: &str, message: &str) -> Result<pb::NotifyResult> {
        crate::validate::name(name)?;
        self.record(name)?;
        if message.len() > 4096 || message.chars().any(|c| c.is_control() && c != '\n') {
            return Err(AgentError::InvalidRequest(
                "a notice is at most 4096 bytes of printable text".into(),
            ));
        }
        let proc = self.inner.host.proc().to_path_buf();
        let cgroups = self.inner.cgroups.clone();
        let cgroup = self.cgroups_path(name);
        let message = message.replace('\n', "\r\n");
        let terminals =
            tokio::task::spawn_blocking(move || tell_terminals(&proc, &cgroups, &cgroup, &message))
                .await
                .unwrap_or(0);
        Ok(pb::NotifyResult { terminals })
    }
}

fn to_proto(v: &Verdict) -> pb::IdleVerdict {
    pb::IdleVerdict {
        idle_since_ms: v.idle_since_ms.unwrap_or(0),
        reasons: v
            .reasons
            .iter()
            .map(|r| pb::IdleReason {
                kind: r.kind.clone(),
                detail: r.detail.clone(),
                percent: r.percent,
                since_ms: r.since_ms,
                last_ms: r.last_ms,
            })
            .collect(),
        sampled_at_ms: v.sampled_at_ms,
        processes: v.processes,
        newest: v.newest.clone(),
    }
}
