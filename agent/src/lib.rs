//! berth-agent: runs Berth workspaces on one node, directly on containerd,
//! with cgroup limits, a private network namespace and a size-limited
//! persistent volume each. See DESIGN.md for the architecture.

pub mod backup;
pub mod build;
pub mod cache;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod fence;
pub mod host;
pub mod idle;
pub mod idmap;
pub mod image;
pub mod init;
pub mod layers;
pub mod link;
pub mod metrics;
pub mod net;
pub mod preempt;
pub mod prepared;
pub mod reconcile;
pub mod record;
pub mod runtime;
pub mod seccomp;
pub mod secrets;
pub mod server;
pub mod spec;
pub mod tunnel;
pub mod usage;
pub mod userns;
pub mod validate;
pub mod volume;
pub mod workspace;

pub use config::Config;
pub use error::{AgentError, Result};
pub use workspace::Manager;

use std::future::Future;
use std::time::Duration;

/// Connects to containerd, sets up the node network, reconciles, and returns
/// a manager ready to serve. Waits for containerd if it is not up yet.
pub async fn prepare(cfg: &Config, host: &host::Host) -> Result<Manager> {
    let f = &cfg.file;
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if !idmap::mount::kernel_supported(&release) {
        return Err(AgentError::InvalidRequest(format!(
            "Linux {release}: workspaces need idmapped overlayfs lower layers (Linux 5.19 or later)"
        )));
    }
    std::fs::create_dir_all(&f.state_dir).map_err(AgentError::io("mkdir state dir"))?;
    let profile =
        std::fs::read_to_string(&f.security.seccomp_profile).map_err(AgentError::io(format!(
            "read seccomp profile {}",
            f.security.seccomp_profile.display()
        )))?;
    let arch = seccomp::go_arch(std::env::consts::ARCH);
    let seccomp = seccomp::to_oci(&profile, arch, &spec::DEFAULT_CAPS)
        .map_err(|e| AgentError::InvalidRequest(format!("security.seccomp_profile: {e}")))?;
    let c = &f.containerd;
    let ctd = runtime::Containerd::new(
        c.socket.clone(),
        &c.namespace,
        &c.snapshotter,
        &c.runtime,
        &c.runc_root,
    )?;
    let mut delay = Duration::from_millis(50);
    loop {
        match ctd.ping().await {
            Ok(v) => {
                tracing::info!(version = %v, "connected to containerd");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "containerd not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    let net = net::Network::new(f.network.clone(), cfg.subnet)?;
    host.enable_ip_forward()
        .map_err(AgentError::io("enable ip_forward"))?;
    net.setup_node().await?;
    let m = Manager::new(workspace::Parts {
        host: host.clone(),
        cfg: cfg.clone(),
        ctd,
        net,
        seccomp,
    })?;
    let volumes = m.volumes().dir().to_path_buf();
    std::fs::create_dir_all(&volumes).map_err(AgentError::io("mkdir the volumes dir"))?;
    if !backup::freeze::can_clone(&volumes) {
        tracing::warn!(dir = %volumes.display(), "the volumes' file system cannot clone files (reflink): running workspaces are backed up live, not from a snapshot (docs/backups.md)");
    }
    m.reconcile().await?;
    m.clear_backup_snapshots();
    Ok(m)
}

/// Runs the agent until `shutdown` completes. Shutting down never stops a
/// workspace: containerd keeps them running for the next agent to adopt.
///
/// With a coordinator address (config or `--coordinator`), the agent also
/// keeps the link to it; `join` is the one-time token used if the node has
/// no identity yet.
pub async fn run(
    cfg: Config,
    join: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let host = host::Host::default();
    let link = match cfg.file.coordinator.address.clone() {
        Some(addr) => {
            let addrs = link::addresses(&addr);
            if addrs.is_empty() {
                return Err(AgentError::InvalidRequest(
                    "coordinator.address is empty: give HOST:PORT[,HOST:PORT...]".into(),
                ));
            }
            let state = cfg.file.state_dir.clone();
            std::fs::create_dir_all(&state).map_err(AgentError::io("mkdir state dir"))?;
            let identity = match (link::Identity::load(&state), join) {
                (Some(id), token) => {
                    if token.is_some() {
                        tracing::info!(node = %id.node_id, "already joined; the join token is not used");
                    }
                    id
                }
                (None, Some(token)) => {
                    let node_id = match cfg.file.node.id.clone() {
                        Some(id) => id,
                        None => host.hostname().map_err(AgentError::io("read host name"))?,
                    };
                    link::join_any(&addrs, &token, &node_id, &state).await?
                }
                (None, None) => {
                    return Err(AgentError::InvalidRequest(
                        "this node has not joined: pass --join TOKEN (from `berth admin join-token create`)".into(),
                    ))
                }
            };
            Some((addrs, identity))
        }
        None => None,
    };
    let m = prepare(&cfg, &host).await?;
    let (preempted, preemption) = tokio::sync::watch::channel(None);
    let node = server::Node {
        workspaces: m.clone(),
        tunnels: tunnel::Tunnels::new(&cfg.file.state_dir)?,
        preemption,
    };
    let listener = server::bind(&cfg.control_socket)?;
    tracing::info!(socket = %cfg.control_socket.display(), ready_ms = started.elapsed().as_millis() as u64, "agent ready");
    let (link_up, up) = tokio::sync::watch::channel(false);
    // Alone (no coordinator), there is nothing to be cut off from.
    let stop_after = match link {
        Some(_) => Duration::from_secs(cfg.file.coordinator.stop_after_seconds),
        None => Duration::ZERO,
    };
    let fenced = Box::pin(fence::watch(m.clone(), stop_after, up));
    let link_task = async {
        match link {
            Some((addrs, identity)) => link::run(node.clone(), addrs, identity, link_up).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = link_task => {}
        _ = server::serve(listener, node.clone()) => {}
        _ = events::watch(m.clone()) => {}
        _ = m.refill_prepared() => {}
        _ = m.watch_idle() => {}
        _ = preempt::watch(cfg.file.preemption.clone(), preempted) => {}
        _ = metrics::serve(cfg.file.metrics.clone(), m.clone()) => {}
        _ = fenced => {}
        _ = shutdown => tracing::info!("shutting down; workspaces keep running"),
    }
    Ok(())
}
