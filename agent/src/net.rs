//! Workspace networking: a node bridge with the subnet's first address, one
//! network namespace per workspace joined to it by a veth pair (rtnetlink),
//! egress NAT, and nftables rules that keep workspaces from each other, from
//! the node's own services and from 169.254.0.0/16 (cloud metadata).

pub mod netns;
mod nft;

pub use nft::{
    nameservers, ruleset, workspace_allow_script, Egress, PRIVATE_V4, PRIVATE_V6, WORKSPACE_ALLOW,
};

use crate::config::{NetworkConfig, Subnet};
use crate::error::{AgentError, Result};
use crate::idmap::IdMap;
use futures::TryStreamExt;
use nix::mount::{umount2, MntFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
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
        let resolv = std::fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        let egress = Egress {
            allow: self.cfg.egress_allow.clone(),
            dns: nameservers(&resolv),
        };
        nft::nft(&ruleset(
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
        nft::nft(&workspace_allow_script(&self.cfg.nft_table, entries)).await
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
        nft::nft(&format!("table inet {t}\ndelete table inet {t}\n")).await
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
                    .and_then(|()| netns::setup(&p, &v, ip, prefix, gw));
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
                    return Err(AgentError::io(format!(
                        "remove namespace file {}",
                        path.display()
                    ))(e))
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

/// The bridge's own MAC address: locally administered, unicast, stable for
/// a bridge name (so an agent restart never changes it).
pub fn bridge_mac(bridge: &str) -> [u8; 6] {
    let h = Sha256::digest(format!("berth-bridge/{bridge}"));
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_address_is_local_unicast_and_stable() {
        let m = bridge_mac("berth0");
        assert_eq!(m[0] & 0x03, 0x02, "locally administered, unicast");
        assert_eq!(m, bridge_mac("berth0"));
        assert_ne!(m, bridge_mac("berth1"));
    }
}
