//! Tunnels into workspaces, all through the agents (no workspace port is
//! ever exposed on a node): port connections, SSH (served by the agent,
//! end to end with the user's client: this side only relays bytes it cannot
//! read), users' SSH keys, and the tunnel activity the agents count.
//!
//! Every tunnel is an HTTP/1.1 upgrade on the API port, so it works where
//! only HTTPS gets through; a stopped workspace is started first (wake on
//! connect).

use crate::api::{find, owner_of, AppState, Body, OwnerQuery, P, Q};
use crate::auth::Auth;
use crate::controller::Change;
use crate::error::{ApiError, ErrorBody, Result};
use crate::lifecycle::{self, Event, State};
use crate::store::{now_ms, SshKeyRow, WorkspaceRow};
use axum::extract::{Request, State as AxState};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_proto::agent as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The protocol name of a port connection (HTTP/1.1 `Upgrade`).
pub const PORT_UPGRADE: &str = "berth-tcp";
/// The protocol name of an SSH connection (HTTP/1.1 `Upgrade`).
pub const SSH_UPGRADE: &str = "berth-ssh";
/// Most SSH keys one user may register.
const MAX_KEYS: usize = 100;

/// The tunnel routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/ports/{port}", get(connect_port))
        .route("/v1/workspaces/{name}/ssh", get(connect_ssh))
        .route("/v1/workspaces/{name}/ssh-host-key", get(ssh_host_key))
        .route("/v1/workspaces/{name}/activity", get(activity))
        .route("/v1/ssh-keys", get(list_ssh_keys).post(add_ssh_key))
        .route("/v1/ssh-keys/{key}", delete(delete_ssh_key))
}

// ---- types ----

/// A public key to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    /// One OpenSSH public key line, e.g. the contents of `~/.ssh/id_ed25519.pub`.
    #[schema(min_length = 1, max_length = 16384, pattern = "^[^\\u0000]*$")]
    pub public_key: String,
    /// A label (default: the key's comment). Printable, at most 100 characters.
    #[schema(max_length = 100, pattern = "^[ -~]*$")]
    pub name: Option<String>,
}

/// A registered SSH key.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key, OpenSSH format, without comment.
    pub public_key: String,
    pub created_at_ms: i64,
}

impl From<SshKeyRow> for SshKey {
    fn from(k: SshKeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            fingerprint: k.fingerprint,
            public_key: k.public_key,
            created_at_ms: k.created_at_ms,
        }
    }
}

/// The host key a workspace's SSH server presents (its node's).
#[derive(Debug, Serialize, ToSchema)]
pub struct SshHostKey {
    pub node: String,
    /// OpenSSH public key, e.g. `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// Tunnel activity of a workspace, as its agent counts it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activity {
    pub workspace: String,
    /// One entry per kind of tunnel used since the agent started.
    pub tunnels: Vec<TunnelActivity>,
}

/// Sessions and bytes of one kind of tunnel.
#[derive(Debug, Serialize, ToSchema)]
pub struct TunnelActivity {
    /// ssh, port, preview or terminal.
    pub kind: String,
    /// Sessions open now.
    pub open: u64,
    /// Sessions opened in all.
    pub sessions: u64,
    /// Bytes from the user to the workspace.
    pub bytes_in: u64,
    /// Bytes from the workspace to the user.
    pub bytes_out: u64,
    /// When bytes last moved or a session opened or closed (Unix ms).
    pub last_active_ms: u64,
}

// ---- shared ----

/// Whether the request asks to switch to protocol `proto`.
fn upgrading(req: &Request, proto: &str) -> bool {
    let wants = |h: axum::http::HeaderName, v: &str| {
        req.headers().get_all(h).iter().any(|x| {
            x.to_str()
                .is_ok_and(|x| x.split(',').any(|t| t.trim().eq_ignore_ascii_case(v)))
        })
    };
    wants(axum::http::header::CONNECTION, "upgrade") && wants(axum::http::header::UPGRADE, proto)
}

/// Whether a workspace can be reached now or after waking it.
pub(crate) fn reachable_or_waking(w: &WorkspaceRow) -> Result<()> {
    let wakeable = w.node.is_some()
        && matches!(
            w.state,
            State::Stopped | State::Stopping | State::Scheduled | State::Starting
        );
    if w.state != State::Running && !wakeable {
        return Err(ApiError::conflict(
            "not_running",
            format!("workspace {} is {}", w.name, w.state.as_str()),
        ));
    }
    Ok(())
}

/// Opens a tunnel of `command` to the (running or woken) workspace.
pub(crate) async fn open(
    s: &AppState,
    w: WorkspaceRow,
    command: impl FnOnce(&WorkspaceRow) -> pb::request::Command,
) -> Result<(quinn::SendStream, quinn::RecvStream)> {
    let w = if w.state == State::Running {
        w
    } else {
        wake(s, w).await?
    };
    let node = w.node.clone().unwrap_or_default();
    match s.ctl.agents().tunnel(&node, command(&w)).await? {
        Ok(streams) => Ok(streams),
        Err(e) if e.code == "port_closed" => Err(ApiError::node("port_closed", e.message)),
        Err(e) => Err(ApiError::conflict(
            "not_running",
            format!("{}: {}", e.code, e.message),
        )),
    }
}

/// Answers 101 and relays the upgraded connection to the QUIC streams.
fn switch(
    mut req: Request,
    proto: &'static str,
    (mut send, recv): (quinn::SendStream, quinn::RecvStream),
) -> Result<axum::response::Response> {
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let (rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
        use tokio::io::AsyncWriteExt;
        // 256 KiB buffers: tokio's default 8 KiB costs a syscall pair per 8 KiB.
        let to_ws = async {
            let mut rd = tokio::io::BufReader::with_capacity(256 << 10, rd);
            let _ = tokio::io::copy_buf(&mut rd, &mut send).await;
            let _ = send.finish();
        };
        let from_ws = async {
            let mut recv = tokio::io::BufReader::with_capacity(256 << 10, recv);
            let _ = tokio::io::copy_buf(&mut recv, &mut wr).await;
            let _ = wr.shutdown().await;
        };
        tokio::join!(to_ws, from_ws);
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, proto)
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A TCP port number, 1 to 65535 (`invalid_port` otherwise).
pub(crate) fn valid_port(port: u32) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::invalid("invalid_port", format!("port {port} is not 1 to 65535")))
}

fn require_upgrade(req: &Request, proto: &str) -> Result<()> {
    if upgrading(req, proto) {
        Ok(())
    } else {
        Err(ApiError::upgrade_required(format!(
            "send Connection: Upgrade and Upgrade: {proto}"
        )))
    }
}

// ---- ports ----

/// A TCP connection to a port of a workspace, through its agent (the port is
/// dialled inside the workspace, so 127.0.0.1 servers are reachable). A
/// stopped workspace is started first and the answer waits for it (wake on
/// connect).
/// An HTTP/1.1 upgrade: send `Connection: Upgrade` and `Upgrade: berth-tcp`;
/// on 101 the connection carries the TCP stream's bytes both ways.
#[utoipa::path(get, path = "/v1/workspaces/{name}/ports/{port}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("port" = u16, Path, minimum = 1, maximum = 65535), OwnerQuery),
    responses((status = 101, description = "switched to the raw TCP stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 426, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn connect_port(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, port)): P<(String, u32)>,
    Q(q): Q<OwnerQuery>,
    req: Request,
) -> Result<axum::response::Response> {
    let owner = owner_of(&a, q.owner)?;
    let w = find(&s, &owner, &name).await?;
    let port = valid_port(port)?;
    reachable_or_waking(&w)?;
    require_upgrade(&req, PORT_UPGRADE)?;
    let streams = open(&s, w, |w| {
        pb::request::Command::Connect(pb::ConnectRequest {
            name: w.id.clone(),
            port: u32::from(port),
            kind: "port".into(),
        })
    })
    .await?;
    switch(req, PORT_UPGRADE, streams)
}

// ---- ssh ----

/// An SSH connection to a workspace: the agent serves SSH itself (no sshd in
/// the image) and authenticates with the owner's registered keys, which go
/// with the request. A stopped workspace is started first.
/// An HTTP/1.1 upgrade: send `Connection: Upgrade` and `Upgrade: berth-ssh`;
/// on 101 the connection carries the SSH protocol (what `berth ssh --stdio`
/// gives OpenSSH as its ProxyCommand).
#[utoipa::path(get, path = "/v1/workspaces/{name}/ssh",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 101, description = "switched to the SSH protocol"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 426, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn connect_ssh(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    req: Request,
) -> Result<axum::response::Response> {
    let owner = owner_of(&a, q.owner)?;
    let w = find(&s, &owner, &name).await?;
    reachable_or_waking(&w)?;
    require_upgrade(&req, SSH_UPGRADE)?;
    // The owner's keys, whoever connects: an admin reaching another user's
    // workspace still logs in with a key the owner registered.
    let keys: Vec<String> = s
        .ctl
        .store()
        .ssh_keys(&w.owner)
        .await?
        .into_iter()
        .map(|k| k.public_key)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::conflict(
            "no_ssh_key",
            format!(
                "{} has no SSH key registered: add one with `berth ssh-key add`",
                w.owner
            ),
        ));
    }
    let streams = open(&s, w, |w| {
        pb::request::Command::Ssh(pb::SshRequest {
            name: w.id.clone(),
            authorized_keys: keys,
        })
    })
    .await?;
    switch(req, SSH_UPGRADE, streams)
}

/// The SSH host key of a workspace (its node's), for `known_hosts`.
#[utoipa::path(get, path = "/v1/workspaces/{name}/ssh-host-key",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = SshHostKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn ssh_host_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<SshHostKey>> {
    let owner = owner_of(&a, q.owner)?;
    let w = find(&s, &owner, &name).await?;
    let not_placed = || {
        ApiError::conflict(
            "not_placed",
            format!("workspace {name} is not on a node yet"),
        )
    };
    let node = w.node.clone().ok_or_else(not_placed)?;
    let n = s.ctl.store().node(&node).await?.ok_or_else(not_placed)?;
    if n.ssh_host_key.is_empty() {
        return Err(not_placed());
    }
    Ok(Json(SshHostKey {
        node,
        host_key: n.ssh_host_key,
    }))
}

/// Registers an SSH public key of the caller (ed25519, ECDSA or RSA ≥ 2048
/// bits). The agents get the keys with each SSH connection, so a key works
/// at once and a deleted key stops working at once.
#[utoipa::path(post, path = "/v1/ssh-keys", request_body = AddSshKey,
    responses((status = 201, body = SshKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_ssh_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<AddSshKey>,
) -> Result<(StatusCode, Json<SshKey>)> {
    let key = parse_public_key(&req.public_key)?;
    let name = match req.name {
        Some(n) => {
            if n.len() > 100 || !n.chars().all(|c| (' '..='~').contains(&c)) {
                return Err(ApiError::invalid(
                    "invalid_name",
                    "a key name is at most 100 printable ASCII characters",
                ));
            }
            n
        }
        None => key
            .comment()
            .as_str_lossy()
            .chars()
            .filter(|c| (' '..='~').contains(c))
            .take(100)
            .collect(),
    };
    if s.ctl.store().ssh_keys(&a.user).await?.len() >= MAX_KEYS {
        return Err(ApiError::conflict(
            "too_many_ssh_keys",
            format!("at most {MAX_KEYS} SSH keys per user"),
        ));
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let row = SshKeyRow {
        id: format!("key-{:016x}", rand::random::<u64>()),
        owner: a.user.clone(),
        name,
        public_key: bare
            .to_openssh()
            .map_err(|e| ApiError::internal(e.to_string()))?,
        fingerprint: key.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
        created_at_ms: now_ms(),
    };
    s.ctl.store().add_ssh_key(&row).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Parses one OpenSSH public key line; weak or unknown key types are refused.
fn parse_public_key(line: &str) -> Result<russh::keys::PublicKey> {
    use russh::keys::ssh_key::public::KeyData;
    let bad = |why: String| ApiError::invalid("invalid_ssh_key", why);
    let line = line.trim();
    if line.is_empty() || line.contains('\n') || line.contains('\0') {
        return Err(bad("give exactly one OpenSSH public key line".into()));
    }
    let key = russh::keys::PublicKey::from_openssh(line)
        .map_err(|e| bad(format!("not an OpenSSH public key: {e}")))?;
    match key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(r) => {
            let bits = r.key_size();
            if bits < 2048 {
                return Err(bad(format!(
                    "an RSA key of {bits} bits is too weak (2048 at least)"
                )));
            }
        }
        other => {
            return Err(bad(format!(
                "key type {} is not accepted",
                other.algorithm()
            )))
        }
    }
    Ok(key)
}

/// The caller's SSH keys.
#[utoipa::path(get, path = "/v1/ssh-keys",
    responses((status = 200, body = Vec<SshKey>), (status = 401, body = ErrorBody)))]
async fn list_ssh_keys(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Vec<SshKey>>> {
    let keys = s.ctl.store().ssh_keys(&a.user).await?;
    Ok(Json(keys.into_iter().map(SshKey::from).collect()))
}

/// Removes one of the caller's SSH keys, by id or fingerprint.
#[utoipa::path(delete, path = "/v1/ssh-keys/{key}",
    params(("key" = String, Path, description = "key id or SHA256 fingerprint", max_length = 100)),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete_ssh_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(key): P<String>,
) -> Result<StatusCode> {
    if s.ctl.store().delete_ssh_key(&a.user, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no SSH key {key:?}")))
    }
}

// ---- activity ----

/// Open tunnel sessions and bytes per kind (ssh, port, preview, terminal),
/// as the workspace's agent counts them. A workspace that is not on a
/// reachable node has none.
#[utoipa::path(get, path = "/v1/workspaces/{name}/activity",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Activity), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn activity(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Activity>> {
    let owner = owner_of(&a, q.owner)?;
    let w = find(&s, &owner, &name).await?;
    let mut out = Activity {
        workspace: name,
        tunnels: Vec::new(),
    };
    let Some(node) = w.node.clone().filter(|n| s.ctl.agents().is_connected(n)) else {
        return Ok(Json(out));
    };
    let cmd = pb::request::Command::Status(pb::NameRequest {
        name: w.id.clone(),
        generation: 0,
    });
    match s
        .ctl
        .agents()
        .call(&node, cmd, Duration::from_secs(10))
        .await?
    {
        pb::response::Result::Status(st) => {
            out.tunnels = st
                .tunnels
                .into_iter()
                .map(|t| TunnelActivity {
                    kind: t.kind,
                    open: t.open,
                    sessions: t.sessions,
                    bytes_in: t.bytes_in,
                    bytes_out: t.bytes_out,
                    last_active_ms: t.last_active_ms,
                })
                .collect();
        }
        pb::response::Result::Error(e) if e.code == "not_found" => {}
        pb::response::Result::Error(e) => {
            return Err(ApiError::node(
                "node_error",
                format!("{}: {}", e.code, e.message),
            ))
        }
        other => {
            return Err(ApiError::node(
                "node_error",
                format!("unexpected answer {other:?}"),
            ))
        }
    }
    Ok(Json(out))
}

/// Wake on connect: starts a stopped (or still starting) workspace and
/// waits until it runs, for up to two minutes; the connection is then made
/// as if it had been running. Events of this coordinator end the wait early;
/// a read each half second covers changes made elsewhere.
pub(crate) async fn wake(s: &AppState, w: WorkspaceRow) -> Result<WorkspaceRow> {
    let name = w.name.clone();
    let not_running =
        |state: &str| ApiError::conflict("not_running", format!("workspace {name} is {state}"));
    let mut events = s.ctl.subscribe();
    if w.desired != lifecycle::Desired::Running {
        match s
            .ctl
            .change(&w.id, &[Event::StartRequested], None, true, None)
            .await
        {
            Ok(_) => {}
            Err(Change::Store(e)) => return Err(e),
            Err(_) => return Err(not_running(w.state.as_str())),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match s.ctl.store().workspace(&w.id).await? {
            Some(now) if now.state == State::Running => return Ok(now),
            Some(now) if matches!(now.state, State::Failed | State::Deleted | State::Deleting) => {
                return Err(not_running(now.state.as_str()))
            }
            Some(now) if now.desired != lifecycle::Desired::Running => {
                return Err(not_running(now.state.as_str()))
            }
            Some(_) => {}
            None => return Err(ApiError::not_found(format!("no workspace named {name:?}"))),
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.id == w.id => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::unavailable(
                    "start_timeout",
                    format!("workspace {name} did not start within 2 minutes"),
                ))
            }
        }
    }
}
