//! Quotas (`docs/admin.md`, "Quotas"): `GET /v1/quota` (the caller's),
//! `GET` and `PUT /v1/admin/quotas/{user}` (admins).

use super::{AppState, Auth, Body, P};
use crate::error::Result;
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, Quota, QuotaLimits};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/quota", get(own_quota))
        .route("/v1/admin/quotas/{user}", get(get_quota).put(set_quota))
        .route(
            "/v1/teams/{team}/quota",
            get(get_team_quota).put(set_team_quota),
        )
}

/// A team's limits and what its workspaces use (its members, any role;
/// platform admins).
#[utoipa::path(get, path = "/v1/teams/{team}/quota", params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")),
    responses((status = 200, body = Quota), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn get_team_quota(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(team): P<String>,
) -> Result<Json<Quota>> {
    crate::domain::team::check_name(&team)?;
    if !a.admin {
        s.svc
            .team_allows(&team, &a.user, crate::domain::team::Need::Read)
            .await?;
    }
    Ok(Json(s.svc.team_quota(&team).await?))
}

/// Sets a team's limits, checked with its members' own at each create and
/// start of the team's workspaces; each absent is no limit (platform admins).
#[utoipa::path(put, path = "/v1/teams/{team}/quota", params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")),
    request_body = QuotaLimits,
    responses((status = 200, body = Quota), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_team_quota(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(team): P<String>,
    Body(limits): Body<QuotaLimits>,
) -> Result<Json<Quota>> {
    a.require_admin()?;
    Ok(Json(s.svc.set_team_quota(&team, &limits).await?))
}

/// The caller's limits and what their workspaces use.
#[utoipa::path(get, path = "/v1/quota",
    responses((status = 200, body = Quota), (status = 401, body = ErrorBody)))]
pub(super) async fn own_quota(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Quota>> {
    Ok(Json(s.svc.quota(&a.user).await?))
}

/// A user's limits and usage (admins).
#[utoipa::path(get, path = "/v1/admin/quotas/{user}", params(("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$")),
    responses((status = 200, body = Quota), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn get_quota(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(user): P<String>,
) -> Result<Json<Quota>> {
    a.require_admin()?;
    Ok(Json(s.svc.quota(&user).await?))
}

/// Sets a user's limits; each absent is the configured default (admins).
/// Checked at each create and start in the same transaction: a refusal is
/// 403 `quota_exceeded` naming the limit and the usage.
#[utoipa::path(put, path = "/v1/admin/quotas/{user}", params(("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$")),
    request_body = QuotaLimits,
    responses((status = 200, body = Quota), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_quota(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(user): P<String>,
    Body(limits): Body<QuotaLimits>,
) -> Result<Json<Quota>> {
    a.require_admin()?;
    Ok(Json(s.svc.set_quota(&user, &limits).await?))
}
