//! Nodes (admins): list, get, cordon, uncordon, drain.

use super::{AppState, Auth, Body, P};
use crate::domain::node::NodeRow;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{DrainBody, ErrorBody, Node, NodeResources};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/cordon", post(cordon_node))
        .route("/v1/nodes/{id}/uncordon", post(uncordon_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
}

async fn view(s: &AppState, n: &NodeRow) -> Result<Node> {
    Ok(Node {
        id: n.id.clone(),
        status: n.status,
        connected_here: s.svc.is_connected(&n.id),
        cordoned: n.cordoned,
        draining: n.draining,
        labels: n.labels.clone(),
        cached_images: n.cached_images.iter().cloned().collect(),
        capacity: NodeResources {
            cpu_millis: n.capacity.cpu_millis,
            memory_bytes: n.capacity.memory_bytes,
            disk_bytes: n.capacity.disk_bytes,
            workspaces: n.slots,
        },
        allocated: NodeResources {
            cpu_millis: n.allocated.cpu_millis,
            memory_bytes: n.allocated.memory_bytes,
            disk_bytes: n.allocated.disk_bytes,
            workspaces: n.allocated_slots,
        },
        agent_version: n.agent_version.clone(),
        last_seen_ms: n.last_seen_ms,
        drained: s.svc.drained(n).await?,
        drain_deadline_ms: (n.drain_deadline_ms != 0).then_some(n.drain_deadline_ms),
    })
}

/// List nodes (admins).
#[utoipa::path(get, path = "/v1/nodes",
    responses((status = 200, body = Vec<Node>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_nodes(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Vec<Node>>> {
    a.require_admin()?;
    let mut out = Vec::new();
    for n in s.svc.nodes().await? {
        out.push(view(&s, &n).await?);
    }
    Ok(Json(out))
}

/// Get a node (admins).
#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn get_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    Ok(Json(view(&s, &s.svc.node(&id).await?).await?))
}

/// Cordon a node: nothing new is placed on it.
#[utoipa::path(post, path = "/v1/nodes/{id}/cordon", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn cordon_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    Ok(Json(
        view(&s, &s.svc.set_flags(&id, true, false).await?).await?,
    ))
}

/// Uncordon a node (also ends a drain).
#[utoipa::path(post, path = "/v1/nodes/{id}/uncordon", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn uncordon_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    Ok(Json(
        view(&s, &s.svc.set_flags(&id, false, false).await?).await?,
    ))
}

/// Drain a node: cordon it and stop its running workspaces (with
/// `deadline_seconds`: warn them, and stop what still runs then); with shared
/// backups each then starts on another node from its stop's backup, else
/// its volume stays on the node, stopped.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")), request_body = DrainBody,
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn drain_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
    Body(req): Body<DrainBody>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    if req.deadline_seconds > 7 * 86_400 {
        return Err(crate::error::Error::invalid(
            "invalid_deadline",
            "a drain's deadline is at most 7 days",
        ));
    }
    let deadline = std::time::Duration::from_secs(req.deadline_seconds);
    Ok(Json(
        view(&s, &s.svc.drain(&id, Some(deadline)).await?).await?,
    ))
}
