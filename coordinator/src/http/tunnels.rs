//! Tunnels to a workspace through its agent: a TCP connection to one of
//! its ports and an SSH session, each an HTTP/1.1 upgrade whose connection
//! then carries the bytes; the SSH host key to trust; tunnel activity.

use super::{owner_for, AppState, Auth, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::{Error, Result};
use crate::link::Duplex;
use axum::extract::{Request, State as AxState};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{Activity, ErrorBody, SshHostKey};

/// `Upgrade` of a port connection.
pub const PORT_UPGRADE: &str = "berth-tcp";
/// `Upgrade` of an SSH connection.
pub const SSH_UPGRADE: &str = "berth-ssh";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/ports/{port}", get(connect_port))
        .route("/v1/workspaces/{name}/ssh", get(connect_ssh))
        .route("/v1/workspaces/{name}/ssh-host-key", get(ssh_host_key))
        .route("/v1/workspaces/{name}/activity", get(activity))
}

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

/// Answers 101 and relays the upgraded connection to the node's stream.
fn switch(
    mut req: Request,
    proto: &'static str,
    Duplex { mut send, recv }: Duplex,
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
            let _ = send.shutdown().await;
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
        .map_err(|e| Error::internal(e.to_string()))
}

/// A TCP port number, 1 to 65535 (`invalid_port` otherwise).
pub(super) fn valid_port(port: u32) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid("invalid_port", format!("port {port} is not 1 to 65535")))
}

fn require_upgrade(req: &Request, proto: &str) -> Result<()> {
    if upgrading(req, proto) {
        Ok(())
    } else {
        Err(Error::upgrade_required(format!(
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
pub(super) async fn connect_port(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, port)): P<(String, u32)>,
    Q(q): Q<OwnerQuery>,
    req: Request,
) -> Result<axum::response::Response> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    let port = valid_port(port)?;
    w.reachable_or_waking()?;
    require_upgrade(&req, PORT_UPGRADE)?;
    let streams = s.svc.port(w, port, "port").await?;
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
pub(super) async fn connect_ssh(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    req: Request,
) -> Result<axum::response::Response> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    w.reachable_or_waking()?;
    require_upgrade(&req, SSH_UPGRADE)?;
    let streams = s.svc.ssh(w).await?;
    switch(req, SSH_UPGRADE, streams)
}

/// The SSH host key of a workspace (its node's), for `known_hosts`.
#[utoipa::path(get, path = "/v1/workspaces/{name}/ssh-host-key",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = SshHostKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn ssh_host_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<SshHostKey>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let w = s.svc.find(&owner, &name).await?;
    let (node, host_key) = s.svc.ssh_host_key(&w).await?;
    Ok(Json(SshHostKey { node, host_key }))
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
pub(super) async fn activity(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Activity>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let w = s.svc.find(&owner, &name).await?;
    let tunnels = s.svc.activity(&w).await?;
    Ok(Json(Activity {
        workspace: name,
        tunnels,
    }))
}
