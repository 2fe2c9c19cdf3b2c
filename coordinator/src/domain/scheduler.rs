//! Placement: a pure function from a workspace's needs and a table of nodes
//! to the node it should go to. Filter (ready, not cordoned or draining,
//! labels, free CPU / memory / disk / slots), then score: a node that holds
//! the workspace's prebuild first, then one that caches the image, then
//! bin-pack or spread by the configured strategy.
//! Ties go to the smallest node id, so a decision is reproducible.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Amounts of the resources placement counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Resources {
    fn plus(self, o: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(o.disk_bytes),
        }
    }
}

/// What the scheduler knows of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    /// Connected and heartbeating.
    pub ready: bool,
    pub cordoned: bool,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    /// What the node offers to workspaces.
    pub capacity: Resources,
    /// What placed workspaces already hold.
    pub allocated: Resources,
    /// Most workspaces the node takes.
    pub max_workspaces: u32,
    pub workspaces: u32,
    /// Image references the node has unpacked.
    pub cached_images: BTreeSet<String>,
    /// Keys of the prebuild layers the node holds.
    pub cached_prebuilds: BTreeSet<String>,
}

/// What a workspace needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub image: String,
    pub resources: Resources,
    /// Labels a node must carry, all of them, with these values.
    pub node_selector: BTreeMap<String, String>,
    /// The key of the prebuild the workspace starts from, if any.
    pub prebuild: Option<String>,
}

/// How to choose among nodes that fit equally well on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Fill the fullest node first (fewer, busier nodes; the rest can scale down).
    #[default]
    BinPack,
    /// Prefer the emptiest node (less interference between workspaces).
    Spread,
}

/// Why a node was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    NotReady,
    Cordoned,
    Draining,
    Labels,
    Cpu,
    Memory,
    Disk,
    Slots,
}

impl Unfit {
    fn describe(self) -> &'static str {
        match self {
            Unfit::NotReady => "not ready",
            Unfit::Cordoned => "cordoned",
            Unfit::Draining => "draining",
            Unfit::Labels => "without the requested labels",
            Unfit::Cpu => "short of CPU",
            Unfit::Memory => "short of memory",
            Unfit::Disk => "short of disk",
            Unfit::Slots => "full (workspace slots)",
        }
    }
}

/// A decision: the node and why it won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub prebuild_held: bool,
    pub image_cached: bool,
    /// Dominant-resource utilization of the node after placing, in parts per million.
    pub utilization_ppm: u64,
}

/// No node fits; how many nodes each reason ruled out (first reason per node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_no_fit(.reasons, *.nodes))]
pub struct NoFit {
    pub nodes: usize,
    pub reasons: BTreeMap<Unfit, usize>,
}

fn describe_no_fit(reasons: &BTreeMap<Unfit, usize>, nodes: usize) -> String {
    if nodes == 0 {
        return "no node is registered".into();
    }
    let parts: Vec<String> = reasons
        .iter()
        .map(|(r, n)| format!("{n} {}", r.describe()))
        .collect();
    format!("no node of {nodes} fits: {}", parts.join(", "))
}

/// Why `node` cannot take `req`, or None if it can.
pub fn unfit(req: &Request, node: &NodeView) -> Option<Unfit> {
    let after = node.allocated.plus(req.resources);
    let cap = node.capacity;
    if !node.ready {
        Some(Unfit::NotReady)
    } else if node.cordoned {
        Some(Unfit::Cordoned)
    } else if node.draining {
        Some(Unfit::Draining)
    } else if !req
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        Some(Unfit::Labels)
    } else if after.cpu_millis > cap.cpu_millis {
        Some(Unfit::Cpu)
    } else if after.memory_bytes > cap.memory_bytes {
        Some(Unfit::Memory)
    } else if after.disk_bytes > cap.disk_bytes {
        Some(Unfit::Disk)
    } else if node.workspaces >= node.max_workspaces {
        Some(Unfit::Slots)
    } else {
        None
    }
}

/// The largest share of any resource the node would have in use after
/// placing `req`, in parts per million.
pub fn utilization_ppm(req: &Request, node: &NodeView) -> u64 {
    let after = node.allocated.plus(req.resources);
    let share = |used: u64, cap: u64| {
        if cap == 0 {
            1_000_000
        } else {
            (u128::from(used) * 1_000_000 / u128::from(cap)) as u64
        }
    };
    let slots = share(
        u64::from(node.workspaces) + 1,
        u64::from(node.max_workspaces),
    );
    share(after.cpu_millis, node.capacity.cpu_millis)
        .max(share(after.memory_bytes, node.capacity.memory_bytes))
        .max(share(after.disk_bytes, node.capacity.disk_bytes))
        .max(slots)
}

/// Chooses the node for `req`.
pub fn place(req: &Request, nodes: &[NodeView], strategy: Strategy) -> Result<Placement, NoFit> {
    best_of(req, nodes.iter(), strategy)
}

/// The best of `nodes` for `req`: prebuild held first, then image cached,
/// then by strategy, then the smallest id.
fn best_of<'a>(
    req: &Request,
    nodes: impl Iterator<Item = &'a NodeView>,
    strategy: Strategy,
) -> Result<Placement, NoFit> {
    let mut reasons = BTreeMap::new();
    let mut seen = 0;
    let mut best: Option<(Placement, (bool, bool, i64), &str)> = None;
    for node in nodes {
        seen += 1;
        if let Some(r) = unfit(req, node) {
            *reasons.entry(r).or_insert(0) += 1;
            continue;
        }
        let held = req
            .prebuild
            .as_ref()
            .is_some_and(|k| node.cached_prebuilds.contains(k));
        let cached = node.cached_images.contains(&req.image);
        let util = utilization_ppm(req, node);
        let fit = match strategy {
            Strategy::BinPack => util as i64,
            Strategy::Spread => -(util as i64),
        };
        let key = (held, cached, fit);
        let better = match &best {
            None => true,
            Some((_, k, id)) => key > *k || (key == *k && node.id.as_str() < *id),
        };
        if better {
            best = Some((
                Placement {
                    node: node.id.clone(),
                    prebuild_held: held,
                    image_cached: cached,
                    utilization_ppm: util,
                },
                key,
                &node.id,
            ));
        }
    }
    best.map(|(p, _, _)| p).ok_or(NoFit {
        nodes: seen,
        reasons,
    })
}

/// The nodes of one scheduling pass, indexed by id, by held prebuild and by
/// cached image, and kept current as the pass places workspaces. `place`
/// gives the answer `place` over the whole table gives, but when a node that
/// holds the prebuild (or else caches the image) fits, the best one is among
/// those (they rank first), so it looks at them only instead of at every node.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    nodes: Vec<NodeView>,
    by_id: HashMap<String, usize>,
    by_image: HashMap<String, Vec<usize>>,
    by_prebuild: HashMap<String, Vec<usize>>,
}

impl Fleet {
    pub fn new(nodes: Vec<NodeView>) -> Self {
        let mut by_id = HashMap::with_capacity(nodes.len());
        let mut by_image: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_prebuild: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            by_id.insert(n.id.clone(), i);
            for img in &n.cached_images {
                by_image.entry(img.clone()).or_default().push(i);
            }
            for key in &n.cached_prebuilds {
                by_prebuild.entry(key.clone()).or_default().push(i);
            }
        }
        Self {
            nodes,
            by_id,
            by_image,
            by_prebuild,
        }
    }

    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Chooses the node for `req`; the same answer as [`place`] over `nodes()`.
    pub fn place(&self, req: &Request, strategy: Strategy) -> Result<Placement, NoFit> {
        let holders = req.prebuild.as_ref().and_then(|k| self.by_prebuild.get(k));
        if let Some(idx) = holders {
            if let Ok(p) = best_of(req, idx.iter().map(|&i| &self.nodes[i]), strategy) {
                return Ok(p);
            }
        }
        if let Some(idx) = self.by_image.get(&req.image) {
            if let Ok(p) = best_of(req, idx.iter().map(|&i| &self.nodes[i]), strategy) {
                return Ok(p);
            }
        }
        place(req, &self.nodes, strategy)
    }

    /// Counts a placement on `node` for the rest of the pass.
    pub fn reserve(&mut self, node: &str, r: Resources) {
        if let Some(v) = self.by_id.get(node).map(|&i| &mut self.nodes[i]) {
            v.allocated = v.allocated.plus(r);
            v.workspaces += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(id: &str, cpu: u64, mem_gib: u64, used_cpu: u64, used_mem_gib: u64) -> NodeView {
        NodeView {
            id: id.into(),
            ready: true,
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: mem_gib * GIB,
                disk_bytes: 100 * GIB,
            },
            allocated: Resources {
                cpu_millis: used_cpu,
                memory_bytes: used_mem_gib * GIB,
                disk_bytes: 0,
            },
            max_workspaces: 100,
            ..Default::default()
        }
    }

    fn req(cpu: u64, mem_gib: u64) -> Request {
        Request {
            image: "reg/dev:1".into(),
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: mem_gib * GIB,
                disk_bytes: 10 * GIB,
            },
            ..Default::default()
        }
    }

    #[test]
    fn filters_table() {
        let r = req(1000, 2);
        let ok = node("n", 4000, 8, 0, 0);
        type Case = (&'static str, fn(&mut NodeView), Option<Unfit>);
        let cases: [Case; 10] = [
            ("fits", |_| {}, None),
            ("exactly full fits", |n| n.allocated.cpu_millis = 3000, None),
            ("not ready", |n| n.ready = false, Some(Unfit::NotReady)),
            ("cordoned", |n| n.cordoned = true, Some(Unfit::Cordoned)),
            ("draining", |n| n.draining = true, Some(Unfit::Draining)),
            ("cpu", |n| n.allocated.cpu_millis = 3001, Some(Unfit::Cpu)),
            (
                "memory",
                |n| n.allocated.memory_bytes = 7 * GIB,
                Some(Unfit::Memory),
            ),
            (
                "disk",
                |n| n.allocated.disk_bytes = 95 * GIB,
                Some(Unfit::Disk),
            ),
            ("slots", |n| n.workspaces = 100, Some(Unfit::Slots)),
            (
                "overflowing counters",
                |n| n.allocated.cpu_millis = u64::MAX,
                Some(Unfit::Cpu),
            ),
        ];
        for (what, mutate, want) in cases {
            let mut n = ok.clone();
            mutate(&mut n);
            assert_eq!(unfit(&r, &n), want, "{what}");
        }
    }

    #[test]
    fn labels_must_all_match() {
        let mut r = req(100, 1);
        r.node_selector =
            BTreeMap::from([("zone".into(), "a".into()), ("gpu".into(), "no".into())]);
        let mut n = node("n", 4000, 8, 0, 0);
        n.labels = BTreeMap::from([("zone".into(), "a".into())]);
        assert_eq!(unfit(&r, &n), Some(Unfit::Labels));
        n.labels.insert("gpu".into(), "no".into());
        assert_eq!(unfit(&r, &n), None);
        n.labels.insert("zone".into(), "b".into());
        assert_eq!(unfit(&r, &n), Some(Unfit::Labels));
    }

    #[test]
    fn cached_image_wins_over_packing() {
        let r = req(1000, 1);
        let busy = node("a", 4000, 8, 2000, 4);
        let mut idle_cached = node("b", 4000, 8, 0, 0);
        idle_cached.cached_images.insert("reg/dev:1".into());
        let p = place(&r, &[busy.clone(), idle_cached.clone()], Strategy::BinPack).unwrap();
        assert_eq!((p.node.as_str(), p.image_cached), ("b", true));
        let p = place(&r, &[busy], Strategy::BinPack).unwrap();
        assert!(!p.image_cached);
    }

    #[test]
    fn held_prebuild_wins_over_cached_image_and_packing() {
        let mut r = req(1000, 1);
        r.prebuild = Some("k1".into());
        let mut busy_cached = node("a", 4000, 8, 2000, 4);
        busy_cached.cached_images.insert("reg/dev:1".into());
        let mut idle_holder = node("b", 4000, 8, 0, 0);
        idle_holder.cached_prebuilds.insert("k1".into());
        let mut other_key = node("c", 4000, 8, 3000, 6);
        other_key.cached_prebuilds.insert("k2".into());
        let nodes = [busy_cached.clone(), idle_holder.clone(), other_key];
        let p = place(&r, &nodes, Strategy::BinPack).unwrap();
        assert_eq!((p.node.as_str(), p.prebuild_held), ("b", true));
        assert_eq!(
            Fleet::new(nodes.to_vec()).place(&r, Strategy::BinPack),
            Ok(p)
        );
        // A holder that does not fit loses to the cached image.
        let mut full_holder = idle_holder;
        full_holder.allocated.cpu_millis = 3500;
        let nodes = [busy_cached, full_holder];
        let p = place(&r, &nodes, Strategy::BinPack).unwrap();
        assert_eq!(
            (p.node.as_str(), p.prebuild_held, p.image_cached),
            ("a", false, true)
        );
        assert_eq!(
            Fleet::new(nodes.to_vec()).place(&r, Strategy::BinPack),
            Ok(p)
        );
    }

    #[test]
    fn binpack_fills_the_fullest_and_spread_the_emptiest() {
        let r = req(1000, 1);
        let nodes = [
            node("a", 4000, 8, 1000, 1),
            node("b", 4000, 8, 2000, 2),
            node("c", 4000, 8, 0, 0),
        ];
        assert_eq!(place(&r, &nodes, Strategy::BinPack).unwrap().node, "b");
        assert_eq!(place(&r, &nodes, Strategy::Spread).unwrap().node, "c");
    }

    #[test]
    fn dominant_resource_decides_utilization() {
        let r = req(0, 0);
        let mut n = node("n", 4000, 8, 1000, 6);
        n.capacity.disk_bytes = 100 * GIB;
        // memory at 6/8 (+0) dominates cpu at 1/4; disk 10/100
        assert_eq!(utilization_ppm(&r, &n), 750_000);
    }

    #[test]
    fn ties_go_to_the_smallest_id() {
        let r = req(500, 1);
        let nodes = [
            node("n2", 4000, 8, 0, 0),
            node("n1", 4000, 8, 0, 0),
            node("n3", 4000, 8, 0, 0),
        ];
        for s in [Strategy::BinPack, Strategy::Spread] {
            assert_eq!(place(&r, &nodes, s).unwrap().node, "n1");
        }
    }

    #[test]
    fn no_fit_says_why() {
        let r = req(1000, 4);
        let mut cordoned = node("a", 4000, 8, 0, 0);
        cordoned.cordoned = true;
        let nodes = [cordoned, node("b", 4000, 8, 0, 6), node("c", 4000, 8, 0, 5)];
        let e = place(&r, &nodes, Strategy::BinPack).unwrap_err();
        assert_eq!(
            e.reasons,
            BTreeMap::from([(Unfit::Cordoned, 1), (Unfit::Memory, 2)])
        );
        assert_eq!(
            e.to_string(),
            "no node of 3 fits: 1 cordoned, 2 short of memory"
        );
        assert_eq!(
            place(&r, &[], Strategy::Spread).unwrap_err().to_string(),
            "no node is registered"
        );
    }

    #[test]
    fn twenty_workspaces_over_three_nodes_stay_within_capacity() {
        let mut nodes = vec![
            node("a", 8000, 16, 0, 0),
            node("b", 8000, 16, 0, 0),
            node("c", 8000, 16, 0, 0),
        ];
        // Places one workspace and books it on its node, as the store would.
        let place_and_book = |nodes: &mut Vec<NodeView>| -> Result<(), NoFit> {
            let r = req(1000, 2);
            let p = place(&r, nodes, Strategy::Spread)?;
            let n = nodes.iter_mut().find(|n| n.id == p.node).unwrap();
            n.allocated = n.allocated.plus(r.resources);
            n.workspaces += 1;
            Ok(())
        };
        for i in 0..20 {
            place_and_book(&mut nodes).unwrap_or_else(|e| panic!("workspace {i}: {e}"));
        }
        for n in &nodes {
            assert!(
                n.allocated.cpu_millis <= n.capacity.cpu_millis
                    && n.allocated.memory_bytes <= n.capacity.memory_bytes
            );
        }
        let counts: Vec<u32> = nodes.iter().map(|n| n.workspaces).collect();
        assert_eq!(counts, [7, 7, 6], "spread evens them out");
        // 8 cores each: the 25th 1-core workspace has no room left.
        for _ in 0..4 {
            place_and_book(&mut nodes).unwrap();
        }
        assert!(place_and_book(&mut nodes).is_err());
    }

    #[test]
    fn fleet_places_as_the_full_scan_does() {
        // Deterministic pseudo-random tables: sizes, loads, cached images, labels.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let mut nodes = Vec::new();
            for i in 0..(5 + rnd(60)) {
                let mut n = node(&format!("n{i:02}"), 4000, 16, rnd(4000), rnd(16));
                n.ready = rnd(10) > 0;
                n.cordoned = rnd(15) == 0;
                n.max_workspaces = 1 + rnd(5) as u32;
                n.workspaces = rnd(5) as u32;
                for _ in 0..rnd(3) {
                    n.cached_images.insert(format!("reg/img{}:1", rnd(5)));
                }
                for _ in 0..rnd(2) {
                    n.cached_prebuilds.insert(format!("k{}", rnd(4)));
                }
                if rnd(2) == 0 {
                    n.labels.insert("zone".into(), format!("z{}", rnd(2)));
                }
                nodes.push(n);
            }
            let mut fleet = Fleet::new(nodes.clone());
            for k in 0..30 {
                let mut r = req(100 + rnd(2000), 1 + rnd(6));
                r.image = format!("reg/img{}:1", rnd(6));
                if rnd(2) == 0 {
                    r.prebuild = Some(format!("k{}", rnd(5)));
                }
                if rnd(4) == 0 {
                    r.node_selector
                        .insert("zone".into(), format!("z{}", rnd(2)));
                }
                let strategy = if round % 2 == 0 {
                    Strategy::BinPack
                } else {
                    Strategy::Spread
                };
                let want = place(&r, &nodes, strategy);
                let got = fleet.place(&r, strategy);
                assert_eq!(got, want, "round {round}, request {k}");
                if let Ok(p) = want {
                    fleet.reserve(&p.node, r.resources);
                    let n = nodes.iter_mut().find(|n| n.id == p.node).unwrap();
                    n.allocated = n.allocated.plus(r.resources);
                    n.workspaces += 1;
                }
                assert_eq!(fleet.nodes(), &nodes[..]);
            }
        }
    }
}
