//! Inside a workspace's network namespace: setting it up, and dialling
//! from it. Both run on a thread of their own that enters the namespace
//! and then ends: a pooled thread must never change namespace.

use futures::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs on a dedicated thread: enters the pinned netns and brings lo up,
/// eth0 (the inner end of the veth) addressed and routed via the bridge, and
/// lets unprivileged processes bind low ports and ping (as Docker does).
pub(super) fn setup(
    path: &Path,
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

/// A TCP connection to 127.0.0.1:`port` inside the namespace pinned at
/// `netns` (so a server bound to loopback there is reachable), made on a
/// thread of its own that enters the namespace and then ends.
pub async fn dial(netns: PathBuf, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-dial".into())
        .spawn(move || {
            let dial = || -> std::io::Result<std::net::TcpStream> {
                let ns = std::fs::File::open(&netns)?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Ok(s)
            };
            let _ = tx.send(dial());
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the dial thread died"))??;
    tokio::net::TcpStream::from_std(stream)
}
