//! Workspace networking: a node bridge with the subnet's first address, one
//! network namespace per workspace joined to it by a veth pair (rtnetlink),
//! egress NAT, and nftables rules that keep workspaces from each other, from
//! the node's own services and from 169.254.0.0/16 (cloud metadata).

use crate::config::{NetworkConfig, Subnet};
use crate::error::{AgentError, Result};
use futures::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
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
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(net_err("bridge up"))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(AgentError::io("enable ip_forward"))?;
        nft(&ruleset(&self.cfg.nft_table, &self.cfg.bridge, self.subnet)).await
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

    /// Makes `name`'s namespace with `ip` on a veth joined to the bridge.
    pub async fn create(&self, name: &str, ip: Ipv4Addr) -> Result<()> {
        let path = self.netns_path(name);
        let veth = self.veth_name(name);
        let (prefix, gw) = (self.subnet.prefix, self.subnet.gateway());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (p, v) = (path.clone(), veth.clone());
        // setns/unshare change only the calling thread: do it on a thread of its own.
        std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || {
                let _ = tx.send(make_netns(&p, &v, ip, prefix, gw));
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
        let path = self.netns_path(name);
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AgentError::io("remove netns file")(e))
            }
            _ => Ok(()),
        }
    }

    /// Workspace names that have a namespace file.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.cfg.netns_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs on a dedicated thread: new netns, pinned by a bind mount, with lo up
/// and eth0 (the inner end of the veth) addressed and routed via the bridge.
fn make_netns(
    path: &std::path::Path,
    veth: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
) -> Result<(), String> {
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| format!("open host netns: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
    std::fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin netns at {}: {e}", path.display()))?;
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

/// The node's nftables rules for one bridge, as an atomic replace script.
pub fn ruleset(table: &str, bridge: &str, subnet: Subnet) -> String {
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" ip daddr 169.254.0.0/16 drop
    iifname "{bridge}" oifname "{bridge}" drop
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
        let s = ruleset(
            "berth",
            "berth0",
            crate::config::parse_subnet("10.9.0.0/24").unwrap(),
        );
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
    }
}
