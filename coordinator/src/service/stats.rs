//! What the service counts for `/metrics` as it works: start latency
//! (request to running), placement outcomes by reason, backup and prebuild
//! outcomes,
//! and how long the store takes to commit. Kept in memory for the
//! coordinator's life (Prometheus counters restart with it).

use crate::domain::lifecycle::State;
use crate::domain::scheduler::{NoFit, Resources};
use crate::domain::workspace::WorkspaceRow;
use berth_proto::api::Usage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}

/// The service's counters.
#[derive(Clone, Debug)]
pub struct Stats {
    start_latency: Histogram,
    placements: Counter,
    unplaceable: Family<Reason, Counter>,
    backups: Family<Outcome, Counter>,
    prebuilds: Family<Outcome, Counter>,
    prebuild_duration: Histogram,
    store: Family<Op, Histogram>,
    /// When each workspace last asked to run (entered pending).
    asked: Arc<Mutex<HashMap<String, i64>>>,
    /// What each node connected here last said its workspaces use, and when.
    used: Arc<Mutex<HashMap<String, (Resources, i64)>>>,
    /// Node by node, workspace by workspace (by id): what its last heartbeat said.
    ws_used: Arc<Mutex<HashMap<String, HashMap<String, Usage>>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            // 50 ms to ~27 min.
            start_latency: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            placements: Counter::default(),
            unplaceable: Family::default(),
            backups: Family::default(),
            prebuilds: Family::default(),
            // 1 s to ~4.5 h.
            prebuild_duration: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            // 0.1 ms to ~3 s.
            store: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
            asked: Arc::default(),
            used: Arc::default(),
            ws_used: Arc::default(),
        }
    }
}

impl Stats {
    /// Follows a workspace's state: the time from asking to run to running.
    pub(super) fn saw(&self, w: &WorkspaceRow, now_ms: i64) {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        match w.state {
            State::Pending => {
                asked.entry(w.id.clone()).or_insert(now_ms);
            }
            State::Running => {
                if let Some(t) = asked.remove(&w.id) {
                    self.start_latency
                        .observe((now_ms - t).max(0) as f64 / 1000.0);
                }
            }
            State::Failed | State::Stopped | State::Deleted => {
                asked.remove(&w.id);
            }
            _ => {}
        }
    }

    /// A node's heartbeat said what its workspaces use.
    pub(super) fn node_used(&self, node: String, u: berth_proto::link::NodeUsage, now_ms: i64) {
        let r = Resources {
            cpu_millis: u.cpu_millis,
            memory_bytes: u.memory_bytes,
            disk_bytes: u.disk_bytes,
        };
        // Its workspaces are all in each heartbeat: the map is replaced whole
        // (the ones not there left), and no other node's is touched.
        let ws = u
            .workspaces
            .into_iter()
            .map(|w| {
                let usage = Usage {
                    cpu_millis: w.cpu_millis,
                    memory_bytes: w.memory_bytes,
                    disk_bytes: w.disk_bytes,
                    at_ms: now_ms,
                };
                (w.name, usage)
            })
            .collect();
        self.ws_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), ws);
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, (r, now_ms));
    }

    /// What workspace `id` uses on `node`, if that node said so since `since_ms`.
    pub(super) fn workspace_used(&self, id: &str, node: &str, since_ms: i64) -> Option<Usage> {
        self.ws_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .and_then(|ws| ws.get(id))
            .filter(|u| u.at_ms >= since_ms)
            .copied()
    }

    /// What `node` uses, if it said so since `since_ms` (to this coordinator).
    pub(super) fn used_by(&self, node: &str, since_ms: i64) -> Option<Resources> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .filter(|(_, at)| *at >= since_ms)
            .map(|(r, _)| *r)
    }

    pub(super) fn placed(&self, n: usize) {
        self.placements.inc_by(n as u64);
    }

    /// A workspace found no node, for the reason most nodes gave.
    pub(super) fn unplaceable(&self, why: &NoFit) {
        let reason = why
            .reasons
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("no_nodes".to_string(), |(r, _)| {
                format!("{r:?}").to_ascii_lowercase()
            });
        self.unplaceable.get_or_create(&Reason { reason }).inc();
    }

    pub(super) fn backup(&self, ok: bool) {
        let outcome = if ok { "confirmed" } else { "failed" };
        self.backups
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A prebuild ended `outcome` (ready, reused, failed), its build
    /// having taken `took` (none: it never reached a node).
    pub(super) fn prebuild(&self, outcome: &str, took: Option<Duration>) {
        self.prebuilds
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
        if let Some(t) = took {
            self.prebuild_duration.observe(t.as_secs_f64());
        }
    }

    /// How long a store commit of `op` took.
    pub(super) fn store(&self, op: &str, took: Duration) {
        self.store
            .get_or_create(&Op { op: op.into() })
            .observe(took.as_secs_f64());
    }

    /// Registers the counters (names after the `berth_` prefix).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "workspace_start_duration_seconds",
            "Time from a workspace asking to run (created or started) to running",
            self.start_latency.clone(),
        );
        reg.register(
            "placements",
            "Workspaces placed on a node",
            self.placements.clone(),
        );
        reg.register(
            "placement_failures",
            "Workspaces that found no node, by the reason most nodes gave (cpu, memory, disk, slots, labels, notready, cordoned, draining)",
            self.unplaceable.clone(),
        );
        reg.register(
            "backups",
            "Backups by outcome (confirmed, failed)",
            self.backups.clone(),
        );
        reg.register(
            "prebuilds",
            "Prebuilds by outcome (ready: built; reused: an identical layer the node held; failed)",
            self.prebuilds.clone(),
        );
        reg.register(
            "prebuild_duration_seconds",
            "Time a prebuild took on its node, from asking to the layer (or the failure)",
            self.prebuild_duration.clone(),
        );
        reg.register(
            "store_commit_duration_seconds",
            "Time to commit a store write, by operation (insert, update, place)",
            self.store.clone(),
        );
    }
}
