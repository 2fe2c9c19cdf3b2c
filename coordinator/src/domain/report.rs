//! What the capacity and cost reports compute, pure: how many more
//! workspaces of a shape fit (packed with the scheduler's own `unfit`
//! rules, node by node), what stays stranded, what a node and a workspace
//! cost per hour (OpenCost's split of a node's price into CPU and memory
//! rates), and when a resource runs out at the current trend.

use crate::domain::scheduler::{unfit, NodeView, Request, Resources};
use std::collections::BTreeMap;

/// How many more of `req` fit on each node, and what is left free on the
/// nodes that could take one of its shape but not another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    /// More workspaces that fit now, on all nodes.
    pub more: u64,
    /// By node (nodes taking none left out).
    pub by_node: BTreeMap<String, u64>,
    /// Free on the nodes that take this shape (ready, not cordoned or
    /// draining, labels matching) once they are full of it: capacity
    /// fragmentation leaves unusable for it.
    pub stranded: Resources,
}

/// Largest number of workspaces a node is packed with (a bound for a node
/// reporting absurd capacity).
const MAX_PER_NODE: u64 = 100_000;

/// Packs `req` onto copies of `nodes` until none takes another. Which node
/// takes which does not change the count (each node's fit depends on that
/// node only), so this equals placing them one by one with the scheduler.
pub fn fit(req: &Request, nodes: &[NodeView]) -> Fit {
    let mut out = Fit::default();
    for n in nodes {
        let mut v = n.clone();
        let mut k = 0;
        while k < MAX_PER_NODE && unfit(req, &v).is_none() {
            v.allocated.cpu_millis += req.resources.cpu_millis;
            v.allocated.memory_bytes += req.resources.memory_bytes;
            v.allocated.disk_bytes += req.resources.disk_bytes;
            v.workspaces += 1;
            k += 1;
        }
        if k > 0 {
            out.by_node.insert(n.id.clone(), k);
            out.more += k;
        }
        if eligible(req, n) {
            let free = |cap: u64, used: u64| cap.saturating_sub(used);
            out.stranded.cpu_millis += free(v.capacity.cpu_millis, v.allocated.cpu_millis);
            out.stranded.memory_bytes += free(v.capacity.memory_bytes, v.allocated.memory_bytes);
            out.stranded.disk_bytes += free(v.capacity.disk_bytes, v.allocated.disk_bytes);
        }
    }
    out
}

/// Whether `n` could take a workspace of `req`'s kind at all (state and
/// labels), whatever is free on it.
fn eligible(req: &Request, n: &NodeView) -> bool {
    n.ready
        && !n.cordoned
        && !n.draining
        && req
            .node_selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
}

/// How many nodes shaped like `like` (empty) hold `need` more workspaces of
/// `req` beyond what fits now; None if such a node takes none.
pub fn nodes_needed(req: &Request, like: &NodeView, need: u64, fit_now: u64) -> Option<u64> {
    let short = need.saturating_sub(fit_now);
    if short == 0 {
        return Some(0);
    }
    let mut empty = like.clone();
    empty.allocated = Resources::default();
    empty.workspaces = 0;
    empty.ready = true;
    empty.cordoned = false;
    empty.draining = false;
    let per = fit(req, std::slice::from_ref(&empty)).more;
    (per > 0).then(|| short.div_ceil(per))
}

/// Prices, per hour, in the configured currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// A node without a price label.
    pub node_hourly: f64,
    /// A node labelled `spot=true` without a price label.
    pub spot_node_hourly: f64,
    /// How many times a core costs more than a GiB of memory (OpenCost's
    /// default list prices: $0.031611 per core-hour, $0.004237 per
    /// GiB-hour, so 7.46).
    pub cpu_to_memory: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            node_hourly: 0.0,
            spot_node_hourly: 0.0,
            cpu_to_memory: 0.031611 / 0.004237,
        }
    }
}

/// Prices, and how often the usage sampler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CostPolicy {
    pub prices: Prices,
    pub sample_ms: i64,
}

impl Default for CostPolicy {
    fn default() -> Self {
        Self {
            prices: Prices::default(),
            sample_ms: 60_000,
        }
    }
}

/// The label that gives a node's price per hour.
pub const PRICE_LABEL: &str = "price-per-hour";
/// The label that marks a spot (preemptible) node.
pub const SPOT_LABEL: &str = "spot";

/// A node's rates: what it costs per hour, per core-hour and per GiB-hour.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub hourly: f64,
    pub per_core: f64,
    pub per_gib: f64,
}

impl Prices {
    /// What node `n` costs: its price label, else the spot or the default
    /// price; split into CPU and memory rates so that the whole node's CPU
    /// and memory cost its price.
    pub fn rates(&self, n: &NodeView) -> Rates {
        let hourly = n
            .labels
            .get(PRICE_LABEL)
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| p.is_finite() && *p >= 0.0)
            .unwrap_or(if n.labels.get(SPOT_LABEL).is_some_and(|s| s == "true") {
                self.spot_node_hourly
            } else {
                self.node_hourly
            });
        let cores = n.capacity.cpu_millis as f64 / 1000.0;
        let gib = n.capacity.memory_bytes as f64 / (1u64 << 30) as f64;
        let units = cores + gib / self.cpu_to_memory;
        let per_core = if units > 0.0 { hourly / units } else { 0.0 };
        Rates {
            hourly,
            per_core,
            per_gib: per_core / self.cpu_to_memory,
        }
    }
}

impl Rates {
    /// What `r` reserved on this node costs per hour.
    pub fn of(&self, r: Resources) -> f64 {
        r.cpu_millis as f64 / 1000.0 * self.per_core
            + r.memory_bytes as f64 / (1u64 << 30) as f64 * self.per_gib
    }
}

/// When a resource runs out at the current trend: a least-squares line
/// through `(hour, allocated)` samples; None when it does not grow.
/// Returns the hours from the last sample until allocation reaches `cap`.
pub fn runs_out_in_hours(samples: &[(f64, f64)], cap: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in samples {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    if slope <= 0.0 {
        return None;
    }
    let last = samples.last().map(|s| s.0).unwrap_or(0.0);
    let now = my + slope * (last - mx);
    Some(((cap - now) / slope).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(id: &str, cpu: u64, mem_gib: u64, slots: u32) -> NodeView {
        NodeView {
            id: id.into(),
            ready: true,
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: mem_gib * GIB,
                disk_bytes: 100 * GIB,
            },
            max_workspaces: slots,
            ..NodeView::default()
        }
    }

    fn req(cpu: u64, mem_gib: u64) -> Request {
        Request {
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: mem_gib * GIB,
                disk_bytes: GIB,
            },
            ..Request::default()
        }
    }

    #[test]
    fn fragmentation_strands_what_no_node_can_use() {
        // Totals say 3000m / 1000m = 3; each node holds 1 with 500m left.
        let nodes = vec![node("a", 1500, 8, 10), node("b", 1500, 8, 10)];
        let f = fit(&req(1000, 1), &nodes);
        assert_eq!(f.more, 2);
        assert_eq!(f.stranded.cpu_millis, 1000);
        // Slots, labels and state limit too.
        let mut c = node("c", 8000, 64, 3);
        c.workspaces = 1;
        let mut d = node("d", 8000, 64, 10);
        d.cordoned = true;
        let mut e = node("e", 8000, 64, 10);
        e.labels.insert("gpu".into(), "yes".into());
        let mut gpu = req(1000, 1);
        gpu.node_selector.insert("gpu".into(), "yes".into());
        let nodes = vec![c.clone(), d, e];
        assert_eq!(fit(&req(1000, 1), &nodes).by_node.get("c"), Some(&2));
        assert_eq!(fit(&gpu, &nodes).more, 8);
        assert_eq!(fit(&gpu, &nodes).by_node.keys().collect::<Vec<_>>(), ["e"]);
        assert_eq!(nodes_needed(&req(1000, 1), &c, 10, 2), Some(3));
        assert_eq!(nodes_needed(&req(1000, 1), &c, 2, 2), Some(0));
        assert_eq!(nodes_needed(&req(99_000, 1), &c, 1, 0), None);
    }

    #[test]
    fn a_nodes_price_splits_into_cpu_and_memory_rates() {
        let p = Prices {
            node_hourly: 0.40,
            spot_node_hourly: 0.12,
            cpu_to_memory: 8.0,
        };
        // 4 cores + 16 GiB = 4 + 2 core-equivalents: 0.40 / 6 per core.
        let mut n = node("n", 4000, 16, 10);
        let r = p.rates(&n);
        assert!((r.per_core - 0.40 / 6.0).abs() < 1e-12);
        assert!((r.per_gib - 0.40 / 48.0).abs() < 1e-12);
        // The whole node costs its price.
        assert!((r.of(n.capacity) - 0.40).abs() < 1e-12);
        n.labels.insert(SPOT_LABEL.into(), "true".into());
        assert_eq!(p.rates(&n).hourly, 0.12);
        n.labels.insert(PRICE_LABEL.into(), "0.05".into());
        assert_eq!(p.rates(&n).hourly, 0.05);
        n.labels.insert(PRICE_LABEL.into(), "-1".into());
        assert_eq!(p.rates(&n).hourly, 0.12, "a bad label is ignored");
    }

    #[test]
    fn the_forecast_follows_the_trend() {
        // +10 an hour from 100, last sample at hour 9 (190): 1000 in 81 h.
        let s: Vec<(f64, f64)> = (0..10)
            .map(|h| (h as f64, 100.0 + 10.0 * h as f64))
            .collect();
        let h = runs_out_in_hours(&s, 1000.0).unwrap();
        assert!((h - 81.0).abs() < 1e-9, "{h}");
        let flat: Vec<(f64, f64)> = (0..10).map(|h| (h as f64, 50.0)).collect();
        assert_eq!(runs_out_in_hours(&flat, 1000.0), None);
        let down: Vec<(f64, f64)> = (0..10).map(|h| (h as f64, 500.0 - h as f64)).collect();
        assert_eq!(runs_out_in_hours(&down, 1000.0), None);
        assert_eq!(runs_out_in_hours(&s[..1], 1000.0), None);
        assert_eq!(runs_out_in_hours(&s, 150.0), Some(0.0), "already past");
    }
}
