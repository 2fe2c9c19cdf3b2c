//! A workspace's backups: list, back up now, restore.

use super::{owner_for, AppState, Auth, Body, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{Backup, BackupSettings, Backups, ErrorBody, RestoreBody, Restored};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/workspaces/{name}/backups",
            get(list_backups).post(backup_now),
        )
        .route("/v1/workspaces/{name}/restore", post(restore))
        .route("/v1/workspaces/{name}/backups/settings", post(settings))
}

/// Set what the workspace's backups leave out: with `exclude_ignored`,
/// what its repository's .gitignore files ignore (off by default).
#[utoipa::path(post, path = "/v1/workspaces/{name}/backups/settings",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    request_body = BackupSettings,
    responses((status = 200, body = Backups), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn settings(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<BackupSettings>,
) -> Result<Json<Backups>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(s.svc.set_backup_settings(&owner, &name, &req).await?))
}

/// The workspace's confirmed backups, newest first, and their status (the
/// last failure, when the next is due).
#[utoipa::path(get, path = "/v1/workspaces/{name}/backups",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Backups), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list_backups(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Backups>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    Ok(Json(s.svc.backups(&owner, &name).await?))
}

/// Back the workspace up now (running or stopped, on a connected node);
/// answers when the backup is confirmed.
#[utoipa::path(post, path = "/v1/workspaces/{name}/backups",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Backup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub(super) async fn backup_now(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Backup>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(s.svc.backup_now(&owner, &name).await?))
}

/// Put a backup back into the stopped workspace: by `id`, or the newest
/// taken at or before `at`, or the newest. Refused (409 `backup_pending`)
/// until what the workspace holds since its stop is backed up.
#[utoipa::path(post, path = "/v1/workspaces/{name}/restore",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    request_body = RestoreBody,
    responses((status = 200, body = Restored), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(super) async fn restore(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<RestoreBody>,
) -> Result<Json<Restored>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(s.svc.restore(&owner, &name, &req).await?))
}
