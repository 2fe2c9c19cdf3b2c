//! Nodes (admins): list, get, cordon, uncordon, drain.

use super::{AppState, Auth, P};
use crate::domain::node::NodeRow;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, Node, NodeResources};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/cordon", post(cordon_node))
        .route("/v1/nodes/{id}/uncordon", post(uncordon_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
}

fn view(s: &AppState, n: &NodeRow) -> Node {
    Node {
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
    }
}

/// List nodes (admins).
#[utoipa::path(get, path = "/v1/nodes",
    responses((status = 200, body = Vec<Node>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_nodes(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Vec<Node>>> {
    a.require_admin()?;
    let nodes = s.svc.nodes().await?;
    Ok(Json(nodes.iter().map(|n| view(&s, n)).collect()))
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
    Ok(Json(view(&s, &s.svc.node(&id).await?)))
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
    Ok(Json(view(&s, &s.svc.set_flags(&id, true, false).await?)))
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
    Ok(Json(view(&s, &s.svc.set_flags(&id, false, false).await?)))
}

/// Drain a node: cordon it and stop its running workspaces; with shared
/// backups each then starts on another node from its stop's backup, else
/// its volume stays on the node, stopped.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn drain_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    Ok(Json(view(&s, &s.svc.drain(&id).await?)))
}
