//! Tokens (join tokens for nodes, API tokens for users), who the caller
//! is, and the tiers.

use super::{AppState, Auth, Body};
use crate::domain::tier::Tier;
use crate::error::{Error, Result};
use axum::extract::Path;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use berth_proto::api::{
    ApiTokenCreated, CreateApiToken, CreateJoinToken, ErrorBody, JoinTokenCreated, Role, WhoAmI,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/join-tokens/{id}", delete(revoke_join_token))
        .route("/v1/tokens", post(create_api_token))
        .route("/v1/whoami", get(whoami))
        .route("/v1/tiers", get(tiers))
}

/// Create a join token for nodes (admins): one-time unless `uses` says more.
#[utoipa::path(post, path = "/v1/join-tokens", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_join_token(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenCreated>)> {
    a.require_admin()?;
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(1..=7 * 86_400).contains(&ttl) {
        return Err(Error::invalid(
            "invalid_ttl",
            "ttl_seconds must be 1 to 604800",
        ));
    }
    let (token, expires_at_ms) = s
        .svc
        .create_join_token(&a.user, ttl, req.uses.unwrap_or(1))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            token,
            expires_at_ms,
        }),
    ))
}

/// Revoke a join token (admins): no node joins with it from now on; the
/// nodes it joined stay.
#[utoipa::path(delete, path = "/v1/join-tokens/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_join_token(
    AxState(s): AxState<AppState>,
    a: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    a.require_admin()?;
    s.svc.revoke_join_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API token for a user (admins).
#[utoipa::path(post, path = "/v1/tokens", request_body = CreateApiToken,
    responses((status = 201, body = ApiTokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_api_token(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateApiToken>,
) -> Result<(StatusCode, Json<ApiTokenCreated>)> {
    a.require_admin()?;
    crate::domain::validate::user_name(&req.user)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        Error::invalid(
            "invalid_role",
            format!("role must be admin or member, not {:?}", req.role),
        )
    })?;
    let token = s.svc.create_api_token(&req.user, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenCreated {
            token,
            user: req.user,
            role: req.role,
        }),
    ))
}

/// The caller's identity.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(super) async fn whoami(a: Auth) -> Json<WhoAmI> {
    let role = match a.admin {
        true => Role::Admin,
        false => Role::Member,
    };
    Json(WhoAmI {
        user: a.user.clone(),
        role: role.as_str().into(),
    })
}

/// The resource tiers.
#[utoipa::path(get, path = "/v1/tiers", responses((status = 200, body = Vec<Tier>), (status = 401, body = ErrorBody)))]
pub(super) async fn tiers(AxState(s): AxState<AppState>, _a: Auth) -> Json<Vec<Tier>> {
    Json(s.svc.tiers().all())
}
