//! Workspace networking: a node bridge with the subnet's first address, one
//! network namespace per workspace joined to it by a veth pair (rtnetlink),
//! egress NAT, and nftables rules that keep workspaces from each other, from
//! the node's own services and from 169.254.0.0/16 (cloud metadata).

use crate::config::{NetworkConfig, Subnet};
use crate::error::{AgentError, Result};
use crate::idmap::IdMap;
use futures::TryStreamExt;
use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The node's workspace network.
#[derive(Clone)]
pub struct Network {
    cfg: NetworkConfig,
    subnet: Subnet,
    handle: Handle,
}

/// Suffix of the user namespace files beside the netns files.
const USERNS_SUFFIX: &str = ".user";

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("bridge", &self.cfg.bridge)
            .finish()
    }
}

fn net_err(what: &str) -> impl FnOnce(rtnetlink::Error) -> AgentError + '_ {
    move |e| AgentError::Network(format!("{what}: {e}"))
}

impl Network {
    /// Opens a netlink connection in the agent's own namespace. Must be called
    /// from a thread in that namespace (any tokio worker is).
    pub fn new(cfg: NetworkConfig, subnet: Subnet) -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(AgentError::io("netlink socket"))?;
        tokio::spawn(conn);
        Ok(Self {
            cfg,
            subnet,
            handle,
        })
    }

    /// Path of `name`'s network namespace file.
    pub fn netns_path(&self, name: &str) -> PathBuf {
        self.cfg.netns_dir.join(name)
    }

    /// Path of `name`'s user namespace file (the owner of its netns).
    pub fn userns_path(&self, name: &str) -> PathBuf {
        self.cfg.netns_dir.join(format!("{name}{USERNS_SUFFIX}"))
    }

    /// Host-side veth name of `name` (15-byte kernel limit; unique per bridge).
    pub fn veth_name(&self, name: &str) -> String {
        let h = Sha256::digest(format!("{}/{name}", self.cfg.bridge));
        format!("bw{}", &hex::encode(h)[..12])
    }

    /// The workspaces' subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    async fn index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(net_err("link lookup")(e)),
        }
    }

    /// Creates the bridge, enables forwarding and installs the node's nftables
    /// rules (idempotent; run at every agent start).
    pub async fn setup_node(&self) -> Result<()> {
        std::fs::create_dir_all(&self.cfg.netns_dir).map_err(AgentError::io("mkdir netns dir"))?;
        if self.index(&self.cfg.bridge).await?.is_none() {
            self.handle
                .link()
                .add(LinkBridge::new(&self.cfg.bridge).build())
                .execute()
                .await
                .map_err(net_err("create bridge"))?;
        }
        let idx = self
            .index(&self.cfg.bridge)
            .await?
            .ok_or_else(|| AgentError::Network("bridge vanished".into()))?;
        let gw = IpAddr::V4(self.subnet.gateway());
        let has_gw = self
            .handle
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(net_err("list bridge addresses"))?
            .iter()
            .any(|a| {
                a.attributes
                    .iter()
                    .any(|attr| matches!(attr, AddressAttribute::Address(ip) if *ip == gw))
            });
        if !has_gw {
            self.handle
                .address()
                .add(idx, gw, self.subnet.prefix)
                .execute()
                .await
                .map_err(net_err("address bridge"))?;
        }
        // A bridge without an address of its own takes the lowest of its
        // ports': removing a workspace's veth could change it, and every
        // other workspace would send to the old gateway address until its
        // ARP entry expired (a minute without network).
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .address(bridge_mac(&self.cfg.bridge).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(net_err("bridge up"))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(AgentError::io("enable ip_forward"))?;
        let resolv = std::fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        let egress = Egress {
            allow: self.cfg.egress_allow.clone(),
            dns: nameservers(&resolv),
        };
        nft(&ruleset(
            &self.cfg.nft_table,
            &self.cfg.bridge,
            self.subnet,
            &egress,
        ))
        .await
    }

    /// Makes the per-workspace allow-lists exactly `entries` (workspace
    /// address, the IPv4 CIDRs it may reach although private).
    pub async fn set_workspace_allow(&self, entries: &[(Ipv4Addr, Vec<String>)]) -> Result<()> {
        nft(&workspace_allow_script(&self.cfg.nft_table, entries)).await
    }

    /// Removes the bridge and the nftables tables (uninstall; tests).
    pub async fn teardown_node(&self) -> Result<()> {
        if let Some(idx) = self.index(&self.cfg.bridge).await? {
            self.handle
                .link()
                .del(idx)
                .execute()
                .await
                .map_err(net_err("delete bridge"))?;
        }
        let t = &self.cfg.nft_table;
        nft(&format!("table inet {t}\ndelete table inet {t}\n")).await
    }

    /// Makes `name`'s user namespace (mapped by `map`) and the network
    /// namespace it owns, with `ip` on a veth joined to the bridge.
    pub async fn create(&self, name: &str, ip: Ipv4Addr, map: IdMap) -> Result<()> {
        let path = self.netns_path(name);
        let veth = self.veth_name(name);
        let (prefix, gw) = (self.subnet.prefix, self.subnet.gateway());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (p, v, u) = (path.clone(), veth.clone(), self.userns_path(name));
        // setns changes only the calling thread: do it on a thread of its own.
        std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || {
                let made = crate::userns::make(map, &u, &p)
                    .map_err(|e| format!("user and network namespaces: {e}"))
                    .and_then(|()| make_netns(&p, &v, ip, prefix, gw));
                let _ = tx.send(made);
            })
            .map_err(AgentError::io("spawn netns thread"))?;
        rx.await
            .map_err(|_| AgentError::Network("netns thread died".into()))?
            .map_err(AgentError::Network)?;
        crate::failpoint::hit("create:mid_network");
        let bridge = self
            .index(&self.cfg.bridge)
            .await?
            .ok_or_else(|| AgentError::Network("no bridge".into()))?;
        let idx = self
            .index(&veth)
            .await?
            .ok_or_else(|| AgentError::Network(format!("veth {veth} missing")))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).controller(bridge).build())
            .execute()
            .await
            .map_err(net_err("attach veth"))?;
        // An isolated bridge port forwards only to non-isolated ones (the
        // bridge itself): workspaces cannot reach each other even at layer 2.
        let isolated = LinkUnspec::new_with_index(idx)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )]))
            .build();
        self.handle
            .link()
            .set_port(isolated)
            .execute()
            .await
            .map_err(net_err("isolate bridge port"))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(net_err("veth up"))
    }

    /// Whether `name`'s namespace exists.
    pub fn exists(&self, name: &str) -> bool {
        self.netns_path(name).exists()
    }

    /// Removes `name`'s veth and namespace (idempotent).
    pub async fn remove(&self, name: &str) -> Result<()> {
        if let Some(idx) = self.index(&self.veth_name(name)).await? {
            match self.handle.link().del(idx).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                r => r.map_err(net_err("delete veth"))?,
            }
        }
        for path in [self.netns_path(name), self.userns_path(name)] {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(AgentError::io("remove namespace file")(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Workspace names that have a namespace file.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.cfg.netns_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .map(|n| match n.strip_suffix(USERNS_SUFFIX) {
                        Some(base) => base.to_string(),
                        None => n,
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs on a dedicated thread: enters the pinned netns and brings lo up,
/// eth0 (the inner end of the veth) addressed and routed via the bridge, and
/// lets unprivileged processes bind low ports and ping (as Docker does).
fn make_netns(
    path: &std::path::Path,
    veth: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
) -> Result<(), String> {
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| format!("open host netns: {e}"))?;
    let ns = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("enter the netns: {e}"))?;
    for (knob, value) in [
        ("net/ipv4/ip_unprivileged_port_start", "0"),
        ("net/ipv4/ping_group_range", "0 2147483647"),
    ] {
        std::fs::write(format!("/proc/sys/{knob}"), value).map_err(|e| format!("{knob}: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        use std::os::fd::AsRawFd;
        let (conn, h, _) = rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        tokio::spawn(conn);
        let e = |what: &'static str| move |err: rtnetlink::Error| format!("{what}: {err}");
        h.link()
            .set(LinkUnspec::new_with_name("lo").up().build())
            .execute()
            .await
            .map_err(e("lo up"))?;
        h.link()
            .add(LinkVeth::new("eth0", veth).build())
            .execute()
            .await
            .map_err(e("add veth"))?;
        h.link()
            .set(
                LinkUnspec::new_with_name(veth)
                    .setns_by_fd(host_ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(e("move veth to host"))?;
        let idx = h
            .link()
            .get()
            .match_name("eth0".into())
            .execute()
            .try_next()
            .await
            .map_err(e("find eth0"))?
            .ok_or("eth0 missing")?
            .header
            .index;
        h.address()
            .add(idx, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(e("address eth0"))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(e("eth0 up"))?;
        h.route()
            .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build())
            .execute()
            .await
            .map_err(e("default route"))?;
        Ok(())
    })
}

/// The bridge's own MAC address: locally administered, unicast, stable for
/// a bridge name (so an agent restart never changes it).
pub fn bridge_mac(bridge: &str) -> [u8; 6] {
    let h = Sha256::digest(format!("berth-bridge/{bridge}"));
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// Applies an nftables script.
async fn nft(script: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(AgentError::io("run nft"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(AgentError::io("write to nft"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(AgentError::io("wait for nft"))?;
    if !out.status.success() {
        return Err(AgentError::Network(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// IPv4 destinations no workspace reaches unless allowed: this network,
/// RFC 1918, CGNAT, loopback, IETF protocol assignments, multicast and reserved.
pub const PRIVATE_V4: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 172.16.0.0/12, \
192.0.0.0/24, 192.168.0.0/16, 224.0.0.0/3";
/// The IPv6 ones: loopback, unspecified, IPv4-mapped, ULA, link-local, multicast.
pub const PRIVATE_V6: &str = "::/127, ::ffff:0:0/96, fc00::/7, fe80::/10, ff00::/8";

/// The nftables set of (workspace address . allowed private range) pairs:
/// what one workspace's own allow-list (its tier's) adds to the node's.
pub const WORKSPACE_ALLOW: &str = "workspace_allow";

/// The script that replaces the per-workspace allow set with `entries`
/// (workspace address, IPv4 CIDRs it may reach), in one transaction.
pub fn workspace_allow_script(table: &str, entries: &[(Ipv4Addr, Vec<String>)]) -> String {
    let elements: Vec<String> = entries
        .iter()
        .flat_map(|(ip, cidrs)| cidrs.iter().map(move |c| format!("{ip} . {c}")))
        .collect();
    let mut script = format!("flush set inet {table} {WORKSPACE_ALLOW}\n");
    if !elements.is_empty() {
        script += &format!(
            "add element inet {table} {WORKSPACE_ALLOW} {{ {} }}\n",
            elements.join(", ")
        );
    }
    script
}

/// What workspaces may reach beyond the internet.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// CIDRs allowed although private (validated by config).
    pub allow: Vec<String>,
    /// The node's DNS servers: port 53 on them is allowed.
    pub dns: Vec<IpAddr>,
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Accept rules for `egress` from `bridge`, IPv4 and IPv6 apart.
fn egress_rules(bridge: &str, egress: &Egress) -> String {
    let mut rules = String::new();
    let family = |a: &str| if a.contains(':') { "ip6" } else { "ip" };
    for cidr in &egress.allow {
        rules += &format!(
            "    iifname \"{bridge}\" {} daddr {cidr} accept\n",
            family(cidr)
        );
    }
    for dns in &egress.dns {
        let f = if dns.is_ipv6() { "ip6" } else { "ip" };
        rules += &format!(
            "    iifname \"{bridge}\" {f} daddr {dns} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        );
    }
    rules
}

/// The node's nftables rules for one bridge, as an atomic replace script.
pub fn ruleset(table: &str, bridge: &str, subnet: Subnet, egress: &Egress) -> String {
    let allowed = egress_rules(bridge, egress);
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" drop
  }}
  set {WORKSPACE_ALLOW} {{
    type ipv4_addr . ipv4_addr; flags interval;
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" oifname "{bridge}" drop
    iifname "{bridge}" ip daddr 169.254.0.0/16 drop
    iifname "{bridge}" ip6 daddr fe80::/10 drop
{allowed}    iifname "{bridge}" ip saddr . ip daddr @{WORKSPACE_ALLOW} accept
    iifname "{bridge}" ip daddr {{ {PRIVATE_V4} }} drop
    iifname "{bridge}" ip6 daddr {{ {PRIVATE_V6} }} drop
    iifname "{bridge}" accept
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
  }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_isolates_the_bridge() {
        let egress = Egress {
            allow: vec!["10.1.2.0/24".into(), "fd00:1::/64".into()],
            dns: nameservers("# c\nnameserver 10.0.0.2\nnameserver ::1\nsearch x\n"),
        };
        let s = ruleset(
            "berth",
            "berth0",
            crate::config::parse_subnet("10.9.0.0/24").unwrap(),
            &egress,
        );
        let pos = |r: &str| s.find(r).unwrap_or_else(|| panic!("{r} missing from\n{s}"));
        let private = pos("ip daddr { 0.0.0.0/8, 10.0.0.0/8");
        assert!(
            pos(r#"ip daddr 10.1.2.0/24 accept"#) < private,
            "allowed before refused"
        );
        assert!(pos(r#"ip6 daddr fd00:1::/64 accept"#) < private);
        assert!(pos("ip daddr 10.0.0.2 meta l4proto { tcp, udp } th dport 53 accept") < private);
        assert!(pos("ip6 daddr ::1 meta l4proto { tcp, udp } th dport 53 accept") < private);
        assert!(
            pos("ip daddr 169.254.0.0/16 drop") < pos("10.1.2.0/24 accept"),
            "metadata never allowed"
        );
        assert!(
            s.contains("192.168.0.0/16")
                && s.contains("172.16.0.0/12")
                && s.contains("100.64.0.0/10")
        );
        assert!(s.contains("fc00::/7"));
        assert!(
            s.contains(r#"iifname "berth0" drop"#),
            "node services unreachable"
        );
        assert!(
            s.contains("ip daddr 169.254.0.0/16 drop"),
            "metadata unreachable"
        );
        assert!(
            s.contains(r#"iifname "berth0" oifname "berth0" drop"#),
            "no routing between workspaces"
        );
        assert!(
            !s.contains("bw*"),
            "rules never reach other agents' bridges"
        );
        assert!(s.contains("ip saddr 10.9.0.0/24 oifname != \"berth0\" masquerade"));
        assert!(
            s.starts_with("table inet berth {}\ndelete table inet berth\n"),
            "replace is atomic and idempotent"
        );
        assert!(
            pos("ip saddr . ip daddr @workspace_allow accept") < private,
            "a workspace's own allow-list before the refusal"
        );
        assert!(pos("ip saddr . ip daddr @workspace_allow accept") > pos("169.254.0.0/16 drop"));
    }

    #[test]
    fn the_bridge_address_is_local_unicast_and_stable() {
        let m = bridge_mac("berth0");
        assert_eq!(m[0] & 0x03, 0x02, "locally administered, unicast");
        assert_eq!(m, bridge_mac("berth0"));
        assert_ne!(m, bridge_mac("berth1"));
    }

    #[test]
    fn workspace_allow_lists_replace_the_set_at_once() {
        let ip = Ipv4Addr::new(10, 9, 0, 2);
        let s = workspace_allow_script(
            "t",
            &[
                (ip, vec!["172.16.0.0/12".into(), "10.1.0.0/16".into()]),
                (Ipv4Addr::new(10, 9, 0, 3), vec![]),
            ],
        );
        assert_eq!(
            s,
            "flush set inet t workspace_allow\nadd element inet t workspace_allow { 10.9.0.2 . 172.16.0.0/12, 10.9.0.2 . 10.1.0.0/16 }\n"
        );
        assert_eq!(
            workspace_allow_script("t", &[]),
            "flush set inet t workspace_allow\n"
        );
    }
}
