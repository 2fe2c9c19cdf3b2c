//! Secrets (`docs/admin.md`, "Secrets"): the caller's own under
//! `/v1/secrets`, a team's under `/v1/teams/{team}/secrets` (its members
//! list them, its admins change them). No answer carries a value.

use super::{AppState, Auth, Body, P};
use crate::error::Result;
use axum::extract::State as AxState;
use axum::routing::{get, put};
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, Secret, SecretChange, SecretInput};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", put(set_secret).delete(remove_secret))
        .route("/v1/teams/{team}/secrets", get(list_team_secrets))
        .route(
            "/v1/teams/{team}/secrets/{name}",
            put(set_team_secret).delete(remove_team_secret),
        )
}

/// The caller's secrets, without their values.
#[utoipa::path(get, path = "/v1/secrets",
    responses((status = 200, body = Vec<Secret>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_secrets(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Result<Json<Vec<Secret>>> {
    Ok(Json(s.svc.secrets(&a.user, a.admin, None).await?))
}

/// Sets one of the caller's secrets, given to their own workspaces (not
/// their teams'): an environment variable from each workspace's next
/// start, or a file `/run/secrets/<name>` changed at once.
#[utoipa::path(put, path = "/v1/secrets/{name}",
    params(("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
    request_body = SecretInput,
    responses((status = 200, body = SecretChange), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_secret(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Body(input): Body<SecretInput>,
) -> Result<Json<SecretChange>> {
    Ok(Json(
        s.svc
            .set_secret(&a.user, a.admin, None, &name, &input)
            .await?,
    ))
}

/// Removes one of the caller's secrets.
#[utoipa::path(delete, path = "/v1/secrets/{name}",
    params(("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
    responses((status = 200, body = SecretChange), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn remove_secret(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
) -> Result<Json<SecretChange>> {
    Ok(Json(
        s.svc.remove_secret(&a.user, a.admin, None, &name).await?,
    ))
}

/// A team's secrets, without their values (its members and admins;
/// platform admins).
#[utoipa::path(get, path = "/v1/teams/{team}/secrets",
    params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")),
    responses((status = 200, body = Vec<Secret>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list_team_secrets(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(team): P<String>,
) -> Result<Json<Vec<Secret>>> {
    Ok(Json(s.svc.secrets(&a.user, a.admin, Some(&team)).await?))
}

/// Sets a team secret, given to the team's workspaces (its admins;
/// platform admins).
#[utoipa::path(put, path = "/v1/teams/{team}/secrets/{name}",
    params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
    request_body = SecretInput,
    responses((status = 200, body = SecretChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn set_team_secret(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((team, name)): P<(String, String)>,
    Body(input): Body<SecretInput>,
) -> Result<Json<SecretChange>> {
    Ok(Json(
        s.svc
            .set_secret(&a.user, a.admin, Some(&team), &name, &input)
            .await?,
    ))
}

/// Removes a team secret (its admins; platform admins).
#[utoipa::path(delete, path = "/v1/teams/{team}/secrets/{name}",
    params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
    responses((status = 200, body = SecretChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn remove_team_secret(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((team, name)): P<(String, String)>,
) -> Result<Json<SecretChange>> {
    Ok(Json(
        s.svc
            .remove_secret(&a.user, a.admin, Some(&team), &name)
            .await?,
    ))
}
