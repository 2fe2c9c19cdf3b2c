//! Leak checks (what a test asserts after deleting everything) and the
//! forced cleanup that runs when a node is dropped, also after a failure.

use crate::node::Node;
use crate::process::Containerd;
use std::path::Path;

/// Where one node (an agent with its containerd) keeps what workspaces use:
/// what the leak inventory reads. `netns`: the network namespace the agent
/// runs in (its bridge, veths and nftables are there), None for the host's.
#[derive(Debug, Clone, Copy)]
pub struct NodeParts<'a> {
    pub label: &'a str,
    pub dir: &'a Path,
    pub netns_dir: &'a Path,
    pub cgroup_parent: &'a str,
    pub bridge: &'a str,
    pub nft_table: &'a str,
    pub containerd: &'a Containerd,
    pub netns: Option<&'a str>,
}

impl<'a> NodeParts<'a> {
    /// The parts of a single-node harness node.
    pub fn of(node: &'a Node) -> Self {
        Self {
            label: &node.id,
            dir: &node.dir,
            netns_dir: &node.netns_dir,
            cgroup_parent: &node.cgroup_parent,
            bridge: &node.bridge,
            nft_table: &node.nft_table,
            containerd: &node.containerd,
            netns: None,
        }
    }

    /// `cmd` run in the node's network namespace.
    fn in_netns(&self, cmd: &str) -> String {
        match self.netns {
            Some(ns) => format!("ip netns exec {ns} sh -c '{cmd}'"),
            None => cmd.to_string(),
        }
    }
}

/// Everything a node still holds that belongs to workspaces. Prepared slots
/// (namespace + volume made ahead, named `pool-…`) are counted apart: they
/// belong to the node, like its bridge.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leaks {
    pub prepared_netns: usize,
    pub prepared_volumes: usize,
    pub netns: Vec<String>,
    pub veths: Vec<String>,
    pub cgroups: Vec<String>,
    pub mounts: Vec<String>,
    pub containers: Vec<String>,
    pub tasks: Vec<String>,
    pub snapshots: Vec<String>,
    /// containerd shim processes serving this node's containerd.
    pub shims: Vec<String>,
    pub nft_rules: Vec<String>,
}

impl Leaks {
    /// Reads what `node` holds now.
    pub fn of(node: &Node) -> Self {
        Self::of_parts(&NodeParts::of(node))
    }

    /// Reads what the node of `node` holds now.
    pub fn of_parts(node: &NodeParts) -> Self {
        let ls = |p: &Path| -> Vec<String> {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let cgroups = cgroup_dirs(node.cgroup_parent)
            .iter()
            .flat_map(|d| {
                ls(d)
                    .into_iter()
                    .filter(|n| d.join(n).is_dir())
                    .map(|n| format!("{}/{n}", d.display()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Everything under the node's directory: the agent's volumes and
        // containerd's own state (task rootfs mounts).
        let dir = format!("{}/", node.dir.to_string_lossy());
        // Prebuild layers are the node's cache, mounted read-only while held;
        // the secrets tmpfs is the agent's own, kept across its restarts.
        let (prepared_mounts, mounts): (Vec<String>, Vec<String>) = mounts_under(&dir)
            .into_iter()
            .filter(|m| !m.contains("/agent/prebuilds/") && !m.ends_with("/agent/secrets"))
            .partition(|m| m.contains("/volumes/pool-") || m.contains("/netns/pool-"));
        let prepared_mounts: Vec<String> = prepared_mounts
            .into_iter()
            .filter(|m| m.contains("/volumes/"))
            .collect();
        // A slot's namespaces are a netns and the user namespace owning it;
        // a user namespace without its netns is a leak.
        let names = ls(node.netns_dir);
        let (prepared_netns, netns): (Vec<String>, Vec<String>) = names
            .iter()
            .filter(|n| {
                n.strip_suffix(".user")
                    .is_none_or(|net| !names.iter().any(|m| m == net) || !net.starts_with("pool-"))
            })
            .cloned()
            .partition(|n| n.starts_with("pool-"));
        let snapshots = node
            .containerd
            .ctr_list(&["snapshots", "ls"])
            .into_iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .filter(|k| k.starts_with("berth/") || k.starts_with("berth-extract-"))
            .collect();
        Self {
            prepared_netns: prepared_netns.len(),
            prepared_volumes: prepared_mounts.len(),
            netns,
            veths: veths(node),
            cgroups,
            mounts,
            containers: node.containerd.ctr_list(&["containers", "ls", "-q"]),
            tasks: node.containerd.ctr_list(&["tasks", "ls", "-q"]),
            snapshots,
            shims: shims_of(&node.containerd.socket.to_string_lossy()),
            nft_rules: nft_rules_in(node),
        }
    }
}

/// Most prepared slots an agent keeps (its default `workspace.prepared`).
pub const MAX_PREPARED: usize = 2;

/// Asserts that the node holds nothing for workspaces, at most
/// `MAX_PREPARED` whole prepared slots (a namespace with its veth and a
/// volume each), and that its nftables rules are still the node's own
/// (`baseline`). Retries for a few seconds: a refill may be half-way.
pub fn assert_clean(node: &Node, baseline_rules: &[String]) {
    assert_parts_clean(&NodeParts::of(node), baseline_rules)
}

/// `assert_clean` for any node's parts.
pub fn assert_parts_clean(node: &NodeParts, baseline_rules: &[String]) {
    let whole = |l: &Leaks| {
        let slots = l.prepared_netns;
        slots <= MAX_PREPARED && l.prepared_volumes == slots && l.veths.len() == slots
    };
    let mut l = Leaks::of_parts(node);
    for _ in 0..60 {
        if whole(&l) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        l = Leaks::of_parts(node);
    }
    assert!(
        whole(&l),
        "prepared slots are not whole on node {}: {l:?}",
        node.label
    );
    let expected = Leaks {
        prepared_netns: l.prepared_netns,
        prepared_volumes: l.prepared_volumes,
        veths: l.veths.clone(),
        nft_rules: baseline_rules.to_vec(),
        ..Default::default()
    };
    assert_eq!(l, expected, "leaked resources on node {}", node.label);
}

/// The rules of a node's nftables tables (inet and bridge), one per line.
pub fn nft_rules(table: &str) -> Vec<String> {
    rules_of(table, None)
}

/// The rules of the node's tables, read in its network namespace.
pub fn nft_rules_in(node: &NodeParts) -> Vec<String> {
    rules_of(node.nft_table, node.netns)
}

/// The veths on the node's bridge.
fn veths(node: &NodeParts) -> Vec<String> {
    let (_, out, _) = crate::sh(&node.in_netns(&format!(
        "ls /sys/class/net/{}/brif 2>/dev/null",
        node.bridge
    )));
    let mut v: Vec<String> = out.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

fn rules_of(table: &str, netns: Option<&str>) -> Vec<String> {
    let prefix = netns.map_or(String::new(), |ns| format!("ip netns exec {ns} "));
    ["inet", "bridge"]
        .iter()
        .flat_map(|fam| {
            let (_, out, _) =
                crate::sh(&format!("{prefix}nft list table {fam} {table} 2>/dev/null"));
            out.lines()
                .map(str::trim)
                .filter(|l| {
                    l.contains(" drop") || l.contains(" accept") || l.contains("masquerade")
                })
                .filter(|l| !l.starts_with("type "))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Command lines of the shims started by the containerd at `socket`.
fn shims_of(socket: &str) -> Vec<String> {
    let (_, out, _) = crate::sh(&format!(
        "pgrep -af 'containerd-shim.*-address {socket}( |$)' || true"
    ));
    out.lines().map(String::from).collect()
}

fn cgroup_dirs(parent: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(parent)];
    }
    [
        "cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer", "blkio", "systemd",
    ]
    .iter()
    .map(|c| root.join(c).join(parent))
    .filter(|p| p.exists())
    .collect()
}

fn mounts_under(prefix: &str) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    berth_agent::volume::mount_points(&info)
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect()
}

/// Removes everything a node may have left: shims, mounts, links, rules, cgroups, files.
pub(crate) fn force_clean(node: &mut Node) {
    let sock = node.containerd.socket.display().to_string();
    // Workspaces' processes first (shims of this containerd only), then containerd.
    let _ = crate::sh(&format!(
        "for t in $(ctr -a {sock} -n berth tasks ls -q 2>/dev/null); do ctr -a {sock} -n berth tasks kill -a -s 9 $t; done; \
         sleep 0.2; pkill -9 -f 'containerd-shim.*-address {sock}'"
    ));
    node.containerd.kill();
    let dir = node.dir.display().to_string();
    let mut mounts = mounts_under(&dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = crate::sh(&format!(
        "for v in $(ls /sys/class/net/{b}/brif 2>/dev/null); do ip link del $v; done; ip link del {b} 2>/dev/null; \
         nft delete table inet {t} 2>/dev/null; nft delete table bridge {t} 2>/dev/null; true",
        b = node.bridge,
        t = node.nft_table
    ));
    for d in cgroup_dirs(&node.cgroup_parent) {
        remove_cgroup_tree(&d);
    }
    let _ = std::fs::remove_dir_all(&node.dir);
}

fn remove_cgroup_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}
