//! The link to the coordinator: join with a one-time token, then a mutual-TLS
//! QUIC connection (ALPN `berth/1`) kept up with capped exponential backoff
//! and jitter. On it: the control stream (register with capacity, labels,
//! cached images and the full inventory; heartbeats; status reports), one
//! bi-stream per command from the coordinator (served exactly like the local
//! control socket), and certificate renewal before expiry.

use crate::error::{AgentError, Result};
use crate::server::Node;
use crate::workspace::Manager;
use berth_proto::link::{self as lk, agent_message::Msg as Up, coordinator_message::Msg as Down};
use berth_proto::{read_frame, tls, write_frame, ALPN_JOIN, ALPN_LINK};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const STREAM_CONTROL: u8 = b'C';
const STREAM_RENEW: u8 = b'R';

/// Most workspaces a node takes when `node.max_workspaces` is 0.
pub const DEFAULT_MAX_WORKSPACES: u32 = 250;

/// The node's identity on disk: `<state_dir>/identity/{node_id,key.pem,cert.pem,ca.pem}`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

fn link_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Network(format!("coordinator link: {e}"))
}

impl Identity {
    fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("identity")
    }

    /// The saved identity, if the node has joined.
    pub fn load(state_dir: &Path) -> Option<Self> {
        let d = Self::dir(state_dir);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
        Some(Self {
            node_id: read("node_id")?.trim().to_string(),
            key_pem: read("key.pem")?,
            cert_pem: read("cert.pem")?,
            ca_pem: read("ca.pem")?,
        })
    }

    /// Saves atomically (each file written aside, then renamed; key mode 0600).
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let d = Self::dir(state_dir);
        for (name, text) in [
            ("key.pem", &self.key_pem),
            ("cert.pem", &self.cert_pem),
            ("ca.pem", &self.ca_pem),
            ("node_id", &self.node_id),
        ] {
            berth_proto::files::write_private(&d.join(name), text.as_bytes())
                .map_err(AgentError::io(format!("write {name}")))?;
        }
        Ok(())
    }

    /// Seconds left on the certificate and its total lifetime, if it parses.
    fn validity(&self) -> Option<(i64, i64)> {
        let der = tls::pem_to_der(&self.cert_pem).ok()?;
        let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
        let nb = c.validity().not_before.timestamp();
        let na = c.validity().not_after.timestamp();
        let now = now_unix();
        Some((na - now, na - nb))
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| link_err(format!("resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| link_err(format!("{addr} resolves to no address")))
}

fn client_endpoint() -> Result<quinn::Endpoint> {
    quinn::Endpoint::client("0.0.0.0:0".parse().expect("literal address"))
        .map_err(|e| link_err(format!("bind UDP: {e}")))
}

/// Streams the coordinator may have open to this node at once.
pub const MAX_STREAMS: u32 = 4096;

fn quic_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(link_err)?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)))
        // Every command and every tunnel (SSH session, port connection,
        // preview request, terminal) is a stream the coordinator opens: the
        // default of 100 would make the 101st tunnel to a node wait.
        .max_concurrent_bidi_streams(MAX_STREAMS.into());
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// How long a handshake may take. QUIC ignores "port unreachable": an
/// Initial sent while the coordinator restarts is retried until the idle
/// timeout (30 s), which kept an agent off every coordinator that long
/// although another answered at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A QUIC connection to the coordinator at `addr` with `tls`.
async fn connect(addr: &str, tls: rustls::ClientConfig) -> Result<quinn::Connection> {
    let connecting = client_endpoint()?
        .connect_with(quic_config(tls)?, resolve(addr).await?, tls::SERVER_NAME)
        .map_err(link_err)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(|e| link_err(format!("connect to {addr}: {e}"))),
        Err(_) => Err(link_err(format!(
            "connect to {addr}: no handshake in {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// The coordinator addresses in a `coordinator.address` value: one
/// HOST:PORT, or several separated by commas (coordinators sharing a store).
pub fn addresses(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Joins through the first coordinator that answers; a refusal is final
/// (coordinators share the store, so another would refuse too).
pub async fn join_any(
    addrs: &[String],
    token: &str,
    node_id: &str,
    state_dir: &Path,
) -> Result<Identity> {
    let mut last = link_err("no coordinator address");
    for addr in addrs {
        match join(addr, token, node_id, state_dir).await {
            Ok(id) => return Ok(id),
            Err(e @ AgentError::InvalidRequest(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(addr = %addr, error = %e, "join: coordinator not reachable");
                last = e;
            }
        }
    }
    Err(last)
}

/// Joins the cluster: a fresh key, a CSR, and the token; returns (and
/// saves) the identity the coordinator issued.
pub async fn join(addr: &str, token: &str, node_id: &str, state_dir: &Path) -> Result<Identity> {
    let token = tls::JoinToken::parse(token).map_err(AgentError::InvalidRequest)?;
    let (key_pem, csr) = tls::node_csr(node_id).map_err(link_err)?;
    let tls_cfg = tls::join_tls(&token.ca_fingerprint, ALPN_JOIN).map_err(link_err)?;
    let conn = connect(addr, tls_cfg).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(link_err)?;
    write_frame(
        &mut send,
        &lk::JoinRequest {
            token: token.to_string(),
            node_id: node_id.into(),
            csr_der: csr,
        },
    )
    .await
    .map_err(link_err)?;
    let _ = send.finish();
    let resp: lk::JoinResponse = read_frame(&mut recv)
        .await
        .map_err(link_err)?
        .ok_or_else(|| link_err("the coordinator closed the join stream"))?;
    conn.close(0u32.into(), b"joined");
    match resp.result {
        Some(lk::join_response::Result::Issued(i)) => {
            let id = Identity {
                node_id: i.node_id,
                key_pem,
                cert_pem: i.cert_pem,
                ca_pem: i.ca_pem,
            };
            id.save(state_dir)?;
            tracing::info!(node = %id.node_id, "joined the cluster");
            Ok(id)
        }
        Some(lk::join_response::Result::Error(e)) => Err(AgentError::InvalidRequest(format!(
            "join refused ({}): {}",
            e.code, e.message
        ))),
        None => Err(link_err("empty join answer")),
    }
}

/// What this node offers, from the configuration or the machine.
pub fn capacity(m: &Manager) -> lk::Capacity {
    let n = &m.config().file.node;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem = m.host().memory_bytes();
    let disk = nix::sys::statvfs::statvfs(&m.config().file.state_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    lk::Capacity {
        cpu_millis: or(n.cpu_millis, cpus * 1000),
        memory_bytes: or(n.memory_bytes, mem),
        disk_bytes: or(n.disk_bytes, disk),
        max_workspaces: if n.max_workspaces == 0 {
            DEFAULT_MAX_WORKSPACES
        } else {
            n.max_workspaces
        },
    }
}

/// Keeps the link up until the future is dropped. With several addresses,
/// a link that fails (or did not last) moves on to the next coordinator.
/// `accepted` says whether a coordinator accepted the node (`crate::fence`).
pub async fn run(
    node: Node,
    addrs: Vec<String>,
    identity: Identity,
    accepted: watch::Sender<bool>,
) {
    let m = &node.workspaces;
    let max = Duration::from_millis(m.config().file.coordinator.reconnect_max_ms.max(100));
    let identity = Arc::new(Mutex::new(identity));
    let mut backoff = Duration::from_millis(100);
    let mut i = 0;
    loop {
        let Some(addr) = addrs.get(i % addrs.len().max(1)) else {
            return;
        };
        let started = Instant::now();
        match session(&node, addr, &identity, &accepted).await {
            Ok(()) => tracing::info!(addr = %addr, "coordinator link closed"),
            Err(e) => tracing::warn!(addr = %addr, error = %e, "coordinator link down"),
        }
        accepted.send_replace(false);
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        } else {
            i += 1;
        }
        // Equal jitter: half fixed, half random, so a fleet does not reconnect in lockstep.
        let half = backoff / 2;
        let wait = half + half.mul_f64(rand::random::<f64>());
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(max);
    }
}

async fn session(
    node: &Node,
    addr: &str,
    identity: &Arc<Mutex<Identity>>,
    accepted: &watch::Sender<bool>,
) -> Result<()> {
    let m = &node.workspaces;
    let id = identity.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((left, _)) = id.validity() {
        if left <= 0 {
            return Err(link_err(
                "the node certificate has expired: join again with a new token (remove the identity directory first)",
            ));
        }
    }
    let tls_cfg =
        tls::client_tls(&id.ca_pem, &id.cert_pem, &id.key_pem, ALPN_LINK).map_err(link_err)?;
    let conn = connect(addr, tls_cfg).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(link_err)?;
    send.write_all(&[STREAM_CONTROL]).await.map_err(link_err)?;
    let cached = cached_images(m).await.unwrap_or_default();
    let inventory = m.list().await?.workspaces;
    let register = lk::Register {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        capacity: Some(capacity(m)),
        labels: m.config().file.node.labels.clone(),
        cached_images: cached.clone(),
        inventory,
        ssh_host_key: node.tunnels.ssh_host_key(),
        prebuilds: m.prebuilds().await?.keys,
    };
    write_frame(&mut send, &up(Up::Register(register)))
        .await
        .map_err(link_err)?;
    let first: lk::CoordinatorMessage = read_frame(&mut recv)
        .await
        .map_err(link_err)?
        .ok_or_else(|| link_err("the coordinator closed the control stream"))?;
    let interval = match first.msg {
        Some(Down::Registered(r)) => {
            Duration::from_millis(u64::from(r.heartbeat_interval_ms).max(100))
        }
        Some(Down::Error(e)) => {
            return Err(link_err(format!(
                "register refused ({}): {}",
                e.code, e.message
            )))
        }
        other => return Err(link_err(format!("unexpected first answer {other:?}"))),
    };
    tracing::info!(node = %id.node_id, %addr, "connected to the coordinator");
    accepted.send_replace(true);

    // Answers on the control stream (acks, errors) are read by their own task.
    let reader = tokio::spawn(async move {
        loop {
            match read_frame::<_, lk::CoordinatorMessage>(&mut recv).await {
                Ok(Some(lk::CoordinatorMessage {
                    msg: Some(Down::Error(e)),
                })) => {
                    tracing::warn!(code = %e.code, error = %e.message, "coordinator refused a message")
                }
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    });
    // Commands: one bi-stream each, served like the local socket.
    let commands = {
        let conn = conn.clone();
        let node = node.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::server::serve_stream(recv, send, node).await {
                        tracing::debug!(error = %e, "command stream ended");
                    }
                });
            }
        })
    };
    let mut changes = m.changes();
    let mut progress = m.progress();
    // A notice seen before this session is said again on it.
    let mut preemption = node.preemption.clone();
    preemption.mark_changed();
    let mut watching = true;
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    let mut held = m.prebuilds().await?.keys;
    let mut images = cached.clone();
    // CPU time of each workspace at the last heartbeat, for the rates.
    let mut rates = crate::usage::Rates::default();
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                // What the node holds, when it changed.
                let now = m.prebuilds().await.map(|l| l.keys).unwrap_or_else(|_| held.clone());
                let prebuilds = (now != held).then(|| berth_proto::agent::PrebuildList { keys: now.clone() });
                held = now;
                let now = cached_images(m).await.unwrap_or_else(|| images.clone());
                let changed = (now != images).then(|| lk::CachedImages { names: now.clone() });
                images = now;
                let usage = {
                    let m = m.clone();
                    tokio::task::spawn_blocking(move || m.usage_now()).await.ok()
                };
                let usage = usage.map(|r| rates.usage(r, std::time::Instant::now()));
                let beat = lk::Heartbeat { seq, prebuilds, images: changed, usage };
                if let Err(e) = write_frame(&mut send, &up(Up::Heartbeat(beat))).await {
                    break Err(link_err(e));
                }
                if let Err(e) = maybe_renew(&conn, identity, m.config().file.state_dir.as_path()).await {
                    tracing::warn!(error = %e, "certificate renewal failed; will retry");
                }
            }
            name = changes.recv() => {
                let Ok(name) = name else { continue };
                if let Ok(status) = m.status(&name).await {
                    if let Err(e) = write_frame(&mut send, &up(Up::Status(lk::StatusReport { status: Some(status) }))).await {
                        break Err(link_err(e));
                    }
                }
            }
            p = progress.recv() => {
                // A lagging receiver skips reports: a later one supersedes them.
                let Ok(p) = p else { continue };
                if let Err(e) = write_frame(&mut send, &up(Up::Progress(p))).await {
                    break Err(link_err(e));
                }
            }
            changed = preemption.changed(), if watching => {
                if changed.is_err() {
                    // Its source is gone: nothing will ever come.
                    watching = false;
                    continue;
                }
                let notice = preemption.borrow_and_update().clone();
                if let Some(p) = notice {
                    if let Err(e) = write_frame(&mut send, &up(Up::Preemption(p))).await {
                        break Err(link_err(e));
                    }
                }
            }
            e = conn.closed() => break Err(link_err(format!("connection closed: {e}"))),
        }
    };
    reader.abort();
    commands.abort();
    result
}

/// Renews the certificate once two thirds of its lifetime have passed.
async fn maybe_renew(
    conn: &quinn::Connection,
    identity: &Arc<Mutex<Identity>>,
    state_dir: &Path,
) -> Result<()> {
    let id = identity.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some((left, total)) = id.validity() else {
        return Ok(());
    };
    if left * 3 > total {
        return Ok(());
    }
    let (key_pem, csr) = tls::node_csr(&id.node_id).map_err(link_err)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(link_err)?;
    send.write_all(&[STREAM_RENEW]).await.map_err(link_err)?;
    write_frame(&mut send, &lk::RenewRequest { csr_der: csr })
        .await
        .map_err(link_err)?;
    let _ = send.finish();
    let resp: lk::RenewResponse = read_frame(&mut recv)
        .await
        .map_err(link_err)?
        .ok_or_else(|| link_err("no renewal answer"))?;
    match resp.result {
        Some(lk::renew_response::Result::Issued(i)) => {
            let next = Identity {
                node_id: id.node_id.clone(),
                key_pem,
                cert_pem: i.cert_pem,
                ca_pem: i.ca_pem,
            };
            next.save(state_dir)?;
            *identity.lock().unwrap_or_else(|e| e.into_inner()) = next;
            tracing::info!(not_after = i.not_after_unix, "node certificate renewed");
            Ok(())
        }
        Some(lk::renew_response::Result::Error(e)) => Err(link_err(format!(
            "renewal refused ({}): {}",
            e.code, e.message
        ))),
        None => Err(link_err("empty renewal answer")),
    }
}

fn up(m: Up) -> lk::AgentMessage {
    lk::AgentMessage { msg: Some(m) }
}

/// The images the node has, sorted (so a change is a difference); None
/// when containerd does not answer.
async fn cached_images(m: &Manager) -> Option<Vec<String>> {
    let mut names = m.containerd().list_images().await.ok()?;
    names.sort();
    Some(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_split_on_commas() {
        assert_eq!(super::addresses("a:1"), vec!["a:1"]);
        assert_eq!(super::addresses(" a:1, b:2 ,"), vec!["a:1", "b:2"]);
        assert!(super::addresses(" , ").is_empty());
    }
}
