//! Workspaces: create, list, get, start, stop, delete, and the event stream.

use super::{owner_for, owner_of, AppState, Auth, Body, DeleteQuery, OwnerQuery, P, Q};
use crate::domain::lifecycle::{Event, State};
use crate::domain::team::Need;
use crate::error::{Error, Result};
use crate::store::WorkspaceFilter;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{CreateWorkspace, ErrorBody, IdleTimeout, Keepalive, Workspace};
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/workspaces",
            post(create_workspace).get(list_workspaces),
        )
        .route(
            "/v1/workspaces/{name}",
            get(get_workspace).delete(delete_workspace),
        )
        .route("/v1/workspaces/{name}/start", post(start_workspace))
        .route("/v1/workspaces/{name}/stop", post(stop_workspace))
        .route("/v1/workspaces/{name}/keepalive", post(keepalive))
        .route("/v1/workspaces/{name}/idle-timeout", post(idle_timeout))
        .route("/v1/events", get(events))
}

/// Filters of the workspace list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this state.
    #[param(
        pattern = "^(pending|scheduled|starting|running|stopping|stopped|deleting|deleted|failed|unknown)$"
    )]
    pub state: Option<String>,
    /// Only this node (admins).
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub node: Option<String>,
    /// Another user's workspaces (admins); `*` for everyone's.
    #[param(pattern = "^([a-z0-9._@-]{1,64}|[*])$")]
    pub owner: Option<String>,
    /// A team's workspaces, whoever owns them (its members, any role).
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]
    pub team: Option<String>,
    /// The workspaces shared with the caller (read-only), instead.
    #[serde(default)]
    pub shared: bool,
}

/// Create a workspace: stored (acknowledged) first, then placed and started.
#[utoipa::path(post, path = "/v1/workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn create_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateWorkspace>,
) -> Result<(StatusCode, Json<Workspace>)> {
    let w = s.svc.create(&a.user, &req).await?;
    Ok((StatusCode::CREATED, Json(w.view())))
}

/// List workspaces: the caller's, or (admins) anyone's.
#[utoipa::path(get, path = "/v1/workspaces", params(ListQuery),
    responses((status = 200, body = Vec<Workspace>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list_workspaces(
    AxState(s): AxState<AppState>,
    a: Auth,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<Workspace>>> {
    // Every parameter is checked, whichever list it asks for.
    if let Some(team) = &q.team {
        crate::domain::team::check_name(team)?;
    }
    if let Some(o) = q.owner.as_deref().filter(|o| *o != "*") {
        crate::domain::validate::user_name(o)?;
    }
    if let Some(n) = &q.node {
        crate::domain::validate::node_id(n)?;
    }
    let state = match q.state.as_deref() {
        Some(st) => Some(
            State::parse(st)
                .ok_or_else(|| Error::invalid("invalid_state", format!("no state named {st:?}")))?,
        ),
        None => None,
    };
    if q.shared {
        let rows = s.svc.shared_with(&a.user).await?;
        return Ok(Json(rows.iter().map(|w| s.svc.view(w)).collect()));
    }
    let owner = match (q.owner.as_deref(), &q.team) {
        (Some("*"), _) if a.admin => None,
        (Some("*"), _) => return Err(Error::forbidden("only admins list everyone's workspaces")),
        (None, Some(team)) => {
            if !a.admin {
                s.svc.team_allows(team, &a.user, Need::Read).await?;
            }
            None
        }
        _ => Some(owner_of(&a, q.owner.clone())?),
    };
    let rows = s
        .svc
        .workspaces(&WorkspaceFilter {
            owner,
            state,
            node: q.node,
            team: q.team,
        })
        .await?;
    Ok(Json(rows.iter().map(|w| s.svc.view(w)).collect()))
}

/// Get one workspace.
#[utoipa::path(get, path = "/v1/workspaces/{name}", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn get_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Workspace>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let w = s.svc.find(&owner, &name).await?;
    let mut v = s.svc.view(&w);
    v.backup = s.svc.backup_status(&w).await?;
    Ok(Json(v))
}

async fn intent(
    s: &AppState,
    a: &Auth,
    name: &str,
    owner: Option<String>,
    ev: Event,
) -> Result<(StatusCode, Json<Workspace>)> {
    let owner = owner_for(s, a, owner, name, Need::Act).await?;
    let w = s.svc.intent(&owner, name, ev).await?;
    Ok((StatusCode::ACCEPTED, Json(w.view())))
}

/// Start a stopped (or failed) workspace.
#[utoipa::path(post, path = "/v1/workspaces/{name}/start", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn start_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    intent(&s, &a, &name, q.owner, Event::StartRequested).await
}

/// Stop a workspace; its /workspace volume is kept.
#[utoipa::path(post, path = "/v1/workspaces/{name}/stop", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn stop_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    intent(&s, &a, &name, q.owner, Event::StopRequested).await
}

/// Hold a workspace from being stopped for idleness for a while (at most
/// its tier's `max_keepalive_seconds`; 0 ends a keepalive).
#[utoipa::path(post, path = "/v1/workspaces/{name}/keepalive", request_body = Keepalive,
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn keepalive(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<Keepalive>,
) -> Result<Json<Workspace>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.keepalive(&owner, &name, req.seconds).await?;
    Ok(Json(s.svc.view(&w)))
}

/// Set a workspace's own idle timeout (`seconds`, null: back to its
/// tier's), within its tier's bound (`max_idle_timeout_seconds`).
#[utoipa::path(post, path = "/v1/workspaces/{name}/idle-timeout", request_body = IdleTimeout,
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn idle_timeout(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<IdleTimeout>,
) -> Result<Json<Workspace>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.set_idle_timeout(&owner, &name, req.seconds).await?;
    Ok(Json(s.svc.view(&w)))
}

/// Delete a workspace and its volume (once deleted, it answers 404). What
/// a backup does not hold yet is backed up first: a running workspace is
/// stopped, and deleted once the backup of its stop is confirmed (its
/// `backup.delete_requested_at_ms` says it waits); `force=true` deletes at
/// once. Repeating the request changes nothing.
#[utoipa::path(delete, path = "/v1/workspaces/{name}", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), DeleteQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn delete_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<DeleteQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.delete(&owner, &name, q.force).await?;
    Ok((StatusCode::ACCEPTED, Json(w.view())))
}

/// Server-sent events: one `workspace` event (JSON `WorkspaceEvent`) per
/// state change of a workspace the caller can see.
#[utoipa::path(get, path = "/v1/events",
    responses((status = 200, description = "text/event-stream of WorkspaceEvent", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody)))]
pub(super) async fn events(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>> {
    let mut rx = s.svc.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if a.admin || ev.owner == a.user {
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        if tx
                            .send(SseEvent::default().event("workspace").data(data))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let ev = SseEvent::default().event("lagged").data(n.to_string());
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(
    f: F,
) -> impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
